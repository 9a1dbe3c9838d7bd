//! The planner with more than one replica per shard: which replica is promoted, and how the
//! others follow the new master.

use medic_topology::Topology;

use super::tests::{BARTON, died, lost, outline, plan, position, topology};
use super::*;
use crate::state::ReplicaState;

pub(super) fn three_replicas() -> (Topology, ObservedState) {
    let text = BARTON
        .replace(
            "  - {name: haproxy1,",
            "  - {name: redis3, role: redis, ami: redis, instance_type: r6i.large, address: 10.0.3.11}\n  - {name: redis4, role: redis, ami: redis, instance_type: r6i.large, address: 10.0.4.11}\n  - {name: haproxy1,",
        )
        .replace("replicas: [redis2]}", "replicas: [redis2, redis3, redis4]}");
    let top = topology(&text);
    let mut state = ObservedState::assumed(&top);
    let s = state.shards.get_mut("r9001").unwrap();
    s.master_offset = Some(10_000);
    s.replicas[0].offset = Some(9_000);
    s.replicas[1].offset = Some(9_900);
    s.replicas[2].offset = None;
    (top, state)
}

fn switch(s: &str, to: Option<&str>) -> Event {
    Event::Switchover {
        shard: s.into(),
        to: to.map(str::to_owned),
    }
}

/// Every replica of a shard follows its master: when another replica is promoted, each
/// other surviving replica is pointed at the new master — after the promotion and after
/// the proxies route to it, clients first — and waited for, before the plan ends. The lost
/// server itself is left to the steps that replace or restart it.
#[test]
fn other_replicas_follow_the_new_master() {
    let (top, state) = three_replicas();
    // Both shards have three replicas (r9002 all at offset 0: the first listed is promoted).
    // After earlier failovers: redis2 is r9001's master, redis4 its most advanced replica;
    // redis2 is still a replica of r9002 (which promotes nothing when redis2 is lost).
    let mut moved = state.clone();
    let s = moved.shards.get_mut("r9001").unwrap();
    s.master = "redis2".into();
    s.replicas = [
        ("redis1", Some(9_000)),
        ("redis3", None),
        ("redis4", Some(9_950)),
    ]
    .into_iter()
    .map(|(m, offset)| ReplicaState {
        machine: m.into(),
        offset,
    })
    .collect();
    // (event, state, the shard, its new master, the replicas re-pointed, the failed one)
    type Row<'s> = (
        Event,
        &'s ObservedState,
        &'s str,
        &'s str,
        Vec<&'s str>,
        &'s str,
    );
    let rows: Vec<Row> = vec![
        (
            lost("redis1"),
            &state,
            "r9001",
            "redis3",
            vec!["redis2", "redis4"],
            "redis1",
        ),
        (
            lost("redis1"),
            &state,
            "r9002",
            "redis2",
            vec!["redis3", "redis4"],
            "redis1",
        ),
        (
            died("r9001", "redis1"),
            &state,
            "r9001",
            "redis3",
            vec!["redis2", "redis4"],
            "redis1",
        ),
        (
            switch("r9001", None),
            &state,
            "r9001",
            "redis3",
            vec!["redis2", "redis4"],
            "redis1",
        ),
        (
            switch("r9001", Some("redis2")),
            &state,
            "r9001",
            "redis2",
            vec!["redis3", "redis4"],
            "redis1",
        ),
        (
            lost("redis2"),
            &moved,
            "r9001",
            "redis4",
            vec!["redis1", "redis3"],
            "redis2",
        ),
        (
            died("r9001", "redis2"),
            &moved,
            "r9001",
            "redis4",
            vec!["redis1", "redis3"],
            "redis2",
        ),
    ];
    let sync_ms = top.policy.sync_timeout.value.as_millis() as u64;
    for (event, state, shard, new, others, failed) in rows {
        let p = plan(&top, state, &event);
        let o = outline(&p);
        let at = |pred: &dyn Fn(&Action) -> bool| position(&p, pred);
        let promoted = at(&|a| {
            matches!(a, Action::PromoteReplica { server, .. }
                if server.shard == shard && server.machine == new)
        });
        assert_eq!(promoted.len(), 1, "{event}: {o:#?}");
        let activated = at(&|a| {
            matches!(a, Action::ActivateServer { server, .. }
                if server.backend == vars::proxy_backend(&top, shard) && server.server == new)
        });
        assert_eq!(activated.len(), 2, "{event}: {o:#?}");
        let routed = activated.iter().max().copied().unwrap();
        assert!(promoted[0] < routed, "{event}: {o:#?}");
        // The plan's end: its last monitor, else its last step.
        let end = at(&|a| matches!(a, Action::Monitor { .. }))
            .last()
            .copied()
            .unwrap_or(p.steps.len() + 1);
        let port = top.shard(shard).unwrap().port.value;
        let master = addr_of(state, new);
        for r in &others {
            let server = RedisServer {
                shard: shard.into(),
                machine: (*r).into(),
                address: addr_of(state, r),
                port,
            };
            let replicaof = at(&|a| {
                *a == Action::ReplicaOf {
                    server: server.clone(),
                    master: master.clone(),
                    master_port: port,
                }
            });
            let waits = at(&|a| {
                *a == Action::WaitInSync {
                    server: server.clone(),
                    master: master.clone(),
                    master_port: port,
                    timeout_ms: sync_ms,
                }
            });
            assert_eq!(
                (replicaof.len(), waits.len()),
                (1, 1),
                "{event}: {shard}@{r} re-pointed at {new} {replicaof:?}, waited {waits:?}: {o:#?}"
            );
            assert!(
                routed < replicaof[0] && replicaof[0] < waits[0] && waits[0] < end,
                "{event}: {shard}@{r}: routed at {routed}, replicaof {replicaof:?}, wait {waits:?}, end {end}: {o:#?}"
            );
        }
        // Nothing else of the shard is re-pointed but the failed server, and that only by
        // the steps that restart or replace it (a lost machine: once it is reachable again).
        let repointed: Vec<&str> = p
            .steps
            .iter()
            .filter_map(|s| match &s.action {
                Action::ReplicaOf { server, .. } if server.shard == shard => {
                    Some(server.machine.as_str())
                }
                _ => None,
            })
            .filter(|m| *m != failed)
            .collect();
        assert_eq!(repointed, others, "{event}: {o:#?}");
        if let Event::MachineLost { machine } = &event {
            let reachable =
                at(&|a| matches!(a, Action::WaitReachable { machine: m, .. } if m == machine));
            let addressed = at(&|a| {
                matches!(a, Action::ReplicaOf { server, .. } | Action::WaitInSync { server, .. }
                    if server.machine == *machine)
            });
            assert!(
                addressed
                    .iter()
                    .all(|i| reachable.first().is_some_and(|r| r < i)),
                "{event}: {machine} addressed at {addressed:?}, reachable at {reachable:?}: {o:#?}"
            );
        }
    }
}

/// The whole plan when the master of two shards with three replicas each is lost: in each,
/// the two replicas left are pointed at the new master as soon as clients are routed to it, and waited for once the lost machine is
/// replaced.
#[test]
fn a_lost_master_of_three_replicas_plan() {
    let (top, state) = three_replicas();
    assert_eq!(
        outline(&plan(&top, &state, &lost("redis1"))),
        [
            "unmonitor redis1",
            "fence redis-r9001/redis1 on haproxy1",
            "fence redis-r9001/redis1 on haproxy2",
            "fence redis-r9002/redis1 on haproxy1",
            "fence redis-r9002/redis1 on haproxy2",
            "fence-source redis1",
            "promote r9001@redis3",
            "promote r9002@redis2",
            "activate redis-r9001/redis3 on haproxy1",
            "activate redis-r9001/redis3 on haproxy2",
            "activate redis-r9002/redis2 on haproxy1",
            "activate redis-r9002/redis2 on haproxy2",
            "replicaof r9001@redis2",
            "replicaof r9001@redis4",
            "replicaof r9002@redis3",
            "replicaof r9002@redis4",
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
            "wait-sync r9001@redis2",
            "wait-sync r9001@redis4",
            "wait-sync r9002@redis3",
            "wait-sync r9002@redis4",
            "monitor redis1",
        ]
    );
}

#[test]
fn the_most_advanced_replica_is_promoted() {
    let (top, state) = three_replicas();
    let p = plan(&top, &state, &lost("redis1"));
    let promoted: Vec<(String, u64, u64)> = p
        .steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::PromoteReplica {
                server,
                offset,
                lag_bytes,
            } if server.shard == "r9001" => Some((server.machine.clone(), *offset, *lag_bytes)),
            _ => None,
        })
        .collect();
    assert_eq!(promoted, [("redis3".to_owned(), 9_900, 100)]);
    // The proxies are routed to the one promoted, not to the first listed.
    assert!(outline(&p).contains(&"activate redis-r9001/redis3 on haproxy1".to_owned()));
}

#[test]
fn a_replica_too_far_behind_is_not_promoted_and_the_machine_is_kept() {
    let (top, mut state) = three_replicas();
    let s = state.shards.get_mut("r9001").unwrap();
    s.master_offset = Some(10_000_000);
    let p = plan(&top, &state, &lost("redis1"));
    let o = outline(&p);
    assert!(!o.iter().any(|l| l.starts_with("promote r9001")), "{o:#?}");
    assert!(
        !o.iter()
            .any(|l| l.starts_with("terminate") || l.starts_with("launch")),
        "{o:#?}"
    );
    let alerts: Vec<&str> = p
        .steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::Alert { message, .. } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        alerts,
        [
            "shard r9001 lost its master redis1; the best replica redis3 is 9990100 bytes behind (policy.max_promotion_lag_bytes is 1048576), so it is not promoted automatically",
            "redis1 is left as it is (not terminated): shard r9001 has no master, and redis1's disk may hold the only copy of its latest writes",
        ]
    );
    // The other shard still fails over: one refusal does not hold the rest. But redis1 is
    // not fenced at its source before that promotion (which would terminate it): a proxy
    // that could not be fenced blocks the promotion instead.
    assert!(o.contains(&"promote r9002@redis2".to_owned()), "{o:#?}");
    assert!(
        !p.steps
            .iter()
            .any(|s| matches!(s.action, Action::FenceAtSource { .. })),
        "{o:#?}"
    );
}

#[test]
fn a_replica_never_seen_in_sync_is_not_promoted() {
    let top = topology(BARTON);
    let mut state = ObservedState::assumed(&top);
    state.shards.get_mut("r9001").unwrap().replicas[0].offset = None;
    let o = outline(&plan(&top, &state, &died("r9001", "redis1")));
    assert_eq!(
        o,
        [
            "unmonitor r9001@redis1",
            "fence redis-r9001/redis1 on haproxy1",
            "fence redis-r9001/redis1 on haproxy2",
            "persist haproxy.cfg on haproxy1",
            "persist haproxy.cfg on haproxy2",
            "alert CRITICAL",
            "alert CRITICAL",
        ]
    );
}

/// A replica a proxy has no server for (the reconcile read it so: a topology reload added
/// it and that proxy's haproxy.cfg is older) is passed over for one every proxy can route
/// to, within the lag limit; when no other may be promoted, it is, with a critical alert
/// naming the proxies.
#[test]
fn a_replica_a_proxy_cannot_route_to_is_promoted_only_when_no_other_can_be() {
    let (top, mut state) = three_replicas();
    let lacks = |state: &mut ObservedState, machines: &[&str]| {
        state.shards.get_mut("r9001").unwrap().missing_on.insert(
            "haproxy2".into(),
            machines.iter().map(|m| (*m).to_owned()).collect(),
        );
    };
    let promoted = |p: &Plan| -> Vec<String> {
        p.steps
            .iter()
            .filter_map(|s| match &s.action {
                Action::PromoteReplica { server, .. } if server.shard == "r9001" => {
                    Some(server.machine.clone())
                }
                _ => None,
            })
            .collect()
    };
    let alerts = |p: &Plan| -> Vec<String> {
        p.steps
            .iter()
            .filter_map(|s| match &s.action {
                Action::Alert { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect()
    };
    // redis3 (9,900) is the most advanced, but haproxy2 lacks it: redis2 (9,000, 1,000
    // bytes behind, within the limit) is promoted.
    lacks(&mut state, &["redis3"]);
    let p = plan(&top, &state, &lost("redis1"));
    assert_eq!(promoted(&p), ["redis2"], "{:#?}", outline(&p));
    assert_eq!(
        alerts(&p),
        [
            "shard r9001: redis2 is promoted (1000 bytes behind the newest data seen) rather than the more advanced redis3, which haproxy2 had no server for when last read"
        ]
    );

    // What may be lost is measured from the newest data known: redis3 streamed on past the
    // master's last offset seen, so redis2 is too far behind it, and redis3 is promoted.
    let mut ahead = state.clone();
    ahead.shards.get_mut("r9001").unwrap().replicas[1].offset = Some(2_000_000);
    let p = plan(&top, &ahead, &lost("redis1"));
    assert_eq!(promoted(&p), ["redis3"], "{:#?}", outline(&p));

    // A proxy no longer in the topology lacks nothing.
    let mut gone = state.clone();
    let lacked = gone.shards.get_mut("r9001").unwrap();
    let entry = lacked.missing_on.remove("haproxy2").unwrap();
    lacked.missing_on.insert("haproxy9".into(), entry);
    let p = plan(&top, &gone, &lost("redis1"));
    assert_eq!(promoted(&p), ["redis3"], "{:#?}", outline(&p));
    assert!(alerts(&p).is_empty(), "{:?}", alerts(&p));

    // No routable replica that may be promoted (redis2 and redis4 never seen in sync): the
    // most advanced one, and the proxies named.
    state.shards.get_mut("r9001").unwrap().replicas[0].offset = None;
    let p = plan(&top, &state, &lost("redis1"));
    assert_eq!(promoted(&p), ["redis3"], "{:#?}", outline(&p));
    assert_eq!(
        alerts(&p),
        [
            "shard r9001: redis3 is promoted though haproxy2 had no server for it when last read (no other replica that answers may be promoted); until `medic recover PROXY` configures them, they cannot route to it"
        ]
    );

    // Every replica lacking: the most advanced, as before.
    lacks(&mut state, &["redis2", "redis3", "redis4"]);
    let p = plan(&top, &state, &lost("redis1"));
    assert_eq!(promoted(&p), ["redis3"], "{:#?}", outline(&p));
}

/// A switchover never goes to a replica a proxy has no server for: chosen by offset it is
/// passed over, named it is refused.
#[test]
fn a_switchover_goes_only_to_a_replica_every_proxy_can_route_to() {
    let (top, mut state) = three_replicas();
    state
        .shards
        .get_mut("r9001")
        .unwrap()
        .missing_on
        .insert("haproxy1".into(), ["redis3".to_owned()].into());
    let p = plan(&top, &state, &switch("r9001", None));
    assert!(
        outline(&p).contains(&"promote r9001@redis2".to_owned()),
        "{:#?}",
        outline(&p)
    );
    let refused = plan_recovery(&top, &state, &switch("r9001", Some("redis3")), "t").unwrap_err();
    assert_eq!(
        refused.to_string(),
        "`r9001` cannot be switched over: haproxy1 had no server for redis3 when last read; `medic recover PROXY` configures them"
    );
}

/// On a tie a switchover goes to the replica listed first, as a failover does.
#[test]
fn on_a_tie_a_switchover_and_a_failover_choose_the_same_replica() {
    let (top, mut state) = three_replicas();
    let s = state.shards.get_mut("r9001").unwrap();
    s.replicas[0].offset = Some(9_900);
    s.replicas[1].offset = Some(9_900);
    for event in [switch("r9001", None), lost("redis1")] {
        let p = plan(&top, &state, &event);
        assert!(
            outline(&p).contains(&"promote r9001@redis2".to_owned()),
            "{event:?}: {:#?}",
            outline(&p)
        );
    }
}
