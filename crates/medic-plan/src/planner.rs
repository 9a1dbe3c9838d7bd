//! The planner: `plan_recovery(topology, observed state, event) -> Plan`. Pure.
//!
//! # Guarantees (each is a test in this module)
//! - A lost master leaves every proxy (maint, sessions shut) before any replica is promoted.
//! - The replica promoted is the one with the largest replication offset; a replica further
//!   behind than `policy.max_promotion_lag_bytes`, or never seen in sync, is not promoted: the
//!   plan alerts and stops, and the lost machine is not terminated (its disk may hold the only
//!   copy of what the replicas missed).
//! - Every other replica of a shard whose replica is promoted (a failover or a switchover) is
//!   pointed at the new master once clients are routed to it, and waited for before the plan
//!   ends; the failed server is left to the steps that replace, restart or demote it.
//! - A dead master process is never restarted as a master: it comes back as a replica.
//! - A lost instance is terminated before its replacement is launched.
//! - Launch steps carry a token derived from the recovery id and the step number.

use std::collections::BTreeMap;

use medic_topology::{DnsProvider, Provider, Remedy, Role, Shard, Topology};

use crate::state::ObservedState;
use crate::step::*;
use crate::vars::{self, ServerRole, addr_of};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("unknown machine `{machine}`; expected one of {known}")]
    UnknownMachine { machine: String, known: String },
    #[error("unknown shard `{shard}`; expected one of {known}")]
    UnknownShard { shard: String, known: String },
    #[error("shard `{shard}` has no server on machine `{machine}`; its servers are on {on}")]
    NotOnMachine {
        shard: String,
        machine: String,
        on: String,
    },
    #[error("shard `{shard}` cannot be switched over: {reason}")]
    CannotSwitch { shard: String, reason: String },
    #[error("the observed state has no shard `{shard}`, which the topology defines")]
    StateMissingShard { shard: String },
}

/// Plans the recovery from `event`. `recovery` names this recovery (journal, tags, tokens).
pub fn plan_recovery(
    top: &Topology,
    state: &ObservedState,
    event: &Event,
    recovery: &str,
) -> Result<Plan, PlanError> {
    let mut p = Planner {
        top,
        state,
        recovery,
        steps: Vec::new(),
        new_masters: BTreeMap::new(),
    };
    match event {
        Event::MachineLost { machine } => {
            let role = p.role(machine)?;
            match role {
                Role::Redis => p.redis_machine_lost(machine)?,
                Role::Haproxy => p.haproxy_lost(machine),
                Role::App => p.app_lost(machine),
                Role::Monitor => p.alert(
                    AlertLevel::Critical,
                    format!("the monitor host {machine} is lost: nothing watches the deployment; start medic on another host"),
                ),
            }
        }
        Event::ProcessDied { shard, machine } => p.process_died(shard, machine)?,
        Event::StaleMaster { shard, machine } => p.stale_master(shard, machine)?,
        Event::Switchover { shard, to } => p.switchover(shard, to.as_deref())?,
        Event::Bootstrap => p.bootstrap(),
    }
    let steps = p
        .steps
        .into_iter()
        .enumerate()
        .map(|(i, action)| Step {
            index: i + 1,
            action,
        })
        .collect();
    Ok(Plan {
        recovery: recovery.to_owned(),
        topology: top.name.value.clone(),
        event: event.clone(),
        steps,
    })
}

struct Planner<'a> {
    top: &'a Topology,
    state: &'a ObservedState,
    recovery: &'a str,
    steps: Vec<Action>,
    /// Shards promoted earlier in this plan, and their new master.
    new_masters: BTreeMap<String, String>,
}

impl<'a> Planner<'a> {
    fn push(&mut self, a: Action) -> usize {
        self.steps.push(a);
        self.steps.len()
    }

    fn alert(&mut self, level: AlertLevel, message: String) {
        self.push(Action::Alert { level, message });
    }

    fn role(&self, machine: &str) -> Result<Role, PlanError> {
        self.top
            .machine(machine)
            .map(|m| m.role.value)
            .ok_or_else(|| PlanError::UnknownMachine {
                machine: machine.to_owned(),
                known: self
                    .top
                    .machines
                    .iter()
                    .map(|m| m.value.name.value.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    fn shard(&self, name: &str) -> Result<&'a Shard, PlanError> {
        self.top.shard(name).ok_or_else(|| PlanError::UnknownShard {
            shard: name.to_owned(),
            known: self
                .top
                .shards
                .iter()
                .map(|s| s.value.name.value.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    fn shard_state(&self, name: &str) -> Result<&'a crate::state::ShardState, PlanError> {
        self.state
            .shards
            .get(name)
            .ok_or_else(|| PlanError::StateMissingShard {
                shard: name.to_owned(),
            })
    }

    fn master_of(&self, shard: &str) -> Option<String> {
        self.new_masters
            .get(shard)
            .cloned()
            .or_else(|| self.state.shards.get(shard).map(|s| s.master.clone()))
    }

    /// The runtime APIs of every proxy machine.
    fn proxies(&self) -> Vec<ProxyApi> {
        let port = self.top.proxies.value.runtime_api.value.port.value;
        self.top
            .proxy_machines()
            .map(|m| ProxyApi {
                machine: m.to_owned(),
                address: addr_of(self.state, m),
                port,
            })
            .collect()
    }

    fn server(&self, shard: &Shard, machine: &str, address: Addr) -> RedisServer {
        RedisServer {
            shard: shard.name.value.clone(),
            machine: machine.to_owned(),
            address,
            port: shard.port.value,
        }
    }

    /// Every shard with a server on `machine` now, by observed state.
    fn shards_on(&self, machine: &str) -> Vec<&'a Shard> {
        self.top
            .shards
            .iter()
            .map(|s| &s.value)
            .filter(|s| {
                self.state.shards.get(&s.name.value).is_some_and(|st| {
                    st.master == machine || st.replicas.iter().any(|r| r.machine == machine)
                })
            })
            .collect()
    }

    /// Fences `lost`'s server of `shard` on every proxy, then promotes the best replica and
    /// routes the proxies to it. Returns false (after alerting) when no replica may be promoted.
    fn fail_over(&mut self, shard: &'a Shard, lost: &str) -> Result<bool, PlanError> {
        let name = &shard.name.value;
        let st = self.shard_state(name)?;
        if !self.top.policy.allows(Remedy::Failover) {
            self.alert(
                AlertLevel::Critical,
                format!("shard {name} lost its master {lost} and failover is not in policy.remediation: promote a replica by hand"),
            );
            return Ok(false);
        }
        // Largest offset wins; on a tie, the replica listed first.
        let best = st.replicas.iter().filter(|r| r.machine != lost).fold(
            None::<&crate::state::ReplicaState>,
            |best, r| match (best, r.offset) {
                (None, _) => Some(r),
                (Some(b), Some(o)) if b.offset.is_none_or(|bo| o > bo) => Some(r),
                (b, _) => b,
            },
        );
        let Some(best) = best else {
            self.alert(
                AlertLevel::Critical,
                format!("shard {name} lost its master {lost} and has no replica to promote"),
            );
            return Ok(false);
        };
        let Some(offset) = best.offset else {
            self.alert(
                AlertLevel::Critical,
                format!(
                    "shard {name} lost its master {lost}; replica {} was never seen in sync, so it is not promoted automatically",
                    best.machine
                ),
            );
            return Ok(false);
        };
        let lag = st.master_offset.map_or(0, |m| m.saturating_sub(offset));
        let max = self.top.policy.max_promotion_lag_bytes.value;
        if lag > max {
            self.alert(
                AlertLevel::Critical,
                format!(
                    "shard {name} lost its master {lost}; the best replica {} is {lag} bytes behind (policy.max_promotion_lag_bytes is {max}), so it is not promoted automatically",
                    best.machine
                ),
            );
            return Ok(false);
        }
        let server = self.server(shard, &best.machine, addr_of(self.state, &best.machine));
        self.push(Action::PromoteReplica {
            server,
            offset,
            lag_bytes: lag,
        });
        self.new_masters.insert(name.clone(), best.machine.clone());
        Ok(true)
    }

    fn activate_masters(&mut self, shards: &[&'a Shard]) {
        for shard in shards {
            let Some(master) = self.new_masters.get(&shard.name.value).cloned() else {
                continue;
            };
            for proxy in self.proxies() {
                let server = ServerRef {
                    backend: vars::proxy_backend(&shard.name.value),
                    server: master.clone(),
                };
                self.push(Action::ActivateServer { proxy, server });
            }
        }
    }

    /// Points every other replica of each shard promoted in this plan at its new master: they
    /// still follow the old one, and would never resync (their offsets, frozen, would even look
    /// in sync). Not `failed`'s server (the lost machine's, the dead master, the old master of a
    /// switchover), which later steps replace, restart or demote as a replica. Pushes the
    /// `REPLICAOF`s now, so the resyncs start as soon as clients are routed, and returns the
    /// waits for them to catch up, for the caller to push where nothing else waits on them.
    fn follow_new_masters(&mut self, shards: &[&'a Shard], failed: &str) -> Vec<Action> {
        let timeout_ms = self.top.policy.sync_timeout.value.as_millis() as u64;
        let mut waits = Vec::new();
        for shard in shards {
            let name = &shard.name.value;
            let Some(master) = self.new_masters.get(name).cloned() else {
                continue;
            };
            let Some(st) = self.state.shards.get(name) else {
                continue;
            };
            let master_addr = addr_of(self.state, &master);
            for r in st
                .replicas
                .iter()
                .filter(|r| r.machine != master && r.machine != failed)
            {
                let server = self.server(shard, &r.machine, addr_of(self.state, &r.machine));
                self.push(Action::ReplicaOf {
                    server: server.clone(),
                    master: master_addr.clone(),
                    master_port: shard.port.value,
                });
                waits.push(Action::WaitInSync {
                    server,
                    master: master_addr.clone(),
                    master_port: shard.port.value,
                    timeout_ms,
                });
            }
        }
        waits
    }

    /// `wait_sessions`: whether each fence waits until HAProxy shows no session left. Worth it
    /// where the server may still answer on an old session (a stale master); not for a lost
    /// machine, whose sessions hang on a silent peer and which is terminated anyway (a hung
    /// process that wakes up writes to a machine that no longer serves anyone).
    fn fence_on_proxies(&mut self, shard: &Shard, machine: &str, wait_sessions: bool) {
        for proxy in self.proxies() {
            let server = ServerRef {
                backend: vars::proxy_backend(&shard.name.value),
                server: machine.to_owned(),
            };
            self.push(Action::FenceServer {
                proxy,
                server,
                wait_sessions,
            });
        }
    }

    /// Whether a lost machine may be replaced; alerts and returns false if not.
    fn may_replace(&mut self, machine: &str, consequence: &str) -> bool {
        if !self.top.provider.value.can_launch() {
            self.alert(
                AlertLevel::Warning,
                format!("{machine} cannot be replaced: the static provider launches nothing; {consequence} until {machine} is back (then `medic recover {machine}`)"),
            );
            return false;
        }
        if !self.top.policy.allows(Remedy::ReplaceMachine) {
            self.alert(
                AlertLevel::Warning,
                format!("{machine} is not replaced: replace_machine is not in policy.remediation; {consequence}"),
            );
            return false;
        }
        true
    }

    /// Terminate, launch, wait for SSH. Returns the replacement's address reference.
    fn replace(&mut self, machine: &str) -> Addr {
        let instance_id = self
            .state
            .machines
            .get(machine)
            .and_then(|s| s.instance_id.clone());
        self.push(Action::TerminateInstance {
            machine: machine.to_owned(),
            instance_id,
        });
        self.launch(machine)
    }

    /// Launch and wait for SSH. Returns the new machine's address reference.
    fn launch(&mut self, machine: &str) -> Addr {
        let top = self.top;
        let m = top.machine(machine);
        let index = self.steps.len() + 1;
        let mut tags = BTreeMap::new();
        let (mut image_id, mut subnet, mut sgs, mut key_pair, mut profile) =
            (None, None, Vec::new(), None, None);
        let ami = m
            .and_then(|m| m.ami.as_ref())
            .map(|a| a.value.clone())
            .unwrap_or_default();
        if let Provider::Aws(aws) = &top.provider.value {
            tags.extend(aws.tags.clone());
            image_id = top
                .ami(&ami)
                .and_then(|a| a.image_ids.get(&aws.region))
                .map(|i| i.value.clone());
            subnet = m.and_then(|m| top.subnet_for(m));
            sgs = aws.security_groups.clone();
            key_pair = Some(aws.key_pair.clone());
            profile = aws.instance_profile.clone();
        }
        tags.insert("Name".to_owned(), format!("{}-{}", top.name.value, machine));
        tags.insert("medic:topology".to_owned(), top.name.value.clone());
        tags.insert("medic:machine".to_owned(), machine.to_owned());
        tags.insert("medic:recovery".to_owned(), self.recovery.to_owned());
        tags.insert("medic:step".to_owned(), index.to_string());
        let instance_types = m
            .map(|m| {
                m.instance_type
                    .iter()
                    .chain(m.fallback_instance_types.iter())
                    .map(|t| t.value.clone())
                    .collect()
            })
            .unwrap_or_default();
        let spec = LaunchSpec {
            machine: machine.to_owned(),
            role: m.map_or(Role::Redis, |m| m.role.value),
            ami,
            image_id,
            instance_types,
            subnet,
            security_groups: sgs,
            key_pair,
            instance_profile: profile,
            tags,
            client_token: client_token(self.recovery, index),
        };
        self.push(Action::LaunchInstance { spec });
        let address = Addr::Of(machine.to_owned());
        let port = m.map_or(22, |m| top.ssh_for(m).port);
        self.push(Action::WaitReachable {
            machine: machine.to_owned(),
            address: address.clone(),
            port,
            timeout_ms: top.policy.boot_timeout.value.as_millis() as u64,
        });
        address
    }

    /// UPSERTs every DNS record that lists `machine`, with `machine` at `address`.
    fn update_dns(&mut self, machine: &str, address: &Addr) {
        let Some(dns) = &self.top.dns else { return };
        let dns = &dns.value;
        let target = match &dns.provider.value {
            DnsProvider::Route53(r) => DnsTarget::Route53 {
                zone_id: r.zone_id.clone(),
                zone: r.zone.clone(),
            },
            DnsProvider::Rfc2136(r) => DnsTarget::Rfc2136 {
                server: r.server.to_string(),
                zone: r.zone.clone(),
                tsig_key: r.tsig_key.clone(),
            },
        };
        let ttl = u32::try_from(dns.ttl.value).unwrap_or(60);
        for record in self.top.dns_records_of(machine) {
            let values = record
                .machines
                .iter()
                .map(|m| {
                    if m.value == machine {
                        address.clone()
                    } else {
                        addr_of(self.state, &m.value)
                    }
                })
                .collect();
            self.push(Action::UpsertDns {
                target: target.clone(),
                name: record.name.value.clone(),
                ttl,
                values,
            });
        }
    }

    fn redis_machine_lost(&mut self, machine: &str) -> Result<(), PlanError> {
        let on = self.shards_on(machine);
        let mastered: Vec<&Shard> = on
            .iter()
            .copied()
            .filter(|s| {
                self.state
                    .shards
                    .get(&s.name.value)
                    .is_some_and(|st| st.master == machine)
            })
            .collect();
        self.push(Action::Unmonitor {
            target: MonitorTarget::Machine {
                machine: machine.to_owned(),
            },
        });
        // 1. Every server of the machine leaves every proxy before anything is promoted.
        for shard in &on {
            self.fence_on_proxies(shard, machine, false);
        }
        // 2. Promote, shard by shard — after fencing the machine at its source if a proxy
        //    could not be fenced (the step decides when it runs).
        let mut refused = Vec::new();
        let before = self.steps.len();
        for shard in &mastered {
            if !self.fail_over(shard, machine)? {
                refused.push(shard.name.value.clone());
            }
        }
        if let Some(at) = self.steps[before..]
            .iter()
            .position(|a| matches!(a, Action::PromoteReplica { .. }))
        {
            let instance_id = self
                .state
                .machines
                .get(machine)
                .and_then(|s| s.instance_id.clone());
            self.steps.insert(
                before + at,
                Action::FenceAtSource {
                    machine: machine.to_owned(),
                    instance_id,
                },
            );
        }
        // 3. Route each proxy to the new masters, then point the other replicas at them.
        self.activate_masters(&mastered);
        let waits = self.follow_new_masters(&mastered, machine);
        if !refused.is_empty() {
            self.alert(
                AlertLevel::Critical,
                format!(
                    "{machine} is left as it is (not terminated): shard {} has no master, and {machine}'s disk may hold the only copy of its latest writes",
                    refused.join(", ")
                ),
            );
            self.steps.extend(waits);
            return Ok(());
        }
        let names: Vec<&str> = on.iter().map(|s| s.name.value.as_str()).collect();
        if !self.may_replace(
            machine,
            &format!("shards {} run without that replica", names.join(", ")),
        ) {
            self.steps.extend(waits);
            return Ok(());
        }
        // 4. Replace the machine and make each of its servers a replica of the current master.
        let address = self.replace(machine);
        let servers: Vec<(&Shard, ServerRole)> = on
            .iter()
            .filter_map(|s| {
                self.master_of(&s.name.value)
                    .map(|m| (*s, ServerRole::ReplicaOf { machine: m }))
            })
            .collect();
        let vars = vars::redis_vars(self.top, self.state, machine, &address, &servers);
        self.push(Action::RunPlaybook {
            machine: machine.to_owned(),
            address: address.clone(),
            playbook: "redis".into(),
            vars,
        });
        self.rejoin_as_replicas(&servers, machine, &address);
        // 5. Register the new address with every proxy; as a replica it stays in maint.
        for (shard, _) in &servers {
            for proxy in self.proxies() {
                let server = ServerRef {
                    backend: vars::proxy_backend(&shard.name.value),
                    server: machine.to_owned(),
                };
                self.push(Action::SetServerAddress {
                    proxy,
                    server,
                    address: address.clone(),
                    port: shard.port.value,
                });
            }
        }
        self.update_dns(machine, &address);
        // 6. The other replicas of the promoted shards have caught up with their new masters.
        self.steps.extend(waits);
        self.push(Action::Monitor {
            target: MonitorTarget::Machine {
                machine: machine.to_owned(),
            },
        });
        Ok(())
    }

    fn rejoin_as_replicas(
        &mut self,
        servers: &[(&'a Shard, ServerRole)],
        machine: &str,
        address: &Addr,
    ) {
        let timeout_ms = self.top.policy.sync_timeout.value.as_millis() as u64;
        for (shard, role) in servers {
            let ServerRole::ReplicaOf { machine: master } = role else {
                continue;
            };
            let server = self.server(shard, machine, address.clone());
            self.push(Action::ReplicaOf {
                server,
                master: addr_of(self.state, master),
                master_port: shard.port.value,
            });
        }
        for (shard, role) in servers {
            let ServerRole::ReplicaOf { machine: master } = role else {
                continue;
            };
            let server = self.server(shard, machine, address.clone());
            self.push(Action::WaitInSync {
                server,
                master: addr_of(self.state, master),
                master_port: shard.port.value,
                timeout_ms,
            });
        }
    }

    fn process_died(&mut self, shard_name: &str, machine: &str) -> Result<(), PlanError> {
        self.role(machine)?;
        let shard = self.shard(shard_name)?;
        let st = self.shard_state(shard_name)?;
        let is_master = st.master == machine;
        if !is_master && !st.replicas.iter().any(|r| r.machine == machine) {
            let mut on = vec![st.master.clone()];
            on.extend(st.replicas.iter().map(|r| r.machine.clone()));
            return Err(PlanError::NotOnMachine {
                shard: shard_name.to_owned(),
                machine: machine.to_owned(),
                on: on.join(", "),
            });
        }
        let target = MonitorTarget::Server {
            shard: shard_name.to_owned(),
            machine: machine.to_owned(),
        };
        self.push(Action::Unmonitor {
            target: target.clone(),
        });
        if is_master {
            self.fence_on_proxies(shard, machine, true);
            if !self.fail_over(shard, machine)? {
                // Never restart it empty as a master: with persistence off that wipes the replicas.
                self.alert(
                    AlertLevel::Critical,
                    format!("{shard_name}@{machine} is not restarted: with no replica promoted it would come back as an empty master"),
                );
                return Ok(());
            }
            self.activate_masters(&[shard]);
        }
        // Only after a promotion: none waits otherwise.
        let waits = self.follow_new_masters(&[shard], machine);
        if !self.top.policy.allows(Remedy::RestartProcess) {
            self.alert(
                AlertLevel::Warning,
                format!("{shard_name}@{machine} is not restarted: restart_process is not in policy.remediation; the shard runs without that replica"),
            );
            self.steps.extend(waits);
            return Ok(());
        }
        let Some(master) = self.master_of(shard_name) else {
            self.steps.extend(waits);
            return Ok(());
        };
        let address = addr_of(self.state, machine);
        let servers = vec![(shard, ServerRole::ReplicaOf { machine: master })];
        let vars = vars::redis_vars(self.top, self.state, machine, &address, &servers);
        self.push(Action::RunPlaybook {
            machine: machine.to_owned(),
            address: address.clone(),
            playbook: "redis".into(),
            vars,
        });
        self.rejoin_as_replicas(&servers, machine, &address);
        self.steps.extend(waits);
        self.push(Action::Monitor { target });
        Ok(())
    }

    /// An old master answers as master again: fence it on every proxy, then make it a replica
    /// of the current master (its writes since the failover are discarded by the resync).
    fn stale_master(&mut self, shard_name: &str, machine: &str) -> Result<(), PlanError> {
        self.role(machine)?;
        let shard = self.shard(shard_name)?;
        let st = self.shard_state(shard_name)?;
        if st.master == machine {
            return Err(PlanError::NotOnMachine {
                shard: shard_name.to_owned(),
                machine: machine.to_owned(),
                on: format!("{machine}, which is its master: nothing to demote"),
            });
        }
        let target = MonitorTarget::Server {
            shard: shard_name.to_owned(),
            machine: machine.to_owned(),
        };
        self.push(Action::Unmonitor {
            target: target.clone(),
        });
        self.fence_on_proxies(shard, machine, true);
        let servers = vec![(
            shard,
            ServerRole::ReplicaOf {
                machine: st.master.clone(),
            },
        )];
        let address = addr_of(self.state, machine);
        self.rejoin_as_replicas(&servers, machine, &address);
        self.push(Action::Monitor { target });
        Ok(())
    }

    /// A planned change of master with no write lost: writes are held on the old master until
    /// the replica has everything; the proxies then switch, the old master becomes a replica
    /// (so held writes, once let go, are refused with READONLY rather than lost) and resyncs.
    fn switchover(&mut self, shard_name: &str, to: Option<&str>) -> Result<(), PlanError> {
        let shard = self.shard(shard_name)?;
        let st = self.shard_state(shard_name)?;
        let cannot = |reason: String| PlanError::CannotSwitch {
            shard: shard_name.to_owned(),
            reason,
        };
        let old = st.master.clone();
        let candidate = match to {
            Some(m) => st
                .replicas
                .iter()
                .find(|r| r.machine == m)
                .ok_or_else(|| cannot(format!("{m} is not one of its replicas")))?,
            None => st
                .replicas
                .iter()
                .filter(|r| r.offset.is_some())
                .max_by_key(|r| r.offset)
                .ok_or_else(|| cannot("it has no replica in sync".to_owned()))?,
        };
        let Some(offset) = candidate.offset else {
            return Err(cannot(format!(
                "its replica {} is not in sync",
                candidate.machine
            )));
        };
        let new = candidate.machine.clone();
        let old_server = self.server(shard, &old, addr_of(self.state, &old));
        let new_server = self.server(shard, &new, addr_of(self.state, &new));
        let target = MonitorTarget::Server {
            shard: shard_name.to_owned(),
            machine: old.clone(),
        };
        self.push(Action::Unmonitor {
            target: target.clone(),
        });
        // At most this long without writes even if medic died in the middle.
        let pause_ms = 10_000;
        self.push(Action::PauseWrites {
            server: old_server.clone(),
            timeout_ms: pause_ms,
        });
        self.push(Action::WaitInSync {
            server: new_server.clone(),
            master: addr_of(self.state, &old),
            master_port: shard.port.value,
            timeout_ms: pause_ms / 2,
        });
        // The old master holds every write: its sessions need not be gone before the promotion.
        for proxy in self.proxies() {
            let server = ServerRef {
                backend: vars::proxy_backend(shard_name),
                server: old.clone(),
            };
            self.push(Action::FenceServer {
                proxy,
                server,
                wait_sessions: false,
            });
        }
        self.push(Action::PromoteReplica {
            server: new_server,
            offset,
            lag_bytes: 0,
        });
        self.new_masters.insert(shard_name.to_owned(), new.clone());
        self.activate_masters(&[shard]);
        self.push(Action::ReplicaOf {
            server: old_server.clone(),
            master: addr_of(self.state, &new),
            master_port: shard.port.value,
        });
        self.push(Action::Unpause { server: old_server });
        // The other replicas follow the new master too (else they would replicate the old one,
        // a replica now, chained behind it).
        let waits = self.follow_new_masters(&[shard], &old);
        let servers = vec![(shard, ServerRole::ReplicaOf { machine: new })];
        let address = addr_of(self.state, &old);
        // rejoin_as_replicas would send REPLICAOF again (harmless); only the wait is needed.
        let timeout_ms = self.top.policy.sync_timeout.value.as_millis() as u64;
        for (shard, role) in &servers {
            let ServerRole::ReplicaOf { machine: master } = role else {
                continue;
            };
            self.push(Action::WaitInSync {
                server: self.server(shard, &old, address.clone()),
                master: addr_of(self.state, master),
                master_port: shard.port.value,
                timeout_ms,
            });
        }
        self.steps.extend(waits);
        self.push(Action::Monitor { target });
        Ok(())
    }

    fn haproxy_lost(&mut self, machine: &str) {
        let target = MonitorTarget::Machine {
            machine: machine.to_owned(),
        };
        self.push(Action::Unmonitor {
            target: target.clone(),
        });
        // Every app proxy stops sending to it now, rather than after its own checks fail.
        let apps = self.app_proxies_using(machine);
        for (api, backend, _) in &apps {
            let server = ServerRef {
                backend: backend.clone(),
                server: machine.to_owned(),
            };
            // A lost proxy's sessions hang on a silent peer: do not wait for them.
            self.push(Action::FenceServer {
                proxy: api.clone(),
                server,
                wait_sessions: false,
            });
        }
        if !self.may_replace(machine, "clients go through the remaining proxies") {
            return;
        }
        let address = self.replace(machine);
        let masters: BTreeMap<String, String> = self
            .state
            .shards
            .iter()
            .map(|(k, v)| (k.clone(), v.master.clone()))
            .collect();
        let vars = vars::haproxy_vars(self.top, self.state, machine, &address, &masters);
        self.push(Action::RunPlaybook {
            machine: machine.to_owned(),
            address: address.clone(),
            playbook: "haproxy".into(),
            vars,
        });
        self.update_dns(machine, &address);
        for (api, backend, port) in &apps {
            let server = ServerRef {
                backend: backend.clone(),
                server: machine.to_owned(),
            };
            self.push(Action::SetServerAddress {
                proxy: api.clone(),
                server: server.clone(),
                address: address.clone(),
                port: *port,
            });
            self.push(Action::ActivateServer {
                proxy: api.clone(),
                server,
            });
        }
        self.push(Action::Monitor { target });
    }

    /// (app proxy API, backend, proxy port) for every app backend with a server on `proxy`.
    fn app_proxies_using(&self, proxy: &str) -> Vec<(ProxyApi, String, u16)> {
        let mut out = Vec::new();
        for app in self.top.app_proxies.iter().map(|a| &a.value) {
            if app.primary.value != proxy && app.backup.value != proxy {
                continue;
            }
            let api = ProxyApi {
                machine: app.machine.value.clone(),
                address: addr_of(self.state, &app.machine.value),
                port: app.runtime_api.value.port.value,
            };
            for f in &app.frontends {
                let shard = &f.value.shard.value;
                if let Some(port) = vars::proxy_port(self.top, shard) {
                    out.push((api.clone(), vars::app_backend(shard), port));
                }
            }
        }
        out
    }

    /// Every machine launched and configured through the same steps a replacement takes:
    /// redis machines first (masters as masters), then proxies, then app proxies.
    fn bootstrap(&mut self) {
        let top = self.top;
        for role in [Role::Redis, Role::Haproxy, Role::App] {
            let names: Vec<String> = top
                .machines
                .iter()
                .map(|m| &m.value)
                .filter(|m| m.role.value == role)
                .map(|m| m.name.value.clone())
                .collect();
            for machine in names {
                let address = self.launch(&machine);
                let vars = match role {
                    Role::Redis => {
                        let servers: Vec<(&Shard, ServerRole)> = top
                            .shards_on(&machine)
                            .map(|s| {
                                let role = if s.master.value == machine {
                                    ServerRole::Master
                                } else {
                                    ServerRole::ReplicaOf {
                                        machine: s.master.value.clone(),
                                    }
                                };
                                (s, role)
                            })
                            .collect();
                        Some((
                            "redis",
                            vars::redis_vars(top, self.state, &machine, &address, &servers),
                        ))
                    }
                    Role::Haproxy => {
                        let masters = top
                            .shards
                            .iter()
                            .map(|s| (s.value.name.value.clone(), s.value.master.value.clone()))
                            .collect();
                        Some((
                            "haproxy",
                            vars::haproxy_vars(top, self.state, &machine, &address, &masters),
                        ))
                    }
                    Role::App => vars::app_proxy_vars(top, self.state, &machine, &address)
                        .map(|v| ("app-proxy", v)),
                    Role::Monitor => None,
                };
                if let Some((playbook, vars)) = vars {
                    self.push(Action::RunPlaybook {
                        machine: machine.clone(),
                        address: address.clone(),
                        playbook: playbook.into(),
                        vars,
                    });
                }
                self.update_dns(&machine, &address);
                self.push(Action::Monitor {
                    target: MonitorTarget::Machine { machine },
                });
            }
        }
    }

    fn app_lost(&mut self, machine: &str) {
        let target = MonitorTarget::Machine {
            machine: machine.to_owned(),
        };
        self.push(Action::Unmonitor {
            target: target.clone(),
        });
        if !self.may_replace(machine, "its clients have no proxy") {
            return;
        }
        let address = self.replace(machine);
        if let Some(vars) = vars::app_proxy_vars(self.top, self.state, machine, &address) {
            self.push(Action::RunPlaybook {
                machine: machine.to_owned(),
                address: address.clone(),
                playbook: "app-proxy".into(),
                vars,
            });
        }
        self.update_dns(machine, &address);
        self.push(Action::Monitor { target });
    }
}

/// The launch idempotency token: EC2 accepts up to 64 ASCII characters.
pub fn client_token(recovery: &str, step: usize) -> String {
    let mut t: String = recovery
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let suffix = format!("-{step}");
    t.truncate(64 - suffix.len());
    t + &suffix
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use medic_playbook::Playbooks;
    use medic_topology::Topology;

    use super::*;
    use crate::describe::describe;
    use crate::state::ReplicaState;

    const BARTON: &str = include_str!("../../../examples/barton.yaml");
    const STATIC: &str = include_str!("../../../examples/static.yaml");

    fn topology(text: &str) -> Topology {
        medic_topology::load::parse_str(Path::new("t.yaml"), text, "a topology")
            .into_result()
            .unwrap()
    }

    fn lost(m: &str) -> Event {
        Event::MachineLost { machine: m.into() }
    }

    fn died(s: &str, m: &str) -> Event {
        Event::ProcessDied {
            shard: s.into(),
            machine: m.into(),
        }
    }

    /// `kind target` per step: what a table row asserts.
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

    fn plan(top: &Topology, state: &ObservedState, e: &Event) -> Plan {
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
                    "terminate haproxy1",
                    "launch haproxy1",
                    "wait-ssh haproxy1",
                    "playbook haproxy1",
                    "dns haproxy1.barton.example.com",
                    "set-address app-r9001/haproxy1 on app",
                    "activate app-r9001/haproxy1 on app",
                    "set-address app-r9002/haproxy1 on app",
                    "activate app-r9002/haproxy1 on app",
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
        ];
        for (event, expected) in rows {
            assert_eq!(
                outline(&plan(&top, &state, &event)),
                expected,
                "plan for {event}"
            );
        }
    }

    fn position(plan: &Plan, pred: impl Fn(&Action) -> bool) -> Vec<usize> {
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
            let cmds = fence.action.haproxy_commands();
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

    fn three_replicas() -> (Topology, ObservedState) {
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
                    if server.backend == vars::proxy_backend(shard) && server.server == new)
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
        // The other shard still fails over: one refusal does not hold the rest.
        assert!(o.contains(&"promote r9002@redis2".to_owned()), "{o:#?}");
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
                "alert CRITICAL",
                "alert CRITICAL",
            ]
        );
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
}
