//! Property tests of the planner over random observed states and events.
//!
//! The planner's own tests pin whole plans for the example deployment as written. Here the
//! roles of every shard's servers (who is master after earlier failovers), which replicas were
//! seen in sync and at what offset, which addresses and instances are known, the remediation
//! policy, the lag limit and the event are all random, over four deployments (the aws, lab and
//! static examples, and a wider one with three shards, four redis machines and three proxies).
//! For every plan the guarantees `medic run` relies on must hold:
//! - on every proxy, the old master is fenced before any replica of its shard is promoted, and
//!   the new master is activated only after;
//! - an instance is terminated before its replacement is launched, and launch tokens are the
//!   step's own;
//! - a replica is promoted only if it was seen in sync, within `policy.max_promotion_lag_bytes`
//!   and the most advanced; with none such the plan alerts instead, and the lost machine is not
//!   terminated nor the dead master restarted;
//! - when a replica of a shard is promoted, every other replica of the shard, but the failed
//!   server, is pointed at the new master after the promotion and after the proxies route to
//!   it, then waited for until in sync, before the plan ends;
//! - no server is ever (re)configured as a master outside a bootstrap;
//! - every plan, and the document `medic plan --format json` prints, round-trips through JSON;
//! - errors only where the event makes no sense for the state, and planning is deterministic.

#![allow(
    clippy::unwrap_used,
    reason = "a test: a failed unwrap is a failed test"
)]

mod props_support;

use medic_plan::{Action, Addr, AlertLevel, Event, Plan, client_token, plan_recovery};
use proptest::prelude::*;

use props_support::{Case, case, oracle_best, outcome_expected, proxies_of, views_document};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn plans_keep_their_guarantees(c in case()) {
        let top = &c.top;
        let planned = plan_recovery(top, &c.state, &c.event, "rec-7");
        let ok = match (&planned, outcome_expected(&c)) {
            (Ok(_), Ok(())) => true,
            (Err(_), Err(())) => false,
            (got, want) => {
                return Err(TestCaseError::fail(format!(
                    "{}: planned {got:?}, expected {}", c.event,
                    if want.is_ok() { "a plan" } else { "an error" }
                )));
            }
        };
        if !ok {
            return Ok(());
        }
        let plan = planned.unwrap();
        prop_assert_eq!(
            plan.steps.iter().map(|s| s.index).collect::<Vec<_>>(),
            (1..=plan.steps.len()).collect::<Vec<_>>()
        );
        fences_before_promotion(&c, &plan)?;
        terminate_before_launch(&c, &plan)?;
        promotes_only_eligible(&c, &plan)?;
        other_replicas_follow(&c, &plan)?;
        no_master_outside_bootstrap(&c, &plan)?;
        round_trips(&c, &plan)?;
        // Deterministic: the same input, the same plan.
        prop_assert_eq!(plan_recovery(top, &c.state, &c.event, "rec-7").unwrap(), plan);
    }
}

/// Each promotion of shard S: the old master of S left every proxy before it, and the new
/// master is activated on every proxy after it; the old master is never activated again.
/// A lost machine leaves every proxy, for each of its servers, before any promotion at all.
fn fences_before_promotion(c: &Case, plan: &Plan) -> Result<(), TestCaseError> {
    let proxies = proxies_of(&c.top);
    let first_promotion = plan
        .steps
        .iter()
        .find(|s| matches!(s.action, Action::PromoteReplica { .. }))
        .map(|s| s.index);
    let mut promoted = std::collections::BTreeSet::new();
    for step in &plan.steps {
        let Action::PromoteReplica { server, .. } = &step.action else {
            continue;
        };
        prop_assert!(
            promoted.insert(server.shard.clone()),
            "{} promoted twice",
            server.shard
        );
        let old = &c.state.shards[&server.shard].master;
        let backend = format!("redis-{}", server.shard);
        for proxy in &proxies {
            let fenced_at = plan.steps.iter().position(|s| {
                matches!(&s.action, Action::FenceServer { proxy: p, server: sv, .. }
                    if p.machine == *proxy && sv.backend == backend && sv.server == *old)
            });
            prop_assert!(
                fenced_at.is_some_and(|i| i + 1 < step.index),
                "{}: {}/{} fenced on {} at {:?}, promoted at step {}",
                c.event,
                backend,
                old,
                proxy,
                fenced_at.map(|i| i + 1),
                step.index
            );
            let activated_at = plan.steps.iter().position(|s| {
                matches!(&s.action, Action::ActivateServer { proxy: p, server: sv }
                    if p.machine == *proxy && sv.backend == backend && sv.server == server.machine)
            });
            prop_assert!(
                activated_at.is_some_and(|i| i + 1 > step.index),
                "{}: {}/{} activated on {} at {:?}, promoted at step {}",
                c.event,
                backend,
                server.machine,
                proxy,
                activated_at.map(|i| i + 1),
                step.index
            );
        }
        let old_activated = plan.steps.iter().any(|s| {
            matches!(&s.action, Action::ActivateServer { server: sv, .. }
                if sv.backend == backend && sv.server == *old)
        });
        prop_assert!(
            !old_activated,
            "{}: the old master {} is activated",
            c.event,
            old
        );
    }
    // A redis backend's server is activated only as the shard's new master.
    for step in &plan.steps {
        if let Action::ActivateServer { server, .. } = &step.action
            && let Some(shard) = server.backend.strip_prefix("redis-")
        {
            let promoted_before = plan.steps[..step.index - 1].iter().any(|s| {
                matches!(&s.action, Action::PromoteReplica { server: p, .. }
                    if p.shard == shard && p.machine == server.server)
            });
            prop_assert!(
                promoted_before,
                "{}: step {} activates {}",
                c.event,
                step.index,
                server
            );
        }
    }
    if let (Event::MachineLost { machine }, Some(first)) = (&c.event, first_promotion) {
        for (shard, st) in &c.state.shards {
            let serves = st.master == *machine || st.replicas.iter().any(|r| r.machine == *machine);
            if !serves {
                continue;
            }
            for proxy in &proxies {
                let fenced = plan.steps[..first - 1].iter().any(|s| {
                    matches!(&s.action, Action::FenceServer { proxy: p, server: sv, .. }
                        if p.machine == *proxy && sv.backend == format!("redis-{shard}")
                            && sv.server == *machine)
                });
                prop_assert!(
                    fenced,
                    "{}: {}@{} not fenced on {} before step {}",
                    c.event,
                    shard,
                    machine,
                    proxy,
                    first
                );
            }
        }
    }
    Ok(())
}

/// Every launch follows the terminate of the same machine (a bootstrap terminates nothing),
/// each machine is terminated and launched at most once, a launch carries its own step's token,
/// and the machine is reachable before any playbook runs on it.
fn terminate_before_launch(c: &Case, plan: &Plan) -> Result<(), TestCaseError> {
    let bootstrap = c.event == Event::Bootstrap;
    let mut terminated = std::collections::BTreeMap::new();
    let mut launched = std::collections::BTreeMap::new();
    for step in &plan.steps {
        match &step.action {
            Action::TerminateInstance { machine, .. } => {
                prop_assert!(!bootstrap, "a bootstrap terminates {}", machine);
                prop_assert!(terminated.insert(machine.clone(), step.index).is_none());
                prop_assert!(
                    !launched.contains_key(machine),
                    "{}: {} terminated after its launch",
                    c.event,
                    machine
                );
            }
            Action::LaunchInstance { spec } => {
                prop_assert!(
                    bootstrap || terminated.contains_key(&spec.machine),
                    "{}: {} launched at step {} without a terminate before",
                    c.event,
                    spec.machine,
                    step.index
                );
                prop_assert!(launched.insert(spec.machine.clone(), step.index).is_none());
                prop_assert_eq!(&spec.client_token, &client_token("rec-7", step.index));
                prop_assert_eq!(spec.tags.get("medic:step"), Some(&step.index.to_string()));
            }
            Action::RunPlaybook { machine, .. } => {
                if let Some(&at) = launched.get(machine) {
                    let reachable = plan.steps[at..step.index - 1].iter().any(|s| {
                        matches!(&s.action, Action::WaitReachable { machine: m, .. } if m == machine)
                    });
                    prop_assert!(
                        reachable,
                        "{}: playbook on {} before it is reachable",
                        c.event,
                        machine
                    );
                }
            }
            _ => {}
        }
    }
    // What is terminated is replaced within the same plan.
    for m in terminated.keys() {
        prop_assert!(
            launched.contains_key(m),
            "{}: {} terminated, never launched",
            c.event,
            m
        );
    }
    Ok(())
}

/// For every shard whose master a failure takes away: the promotion is exactly the oracle's
/// (the most advanced replica seen in sync, within the lag limit), or, with none eligible, no
/// promotion, a critical alert, and the lost machine or dead master left alone.
fn promotes_only_eligible(c: &Case, plan: &Plan) -> Result<(), TestCaseError> {
    let top = &c.top;
    let promotions: Vec<(String, String, u64, u64)> = plan
        .steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::PromoteReplica {
                server,
                offset,
                lag_bytes,
            } => Some((
                server.shard.clone(),
                server.machine.clone(),
                *offset,
                *lag_bytes,
            )),
            _ => None,
        })
        .collect();
    // Every promotion: a replica of the shard that was seen in sync at that offset.
    for (shard, machine, offset, _) in &promotions {
        let st = &c.state.shards[shard];
        let replica = st.replicas.iter().find(|r| r.machine == *machine);
        prop_assert!(
            replica.is_some_and(|r| r.offset == Some(*offset)),
            "{}: promotes {}@{} at {}, state {:?}",
            c.event,
            shard,
            machine,
            offset,
            st
        );
    }
    let (lost, shards): (&str, Vec<&String>) = match &c.event {
        Event::MachineLost { machine } => (
            machine,
            c.state
                .shards
                .iter()
                .filter(|(_, s)| s.master == *machine)
                .map(|(n, _)| n)
                .collect(),
        ),
        Event::ProcessDied { shard, machine } if c.state.shards[shard].master == *machine => {
            (machine, vec![shard])
        }
        Event::Switchover { shard, to } => {
            let st = &c.state.shards[shard];
            prop_assert_eq!(promotions.len(), 1);
            let (_, machine, offset, lag) = &promotions[0];
            if let Some(to) = to {
                prop_assert_eq!(machine, to);
            } else {
                let max = st.replicas.iter().filter_map(|r| r.offset).max();
                prop_assert_eq!(Some(*offset), max);
            }
            prop_assert_eq!(*lag, 0);
            return switchover_order(c, plan, shard, machine);
        }
        _ => {
            prop_assert!(
                promotions.is_empty(),
                "{}: promotes {:?}",
                c.event,
                promotions
            );
            return Ok(());
        }
    };
    let failover = top.policy.allows(medic_topology::Remedy::Failover);
    let max_lag = top.policy.max_promotion_lag_bytes.value;
    let mut refused = Vec::new();
    for shard in shards {
        let want = if failover {
            oracle_best(&c.state.shards[shard], lost, max_lag)
        } else {
            None
        };
        let got: Vec<_> = promotions.iter().filter(|p| p.0 == *shard).collect();
        match want {
            Some((machine, offset, lag)) => {
                prop_assert_eq!(got.len(), 1, "{}: {} promotions {:?}", c.event, shard, got);
                prop_assert_eq!(
                    (&got[0].1, got[0].2, got[0].3),
                    (&machine, offset, lag),
                    "{}: shard {} state {:?}",
                    c.event,
                    shard,
                    c.state.shards[shard]
                );
                prop_assert!(lag <= max_lag);
            }
            None => {
                refused.push(shard);
                prop_assert!(
                    got.is_empty(),
                    "{}: {} promotes {:?} though no replica is eligible \
                    (lag limit {}, state {:?})",
                    c.event,
                    shard,
                    got,
                    max_lag,
                    c.state.shards[shard]
                );
            }
        }
    }
    if !refused.is_empty() {
        // A critical alert names each shard left without a master.
        for shard in &refused {
            let named = plan.steps.iter().any(|s| {
                matches!(&s.action, Action::Alert { level: AlertLevel::Critical, message }
                    if message.contains(&format!("shard {shard} ")))
            });
            prop_assert!(
                named,
                "{}: no critical alert names shard {}",
                c.event,
                shard
            );
        }
        // Its disk may hold the only copy: not terminated; a dead master is not restarted.
        let touched = plan.steps.iter().any(|s| match &s.action {
            Action::TerminateInstance { machine, .. } | Action::RunPlaybook { machine, .. } => {
                machine == lost
            }
            Action::ReplicaOf { server, .. } | Action::WaitInSync { server, .. } => {
                server.machine == lost
            }
            _ => false,
        });
        prop_assert!(
            !touched,
            "{}: the lost master {} is touched after a refusal",
            c.event,
            lost
        );
    }
    Ok(())
}

/// Each promotion of shard S to machine N: every other replica of S the state lists but the
/// failed server (the lost machine's, the dead master, the old master of a switchover) still
/// follows the old master, so it is pointed at N — after the promotion and after every proxy
/// routes to N — then waited for, all before the plan's last monitor. Once S is promoted nothing
/// of S is pointed anywhere but at N, N itself not at all; a lost machine is addressed only
/// once its replacement is reachable.
fn other_replicas_follow(c: &Case, plan: &Plan) -> Result<(), TestCaseError> {
    let addr = |m: &str| {
        c.state
            .address(m)
            .map_or_else(|| Addr::Of(m.to_owned()), Addr::Ip)
    };
    let at = |pred: &dyn Fn(&Action) -> bool| {
        plan.steps
            .iter()
            .filter(|s| pred(&s.action))
            .map(|s| s.index)
            .collect::<Vec<_>>()
    };
    let end = at(&|a| matches!(a, Action::Monitor { .. }))
        .last()
        .copied()
        .unwrap_or(plan.steps.len() + 1);
    for step in &plan.steps {
        let Action::PromoteReplica { server: new, .. } = &step.action else {
            continue;
        };
        let (shard, promoted) = (&new.shard, step.index);
        let st = &c.state.shards[shard];
        let port = c.top.shard(shard).unwrap().port.value;
        let master = addr(&new.machine);
        let backend = format!("redis-{shard}");
        let routed = at(&|a| {
            matches!(a, Action::ActivateServer { server, .. }
                if server.backend == backend && server.server == new.machine)
        })
        .into_iter()
        .max()
        .unwrap_or(promoted);
        for r in st
            .replicas
            .iter()
            .filter(|r| r.machine != new.machine && r.machine != st.master)
        {
            let replicaof = at(&|a| {
                matches!(a, Action::ReplicaOf { server, master: m, master_port }
                    if server.shard == *shard && server.machine == r.machine
                        && server.address == addr(&r.machine) && *m == master
                        && *master_port == port)
            });
            let waits = at(&|a| {
                matches!(a, Action::WaitInSync { server, master: m, master_port, .. }
                    if server.shard == *shard && server.machine == r.machine
                        && *m == master && *master_port == port)
            });
            prop_assert!(
                replicaof.len() == 1
                    && replicaof[0] > routed
                    && waits.iter().any(|w| *w > replicaof[0] && *w < end),
                "{}: {}@{} promoted at step {}, routed to by step {}; the replica {} is pointed \
                at it at {:?}, waited for at {:?}, the plan ends at {}",
                c.event,
                shard,
                new.machine,
                promoted,
                routed,
                r.machine,
                replicaof,
                waits,
                end
            );
        }
        for s in &plan.steps[promoted..] {
            if let Action::ReplicaOf {
                server, master: m, ..
            } = &s.action
                && server.shard == *shard
            {
                prop_assert!(
                    server.machine != new.machine && *m == master,
                    "{}: after {}@{} is promoted (step {}), step {} points {}@{} at {}",
                    c.event,
                    shard,
                    new.machine,
                    promoted,
                    s.index,
                    shard,
                    server.machine,
                    m
                );
            }
        }
    }
    if let Event::MachineLost { machine } = &c.event {
        let reachable =
            at(&|a| matches!(a, Action::WaitReachable { machine: m, .. } if m == machine));
        let addressed = at(&|a| {
            matches!(a, Action::ReplicaOf { server, .. } | Action::WaitInSync { server, .. }
                if server.machine == *machine)
        });
        prop_assert!(
            addressed
                .iter()
                .all(|i| reachable.first().is_some_and(|r| r < i)),
            "{}: {} addressed at steps {:?}, reachable at {:?}",
            c.event,
            machine,
            addressed,
            reachable
        );
    }
    Ok(())
}

/// A switchover holds the old master's writes, waits for the new one to catch up, fences, and
/// only then promotes; the old master is made a replica before its writes are let go.
fn switchover_order(c: &Case, plan: &Plan, shard: &str, new: &str) -> Result<(), TestCaseError> {
    let old = &c.state.shards[shard].master;
    let at = |pred: &dyn Fn(&Action) -> bool| plan.steps.iter().position(|s| pred(&s.action));
    let pause = at(&|a| matches!(a, Action::PauseWrites { server, .. } if server.machine == *old));
    let sync = at(&|a| matches!(a, Action::WaitInSync { server, .. } if server.machine == new));
    let fence = at(&|a| matches!(a, Action::FenceServer { server, .. } if server.server == *old));
    let promote = at(&|a| matches!(a, Action::PromoteReplica { .. }));
    let demote = at(&|a| matches!(a, Action::ReplicaOf { server, .. } if server.machine == *old));
    let unpause = at(&|a| matches!(a, Action::Unpause { server } if server.machine == *old));
    let order = [pause, sync, fence, promote, demote, unpause];
    prop_assert!(
        order.iter().all(Option::is_some),
        "{}: {:?}",
        c.event,
        order
    );
    prop_assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "{}: order {:?}",
        c.event,
        order
    );
    Ok(())
}

/// Outside a bootstrap nothing configures a redis server as a master: a dead master comes back
/// as a replica, never empty as a master.
fn no_master_outside_bootstrap(c: &Case, plan: &Plan) -> Result<(), TestCaseError> {
    if c.event == Event::Bootstrap {
        return Ok(());
    }
    for step in &plan.steps {
        if let Action::RunPlaybook {
            playbook,
            vars,
            machine,
            ..
        } = &step.action
            && playbook == "redis"
        {
            let shards = vars["shards"].as_array().cloned().unwrap_or_default();
            for s in shards {
                prop_assert_ne!(&s["role"], "master", "{}: {} gets {}", c.event, machine, s);
            }
        }
    }
    Ok(())
}

/// The plan, alone and in the document `medic plan --format json` prints, reads back equal and
/// writes again to the very same text.
fn round_trips(c: &Case, plan: &Plan) -> Result<(), TestCaseError> {
    let text = serde_json::to_string(plan).unwrap();
    let back: Plan = serde_json::from_str(&text).unwrap();
    prop_assert_eq!(&back, plan);
    prop_assert_eq!(serde_json::to_string(&back).unwrap(), text);

    let doc = views_document(c, plan);
    let pretty = serde_json::to_string_pretty(&doc).unwrap();
    let value: serde_json::Value = serde_json::from_str(&pretty).unwrap();
    let back: Plan = serde_json::from_value(value["plan"].clone()).unwrap();
    prop_assert_eq!(&back, plan);
    prop_assert_eq!(
        value["views"].as_array().map(Vec::len),
        Some(plan.steps.len())
    );
    prop_assert_eq!(serde_json::to_string_pretty(&value).unwrap(), pretty);
    Ok(())
}
