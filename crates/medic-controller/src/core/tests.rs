//! The core's decisions, table by table: no socket, no clock, no task.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;
use std::time::Duration;

use medic_detect::{Observation, Seen, Witnesses};
use medic_plan::{Action, Event, StepOutput};
use medic_redis::{LinkStatus, ReplicationInfo, Role};

use super::*;
use crate::checks::{CheckResult, Target};
use crate::journal::Outcome;

pub(super) fn core() -> Core {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lab.yaml");
    let loaded = medic_topology::load_topology(&path).expect("examples/lab.yaml loads");
    let saved = Saved::fresh(&loaded.topology);
    Core::new(Arc::new(loaded), saved)
}

pub(super) fn redis(shard: &str, machine: &str) -> Target {
    Target::Redis {
        shard: shard.into(),
        machine: machine.into(),
    }
}

fn info(role: Role) -> ReplicationInfo {
    ReplicationInfo {
        role,
        master: None,
        master_link_status: (role == Role::Replica).then_some(LinkStatus::Up),
        sync_in_progress: false,
        offset: 100,
        replica_offset: (role == Role::Replica).then_some(100),
        replicas: Vec::new(),
        master_last_io_secs: Some(0),
    }
}

pub(super) fn check(t: &Target, at_ms: u64, o: Observation, role: Option<Role>) -> CheckResult {
    CheckResult {
        target: Arc::new(t.clone()),
        at_ms,
        observation: o,
        detail: "test".into(),
        info: role.map(info),
        took: Duration::ZERO,
        knocked: None,
    }
}

pub(super) fn witnesses(seen: &[(&str, Seen)]) -> Witnesses {
    Witnesses {
        answers: seen.iter().map(|(o, s)| ((*o).to_owned(), *s)).collect(),
    }
}

pub(super) fn alerts(out: &[Output]) -> Vec<&str> {
    out.iter()
        .filter_map(|o| match o {
            Output::Alert { message, .. } => Some(message.as_str()),
            _ => None,
        })
        .collect()
}

/// A request for `event`, queued (and its first failure seen) at `at`.
pub(super) fn request(event: Event, at: u64, detected: bool) -> Request {
    Request {
        event,
        trigger: "test".into(),
        first_failure_ms: Some(at),
        master_last_ok_ms: None,
        queued_ms: at,
        detected,
        resume: None,
    }
}

/// redis1's servers answer, then go silent until `fall` is reached (checks at 250 ms).
fn silence_redis1(c: &mut Core) -> Vec<Output> {
    let mut out = Vec::new();
    for (i, t) in [redis("r9001", "redis1"), redis("r9002", "redis1")]
        .iter()
        .enumerate()
    {
        out.extend(c.on_check(&check(
            t,
            1_000 + i as u64,
            Observation::Ok,
            Some(Role::Master),
        )));
    }
    for n in 1..=3u64 {
        for t in [redis("r9001", "redis1"), redis("r9002", "redis1")] {
            out.extend(c.on_check(&check(&t, 1_000 + 250 * n, Observation::Silent, None)));
        }
    }
    out
}

#[test]
fn silence_confirmed_by_a_majority_of_observers_fails_over() {
    let mut c = core();
    let out = silence_redis1(&mut c);
    // Asked ahead at the first miss, once.
    let asks: Vec<_> = out
        .iter()
        .filter(|o| matches!(o, Output::Ask { .. }))
        .collect();
    assert_eq!(asks.len(), 1, "{out:?}");
    assert!(matches!(asks[0], Output::Ask { ahead: true, .. }));
    let gone = witnesses(&[
        ("haproxy1", Seen::Gone),
        ("haproxy2", Seen::Gone),
        ("redis2", Seen::Gone),
    ]);
    let out = c.on_witnesses(&redis("r9001", "redis1"), true, false, gone, true, 1_800);
    assert!(
        out.iter().any(|o| matches!(o, Output::Detected { .. })),
        "{out:?}"
    );
    assert!(c.is_busy("redis1"));
    let out = c.schedule(1_800);
    let Some(Output::Start { recovery }) = out.iter().find(|o| matches!(o, Output::Start { .. }))
    else {
        panic!("no recovery started: {out:?}");
    };
    let run = &c.running[recovery];
    assert_eq!(
        run.plan.event,
        Event::MachineLost {
            machine: "redis1".into()
        }
    );
}

#[test]
fn silence_that_no_majority_confirms_is_alerted_and_never_failed_over() {
    for (name, seen, expect_alert) in [
        (
            "one replica says gone, proxies cannot be asked",
            vec![
                ("haproxy1", Seen::Unknown),
                ("haproxy2", Seen::Unknown),
                ("redis2", Seen::Gone),
            ],
            "no majority",
        ),
        (
            "the proxies still see it",
            vec![
                ("haproxy1", Seen::Up),
                ("haproxy2", Seen::Up),
                ("redis2", Seen::Up),
            ],
            "other observers still see it",
        ),
    ] {
        let mut c = core();
        silence_redis1(&mut c);
        // Long enough after the first miss for the witnesses to have noticed.
        let later = 1_250 + c.witness_grace().as_millis() as u64 + 1;
        let out = c.on_witnesses(
            &redis("r9001", "redis1"),
            true,
            false,
            witnesses(&seen),
            true,
            later,
        );
        // The early answer does not say "fail over": asked again, first-hand.
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Ask { ahead: false, .. })),
            "{name}: {out:?}"
        );
        let out = c.on_witnesses(
            &redis("r9001", "redis1"),
            false,
            false,
            witnesses(&seen),
            true,
            later,
        );
        assert!(!c.is_busy("redis1"), "{name}: a recovery was queued");
        assert!(
            alerts(&out).iter().any(|a| a.contains(expect_alert)),
            "{name}: {out:?}"
        );
    }
}

#[test]
fn a_machine_that_answers_while_its_loss_is_queued_is_not_acted_on() {
    let mut c = core();
    // A recovery of haproxy1 runs (its own machine, nothing shared with redis1)...
    assert!(c.request(Request {
        event: Event::MachineLost {
            machine: "redis1".into()
        },
        trigger: "test".into(),
        first_failure_ms: Some(1_000),
        master_last_ok_ms: None,
        queued_ms: 2_000,
        detected: true,
        resume: None,
    }));
    // ...and redis1 answers before its turn.
    c.health.insert(
        redis("r9001", "redis1"),
        super::TargetHealth {
            detector: medic_detect::Detector::new(3, 2),
            last: Observation::Ok,
            detail: String::new(),
            last_ok_ms: None,
            first_fail_ms: None,
            ok_since_ms: None,
            role: None,
            offset: None,
            checks: 1,
            knocked: None,
        },
    );
    c.on_check(&check(
        &redis("r9001", "redis1"),
        2_500,
        Observation::Ok,
        Some(Role::Master),
    ));
    let out = c.schedule(3_000);
    assert!(c.running.is_empty(), "{out:?}");
    assert!(!c.is_busy("redis1"));
    assert!(
        alerts(&out)
            .iter()
            .any(|a| a.contains("answered again since")),
        "{out:?}"
    );
}

#[test]
fn recoveries_of_disjoint_machines_run_at_once_and_overlapping_ones_wait() {
    let mut c = core();
    let req = |event: Event| Request {
        event,
        trigger: "test".into(),
        first_failure_ms: None,
        master_last_ok_ms: None,
        queued_ms: 0,
        detected: false,
        resume: None,
    };
    assert!(c.request(req(Event::MachineLost {
        machine: "haproxy1".into()
    })));
    assert!(c.request(req(Event::MachineLost {
        machine: "redis1".into()
    })));
    // redis2 shares both shards with redis1: it waits.
    assert!(c.request(req(Event::MachineLost {
        machine: "redis2".into()
    })));
    // Twice the same machine: refused.
    assert!(!c.request(req(Event::MachineLost {
        machine: "redis1".into()
    })));
    c.schedule(10);
    let events: Vec<String> = c
        .running
        .values()
        .map(|r| r.plan.event.to_string())
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().any(|e| e.contains("haproxy1")));
    assert!(events.iter().any(|e| e.contains("redis1")));
    assert_eq!(c.queued().count(), 1);
}

#[test]
fn a_server_being_promoted_is_not_taken_for_a_stale_master() {
    let mut c = core();
    c.request(Request {
        event: Event::MachineLost {
            machine: "redis1".into(),
        },
        trigger: "test".into(),
        first_failure_ms: None,
        master_last_ok_ms: None,
        queued_ms: 0,
        detected: false,
        resume: None,
    });
    c.schedule(10);
    let id = c.running.keys().next().cloned().expect("started");
    // Run the plan up to its first promotion, and let redis2 answer as master before the
    // step's outcome is recorded.
    loop {
        let Next::Run(step) = c.next_step(&id, 20) else {
            panic!("ended before promoting");
        };
        if matches!(step.action, Action::PromoteReplica { .. }) {
            break;
        }
        c.step_done(&id, &step, &StepOutput::default(), 20);
    }
    let out = c.on_check(&check(
        &redis("r9001", "redis2"),
        30,
        Observation::Ok,
        Some(Role::Master),
    ));
    assert!(alerts(&out).is_empty(), "{out:?}");
    assert!(!c.is_busy("redis2"), "a stale-master recovery was queued");
}

#[test]
fn a_stale_master_outside_any_recovery_is_fenced() {
    let mut c = core();
    let out = c.on_check(&check(
        &redis("r9001", "redis2"),
        30,
        Observation::Ok,
        Some(Role::Master),
    ));
    assert!(c.is_busy("redis2"));
    assert!(alerts(&out)[0].contains("answers as master"), "{out:?}");
}

#[test]
fn a_failed_step_ends_the_recovery_and_a_process_that_cannot_restart_escalates() {
    let mut c = core();
    c.request(Request {
        event: Event::ProcessDied {
            shard: "r9002".into(),
            machine: "redis2".into(),
        },
        trigger: "test".into(),
        first_failure_ms: Some(5),
        master_last_ok_ms: None,
        queued_ms: 5,
        detected: false,
        resume: None,
    });
    c.schedule(10);
    let id = c.running.keys().next().cloned().expect("started");
    // Up to the restart (its playbook), which fails.
    let step = loop {
        let Next::Run(step) = c.next_step(&id, 10) else {
            panic!("no playbook step");
        };
        if matches!(step.action, Action::RunPlaybook { .. }) {
            break step;
        }
        c.step_done(&id, &step, &StepOutput::default(), 10);
    };
    c.step_failed(&id, step.index, "ssh: no route".into());
    let Next::End(outcome) = c.next_step(&id, 11) else {
        panic!("not ended");
    };
    assert!(matches!(outcome, Outcome::Failed { .. }));
    let out = c.finished(&id, &outcome, 12);
    assert!(
        alerts(&out)[0].contains("recovering the whole machine"),
        "{out:?}"
    );
    c.schedule(13);
    let run = c.running.values().next().expect("escalated");
    assert_eq!(
        run.plan.event,
        Event::MachineLost {
            machine: "redis2".into()
        }
    );
}

#[test]
fn a_replacement_launched_before_a_restart_counts_for_the_flap_limits() {
    let mut c = core();
    c.request(Request {
        event: Event::MachineLost {
            machine: "haproxy1".into(),
        },
        trigger: "test".into(),
        first_failure_ms: None,
        master_last_ok_ms: None,
        queued_ms: 0,
        detected: false,
        resume: None,
    });
    c.schedule(1_000);
    let (id, run) = c.running.pop_first().expect("started");
    c.busy.clear();
    let launch = run
        .plan
        .steps
        .iter()
        .find(|s| matches!(s.action, Action::LaunchInstance { .. }))
        .expect("a launch step");
    // A new core, as after a restart: the journal says the launch was done at 2 000 ms.
    let mut c2 = core();
    c2.resume(
        Resume {
            id,
            plan: run.plan.clone(),
            done: [(launch.index, StepOutput::default())].into(),
            launched_ms: [(launch.index, 2_000)].into(),
            begun: Default::default(),
        },
        "test".into(),
        None,
        None,
        3_000,
    );
    assert_eq!(c2.saved.replacements, vec![("haproxy1".to_owned(), 2_000)]);
    // Resumed twice (a second restart): still counted once.
    let again = c2
        .queue
        .front()
        .and_then(|r| r.resume.clone())
        .expect("queued");
    c2.busy.clear();
    c2.queue.clear();
    c2.resume(again, "test".into(), None, None, 4_000);
    assert_eq!(c2.saved.replacements.len(), 1);
}

#[test]
fn a_restart_that_fails_on_another_machine_does_not_escalate_and_is_retried() {
    let mut c = core();
    c.request(Request {
        event: Event::ProcessDied {
            shard: "r9002".into(),
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
    // Every step done up to the sync from the master, which fails (the master is gone).
    let step = loop {
        let Next::Run(step) = c.next_step(&id, 10) else {
            panic!("no sync step");
        };
        if matches!(step.action, Action::WaitInSync { .. }) {
            break step;
        }
        c.step_done(&id, &step, &StepOutput::default(), 10);
    };
    c.step_failed(&id, step.index, "master 10.77.0.10:9002: no answer".into());
    let Next::End(outcome) = c.next_step(&id, 11) else {
        panic!("not ended");
    };
    let out = c.finished(&id, &outcome, 12);
    assert!(
        alerts(&out)
            .iter()
            .any(|a| a.contains("watched again in 10 s")),
        "{out:?}"
    );
    c.schedule(13);
    assert!(c.running.is_empty(), "escalated: {:?}", c.running.keys());
    // The server its restart was for stays out; the rest of its machine is watched.
    let server = ("r9002".to_owned(), "redis2".to_owned());
    assert!(c.saved.unmonitored_servers.contains(&server));
    assert!(!c.saved.unmonitored.contains("redis2"));
    assert!(
        alerts(&out)
            .iter()
            .any(|a| a.contains("r9002@redis2 stays out of monitoring")),
        "{out:?}"
    );
    // Ten seconds on, it is watched again.
    let out = c.schedule(10_012);
    assert!(!c.saved.unmonitored_servers.contains(&server), "{out:?}");
}

#[test]
fn a_follower_detects_and_queues_but_starts_nothing_until_it_leads() {
    let mut c = core();
    c.leading = false;
    silence_redis1(&mut c);
    let gone = witnesses(&[
        ("haproxy1", Seen::Gone),
        ("haproxy2", Seen::Gone),
        ("redis2", Seen::Gone),
    ]);
    c.on_witnesses(&redis("r9001", "redis1"), true, false, gone, true, 1_800);
    assert!(c.is_busy("redis1"), "the verdict is queued");
    assert_eq!(c.schedule(1_900), [], "a follower starts nothing");
    assert!(c.running.is_empty());
    c.leading = true;
    assert!(
        c.schedule(2_000)
            .iter()
            .any(|o| matches!(o, Output::Start { .. })),
        "once it leads, the queued verdict starts"
    );
}

#[test]
fn a_new_leaders_resumed_recovery_takes_the_place_of_its_own_verdict() {
    // The old leader's recovery of redis1, as the journal in etcd has it.
    let mut old = core();
    old.request(Request {
        event: Event::MachineLost {
            machine: "redis1".into(),
        },
        trigger: "old leader".into(),
        first_failure_ms: None,
        master_last_ok_ms: None,
        queued_ms: 0,
        detected: false,
        resume: None,
    });
    old.schedule(1_000);
    let (id, run) = old.running.pop_first().expect("started");
    // The follower queued its own verdict on the same machine.
    let mut c = core();
    c.leading = false;
    assert!(c.request(Request {
        event: Event::MachineLost {
            machine: "redis1".into(),
        },
        trigger: "own verdict".into(),
        first_failure_ms: None,
        master_last_ok_ms: None,
        queued_ms: 1_500,
        detected: true,
        resume: None,
    }));
    c.resume(
        Resume {
            id: id.clone(),
            plan: run.plan.clone(),
            done: [(1, StepOutput::default())].into(),
            launched_ms: Default::default(),
            begun: Default::default(),
        },
        "old leader".into(),
        None,
        None,
        2_000,
    );
    assert_eq!(c.queue.len(), 1, "one recovery of redis1, not two");
    c.leading = true;
    let out = c.schedule(2_100);
    assert!(
        out.contains(&Output::Start {
            recovery: id.clone()
        }),
        "{out:?}"
    );
    assert!(c.running[&id].resumed);
    // Deposed: it forgets what it ran (the next leader resumes it) and starts nothing.
    c.stand_down();
    assert!(c.running.is_empty() && !c.is_busy("redis1") && !c.leading);
    assert_eq!(c.schedule(2_200), []);
}

#[test]
fn a_follower_adopts_the_leaders_state_and_keeps_what_it_has_seen() {
    let mut c = core();
    c.on_check(&check(
        &redis("r9001", "redis1"),
        100,
        Observation::Ok,
        Some(Role::Master),
    ));
    let mut theirs = c.saved.clone();
    theirs.maintenance.insert("redis2".into());
    c.adopt(theirs);
    assert!(c.saved.maintenance.contains("redis2"));
    assert!(c.health.contains_key(&redis("r9001", "redis1")));
}

#[test]
fn what_a_proxy_lacks_is_recorded_and_a_change_asks_to_be_saved() {
    let mut c = core();
    let shard = c.saved.observed.shards.keys().next().unwrap().clone();
    let lacks = |m: &[&str]| {
        BTreeMap::from([(
            shard.clone(),
            m.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
        )])
    };
    assert!(
        !c.set_missing_on("haproxy1", BTreeMap::new()),
        "nothing new"
    );
    assert!(c.set_missing_on("haproxy1", lacks(&["redis2"])));
    assert!(
        !c.set_missing_on("haproxy1", lacks(&["redis2"])),
        "the same reading"
    );
    assert!(c.set_missing_on("haproxy2", lacks(&["redis2"])));
    assert_eq!(
        c.saved.observed.shards[&shard].lacking("redis2"),
        ["haproxy1", "haproxy2"]
    );
    assert!(
        c.set_missing_on("haproxy1", lacks(&[])),
        "haproxy1 has it now"
    );
    assert!(!c.set_missing_on("haproxy1", BTreeMap::new()));
    // A proxy the topology does not have is forgotten, and that is a change too.
    c.saved
        .observed
        .shards
        .get_mut(&shard)
        .unwrap()
        .missing_on
        .insert("gone".into(), ["redis1".to_string()].into());
    assert!(c.set_missing_on("haproxy2", lacks(&["redis2"])));
    assert!(
        !c.saved.observed.shards[&shard]
            .missing_on
            .contains_key("gone")
    );
}
