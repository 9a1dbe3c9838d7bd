//! The planner: `plan_recovery(topology, observed state, event) -> Plan`. Pure.
//!
//! # Guarantees (each is a test in `planner/tests.rs`)
//! - A lost master leaves every proxy (maint, sessions shut) before any replica is promoted.
//! - The replica promoted is the one with the largest replication offset; a replica further
//!   behind than `policy.max_promotion_lag_bytes`, or never seen in sync, is not promoted: the
//!   plan alerts and stops, and the lost machine is not terminated (its disk may hold the only
//!   copy of what the replicas missed). A replica not answering now (`Hints::silent`) gives
//!   way to an answering one that may be promoted, and is chosen only when it alone holds the
//!   shard's data, with a critical alert (`planner/silent_tests.rs`). A lost machine whose
//!   replica may hold the only copy of a shard whose master does not answer either is
//!   neither fenced at its source nor replaced while that lasts.
//! - Every other replica of a shard whose replica is promoted (a failover or a switchover) is
//!   pointed at the new master once clients are routed to it, and waited for before the plan
//!   ends; the failed server is left to the steps that replace, restart or demote it.
//! - A dead master process is never restarted as a master: it comes back as a replica.
//! - A lost instance is terminated before its replacement is launched.
//! - Launch steps carry a token derived from the recovery id and the step number.
//! - In a deployment medic adopted (`managed: false`) no plan writes a config, runs a
//!   playbook, restarts a process or launches or terminates a machine (`planner/adopt_tests.rs`).

use std::collections::{BTreeMap, BTreeSet};

use medic_topology::{DnsProvider, Provider, Remedy, Role, Shard, Topology};

use crate::state::ObservedState;
use crate::step::*;
use crate::vars::{self, addr_of};

mod failover;
mod proxy;
mod redis;
mod service;
mod service_active;
mod service_pg;
mod spare;
pub use spare::spare_fits;

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
    #[error("`{shard}` cannot be switched over: {reason}")]
    CannotSwitch { shard: String, reason: String },
    #[error("the observed state has no shard `{shard}`, which the topology defines")]
    StateMissingShard { shard: String },
    #[error("unknown service `{service}`; expected one of {known}")]
    UnknownService { service: String, known: String },
    #[error("service `{service}` has no machine `{machine}`; its machines are {on}")]
    NotInService {
        service: String,
        machine: String,
        on: String,
    },
}

/// What a lost machine's plan says, after the machine's name, when it keeps the machine
/// rather than replacing it (its disk may hold a shard's only copy): the controller watches
/// such a machine again after a backoff, as after a failed recovery.
pub const KEPT: &str = " is left as it is (not terminated): ";

/// What the controller knows, when it plans, beyond the observed state: what is not
/// answering now. `medic plan`, which has no checks, plans with none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hints {
    /// Why a dead process is not to be restarted, besides the policy (a crash loop held).
    pub no_restart: Option<String>,
    /// (shard, machine) of the redis servers not answering now: out of monitoring, on a
    /// machine judged lost, or failing their checks. A failover promotes an answering
    /// replica when one may be promoted, and waits for a silent one only when it alone holds
    /// the shard's data (and says so).
    pub silent: BTreeSet<(String, String)>,
}

impl Hints {
    fn silent(&self, shard: &str, machine: &str) -> bool {
        self.silent.iter().any(|(s, m)| s == shard && m == machine)
    }
}

/// Plans the recovery from `event`. `recovery` names this recovery (journal, tags, tokens).
pub fn plan_recovery(
    top: &Topology,
    state: &ObservedState,
    event: &Event,
    recovery: &str,
) -> Result<Plan, PlanError> {
    plan_with(top, state, event, recovery, &Hints::default())
}

/// Plans the recovery from `event` without restarting a dead process, for the reason `why`
/// (a crash loop held): a dead master is still failed over, the server is left out.
pub fn plan_without_restart(
    top: &Topology,
    state: &ObservedState,
    event: &Event,
    recovery: &str,
    why: &str,
) -> Result<Plan, PlanError> {
    let hints = Hints {
        no_restart: Some(why.to_owned()),
        ..Hints::default()
    };
    plan_with(top, state, event, recovery, &hints)
}

/// Plans the recovery from `event` with what the controller knows besides the state.
pub fn plan_with(
    top: &Topology,
    state: &ObservedState,
    event: &Event,
    recovery: &str,
    hints: &Hints,
) -> Result<Plan, PlanError> {
    let mut p = Planner {
        top,
        state,
        recovery,
        steps: Vec::new(),
        new_masters: BTreeMap::new(),
        unpersisted: Vec::new(),
        hints,
        last: Vec::new(),
    };
    match event {
        Event::MachineLost { machine } => {
            let role = p.role(machine)?;
            match role {
                Role::Redis => p.redis_machine_lost(machine)?,
                Role::Haproxy => p.haproxy_lost(machine),
                Role::App => p.app_lost(machine),
                Role::Service => p.service_machine_lost(machine),
                Role::Monitor => p.alert(
                    AlertLevel::Critical,
                    format!("the monitor host {machine} is lost: nothing watches the deployment; start medic on another host"),
                ),
            }
        }
        Event::ProcessDied { shard, machine } => p.process_died(shard, machine)?,
        Event::StaleMaster { shard, machine } => p.stale_master(shard, machine)?,
        Event::FollowMaster { shard, machine } => p.follow_master(shard, machine)?,
        Event::Switchover { shard, to } if top.service(shard).is_some() => {
            p.service_switchover(shard, to.as_deref())?
        }
        Event::Switchover { shard, to } => p.switchover(shard, to.as_deref())?,
        Event::Bootstrap => p.bootstrap(),
        Event::ServiceDown { service, machine } => p.service_down(service, machine)?,
        Event::ServiceRejoin { service, machine } => p.service_rejoin(service, machine)?,
        Event::ServiceFollow { service, machine } => p.service_follow(service, machine)?,
        Event::Spare { role, name, like } => p.prepare_spare(*role, name, like),
    }
    // The last writes: before the alerts that end a plan (a plan stops being automatic there).
    let alerts = p
        .steps
        .iter()
        .rev()
        .take_while(|a| matches!(a, Action::Alert { .. }))
        .count();
    let tail = p.steps.split_off(p.steps.len() - alerts);
    p.persist();
    let last = std::mem::take(&mut p.last);
    p.steps.extend(last);
    p.steps.extend(tail);
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
    /// HAProxy runtime changes planned and not yet followed by their haproxy.cfg write.
    unpersisted: Vec<Action>,
    /// What the controller knows besides the state (a crash loop held, servers silent).
    hints: &'a Hints,
    /// Steps that come after everything else (before the alerts that end the plan): what
    /// may be skipped without holding up the rest (other standbys made to follow).
    last: Vec<Action>,
}

/// Whether a step must not start before the runtime changes planned ahead of it are written
/// into each proxy's haproxy.cfg. The changes that move the traffic (fences, promotions,
/// activations, pauses, and the old master's demotion with `REPLICAOF` that ends a pause) and
/// alerts do not wait for a file write; a step that may take a while (a sync, a launch, a
/// playbook, DNS) or ends the recovery (monitoring again) comes after it.
fn after_persist(a: &Action) -> bool {
    !matches!(
        a,
        Action::FenceServer { .. }
            | Action::ActivateServer { .. }
            | Action::SetServerAddress { .. }
            | Action::PersistProxyConfig { .. }
            | Action::PromoteReplica { .. }
            | Action::ReplicaOf { .. }
            | Action::PauseWrites { .. }
            | Action::Unpause { .. }
            | Action::FenceAtSource { .. }
            | Action::ServiceRole { .. }
            | Action::PromotePostgres { .. }
            | Action::Alert { .. }
    )
}

impl<'a> Planner<'a> {
    fn push(&mut self, a: Action) -> usize {
        if after_persist(&a) {
            self.persist();
        }
        if matches!(
            a,
            Action::FenceServer { .. }
                | Action::ActivateServer { .. }
                | Action::SetServerAddress { .. }
        ) {
            self.unpersisted.push(a.clone());
        }
        self.steps.push(a);
        self.steps.len()
    }

    /// Steps pushed one by one (each placed after the haproxy.cfg writes it must follow).
    fn push_all(&mut self, actions: impl IntoIterator<Item = Action>) {
        for a in actions {
            self.push(a);
        }
    }

    /// A haproxy.cfg write for each proxy changed since the last one. None in a deployment
    /// medic adopted (`managed: false`): its haproxy.cfg is the operator's, and the reconcile
    /// puts back what a reload undoes.
    fn persist(&mut self) {
        if !self.top.managed() {
            self.unpersisted.clear();
            return;
        }
        let writes = persisting(&std::mem::take(&mut self.unpersisted));
        self.steps.extend(writes);
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
        let port = self.top.proxies.value.runtime_api.value.tcp_port();
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

    fn activate_masters(&mut self, shards: &[&'a Shard]) {
        for shard in shards {
            let Some(master) = self.new_masters.get(&shard.name.value).cloned() else {
                continue;
            };
            for proxy in self.proxies() {
                let server = ServerRef {
                    backend: vars::proxy_backend(self.top, &shard.name.value),
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
                backend: vars::proxy_backend(self.top, &shard.name.value),
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
        if !self.top.managed() {
            self.alert(
                AlertLevel::Warning,
                format!("{machine} is not replaced: medic does not manage this deployment's machines (managed: false); {consequence} until {machine} is back (then `medic monitor {machine}`)"),
            );
            return false;
        }
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
        // (The launch's index is in its tags and token: the writes that precede it come first.)
        self.persist();
        let index = self.steps.len() + 1;
        let mut spec = self.launch_spec(machine, machine, index);
        spec.tags
            .insert("medic:machine".to_owned(), machine.to_owned());
        spec.from_spares = top.policy.spares_of(spec.role) > 0;
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

    /// What launching `name` as a copy of the topology's machine `template` (its AMI,
    /// instance types, subnet, role) takes, as step `index` of this plan: every tag but
    /// `medic:machine`.
    fn launch_spec(&self, name: &str, template: &str, index: usize) -> LaunchSpec {
        let top = self.top;
        let m = top.machine(template);
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
        tags.insert("Name".to_owned(), format!("{}-{}", top.name.value, name));
        tags.insert("medic:topology".to_owned(), top.name.value.clone());
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
        LaunchSpec {
            machine: name.to_owned(),
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
            from_spares: false,
        }
    }

    /// UPSERTs every DNS record that lists `machine`, with `machine` at `address`.
    /// How DNS is changed, and the topology's TTL; `None` without a `dns` section.
    fn dns_target(&self) -> Option<(DnsTarget, u32)> {
        let dns = &self.top.dns.as_ref()?.value;
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
        Some((target, u32::try_from(dns.ttl.value).unwrap_or(60)))
    }

    fn update_dns(&mut self, machine: &str, address: &Addr) {
        let Some((target, ttl)) = self.dns_target() else {
            return;
        };
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

/// The proxies of the topology that had no server for `machine` in `st`'s backend when last
/// read (a proxy the topology no longer has lacks nothing).
pub(crate) fn lacking_on<'s>(
    top: &Topology,
    st: &'s crate::state::ShardState,
    machine: &str,
) -> Vec<&'s str> {
    st.lacking(machine)
        .into_iter()
        .filter(|p| top.proxy_machines().any(|q| q == *p))
        .collect()
}

#[cfg(test)]
mod address_tests;
#[cfg(test)]
mod adopt_tests;
#[cfg(test)]
mod persist_tests;
#[cfg(test)]
mod proxy_service_tests;
#[cfg(test)]
mod rejoin_tests;
#[cfg(test)]
mod replica_tests;
#[cfg(test)]
mod service_active_tests;
#[cfg(test)]
mod service_pg_tests;
#[cfg(test)]
mod service_tests;
#[cfg(test)]
mod silent_tests;
#[cfg(test)]
mod tests;
