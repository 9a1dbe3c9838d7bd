//! The plans of a redis machine or process lost, a stale master and a switchover: who is
//! promoted, who follows, what replaces the lost one.

use medic_topology::{Remedy, Shard};

use super::{KEPT, PlanError, Planner};
use crate::step::*;
use crate::vars::{self, ServerRole, addr_of};

impl<'a> Planner<'a> {
    pub(super) fn redis_machine_lost(&mut self, machine: &str) -> Result<(), PlanError> {
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
        // A replica here of a shard whose master does not answer either, when no replica
        // that answers may be promoted, may hold the only copy of the shard's latest writes
        // (its failover waits for it): the machine is neither fenced at its source nor
        // replaced while that lasts.
        let only_copy: Vec<&str> = on
            .iter()
            .map(|s| s.name.value.as_str())
            .filter(|s| self.may_hold_only_copy(s, machine))
            .collect();
        // 2. Promote, shard by shard — after fencing the machine at its source if a proxy
        //    could not be fenced (the step decides when it runs), unless the machine is kept
        //    (then such a proxy blocks the promotions instead, until it answers).
        let mut refused = Vec::new();
        let before = self.steps.len();
        for shard in &mastered {
            if !self.fail_over(shard, machine)? {
                refused.push(shard.name.value.clone());
            }
        }
        // Every alert of these failovers, and why the machine is kept, comes before the first
        // promotion: a promotion that fails stops the plan, and what a human must know of
        // every shard is said first.
        let mut alerts = Vec::new();
        let mut i = before;
        while i < self.steps.len() {
            if matches!(self.steps[i], Action::Alert { .. }) {
                alerts.push(self.steps.remove(i));
            } else {
                i += 1;
            }
        }
        let mut keep = Vec::new();
        if !refused.is_empty() {
            keep.push(format!(
                "{machine}{KEPT}shard {} has no master, and {machine}'s disk may hold the only copy of its latest writes",
                refused.join(", ")
            ));
        }
        if !only_copy.is_empty() {
            let whose = match only_copy[..] {
                [one] => format!("the master of shard {one} does not answer either"),
                _ => format!(
                    "the masters of shards {} do not answer either",
                    only_copy.join(", ")
                ),
            };
            keep.push(format!(
                "{machine}{KEPT}{whose} and no replica that answers may be promoted, so {machine}'s disk may hold the only copy of their latest writes; once {machine} answers again (the failover then promotes it), `medic monitor {machine}`"
            ));
        }
        alerts.extend(keep.iter().map(|message| Action::Alert {
            level: AlertLevel::Critical,
            message: message.clone(),
        }));
        let after_alerts = before + alerts.len();
        self.steps.splice(before..before, alerts);
        // (Not in a deployment medic adopted, which it never terminates a machine of: there a
        // proxy that could not be fenced blocks the promotion until it answers.)
        if let Some(at) = self.steps[after_alerts..]
            .iter()
            .position(|a| matches!(a, Action::PromoteReplica { .. }))
            .filter(|_| self.top.managed() && keep.is_empty())
        {
            let instance_id = self
                .state
                .machines
                .get(machine)
                .and_then(|s| s.instance_id.clone());
            self.steps.insert(
                after_alerts + at,
                Action::FenceAtSource {
                    machine: machine.to_owned(),
                    instance_id,
                },
            );
        }
        // 3. Route each proxy to the new masters, then point the other replicas at them.
        self.activate_masters(&mastered);
        let waits = self.follow_new_masters(&mastered, machine);
        if !keep.is_empty() {
            self.push_all(waits);
            return Ok(());
        }
        let names: Vec<&str> = on.iter().map(|s| s.name.value.as_str()).collect();
        if !self.may_replace(
            machine,
            &format!("shards {} run without that replica", names.join(", ")),
        ) {
            self.push_all(waits);
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
                    backend: vars::proxy_backend(self.top, &shard.name.value),
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
        self.push_all(waits);
        self.push(Action::Monitor {
            target: MonitorTarget::Machine {
                machine: machine.to_owned(),
            },
        });
        Ok(())
    }

    /// Whether `machine`'s replica of `shard` may hold the only copy of the shard's latest
    /// writes: the shard's master does not answer (`Hints::silent`), this replica was seen
    /// in sync, and no replica elsewhere that answers is at least as far or may be promoted
    /// (within `policy.max_promotion_lag_bytes` of the newest data seen).
    fn may_hold_only_copy(&self, shard: &str, machine: &str) -> bool {
        let Some(st) = self.state.shards.get(shard) else {
            return false;
        };
        if st.master == machine || !self.hints.silent(shard, &st.master) {
            return false;
        }
        let Some(mine) = st
            .replicas
            .iter()
            .find(|r| r.machine == machine)
            .and_then(|r| r.offset)
        else {
            return false;
        };
        let max = self.top.policy.max_promotion_lag_bytes.value;
        let newest = st
            .replicas
            .iter()
            .filter_map(|r| r.offset)
            .chain(st.master_offset)
            .max()
            .unwrap_or(mine);
        !st.replicas.iter().any(|r| {
            r.machine != machine
                && r.machine != st.master
                && !self.hints.silent(shard, &r.machine)
                && r.offset
                    .is_some_and(|o| o >= mine || newest.saturating_sub(o) <= max)
        })
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

    pub(super) fn process_died(
        &mut self,
        shard_name: &str,
        machine: &str,
    ) -> Result<(), PlanError> {
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
        let why = match &self.hints.no_restart {
            Some(why) => Some(why.clone()),
            None if !self.top.managed() => Some(
                "medic does not manage this deployment's processes (managed: false)".to_owned(),
            ),
            None => (!self.top.policy.allows(Remedy::RestartProcess))
                .then(|| "restart_process is not in policy.remediation".to_owned()),
        };
        if let Some(why) = why {
            self.alert(
                AlertLevel::Warning,
                format!("{shard_name}@{machine} is not restarted: {why}; the shard runs without that replica, which stays out of monitoring (the rest of {machine} is watched) until `medic monitor {machine}`"),
            );
            self.push_all(waits);
            return Ok(());
        }
        let Some(master) = self.master_of(shard_name) else {
            self.push_all(waits);
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
        self.push_all(waits);
        self.push(Action::Monitor { target });
        Ok(())
    }

    /// An old master answers as master again: fence it on every proxy, then make it a replica
    /// of the current master (its writes since the failover are discarded by the resync).
    pub(super) fn stale_master(
        &mut self,
        shard_name: &str,
        machine: &str,
    ) -> Result<(), PlanError> {
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
        let master = st.master.clone();
        self.repoint(shard, machine, &master, true);
        Ok(())
    }

    /// A replica that replicates from another server than its shard's master: made a
    /// replica of the master again (`REPLICAOF`, then a wait until it is in sync), out of
    /// monitoring meanwhile (a full resync may keep it loading). Nothing to fence: it takes
    /// no writes, and the proxies send none to a replica.
    pub(super) fn follow_master(
        &mut self,
        shard_name: &str,
        machine: &str,
    ) -> Result<(), PlanError> {
        self.role(machine)?;
        let shard = self.shard(shard_name)?;
        let st = self.shard_state(shard_name)?;
        if !st.replicas.iter().any(|r| r.machine == machine) {
            return Err(PlanError::NotOnMachine {
                shard: shard_name.to_owned(),
                machine: machine.to_owned(),
                on: if st.master == machine {
                    format!("{machine}, which is its master: nothing to re-point")
                } else {
                    st.replicas
                        .iter()
                        .map(|r| r.machine.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            });
        }
        let master = st.master.clone();
        self.repoint(shard, machine, &master, false);
        Ok(())
    }

    /// `machine`'s server of `shard` made a replica of `master` (`REPLICAOF`, then a wait
    /// until in sync), out of monitoring meanwhile; first fenced on every proxy if `fence`
    /// (a server that answered as master).
    fn repoint(&mut self, shard: &'a Shard, machine: &str, master: &str, fence: bool) {
        let target = MonitorTarget::Server {
            shard: shard.name.value.clone(),
            machine: machine.to_owned(),
        };
        self.push(Action::Unmonitor {
            target: target.clone(),
        });
        if fence {
            self.fence_on_proxies(shard, machine, true);
        }
        let servers = vec![(
            shard,
            ServerRole::ReplicaOf {
                machine: master.to_owned(),
            },
        )];
        let address = addr_of(self.state, machine);
        self.rejoin_as_replicas(&servers, machine, &address);
        self.push(Action::Monitor { target });
    }

    /// A planned change of master with no write lost: writes are held on the old master until
    /// the replica has everything; the proxies then switch, the old master becomes a replica
    /// (so held writes, once let go, are refused with READONLY rather than lost) and resyncs.
    pub(super) fn switchover(
        &mut self,
        shard_name: &str,
        to: Option<&str>,
    ) -> Result<(), PlanError> {
        let shard = self.shard(shard_name)?;
        let st = self.shard_state(shard_name)?;
        let cannot = |reason: String| PlanError::CannotSwitch {
            shard: shard_name.to_owned(),
            reason,
        };
        let old = st.master.clone();
        // A replica some proxy has no server for is never switched to: the old master would
        // be fenced there and the new one could not be activated.
        let candidate = match to {
            Some(m) => st
                .replicas
                .iter()
                .find(|r| r.machine == m)
                .ok_or_else(|| cannot(format!("{m} is not one of its replicas")))?,
            // (On a tie, the one listed first, as a failover chooses.)
            None => st
                .replicas
                .iter()
                .rev()
                .filter(|r| {
                    r.offset.is_some() && super::lacking_on(self.top, st, &r.machine).is_empty()
                })
                .max_by_key(|r| r.offset)
                .ok_or_else(|| {
                    cannot("it has no replica in sync that every proxy has a server for".to_owned())
                })?,
        };
        let lacks = super::lacking_on(self.top, st, &candidate.machine);
        if !lacks.is_empty() {
            return Err(cannot(format!(
                "{} had no server for {} when last read; `medic recover PROXY` configures them",
                lacks.join(", "),
                candidate.machine
            )));
        }
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
                backend: vars::proxy_backend(self.top, shard_name),
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
        self.push_all(waits);
        self.push(Action::Monitor { target });
        Ok(())
    }
}
