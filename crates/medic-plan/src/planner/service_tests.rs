//! The service plans' guarantees (see `planner/service.rs`), on examples/domino.yaml.

use std::path::Path;

use medic_playbook::Playbooks;
use medic_topology::Topology;

use super::*;
use crate::describe::describe;
use crate::state::StepOutput;

const DOMINO: &str = include_str!("../../../../examples/domino.yaml");

fn topology() -> Topology {
    medic_topology::load::parse_str(Path::new("t.yaml"), DOMINO, "a topology")
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

fn down(m: &str) -> Event {
    Event::ServiceDown {
        service: "www".into(),
        machine: m.into(),
    }
}

#[test]
fn the_old_primary_is_fenced_before_the_standby_is_promoted_and_the_record_moves_last() {
    let top = topology();
    let state = ObservedState::assumed(&top);
    let plan = plan_recovery(&top, &state, &down("web1"), "r1").unwrap();
    assert_eq!(
        outline(&plan),
        [
            "unmonitor web1",
            "hook www@web1",
            "hook www@web2",
            "role www@web2",
            "dns www.domino.lab",
            "monitor web1",
        ]
    );
    // The machine answered: a fence that fails there stops the plan (not skipped).
    assert!(matches!(
        &plan.steps[1].action,
        Action::RunHook { hook, skip_unreachable: false, .. } if hook == "on_fenced"
    ));
    let mut after = state.clone();
    for s in &plan.steps {
        after.apply(&s.action, &StepOutput::default());
    }
    let www = &after.services["www"];
    assert_eq!((www.primary.as_str(), www.generation), ("web2", 1));
    assert!(www.out.contains("web1"), "out until it rejoins: {www:?}");
}

#[test]
fn a_silent_primary_s_hook_may_be_skipped_and_a_lost_machine_waits_for_an_operator() {
    let top = topology();
    let state = ObservedState::assumed(&top);
    let plan = plan_recovery(
        &top,
        &state,
        &Event::MachineLost {
            machine: "web1".into(),
        },
        "r1",
    )
    .unwrap();
    assert!(matches!(
        &plan.steps[1].action,
        Action::RunHook { hook, skip_unreachable: true, .. } if hook == "on_fenced"
    ));
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s.action, Action::Monitor { .. })),
        "a lost machine stays out of monitoring"
    );
    assert!(matches!(
        plan.steps.last().unwrap().action,
        Action::Alert { .. }
    ));
}

#[test]
fn no_standby_that_fails_its_checks_or_has_not_rejoined_is_promoted() {
    let top = topology();
    for (down_set, out_set) in [(vec!["web2"], vec![]), (vec![], vec!["web2"])] {
        let mut state = ObservedState::assumed(&top);
        let st = state.services.get_mut("www").unwrap();
        st.down.extend(down_set.into_iter().map(String::from));
        st.out.extend(out_set.into_iter().map(String::from));
        let plan = plan_recovery(&top, &state, &down("web1"), "r1").unwrap();
        assert!(
            !plan.steps.iter().any(|s| matches!(
                s.action,
                Action::RunHook { .. } | Action::ServiceRole { .. } | Action::UpsertDns { .. }
            )),
            "{:?}",
            outline(&plan)
        );
        assert!(matches!(
            plan.steps.last().unwrap().action,
            Action::Alert {
                level: AlertLevel::Critical,
                ..
            }
        ));
    }
}

#[test]
fn a_standby_failing_is_an_alert_and_a_rejoin_demotes_before_it_counts() {
    let top = topology();
    let mut state = ObservedState::assumed(&top);
    let plan = plan_recovery(&top, &state, &down("web2"), "r1").unwrap();
    assert_eq!(outline(&plan), ["alert warning"]);
    state.services.get_mut("www").unwrap().primary = "web2".into();
    state
        .services
        .get_mut("www")
        .unwrap()
        .out
        .insert("web1".into());
    let rejoin = Event::ServiceRejoin {
        service: "www".into(),
        machine: "web1".into(),
    };
    let plan = plan_recovery(&top, &state, &rejoin, "r2").unwrap();
    assert_eq!(outline(&plan), ["hook www@web1", "role www@web1"]);
    assert!(matches!(
        &plan.steps[0].action,
        Action::RunHook { hook, .. } if hook == "on_demote"
    ));
}
