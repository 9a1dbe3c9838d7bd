//! The fence of a PostgreSQL primary outlasts a restart: the scripts of the `pg-stop` and
//! `pg-rejoin` steps (exactly what `medic plan` prints) run on lab machines against Debian's
//! PostgreSQL 15. The old primary, stopped by pg-stop and started again by something else
//! (systemd, a reboot, an operator), comes back in recovery and refuses writes; the rejoin
//! script then makes it a standby of the new primary, which it streams from; a standby medic
//! did not fence is left as it is. Needs root.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::time::Duration;

use common::pg::{self, PG};
use common::web::on;
use common::*;

/// The lab's servers keep their socket in /run/pg; medic's rejoin settings say so. Their
/// `stop` command fails: every stop is the immediate shutdown that follows (a server not shut
/// down cleanly, which pg_rewind must first recover alone, out of standby mode).
fn rejoin_settings() -> medic_topology::pg_rejoin::PgRejoin {
    serde_json::from_value(serde_json::json!({
        "data_dir": "/var/lib/pg",
        "bin_dir": PG,
        "start": format!("runuser -u postgres -- {PG}/pg_ctl -D /var/lib/pg -l /var/lib/pg/log -o '-k /run/pg' -w start"),
        "stop": "false",
    }))
    .unwrap()
}

#[test]
fn a_fenced_primary_restarted_comes_back_read_only_and_is_then_rejoined() {
    let Some(env) = Env::of_example("dryad.yaml", 20, |t| t) else {
        return;
    };
    let (primus, secundus) = (env.ip(10), env.ip(11));
    let r = rejoin_settings();
    pg::start_primary(&env, &primus, "dryad");
    // pg_rewind reads the old primary's WAL back to the last checkpoint before the fork.
    pg::psql(
        &env,
        &primus,
        "dryad",
        "ALTER SYSTEM SET wal_keep_size = '256MB'",
    );
    pg::psql(&env, &primus, "dryad", "SELECT pg_reload_conf()");
    pg::start_standby(&env, &secundus, &primus);
    pg::psql(
        &env,
        &primus,
        "dryad",
        "INSERT INTO items VALUES (1, 'before')",
    );
    env.wait(
        "secundus to replay primus's first write",
        Duration::from_secs(20),
        |e| pg::psql(e, &secundus, "dryad", "SELECT count(*) FROM items") == "1",
    );

    // The fence: stopped, nothing on the port, and marked.
    let said = on(&env, &primus, &medic_plan::rejoin::stop_script(&r, 5432));
    assert!(
        said.contains("medic: stopped the server (immediate shutdown)")
            && said.contains("medic: standby.signal written"),
        "{said}"
    );
    let files = on(
        &env,
        &primus,
        "ls /var/lib/pg/standby.signal /var/lib/pg/medic-fenced",
    );
    assert_eq!(files.lines().count(), 2, "{files}");
    // Not stopped cleanly: where its WAL ends is not known, and the mark records no end (a
    // switchover stops there rather than wait for a position short of its last writes).
    let wal = said
        .lines()
        .find_map(|l| l.strip_prefix("medic-wal: "))
        .unwrap_or_else(|| panic!("no medic-wal line: {said}"));
    let fields: Vec<&str> = wal.split('|').collect();
    assert_eq!((fields[0], fields[2]), ("in production", ""), "{said}");
    assert_eq!(
        on(&env, &primus, "cat /var/lib/pg/medic-fenced").trim(),
        "tl 1"
    );
    // Fenced again (a controller restarted mid-failover makes the step again): the same.
    let again = on(&env, &primus, &medic_plan::rejoin::stop_script(&r, 5432));
    assert!(
        again.contains("the server was not running") && again.contains("standby.signal written"),
        "{again}"
    );

    // The new primary takes a write the old one never saw.
    assert_eq!(
        pg::psql(&env, &secundus, "dryad", "SELECT pg_promote()"),
        "t"
    );
    env.wait("secundus out of recovery", Duration::from_secs(20), |e| {
        pg::psql(e, &secundus, "dryad", "SELECT pg_is_in_recovery()") == "f"
    });
    pg::psql(
        &env,
        &secundus,
        "dryad",
        "INSERT INTO items VALUES (2, 'after')",
    );

    // Something starts the old primary again: it is in recovery, and refuses a write.
    on(
        &env,
        &primus,
        &format!(
            "runuser -u postgres -- {PG}/pg_ctl -D /var/lib/pg -l /var/lib/pg/log -o '-k /run/pg' -w start >/dev/null"
        ),
    );
    env.wait("primus to answer", Duration::from_secs(20), |e| {
        pg::psql(e, &primus, "dryad", "SELECT pg_is_in_recovery()") == "t"
    });
    let refused = pg::psql(
        &env,
        &primus,
        "dryad",
        "INSERT INTO items VALUES (3, 'lost')",
    );
    assert!(
        refused.contains("read-only transaction"),
        "a restarted fenced primary took a write: {refused}"
    );

    // The rejoin: medic's mark lets it stop the server (immediately again), recover it in
    // standby mode (it was not shut down cleanly; a standby writes nothing past the fork),
    // rewind it from the new primary — it took no write after the fork, so there is nothing
    // to rewind — and start it as a standby; the mark is gone, and it streams.
    let script = medic_plan::rejoin::rejoin_script(&r, &secundus, 5432, "dryad");
    let done = on(&env, &primus, &script);
    eprintln!("the rejoin said: {done}");
    assert!(
        done.contains("medic: stopped the server (immediate shutdown)")
            && done.contains("medic: recovered in standby mode first")
            && done.contains("medic: no rewind needed")
            && done.contains("medic: started as a standby"),
        "{done}"
    );
    env.wait(
        "primus to stream from secundus and replay its write",
        Duration::from_secs(30),
        |e| {
            pg::psql(
                e,
                &primus,
                "dryad",
                "SELECT sender_host FROM pg_stat_wal_receiver",
            ) == secundus
                && pg::psql(
                    e,
                    &primus,
                    "dryad",
                    "SELECT count(*) FROM items WHERE id = 2",
                ) == "1"
        },
    );
    assert_eq!(
        on(&env, &primus, "ls /var/lib/pg/medic-fenced 2>&1; true").trim(),
        "ls: cannot access '/var/lib/pg/medic-fenced': No such file or directory"
    );

    // A standby medic did not fence (it is one now) is left as it is.
    let left = on(&env, &primus, &script);
    assert!(
        left.contains(&format!("medic: {}", medic_plan::rejoin::A_STANDBY))
            && !left.contains("stopped"),
        "{left}"
    );
    assert_eq!(
        pg::psql(&env, &primus, "dryad", "SELECT pg_is_in_recovery()"),
        "t"
    );
}

/// A switchover's `pg-stop` reads where the stopped primary's WAL ends (`medic-wal:`), and its
/// standby is promoted only once it has received that much. The step made again (a controller
/// restarted mid-switchover) after something restarted the fenced server read-only must read
/// the same end: the server came back in recovery, wrote nothing, and stopped again as "shut
/// down in recovery" — which medic accepts only with its own fence mark on the same timeline.
#[test]
fn a_fenced_primary_stopped_again_ends_its_wal_where_it_did() {
    let Some(env) = Env::of_example("dryad.yaml", 26, |t| t) else {
        return;
    };
    let (primus, secundus) = (env.ip(10), env.ip(11));
    let mut r = rejoin_settings();
    r.stop = Some(format!(
        "runuser -u postgres -- {PG}/pg_ctl -D /var/lib/pg -m fast -w stop"
    ));
    pg::start_primary(&env, &primus, "dryad");
    pg::start_standby(&env, &secundus, &primus);
    pg::psql(
        &env,
        &primus,
        "dryad",
        "INSERT INTO items VALUES (1, 'last')",
    );
    let wal_line = |said: &str| -> Vec<String> {
        let line = said
            .lines()
            .find_map(|l| l.strip_prefix("medic-wal: "))
            .unwrap_or_else(|| panic!("no medic-wal line: {said}"));
        line.split('|').map(str::to_owned).collect()
    };

    let first = on(&env, &primus, &medic_plan::rejoin::stop_script(&r, 5432));
    let end = wal_line(&first);
    assert_eq!(end[0], "shut down", "{first}");
    assert_eq!(end[2], "", "not fenced before its first fence: {first}");
    assert!(first.contains("medic: standby.signal written"), "{first}");
    // The mark records where its WAL ended: it stopped cleanly.
    let mark = on(&env, &primus, "cat /var/lib/pg/medic-fenced");
    assert_eq!(mark.trim(), format!("tl 1 end {}", end[1]), "{first}");
    // The standby receives the primary's WAL up to its shutdown checkpoint.
    let lsn = &end[1];
    env.wait(
        &format!("secundus to receive WAL up to {lsn}"),
        Duration::from_secs(20),
        |e| {
            pg::psql(
                e,
                &secundus,
                "dryad",
                &format!("SELECT pg_last_wal_receive_lsn() >= '{lsn}'::pg_lsn"),
            ) == "t"
        },
    );

    // Something starts primus again: read-only. The step made again stops it again.
    on(
        &env,
        &primus,
        &format!(
            "runuser -u postgres -- {PG}/pg_ctl -D /var/lib/pg -l /var/lib/pg/log -o '-k /run/pg' -w start >/dev/null"
        ),
    );
    env.wait(
        "primus to answer, in recovery",
        Duration::from_secs(20),
        |e| pg::psql(e, &primus, "dryad", "SELECT pg_is_in_recovery()") == "t",
    );
    let again = on(&env, &primus, &medic_plan::rejoin::stop_script(&r, 5432));
    let end_again = wal_line(&again);
    assert_eq!(
        end_again,
        vec!["shut down in recovery".to_owned(), lsn.clone(), lsn.clone()],
        "{again}"
    );
    // Without medic's mark, the same state is a standby's, not the fenced primary's.
    on(&env, &primus, "rm /var/lib/pg/medic-fenced");
    let unmarked = on(&env, &primus, &medic_plan::rejoin::stop_script(&r, 5432));
    assert_eq!(wal_line(&unmarked)[2], "", "{unmarked}");
    assert!(
        unmarked.contains("medic: its data is a standby's"),
        "{unmarked}"
    );
}

/// examples/dryad.yaml's database with `rejoin` under `medic run`. The primary's PostgreSQL
/// hangs (every process stopped by SIGSTOP) while its machine answers: medic's checks fail,
/// and the fence (`pg-stop`) finds a server that neither stops nor shuts down at once — it
/// kills it, leaves its standby.signal, and a standby is promoted. At primus's next answer
/// medic recovers the killed server in standby mode, makes it a standby of the new primary,
/// and it streams from there with every acknowledged write; none was acknowledged by primus
/// after the new primary's first.
#[test]
fn a_hung_primary_server_is_killed_by_its_fence_and_made_a_standby_by_medic() {
    use common::pg_service::*;
    use std::sync::atomic::Ordering;

    let Some(mut env) = Env::of_example("dryad.yaml", 22, database_with_rejoin("rewind")) else {
        return;
    };
    let (primus, secundus, tertius) = (env.ip(10), env.ip(11), env.ip(12));
    three_in_sync(&mut env, "--data-checksums", true);
    let (writes, stop, client) = start_client(&env);
    let acked = |w: &Writes| w.lock().unwrap().iter().filter(|w| w.2).count();
    env.wait("20 writes acknowledged", Duration::from_secs(20), |_| {
        acked(&writes) >= 20
    });

    // (The lab's machines share the host's processes: primus's own server, by its pid.)
    on(
        &env,
        &primus,
        "pid=$(head -n 1 /var/lib/pg/postmaster.pid) && pkill -STOP -P \"$pid\" && kill -STOP \"$pid\"",
    );
    let ip_of = |m: &str| {
        if m == "secundus" {
            secundus.clone()
        } else {
            tertius.clone()
        }
    };
    // The fence sees the postmaster stopped by a signal and kills it without waiting out the
    // stop command (30 s) and the immediate shutdown (20 s).
    env.wait(
        "a standby the primary, a write acknowledged there",
        Duration::from_secs(150),
        |e| {
            let new = primary_of_db(e);
            (new == "secundus" || new == "tertius")
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
    let steps = steps(&env);
    for s in steps.iter().filter(|s| s["kind"] == "pg-stop") {
        eprintln!("pg-stop: {s}");
    }
    assert!(
        steps.iter().any(|s| s["kind"] == "pg-stop"
            && s["summary"].as_str().is_some_and(|t| {
                t.starts_with("dryad-db@primus: its postmaster was stopped by a signal")
                    && t.contains("killed the server (SIGKILL")
                    && t.contains("standby.signal written")
            })),
        "{steps:#?}"
    );

    env.wait(
        "primus a standby of the new primary (in recovery, passing its checks)",
        Duration::from_secs(90),
        |e| {
            let p = pg::service_machine(e, "dryad-db", "primus");
            p["role"] == "standby" && p["health"]["role"] == "replica"
        },
    );
    let rejoined = rejoined(&env, "primus");
    eprintln!("primus: {rejoined}");
    assert!(
        rejoined.contains("recovered in standby mode first")
            && rejoined.contains(&format!("streams from {new}:5432")),
        "{rejoined}"
    );
    read_back(&env, &writes, &new_name, &new, ("primus", &primus));
    env.stop();
}
