//! The spare pool's tending: what is prepared, what is retired, and the hourly bound.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;

use medic_plan::{Action, Event, StepOutput};
use medic_topology::Role;

use super::*;
use crate::journal::Outcome;

/// examples/lab.yaml with `policy.spares` set as `spares` (YAML flow map).
fn core(spares: &str) -> Core {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("examples/lab.yaml")).unwrap();
    let text = text
        .replace(
            "  boot_timeout: 5m\n",
            &format!("  boot_timeout: 5m\n  spares: {spares}\n"),
        )
        .replace("../amis", &root.join("amis").display().to_string());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lab.yaml");
    std::fs::write(&path, text).unwrap();
    let loaded = medic_topology::load_topology(&path).expect("lab.yaml with spares loads");
    let saved = Saved::fresh(&loaded.topology);
    Core::new(Arc::new(loaded), saved)
}

fn spare(id: &str, role: Role, ready: bool, recovery: Option<&str>) -> SpareSeen {
    SpareSeen {
        id: id.into(),
        role,
        ready,
        recovery: recovery.map(str::to_owned),
        fit: Some(lab_fit(role)),
    }
}

/// How examples/lab.yaml launches a machine of `role` (the local provider: its AMI alone).
fn lab_fit(role: Role) -> String {
    let ami = match role {
        Role::Redis => "redis",
        _ => "haproxy",
    };
    medic_topology::spares::fit(ami, None, None, &[])
}

/// Every queued or running preparation, as (role, name).
fn jobs(c: &Core) -> Vec<(Role, String)> {
    c.queue
        .iter()
        .map(|r| &r.event)
        .chain(c.running.values().map(|r| &r.plan.event))
        .filter_map(|e| match e {
            Event::Spare { role, name, .. } => Some((*role, name.clone())),
            _ => None,
        })
        .collect()
}

fn started(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::Start { recovery } => Some(recovery.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_missing_spare_is_prepared_once_and_runs_beside_a_failover() {
    let mut c = core("{redis: 1, haproxy: 1}");
    let t = c.tend_spares(&[], 1_000);
    assert!(t.retire.is_empty());
    let j = jobs(&c);
    assert_eq!(j.len(), 2, "one preparation per role: {j:?}");
    // Tended again while they are queued: nothing more.
    let _ = c.tend_spares(&[], 2_000);
    assert_eq!(jobs(&c).len(), 2);
    // A failover of redis1 queued after them starts beside them (they claim nothing).
    c.request(Request {
        event: Event::MachineLost {
            machine: "redis1".into(),
        },
        trigger: "test".into(),
        first_failure_ms: None,
        master_last_ok_ms: None,
        queued_ms: 2_000,
        detected: false,
        resume: None,
    });
    let out = c.schedule(3_000);
    assert_eq!(started(&out).len(), 3, "{out:?}");
    // The preparation is one step: launch, SSH, the playbook's spare steps, tag ready.
    let prep = c
        .running
        .values()
        .find(|r| {
            matches!(
                &r.plan.event,
                Event::Spare {
                    role: Role::Redis,
                    ..
                }
            )
        })
        .unwrap();
    assert_eq!(prep.plan.steps.len(), 1);
    let Action::PrepareSpare { spec, stop, .. } = &prep.plan.steps[0].action else {
        panic!("{:?}", prep.plan.steps[0].action)
    };
    assert_eq!(
        spec.tags.get("medic:spare").map(String::as_str),
        Some("redis")
    );
    assert!(!spec.tags.contains_key("medic:machine"));
    assert!(!stop, "spares are kept running by default");
    // The failover's launch takes a spare first.
    let failover = c
        .running
        .values()
        .find(|r| matches!(&r.plan.event, Event::MachineLost { .. }))
        .unwrap();
    assert!(failover.plan.steps.iter().any(
        |s| matches!(&s.action, Action::LaunchInstance { spec } if spec.from_spares && spec.machine == "redis1")
    ));
}

#[test]
fn a_spare_whose_preparation_ended_unready_is_retired_and_replaced() {
    let mut c = core("{redis: 1}");
    let _ = c.tend_spares(&[], 1_000);
    let out = c.schedule(1_000);
    let id = started(&out).pop().unwrap();
    // Its instance exists, not ready, while the preparation runs: kept.
    let listed = [spare("i-1", Role::Redis, false, Some(&id))];
    let t = c.tend_spares(&listed, 2_000);
    assert!(t.retire.is_empty(), "{:?}", t.retire);
    assert_eq!(jobs(&c).len(), 1);
    // The preparation fails: the instance is retired, and another preparation queued.
    let failed = Outcome::Failed {
        step: 1,
        error: "playbook failed".into(),
    };
    let out = c.finished(&id, &failed, 3_000);
    assert!(out.iter().any(|o| matches!(o, Output::Alert { message, .. } if message.contains("could not be prepared"))), "{out:?}");
    let t = c.tend_spares(&listed, 4_000);
    assert!(
        t.retire.is_empty(),
        "not before it was seen so for a minute"
    );
    assert_eq!(jobs(&c).len(), 1, "another is prepared meanwhile");
    let t = c.tend_spares(&listed, 64_000);
    assert_eq!(t.retire.len(), 1);
    assert_eq!(t.retire[0].id, "i-1");
    assert!(t.retire[0].unready);
}

#[test]
fn ready_spares_beyond_the_policy_are_retired_newest_first_but_not_while_one_may_be_taken() {
    let mut c = core("{redis: 1}");
    let listed = [
        spare("i-1", Role::Redis, true, Some("old")),
        spare("i-2", Role::Redis, true, Some("old")),
        spare("i-3", Role::Haproxy, true, Some("old")),
    ];
    let t = c.tend_spares(&listed, 1_000);
    let mut ids: Vec<&str> = t.retire.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    assert_eq!(
        ids,
        ["i-2", "i-3"],
        "the oldest redis spare is kept; haproxy keeps none"
    );
    assert!(jobs(&c).is_empty(), "the pool is full: nothing to prepare");
    // A replacement that may take a spare is running: none is retired.
    c.request(Request {
        event: Event::MachineLost {
            machine: "redis2".into(),
        },
        trigger: "test".into(),
        first_failure_ms: None,
        master_last_ok_ms: None,
        queued_ms: 1_000,
        detected: false,
        resume: None,
    });
    let _ = c.schedule(1_000);
    let t = c.tend_spares(&listed, 2_000);
    assert_eq!(
        t.retire.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["i-3"],
        "only the role no replacement takes a spare of"
    );
}

#[test]
fn preparations_are_bounded_per_hour_and_role() {
    let mut c = core("{redis: 1}");
    let max = 3; // examples/lab.yaml: max_replacements_per_hour
    let mut alerts = 0;
    for round in 0..6u64 {
        let now = 1_000 + round * 60_000;
        let t = c.tend_spares(&[], now);
        alerts += t
            .out
            .iter()
            .filter(|o| matches!(o, Output::Alert { message, .. } if message.contains("held")))
            .count();
        for id in started(&c.schedule(now)) {
            let failed = Outcome::Failed {
                step: 1,
                error: "boot failed".into(),
            };
            let _ = c.finished(&id, &failed, now + 1);
        }
    }
    assert_eq!(c.saved.spare_launches.len(), max);
    assert_eq!(alerts, 1, "told once");
    // An hour after the first, one more may be prepared.
    let _ = c.tend_spares(&[], 1_000 + 3_600_000 + 1);
    assert_eq!(jobs(&c).len(), 1);
}

#[test]
fn a_follower_tends_nothing() {
    let mut c = core("{redis: 1}");
    c.stand_down();
    let t = c.tend_spares(&[spare("i-9", Role::Redis, false, None)], 1_000);
    assert!(t.retire.is_empty());
    assert!(jobs(&c).is_empty());
}

#[test]
fn a_prepared_spare_changes_no_machine_of_the_state() {
    let mut c = core("{redis: 1}");
    let _ = c.tend_spares(&[], 1_000);
    let id = started(&c.schedule(1_000)).pop().unwrap();
    let before = c.saved.observed.clone();
    let step = c.running[&id].plan.steps[0].clone();
    let output = StepOutput {
        address: Some("10.77.0.40".parse().unwrap()),
        instance_id: Some("lab-0040".into()),
        ..StepOutput::default()
    };
    let _ = c.step_done(&id, &step, &output, 2_000);
    assert_eq!(c.saved.observed.machines, before.machines);
}

#[test]
fn a_spare_ready_before_its_preparation_ended_counts_once_and_an_unfit_one_is_retired() {
    let mut c = core("{redis: 1}");
    let _ = c.tend_spares(&[], 1_000);
    let id = started(&c.schedule(1_000)).pop().unwrap();
    // Tagged ready, its preparation not yet over: it is that preparation, not a second spare.
    let t = c.tend_spares(&[spare("i-1", Role::Redis, true, Some(&id))], 2_000);
    assert!(t.retire.is_empty(), "{:?}", t.retire);
    assert_eq!(jobs(&c).len(), 1);
    // After it ended: the pool is full. A ready spare launched otherwise (an older AMI) is
    // retired, and another prepared.
    let _ = c.finished(&id, &Outcome::Completed, 3_000);
    let mut stale = spare("i-0", Role::Redis, true, Some("old"));
    stale.fit = Some("0000000000000000".into());
    let t = c.tend_spares(&[stale, spare("i-1", Role::Redis, true, Some(&id))], 4_000);
    assert_eq!(
        t.retire.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["i-0"]
    );
    assert!(jobs(&c).is_empty(), "i-1 fills the pool");
}

#[test]
fn each_way_a_role_s_machines_are_launched_keeps_its_own_spares() {
    // redis2 launched from another AMI than redis1: a spare of each, each copying its own.
    let mut c = core("{redis: 1}");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("examples/lab.yaml"))
        .unwrap()
        .replace(
            "{name: redis2, role: redis, ami: redis}",
            "{name: redis2, role: redis, ami: haproxy}",
        )
        .replace(
            "  boot_timeout: 5m\n",
            "  boot_timeout: 5m\n  spares: {redis: 1}\n",
        )
        .replace("../amis", &root.join("amis").display().to_string());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lab.yaml");
    std::fs::write(&path, text).unwrap();
    let loaded = medic_topology::load_topology(&path).unwrap();
    c = Core::new(Arc::new(loaded), Saved::fresh(&c.loaded.topology));
    let fits = medic_plan::spare_fits(&c.loaded.topology, Role::Redis);
    assert_eq!(fits.len(), 2, "{fits:?}");
    let _ = c.tend_spares(&[], 1_000);
    let mut likes: Vec<String> = c
        .queue
        .iter()
        .filter_map(|r| match &r.event {
            Event::Spare { like, .. } => Some(like.clone()),
            _ => None,
        })
        .collect();
    likes.sort();
    assert_eq!(likes, ["redis1", "redis2"]);
    // A ready spare of redis1's fit fills only redis1's.
    let _ = c.schedule(1_000);
    let ids: Vec<String> = c.running.keys().cloned().collect();
    for id in ids {
        let _ = c.finished(&id, &Outcome::Completed, 2_000);
    }
    let t = c.tend_spares(&[spare("i-1", Role::Redis, true, Some("old"))], 3_000);
    assert!(t.retire.is_empty(), "{:?}", t.retire);
    let queued: Vec<&Event> = c.queue.iter().map(|r| &r.event).collect();
    assert!(
        matches!(queued.as_slice(), [Event::Spare { like, .. }] if like == "redis2"),
        "{queued:?}"
    );
}

#[test]
fn an_orphan_is_told_once_and_never_terminated() {
    use medic_cloud::{Instance, InstanceState};
    let mut c = core("{redis: 1}");
    c.saved
        .observed
        .machines
        .get_mut("redis1")
        .unwrap()
        .instance_id = Some("lab-0001".into());
    let inst = |id: &str, tags: &[(&str, &str)]| Instance {
        id: id.into(),
        state: InstanceState::Running,
        address: None,
        instance_type: None,
        tags: tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
    let owned = [
        inst("lab-0001", &[("medic:machine", "redis1")]),
        inst(
            "lab-0009",
            &[("medic:machine", "redis1"), ("medic:recovery", "r-old")],
        ),
        inst("lab-0010", &[("medic:spare", "redis")]),
    ];
    let alerts = |out: Vec<Output>| -> Vec<String> {
        out.into_iter()
            .filter_map(|o| match o {
                Output::Alert { message, .. } => Some(message),
                _ => None,
            })
            .collect()
    };
    // Told when a second listing in a row finds it.
    assert!(
        alerts(c.report_orphans(&owned)).is_empty(),
        "one listing is not enough"
    );
    let told = alerts(c.report_orphans(&owned));
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].starts_with(
        "instance lab-0009 (tagged as machine redis1, launched by recovery r-old) is an orphan"
    ));
    assert!(c.report_orphans(&owned).is_empty(), "told once");
    // Gone, then back: told again (after two listings).
    assert!(c.report_orphans(&owned[..1]).is_empty());
    assert!(c.report_orphans(&owned).is_empty());
    assert_eq!(c.report_orphans(&owned).len(), 1);
    // An instance tagged as a machine whose instance the state does not know (a machine a
    // reload added) may be that machine: not told.
    let unknown = [inst(
        "lab-0020",
        &[("medic:machine", "redis2"), ("medic:recovery", "bootstrap")],
    )];
    assert!(c.saved.observed.machines["redis2"].instance_id.is_none());
    assert!(c.report_orphans(&unknown).is_empty());
    assert!(c.report_orphans(&unknown).is_empty());
    // A follower tells nothing.
    c.stand_down();
    assert!(c.report_orphans(&owned).is_empty());
    assert!(c.report_orphans(&owned).is_empty());
}
