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
use medic_haproxy::ProxyApi;
use medic_testkit::wait_until;

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
    let api =
        medic_haproxy::RuntimeApi::tcp(format!("{}:9999", env.ip(proxy_host)).parse().unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut servers: Vec<(String, String, bool)> = rt
        .block_on(api.servers(Some(&format!("redis-{shard}"))))
        .unwrap()
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
    env.start(&[]);
    let app = env.ip(14);
    // The client runs on the app machine, on the majority side.
    let writer = Writer::start_in(
        Some(env.netns("app")),
        format!("{app}:7001").parse().unwrap(),
    );
    writer.wait_acked("the client's first writes", Instant::now(), 50);
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
