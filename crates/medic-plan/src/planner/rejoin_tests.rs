//! With `rejoin`: an old primary's PostgreSQL stopped before any promotion (`pg-stop`, a
//! fence of its own, so no hook is needed), and a server failed away from made a standby
//! again (`pg-rejoin`) only when it answers failing its checks, after its demotion, never the
//! primary's.

use std::path::Path;

use medic_playbook::Playbooks;
use medic_topology::Topology;

use super::*;
use crate::describe::describe;
use crate::state::StepOutput;

const DOMINO: &str = include_str!("../../../../examples/domino.yaml");

const REJOIN: &str = "    rejoin: {method: rewind_or_copy, data_dir: /var/lib/pg, bin_dir: /usr/lib/postgresql/15/bin}\n";

/// examples/domino.yaml's service with a PostgreSQL check beside its own, `extra` added.
fn with_postgres(extra: &str) -> Topology {
    let text = DOMINO.replace(
        "    failback: manual",
        &format!(
            "    failback: manual\n    more_checks:\n      - {{kind: postgres, port: 5432, user: medic, database: app}}\n{extra}"
        ),
    );
    medic_topology::load::parse_str(Path::new("t.yaml"), &text, "a topology")
        .into_result()
        .unwrap()
}

fn outline(plan: &Plan) -> Vec<String> {
    let pb = Playbooks::default();
    plan.steps
        .iter()
        .map(|s| {
            let v = describe(s, &pb);
            format!("{} {}", v.kind, v.target)
        })
        .collect()
}

/// web1 failed away from (web2 the primary), out, and `failing` its checks or not.
fn web1_out(top: &Topology, failing: bool) -> ObservedState {
    let mut state = ObservedState::assumed(top);
    let st = state.services.get_mut("www").unwrap();
    st.primary = "web2".into();
    st.out.insert("web1".into());
    if failing {
        st.down.insert("web1".into());
    }
    state
}

fn rejoin_event(m: &str) -> Event {
    Event::ServiceRejoin {
        service: "www".into(),
        machine: m.into(),
    }
}

#[test]
fn an_old_primary_that_answers_is_demoted_then_rewound_from_the_primary_and_stays_out() {
    let top = with_postgres(REJOIN);
    let state = web1_out(&top, true);
    let plan = plan_recovery(&top, &state, &rejoin_event("web1"), "r1").unwrap();
    assert_eq!(
        outline(&plan),
        [
            "unmonitor web1",
            "hook www@web1",
            "pg-rejoin www@web1",
            "monitor web1"
        ]
    );
    let Action::RejoinPostgres {
        primary,
        primary_address,
        port,
        user,
        rejoin,
        ..
    } = &plan.steps[2].action
    else {
        panic!("{:?}", plan.steps[2]);
    };
    assert_eq!(
        (primary.as_str(), *port, user.as_str()),
        ("web2", 5432, "medic")
    );
    assert_eq!(primary_address, &addr_of(&state, "web2"));
    assert_eq!(rejoin.data_dir, Path::new("/var/lib/pg"));
    // `medic plan` shows the very script, rewinding from the primary.
    let shown = describe(&plan.steps[2], &Playbooks::default())
        .commands
        .join("\n");
    assert!(shown.contains("pg_rewind"), "{shown}");
    assert!(
        shown.contains(&format!("host={primary_address} port=5432")),
        "{shown}"
    );
    // Seen writable: its server stopped first, before its hook and anything that may stop
    // the rejoin; a standby failing for another reason is not stopped.
    let mut seen = state.clone();
    seen.services
        .get_mut("www")
        .unwrap()
        .writable
        .insert("web1".into());
    let stopped = plan_recovery(&top, &seen, &rejoin_event("web1"), "r1").unwrap();
    assert_eq!(
        outline(&stopped),
        [
            "unmonitor web1",
            "pg-stop www@web1",
            "hook www@web1",
            "pg-rejoin www@web1",
            "monitor web1"
        ]
    );
    // Still out until it passes its checks (as a standby now).
    let mut after = state.clone();
    for s in &plan.steps {
        after.apply(&s.action, &StepOutput::default());
    }
    assert!(after.services["www"].out.contains("web1"));
    // Journaled and read back the same.
    let json = serde_json::to_string(&plan).unwrap();
    let back: Plan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, plan);
}

#[test]
fn one_that_passes_its_checks_is_rewound_only_if_medic_fenced_it_and_without_rejoin_never() {
    let top = with_postgres(REJOIN);
    // A standby that was away (not fenced): passing its checks, it rejoins as it is.
    let passing = plan_recovery(&top, &web1_out(&top, false), &rejoin_event("web1"), "r1").unwrap();
    assert!(
        !outline(&passing).iter().any(|s| s.starts_with("pg-rejoin")),
        "{:?}",
        outline(&passing)
    );
    // An old primary pg-stop fenced, started again by something else: it answers in
    // recovery, on its own timeline, and passes its checks — asked to stream from the
    // primary before it counts (the step leaves one that streams as it is).
    let mut fenced = web1_out(&top, false);
    let mut writable = web1_out(&top, true);
    writable
        .services
        .get_mut("www")
        .unwrap()
        .writable
        .insert("web1".into());
    let seen_writable = plan_recovery(&top, &writable, &rejoin_event("web1"), "r0").unwrap();
    let stop = seen_writable
        .steps
        .iter()
        .find(|st| st.action.kind() == "pg-stop")
        .unwrap();
    fenced.apply(&stop.action, &StepOutput::default());
    assert!(fenced.services["www"].fenced.contains("web1"));
    let plan = plan_recovery(&top, &fenced, &rejoin_event("web1"), "r1").unwrap();
    assert_eq!(
        outline(&plan),
        [
            "unmonitor web1",
            "hook www@web1",
            "pg-rejoin www@web1",
            "role www@web1",
            "monitor web1"
        ]
    );
    // The state keeps the fence from pg-stop until a pg-rejoin is done.
    let mut after = fenced.clone();
    for st in &plan.steps {
        after.apply(&st.action, &StepOutput::default());
    }
    assert!(after.services["www"].fenced.is_empty());
    let without = with_postgres("");
    let plan = plan_recovery(
        &without,
        &web1_out(&without, true),
        &rejoin_event("web1"),
        "r1",
    )
    .unwrap();
    assert!(!outline(&plan).iter().any(|s| s.starts_with("pg-rejoin")));
    // The primary itself is never the one rewound.
    let plan = plan_recovery(&top, &web1_out(&top, true), &rejoin_event("web2"), "r1").unwrap();
    assert!(plan.steps.is_empty(), "{:?}", outline(&plan));
}

#[test]
fn a_switchover_stops_the_old_primary_s_server_before_the_promotion_and_leaves_it_out() {
    // No hook at all: medic's own stop is the demotion.
    let top = with_postgres(REJOIN).clone();
    let text = DOMINO
        .replace(
            "    hooks:\n      on_fenced: standby-include\n      on_promote: primary-include\n      on_demote: standby-include\n",
            "",
        )
        .replace(
            "    failback: manual",
            &format!("    failback: manual\n    more_checks:\n      - {{kind: postgres, port: 5432, user: medic, database: app}}\n{REJOIN}"),
        );
    assert_ne!(text, DOMINO);
    let bare = medic_topology::load::parse_str(Path::new("t.yaml"), &text, "a topology")
        .into_result()
        .unwrap();
    for top in [top, bare] {
        let mut state = ObservedState::assumed(&top);
        state.services.get_mut("www").unwrap().positions =
            [("web1".into(), 100), ("web2".into(), 100)].into();
        let event = Event::Switchover {
            shard: "www".into(),
            to: Some("web2".into()),
        };
        let plan = plan_recovery(&top, &state, &event, "r1").unwrap();
        let steps = outline(&plan);
        let stop = steps.iter().position(|s| s == "pg-stop www@web1");
        let promote = steps.iter().position(|s| s == "pg-promote www@web2");
        assert!(stop.is_some() && stop < promote, "{steps:?}");
        // web2 is promoted only once it has all of web1's WAL.
        let waits_for = stop.and_then(|i| match &plan.steps[i].action {
            Action::StopPostgres { caught_up, .. } => caught_up.as_ref().map(|c| &c.machine),
            _ => None,
        });
        assert_eq!(waits_for.map(String::as_str), Some("web2"), "{steps:?}");
        assert!(
            !steps.iter().any(|s| s.starts_with("pg-rejoin")),
            "{steps:?}"
        );
        let mut after = state.clone();
        for s in &plan.steps {
            after.apply(&s.action, &StepOutput::default());
        }
        assert_eq!(after.services["www"].primary, "web2");
        assert!(
            after.services["www"].out.contains("web1"),
            "out until it rejoins"
        );
        // A primary failing its checks on a machine that answers is failed over too.
        let down = Event::ServiceDown {
            service: "www".into(),
            machine: "web1".into(),
        };
        let plan = plan_recovery(&top, &state, &down, "r1").unwrap();
        let steps = outline(&plan);
        assert!(
            steps.iter().any(|s| s == "pg-promote www@web2"),
            "{steps:?}"
        );
    }
}

#[test]
fn a_failover_stops_the_old_primary_s_server_after_its_hook_before_the_promotion() {
    let top = with_postgres(REJOIN);
    let mut state = ObservedState::assumed(&top);
    state.services.get_mut("www").unwrap().positions =
        [("web1".into(), 100), ("web2".into(), 100)].into();
    let down = Event::ServiceDown {
        service: "www".into(),
        machine: "web1".into(),
    };
    let lost = Event::MachineLost {
        machine: "web1".into(),
    };
    for (event, silent) in [(down, false), (lost, true)] {
        let plan = plan_recovery(&top, &state, &event, "r1").unwrap();
        let steps = outline(&plan);
        let hook = steps.iter().position(|s| s == "hook www@web1").unwrap();
        let stop = steps.iter().position(|s| s == "pg-stop www@web1").unwrap();
        let promote = steps
            .iter()
            .position(|s| s == "pg-promote www@web2")
            .unwrap();
        assert!(hook < stop && stop < promote, "{steps:?}");
        let Action::StopPostgres {
            skip_unreachable,
            caught_up,
            ..
        } = &plan.steps[stop].action
        else {
            panic!("{steps:?}");
        };
        assert_eq!(*skip_unreachable, silent);
        // A failover does not wait for a primary that is gone: the lag limit decides.
        assert_eq!(*caught_up, None);
        // Made again when a restarted controller resumes before the promotion is done.
        let done: std::collections::BTreeSet<usize> =
            plan.steps[..=stop].iter().map(|s| s.index).collect();
        assert!(
            plan.redo_on_resume(&done).contains(&plan.steps[stop].index),
            "{steps:?}"
        );
    }
}

#[test]
fn a_switch_back_starts_the_primary_s_server_first_then_puts_it_back_everywhere() {
    let top = with_postgres(REJOIN);
    let mut state = ObservedState::assumed(&top);
    // As a switchover that failed after its pg-stop leaves it: web1 still the primary,
    // failing its checks (its server stopped).
    state
        .services
        .get_mut("www")
        .unwrap()
        .down
        .insert("web1".into());
    let event = Event::Switchover {
        shard: "www".into(),
        to: Some("web1".into()),
    };
    let plan = plan_recovery(&top, &state, &event, "r1").unwrap();
    let steps = outline(&plan);
    assert_eq!(
        steps.first().map(String::as_str),
        Some("pg-start www@web1"),
        "{steps:?}"
    );
    let hook = steps.iter().position(|s| s == "hook www@web1");
    assert!(hook.is_some(), "its on_promote runs after: {steps:?}");
    assert!(
        !steps
            .iter()
            .any(|s| s.starts_with("pg-promote") || s.starts_with("pg-stop")),
        "nothing else promoted or stopped: {steps:?}"
    );
    let Action::StartPostgres {
        machine,
        port,
        user,
        rejoin,
        ..
    } = &plan.steps[0].action
    else {
        panic!("{:?}", plan.steps[0]);
    };
    assert_eq!(
        (machine.as_str(), *port, user.as_str()),
        ("web1", 5432, "medic")
    );
    assert_eq!(rejoin.data_dir, Path::new("/var/lib/pg"));
    // Its record says so: the fence medic made is undone.
    let mut fenced = state.clone();
    fenced
        .services
        .get_mut("www")
        .unwrap()
        .fenced
        .insert("web1".into());
    fenced.apply(&plan.steps[0].action, &StepOutput::default());
    assert!(fenced.services["www"].fenced.is_empty());
    // Passing its checks and not recorded fenced, it runs: nothing to start (no SSH needed).
    let running = ObservedState::assumed(&top);
    let plan = plan_recovery(&top, &running, &event, "r1").unwrap();
    assert!(!outline(&plan).iter().any(|s| s.starts_with("pg-start")));
    // Never while another server's promotion may be under way: a warning instead.
    let mut promoting = state.clone();
    promoting.services.get_mut("www").unwrap().promoting = Some("web2".into());
    let plan = plan_recovery(&top, &promoting, &event, "r1").unwrap();
    let steps = outline(&plan);
    assert!(
        !steps.iter().any(|s| s.starts_with("pg-start")),
        "{steps:?}"
    );
    assert!(
        plan.steps
            .iter()
            .any(|s| matches!(&s.action, Action::Alert { message, .. }
            if message.contains("web2 may be a primary"))),
        "{steps:?}"
    );
    // Nor while another server was seen writable.
    let mut writable = state.clone();
    writable
        .services
        .get_mut("www")
        .unwrap()
        .writable
        .insert("web2".into());
    let plan = plan_recovery(&top, &writable, &event, "r1").unwrap();
    assert!(!outline(&plan).iter().any(|s| s.starts_with("pg-start")));
    // Without `rejoin` medic never stopped its server: there is nothing to start.
    let bare = with_postgres("");
    let plan = plan_recovery(&bare, &ObservedState::assumed(&bare), &event, "r1").unwrap();
    assert!(!outline(&plan).iter().any(|s| s.starts_with("pg-start")));
}
