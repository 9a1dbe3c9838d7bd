//! A switchover whose new primary cannot receive the old one's last WAL (cut off from it by a
//! partition): medic stops the primary (`pg-stop`), waits for the standby to catch up, gives
//! up without promoting it, and switches back at once — the old primary's server started
//! again as the primary (`pg-start`), the name left on it — instead of leaving the service
//! with no primary until its checks fail it over. Nothing is promoted, no acknowledged write
//! is lost, and the standby streams again once the partition heals. examples/dryad.yaml's
//! database on three lab machines, PostgreSQL 15 from Debian. Needs root.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::pg;
use common::pg_service::*;
use common::web::resolve;
use common::*;

#[test]
fn a_switchover_whose_standby_cannot_catch_up_is_switched_back_and_loses_nothing() {
    let Some(mut env) = Env::of_example("dryad.yaml", 27, database_with_rejoin("rewind")) else {
        return;
    };
    let (primus, secundus) = (env.ip(10), env.ip(11));
    three_in_sync(&mut env, "", true);
    // One standby's acknowledgement is enough: writes go on while secundus is cut off.
    pg::psql(
        &env,
        &primus,
        "dryad",
        "ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (*)'",
    );
    pg::psql(&env, &primus, "dryad", "SELECT pg_reload_conf()");
    let (writes, stop, client) = start_client(&env);
    let acked = |w: &Writes| w.lock().unwrap().iter().filter(|w| w.2).count();
    env.wait("20 writes acknowledged", Duration::from_secs(20), |_| {
        acked(&writes) >= 20
    });
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let before = writes.lock().unwrap().clone();
    let last = before.iter().filter(|w| w.2).map(|w| w.0).max().unwrap();
    env.wait(
        "secundus to replay the client's last write",
        Duration::from_secs(20),
        |e| {
            pg::psql(
                e,
                &secundus,
                "dryad",
                &format!("SELECT count(*) FROM items WHERE id = {last}"),
            ) == "1"
        },
    );

    // secundus cut off from primus (medic still reaches both); a write it does not get.
    env.fault("secundus", "partition", &["--from", "primus"]);
    pg::psql(
        &env,
        &primus,
        "dryad",
        "INSERT INTO items VALUES (2000000, 'after the cut')",
    );
    let asked = std::time::Instant::now();
    let out = medic(&["switchover", "dryad-db", "--to", "secundus", "-t", env.f()]);
    assert!(out.status.success(), "{}", text(&out));

    // The switchover stops at its wait (30 s, not tried again), then switches back.
    env.wait(
        "a pg-start step that started primus as the primary again",
        Duration::from_secs(240),
        |e| {
            steps(e).iter().any(|s| {
                s["kind"] == "pg-start"
                    && s["summary"]
                        .as_str()
                        .is_some_and(|t| t.contains("started as the primary again"))
            })
        },
    );
    env.wait(
        "primus the primary, passing its checks, the name on it",
        Duration::from_secs(60),
        |e| {
            primary_of_db(e) == "primus"
                && pg::service_machine(e, "dryad-db", "primus")["health"]["role"] == "master"
                && resolve(e, "db.dryad.lab") == primus
        },
    );
    eprintln!(
        "primus the primary again, passing its checks, {:.1} s after the switchover was asked for",
        asked.elapsed().as_secs_f64()
    );
    let history = steps(&env);
    assert!(
        !history
            .iter()
            .any(|s| s["kind"] == "pg-promote" && s["status"] != "not run"),
        "nothing promoted: {history:#?}"
    );
    for r in env.history() {
        let mut head = r.clone();
        if let Some(o) = head.as_object_mut() {
            o.remove("steps");
        }
        eprintln!("{head}:");
        for s in r["steps"].as_array().into_iter().flatten() {
            eprintln!("  {} {} {} ms", s["kind"], s["status"], s["duration_ms"]);
        }
    }
    // No failover ran: the one primus's failing checks queued was dropped.
    let recoveries: Vec<String> = env
        .history()
        .iter()
        .filter_map(|r| r["event"].as_str().map(str::to_owned))
        .collect();
    assert!(
        recoveries
            .iter()
            .all(|e| e.starts_with("switchover of dryad-db")),
        "{recoveries:?}"
    );
    let stopped: Vec<&serde_json::Value> =
        history.iter().filter(|s| s["kind"] == "pg-stop").collect();
    assert!(
        stopped.len() == 1
            && stopped[0]["status"] == "failed"
            && stopped[0]["errors"].as_array().is_some_and(|e| e.len() == 1
                && e[0]
                    .as_str()
                    .is_some_and(|e| e.contains("secundus has received WAL only up to"))),
        "the wait for secundus failed once, not retried: {stopped:#?}"
    );
    assert_eq!(
        pg::psql(&env, &primus, "dryad", "SELECT pg_is_in_recovery()"),
        "f"
    );
    // It takes writes again through the name, each acknowledged by primus.
    // (A fresh id each try: one that timed out may still have committed.)
    let back = std::cell::RefCell::new(Vec::new());
    let tries = std::cell::Cell::new(0);
    env.wait(
        "10 writes through the name acknowledged after the switchback",
        Duration::from_secs(60),
        |e| {
            let id = 3_000_000 + tries.get();
            tries.set(tries.get() + 1);
            let at = resolve(e, "db.dryad.lab");
            if at == primus && client_sql(&at, &format!("INSERT INTO items VALUES ({id}, 'back')"))
            {
                back.borrow_mut().push(id);
            }
            back.borrow().len() >= 10
        },
    );
    eprintln!(
        "after the switchback: {} writes acknowledged of {} tried",
        back.borrow().len(),
        tries.get()
    );
    // Healed: secundus streams from primus again, a standby still.
    env.fault("secundus", "heal", &[]);
    env.wait(
        "secundus to replay the write it missed",
        Duration::from_secs(60),
        |e| {
            pg::psql(
                e,
                &secundus,
                "dryad",
                "SELECT count(*) FROM items WHERE id = 2000000",
            ) == "1"
        },
    );
    assert_eq!(
        pg::psql(&env, &secundus, "dryad", "SELECT pg_is_in_recovery()"),
        "t"
    );
    // Every write acknowledged, before the cut, after it and after the switchback, is on
    // primus.
    let rows: std::collections::BTreeSet<usize> =
        pg::psql(&env, &primus, "dryad", "SELECT id FROM items")
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
    let acked: Vec<usize> = before
        .iter()
        .filter(|w| w.2)
        .map(|w| w.0 as usize)
        .chain([2_000_000])
        .chain(back.into_inner())
        .collect();
    let lost: Vec<&usize> = acked.iter().filter(|id| !rows.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged, not on primus: {lost:?}");
    eprintln!(
        "{} acknowledged writes read back from primus after the switchback",
        acked.len()
    );
    env.stop();
}
