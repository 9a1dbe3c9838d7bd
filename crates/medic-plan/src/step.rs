//! Plans and steps: data, printed by `medic plan` and executed by `medic run`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use crate::event::Event;

/// How long a `PromotePostgres` step's `pg_promote()` waits for the server to leave recovery.
pub const PG_PROMOTE_WAIT_SECS: u64 = 60;

/// How long a switchover's `StopPostgres` step waits for the standby it promotes next to
/// receive the stopped primary's WAL up to its shutdown checkpoint.
pub const PG_CATCH_UP_SECS: u64 = 30;

/// An address as a step knows it: a fixed IP, or "the address `machine` has when the step
/// runs" — after a replacement is launched, that is the new instance's address, which the
/// executor records from the launch step's outcome.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Addr {
    Ip(IpAddr),
    Of(String),
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Ip(ip) => write!(f, "{ip}"),
            Addr::Of(m) => write!(f, "${{address:{m}}}"),
        }
    }
}

impl Addr {
    /// Parses the form `Display` writes.
    pub fn parse(s: &str) -> Option<Addr> {
        if let Some(m) = s
            .strip_prefix("${address:")
            .and_then(|r| r.strip_suffix('}'))
        {
            return Some(Addr::Of(m.to_owned()));
        }
        s.parse().ok().map(Addr::Ip)
    }
}

impl Serialize for Addr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Addr::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{s}` is not an address; expected an IP or ${{address:MACHINE}}"
            ))
        })
    }
}

/// A PostgreSQL standby a step logs in to as the service's `postgres` check does (on the
/// service's port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgStandby {
    pub machine: String,
    pub address: Addr,
    pub user: String,
    pub database: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
}

/// A HAProxy runtime API endpoint, and whose it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyApi {
    /// The HAProxy's machine (a proxy or an app machine).
    pub machine: String,
    pub address: Addr,
    /// The API's TCP port; none: its admin unix socket on the machine, over SSH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl ProxyApi {
    /// Where the API is, for a message or `medic plan`: `HOST:PORT`, or the admin socket of
    /// the machine at `host` (its address, as known or resolved).
    pub fn at(&self, host: impl std::fmt::Display) -> String {
        match self.port {
            Some(p) => format!("{host}:{p}"),
            None => format!("{host}'s admin socket (over SSH)"),
        }
    }
}

/// What [`Action::PersistProxyConfig`] writes of one server line: its state and its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerPersist {
    pub server: ServerRef,
    /// `Some(false)`: in maintenance (`disabled`); `Some(true)`: taking traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl ServerPersist {
    /// What a runtime change leaves on the server line, merged into what `self` says.
    pub fn merge(&mut self, change: &Action) {
        match change {
            Action::FenceServer { .. } => self.enabled = Some(false),
            Action::ActivateServer { .. } => self.enabled = Some(true),
            Action::SetServerAddress { address, port, .. } => {
                self.address = Some(address.clone());
                self.port = Some(*port);
            }
            _ => {}
        }
    }
}

impl fmt::Display for ServerPersist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.server)?;
        if let (Some(a), Some(p)) = (&self.address, self.port) {
            write!(f, " at {a}:{p}")?;
        }
        match self.enabled {
            Some(false) => write!(f, " disabled"),
            Some(true) => write!(f, " enabled"),
            None => Ok(()),
        }
    }
}

/// The haproxy.cfg writes that keep `changes` (runtime changes, in the order made): one per
/// proxy, in the order first changed, each server's changes merged.
pub fn persisting<'a>(changes: impl IntoIterator<Item = &'a Action>) -> Vec<Action> {
    let mut writes: Vec<(ProxyApi, Vec<ServerPersist>)> = Vec::new();
    for change in changes {
        let (Action::FenceServer { proxy, server, .. }
        | Action::ActivateServer { proxy, server }
        | Action::SetServerAddress { proxy, server, .. }) = change
        else {
            continue;
        };
        let at = match writes.iter().position(|(p, _)| p == proxy) {
            Some(at) => at,
            None => {
                writes.push((proxy.clone(), Vec::new()));
                writes.len() - 1
            }
        };
        let servers = &mut writes[at].1;
        let at = match servers.iter().position(|s| &s.server == server) {
            Some(at) => at,
            None => {
                servers.push(ServerPersist {
                    server: server.clone(),
                    enabled: None,
                    address: None,
                    port: None,
                });
                servers.len() - 1
            }
        };
        servers[at].merge(change);
    }
    writes
        .into_iter()
        .map(|(proxy, servers)| Action::PersistProxyConfig { proxy, servers })
        .collect()
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// A server line in a HAProxy backend: `backend/server`.
pub use medic_haproxy::ServerName as ServerRef;

/// A redis server: one shard's process on one machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisServer {
    pub shard: String,
    pub machine: String,
    pub address: Addr,
    pub port: u16,
}

/// What medic stops or resumes watching.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MonitorTarget {
    Machine { machine: String },
    Server { shard: String, machine: String },
}

impl fmt::Display for MonitorTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MonitorTarget::Machine { machine } => write!(f, "{machine}"),
            MonitorTarget::Server { shard, machine } => write!(f, "{shard}@{machine}"),
        }
    }
}

/// Everything a cloud needs to launch a machine's replacement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchSpec {
    pub machine: String,
    pub role: medic_topology::Role,
    /// The AMI's name in the topology (the lab builds from its definition).
    pub ami: String,
    /// The AWS image id for the provider's region (aws only).
    pub image_id: Option<String>,
    /// Preferred first, then the fallbacks tried on insufficient capacity (aws only).
    pub instance_types: Vec<String>,
    pub subnet: Option<String>,
    pub security_groups: Vec<String>,
    pub key_pair: Option<String>,
    pub instance_profile: Option<String>,
    /// Every tag: medic's own `medic:*` tags and the user's.
    pub tags: BTreeMap<String, String>,
    /// Idempotency token: the same recovery step never launches twice (EC2 ClientToken).
    pub client_token: String,
    /// Take a ready spare of the role (`policy.spares`) if there is one, else launch.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_spares: bool,
}

impl LaunchSpec {
    /// How it launches, as a digest ([`medic_topology::spares::fit`]).
    pub fn fit(&self) -> String {
        medic_topology::spares::fit(
            &self.ami,
            self.image_id.as_deref(),
            self.subnet.as_deref(),
            &self.instance_types,
        )
    }
}

/// How a DNS change is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DnsTarget {
    Route53 {
        zone_id: String,
        zone: String,
    },
    Rfc2136 {
        server: String,
        zone: String,
        tsig_key: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertLevel {
    /// Someone must act.
    Critical,
    /// Degraded but safe; act in working hours.
    Warning,
}

/// One thing to do. Each action is idempotent: doing it twice has the effect of doing it once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Stop health checks of a machine or server, so the controller does not act on it twice.
    Unmonitor { target: MonitorTarget },
    /// Resume health checks.
    Monitor { target: MonitorTarget },
    /// Take a server out of a HAProxy backend and cut its clients off:
    /// `set server B/S state maint` then `shutdown sessions server B/S`.
    FenceServer {
        proxy: ProxyApi,
        server: ServerRef,
        /// Wait (briefly) until HAProxy shows no session left on the server. A switchover,
        /// whose old master holds every write anyway, does not wait.
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        wait_sessions: bool,
    },
    /// Let a HAProxy send traffic to a server: `set server B/S state ready`.
    ActivateServer { proxy: ProxyApi, server: ServerRef },
    /// Point a HAProxy server line at a new address: `set server B/S addr A port P`.
    /// The server's state (maint or ready) is left as it is.
    SetServerAddress {
        proxy: ProxyApi,
        server: ServerRef,
        address: Addr,
        port: u16,
    },
    /// Write the runtime changes made earlier in the plan on one HAProxy into its haproxy.cfg
    /// over SSH (one read, one write), so a reload or a restart keeps them. Planned after the
    /// traffic has moved: no fence or activation waits for a file write.
    PersistProxyConfig {
        proxy: ProxyApi,
        servers: Vec<ServerPersist>,
    },
    /// Make a replica the master: `REPLICAOF NO ONE`.
    PromoteReplica {
        server: RedisServer,
        /// The replica's offset and its lag behind the lost master, as last observed.
        offset: u64,
        lag_bytes: u64,
    },
    /// Make a server replicate a master: `REPLICAOF host port`.
    ReplicaOf {
        server: RedisServer,
        master: Addr,
        master_port: u16,
    },
    /// Hold the writes of a master's clients (reads go on): `CLIENT PAUSE ms WRITE`. Bounded:
    /// redis lifts it by itself after `timeout_ms` even if medic never comes back.
    PauseWrites {
        server: RedisServer,
        timeout_ms: u64,
    },
    /// Let held writes go on: `CLIENT UNPAUSE`.
    Unpause { server: RedisServer },
    /// Wait until a replica's link is up and it has caught up with its master.
    WaitInSync {
        server: RedisServer,
        master: Addr,
        master_port: u16,
        timeout_ms: u64,
    },
    /// Fence a lost machine at its source before any promotion, if some proxy could not be
    /// fenced: terminate its instance and wait until the cloud says it is gone. A machine that
    /// every proxy fenced is left for the later terminate step.
    FenceAtSource {
        machine: String,
        /// `None`: found by its tags `medic:topology` and `medic:machine` when the step runs.
        instance_id: Option<String>,
    },
    /// Terminate the machine's instance; one already gone is success.
    TerminateInstance {
        machine: String,
        /// `None`: found by its tags `medic:topology` and `medic:machine` when the step runs.
        instance_id: Option<String>,
    },
    /// Launch the machine's replacement (first looking for one this step already launched;
    /// with `spec.from_spares`, first taking a ready spare).
    LaunchInstance { spec: LaunchSpec },
    /// Launch a spare of a role (`policy.spares`, tagged `medic:spare`, no machine's name),
    /// wait until its SSH port answers, run the steps of its role's playbook marked `spare`,
    /// stop it if spares are kept stopped, and tag it ready (`medic:spare-ready`). Each part
    /// is idempotent: run again, the step finds its instance (tags `medic:recovery`,
    /// `medic:step`) and goes on.
    PrepareSpare {
        spec: LaunchSpec,
        /// A machine of the role, whose SSH settings reach the spare.
        like: String,
        playbook: String,
        vars: serde_json::Value,
        stop: bool,
        /// How long the spare may take until its SSH port answers (`policy.boot_timeout`).
        timeout_ms: u64,
    },
    /// Wait until the machine answers on its SSH port.
    WaitReachable {
        machine: String,
        address: Addr,
        port: u16,
        timeout_ms: u64,
    },
    /// Run a playbook on a machine over SSH with these variables.
    RunPlaybook {
        machine: String,
        address: Addr,
        playbook: String,
        vars: serde_json::Value,
    },
    /// UPSERT an A record set, then wait until the change is in sync.
    UpsertDns {
        target: DnsTarget,
        name: String,
        ttl: u32,
        values: Vec<Addr>,
    },
    /// Run one of a service's hook playbooks on one of its machines over SSH.
    RunHook {
        service: String,
        /// `on_fenced`, `on_promote` or `on_demote`.
        hook: String,
        machine: String,
        address: Addr,
        playbook: String,
        vars: serde_json::Value,
        /// A machine that cannot be reached over SSH is skipped, not failed (the hook on a
        /// silent old primary: it serves nobody).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        skip_unreachable: bool,
    },
    /// Add (`up`) or remove the service's own address on a machine's interface, over SSH;
    /// added, it is announced by gratuitous ARP so the network's caches follow at once.
    ServiceAddress {
        service: String,
        machine: String,
        address: Addr,
        /// `10.0.0.100/24`.
        ip: String,
        interface: String,
        up: bool,
        /// As for hooks: a removal on a machine whose SSH says nothing is skipped.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        skip_unreachable: bool,
        /// Brought up only if no other host answers ARP for it (`arping -D`). Off on EC2,
        /// where the VPC answers ARP itself and [`Action::CloudAddress`] has made this
        /// instance the address's only holder.
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        detect_duplicate: bool,
    },
    /// EC2: the service's address (a secondary private IP) reassigned to the machine's
    /// instance (`up`), taken from any other, and its Elastic IP associated with it — before
    /// the address is brought up on the machine's interface; or (not `up`) taken from the
    /// machine's instance — before it is taken down inside the machine, which may be silent.
    /// Read back.
    CloudAddress {
        service: String,
        machine: String,
        /// `None`: found by its tags `medic:topology` and `medic:machine` when the step runs.
        instance_id: Option<String>,
        /// `10.0.1.100`: the bare address.
        ip: std::net::Ipv4Addr,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        elastic_ip: Option<String>,
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        up: bool,
    },
    /// Make a service's PostgreSQL standby its primary: `pg_promote()` there (waiting up to
    /// [`PG_PROMOTE_WAIT_SECS`]) until
    /// it has left recovery (a server already out of recovery is left as it is, so a step
    /// run again does nothing more). As the service's `postgres` check logs in.
    PromotePostgres {
        service: String,
        machine: String,
        address: Addr,
        port: u16,
        user: String,
        database: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password_file: Option<String>,
    },
    /// Make a service's PostgreSQL standby follow its new primary: the `host` and `port` of
    /// its `primary_conninfo` set to `primary`'s (the rest kept: the replication user, its
    /// password file), the configuration reloaded (`ALTER SYSTEM`, `pg_reload_conf()`), then
    /// a wait until it streams from there. One that already does is left as it is. As the
    /// service's `postgres` check logs in.
    FollowPostgres {
        service: String,
        machine: String,
        address: Addr,
        port: u16,
        user: String,
        database: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password_file: Option<String>,
        /// The new primary (its machine and address), whose server listens on `port` too.
        primary: String,
        primary_address: Addr,
    },
    /// Fence a service's PostgreSQL primary (the service has `rejoin`): over SSH as root, the
    /// script of [`crate::rejoin::stop_script`] — the server stopped if it runs (its `stop`
    /// command, else an immediate shutdown) and read back stopped. `skip_unreachable`: as a
    /// hook's, skipped on a machine a majority of its observers confirmed silent whose SSH
    /// does not answer. `caught_up` (a switchover's): then waits until that standby has
    /// received every WAL record the stopped server wrote (up to its shutdown checkpoint), so
    /// that promoting it loses nothing; a server that did not stop cleanly fails the step.
    StopPostgres {
        service: String,
        machine: String,
        address: Addr,
        port: u16,
        rejoin: medic_topology::pg_rejoin::PgRejoin,
        #[serde(default)]
        skip_unreachable: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caught_up: Option<PgStandby>,
    },
    /// Undo a switchover's fence of a service's PostgreSQL primary that is still the recorded
    /// primary (the switchover failed before the other server was promoted): over SSH as root,
    /// the script of [`crate::rejoin::start_script`] — a server that runs as a primary is left
    /// as it is; one `pg-stop` fenced (its mark, on the same timeline: nothing was promoted
    /// from it since) has its `standby.signal` and mark removed and is started (stopped first
    /// if something restarted it read-only); any other is not touched and the step fails. Then
    /// — logging in as the service's `postgres` check does — a wait until it answers out of
    /// recovery.
    StartPostgres {
        service: String,
        machine: String,
        address: Addr,
        port: u16,
        user: String,
        database: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password_file: Option<String>,
        rejoin: medic_topology::pg_rejoin::PgRejoin,
    },
    /// Make a service's PostgreSQL server on `machine` (failed away from: an old primary, or
    /// one stopped by a switchover) a standby of `primary` again: over SSH as root, the script
    /// of [`crate::rejoin::rejoin_script`] (stop, `pg_rewind -R`, with `rewind_or_copy` a
    /// fresh `pg_basebackup` if that fails, start), then — logging in as the service's
    /// `postgres` check does — a wait until it streams from the primary. Before anything,
    /// `primary` must answer as a primary (not in recovery); a server that answers in
    /// recovery and streams is left as it is (the step succeeds); one in recovery that
    /// streams from nothing is touched only if `pg-stop` fenced it (its mark, on the same
    /// timeline: an old primary something started again), else the step fails.
    RejoinPostgres {
        service: String,
        machine: String,
        address: Addr,
        port: u16,
        user: String,
        database: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password_file: Option<String>,
        primary: String,
        primary_address: Addr,
        rejoin: medic_topology::pg_rejoin::PgRejoin,
    },
    /// Record a machine's role in a service (medic's state; nothing is sent anywhere). A new
    /// primary puts the old one out until it rejoins.
    ServiceRole {
        service: String,
        machine: String,
        role: ServiceRole,
    },
    /// Route 53 failover routing for a service's name: its PRIMARY and SECONDARY record sets
    /// UPSERTed, each with a health check of its address (created where there is none, those
    /// of addresses no longer used deleted); then wait until the change is in sync.
    FailoverDns {
        target: DnsTarget,
        name: String,
        ttl: u32,
        primary: Addr,
        secondary: Addr,
        /// The health checks: HTTP (HTTPS with `https`) of this path, or TCP without one; on
        /// this port.
        http_path: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        https: bool,
        /// The name an HTTPS check sends (SNI, `Host`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server_name: Option<String>,
        port: u16,
        /// What names the checks the service owns.
        owner: String,
    },
    /// Tell a human. The plan stops being automatic here.
    Alert { level: AlertLevel, message: String },
}

/// A machine's role in a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceRole {
    Primary,
    Standby,
    /// Lost or failed away from: never promoted until it has rejoined (`Standby`).
    Out,
    /// An `active_active` service's machine taken out of the proxies (whichever machine the
    /// topology names first): out until it passes its checks again.
    Inactive,
    /// An `active_active` service's machine put back: serving beside the others.
    Active,
}

impl Action {
    /// A short name for tables, logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Unmonitor { .. } => "unmonitor",
            Action::Monitor { .. } => "monitor",
            Action::FenceServer { .. } => "fence",
            Action::ActivateServer { .. } => "activate",
            Action::SetServerAddress { .. } => "set-address",
            Action::PersistProxyConfig { .. } => "persist",
            Action::PromoteReplica { .. } => "promote",
            Action::ReplicaOf { .. } => "replicaof",
            Action::WaitInSync { .. } => "wait-sync",
            Action::PauseWrites { .. } => "pause",
            Action::Unpause { .. } => "unpause",
            Action::FenceAtSource { .. } => "fence-source",
            Action::TerminateInstance { .. } => "terminate",
            Action::LaunchInstance { .. } => "launch",
            Action::PrepareSpare { .. } => "spare",
            Action::WaitReachable { .. } => "wait-ssh",
            Action::RunPlaybook { .. } => "playbook",
            Action::UpsertDns { .. } | Action::FailoverDns { .. } => "dns",
            Action::RunHook { .. } => "hook",
            Action::ServiceAddress { .. } => "address",
            Action::CloudAddress { .. } => "cloud-address",
            Action::ServiceRole { .. } => "role",
            Action::PromotePostgres { .. } => "pg-promote",
            Action::FollowPostgres { .. } => "pg-follow",
            Action::RejoinPostgres { .. } => "pg-rejoin",
            Action::StopPostgres { .. } => "pg-stop",
            Action::StartPostgres { .. } => "pg-start",
            Action::Alert { .. } => "alert",
        }
    }
}

/// One numbered step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// 1-based position in the plan; part of the launch idempotency token.
    pub index: usize,
    #[serde(flatten)]
    pub action: Action,
}

/// A recovery: the ordered steps that bring the deployment back after `event`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub recovery: String,
    pub topology: String,
    pub event: Event,
    pub steps: Vec<Step>,
}
