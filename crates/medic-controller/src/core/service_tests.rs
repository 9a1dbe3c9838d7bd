//! The core's decisions about services (examples/domino.yaml): a failing primary, a failing
//! standby, a machine rejoining, the automatic failback.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;
use std::time::Duration;

use medic_detect::Observation;
use medic_plan::{Action, AlertLevel, Event, StepOutput};

use crate::journal::Outcome;

use super::*;
use crate::checks::{CheckResult, Target};

/// examples/domino.yaml with `edit` applied, and the core on it.
fn core(edit: &str) -> Core {
    core_with(&[("failback: manual", edit)])
}

/// examples/domino.yaml with each (text, replacement) applied, and the core on it.
pub(super) fn core_with(edits: &[(&str, &str)]) -> Core {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut text = std::fs::read_to_string(root.join("examples/domino.yaml")).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "examples/domino.yaml has no {from:?}");
        text = text.replace(from, to);
    }
    let text = text.replace("../amis", &root.join("amis").display().to_string());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("domino.yaml");
    std::fs::write(&path, text).unwrap();
    let loaded = medic_topology::load_topology(&path).expect("domino.yaml loads");
    let saved = Saved::fresh(&loaded.topology);
    Core::new(Arc::new(loaded), saved)
}

pub(super) fn www(machine: &str) -> Target {
    Target::Service {
        service: "www".into(),
        machine: machine.into(),
    }
}

pub(super) fn check(c: &mut Core, t: &Target, at_ms: u64, o: Observation) -> Vec<Output> {
    c.on_check(&CheckResult {
        target: Arc::new(t.clone()),
        at_ms,
        observation: o,
        detail: "test".into(),
        info: None,
        took: Duration::ZERO,
        knocked: None,
    })
}

pub(super) fn queued(c: &Core) -> Vec<Event> {
    c.queued().map(|r| r.event.clone()).collect()
}

#[test]
fn a_primary_failing_its_checks_is_failed_over_and_a_standby_failing_is_only_told() {
    let mut c = core("failback: manual");
    // Nothing is usable before it has been seen passing `rise` (2) checks in a row.
    assert_eq!(c.saved.observed.services["www"].down.len(), 2);
    for at in [1_000, 1_500] {
        for t in [www("web1"), www("web2")] {
            check(&mut c, &t, at, Observation::Ok);
        }
    }
    assert!(c.saved.observed.services["www"].down.is_empty());
    // A standby refusing: `fall` (3) of them, then a warning, no recovery; it is down.
    let mut out = Vec::new();
    for at in [2_000, 2_500, 3_000] {
        out.extend(check(&mut c, &www("web2"), at, Observation::Refused));
    }
    assert!(queued(&c).is_empty(), "{:?}", queued(&c));
    assert!(
        out.iter().any(
            |o| matches!(o, Output::Alert { message, .. } if message.contains("not the primary"))
        ),
        "{out:?}"
    );
    assert!(c.saved.observed.services["www"].down.contains("web2"));
    // The primary: two refusals are not enough (a restart); the third, with no usable
    // standby, is told (once) but queues nothing: there is nothing to fail over to, and the
    // primary stays watched.
    check(&mut c, &www("web1"), 3_000, Observation::Refused);
    check(&mut c, &www("web1"), 3_500, Observation::Unhealthy);
    let out = check(&mut c, &www("web1"), 4_000, Observation::Refused);
    assert!(queued(&c).is_empty(), "{:?}", queued(&c));
    assert!(
        out.iter().any(|o| matches!(o, Output::Alert { level: AlertLevel::Critical, message } if message.contains("no standby passes"))),
        "{out:?}"
    );
    let out = check(&mut c, &www("web1"), 4_500, Observation::Refused);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Alert { .. })),
        "once: {out:?}"
    );
    // The standby passes `rise` checks: now the primary is failed over.
    check(&mut c, &www("web2"), 5_000, Observation::Ok);
    assert!(
        queued(&c).is_empty(),
        "one good check is not `rise`: {:?}",
        queued(&c)
    );
    check(&mut c, &www("web2"), 5_500, Observation::Ok);
    let down = Event::ServiceDown {
        service: "www".into(),
        machine: "web1".into(),
    };
    assert_eq!(queued(&c), std::slice::from_ref(&down));
}

#[test]
fn a_machine_failed_away_from_rejoins_once_it_passes_and_fails_back_after_the_hold() {
    let mut c = core("failback: automatic\n    failback_after: 10s");
    {
        let st = c.saved.observed.services.get_mut("www").unwrap();
        st.primary = "web2".into();
        st.out.insert("web1".into());
    }
    // Out: its silence is not judged (no witnesses asked); answering at all — even failing
    // its check — it rejoins (demoted, its address taken) at once.
    let out = check(&mut c, &www("web1"), 500, Observation::Silent);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Ask { .. })),
        "{out:?}"
    );
    assert!(queued(&c).is_empty());
    check(&mut c, &www("web1"), 1_000, Observation::Refused);
    let rejoin = Event::ServiceRejoin {
        service: "www".into(),
        machine: "web1".into(),
    };
    assert_eq!(queued(&c), std::slice::from_ref(&rejoin));
    // Asked once: later checks do not queue it again.
    check(&mut c, &www("web1"), 2_000, Observation::Ok);
    assert_eq!(queued(&c), [rejoin]);
    // It rejoined (the plan ran): no failback before 10 s of good checks, one at 10 s.
    c.queue.clear();
    c.busy.clear();
    c.saved
        .observed
        .services
        .get_mut("www")
        .unwrap()
        .out
        .clear();
    check(&mut c, &www("web1"), 6_000, Observation::Ok);
    assert!(queued(&c).is_empty());
    // A miss starts the hold again.
    check(&mut c, &www("web1"), 6_500, Observation::Silent);
    check(&mut c, &www("web1"), 7_000, Observation::Ok);
    check(&mut c, &www("web1"), 16_000, Observation::Ok);
    assert!(queued(&c).is_empty(), "{:?}", queued(&c));
    check(&mut c, &www("web1"), 17_000, Observation::Ok);
    let back = Event::Switchover {
        shard: "www".into(),
        to: Some("web1".into()),
    };
    assert_eq!(queued(&c), std::slice::from_ref(&back));
    check(&mut c, &www("web1"), 17_500, Observation::Ok);
    assert_eq!(queued(&c), [back]);
}

/// A `postgres` check's answer: healthy, in `role` at WAL position 100.
fn pg(c: &mut Core, t: &Target, at_ms: u64, role: medic_redis::Role) -> Vec<Output> {
    pg_at(c, t, at_ms, role, 100)
}

/// A `postgres` check's answer: healthy, in `role` at WAL position `wal`.
pub(super) fn pg_at(
    c: &mut Core,
    t: &Target,
    at_ms: u64,
    role: medic_redis::Role,
    wal: u64,
) -> Vec<Output> {
    pg_from(c, t, at_ms, role, wal, None)
}

/// A `postgres` check's answer: healthy, in `role` at WAL position `wal`, streaming from
/// `upstream` if given.
fn pg_from(
    c: &mut Core,
    t: &Target,
    at_ms: u64,
    role: medic_redis::Role,
    wal: u64,
    upstream: Option<&str>,
) -> Vec<Output> {
    let seen = crate::pg_check::PgSeen {
        in_recovery: role == medic_redis::Role::Replica,
        wal_bytes: wal,
        upstream: upstream.map(|a| (a.parse().unwrap(), 5432)),
    };
    c.on_check(&CheckResult {
        target: Arc::new(t.clone()),
        at_ms,
        observation: Observation::Ok,
        detail: "test".into(),
        info: Some(seen.info()),
        took: Duration::ZERO,
        knocked: None,
    })
}

fn postgres_core(read_only: bool) -> Core {
    let failback = if read_only {
        "failback: manual\n    standbys_read_only: true"
    } else {
        "failback: manual"
    };
    core_with(&[
        ("failback: manual", failback),
        (
            "{kind: http, path: /health, status: 200, body: ok,",
            "{kind: postgres, user: medic, database: www,",
        ),
    ])
}

#[test]
fn a_database_in_the_wrong_role_is_a_bad_answer() {
    use medic_redis::Role::{Master, Replica};
    let mut c = postgres_core(false);
    for at in [1_000, 1_500] {
        pg(&mut c, &www("web1"), at, Master);
        pg(&mut c, &www("web2"), at, Replica);
    }
    assert!(c.saved.observed.services["www"].down.is_empty());
    // The standby writable: a second primary. Told once; it is not usable any more.
    let mut out = Vec::new();
    for at in [2_000, 2_500, 3_000] {
        out.extend(pg(&mut c, &www("web2"), at, Master));
    }
    let told: Vec<_> = out
        .iter()
        .filter(
            |o| matches!(o, Output::Alert { message, .. } if message.contains("a second primary?")),
        )
        .collect();
    assert_eq!(told.len(), 1, "{out:?}");
    assert!(c.saved.observed.services["www"].down.contains("web2"));
    assert!(queued(&c).is_empty(), "{:?}", queued(&c));
    // Kept (and saved) as writable: a failover would record it, not promote another.
    assert!(c.saved.observed.services["www"].writable.contains("web2"));
    assert!(out.iter().any(|o| matches!(o, Output::Save)), "{out:?}");
    // In recovery again, it is usable again.
    for at in [3_500, 4_000, 4_500] {
        pg(&mut c, &www("web2"), at, Replica);
    }
    assert!(!c.saved.observed.services["www"].down.contains("web2"));
    assert!(c.saved.observed.services["www"].writable.is_empty());
    // The primary read-only for `fall` checks: failed over to the standby.
    for at in [5_000, 5_500, 6_000] {
        pg(&mut c, &www("web1"), at, Replica);
    }
    assert_eq!(
        queued(&c),
        [Event::ServiceDown {
            service: "www".into(),
            machine: "web1".into()
        }]
    );
    assert!(
        c.health[&www("web1")]
            .detail
            .contains("in recovery (read-only), but web1 is www's primary"),
        "{}",
        c.health[&www("web1")].detail
    );
}

#[test]
fn with_read_only_standbys_the_roles_are_the_nominal_ones() {
    use medic_redis::Role::{Master, Replica};
    let mut c = postgres_core(true);
    // The standby serves (web1 is out), its database still a read-only copy: healthy.
    c.saved.observed.services.get_mut("www").unwrap().primary = "web2".into();
    c.saved
        .observed
        .services
        .get_mut("www")
        .unwrap()
        .out
        .insert("web1".into());
    for at in [1_000, 1_500] {
        pg(&mut c, &www("web2"), at, Replica);
    }
    assert!(!c.saved.observed.services["www"].down.contains("web2"));
    assert!(c.warned.is_empty(), "{:?}", c.warned);
    // The nominal primary back, writable as it always is: no wrong role.
    let out = pg(&mut c, &www("web1"), 2_000, Master);
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Alert { message, .. } if message.contains("recovery"))),
        "{out:?}"
    );
}

#[test]
fn a_primary_passing_again_is_not_failed_over_when_a_standby_passes_first() {
    // Every machine fails at once (a cause on the monitor's side), then all pass again; the
    // standby's second pass comes before the primary's.
    let mut c = core("failback: manual");
    for at in [1_000, 1_500] {
        for t in [www("web1"), www("web2")] {
            check(&mut c, &t, at, Observation::Ok);
        }
    }
    for at in [2_000, 2_500, 3_000] {
        for t in [www("web1"), www("web2")] {
            check(&mut c, &t, at, Observation::Unhealthy);
        }
    }
    assert!(queued(&c).is_empty(), "{:?}", queued(&c));
    check(&mut c, &www("web2"), 3_500, Observation::Ok);
    check(&mut c, &www("web1"), 3_500, Observation::Ok);
    let out = check(&mut c, &www("web2"), 4_000, Observation::Ok);
    assert!(queued(&c).is_empty(), "{:?} {out:?}", queued(&c));
    check(&mut c, &www("web1"), 4_000, Observation::Ok);
    assert!(queued(&c).is_empty(), "{:?}", queued(&c));
    assert!(c.saved.observed.services["www"].down.is_empty());
}

#[test]
fn a_database_is_failed_back_to_only_once_it_has_caught_up() {
    use medic_redis::Role::{Master, Replica};
    let mut c = core_with(&[
        (
            "failback: manual",
            "failback: automatic\n    failback_after: 10s",
        ),
        (
            "{kind: http, path: /health, status: 200, body: ok,",
            "{kind: postgres, user: medic, database: www,",
        ),
    ]);
    c.saved.observed.services.get_mut("www").unwrap().primary = "web2".into();
    let far = 10 * c.loaded.topology.policy.max_promotion_lag_bytes.value;
    // The nominal primary, a standby again, healthy for longer than the hold but far behind.
    let mut at = 1_000;
    let mut out = Vec::new();
    while at <= 13_000 {
        pg_at(&mut c, &www("web2"), at, Master, far);
        out.extend(pg_at(&mut c, &www("web1"), at, Replica, 100));
        at += 500;
    }
    assert!(queued(&c).is_empty(), "{:?}", queued(&c));
    // Told once why it waits.
    let told: Vec<_> = out
        .iter()
        .filter(|o| {
            matches!(o, Output::Alert { message, .. }
                if message.contains(&format!("web1 waits: its database is {} bytes behind web2's", far - 100)))
        })
        .collect();
    assert_eq!(told.len(), 1, "{out:?}");
    // Caught up: failed back at once (its checks have passed for the hold already).
    pg_at(&mut c, &www("web1"), 13_500, Replica, far);
    assert_eq!(
        queued(&c),
        [Event::Switchover {
            shard: "www".into(),
            to: Some("web1".into()),
        }]
    );
}

#[test]
fn a_promotion_that_finished_after_its_step_failed_is_recorded_not_doubled() {
    use medic_plan::{Action, StepOutput};
    use medic_redis::Role::{Master, Replica};
    let mut c = postgres_core(false);
    for at in [1_000, 1_500] {
        pg(&mut c, &www("web1"), at, Master);
        pg(&mut c, &www("web2"), at, Replica);
    }
    // The primary read-only (a bad answer) for `fall` checks: failed over to web2.
    for at in [2_000, 2_500, 3_000] {
        pg(&mut c, &www("web1"), at, Replica);
    }
    c.schedule(3_000);
    let id = c
        .running
        .keys()
        .next()
        .cloned()
        .expect("a failover started");
    // Its promotion step fails (pg_promote() did not finish within its wait).
    let step = loop {
        let Next::Run(step) = c.next_step(&id, 3_100) else {
            panic!("no pg-promote step");
        };
        if matches!(step.action, Action::PromotePostgres { .. }) {
            break step;
        }
        c.step_done(&id, &step, &StepOutput::default(), 3_100);
    };
    c.step_failed(&id, step.index, "pg_promote() did not finish".into());
    let Next::End(outcome) = c.next_step(&id, 3_200) else {
        panic!("not ended");
    };
    let out = c.finished(&id, &outcome, 3_200);
    assert!(out.iter().any(|o| matches!(o, Output::Save)), "{out:?}");
    assert_eq!(
        c.saved.observed.services["www"].promoting.as_deref(),
        Some("web2")
    );
    assert_eq!(c.saved.observed.services["www"].primary, "web1");
    // web2's promotion finished after all: it answers writable (a wrong role: it fails its
    // checks). web1 still fails. Failed over again — to web2, to record it, though it is the
    // only other machine and fails its checks.
    // Watched again after the failed recovery's backoff.
    c.schedule(20_000);
    let mut at = 20_000;
    while at < 23_000 {
        pg(&mut c, &www("web2"), at, Master);
        pg(&mut c, &www("web1"), at, Replica);
        at += 500;
    }
    assert!(c.saved.observed.services["www"].writable.contains("web2"));
    let down = Event::ServiceDown {
        service: "www".into(),
        machine: "web1".into(),
    };
    assert_eq!(queued(&c), std::slice::from_ref(&down));
    let plan =
        medic_plan::plan_recovery(&c.loaded.topology, &c.saved.observed, &down, "r2").unwrap();
    let promoted: Vec<_> = plan
        .steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::PromotePostgres { machine, .. } => Some(machine.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(promoted, ["web2"]);
    // A check web2 does not answer changes nothing (a promoted server that misses a check
    // must not let another be promoted beside it); an answer in recovery does.
    check(&mut c, &www("web2"), 24_000, Observation::Silent);
    assert!(c.saved.observed.services["www"].writable.contains("web2"));
    pg(&mut c, &www("web2"), 24_500, Replica);
    assert!(c.saved.observed.services["www"].writable.is_empty());
}

#[test]
fn a_standby_streaming_from_another_machine_of_the_service_is_asked_once_to_follow_the_primary() {
    use medic_redis::Role::{Master, Replica};
    // Three machines; web2 is the primary now, web1 (the old one) out; web3 was away at the
    // failover and still streams from web1.
    let mut c = core_with(&[
        (
            "{kind: http, path: /health, status: 200, body: ok,",
            "{kind: postgres, user: medic, database: www,",
        ),
        (
            "  - {name: web2, role: service, ami: web}",
            "  - {name: web2, role: service, ami: web}\n  - {name: web3, role: service, ami: web}",
        ),
        ("standbys: [web2]", "standbys: [web2, web3]"),
    ]);
    {
        let st = c.saved.observed.services.get_mut("www").unwrap();
        st.primary = "web2".into();
        st.out.insert("web1".into());
    }
    let at = |c: &Core, m: &str| c.saved.observed.address(m).unwrap().to_string();
    let (web1, web2) = (at(&c, "web1"), at(&c, "web2"));
    for t in [1_000, 1_500] {
        pg(&mut c, &www("web2"), t, Master);
    }
    // Streaming from an address that is no machine of the service (the service's moving
    // address, a replication network): left alone.
    pg_from(&mut c, &www("web3"), 2_000, Replica, 100, Some("10.99.0.9"));
    assert!(queued(&c).is_empty(), "{:?}", queued(&c));
    // From web1, the old primary: asked to follow web2, once.
    let follow = Event::ServiceFollow {
        service: "www".into(),
        machine: "web3".into(),
    };
    for t in [2_500, 3_000, 3_500] {
        pg_from(&mut c, &www("web3"), t, Replica, 100, Some(&web1));
    }
    assert_eq!(queued(&c), std::slice::from_ref(&follow));
    let plan =
        medic_plan::plan_recovery(&c.loaded.topology, &c.saved.observed, &follow, "r1").unwrap();
    let kinds: Vec<&str> = plan.steps.iter().map(|s| s.action.kind()).collect();
    assert_eq!(kinds, ["pg-follow"]);
    // Seen following the primary, it may be asked again if it strays again.
    c.queue.clear();
    c.busy.clear();
    pg_from(&mut c, &www("web3"), 4_000, Replica, 100, Some(&web2));
    assert!(queued(&c).is_empty());
    pg_from(&mut c, &www("web3"), 4_500, Replica, 100, Some(&web1));
    assert_eq!(queued(&c), [follow]);
}

/// A demotion that failed (its hook, its PostgreSQL not rewound) is asked again at the
/// machine's next answer once the recovery has ended, not only after it goes silent.
#[test]
fn a_failed_demotion_is_asked_again_at_the_next_answer() {
    let mut c = core("failback: manual");
    {
        let st = c.saved.observed.services.get_mut("www").unwrap();
        st.primary = "web2".into();
        st.out.insert("web1".into());
    }
    check(&mut c, &www("web1"), 1_000, Observation::Refused);
    c.schedule(1_000);
    let id = c
        .running
        .keys()
        .next()
        .cloned()
        .expect("the demotion started");
    let step = loop {
        let Next::Run(step) = c.next_step(&id, 1_000) else {
            panic!("no hook step");
        };
        if matches!(step.action, Action::RunHook { .. }) {
            break step;
        }
        c.step_done(&id, &step, &StepOutput::default(), 1_000);
    };
    c.step_failed(&id, step.index, "on_demote failed".into());
    let Next::End(outcome) = c.next_step(&id, 1_100) else {
        panic!("not ended");
    };
    assert!(matches!(outcome, Outcome::Failed { .. }));
    c.finished(&id, &outcome, 1_100);
    assert!(queued(&c).is_empty());
    // Out of monitoring for the backoff (10 s), then watched again.
    c.schedule(11_200);
    assert!(!c.saved.unmonitored.contains("web1"));
    check(&mut c, &www("web1"), 11_500, Observation::Refused);
    assert_eq!(
        queued(&c),
        [Event::ServiceRejoin {
            service: "www".into(),
            machine: "web1".into(),
        }]
    );
}
