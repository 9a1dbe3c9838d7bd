//! What a recovery leaves out of monitoring, and crash loops: a dead process medic may not
//! restart leaves out its server alone; a process that keeps dying is held as its server; a
//! machine lost again and again is held whole.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;

use medic_detect::Observation;
use medic_plan::{Action, Event, StepOutput};
use medic_redis::Role;

use super::tests::{alerts, check, core, redis};
use super::*;
use crate::journal::Outcome;

/// A detected failure's request at `at_ms`, as the checks queue one.
fn detected(event: Event, at_ms: u64) -> Request {
    Request {
        event,
        trigger: "test".into(),
        first_failure_ms: Some(at_ms),
        master_last_ok_ms: None,
        queued_ms: at_ms,
        detected: true,
        resume: None,
    }
}

#[test]
fn a_replica_not_restarted_is_left_out_alone_and_its_machine_stays_watched() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lab.yaml");
    let mut loaded = medic_topology::load_topology(&path).expect("examples/lab.yaml loads");
    loaded
        .topology
        .policy
        .remediation
        .retain(|r| r.value != medic_topology::Remedy::RestartProcess);
    let saved = Saved::fresh(&loaded.topology);
    let mut c = Core::new(Arc::new(loaded), saved);
    c.request(detected(
        Event::ProcessDied {
            shard: "r9002".into(),
            machine: "redis2".into(),
        },
        5,
    ));
    c.schedule(10);
    let id = c.running.keys().next().cloned().expect("started");
    let mut out = Vec::new();
    while let Next::Run(step) = c.next_step(&id, 10) {
        out.extend(c.step_done(&id, &step, &StepOutput::default(), 10));
    }
    out.extend(c.finished(&id, &Outcome::Completed, 11));
    assert!(
        alerts(&out).iter().any(|a| a.contains("is not restarted")),
        "{out:?}"
    );
    // The dead server is out; its machine is not.
    let dead = ("r9002".to_owned(), "redis2".to_owned());
    assert_eq!(c.saved.unmonitored_servers, [dead].into());
    assert!(c.saved.unmonitored.is_empty(), "{:?}", c.saved.unmonitored);
    assert!(!c.paused().contains("redis2"));
    // Its results decide nothing ...
    for n in 0..5u64 {
        let out = c.on_check(&check(
            &redis("r9002", "redis2"),
            100 + 250 * n,
            Observation::Silent,
            None,
        ));
        assert!(out.is_empty(), "{out:?}");
    }
    assert!(!c.health.contains_key(&redis("r9002", "redis2")));
    // ... while the other shard's server on that machine is watched: its silence is asked about.
    let other = redis("r9001", "redis2");
    let mut out = c.on_check(&check(&other, 2_000, Observation::Ok, Some(Role::Replica)));
    for n in 1..=3u64 {
        out.extend(c.on_check(&check(&other, 2_000 + 250 * n, Observation::Silent, None)));
    }
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Ask { target, .. } if *target == other)),
        "{out:?}"
    );
    // `medic monitor redis2` gives the server back.
    c.set_maintenance("redis2", false);
    assert!(c.saved.unmonitored_servers.is_empty());
}

#[test]
fn a_crash_loop_is_held_after_the_hourly_limit_of_recoveries() {
    let mut c = core();
    let max = c.topology().topology.policy.max_recoveries_per_hour.value as u64;
    let died = |at: u64| {
        detected(
            Event::ProcessDied {
                shard: "r9002".into(),
                machine: "redis2".into(),
            },
            at,
        )
    };
    // `max` restarts in the hour, each completed.
    for i in 0..max {
        let at = 1_000 + i * 60_000;
        assert!(c.request(died(at)));
        c.schedule(at);
        let id = c.running.keys().next().cloned().expect("started");
        while let Next::Run(step) = c.next_step(&id, at) {
            c.step_done(&id, &step, &StepOutput::default(), at);
        }
        c.finished(&id, &Outcome::Completed, at);
    }
    // One more within the hour: held — told, not restarted (its recovery runs without the
    // restart), that server left out of monitoring. The rest of its machine is still watched.
    let at = 1_000 + max * 60_000;
    assert!(c.request(died(at)));
    let out = c.schedule(at);
    assert!(
        alerts(&out)[0].contains("recoveries of r9002@redis2 held"),
        "{out:?}"
    );
    assert!(
        alerts(&out)[0].contains("the rest of redis2 is watched"),
        "{out:?}"
    );
    let id = c.running.keys().next().cloned().expect("its recovery runs");
    let plan = c.running[&id].plan.clone();
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s.action, Action::RunPlaybook { .. })),
        "restarted: {:?}",
        plan.steps
    );
    let mut out = Vec::new();
    while let Next::Run(step) = c.next_step(&id, at) {
        out.extend(c.step_done(&id, &step, &StepOutput::default(), at));
    }
    out.extend(c.finished(&id, &Outcome::Completed, at));
    assert!(
        alerts(&out)
            .iter()
            .any(|a| a.contains("is not restarted: its crash loop is held")),
        "{out:?}"
    );
    let server = ("r9002".to_owned(), "redis2".to_owned());
    assert_eq!(c.saved.unmonitored_servers, [server].into());
    assert!(!c.saved.unmonitored.contains("redis2"));
    // A loss of the machine is not held by its process's loop.
    let lost = Request {
        event: Event::MachineLost {
            machine: "redis2".into(),
        },
        ..died(at + 1)
    };
    assert!(c.request(lost));
    c.schedule(at + 1);
    assert_eq!(c.running.len(), 1, "{:?}", c.saved.unmonitored);
    let id = c.running.keys().next().cloned().expect("started");
    c.abandon(&id);
    // `medic monitor redis2`: watched again, and its count starts afresh.
    c.set_maintenance("redis2", false);
    assert!(c.saved.unmonitored_servers.is_empty());
    assert!(c.request(died(at + 2)));
    c.schedule(at + 2);
    assert_eq!(c.running.len(), 1);
}

#[test]
fn a_machine_that_keeps_being_lost_is_held_whole() {
    let mut c = core();
    let max = c.topology().topology.policy.max_recoveries_per_hour.value as u64;
    let lost = |at: u64| {
        detected(
            Event::MachineLost {
                machine: "redis2".into(),
            },
            at,
        )
    };
    for i in 0..max {
        let at = 1_000 + i * 60_000;
        assert!(c.request(lost(at)));
        c.schedule(at);
        let id = c.running.keys().next().cloned().expect("started");
        c.abandon(&id);
    }
    let at = 1_000 + max * 60_000;
    assert!(c.request(lost(at)));
    let out = c.schedule(at);
    assert!(c.running.is_empty(), "started: {:?}", c.running.keys());
    assert!(
        alerts(&out)[0].contains("recoveries of redis2 held"),
        "{out:?}"
    );
    assert!(c.saved.unmonitored.contains("redis2"));
    // The operator may start it at any time.
    c.recover_machine("redis2", at + 1).expect("queued");
    c.schedule(at + 1);
    assert_eq!(c.running.len(), 1);
}

#[test]
fn a_master_whose_machine_loops_is_still_failed_over_without_a_restart() {
    let mut c = core();
    let max = c.topology().topology.policy.max_recoveries_per_hour.value as u64;
    // redis1's other server died `max` times this hour: the machine's count is reached.
    for i in 0..max {
        c.saved
            .recoveries
            .push(("r9002@redis1".to_owned(), 1_000 + i * 1_000));
    }
    // r9001's master dies there for the first time: held (not restarted), still failed over.
    let at = 60_000;
    assert!(c.request(Request {
        master_last_ok_ms: Some(at),
        ..detected(
            Event::ProcessDied {
                shard: "r9001".into(),
                machine: "redis1".into(),
            },
            at,
        )
    }));
    let out = c.schedule(at);
    assert!(
        alerts(&out)[0].contains("recoveries of r9001@redis1 held"),
        "{out:?}"
    );
    let run = c.running.values().next().expect("its recovery runs");
    let kinds: Vec<&str> = run.plan.steps.iter().map(|s| s.action.kind()).collect();
    assert!(
        run.plan
            .steps
            .iter()
            .any(|s| matches!(s.action, Action::PromoteReplica { .. })),
        "{kinds:?}"
    );
    assert!(
        !run.plan
            .steps
            .iter()
            .any(|s| matches!(s.action, Action::RunPlaybook { .. })),
        "{kinds:?}"
    );
}

#[test]
fn a_stale_master_is_never_held() {
    let mut c = core();
    let max = c.topology().topology.policy.max_recoveries_per_hour.value as u64;
    for i in 0..max {
        c.saved
            .recoveries
            .push(("r9002@redis2".to_owned(), 1_000 + i * 1_000));
    }
    assert!(c.request(detected(
        Event::StaleMaster {
            shard: "r9002".into(),
            machine: "redis2".into(),
        },
        60_000,
    )));
    let out = c.schedule(60_000);
    assert!(alerts(&out).is_empty(), "{out:?}");
    assert_eq!(c.running.len(), 1, "fenced and demoted as ever");
}
