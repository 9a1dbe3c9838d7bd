//! `medic run` on the lab, killed in the middle of a recovery whose effect expires while it is
//! down: a switchover holds the old master's writes with a bounded `CLIENT PAUSE`; if the
//! controller comes back after the pause lifted, it must take it again (and wait for the replica
//! again) before it fences and promotes. A client writes throughout; every acknowledged write
//! is read back through the app proxy. Needs root.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use medic_testkit::wait_until;
use serde_json::Value;

#[test]
fn a_switchover_resumed_after_its_pause_lifted_pauses_again_and_loses_nothing() {
    let Some(mut env) = Env::new(3, |t| t) else {
        return;
    };
    env.start(&[]);
    let app = env.ip(14);
    let writer = Writer::start(format!("{app}:7001").parse().unwrap());
    writer.wait_acked("the client's first writes", Instant::now(), 50);
    // The plan: unmonitor(1), pause(2), wait-sync(3), fences, promote, ... Die after the wait.
    env.stop();
    env.start(&[("MEDIC_FAILPOINT", "after-done:3")]);
    wait_until(
        "the controller's API",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || env.status().map(drop).ok_or("no answer".to_owned()),
    );
    let asked_at = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["switchover", "r9001", "-t", env.f()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(env.wait_exit(RECOVERY), "{}", env.logs());
    // While it is down the pause lifts by itself: redis1 takes writes again (the client's).
    let since = Instant::now();
    writer.wait_acked("writes after the pause lifted", since, 50);
    env.start(&[]);
    env.wait("the switchover", RECOVERY, |e| {
        e.ended("switchover of r9001", "completed")
    });
    let settled = Instant::now();
    writer.wait_acked("writes go on", settled, 20);
    let log = writer.finish();
    assert_no_acknowledged_write_lost(&app, &log, asked_at, settled);
    // The journal shows the pause and the wait done twice: before the crash, and again.
    let dir = env._dir.path().join("lab/controller/journal");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .unwrap()
        .path();
    let records: Vec<Value> = std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let done = |i: u64| {
        records
            .iter()
            .filter(|r| r["record"] == "done" && r["step"] == i)
            .count()
    };
    assert_eq!((done(2), done(3)), (2, 2), "{records:#?}");
    assert_eq!(env.shard("r9001")["master"], "redis2");
}
