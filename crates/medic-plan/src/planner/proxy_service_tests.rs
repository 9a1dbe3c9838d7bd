//! A service routed through the proxies (`proxy`): only its primary is ever ready there. The
//! old primary is put in maintenance on every proxy before anything is promoted, the new one
//! made ready after its `on_promote` hook; a replacement proxy routes to the current primary.

use std::path::Path;

use medic_playbook::Playbooks;
use medic_topology::Topology;

use super::*;
use crate::describe::describe;
use crate::state::StepOutput;

const DOMINO: &str = include_str!("../../../../examples/domino.yaml");

/// examples/domino.yaml with two HAProxy machines in front of its web servers (the text).
pub(super) fn behind_proxies() -> String {
    DOMINO
        .replace(
            "  - {name: monitor, role: monitor}\n",
            "  - {name: lb1, role: haproxy}\n  - {name: lb2, role: haproxy}\n  - {name: monitor, role: monitor}\n\nproxies:\n  machines: [lb1, lb2]\n  runtime_api: {port: 9999}\n  frontends: []\n",
        )
        .replace("    port: 80\n", "    port: 80\n    proxy: {listen: 8080, mode: http}\n")
}

fn topology() -> Topology {
    let text = behind_proxies();
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

/// (proxy, server, ready) of each runtime change, in order.
fn changes(plan: &Plan) -> Vec<(String, String, bool)> {
    plan.steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::FenceServer { proxy, server, .. } => {
                assert_eq!(server.backend, "service-www");
                Some((proxy.machine.clone(), server.server.clone(), false))
            }
            Action::ActivateServer { proxy, server } => {
                assert_eq!(server.backend, "service-www");
                Some((proxy.machine.clone(), server.server.clone(), true))
            }
            _ => None,
        })
        .collect()
}

fn index_of(plan: &Plan, what: &str) -> usize {
    outline(plan)
        .iter()
        .position(|s| s == what)
        .unwrap_or_else(|| panic!("no step `{what}` in {:?}", outline(plan)))
}

#[test]
fn a_failover_takes_the_old_primary_off_every_proxy_first_and_puts_the_new_one_on_after_its_hook() {
    let top = topology();
    let state = ObservedState::assumed(&top);
    let down = Event::ServiceDown {
        service: "www".into(),
        machine: "web1".into(),
    };
    let plan = plan_recovery(&top, &state, &down, "r1").unwrap();
    let o = outline(&plan);
    assert_eq!(
        changes(&plan),
        [
            ("lb1".into(), "web1".into(), false),
            ("lb2".into(), "web1".into(), false),
            ("lb1".into(), "web2".into(), true),
            ("lb2".into(), "web2".into(), true),
        ],
        "{o:?}"
    );
    let fences: Vec<usize> = plan
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s.action, Action::FenceServer { .. }))
        .map(|(i, _)| i)
        .collect();
    let activations: Vec<usize> = plan
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s.action, Action::ActivateServer { .. }))
        .map(|(i, _)| i)
        .collect();
    // Off the proxies before its fencing hook, on only once the new primary's hook ran and
    // it is recorded; the record moves after.
    assert!(fences.iter().all(|f| *f < index_of(&plan, "hook www@web1")));
    let recorded = index_of(&plan, "role www@web2");
    assert!(activations.iter().all(|a| *a > recorded), "{o:?}");
    assert!(
        activations
            .iter()
            .all(|a| *a < index_of(&plan, "dns www.domino.lab"))
    );
    // The machine answers: its sessions are waited for.
    assert!(plan.steps.iter().all(|s| !matches!(
        s.action,
        Action::FenceServer {
            wait_sessions: false,
            ..
        }
    )));
    // Every change is written into haproxy.cfg, the fences before the hook runs.
    let persisted: Vec<usize> = plan
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s.action, Action::PersistProxyConfig { .. }))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(persisted.len(), 4, "{o:?}");
    assert!(persisted[1] < index_of(&plan, "hook www@web1"), "{o:?}");

    // A machine lost: its sessions hang on a silent peer, not waited for.
    let lost = Event::MachineLost {
        machine: "web1".into(),
    };
    let plan = plan_recovery(&top, &state, &lost, "r2").unwrap();
    assert_eq!(changes(&plan).len(), 4);
    assert!(plan.steps.iter().all(|s| !matches!(
        s.action,
        Action::FenceServer {
            wait_sessions: true,
            ..
        }
    )));
}

#[test]
fn a_switchover_a_rejoin_and_a_reassertion_keep_the_primary_alone_ready() {
    let top = topology();
    let mut state = ObservedState::assumed(&top);
    let to = |m: &str| Event::Switchover {
        shard: "www".into(),
        to: Some(m.into()),
    };
    let plan = plan_recovery(&top, &state, &to("web2"), "r1").unwrap();
    assert_eq!(
        changes(&plan),
        [
            ("lb1".into(), "web1".into(), false),
            ("lb2".into(), "web1".into(), false),
            ("lb1".into(), "web2".into(), true),
            ("lb2".into(), "web2".into(), true),
        ]
    );
    assert!(
        plan.steps
            .iter()
            .position(|s| matches!(s.action, Action::FenceServer { .. }))
            < Some(index_of(&plan, "hook www@web1")),
        "off the proxies before its demotion: {:?}",
        outline(&plan)
    );
    for s in &plan.steps {
        state.apply(&s.action, &StepOutput::default());
    }
    // To itself: the others off the proxies (one made ready by hand), the primary made ready
    // again (a failover that stopped after the record).
    let again = plan_recovery(&top, &state, &to("web2"), "r2").unwrap();
    assert_eq!(
        changes(&again),
        [
            ("lb1".into(), "web1".into(), false),
            ("lb2".into(), "web1".into(), false),
            ("lb1".into(), "web2".into(), true),
            ("lb2".into(), "web2".into(), true),
        ]
    );
    // A machine failed away from that rejoins is put in maintenance first (a proxy whose
    // fence was skipped may still send to it), before its demotion hook.
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
    let plan = plan_recovery(&top, &state, &rejoin, "r3").unwrap();
    assert_eq!(
        changes(&plan),
        [
            ("lb1".into(), "web1".into(), false),
            ("lb2".into(), "web1".into(), false),
        ]
    );
    assert!(
        plan.steps
            .iter()
            .rposition(|s| matches!(s.action, Action::FenceServer { .. }))
            < Some(index_of(&plan, "hook www@web1"))
    );
}

#[test]
fn a_replacement_proxy_routes_to_the_current_primary_alone_with_the_service_s_http_check() {
    let top = topology();
    let mut state = ObservedState::assumed(&top);
    state.services.get_mut("www").unwrap().primary = "web2".into();
    let lost = Event::MachineLost {
        machine: "lb1".into(),
    };
    let plan = plan_recovery(&top, &state, &lost, "r1").unwrap();
    let vars = plan
        .steps
        .iter()
        .find_map(|s| match &s.action {
            Action::RunPlaybook { playbook, vars, .. } if playbook == "haproxy" => Some(vars),
            _ => None,
        })
        .expect("lb1 configured");
    let svc = &vars["services"][0];
    assert_eq!(svc["backend"], "service-www");
    assert_eq!(svc["listen"], 8080);
    assert_eq!(svc["mode"], "http");
    assert_eq!(svc["http_check"]["path"], "/health");
    assert_eq!(svc["http_check"]["status"], 200);
    let ready: Vec<(&str, bool)> = svc["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["active"].as_bool().unwrap()))
        .collect();
    assert_eq!(ready, [("web1", false), ("web2", true)]);
    // A path HAProxy's configuration could not hold as it is: HAProxy only connects.
    let mut odd = top.clone();
    odd.services[0].value.check.value.path = Some("/a b".into());
    let v = crate::vars::haproxy_vars(
        &odd,
        &state,
        "lb1",
        &Addr::Of("lb1".into()),
        &BTreeMap::new(),
    );
    assert!(v["services"][0]["http_check"].is_null(), "{v}");
}
