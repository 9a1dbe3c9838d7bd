//! The haproxy.cfg writes: after the traffic has moved, and keeping every runtime change.

use std::collections::BTreeMap;
use std::path::Path;

use medic_topology::Topology;

use super::*;

const EXAMPLES: [&str; 4] = [
    include_str!("../../../../examples/barton.yaml"),
    include_str!("../../../../examples/static.yaml"),
    include_str!("../../../../examples/lab.yaml"),
    include_str!("../../../../examples/domino.yaml"),
];

fn topology(text: &str) -> Topology {
    medic_topology::load::parse_str(Path::new("t.yaml"), text, "a topology")
        .into_result()
        .unwrap()
}

/// Every event a topology's plans start from: each machine lost, each server's process dead,
/// each shard switched over.
fn events(top: &Topology) -> Vec<Event> {
    let mut out: Vec<Event> = top
        .machines
        .iter()
        .map(|m| Event::MachineLost {
            machine: m.value.name.value.clone(),
        })
        .collect();
    for s in top.shards.iter().map(|s| &s.value) {
        for m in Topology::shard_machines(s) {
            out.push(Event::ProcessDied {
                shard: s.name.value.clone(),
                machine: m.to_owned(),
            });
        }
        out.push(Event::Switchover {
            shard: s.name.value.clone(),
            to: None,
        });
        for m in Topology::shard_machines(s).skip(1) {
            out.push(Event::StaleMaster {
                shard: s.name.value.clone(),
                machine: m.to_owned(),
            });
        }
    }
    out
}

/// Every plan of every example's events that can be made.
fn plans() -> Vec<(Event, Plan)> {
    let mut out = Vec::new();
    for text in EXAMPLES {
        let top = topology(text);
        let state = ObservedState::assumed(&top);
        for event in events(&top) {
            if let Ok(plan) = plan_recovery(&top, &state, &event, "rec-1") {
                out.push((event, plan));
            }
        }
    }
    out
}

/// What a server line says: in maintenance or not, and where.
type Line = (Option<bool>, Option<(Addr, Option<u16>)>);

fn apply(lines: &mut BTreeMap<String, Line>, a: &Action) {
    let key = |s: &ServerRef| s.to_string();
    match a {
        Action::FenceServer { server, .. } => lines.entry(key(server)).or_default().0 = Some(false),
        Action::ActivateServer { server, .. } => {
            lines.entry(key(server)).or_default().0 = Some(true)
        }
        Action::SetServerAddress {
            server,
            address,
            port,
            ..
        } => lines.entry(key(server)).or_default().1 = Some((address.clone(), Some(*port))),
        Action::PersistProxyConfig { servers, .. } => {
            for s in servers {
                let line = lines.entry(key(&s.server)).or_default();
                if s.enabled.is_some() {
                    line.0 = s.enabled;
                }
                if let Some(a) = &s.address {
                    line.1 = Some((a.clone(), s.port));
                }
            }
        }
        _ => {}
    }
}

fn proxy_of(a: &Action) -> Option<&str> {
    match a {
        Action::FenceServer { proxy, .. }
        | Action::ActivateServer { proxy, .. }
        | Action::SetServerAddress { proxy, .. }
        | Action::PersistProxyConfig { proxy, .. } => Some(&proxy.machine),
        _ => None,
    }
}

/// Each write leaves its proxy's haproxy.cfg saying what its runtime says at that point, and
/// no runtime change is left unwritten at the end of a plan.
#[test]
fn every_runtime_change_is_written_into_haproxy_cfg_by_a_later_step() {
    let all = plans();
    assert!(all.len() > 20, "only {} plans", all.len());
    for (event, plan) in all {
        let mut runtime: BTreeMap<String, BTreeMap<String, Line>> = BTreeMap::new();
        let mut config: BTreeMap<String, BTreeMap<String, Line>> = BTreeMap::new();
        for step in &plan.steps {
            let Some(proxy) = proxy_of(&step.action) else {
                continue;
            };
            if let Action::PersistProxyConfig { .. } = step.action {
                let c = config.entry(proxy.to_owned()).or_default();
                apply(c, &step.action);
                assert_eq!(
                    Some(&*c),
                    runtime.get(proxy),
                    "{event}: step {} leaves {proxy}'s haproxy.cfg unlike its runtime",
                    step.index
                );
            } else {
                apply(runtime.entry(proxy.to_owned()).or_default(), &step.action);
            }
        }
        assert_eq!(config, runtime, "{event}: runtime changes left unwritten");
    }
}

/// No write between a fence and the promotion after it, nor between a promotion and the
/// activation after it, nor while writes are paused or before a fenced master's demotion:
/// the failover path waits for no file write.
#[test]
fn no_haproxy_cfg_write_lies_on_the_failover_path() {
    for (event, plan) in plans() {
        let kinds: Vec<&str> = plan.steps.iter().map(|s| s.action.kind()).collect();
        for (k, kind) in kinds.iter().enumerate() {
            if *kind != "promote" {
                continue;
            }
            let from = kinds[..k].iter().rposition(|x| *x == "fence").unwrap_or(k);
            let to = kinds[k..]
                .iter()
                .position(|x| *x == "activate")
                .map_or(k, |a| k + a);
            assert!(
                !kinds[from..=to].contains(&"persist"),
                "{event}: a haproxy.cfg write on the failover path: {kinds:?}"
            );
        }
        for (k, step) in plan.steps.iter().enumerate() {
            // A pause holds the old master's writes until its unpause; a fenced server
            // that answers may be a writable master until its `REPLICAOF`.
            let until = match &step.action {
                    Action::PauseWrites { server, .. } => plan.steps[k..].iter().position(
                        |s| matches!(&s.action, Action::Unpause { server: u } if u == server),
                    ),
                    Action::FenceServer { server, .. } => plan.steps[k..].iter().position(|s| {
                        matches!(&s.action, Action::ReplicaOf { server: r, .. }
                            if r.machine == server.server && medic_topology::adopt::default_shard_backend(&r.shard) == server.backend)
                    }),
                    _ => None,
                };
            // (A server restarted or replaced first was not writable meanwhile.)
            let restarted = |len: usize| {
                kinds[k..k + len]
                    .iter()
                    .any(|x| matches!(*x, "playbook" | "launch" | "terminate"))
            };
            if let Some(len) = until.filter(|len| !restarted(*len)) {
                assert!(
                    !kinds[k..k + len].contains(&"persist"),
                    "{event}: a haproxy.cfg write while step {} holds: {kinds:?}",
                    step.index
                );
            }
        }
    }
}
