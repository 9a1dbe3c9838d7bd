//! `medic run` on the lab under partial partitions (blackhole routes between namespaces, both
//! ways): the monitor host on the wrong side of a partition must not fail over, terminate or
//! re-route anything its clients still use. Each test has a client writing through the app
//! proxy, reads every acknowledged write back through it, and checks each proxy's routing with
//! HAProxy's own `show servers state`. Needs root.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use medic_testkit::wait_until;

/// Starts the controller and a client writing from the app machine through its app proxy;
/// returns once the client has had its first writes acknowledged.
fn start_with_a_client_on_the_app_machine(env: &mut Env) -> (String, Writer) {
    env.start(&[]);
    let app = env.ip(14);
    let writer = Writer::start_in(
        Some(env.netns("app")),
        format!("{app}:7001").parse().unwrap(),
    );
    writer.wait_acked("the client's first writes", Instant::now(), 50);
    (app, writer)
}

/// How many checks the controller has made of `target` (from its status).
fn checks_of(env: &Env, machine: &str, target: &str) -> u64 {
    env.machine(machine)["targets"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["target"] == target))
        .and_then(|t| t["health"]["checks"].as_u64())
        .unwrap_or(0)
}

/// Each proxy's routing, read from HAProxy itself: for backend `redis-SHARD`, which servers are
/// `ready` and which in maintenance, with their addresses.
fn routing(env: &Env, proxy_host: u8, shard: &str) -> Vec<(String, String, bool)> {
    let proxy = format!("haproxy{}", proxy_host - 11);
    let mut servers: Vec<(String, String, bool)> = env
        .haproxy_servers(&proxy, 9999, Some(&format!("redis-{shard}")))
        .into_iter()
        .map(|s| (s.server.clone(), s.addr.clone(), s.is_ready()))
        .collect();
    servers.sort();
    servers
}

/// {monitor, redis2} | {redis1, haproxy1, haproxy2, app}: the monitor host and the replica are
/// the minority. The replica says its link to the master is down and no proxy can be asked: that
/// is one observer of three, not a majority, so nothing may be failed over or terminated —
/// and the clients, who reach their master the whole time, must never notice.
#[test]
fn a_monitor_on_the_minority_side_of_a_partition_neither_fails_over_nor_terminates() {
    let Some(mut env) = Env::new(1, |t| t) else {
        return;
    };
    // The client runs on the app machine, on the majority side.
    let (app, writer) = start_with_a_client_on_the_app_machine(&mut env);
    let before: Vec<_> = [12u8, 13]
        .iter()
        .flat_map(|p| ["r9001", "r9002"].map(|s| routing(&env, *p, s)))
        .collect();
    let cut_at = Instant::now();
    for m in ["redis1", "haproxy1", "haproxy2", "app"] {
        env.fault(m, "partition", &["--from", "monitor,redis2"]);
    }
    // The controller sees the silence and says why it does not act.
    env.wait(
        "the alert that redis1 cannot be confirmed lost",
        RECOVERY,
        |e| {
            e.alerts()
                .iter()
                .any(|a| a.contains("redis1") && a.contains("does not fail over"))
        },
    );
    // It goes on watching for a while (40 more checks of redis1's silence: 10 s at 250 ms),
    // with no recovery and the client writing all along.
    let seen = checks_of(&env, "redis1", "redis r9001@redis1");
    env.wait("40 more checks of redis1", RECOVERY, |e| {
        checks_of(e, "redis1", "redis r9001@redis1") >= seen + 40
    });
    writer.wait_acked("writes during the partition", cut_at, 100);
    assert_eq!(
        env.history(),
        Vec::<serde_json::Value>::new(),
        "no recovery"
    );
    for m in ["redis1", "redis2", "haproxy1", "haproxy2", "app"] {
        let inst = env.instances(m);
        assert!(
            inst.len() == 1 && inst[0].1 == "running",
            "{m} untouched: {inst:?}"
        );
    }
    // Healed: everything is watched again, and still nothing was done.
    for m in ["redis1", "haproxy1", "haproxy2", "app"] {
        env.fault(m, "heal", &[]);
    }
    env.wait("every machine up", RECOVERY, |e| {
        ["redis1", "redis2", "haproxy1", "haproxy2", "app"]
            .iter()
            .all(|m| e.machine(m)["state"] == "up")
    });
    let settled = Instant::now();
    writer.wait_acked("writes after the heal", settled, 20);
    let log = writer.finish();
    // Not one write failed: the fault window is empty.
    assert_no_acknowledged_write_lost(&app, &log, settled, settled);
    assert_eq!(
        env.history(),
        Vec::<serde_json::Value>::new(),
        "no recovery"
    );
    let after: Vec<_> = [12u8, 13]
        .iter()
        .flat_map(|p| ["r9001", "r9002"].map(|s| routing(&env, *p, s)))
        .collect();
    assert_eq!(after, before, "each proxy routes as before");
    for r in &after {
        let ready: Vec<&str> = r.iter().filter(|s| s.2).map(|s| s.0.as_str()).collect();
        assert_eq!(ready, ["redis1"], "{r:?}");
    }
    wait_until(
        "both shards ok with redis1 master",
        RECOVERY,
        Duration::from_millis(100),
        || {
            let (a, b) = (env.shard("r9001"), env.shard("r9002"));
            if [&a, &b]
                .iter()
                .all(|s| s["state"] == "ok" && s["master"] == "redis1")
            {
                Ok(())
            } else {
                Err(format!("{a}\n{b}"))
            }
        },
    );
}

/// haproxy2 cut off from the monitor host only (the app proxy still reaches it), then redis1
/// crashes. The majority (haproxy1, redis2) confirms the loss; haproxy2 cannot be fenced, so
/// redis1 is fenced at its source — terminated and gone — before redis2 is promoted. The
/// recovery says it is `incomplete` (haproxy2 missed its changes), and once haproxy2 answers
/// again the reconcile brings it to the intended routing: redis2 ready, redis1's replacement in
/// maintenance at its new address.
#[test]
fn a_proxy_that_cannot_be_fenced_blocks_nothing_unsafe_and_is_repaired_when_it_answers() {
    let Some(mut env) = Env::new(2, |t| t) else {
        return;
    };
    let (app, writer) = start_with_a_client_on_the_app_machine(&mut env);
    env.fault("haproxy2", "partition", &["--from", "monitor"]);
    env.wait(
        "the alert that the monitor cannot reach haproxy2",
        RECOVERY,
        |e| {
            e.alerts()
                .iter()
                .any(|a| a.contains("cannot reach haproxy2"))
        },
    );
    let crashed_at = Instant::now();
    env.fault("redis1", "crash", &[]);
    env.wait("the recovery of redis1, incomplete", RECOVERY, |e| {
        e.ended("machine redis1 lost", "incomplete")
    });
    let r = env.recovery("machine redis1 lost").unwrap();
    let steps = r["steps"].as_array().unwrap();
    let source = steps.iter().find(|s| s["kind"] == "fence-source").unwrap();
    assert!(
        source["summary"]
            .as_str()
            .is_some_and(|s| s.contains("gone before any promotion") && s.contains("haproxy2")),
        "{source}"
    );
    // What was skipped is haproxy2's: its runtime changes, and their haproxy.cfg writes.
    let skipped = r["outcome"]["skipped"].as_array().unwrap();
    assert!(
        !skipped.is_empty()
            && skipped.iter().all(|s| s.as_str().is_some_and(|s| {
                s.starts_with("haproxy2: skipped")
                    || s.starts_with("haproxy2: haproxy.cfg NOT written")
            })),
        "{skipped:?}"
    );
    let settled = Instant::now();
    writer.wait_acked("writes through haproxy1", settled, 20);
    // Until then the status does not call the shards ok: haproxy2's routing is unknown.
    env.wait("r9001's routing unknown", RECOVERY, |e| {
        e.shard("r9001")["state"] == "routing unknown"
    });
    // haproxy2 answers again: the reconcile repairs it.
    env.fault("haproxy2", "heal", &[]);
    let new = env.ip(15);
    wait_until(
        "haproxy2 routing as intended",
        RECOVERY,
        Duration::from_millis(200),
        || {
            let r: Vec<_> = ["r9001", "r9002"].map(|s| routing(&env, 13, s)).to_vec();
            let want = vec![
                ("redis1".to_owned(), new.clone(), false),
                ("redis2".to_owned(), env.ip(11), true),
            ];
            if r.iter().all(|b| *b == want) {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        },
    );
    env.wait("the repair's alert", Duration::from_secs(10), |e| {
        e.alerts()
            .iter()
            .any(|a| a.contains("haproxy2 did not route as intended; repaired"))
    });
    // The repair is in haproxy2's haproxy.cfg too: a reload keeps it.
    for s in ["r9001", "r9002"] {
        let backend = format!("redis-{s}");
        wait_until(
            "haproxy2's haproxy.cfg as its routing",
            Duration::from_secs(10),
            Duration::from_millis(100),
            || {
                let r1 = env.haproxy_cfg_line("haproxy2", &backend, "redis1");
                let r2 = env.haproxy_cfg_line("haproxy2", &backend, "redis2");
                let port = &s[1..];
                if r1.contains(&format!("{new}:{port}"))
                    && r1.ends_with("disabled")
                    && r2.starts_with("server redis2 ")
                    && !r2.contains("disabled")
                {
                    Ok(())
                } else {
                    let said: Vec<String> = env
                        .logs()
                        .lines()
                        .filter(|l| l.contains("haproxy2") && l.contains("haproxy.cfg"))
                        .map(str::to_owned)
                        .collect();
                    Err(format!("{r1} / {r2}; medic said: {said:#?}"))
                }
            },
        );
    }
    // A client of haproxy2 writes to the new master.
    assert_eq!(cli(&env.ip(13), 8001, &["SET", "via", "haproxy2"]), "OK");
    assert_eq!(cli(&env.ip(11), 9001, &["GET", "via"]), "haproxy2");
    let log = writer.finish();
    assert_no_acknowledged_write_lost(&app, &log, crashed_at, settled);
    // Both proxies agree, and the status says so.
    for s in ["r9001", "r9002"] {
        assert_eq!(routing(&env, 12, s), routing(&env, 13, s), "{s}");
    }
    env.wait("both shards ok", RECOVERY, |e| {
        ["r9001", "r9002"].iter().all(|s| {
            let sh = e.shard(s);
            sh["state"] == "ok"
                && sh["routes"]
                    .as_array()
                    .is_some_and(|r| r.len() == 2 && r.iter().all(|x| x["to"][0] == "redis2"))
        })
    });
}

/// The monitor host is cut off from redis2 (the replica), and while it is, redis2's r9001
/// process dies. Nothing is decided then (the proxies still see redis2); once the partition
/// heals, the refusals are a dead process: it is restarted and syncs again. (Found by the
/// simulator: silence followed by refusals gave no verdict, and the process stayed dead.)
#[test]
fn a_process_that_died_while_the_monitor_was_cut_off_is_restarted_after_the_heal() {
    let Some(mut env) = Env::new(3, |t| t) else {
        return;
    };
    let (app, writer) = start_with_a_client_on_the_app_machine(&mut env);
    env.fault("redis2", "partition", &["--from", "monitor"]);
    env.wait(
        "the alert that the monitor cannot reach redis2",
        RECOVERY,
        |e| e.alerts().iter().any(|a| a.contains("cannot reach redis2")),
    );
    // r9001@redis2 dies where the monitor host cannot see it (asked from inside redis2).
    let replica = env.ip(11);
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &env.netns("redis2"), "redis-cli", "-h"])
        .args([replica.as_str(), "-p", "9001", "SHUTDOWN", "NOSAVE"])
        .output()
        .unwrap();
    assert!(
        cli_refused_in(&env, "redis2", &replica, 9001),
        "r9001@redis2 still answers after SHUTDOWN: {out:?}"
    );
    let healed = Instant::now();
    env.fault("redis2", "heal", &[]);
    env.wait("the restart of r9001@redis2", RECOVERY, |e| {
        e.ended("r9001@redis2 died", "completed")
    });
    env.wait("r9001 ok, redis1 master", RECOVERY, |e| {
        let sh = e.shard("r9001");
        sh["state"] == "ok" && sh["master"] == "redis1"
    });
    assert!(cli(&replica, 9001, &["ROLE"]).starts_with("slave"));
    assert_eq!(cli(&app, 7001, &["SET", "after-heal", "1"]), "OK");
    wait_replicated(&replica, 9001, "after-heal", "1");
    let settled = Instant::now();
    writer.wait_acked("writes after the restart", settled, 20);
    let log = writer.finish();
    // The master was never touched: not one write failed.
    assert_no_acknowledged_write_lost(&app, &log, healed, healed);
    assert_eq!(env.instances("redis2").len(), 1, "nothing replaced");
}

/// Whether `machine`'s server at `ip:port`, asked from inside the machine, refuses.
fn cli_refused_in(env: &Env, machine: &str, ip: &str, port: u16) -> bool {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &env.netns(machine), "redis-cli", "-h", ip])
        .args(["-p", &port.to_string(), "PING"])
        .output()
        .unwrap();
    !String::from_utf8_lossy(&out.stdout).contains("PONG")
}

/// redis2's replica of r9001 pointed by hand at another server (redis1's r9002, another
/// shard's stream): medic stops counting it in sync, says so, and makes it a replica of
/// r9001's master again; it then holds a write made through the app proxy.
#[test]
fn a_replica_pointed_at_another_server_is_made_to_follow_its_master_again() {
    let Some(mut env) = Env::new(21, |t| t) else {
        return;
    };
    env.start(&[]);
    env.wait("r9001 ok", RECOVERY, |e| e.shard("r9001")["state"] == "ok");
    let (redis1, redis2, app) = (env.ip(10), env.ip(11), env.ip(14));
    assert_eq!(cli(&redis2, 9001, &["REPLICAOF", &redis1, "9002"]), "OK");
    env.wait("the alert naming the other server", RECOVERY, |e| {
        e.alerts().iter().any(|a| {
            a.contains(&format!(
                "r9001@redis2 replicates from {redis1}:9002, not from redis1"
            ))
        })
    });
    env.wait("the recovery that re-points it", RECOVERY, |e| {
        e.ended(
            "redis r9001@redis2 replicates from another server than its master",
            "completed",
        )
    });
    let info = cli(&redis2, 9001, &["INFO", "replication"]);
    assert!(
        info.contains(&format!("master_host:{redis1}"))
            && info.contains("master_port:9001")
            && info.contains("master_link_status:up"),
        "{info}"
    );
    assert_eq!(cli(&app, 7001, &["SET", "followed", "1"]), "OK");
    wait_replicated(&redis2, 9001, "followed", "1");
    env.wait("r9001 ok again", RECOVERY, |e| {
        e.shard("r9001")["state"] == "ok"
    });
    eprintln!(
        "redis2 follows redis1:9001 again: {}",
        info.replace("\r\n", " ")
    );
}
