//! What the controller has observed: where each machine is, and who is master of each shard.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use medic_topology::{Provider, Topology};

/// The world as last observed. The planner reads it and never changes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedState {
    pub machines: BTreeMap<String, MachineState>,
    pub shards: BTreeMap<String, ShardState>,
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
                    match &top.provider.value {
                        Provider::Local(l) => lab_address(top, &l.subnet, &m.name.value),
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
                    },
                )
            })
            .collect();
        ObservedState { machines, shards }
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

    /// The shards whose master is on `machine` now.
    pub fn mastered_by<'a>(
        &'a self,
        machine: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a ShardState)> {
        self.shards.iter().filter(move |(_, s)| s.master == machine)
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
