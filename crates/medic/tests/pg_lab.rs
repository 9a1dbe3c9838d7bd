//! A writable PostgreSQL service on the lab: examples/dryad.yaml's database on three machines
//! (a third, tertius, added), with standbys that take writes once promoted (not
//! `standbys_read_only`), its name following the primary, replication synchronous to both
//! standbys, checked as a user that may neither promote nor re-point a standby until medic's
//! warnings at its start are acted on. A client writes through the name; the primary's
//! machine crashes; medic promotes the most advanced standby itself (`pg_promote()`), moves
//! the name, and makes the other standby follow the new primary; every write the client had
//! acknowledged is read back from the new primary, which takes writes, and a write there
//! reaches the other standby. Needs root.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::pg;
use common::pg_service::*;
use common::web::{on, resolve};
use common::*;

#[test]
fn a_crashed_primary_s_standby_is_promoted_and_keeps_every_acknowledged_write() {
    let Some(mut env) = Env::of_example("dryad.yaml", 17, database_only) else {
        return;
    };
    let (primus, secundus, tertius) = (env.ip(10), env.ip(11), env.ip(12));
    pg::start_primary(&env, &primus, "dryad");
    // medic's user: it may log in and look, not promote (yet).
    pg::psql(&env, &primus, "dryad", "CREATE ROLE watcher LOGIN");
    pg::start_standby(&env, &secundus, &primus);
    pg::start_standby(&env, &tertius, &primus);
    // Synchronous: a write is acknowledged once both standbys have it (set once they are
    // there, else the set-up's own writes would wait for them).
    pg::psql(
        &env,
        &primus,
        "dryad",
        "ALTER SYSTEM SET synchronous_standby_names = 'ANY 2 (*)'",
    );
    pg::psql(&env, &primus, "dryad", "SELECT pg_reload_conf()");
    env.wait("the name on primus", Duration::from_secs(10), |e| {
        resolve(e, "db.dryad.lab") == primus
    });
    env.start(&[]);
    env.wait(
        "dryad-db: primus primary, secundus and tertius standbys in recovery",
        Duration::from_secs(20),
        |e| {
            let p = pg::service_machine(e, "dryad-db", "primus");
            p["state"] == "production"
                && p["health"]["role"] == "master"
                && ["secundus", "tertius"].iter().all(|m| {
                    let s = pg::service_machine(e, "dryad-db", m);
                    s["state"] == "standby" && s["health"]["role"] == "replica"
                })
        },
    );

    // Told at its start that a failover would stop at the promotion; the right granted (on
    // the primary; it reaches the standby).
    env.wait(
        "the warning that watcher may not promote secundus",
        Duration::from_secs(10),
        |e| {
            e.alerts().iter().any(|a| {
                a.contains("medic's PostgreSQL user watcher may not call pg_promote() on secundus")
            })
        },
    );
    pg::psql(
        &env,
        &primus,
        "dryad",
        "GRANT EXECUTE ON FUNCTION pg_promote TO watcher",
    );
    // And that it may not make tertius follow a new primary: the rights it names granted.
    let follow = "medic's PostgreSQL user watcher may not make tertius";
    env.wait(
        "the warning that watcher may not re-point tertius",
        Duration::from_secs(10),
        |e| e.alerts().iter().any(|a| a.contains(follow)),
    );
    let warning = env
        .alerts()
        .into_iter()
        .find(|a| a.contains(follow))
        .unwrap();
    let grants: Vec<&str> = warning
        .split("on the primary: ")
        .nth(1)
        .unwrap()
        .split("; ")
        .collect();
    assert_eq!(grants.len(), 4, "{warning}");
    for g in grants {
        pg::psql(&env, &primus, "dryad", g);
    }
    for standby in [&secundus, &tertius] {
        env.wait("the standbys to have the grants", Duration::from_secs(10), |e| {
            pg::psql(
                e,
                standby,
                "dryad",
                "SELECT has_function_privilege('watcher', 'pg_promote(boolean, integer)', 'EXECUTE') \
                 AND has_parameter_privilege('watcher', 'primary_conninfo', 'ALTER SYSTEM')",
            ) == "t"
        });
    }

    // The client: one row at a time, through the name.
    let (writes, stop, client) = start_client(&env);
    let acked_since = |t: Instant| {
        writes
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, at, ok, _)| *ok && *at > t)
            .count()
    };
    let t0 = Instant::now();
    env.wait("20 writes acknowledged", Duration::from_secs(20), |_| {
        acked_since(t0) >= 20
    });

    // The primary's machine crashes.
    let t_crash = Instant::now();
    env.fault("primus", "crash", &[]);
    // The most advanced standby is promoted: either (the positions last seen decide).
    let ip_of = |m: &str| {
        if m == "secundus" {
            secundus.clone()
        } else {
            tertius.clone()
        }
    };
    env.wait(
        "a standby the primary, the name on it, a write acknowledged there",
        Duration::from_secs(30),
        |e| {
            let new = primary_of_db(e);
            (new == "secundus" || new == "tertius")
                && resolve(e, "db.dryad.lab") == ip_of(&new)
                && writes
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|w| w.2 && w.3 == ip_of(&new))
        },
    );
    let new_name = primary_of_db(&env);
    let other_name = if new_name == "secundus" {
        "tertius"
    } else {
        "secundus"
    };
    let (new, other) = (ip_of(&new_name), ip_of(other_name));
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let writes = writes.lock().unwrap().clone();

    // Read back on the new primary: every acknowledged write, and it takes writes itself.
    assert_eq!(
        pg::psql(&env, &new, "dryad", "SELECT pg_is_in_recovery()"),
        "f"
    );
    let rows: std::collections::BTreeSet<u32> =
        pg::psql(&env, &new, "dryad", "SELECT id FROM items")
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
    let acked: Vec<u32> = writes.iter().filter(|w| w.2).map(|w| w.0).collect();
    let lost: Vec<&u32> = acked.iter().filter(|id| !rows.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged, not on the new primary: {lost:?}"
    );
    // The promotion was medic's own step, done once.
    let recovery = env.recovery("primus").unwrap();
    let promotions: Vec<&serde_json::Value> = recovery["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "pg-promote")
        .collect();
    assert_eq!(promotions.len(), 1, "{recovery:#}");
    let summary = promotions[0]["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("PostgreSQL promoted"), "{recovery:#}");
    // The other standby made to follow the new primary (its step read back as streaming):
    // a write there reaches it, and it streams from the new primary.
    let follows: Vec<&serde_json::Value> = recovery["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "pg-follow")
        .collect();
    assert_eq!(follows.len(), 1, "{recovery:#}");
    assert!(
        follows[0]["summary"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("{other_name}: PostgreSQL streams from {new_name}")),
        "{recovery:#}"
    );
    pg::psql(
        &env,
        &new,
        "dryad",
        "INSERT INTO items VALUES (1000000, 'after')",
    );
    env.wait(
        "the other standby to replay the new primary's write",
        Duration::from_secs(20),
        |e| {
            pg::psql(
                e,
                &other,
                "dryad",
                "SELECT count(*) FROM items WHERE id = 1000000",
            ) == "1"
        },
    );
    assert_eq!(
        pg::psql(
            &env,
            &other,
            "dryad",
            "SELECT sender_host FROM pg_stat_wal_receiver"
        ),
        new
    );
    // The client's outage: from its last write acknowledged by primus to its first by
    // the new primary (the crash is made by a command of its own: it takes effect a little
    // after t_crash).
    let acked_by = |ip: &str| -> Vec<Instant> {
        writes
            .iter()
            .filter(|w| w.2 && w.3 == ip)
            .map(|w| w.1)
            .collect()
    };
    let before = acked_by(&primus).into_iter().max().unwrap();
    let after = acked_by(&new).into_iter().min().unwrap();
    assert!(
        writes
            .iter()
            .all(|w| !(w.2 && w.3 == primus && w.1 > after)),
        "primus acknowledged a write after {new_name} had: two primaries"
    );
    eprintln!(
        "{new_name} promoted, {other_name} follows it; {} writes acknowledged, none lost; the client wrote nothing for {:?} (crash ordered {:?} after its last write acknowledged by primus)",
        acked.len(),
        after - before,
        t_crash.saturating_duration_since(before)
    );
    env.stop();
}

/// The primary's machine cut off from everyone, alive: its PostgreSQL still a primary on its
/// own, taking (never acknowledging: replication is synchronous) the writes of clients that
/// still reach it. medic fails over; the partition heals; the old primary answers writable
/// beside the new one. medic stops it and rewinds it from the new primary with pg_rewind
/// (its WAL kept back to the fork: `wal_keep_size`), and starts it as a standby: it streams
/// from the new primary, holds every acknowledged write, and counts as a standby again.
#[test]
fn a_primary_cut_off_and_back_is_rewound_into_a_standby_of_the_new_one() {
    let Some(summary) = cut_off_and_back(18, "rewind", "--data-checksums") else {
        return;
    };
    assert!(
        summary.contains("diverged from the primary at")
            && summary.contains("its WAL kept in /var/lib/pg.medic-wal-")
            && summary.contains("rewound from the primary"),
        "{summary}"
    );
}

/// The same with a server pg_rewind cannot rewind (neither data checksums nor
/// `wal_log_hints`) and `method: rewind_or_copy`: its data directory is moved aside, kept,
/// and the server copied afresh from the new primary.
#[test]
fn one_that_cannot_be_rewound_is_copied_afresh_its_old_data_kept() {
    let Some(summary) = cut_off_and_back(19, "rewind_or_copy", "") else {
        return;
    };
    assert!(
        summary.contains("pg_rewind failed; the old data moved aside to /var/lib/pg.medic-")
            && summary.contains("copied afresh from the primary"),
        "{summary}"
    );
}

/// The scenario of the two tests above: the pg-rejoin step's summary.
fn cut_off_and_back(k: u32, method: &str, initdb_flags: &str) -> Option<String> {
    let mut env = Env::of_example("dryad.yaml", k, database_with_rejoin(method))?;
    let (primus, secundus, tertius) = (env.ip(10), env.ip(11), env.ip(12));
    three_in_sync(&mut env, initdb_flags, method == "rewind");
    let (writes, stop, client) = start_client(&env);
    let acked = |w: &Writes| w.lock().unwrap().iter().filter(|w| w.2).count();
    env.wait("20 writes acknowledged", Duration::from_secs(20), |_| {
        acked(&writes) >= 20
    });

    env.fault("primus", "partition", &[]);
    let ip_of = |m: &str| {
        if m == "secundus" {
            secundus.clone()
        } else {
            tertius.clone()
        }
    };
    env.wait(
        "a standby the primary, the name on it, a write acknowledged there",
        Duration::from_secs(30),
        |e| {
            let new = primary_of_db(e);
            (new == "secundus" || new == "tertius")
                && resolve(e, "db.dryad.lab") == ip_of(&new)
                && writes
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|w| w.2 && w.3 == ip_of(&new))
        },
    );
    let new_name = primary_of_db(&env);
    let new = ip_of(&new_name);
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let writes = writes.lock().unwrap().clone();

    // Back: writable beside the new primary, on a timeline of its own.
    env.fault("primus", "heal", &[]);
    env.wait(
        "primus a standby again (in recovery, passing its checks)",
        Duration::from_secs(90),
        |e| {
            let p = pg::service_machine(e, "dryad-db", "primus");
            p["role"] == "standby" && p["health"]["role"] == "replica"
        },
    );
    let summary = rejoined(&env, "primus");
    // Seen writable, it was stopped first, in the same demotion.
    let history = steps(&env);
    assert!(
        history.iter().any(|s| s["kind"] == "pg-stop"
            && s["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with("dryad-db@primus: stopped the server"))),
        "{history:#?}"
    );
    assert!(
        summary.contains(&format!("streams from {new}:5432")),
        "{summary}"
    );
    if method == "rewind_or_copy" {
        let aside = on(&env, &primus, "cat /var/lib/pg.medic-*/PG_VERSION");
        assert_eq!(aside.trim(), "15", "the old data kept aside");
    }
    read_back(&env, &writes, &new_name, &new, ("primus", &primus));
    let acked_ids: Vec<u32> = writes.iter().filter(|w| w.2).map(|w| w.0).collect();
    eprintln!("primus made a standby of {new_name} again: {summary}");
    if method == "rewind" {
        switch_back(&env, &new_name, &new, &primus, &acked_ids);
    }
    env.stop();
    Some(summary)
}

/// `medic switchover dryad-db --to primus` on a service with no hook at all: medic stops the
/// primary's server itself (`pg-stop`), promotes primus, and the old primary, stopped and out,
/// is made primus's standby at its next check (`pg-rejoin`: a cleanly stopped primary needs
/// no rewind). Every acknowledged write is still there; primus takes writes, which reach it.
fn switch_back(env: &Env, old_name: &str, old: &str, primus: &str, acked: &[u32]) {
    let out = medic(&["switchover", "dryad-db", "--to", "primus", "-t", env.f()]);
    assert!(out.status.success(), "{}", text(&out));
    env.wait(
        &format!("primus the primary, the name on it, {old_name} its standby"),
        Duration::from_secs(60),
        |e| {
            let o = pg::service_machine(e, "dryad-db", old_name);
            primary_of_db(e) == "primus"
                && resolve(e, "db.dryad.lab") == primus
                && o["role"] == "standby"
                && o["health"]["role"] == "replica"
        },
    );
    let steps = steps(env);
    let said = |kind: &str, of: &str| {
        steps
            .iter()
            .filter(|s| s["kind"] == kind)
            .filter_map(|s| s["summary"].as_str())
            .find(|s| s.starts_with(&format!("dryad-db@{of}:")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        said("pg-stop", old_name).contains("stopped the server"),
        "{steps:#?}"
    );
    // primus was promoted only once it had the stopped primary's last WAL.
    assert!(
        said("pg-stop", old_name).contains("primus has received its WAL up to"),
        "{steps:#?}"
    );
    let rejoin = rejoined(env, old_name);
    // Stopped cleanly, it had sent all its WAL: nothing to rewind, nothing kept aside.
    assert!(
        rejoin.contains("no rewind needed")
            && !rejoin.contains("diverged")
            && rejoin.contains(&format!("streams from {primus}:5432")),
        "{steps:#?}"
    );
    pg::psql(
        env,
        primus,
        "dryad",
        "INSERT INTO items VALUES (3000000, 'back')",
    );
    env.wait(
        &format!("{old_name} to replay primus's write"),
        Duration::from_secs(20),
        |e| {
            pg::psql(
                e,
                old,
                "dryad",
                "SELECT count(*) FROM items WHERE id = 3000000",
            ) == "1"
        },
    );
    let rows: std::collections::BTreeSet<u32> =
        pg::psql(env, primus, "dryad", "SELECT id FROM items")
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
    let lost: Vec<&u32> = acked.iter().filter(|id| !rows.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged, not on primus after the switchover: {lost:?}"
    );
    eprintln!("switched back to primus; {old_name}: {rejoin}");
}
