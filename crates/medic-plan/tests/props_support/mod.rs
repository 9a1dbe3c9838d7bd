//! The planner property tests' inputs: the deployments, random observed states and events, and
//! the oracles the plans are held to.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::LazyLock;

use medic_plan::describe::describe;
use medic_plan::{Event, MachineState, ObservedState, Plan, ReplicaState, ShardState};
use medic_playbook::Playbooks;
use medic_topology::diag::Diagnostics;
use medic_topology::{Remedy, Topology, load_topology, unspanned};
use proptest::prelude::*;

/// A deployment the cases plan against, with the playbooks its plans are rendered with.
pub struct Deployment {
    pub name: &'static str,
    pub topology: Topology,
    pub playbooks: Playbooks,
}

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn example(name: &'static str, file: &str) -> Deployment {
    let loaded = load_topology(&repo().join("examples").join(file))
        .unwrap_or_else(|e| panic!("{file}: {:?}", e.diagnostics));
    let playbooks = Playbooks::load(&loaded.playbook_dir(), ["redis", "haproxy", "app-proxy"])
        .unwrap_or_else(|e| panic!("playbooks: {e:?}"));
    Deployment {
        name,
        topology: loaded.topology,
        playbooks,
    }
}

/// The aws example grown to four redis machines, three shards (one of them with three
/// replicas, one mastered elsewhere) and three proxies: more ways for roles to be shuffled.
fn wide() -> Deployment {
    let text = std::fs::read_to_string(repo().join("examples/barton.yaml")).unwrap_or_default();
    let redis2 = "  - {name: redis2, role: redis, ami: redis, instance_type: r6i.large, fallback_instance_types: [r5.large, m6i.large], address: 10.0.2.11}\n";
    let haproxy2 = "  - {name: haproxy2, role: haproxy, ami: haproxy, instance_type: c6i.large, fallback_instance_types: [c5.large], address: 10.0.2.21}\n";
    let replace = [
        (
            redis2,
            format!(
                "{redis2}  - {{name: redis3, role: redis, ami: redis, instance_type: r6i.large, address: 10.0.1.12}}\n  - {{name: redis4, role: redis, ami: redis, instance_type: r6i.large, address: 10.0.2.12}}\n"
            ),
        ),
        (
            haproxy2,
            format!(
                "{haproxy2}  - {{name: haproxy3, role: haproxy, ami: haproxy, instance_type: c6i.large, address: 10.0.1.22}}\n"
            ),
        ),
        (
            "  - {name: r9001, port: 9001, master: redis1, replicas: [redis2]}\n",
            "  - {name: r9001, port: 9001, master: redis1, replicas: [redis2, redis3, redis4]}\n"
                .to_owned(),
        ),
        (
            "  - {name: r9002, port: 9002, master: redis1, replicas: [redis2]}\n",
            "  - {name: r9002, port: 9002, master: redis1, replicas: [redis2]}\n  - {name: r9003, port: 9003, master: redis3, replicas: [redis4, redis1]}\n"
                .to_owned(),
        ),
        (
            "  machines: [haproxy1, haproxy2]\n",
            "  machines: [haproxy1, haproxy2, haproxy3]\n".to_owned(),
        ),
        (
            "    - {listen: 8002, shard: r9002}\n",
            "    - {listen: 8002, shard: r9002}\n    - {listen: 8003, shard: r9003}\n".to_owned(),
        ),
        (
            "      - {listen: 7002, shard: r9002}\n",
            "      - {listen: 7002, shard: r9002}\n      - {listen: 7003, shard: r9003}\n"
                .to_owned(),
        ),
    ];
    let mut grown = text;
    for (from, to) in replace {
        assert!(grown.contains(from), "barton.yaml no longer has `{from}`");
        grown = grown.replacen(from, &to, 1);
    }
    let file = Path::new("wide.yaml");
    let parsed = medic_topology::load::parse_str::<Topology>(file, &grown, "a topology");
    let topology = parsed
        .into_result()
        .unwrap_or_else(|e| panic!("wide: {e:?}"));
    let mut d = Diagnostics::new(file);
    medic_topology::validate::validate(&topology, &mut d);
    assert!(!d.has_errors(), "wide: {:?}", d.into_sorted());
    Deployment {
        name: "wide",
        topology,
        playbooks: example("barton", "barton.yaml").playbooks,
    }
}

pub static DEPLOYMENTS: LazyLock<Vec<Deployment>> = LazyLock::new(|| {
    vec![
        example("barton", "barton.yaml"),
        example("lab", "lab.yaml"),
        example("static", "static.yaml"),
        wide(),
    ]
});

/// One input to the planner: a deployment with a random policy, a state and an event.
pub struct Case {
    pub which: usize,
    /// The deployment's topology with this case's remediation and lag limit.
    pub top: Topology,
    pub state: ObservedState,
    pub event: Event,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.top.policy;
        f.debug_struct("Case")
            .field("deployment", &DEPLOYMENTS[self.which].name)
            .field(
                "remediation",
                &p.remediation.iter().map(|r| r.value).collect::<Vec<_>>(),
            )
            .field("max_promotion_lag_bytes", &p.max_promotion_lag_bytes.value)
            .field("state", &self.state)
            .field("event", &self.event)
            .finish()
    }
}

/// Offsets: small, about the default lag limit, anywhere.
fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..2_000,
        (1u64 << 20) - 2_000..(1u64 << 20) + 2_000,
        any::<u64>(),
    ]
}

/// A replica's offset from its master's: none (never seen in sync), or some distance behind
/// (now and then ahead: a master seen before the replica's last check).
fn replica_offset(master: Option<u64>) -> impl Strategy<Value = Option<u64>> {
    let distance = prop_oneof![Just(0u64), offset()];
    prop_oneof![
        1 => Just(None),
        4 => (distance, prop::bool::weighted(0.15)).prop_map(move |(d, ahead)| Some(match master {
            Some(m) if ahead => m.saturating_add(d),
            Some(m) => m.saturating_sub(d),
            None => d,
        })),
    ]
}

/// One shard's roles: a random master among its machines, the others as replicas in a random
/// order, now and then one missing from the state (not seen since it was lost).
fn shard_state(machines: Vec<String>) -> impl Strategy<Value = ShardState> {
    let n = machines.len();
    (0..n, prop::option::weighted(0.85, offset())).prop_flat_map(move |(master, m_off)| {
        let machines = machines.clone();
        let replicas = prop::collection::vec(
            (
                replica_offset(m_off),
                any::<u8>(),
                prop::bool::weighted(0.9),
            ),
            n - 1,
        );
        replicas.prop_map(move |rs| {
            let others = machines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != master)
                .map(|(_, m)| m);
            let mut listed: Vec<(u8, ReplicaState)> = others
                .zip(rs)
                .filter(|(_, (_, _, kept))| *kept)
                .map(|(m, (offset, key, _))| {
                    (
                        key,
                        ReplicaState {
                            machine: m.clone(),
                            offset,
                        },
                    )
                })
                .collect();
            listed.sort_by_key(|(k, _)| *k);
            ShardState {
                master: machines[master].clone(),
                master_offset: m_off,
                replicas: listed.into_iter().map(|(_, r)| r).collect(),
                generation: 0,
                missing_on: Default::default(),
            }
        })
    })
}

fn machine_state(i: usize) -> impl Strategy<Value = MachineState> {
    let host = u8::try_from(i + 1).unwrap_or(250);
    (any::<bool>(), prop::bool::weighted(0.3)).prop_map(move |(known, instance)| MachineState {
        address: known.then(|| IpAddr::from([10, 9, 0, host])),
        instance_id: instance.then(|| format!("i-0{host:02x}")),
    })
}

fn state(top: &Topology) -> impl Strategy<Value = ObservedState> {
    let machines: Vec<_> = top
        .machines
        .iter()
        .enumerate()
        .map(|(i, m)| machine_state(i).prop_map(move |s| (m.value.name.value.clone(), s)))
        .collect();
    let shards: Vec<_> = top
        .shards
        .iter()
        .map(|s| {
            let name = s.value.name.value.clone();
            let on = Topology::shard_machines(&s.value)
                .map(str::to_owned)
                .collect();
            shard_state(on).prop_map(move |st| (name.clone(), st))
        })
        .collect();
    (machines, shards).prop_map(|(m, s)| ObservedState {
        machines: m.into_iter().collect(),
        shards: s.into_iter().collect(),
        services: Default::default(),
    })
}

/// Mostly events that make sense for the state, now and then one naming nothing known.
fn event(top: &Topology) -> impl Strategy<Value = Event> {
    let machines: Vec<String> = top
        .machines
        .iter()
        .map(|m| m.value.name.value.clone())
        .collect();
    let shards: Vec<(String, Vec<String>)> = top
        .shards
        .iter()
        .map(|s| {
            let on = Topology::shard_machines(&s.value)
                .map(str::to_owned)
                .collect();
            (s.value.name.value.clone(), on)
        })
        .collect();
    let pick = |v: &[String], i: usize| v[i % v.len()].clone();
    let (m1, m2, s1, s2, s3, s4) = (
        machines.clone(),
        machines.clone(),
        shards.clone(),
        shards.clone(),
        shards.clone(),
        shards,
    );
    let known = machines.len();
    prop_oneof![
        4 => prop_oneof![19 => (0..known).prop_map(move |i| m1[i].clone()), 1 => Just("nosuch".to_owned())]
            .prop_map(|machine| Event::MachineLost { machine }),
        3 => (any::<usize>(), any::<usize>(), prop::bool::weighted(0.1)).prop_map(
            move |(s, m, anywhere)| {
                let (shard, on) = &s1[s % s1.len()];
                Event::ProcessDied {
                    shard: shard.clone(),
                    machine: if anywhere { pick(&m2, m) } else { pick(on, m) },
                }
            }
        ),
        2 => (any::<usize>(), any::<usize>()).prop_map(move |(s, m)| {
            let (shard, on) = &s2[s % s2.len()];
            Event::StaleMaster { shard: shard.clone(), machine: pick(on, m) }
        }),
        1 => (any::<usize>(), any::<usize>()).prop_map(move |(s, m)| {
            let (shard, on) = &s4[s % s4.len()];
            Event::FollowMaster { shard: shard.clone(), machine: pick(on, m) }
        }),
        2 => (any::<usize>(), prop::option::of(any::<usize>())).prop_map(move |(s, to)| {
            let (shard, on) = &s3[s % s3.len()];
            Event::Switchover { shard: shard.clone(), to: to.map(|m| pick(on, m)) }
        }),
        1 => Just(Event::Bootstrap),
    ]
}

fn policy() -> impl Strategy<Value = (Vec<Remedy>, Option<u64>)> {
    let remedies = prop_oneof![3 => Just(0b111u8), 1 => 0u8..8].prop_map(|mask| {
        [
            Remedy::RestartProcess,
            Remedy::Failover,
            Remedy::ReplaceMachine,
        ]
        .into_iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, r)| r)
        .collect()
    });
    // None: the deployment's own limit.
    let lag = prop_oneof![
        Just(None),
        Just(Some(0)),
        Just(Some(1_000)),
        Just(Some(u64::MAX)),
    ];
    (remedies, lag)
}

pub fn case() -> impl Strategy<Value = Case> {
    (0..DEPLOYMENTS.len()).prop_flat_map(|which| {
        let top = &DEPLOYMENTS[which].topology;
        (state(top), event(top), policy()).prop_map(move |(state, event, (remedies, lag))| {
            let mut top = DEPLOYMENTS[which].topology.clone();
            top.policy.remediation = remedies.into_iter().map(unspanned).collect();
            if let Some(lag) = lag {
                top.policy.max_promotion_lag_bytes = unspanned(lag);
            }
            Case {
                which,
                top,
                state,
                event,
            }
        })
    })
}

/// Whether the planner should plan (`Ok`) or refuse the event (`Err`), from its documentation.
pub fn outcome_expected(c: &Case) -> Result<(), ()> {
    let known = |m: &str| c.top.machine(m).is_some();
    let sane = match &c.event {
        Event::MachineLost { machine } => known(machine),
        Event::ProcessDied { shard, machine } => {
            known(machine)
                && c.state.shards.get(shard).is_some_and(|st| {
                    st.master == *machine || st.replicas.iter().any(|r| r.machine == *machine)
                })
        }
        Event::StaleMaster { shard, machine } => {
            known(machine) && c.state.shards[shard].master != *machine
        }
        Event::FollowMaster { shard, machine } => {
            known(machine)
                && c.state.shards[shard]
                    .replicas
                    .iter()
                    .any(|r| r.machine == *machine)
        }
        // These cases have no services: a service's events name none the planner knows.
        Event::ServiceDown { .. } | Event::ServiceRejoin { .. } | Event::ServiceFollow { .. } => {
            false
        }
        Event::Switchover { shard, to } => {
            let st = &c.state.shards[shard];
            match to {
                Some(to) => st
                    .replicas
                    .iter()
                    .any(|r| r.machine == *to && r.offset.is_some()),
                None => st.replicas.iter().any(|r| r.offset.is_some()),
            }
        }
        Event::Bootstrap => true,
        // Not generated: these cases keep no spares.
        Event::Spare { .. } => false,
    };
    if sane { Ok(()) } else { Err(()) }
}

/// The replica that may replace `lost` as master: seen in sync, the largest offset (the first
/// listed on a tie), no further behind than `max_lag`. (machine, offset, lag).
pub fn oracle_best(st: &ShardState, lost: &str, max_lag: u64) -> Option<(String, u64, u64)> {
    let mut best: Option<(&str, u64)> = None;
    for r in st.replicas.iter().filter(|r| r.machine != lost) {
        if let Some(o) = r.offset
            && best.is_none_or(|(_, b)| o > b)
        {
            best = Some((&r.machine, o));
        }
    }
    let (machine, offset) = best?;
    let lag = st.master_offset.map_or(0, |m| m.saturating_sub(offset));
    (lag <= max_lag).then(|| (machine.to_owned(), offset, lag))
}

pub fn proxies_of(top: &Topology) -> Vec<String> {
    top.proxy_machines().map(str::to_owned).collect()
}

/// What `medic plan --format json` prints: the plan and each step as described.
pub fn views_document(c: &Case, plan: &Plan) -> serde_json::Value {
    let playbooks = &DEPLOYMENTS[c.which].playbooks;
    let views: Vec<_> = plan.steps.iter().map(|s| describe(s, playbooks)).collect();
    serde_json::json!({ "plan": plan, "views": views })
}
