//! What the core tells the planner is not answering (`Hints::silent`): a failover steers
//! around those replicas when it can.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use medic_detect::Observation;
use medic_redis::Role;

use super::tests::{alerts, check, core, redis, request};

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

    use super::Next;
    use crate::journal::Outcome;

    // redis2 lost, planned and run at `at`: (the outputs of its steps, its id, how it ended).
    fn lose_redis2(
        c: &mut crate::core::Core,
        at: u64,
    ) -> (Vec<crate::core::Output>, String, Outcome) {
        let lost = Event::MachineLost {
            machine: "redis2".into(),
        };
        c.request(request(lost, at, true));
        c.schedule(at);
        let id = c.running.keys().next().cloned().expect("started");
        let mut out = Vec::new();
        loop {
            match c.next_step(&id, at) {
                Next::Run(step) => {
                    assert!(
                        !matches!(
                            step.action,
                            Action::TerminateInstance { .. } | Action::FenceAtSource { .. }
                        ),
                        "{:?}",
                        step.action
                    );
                    out.extend(c.step_done(&id, &step, &StepOutput::default(), at));
                }
                Next::End(outcome) => return (out, id, outcome),
                Next::Unknown => panic!("the recovery vanished"),
            }
        }
    }

    let mut c = core();
    // r9001's master redis1 is out of monitoring (its own recovery failed); redis2, its one
    // replica, is lost.
    c.saved.unmonitored.insert("redis1".to_owned());
    let (out, id, outcome) = lose_redis2(&mut c, 10);
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
    // Counted once, as any loss.
    assert_eq!(c.saved.recoveries, [("redis2".to_owned(), 10)]);
    // Not before the backoff; then watched again.
    assert!(alerts(&c.schedule(10_029)).is_empty());
    let out = c.schedule(10_030);
    assert!(
        alerts(&out)[0].starts_with("redis2 is watched again after its recovery's backoff"),
        "{out:?}"
    );
    assert!(!c.saved.unmonitored.contains("redis2"));
    // Lost still, kept again: the same loss judged again is not counted anew; the backoff
    // doubles.
    let (_, id, outcome) = lose_redis2(&mut c, 20_000);
    let out = c.finished(&id, &outcome, 20_010);
    assert!(
        alerts(&out)[0].contains("watched again in 20 s (try 2)"),
        "{out:?}"
    );
    assert_eq!(c.saved.recoveries, [("redis2".to_owned(), 10)]);
    // A machine that answered in between counts as any other when it is kept again.
    c.schedule(40_010);
    c.on_check(&check(
        &redis("r9002", "redis2"),
        40_100,
        Observation::Ok,
        Some(Role::Replica),
    ));
    let (_, id, outcome) = lose_redis2(&mut c, 50_000);
    c.finished(&id, &outcome, 50_010);
    assert_eq!(
        c.saved.recoveries,
        [("redis2".to_owned(), 10), ("redis2".to_owned(), 50_000)]
    );
}

/// A kept machine's plan that fails at a promotion (another shard's, mastered there, whose
/// only replica does not answer either): the keep was said before the promotion, and the
/// failed recovery's backoff applies (counted, as any failure).
#[test]
fn a_kept_machine_whose_plan_fails_at_a_promotion_has_said_why_it_is_kept() {
    use medic_plan::{Action, Event, StepOutput};

    use super::Next;
    use crate::journal::Outcome;

    let mut c = core();
    // redis2 masters r9002 (after an earlier failover); redis1, r9001's master and r9002's
    // one replica, is out of monitoring.
    let s = c.saved.observed.shards.get_mut("r9002").unwrap();
    s.master = "redis2".into();
    s.replicas[0].machine = "redis1".into();
    c.saved.unmonitored.insert("redis1".to_owned());
    let lost = Event::MachineLost {
        machine: "redis2".into(),
    };
    c.request(request(lost, 5, true));
    c.schedule(10);
    let id = c.running.keys().next().cloned().expect("started");
    let mut out = Vec::new();
    let outcome = loop {
        match c.next_step(&id, 20) {
            Next::Run(step) if matches!(step.action, Action::PromoteReplica { .. }) => {
                c.step_failed(&id, step.index, "no answer".into());
            }
            Next::Run(step) => out.extend(c.step_done(&id, &step, &StepOutput::default(), 20)),
            Next::End(outcome) => break outcome,
            Next::Unknown => panic!("the recovery vanished"),
        }
    };
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    assert!(
        alerts(&out).iter().any(|a| a.starts_with(
            "redis2 is left as it is (not terminated): the master of shard r9001 does not answer either"
        )),
        "{out:?}"
    );
    let out = c.finished(&id, &outcome, 30);
    assert!(
        alerts(&out)[0].contains("it is watched again in 10 s (try 1)"),
        "{out:?}"
    );
    assert_eq!(c.saved.retries.get("redis2"), Some(&(10_030, 1)));
    assert_eq!(c.saved.recoveries, [("redis2".to_owned(), 10)]);
}
