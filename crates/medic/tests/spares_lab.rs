//! Spares (`policy.spares`) on the lab of examples/lab.yaml: `medic run` prepares a ready
//! redis spare; a crashed redis machine's replacement takes it (no launch), and the pool is
//! refilled. Real redis servers, HAProxies and sshd in network namespaces; a client writes
//! through the app proxy the whole time. Needs root.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::time::Instant;

use common::*;
use serde_json::Value;

/// The ready spares `medic status` lists: (id, address).
fn ready_spares(env: &Env) -> Vec<(String, String)> {
    env.status()
        .and_then(|s| s["spares"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|s| s["state"] == "ready" && s["role"] == "redis")
        .map(|s| {
            (
                s["id"].as_str().unwrap_or_default().to_owned(),
                s["address"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Every lab instance not terminated: (id, state, its medic tags).
fn live_instances(env: &Env) -> Vec<(String, String, Value)> {
    let dir = env._dir.path().join("lab/machines");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let Ok(t) = std::fs::read_to_string(e.path().join("record.json")) else {
            continue;
        };
        let v: Value = serde_json::from_str(&t).unwrap();
        if v["state"] != "terminated" {
            out.push((
                v["id"].as_str().unwrap().to_owned(),
                v["state"].as_str().unwrap().to_owned(),
                v["tags"].clone(),
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Machines in file order: redis1 .10, redis2 .11, haproxy1 .12, haproxy2 .13, app .14; the
/// spare prepared at the start gets .15, the one that refills the pool .16.
#[test]
fn a_crashed_redis_machine_takes_a_ready_spare_and_the_pool_is_refilled() {
    let Some(mut env) = Env::new(28, |t| {
        t.replace(
            "  boot_timeout: 5m\n",
            "  boot_timeout: 5m\n  spares: {redis: 1}\n",
        )
    }) else {
        return;
    };
    env.start(&[]);
    env.wait("a ready redis spare", RECOVERY, |e| {
        ready_spares(e).len() == 1
    });
    let (spare, spare_ip) = ready_spares(&env).remove(0);
    assert_eq!(spare_ip, env.ip(15));
    // The spare is no machine: no check watches it, no proxy lists it, and it ran the
    // playbook's spare step (the redis user exists) but no redis server.
    let tags = live_instances(&env)
        .into_iter()
        .find(|(id, _, _)| *id == spare)
        .map(|(_, _, tags)| tags)
        .unwrap();
    assert_eq!(tags["medic:spare"], "redis", "{tags}");
    assert_eq!(tags["medic:spare-ready"], "yes", "{tags}");
    assert!(tags.get("medic:machine").is_none(), "{tags}");
    assert!(
        tags["medic:spare-host-key"]
            .as_str()
            .is_some_and(|k| k.starts_with("ssh-ed25519 ")),
        "the host key learned when it was prepared: {tags}"
    );

    let app = env.ip(14);
    let writer = Writer::start(format!("{app}:7001").parse().unwrap());
    writer.wait_acked("the client's first writes", Instant::now(), 50);
    let crashed_at = Instant::now();
    env.fault("redis1", "crash", &[]);
    env.wait("the recovery of redis1", RECOVERY, |e| {
        e.ended("machine redis1 lost", "completed")
    });
    let restored = crashed_at.elapsed();
    let ended = Instant::now();
    env.wait("both shards ok again", RECOVERY, |e| {
        ["r9001", "r9002"].iter().all(|s| {
            let sh = e.shard(s);
            sh["state"] == "ok"
                && sh["master"] == "redis2"
                && sh["replicas"][0]["machine"] == "redis1"
        })
    });
    let settled = Instant::now();
    writer.wait_acked("writes through the app proxy", settled, 20);
    let log = writer.finish();
    assert_no_acknowledged_write_lost(&app, &log, crashed_at, settled);

    // redis1 is the spare now: same instance, same address, a synced replica of redis2.
    let new = env.machine("redis1");
    assert_eq!(new["address"], spare_ip, "{new}");
    assert_eq!(new["instance"], spare, "{new}");
    assert_eq!(new["state"], "up", "monitored again: {new}");
    let last_ok = log.iter().rev().find(|(_, _, ok)| *ok).unwrap().1;
    wait_replicated(
        &spare_ip,
        9001,
        &format!("w:{last_ok}"),
        &last_ok.to_string(),
    );
    assert!(cli(&spare_ip, 9001, &["ROLE"]).starts_with("slave"));
    for proxy in ["haproxy1", "haproxy2"] {
        let servers = env.haproxy_servers(proxy, 9999, Some("redis-r9001"));
        let r1 = servers.iter().find(|s| s.server == "redis1").unwrap();
        assert_eq!(r1.addr, spare_ip);
        assert!(r1.in_maint(), "a replica stays out of rotation");
    }
    // The launch step took the spare: no launch, no boot.
    let recovery = env.recovery("machine redis1 lost").unwrap();
    let steps = recovery["steps"].as_array().unwrap();
    let launch = steps.iter().find(|s| s["kind"] == "launch").unwrap();
    let summary = launch["summary"].as_str().unwrap_or_default();
    assert!(
        summary.starts_with(&format!("took spare {spare} at {spare_ip}")),
        "{launch}"
    );
    let ms = |kind: &str| -> u64 {
        steps
            .iter()
            .filter(|s| s["kind"] == kind)
            .filter_map(|s| s["duration_ms"].as_u64())
            .sum()
    };
    println!(
        "crash to the recovery's end (redundancy back): {:.2} s; launch (taking the spare) {} ms, wait-ssh {} ms, playbook {} ms",
        restored.as_secs_f64(),
        ms("launch"),
        ms("wait-ssh"),
        ms("playbook"),
    );

    // The pool is refilled with another spare, at the next address.
    env.wait("the pool refilled", RECOVERY, |e| {
        ready_spares(e).iter().any(|(id, _)| *id != spare)
    });
    println!(
        "the pool refilled (a new spare ready) {:.1} s after the recovery ended",
        ended.elapsed().as_secs_f64()
    );
    let (refill, refill_ip) = ready_spares(&env).remove(0);
    assert_eq!(refill_ip, env.ip(16));
    // No orphan: every live instance is a machine's current one, or the one ready spare.
    let status = env.status().unwrap();
    let current: Vec<String> = status["machines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["instance"].as_str().map(str::to_owned))
        .collect();
    for (id, state, tags) in live_instances(&env) {
        assert!(
            current.contains(&id) || id == refill,
            "{id} ({state}, {tags}) is neither a machine's nor the pool's"
        );
    }
    let spares = live_instances(&env)
        .into_iter()
        .filter(|(_, _, t)| t.get("medic:spare").is_some())
        .count();
    assert_eq!(spares, 1, "exactly policy.spares");
    let orphans: Vec<String> = env
        .alerts()
        .into_iter()
        .filter(|a| a.contains("is an orphan"))
        .collect();
    assert!(orphans.is_empty(), "{orphans:?}");
    // `medic status` lists it.
    let text_status = text(&medic(&["status", "-t", env.f()]));
    assert!(
        text_status.contains("spares (policy.spares):") && text_status.contains(&refill),
        "{text_status}"
    );
}
