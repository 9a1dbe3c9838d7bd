//! What the controller has observed: where each machine is, and who is master of each shard.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use medic_topology::{Provider, Topology};

/// The world as last observed. The planner reads it and never changes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedState {
    pub machines: BTreeMap<String, MachineState>,
    pub shards: BTreeMap<String, ShardState>,
    /// Each service's roles now (`services` in the topology).
    #[serde(default)]
    pub services: BTreeMap<String, ServiceState>,
}

/// Who is a service's primary now, and which machines were failed away from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    pub primary: String,
    /// Bumped by every change of primary.
    #[serde(default)]
    pub generation: u64,
    /// Machines failed away from that have not rejoined: not standbys until their
    /// `on_demote` hook has run (they may still believe they are the primary).
    #[serde(default)]
    pub out: std::collections::BTreeSet<String>,
    /// Machines failing the service's checks as last seen (the controller keeps this): a
    /// standby here is not promoted.
    #[serde(default)]
    pub down: std::collections::BTreeSet<String>,
    /// Each machine's WAL position (bytes) as last seen by a check that reports one (a
    /// `postgres` check; the controller keeps this): the most advanced standby is promoted,
    /// and none further behind the primary than `policy.max_promotion_lag_bytes`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub positions: std::collections::BTreeMap<String, u64>,
    /// Machines besides the primary whose data store answered writable (not in recovery) at
    /// their last check (the controller keeps this; a check it did not answer clears it).
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub writable: std::collections::BTreeSet<String>,
    /// The machine whose PostgreSQL medic's own `pg-promote` step was asked to promote, in a
    /// recovery that failed at that step (the controller keeps this), until a primary is
    /// recorded: its `pg_promote()` may have finished after the step gave up. Answering
    /// writable, it is the one a failover records, never another promoted beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoting: Option<String>,
    /// Machines whose PostgreSQL medic's own `pg-stop` fenced and no `pg-rejoin` has made a
    /// standby since: started again by something else, such a server answers in recovery,
    /// on its own timeline — passing its checks is not enough to count as a standby.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub fenced: std::collections::BTreeSet<String>,
}

impl ServiceState {
    /// A server besides `machine` that may be a primary: one whose promotion may still be
    /// under way (`promoting`), else one seen writable. Medic then makes no other primary.
    pub fn other_primary(&self, machine: &str) -> Option<&str> {
        self.promoting.as_deref().or_else(|| {
            self.writable
                .iter()
                .map(String::as_str)
                .find(|m| *m != machine)
        })
    }

    /// Whether the machine medic's failed promotion step was asked to promote (not `old`,
    /// not failed away from) answered writable at its last check: promoted after all, and
    /// not recorded.
    pub fn promoted_unrecorded(&self, old: &str) -> bool {
        self.promoting
            .as_deref()
            .is_some_and(|m| m != old && self.writable.contains(m) && !self.out.contains(m))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineState {
    /// The current address; `None` while unknown (discovered by tags at run time).
    pub address: Option<IpAddr>,
    /// The cloud's id for the machine's current instance, when known.
    pub instance_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardState {
    /// The machine whose server is master now (roles move with every failover).
    pub master: String,
    /// The master's replication offset when last seen.
    pub master_offset: Option<u64>,
    pub replicas: Vec<ReplicaState>,
    /// Bumped by every change of master: the newest record of who is master wins, and a
    /// server that was master in an older generation is never adopted again.
    #[serde(default)]
    pub generation: u64,
    /// For each proxy, the shard's machines it has no server for in the shard's backend, as
    /// the controller's reconcile last read it (a topology reload added a replica that the
    /// proxy's haproxy.cfg does not have yet): a failover prefers a replica every proxy can
    /// route to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub missing_on: BTreeMap<String, BTreeSet<String>>,
}

impl ShardState {
    /// The proxies that have no server for `machine` in the shard's backend, as last read.
    pub fn lacking(&self, machine: &str) -> Vec<&str> {
        self.missing_on
            .iter()
            .filter(|(_, m)| m.contains(machine))
            .map(|(p, _)| p.as_str())
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaState {
    pub machine: String,
    /// The replica's replication offset when last seen; `None` if never seen in sync.
    pub offset: Option<u64>,
}

impl ObservedState {
    /// The state a freshly set-up deployment is in: roles as the topology says, every replica
    /// in sync, addresses as written (or unknown). `medic plan` plans against this.
    pub fn assumed(top: &Topology) -> Self {
        let machines = top
            .machines
            .iter()
            .map(|m| {
                let m = &m.value;
                let address = m.address.as_ref().map(|a| a.value).or_else(|| {
                    // The lab hands out addresses in file order; show them, as the lab will.
                    // (The monitor is this host: the lab launches no machine for it.)
                    match &top.provider.value {
                        Provider::Local(l) if m.role.value != medic_topology::Role::Monitor => {
                            lab_address(top, &l.subnet, &m.name.value)
                        }
                        _ => None,
                    }
                });
                (
                    m.name.value.clone(),
                    MachineState {
                        address,
                        instance_id: None,
                    },
                )
            })
            .collect();
        let shards = top
            .shards
            .iter()
            .map(|s| {
                let s = &s.value;
                let replicas = s
                    .replicas
                    .iter()
                    .map(|r| ReplicaState {
                        machine: r.value.clone(),
                        offset: Some(0),
                    })
                    .collect();
                (
                    s.name.value.clone(),
                    ShardState {
                        master: s.master.value.clone(),
                        master_offset: Some(0),
                        replicas,
                        generation: 0,
                        missing_on: Default::default(),
                    },
                )
            })
            .collect();
        let services = top
            .services
            .iter()
            .map(|s| {
                (
                    s.value.name.value.clone(),
                    ServiceState {
                        primary: s.value.primary.value.clone(),
                        generation: 0,
                        out: Default::default(),
                        down: Default::default(),
                        positions: Default::default(),
                        writable: Default::default(),
                        promoting: None,
                        fenced: Default::default(),
                    },
                )
            })
            .collect();
        ObservedState {
            machines,
            shards,
            services,
        }
    }

    /// The state before anything exists: roles as the topology says, no address known (each
    /// is learned when its machine is launched). What `Event::Bootstrap` plans against.
    pub fn empty(top: &Topology) -> Self {
        let mut s = Self::assumed(top);
        for m in s.machines.values_mut() {
            m.address = None;
        }
        s
    }

    pub fn address(&self, machine: &str) -> Option<IpAddr> {
        self.machines.get(machine).and_then(|m| m.address)
    }

    /// Every machine whose address is known, with it.
    pub fn addresses(&self) -> std::collections::BTreeMap<String, IpAddr> {
        self.machines
            .iter()
            .filter_map(|(m, s)| Some((m.clone(), s.address?)))
            .collect()
    }

    /// The shards whose master is on `machine` now.
    pub fn mastered_by<'a>(
        &'a self,
        machine: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a ShardState)> {
        self.shards.iter().filter(move |(_, s)| s.master == machine)
    }
}

/// What a finished step learned, for the state and for later steps: the journal keeps it, so a
/// controller restarted in the middle of a recovery knows what the steps before did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOutput {
    /// A launch: the new instance's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// A launch: the new instance's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// A promotion or a sync wait: the server's replication offset at that moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// A proxy change not made because the proxy's runtime API did not answer: why. The
    /// recovery that skipped something is not `completed`, and the proxy is repaired when it
    /// answers again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// A fence at the source: the instance was terminated (and is gone).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminated: bool,
}

impl ObservedState {
    /// A machine's instance is terminated: no instance, and its servers hold nothing until
    /// they have synced again.
    fn instance_gone(&mut self, machine: &str) {
        if let Some(m) = self.machines.get_mut(machine) {
            m.instance_id = None;
        }
        for shard in self.shards.values_mut() {
            for r in shard.replicas.iter_mut().filter(|r| r.machine == machine) {
                r.offset = None;
            }
        }
    }

    /// The state after `action` succeeded with `output`. Pure: replaying a journal's finished
    /// steps over the state from before a recovery gives the state after them.
    pub fn apply(&mut self, action: &crate::Action, output: &StepOutput) {
        use crate::Action;
        match action {
            Action::PromoteReplica { server, offset, .. } => {
                let Some(shard) = self.shards.get_mut(&server.shard) else {
                    return;
                };
                if shard.master != server.machine {
                    let old = std::mem::replace(&mut shard.master, server.machine.clone());
                    shard.generation += 1;
                    shard.replicas.retain(|r| r.machine != server.machine);
                    // The old master comes back only as a replica, resynced before it counts.
                    shard.replicas.push(ReplicaState {
                        machine: old,
                        offset: None,
                    });
                }
                shard.master_offset = output.offset.or(Some(*offset));
            }
            Action::ReplicaOf { server, .. } => {
                if let Some(shard) = self.shards.get_mut(&server.shard)
                    && shard.master != server.machine
                {
                    // Pointed at a (new) master, it holds nothing certain until it is seen
                    // linked again: not a candidate for promotion meanwhile.
                    match shard
                        .replicas
                        .iter_mut()
                        .find(|r| r.machine == server.machine)
                    {
                        Some(r) => r.offset = None,
                        None => shard.replicas.push(ReplicaState {
                            machine: server.machine.clone(),
                            offset: None,
                        }),
                    }
                }
            }
            Action::WaitInSync { server, .. } => {
                if let Some(r) = self
                    .shards
                    .get_mut(&server.shard)
                    .and_then(|s| s.replicas.iter_mut().find(|r| r.machine == server.machine))
                {
                    r.offset = Some(output.offset.unwrap_or(0));
                }
            }
            Action::StopPostgres {
                service, machine, ..
            } => {
                if let Some(s) = self.services.get_mut(service) {
                    s.fenced.insert(machine.clone());
                }
            }
            Action::RejoinPostgres {
                service, machine, ..
            }
            | Action::StartPostgres {
                service, machine, ..
            } => {
                if let Some(s) = self.services.get_mut(service) {
                    s.fenced.remove(machine);
                }
            }
            Action::FenceAtSource { machine, .. } if output.terminated => {
                self.instance_gone(machine);
            }
            Action::TerminateInstance { machine, .. } => self.instance_gone(machine),
            Action::ServiceRole {
                service,
                machine,
                role,
            } => {
                let Some(s) = self.services.get_mut(service) else {
                    return;
                };
                match role {
                    crate::ServiceRole::Primary if s.primary != *machine => {
                        s.writable.remove(machine);
                        s.promoting = None;
                        let old = std::mem::replace(&mut s.primary, machine.clone());
                        s.generation += 1;
                        s.out.insert(old);
                        s.out.remove(machine);
                    }
                    crate::ServiceRole::Primary => s.promoting = None,
                    crate::ServiceRole::Standby | crate::ServiceRole::Active => {
                        s.out.remove(machine);
                    }
                    crate::ServiceRole::Inactive => {
                        s.out.insert(machine.clone());
                    }
                    crate::ServiceRole::Out => {
                        if s.primary != *machine {
                            s.out.insert(machine.clone());
                        }
                    }
                }
            }
            Action::LaunchInstance { spec } => {
                let m = self
                    .machines
                    .entry(spec.machine.clone())
                    .or_insert(MachineState {
                        address: None,
                        instance_id: None,
                    });
                if output.address.is_some() {
                    m.address = output.address;
                }
                if output.instance_id.is_some() {
                    m.instance_id = output.instance_id.clone();
                }
            }
            _ => {}
        }
    }
}

/// The address the lab gives `machine`: `.10` onward in file order, `.1` being the bridge.
pub fn lab_address(top: &Topology, subnet: &str, machine: &str) -> Option<IpAddr> {
    let prefix = medic_topology::validate::parse_lab_subnet(subnet)?;
    let index = top
        .machines
        .iter()
        .position(|m| m.value.name.value == machine)?;
    let host = u8::try_from(10 + index).ok().filter(|h| *h < 255)?;
    Some(IpAddr::from([prefix[0], prefix[1], prefix[2], host]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, Addr, RedisServer};

    fn state() -> ObservedState {
        let mut shards = BTreeMap::new();
        shards.insert(
            "r1".to_owned(),
            ShardState {
                master: "a".into(),
                master_offset: Some(100),
                replicas: vec![ReplicaState {
                    machine: "b".into(),
                    offset: Some(90),
                }],
                generation: 0,
                missing_on: Default::default(),
            },
        );
        ObservedState {
            machines: BTreeMap::new(),
            shards,
            services: BTreeMap::new(),
        }
    }

    fn server(machine: &str) -> RedisServer {
        RedisServer {
            shard: "r1".into(),
            machine: machine.into(),
            address: Addr::Of(machine.into()),
            port: 9001,
        }
    }

    #[test]
    fn a_promotion_swaps_roles_and_the_old_master_is_not_in_sync() {
        let mut s = state();
        let promote = Action::PromoteReplica {
            server: server("b"),
            offset: 90,
            lag_bytes: 10,
        };
        s.apply(&promote, &StepOutput::default());
        let shard = &s.shards["r1"];
        assert_eq!(shard.master, "b");
        assert_eq!(
            shard.replicas,
            vec![ReplicaState {
                machine: "a".into(),
                offset: None
            }]
        );
        // Twice is once.
        let before = s.clone();
        s.apply(&promote, &StepOutput::default());
        assert_eq!(s, before);
        // Synced again, it counts.
        s.apply(
            &Action::WaitInSync {
                server: server("a"),
                master: Addr::Of("b".into()),
                master_port: 9001,
                timeout_ms: 1,
            },
            &StepOutput {
                offset: Some(500),
                ..StepOutput::default()
            },
        );
        assert_eq!(s.shards["r1"].replicas[0].offset, Some(500));
    }

    #[test]
    fn a_launch_records_the_new_address_and_a_terminate_forgets_the_instance() {
        let mut s = state();
        s.apply(
            &Action::TerminateInstance {
                machine: "b".into(),
                instance_id: Some("i-1".into()),
            },
            &StepOutput::default(),
        );
        assert_eq!(s.shards["r1"].replicas[0].offset, None);
        let spec = crate::LaunchSpec {
            machine: "b".into(),
            role: medic_topology::Role::Redis,
            ami: "redis".into(),
            image_id: None,
            instance_types: vec![],
            subnet: None,
            security_groups: vec![],
            key_pair: None,
            instance_profile: None,
            tags: BTreeMap::new(),
            client_token: "t-1".into(),
            from_spares: false,
        };
        let ip: IpAddr = "10.0.0.9".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        s.apply(
            &Action::LaunchInstance { spec },
            &StepOutput {
                address: Some(ip),
                instance_id: Some("i-2".into()),
                ..StepOutput::default()
            },
        );
        assert_eq!(s.address("b"), Some(ip));
        assert_eq!(s.machines["b"].instance_id.as_deref(), Some("i-2"));
    }
}
