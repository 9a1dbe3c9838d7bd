//! The guarantees of `active_active` services (see `planner/service_active.rs`), on
//! examples/domino.yaml's web servers behind two proxies, both serving.

use std::path::Path;

use medic_topology::Topology;

use super::*;
use crate::state::StepOutput;

fn topology() -> Topology {
    let text = super::proxy_service_tests::behind_proxies()
        .replace("    mode: primary_standby\n", "    mode: active_active\n")
        .replace("    dns: {name: www.domino.lab, ttl: 5}\n", "")
        .replace("      on_demote: standby-include\n", "");
    let top: Topology = medic_topology::load::parse_str(Path::new("t.yaml"), &text, "a topology")
        .into_result()
        .unwrap();
    assert!(top.services[0].value.active_active());
    top
}

/// Each step as `kind target` (hooks and roles with their names).
fn outline(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .map(|s| match &s.action {
            Action::FenceServer { proxy, server, .. } => {
                format!("fence {} on {}", server.server, proxy.machine)
            }
            Action::ActivateServer { proxy, server } => {
                format!("ready {} on {}", server.server, proxy.machine)
            }
            Action::RunHook { hook, machine, .. } => format!("{hook} {machine}"),
            Action::ServiceRole { machine, role, .. } => format!("{role:?} {machine}"),
            Action::Unmonitor { .. } => "unmonitor".into(),
            Action::Monitor { .. } => "monitor".into(),
            Action::PersistProxyConfig { proxy, .. } => format!("persist {}", proxy.machine),
            Action::Alert { level, .. } => format!("alert {level:?}"),
            other => other.kind().to_owned(),
        })
        .collect()
}

fn apply(state: &mut ObservedState, plan: &Plan) {
    for s in &plan.steps {
        state.apply(&s.action, &StepOutput::default());
    }
}

#[test]
fn a_failing_machine_is_taken_off_every_proxy_before_its_hook_whichever_it_is() {
    let top = topology();
    let mut state = ObservedState::assumed(&top);
    // The first machine named (the "primary" of a primary/standby service) is taken out like
    // any other: nothing is promoted, no record or role moves to another.
    for m in ["web1", "web2"] {
        let down = Event::ServiceDown {
            service: "www".into(),
            machine: m.into(),
        };
        let plan = plan_recovery(&top, &state, &down, "r1").unwrap();
        assert_eq!(
            outline(&plan),
            [
                "unmonitor".to_owned(),
                format!("fence {m} on lb1"),
                format!("fence {m} on lb2"),
                format!("Inactive {m}"),
                "persist lb1".into(),
                "persist lb2".into(),
                format!("on_fenced {m}"),
                "monitor".into(),
            ]
        );
    }
    let down = Event::ServiceDown {
        service: "www".into(),
        machine: "web1".into(),
    };
    let plan = plan_recovery(&top, &state, &down, "r1").unwrap();
    apply(&mut state, &plan);
    let www = &state.services["www"];
    assert!(www.out.contains("web1"), "{www:?}");
    assert_eq!(www.primary, "web1", "no role moved");
    // A replacement proxy keeps it out.
    let lost = Event::MachineLost {
        machine: "lb2".into(),
    };
    let plan = plan_recovery(&top, &state, &lost, "r2").unwrap();
    let vars = plan
        .steps
        .iter()
        .find_map(|s| match &s.action {
            Action::RunPlaybook { vars, .. } => Some(vars),
            _ => None,
        })
        .unwrap();
    let ready: Vec<bool> = vars["services"][0]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["active"].as_bool().unwrap())
        .collect();
    assert_eq!(ready, [false, true]);
}

#[test]
fn the_last_machine_in_the_proxies_is_kept_with_a_critical_alert() {
    let top = topology();
    let mut state = ObservedState::assumed(&top);
    state
        .services
        .get_mut("www")
        .unwrap()
        .out
        .insert("web1".into());
    for event in [
        Event::ServiceDown {
            service: "www".into(),
            machine: "web2".into(),
        },
        Event::MachineLost {
            machine: "web2".into(),
        },
    ] {
        let plan = plan_recovery(&top, &state, &event, "r1").unwrap();
        let o = outline(&plan);
        assert!(
            o.iter()
                .all(|s| !s.starts_with("fence") && !s.starts_with("Inactive")),
            "{o:?}"
        );
        assert!(o.contains(&"alert Critical".to_owned()), "{o:?}");
    }
}

#[test]
fn a_machine_lost_is_taken_out_without_waiting_and_put_back_after_its_hook() {
    let top = topology();
    let mut state = ObservedState::assumed(&top);
    let lost = Event::MachineLost {
        machine: "web2".into(),
    };
    let plan = plan_recovery(&top, &state, &lost, "r1").unwrap();
    assert!(plan.steps.iter().all(|s| !matches!(
        s.action,
        Action::FenceServer {
            wait_sessions: true,
            ..
        }
    )));
    assert!(plan.steps.iter().any(|s| matches!(
        &s.action,
        Action::RunHook { skip_unreachable: true, hook, .. } if hook == "on_fenced"
    )));
    apply(&mut state, &plan);
    let rejoin = Event::ServiceRejoin {
        service: "www".into(),
        machine: "web2".into(),
    };
    // Answering but failing: only made sure to be off the proxies.
    state
        .services
        .get_mut("www")
        .unwrap()
        .down
        .insert("web2".into());
    let plan = plan_recovery(&top, &state, &rejoin, "r2").unwrap();
    assert_eq!(
        outline(&plan),
        [
            "unmonitor",
            "fence web2 on lb1",
            "fence web2 on lb2",
            "persist lb1",
            "persist lb2",
            "monitor"
        ]
    );
    // Passing: its hook, then back on every proxy.
    state.services.get_mut("www").unwrap().down.remove("web2");
    let plan = plan_recovery(&top, &state, &rejoin, "r3").unwrap();
    assert_eq!(
        outline(&plan),
        [
            "unmonitor",
            "on_promote web2",
            "ready web2 on lb1",
            "ready web2 on lb2",
            "Active web2",
            "persist lb1",
            "persist lb2",
            "monitor"
        ]
    );
    apply(&mut state, &plan);
    assert!(state.services["www"].out.is_empty());
    // No switchover: there is no primary to move.
    let e = plan_recovery(
        &top,
        &state,
        &Event::Switchover {
            shard: "www".into(),
            to: Some("web2".into()),
        },
        "r4",
    )
    .unwrap_err();
    assert!(e.to_string().contains("no primary to move"), "{e}");
}
