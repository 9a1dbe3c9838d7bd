//! The planner's guarantees, each a test (see the module's documentation).

use std::path::Path;

use medic_playbook::Playbooks;
use medic_topology::Topology;

use super::*;
use crate::describe::describe;
use crate::state::ReplicaState;

pub(super) const BARTON: &str = include_str!("../../../../examples/barton.yaml");
const STATIC: &str = include_str!("../../../../examples/static.yaml");

pub(super) fn topology(text: &str) -> Topology {
    medic_topology::load::parse_str(Path::new("t.yaml"), text, "a topology")
        .into_result()
        .unwrap()
}

pub(super) fn lost(m: &str) -> Event {
    Event::MachineLost { machine: m.into() }
}

pub(super) fn died(s: &str, m: &str) -> Event {
    Event::ProcessDied {
        shard: s.into(),
        machine: m.into(),
    }
}

/// `kind target` per step: what a table row asserts.
pub(super) fn outline(plan: &Plan) -> Vec<String> {
    let pb = Playbooks::default();
    plan.steps
        .iter()
        .map(|s| {
            let v = describe(s, &pb);
            format!("{} {}", v.kind, v.target)
        })
        .collect()
}

pub(super) fn plan(top: &Topology, state: &ObservedState, e: &Event) -> Plan {
    plan_recovery(top, state, e, "rec-1").unwrap()
}

/// A row per event kind: the whole plan, in order, with its targets.
#[test]
fn plan_table() {
    let top = topology(BARTON);
    let state = ObservedState::assumed(&top);
    let rows: Vec<(Event, Vec<&str>)> = vec![
        (
            lost("redis1"),
            vec![
                "unmonitor redis1",
                "fence redis-r9001/redis1 on haproxy1",
                "fence redis-r9001/redis1 on haproxy2",
                "fence redis-r9002/redis1 on haproxy1",
                "fence redis-r9002/redis1 on haproxy2",
                "fence-source redis1",
                "promote r9001@redis2",
                "promote r9002@redis2",
                "activate redis-r9001/redis2 on haproxy1",
                "activate redis-r9001/redis2 on haproxy2",
                "activate redis-r9002/redis2 on haproxy1",
                "activate redis-r9002/redis2 on haproxy2",
                "persist haproxy.cfg on haproxy1",
                "persist haproxy.cfg on haproxy2",
                "terminate redis1",
                "launch redis1",
                "wait-ssh redis1",
                "playbook redis1",
                "replicaof r9001@redis1",
                "replicaof r9002@redis1",
                "wait-sync r9001@redis1",
                "wait-sync r9002@redis1",
                "set-address redis-r9001/redis1 on haproxy1",
                "set-address redis-r9001/redis1 on haproxy2",
                "set-address redis-r9002/redis1 on haproxy1",
                "set-address redis-r9002/redis1 on haproxy2",
                "persist haproxy.cfg on haproxy1",
                "persist haproxy.cfg on haproxy2",
                "monitor redis1",
            ],
        ),
        (
            // The replica machine: nothing to promote, it just loses its replica until the
            // replacement joins.
            lost("redis2"),
            vec![
                "unmonitor redis2",
                "fence redis-r9001/redis2 on haproxy1",
                "fence redis-r9001/redis2 on haproxy2",
                "fence redis-r9002/redis2 on haproxy1",
                "fence redis-r9002/redis2 on haproxy2",
                "persist haproxy.cfg on haproxy1",
                "persist haproxy.cfg on haproxy2",
                "terminate redis2",
                "launch redis2",
                "wait-ssh redis2",
                "playbook redis2",
                "replicaof r9001@redis2",
                "replicaof r9002@redis2",
                "wait-sync r9001@redis2",
                "wait-sync r9002@redis2",
                "set-address redis-r9001/redis2 on haproxy1",
                "set-address redis-r9001/redis2 on haproxy2",
                "set-address redis-r9002/redis2 on haproxy1",
                "set-address redis-r9002/redis2 on haproxy2",
                "persist haproxy.cfg on haproxy1",
                "persist haproxy.cfg on haproxy2",
                "monitor redis2",
            ],
        ),
        (
            died("r9001", "redis1"),
            vec![
                "unmonitor r9001@redis1",
                "fence redis-r9001/redis1 on haproxy1",
                "fence redis-r9001/redis1 on haproxy2",
                "promote r9001@redis2",
                "activate redis-r9001/redis2 on haproxy1",
                "activate redis-r9001/redis2 on haproxy2",
                "persist haproxy.cfg on haproxy1",
                "persist haproxy.cfg on haproxy2",
                "playbook redis1",
                "replicaof r9001@redis1",
                "wait-sync r9001@redis1",
                "monitor r9001@redis1",
            ],
        ),
        (
            died("r9002", "redis2"),
            vec![
                "unmonitor r9002@redis2",
                "playbook redis2",
                "replicaof r9002@redis2",
                "wait-sync r9002@redis2",
                "monitor r9002@redis2",
            ],
        ),
        (
            lost("haproxy1"),
            vec![
                "unmonitor haproxy1",
                "fence app-r9001/haproxy1 on app",
                "fence app-r9002/haproxy1 on app",
                "persist haproxy.cfg on app",
                "terminate haproxy1",
                "launch haproxy1",
                "wait-ssh haproxy1",
                "playbook haproxy1",
                "dns haproxy1.barton.example.com",
                "set-address app-r9001/haproxy1 on app",
                "activate app-r9001/haproxy1 on app",
                "set-address app-r9002/haproxy1 on app",
                "activate app-r9002/haproxy1 on app",
                "persist haproxy.cfg on app",
                "monitor haproxy1",
            ],
        ),
        (
            lost("app"),
            vec![
                "unmonitor app",
                "terminate app",
                "launch app",
                "wait-ssh app",
                "playbook app",
                "monitor app",
            ],
        ),
        (lost("monitor"), vec!["alert CRITICAL"]),
        (
            // A replica that replicates from elsewhere: re-pointed at its master, nothing
            // fenced or promoted.
            Event::FollowMaster {
                shard: "r9001".into(),
                machine: "redis2".into(),
            },
            vec![
                "unmonitor r9001@redis2",
                "replicaof r9001@redis2",
                "wait-sync r9001@redis2",
                "monitor r9001@redis2",
            ],
        ),
    ];
    for (event, expected) in rows {
        assert_eq!(
            outline(&plan(&top, &state, &event)),
            expected,
            "plan for {event}"
        );
    }
}

/// A replica's master is never re-pointed: it has nothing to follow.
#[test]
fn the_master_is_not_made_to_follow_itself() {
    let top = topology(BARTON);
    let state = ObservedState::assumed(&top);
    let e = Event::FollowMaster {
        shard: "r9001".into(),
        machine: "redis1".into(),
    };
    let err = plan_recovery(&top, &state, &e, "rec-1").unwrap_err();
    assert!(err.to_string().contains("which is its master"), "{err}");
}

pub(super) fn position(plan: &Plan, pred: impl Fn(&Action) -> bool) -> Vec<usize> {
    plan.steps
        .iter()
        .filter(|s| pred(&s.action))
        .map(|s| s.index)
        .collect()
}

/// For every event that promotes: every fence of the failed master precedes every promotion.
#[test]
fn failed_master_leaves_every_proxy_before_promotion() {
    let top = topology(BARTON);
    let state = ObservedState::assumed(&top);
    for event in [
        lost("redis1"),
        died("r9001", "redis1"),
        died("r9002", "redis1"),
    ] {
        let p = plan(&top, &state, &event);
        let fences = position(
            &p,
            |a| matches!(a, Action::FenceServer { server, .. } if server.server == "redis1"),
        );
        let promotions = position(&p, |a| matches!(a, Action::PromoteReplica { .. }));
        assert!(!promotions.is_empty(), "{event}: no promotion");
        // Two proxies for each shard the machine serves.
        assert!(fences.len() >= 2, "{event}: fences {fences:?}");
        assert!(
            fences.iter().max() < promotions.iter().min(),
            "{event}: fences {fences:?} promotions {promotions:?}"
        );
        // And the fence is maint + shutdown sessions.
        let fence = p.steps.iter().find(|s| s.index == fences[0]).unwrap();
        let cmds = fence.action.haproxy_commands(&Default::default());
        assert_eq!(cmds.len(), 2);
        assert!(
            cmds[0].ends_with("state maint") && cmds[1].starts_with("shutdown sessions server"),
            "{cmds:?}"
        );
    }
}

#[test]
fn instance_is_terminated_before_its_replacement_is_launched() {
    let top = topology(BARTON);
    let state = ObservedState::assumed(&top);
    for m in ["redis1", "redis2", "haproxy1", "haproxy2", "app"] {
        let p = plan(&top, &state, &lost(m));
        let t = position(
            &p,
            |a| matches!(a, Action::TerminateInstance { machine, .. } if machine == m),
        );
        let l = position(
            &p,
            |a| matches!(a, Action::LaunchInstance { spec } if spec.machine == m),
        );
        assert_eq!((t.len(), l.len()), (1, 1), "{m}");
        assert!(t[0] < l[0], "{m}: terminate {t:?} launch {l:?}");
    }
}

/// After earlier failovers the roles are not the topology's: the plan follows the state.
#[test]
fn roles_come_from_the_observed_state() {
    let top = topology(BARTON);
    let mut state = ObservedState::assumed(&top);
    let s = state.shards.get_mut("r9002").unwrap();
    s.master = "redis2".into();
    s.replicas = vec![ReplicaState {
        machine: "redis1".into(),
        offset: Some(0),
    }];
    let p = plan(&top, &state, &lost("redis2"));
    let o = outline(&p);
    assert!(o.contains(&"promote r9002@redis1".to_owned()), "{o:#?}");
    assert!(!o.iter().any(|l| l.starts_with("promote r9001")), "{o:#?}");
    // The replacement replicates r9001 from redis1 (unchanged) and r9002 from redis1 (new).
    let replicaof: Vec<String> = p
        .steps
        .iter()
        .flat_map(|s| s.action.redis_commands())
        .filter(|c| c.starts_with("REPLICAOF 10"))
        .collect();
    assert_eq!(
        replicaof,
        ["REPLICAOF 10.0.1.11 9001", "REPLICAOF 10.0.1.11 9002"]
    );
}

#[test]
fn static_provider_fails_over_then_alerts_instead_of_replacing() {
    let top = topology(STATIC);
    let state = ObservedState::assumed(&top);
    let p = plan(&top, &state, &lost("redis1"));
    let o = outline(&p);
    assert_eq!(o.last().map(String::as_str), Some("alert warning"));
    assert!(o.contains(&"promote r9001@redis2".to_owned()));
    assert!(
        !o.iter()
            .any(|l| l.starts_with("launch") || l.starts_with("terminate")),
        "{o:#?}"
    );
}

#[test]
fn launch_spec_carries_tags_token_and_fallbacks() {
    let top = topology(BARTON);
    let p = plan(&top, &ObservedState::assumed(&top), &lost("redis2"));
    let (index, spec) = p
        .steps
        .iter()
        .find_map(|s| match &s.action {
            Action::LaunchInstance { spec } => Some((s.index, spec.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(spec.client_token, format!("rec-1-{index}"));
    assert_eq!(spec.tags["medic:step"], index.to_string());
    assert_eq!(spec.tags["medic:recovery"], "rec-1");
    assert_eq!(spec.tags["medic:machine"], "redis2");
    assert_eq!(spec.tags["team"], "platform");
    assert_eq!(spec.instance_types, ["r6i.large", "r5.large", "m6i.large"]);
    assert_eq!(spec.image_id.as_deref(), Some("ami-0a1b2c3d4e5f60718"));
    // redis2 is the second redis machine: the second subnet, another zone than redis1.
    assert_eq!(spec.subnet.as_deref(), Some("subnet-0f1e2d3c4b5a69788"));
}

#[test]
fn haproxy_replacement_updates_dns_with_the_new_address() {
    let top = topology(BARTON);
    let p = plan(&top, &ObservedState::assumed(&top), &lost("haproxy1"));
    let dns: Vec<&Action> = p
        .steps
        .iter()
        .map(|s| &s.action)
        .filter(|a| matches!(a, Action::UpsertDns { .. }))
        .collect();
    assert_eq!(
        dns,
        [&Action::UpsertDns {
            target: DnsTarget::Route53 {
                zone_id: "Z04117612BARTON0EXAMPLE".into(),
                zone: "barton.example.com".into()
            },
            name: "haproxy1.barton.example.com".into(),
            ttl: 60,
            values: vec![Addr::Of("haproxy1".into())],
        }]
    );
}

#[test]
fn bad_events_are_errors() {
    let top = topology(BARTON);
    let state = ObservedState::assumed(&top);
    let e = plan_recovery(&top, &state, &lost("redis9"), "r").unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown machine `redis9`; expected one of redis1, redis2, haproxy1, haproxy2, app, monitor"
    );
    let e = plan_recovery(&top, &state, &died("r9009", "redis1"), "r").unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown shard `r9009`; expected one of r9001, r9002"
    );
    let e = plan_recovery(&top, &state, &died("r9001", "haproxy1"), "r").unwrap_err();
    assert_eq!(
        e.to_string(),
        "shard `r9001` has no server on machine `haproxy1`; its servers are on redis1, redis2"
    );
}

#[test]
fn client_tokens_fit_ec2() {
    assert_eq!(client_token("rec-1", 7), "rec-1-7");
    let long = "x".repeat(100);
    let t = client_token(&long, 13);
    assert_eq!(t.len(), 64);
    assert!(t.ends_with("-13"));
    assert_eq!(client_token("a b/c", 1), "abc-1");
}

#[test]
fn planning_is_deterministic() {
    let top = topology(BARTON);
    let state = ObservedState::assumed(&top);
    assert_eq!(
        plan(&top, &state, &lost("redis1")),
        plan(&top, &state, &lost("redis1"))
    );
}

#[test]
fn plans_round_trip_through_json() {
    let top = topology(BARTON);
    let p = plan(&top, &ObservedState::assumed(&top), &lost("redis1"));
    let json = serde_json::to_string(&p).unwrap();
    let back: Plan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
}
