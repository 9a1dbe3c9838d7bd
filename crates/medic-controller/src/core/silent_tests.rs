//! What the core tells the planner is not answering (`Hints::silent`): a failover steers
//! around those replicas when it can.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use medic_detect::Observation;
use medic_redis::Role;

use super::tests::{alerts, check, core, redis};

fn pair(shard: &str, machine: &str) -> (String, String) {
    (shard.to_owned(), machine.to_owned())
}

#[test]
fn servers_out_of_monitoring_or_failing_their_checks_are_silent() {
    let mut c = core();
    assert!(c.silent_servers().is_empty());
    // A replica answering is not.
    c.on_check(&check(
        &redis("r9001", "redis2"),
        1_000,
        Observation::Ok,
        Some(Role::Replica),
    ));
    assert!(c.silent_servers().is_empty());
    // One bad answer is not enough; `fall` of them are, for that server alone.
    let bad = |at| check(&redis("r9001", "redis2"), at, Observation::Unhealthy, None);
    c.on_check(&bad(1_100));
    assert!(c.silent_servers().is_empty());
    for i in 1..10 {
        c.on_check(&bad(1_100 + i * 100));
    }
    assert_eq!(c.silent_servers(), [pair("r9001", "redis2")].into());
    // Out of monitoring: a server alone, or every server of a machine.
    c.saved.unmonitored_servers.insert(pair("r9002", "redis1"));
    c.saved.unmonitored.insert("redis2".to_owned());
    assert_eq!(
        c.silent_servers(),
        [
            pair("r9001", "redis2"),
            pair("r9002", "redis1"),
            pair("r9002", "redis2")
        ]
        .into()
    );
    // Answering again (`rise` times) clears what its checks said.
    c.saved.unmonitored.clear();
    for i in 0..10 {
        let ok = check(
            &redis("r9001", "redis2"),
            3_000 + i * 100,
            Observation::Ok,
            Some(Role::Replica),
        );
        c.on_check(&ok);
    }
    assert_eq!(c.silent_servers(), [pair("r9002", "redis1")].into());
}

/// A lost machine kept for the copy it may hold (its replica of a shard whose master does
/// not answer either) is watched again after the backoff, as after a failed recovery: lost
/// still, it is planned afresh; answering, judged as it answers.
#[test]
fn a_machine_kept_for_its_copy_is_watched_again_after_the_backoff() {
    use medic_plan::{Action, Event, StepOutput};

    use super::{Next, Request};
    use crate::journal::Outcome;

    let mut c = core();
    // r9001's master redis1 is out of monitoring (its own recovery failed); redis2, its one
    // replica, is lost.
    c.saved.unmonitored.insert("redis1".to_owned());
    c.request(Request {
        event: Event::MachineLost {
            machine: "redis2".into(),
        },
        trigger: "test".into(),
        first_failure_ms: Some(5),
        master_last_ok_ms: None,
        queued_ms: 5,
        detected: true,
        resume: None,
    });
    c.schedule(10);
    let id = c.running.keys().next().cloned().expect("started");
    assert_eq!(c.saved.recoveries, [("redis2".to_owned(), 10)]);
    let mut out = Vec::new();
    let outcome = loop {
        match c.next_step(&id, 20) {
            Next::Run(step) => {
                assert!(
                    !matches!(
                        step.action,
                        Action::TerminateInstance { .. } | Action::FenceAtSource { .. }
                    ),
                    "{:?}",
                    step.action
                );
                out.extend(c.step_done(&id, &step, &StepOutput::default(), 20));
            }
            Next::End(outcome) => break outcome,
            Next::Unknown => panic!("the recovery vanished"),
        }
    };
    assert!(matches!(outcome, Outcome::Alerted), "{outcome:?}");
    assert!(
        alerts(&out)
            .iter()
            .any(|a| a.starts_with("redis2 is left as it is (not terminated): the masters of shards r9001, r9002 do not answer either")),
        "{out:?}"
    );
    let out = c.finished(&id, &outcome, 30);
    assert_eq!(
        alerts(&out),
        [
            "redis2 stays out of monitoring, kept: it is watched again in 10 s (try 1), or `medic monitor redis2` now"
        ]
    );
    assert!(c.saved.unmonitored.contains("redis2"));
    assert_eq!(c.saved.retries.get("redis2"), Some(&(10_030, 1)));
    // Not counted against the crash-loop limit: judged again, it is the same loss.
    assert!(c.saved.recoveries.is_empty(), "{:?}", c.saved.recoveries);
    // Not before the backoff; then watched again.
    assert!(alerts(&c.schedule(10_029)).is_empty());
    let out = c.schedule(10_030);
    assert!(
        alerts(&out)[0].starts_with("redis2 is watched again after its recovery's backoff"),
        "{out:?}"
    );
    assert!(!c.saved.unmonitored.contains("redis2"));
}
