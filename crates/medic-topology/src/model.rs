//! The topology model: what a topology file says, field for field.
//!
//! Every struct denies unknown fields. Values that validation must point at are wrapped in
//! [`Spanned`] so a message can name their line and column. Names of machines, shards and AMIs
//! are plain strings here; validation checks every reference.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};

use crate::duration::Dur;

mod policy;
mod proxies;
pub use policy::*;
pub use proxies::*;

/// A value that came from a default rather than from the file: it has no position.
pub fn unspanned<T>(value: T) -> Spanned<T> {
    Spanned::new(value, Location::UNKNOWN, Location::UNKNOWN)
}

/// One deployment: the file `medic validate`, `medic plan` and `medic run` read.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// The deployment's name; tags every instance medic launches (`medic:topology`).
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    #[schemars(with = "Provider")]
    pub provider: Spanned<Provider>,
    /// Directory holding the playbooks, relative to this file.
    #[serde(default = "default_playbooks")]
    #[schemars(with = "PathBuf")]
    pub playbooks: Spanned<PathBuf>,
    /// SSH settings every machine uses unless it says otherwise.
    #[serde(default)]
    pub ssh: Ssh,
    #[serde(default)]
    #[schemars(with = "Vec<Ami>")]
    pub amis: Vec<Spanned<Ami>>,
    #[schemars(with = "Vec<Machine>")]
    pub machines: Vec<Spanned<Machine>>,
    /// Redis shards behind HAProxy. A topology of services alone has none (nor proxies).
    #[serde(default)]
    #[schemars(with = "Vec<Shard>")]
    pub shards: Vec<Spanned<Shard>>,
    #[serde(default = "default_proxies")]
    #[schemars(with = "Proxies")]
    pub proxies: Spanned<Proxies>,
    /// Primary/standby services beside the shards (`crate::service`).
    #[serde(default)]
    #[schemars(with = "Vec<crate::service::Service>")]
    pub services: Vec<Spanned<crate::service::Service>>,
    #[serde(default)]
    #[schemars(with = "Vec<AppProxy>")]
    pub app_proxies: Vec<Spanned<AppProxy>>,
    #[serde(default)]
    #[schemars(with = "Option<Dns>")]
    pub dns: Option<Spanned<Dns>>,
    #[serde(default)]
    pub checks: Checks,
    #[serde(default)]
    pub policy: Policy,
    #[serde(default)]
    #[schemars(with = "Vec<Notification>")]
    pub notifications: Vec<Spanned<Notification>>,
    #[serde(default)]
    pub controller: Controller,
    /// `false`: an existing deployment medic adopts (`crate::adopt`). medic moves roles and
    /// traffic through the runtime APIs and the data stores, and never writes haproxy.cfg,
    /// runs a role's playbook, restarts a dead redis or launches or terminates a machine.
    /// Default `true`.
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub managed: Option<Spanned<bool>>,
    /// Who may talk to the redis servers. Absent: redis accepts anyone who can reach it.
    #[serde(default)]
    #[schemars(with = "Option<crate::auth::RedisAuth>")]
    pub redis_auth: Option<Spanned<crate::auth::RedisAuth>>,
    /// TLS on every redis server (clients, replication, medic). Absent: redis in the clear.
    #[serde(default)]
    #[schemars(with = "Option<crate::tls::RedisTls>")]
    pub redis_tls: Option<Spanned<crate::tls::RedisTls>>,
}

fn default_playbooks() -> Spanned<PathBuf> {
    unspanned(PathBuf::from("/usr/share/medic/playbooks"))
}

/// Where machines come from.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// EC2 instances. Credentials come from the standard AWS chain, never from this file.
    Aws(AwsProvider),
    /// The local lab: machines are network namespaces on this host.
    Local(LocalProvider),
    /// Existing machines at fixed addresses. Nothing can be launched: after a failover medic
    /// raises an alert instead of replacing the machine.
    Static,
}

impl Provider {
    pub fn kind(&self) -> &'static str {
        match self {
            Provider::Aws(_) => "aws",
            Provider::Local(_) => "local",
            Provider::Static => "static",
        }
    }

    /// Whether this provider can launch a replacement machine.
    pub fn can_launch(&self) -> bool {
        !matches!(self, Provider::Static)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsProvider {
    pub region: String,
    /// Subnets to launch into; a machine takes `machines[].subnet`, or one of these in turn.
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub key_pair: String,
    #[serde(default)]
    pub instance_profile: Option<String>,
    /// Extra tags on every instance, beside medic's own `medic:*` tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// An endpoint override (an emulator, a VPC endpoint); `AWS_ENDPOINT_URL` also works.
    #[serde(default)]
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalProvider {
    /// The private /24 the lab's bridge owns; machines get addresses from it.
    #[serde(default = "default_lab_subnet")]
    pub subnet: String,
    #[serde(default = "default_lab_bridge")]
    pub bridge: String,
    /// Where the lab keeps its machines' state (roots, keys, tags).
    #[serde(default = "default_lab_state")]
    pub state_dir: PathBuf,
}

fn default_lab_subnet() -> String {
    "10.77.0.0/24".to_owned()
}
fn default_lab_bridge() -> String {
    "medic0".to_owned()
}
fn default_lab_state() -> PathBuf {
    PathBuf::from("/var/lib/medic/lab")
}

/// A named machine image.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ami {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// The file (relative to the topology) that says what the image has baked in.
    #[schemars(with = "PathBuf")]
    pub definition: Spanned<PathBuf>,
    /// AWS image id per region, `us-east-1: ami-0123456789abcdef0`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub image_ids: BTreeMap<String, Spanned<String>>,
}

#[derive(
    Debug,
    Clone,
    Copy,
    Deserialize,
    Serialize,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs redis servers (masters and replicas of the shards).
    Redis,
    /// Runs HAProxy routing clients to each shard's master.
    Haproxy,
    /// A client machine running the app-side HAProxy.
    App,
    /// The monitor host that runs `medic run`.
    Monitor,
    /// Runs the processes of one or more `services`; medic checks them and moves their roles,
    /// the operator's own tooling configures them.
    Service,
}

impl Role {
    /// The playbook that configures a machine of this role, if medic configures it.
    pub fn playbook(self) -> Option<&'static str> {
        match self {
            Role::Redis => Some("redis"),
            Role::Haproxy => Some("haproxy"),
            Role::App => Some("app-proxy"),
            Role::Monitor | Role::Service => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Redis => "redis",
            Role::Haproxy => "haproxy",
            Role::App => "app",
            Role::Monitor => "monitor",
            Role::Service => "service",
        }
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    #[schemars(with = "Role")]
    pub role: Spanned<Role>,
    /// Name of an entry in `amis`; required for machines medic may replace.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub ami: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub instance_type: Option<Spanned<String>>,
    /// Tried in order when EC2 has no capacity for `instance_type`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub fallback_instance_types: Vec<Spanned<String>>,
    /// The subnet to launch a replacement in (aws); defaults to one of `provider.aws.subnets`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub subnet: Option<Spanned<String>>,
    /// A fixed address. Without it, the address is discovered from the instance's tags.
    #[serde(default)]
    #[schemars(with = "Option<IpAddr>")]
    pub address: Option<Spanned<IpAddr>>,
    /// Tags that find the machine's instance when it has no fixed address.
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub discover: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default)]
    pub ssh: Ssh,
    /// This machine's server name in the proxies' backends, where the operator's haproxy.cfg
    /// names it otherwise than the machine (`managed: false` only; medic names the servers it
    /// configures after their machines).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub server: Option<Spanned<String>>,
}

/// SSH settings; a machine's own fields override the topology-wide ones.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    #[serde(default)]
    pub user: Option<String>,
    /// Private key file; without it the ssh agent and default keys are used.
    #[serde(default)]
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub host_keys: Option<HostKeyPolicy>,
}

/// How the SSH layer trusts a machine's host key.
#[derive(
    Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    /// Only keys medic knows: recorded, or learned from the cloud (console output, lab record).
    #[default]
    Strict,
    /// Trust the key a new machine presents on first contact. Say so only on a trusted network.
    AcceptNew,
}

/// The effective SSH settings of one machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SshSettings {
    pub user: String,
    pub key: Option<PathBuf>,
    pub port: u16,
    pub host_keys: HostKeyPolicy,
}

pub const DEFAULT_SSH_USER: &str = "medic";

#[derive(
    Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Persistence {
    /// Memory only: a restarted server comes back empty.
    #[default]
    None,
    /// RDB snapshots.
    Rdb,
    /// Append-only file, fsync every second.
    Aof,
}

/// One redis dataset: a master and its replicas, each on its own machine, on one port.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Shard {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    #[schemars(with = "u16")]
    pub port: Spanned<u16>,
    /// The machine that is master when the deployment is first set up.
    #[schemars(with = "String")]
    pub master: Spanned<String>,
    /// The machines that replicate it (usually one).
    #[schemars(with = "Vec<String>")]
    pub replicas: Vec<Spanned<String>>,
    #[serde(default)]
    pub persistence: Persistence,
    /// `maxmemory` for the server, in redis's notation (`512mb`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub maxmemory: Option<Spanned<String>>,
    /// The name of the HAProxy backend on the proxies that serves this shard (default
    /// `redis-NAME`): for a deployment whose haproxy.cfg medic did not write.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub backend: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    #[schemars(with = "DnsProvider")]
    pub provider: Spanned<DnsProvider>,
    #[serde(default = "default_ttl")]
    #[schemars(with = "i64")]
    pub ttl: Spanned<i64>,
    #[schemars(with = "Vec<DnsRecord>")]
    pub records: Vec<Spanned<DnsRecord>>,
}

fn default_ttl() -> Spanned<i64> {
    unspanned(60)
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DnsProvider {
    Route53(Route53),
    Rfc2136(Rfc2136),
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route53 {
    pub zone_id: String,
    /// The zone's name, `barton.example.com`; every record must be inside it.
    pub zone: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rfc2136 {
    /// The primary server accepting dynamic updates, `10.0.0.53:53`.
    pub server: SocketAddr,
    pub zone: String,
    /// The TSIG key's name as the server knows it.
    pub tsig_key: String,
    #[serde(default = "default_tsig_algorithm")]
    pub tsig_algorithm: String,
    /// File holding the base64 TSIG secret (never the secret itself).
    pub tsig_secret_file: PathBuf,
}

fn default_tsig_algorithm() -> String {
    "hmac-sha256".to_owned()
}

impl DnsProvider {
    pub fn zone(&self) -> &str {
        match self {
            DnsProvider::Route53(r) => &r.zone,
            DnsProvider::Rfc2136(r) => &r.zone,
        }
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsRecord {
    /// Fully qualified name, `haproxy1.barton.example.com`.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// The machines whose addresses make up the record's A values.
    #[schemars(with = "Vec<String>")]
    pub machines: Vec<Spanned<String>>,
}

/// medic's own health checks, per kind of node.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    #[serde(default = "default_redis_check")]
    #[schemars(with = "Check")]
    pub redis: Spanned<Check>,
    #[serde(default = "default_haproxy_check")]
    #[schemars(with = "Check")]
    pub haproxy: Spanned<Check>,
    #[serde(default = "default_haproxy_check")]
    #[schemars(with = "Check")]
    pub app_proxy: Spanned<Check>,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            redis: default_redis_check(),
            haproxy: default_haproxy_check(),
            app_proxy: default_haproxy_check(),
        }
    }
}

fn default_redis_check() -> Spanned<Check> {
    unspanned(Check {
        interval: Dur::from_millis(250),
        timeout: Dur::from_millis(200),
        fall: 3,
        rise: 2,
        jitter: Dur::from_millis(20),
    })
}

fn default_haproxy_check() -> Spanned<Check> {
    unspanned(Check {
        interval: Dur::from_millis(250),
        timeout: Dur::from_millis(200),
        fall: 3,
        rise: 2,
        jitter: Dur::from_millis(25),
    })
}

/// One kind of health check: every `interval` (± `jitter`), a probe that must answer within
/// `timeout`; `fall` misses in a row make a node down, `rise` successes make it up again.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub interval: Dur,
    pub timeout: Dur,
    pub fall: u32,
    pub rise: u32,
    #[serde(default)]
    pub jitter: Dur,
}

// ---- Lookups used by the validator and the planner -------------------------------------------

impl Topology {
    pub fn machine(&self, name: &str) -> Option<&Machine> {
        self.machines
            .iter()
            .map(|m| &m.value)
            .find(|m| m.name.value == name)
    }

    pub fn shard(&self, name: &str) -> Option<&Shard> {
        self.shards
            .iter()
            .map(|s| &s.value)
            .find(|s| s.name.value == name)
    }

    pub fn service(&self, name: &str) -> Option<&crate::service::Service> {
        self.services
            .iter()
            .map(|s| &s.value)
            .find(|s| s.name.value == name)
    }

    /// The services with `machine` among their machines.
    pub fn services_on(&self, machine: &str) -> impl Iterator<Item = &crate::service::Service> {
        self.services
            .iter()
            .map(|s| &s.value)
            .filter(move |s| s.machines().any(|m| m == machine))
    }

    pub fn ami(&self, name: &str) -> Option<&Ami> {
        self.amis
            .iter()
            .map(|a| &a.value)
            .find(|a| a.name.value == name)
    }

    pub fn proxy_machines(&self) -> impl Iterator<Item = &str> {
        self.proxies.value.machines.iter().map(|m| m.value.as_str())
    }

    /// The ports clients connect to on every proxy machine: each shard's frontend, then each
    /// service's routed through the proxies.
    pub fn proxy_listens(&self) -> Vec<u16> {
        self.proxies
            .value
            .frontends
            .iter()
            .map(|f| f.value.listen.value)
            .chain(
                self.services
                    .iter()
                    .filter_map(|s| s.value.proxy.as_ref().map(|x| x.value.listen.value)),
            )
            .collect()
    }

    /// The runtime API of the HAProxy on `machine`: a proxy's, or an app proxy's.
    pub fn runtime_api_of(&self, machine: &str) -> Option<&RuntimeApi> {
        if self.proxy_machines().any(|p| p == machine) {
            return Some(&self.proxies.value.runtime_api.value);
        }
        self.app_proxies
            .iter()
            .find(|a| a.value.machine.value == machine)
            .map(|a| &a.value.runtime_api.value)
    }

    /// The shards with a server on `machine` (as master or as replica in the topology).
    pub fn shards_on(&self, machine: &str) -> impl Iterator<Item = &Shard> {
        self.shards.iter().map(|s| &s.value).filter(move |s| {
            s.master.value == machine || s.replicas.iter().any(|r| r.value == machine)
        })
    }

    /// Every machine that runs a server of `shard`, master first.
    pub fn shard_machines(shard: &Shard) -> impl Iterator<Item = &str> {
        std::iter::once(shard.master.value.as_str())
            .chain(shard.replicas.iter().map(|r| r.value.as_str()))
    }

    /// The SSH settings `machine` uses: its own fields, then the topology's, then medic's.
    pub fn ssh_for(&self, machine: &Machine) -> SshSettings {
        let own = &machine.ssh;
        let all = &self.ssh;
        SshSettings {
            user: own
                .user
                .clone()
                .or_else(|| all.user.clone())
                .unwrap_or_else(|| DEFAULT_SSH_USER.to_owned()),
            key: own.key.clone().or_else(|| all.key.clone()),
            port: own.port.or(all.port).unwrap_or(22),
            host_keys: own.host_keys.or(all.host_keys).unwrap_or_default(),
        }
    }

    pub fn check_for(&self, role: Role) -> Option<&Check> {
        match role {
            Role::Redis => Some(&self.checks.redis.value),
            Role::Haproxy => Some(&self.checks.haproxy.value),
            Role::App => Some(&self.checks.app_proxy.value),
            Role::Monitor | Role::Service => None,
        }
    }

    /// The DNS records that list `machine`.
    pub fn dns_records_of<'a>(&'a self, machine: &'a str) -> impl Iterator<Item = &'a DnsRecord> {
        self.dns.iter().flat_map(move |d| {
            d.value
                .records
                .iter()
                .map(|r| &r.value)
                .filter(move |r| r.machines.iter().any(|m| m.value == machine))
        })
    }

    /// The subnet a replacement for `machine` is launched in (aws only).
    pub fn subnet_for(&self, machine: &Machine) -> Option<String> {
        if let Some(s) = &machine.subnet {
            return Some(s.value.clone());
        }
        let Provider::Aws(aws) = &self.provider.value else {
            return None;
        };
        if aws.subnets.is_empty() {
            return None;
        }
        // Spread machines of one role over the subnets in file order, so a master and its
        // replica land in different subnets (and so availability zones) when there are two.
        let index = self
            .machines
            .iter()
            .filter(|m| m.value.role.value == machine.role.value)
            .position(|m| m.value.name.value == machine.name.value)
            .unwrap_or(0);
        aws.subnets.get(index % aws.subnets.len()).cloned()
    }
}
