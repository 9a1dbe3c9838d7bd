//! A deployment medic adopted (`managed: false`): every plan moves roles and traffic through
//! the runtime APIs and the data stores alone, under the backend names the topology gives.

use std::path::Path;

use medic_topology::Topology;

use super::*;

/// examples/static.yaml adopted: its proxies' backends named as an operator might have.
fn adopted() -> Topology {
    let text = include_str!("../../../../examples/static.yaml")
        .replace("provider: static\n", "provider: static\nmanaged: false\n")
        .replace(
            "{name: r9001, port: 9001, master: redis1, replicas: [redis2]}",
            "{name: r9001, port: 9001, master: redis1, replicas: [redis2], backend: bk_cache}",
        )
        .replace(
            "runtime_api: {port: 9999}",
            "runtime_api: {port: 9999, reach: network}",
        );
    medic_topology::load::parse_str(Path::new("t.yaml"), &text, "a topology")
        .into_result()
        .unwrap()
}

/// Every event: each machine lost, each server dead, each replica stale or astray, each shard
/// switched over, and a first start.
fn events(top: &Topology) -> Vec<Event> {
    let mut out: Vec<Event> = top
        .machines
        .iter()
        .map(|m| Event::MachineLost {
            machine: m.value.name.value.clone(),
        })
        .collect();
    for s in top.shards.iter().map(|s| &s.value) {
        let shard = s.name.value.clone();
        for m in Topology::shard_machines(s).map(str::to_owned) {
            out.push(Event::ProcessDied {
                shard: shard.clone(),
                machine: m.clone(),
            });
        }
        // (A stale or astray server is one the state records as a replica.)
        for m in Topology::shard_machines(s).skip(1).map(str::to_owned) {
            out.push(Event::StaleMaster {
                shard: shard.clone(),
                machine: m.clone(),
            });
            out.push(Event::FollowMaster {
                shard: shard.clone(),
                machine: m,
            });
        }
        out.push(Event::Switchover { shard, to: None });
    }
    out.push(Event::Bootstrap);
    out
}

#[test]
fn no_plan_of_an_adopted_deployment_writes_a_config_restarts_launches_or_terminates() {
    let top = adopted();
    let state = ObservedState::assumed(&top);
    let mut promotions = 0;
    for event in events(&top) {
        let plan =
            plan_recovery(&top, &state, &event, "rec-1").unwrap_or_else(|e| panic!("{event}: {e}"));
        for step in &plan.steps {
            assert!(
                !matches!(
                    step.action,
                    Action::RunPlaybook { .. }
                        | Action::PersistProxyConfig { .. }
                        | Action::LaunchInstance { .. }
                        | Action::TerminateInstance { .. }
                        | Action::WaitReachable { .. }
                        | Action::FenceAtSource { .. }
                ),
                "{event}: step {} ({}) needs more than the runtime APIs and the data stores:\n{plan:#?}",
                step.index,
                step.action.kind()
            );
            promotions += usize::from(matches!(step.action, Action::PromoteReplica { .. }));
        }
    }
    // (The events above do fail over: the assertion is not vacuous.)
    assert!(promotions >= 4, "only {promotions} promotions planned");
}

#[test]
fn an_adopted_deployment_is_fenced_and_activated_under_its_own_backend_names() {
    let top = adopted();
    let state = ObservedState::assumed(&top);
    let event = Event::MachineLost {
        machine: "redis1".into(),
    };
    let plan = plan_recovery(&top, &state, &event, "rec-1").unwrap();
    let changes: Vec<String> = plan
        .steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::FenceServer { proxy, server, .. } => {
                Some(format!("fence {server} on {}", proxy.machine))
            }
            Action::ActivateServer { proxy, server } => {
                Some(format!("activate {server} on {}", proxy.machine))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        changes,
        [
            "fence bk_cache/redis1 on haproxy1",
            "fence bk_cache/redis1 on haproxy2",
            "fence redis-r9002/redis1 on haproxy1",
            "fence redis-r9002/redis1 on haproxy2",
            "activate bk_cache/redis2 on haproxy1",
            "activate bk_cache/redis2 on haproxy2",
            "activate redis-r9002/redis2 on haproxy1",
            "activate redis-r9002/redis2 on haproxy2",
        ]
    );
    let Some(Action::Alert { message, .. }) = plan.steps.last().map(|s| &s.action) else {
        panic!("the plan does not end with an alert: {plan:#?}");
    };
    assert!(message.contains("managed: false"), "{message}");
}

#[test]
fn a_first_start_of_an_adopted_deployment_sets_up_nothing() {
    let top = adopted();
    let plan = plan_recovery(&top, &ObservedState::empty(&top), &Event::Bootstrap, "b").unwrap();
    assert_eq!(plan.steps.len(), 1, "{plan:#?}");
    assert!(matches!(
        &plan.steps[0].action,
        Action::Alert { level: AlertLevel::Critical, message } if message.contains("sets up nothing")
    ));
}
