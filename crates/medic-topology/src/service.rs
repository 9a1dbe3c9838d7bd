//! Services beside the redis shards: a process on two or more machines, one of them the
//! primary, that medic checks, fails over and points DNS at (docs/topology.md, "Services").
//!
//! medic does not configure a service's machines (role `service`): the operator's own tooling
//! does. What medic owns is the *role* each machine plays now, the checks that decide it, the
//! record that follows the primary, and the hooks it runs on a machine when its role changes.

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::duration::Dur;
use crate::model::Check;

/// One service: which machine is primary when the deployment is set up, which stand by, how
/// each is checked, and what follows the primary.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Service {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    #[serde(default)]
    pub mode: ServiceMode,
    /// The machine that is primary when the deployment is first set up (its nominal role).
    #[schemars(with = "String")]
    pub primary: Spanned<String>,
    /// The machines that take over, in order of preference.
    #[schemars(with = "Vec<String>")]
    pub standbys: Vec<Spanned<String>>,
    /// The port the service listens on, on every one of its machines.
    #[schemars(with = "u16")]
    pub port: Spanned<u16>,
    #[serde(default = "default_check")]
    #[schemars(with = "ServiceCheck")]
    pub check: Spanned<ServiceCheck>,
    /// More checks of each machine, made with `check` at its cadence and within its timeout
    /// (seed 001's step 5: the front page, the search port, the database): a machine is
    /// healthy when every one passes.
    #[serde(default)]
    #[schemars(with = "Vec<MoreCheck>")]
    pub more_checks: Vec<Spanned<MoreCheck>>,
    /// A DNS record (in the zone of the topology's `dns.provider`) whose A value is the
    /// primary's address, changed whenever the primary changes.
    #[serde(default)]
    #[schemars(with = "Option<ServiceDns>")]
    pub dns: Option<Spanned<ServiceDns>>,
    /// An address that moves to the primary (seed 001's "bring that IP up as eth0:1"):
    /// clients reach the service at it, whoever is primary.
    #[serde(default)]
    #[schemars(with = "Option<ServiceAddress>")]
    pub address: Option<Spanned<ServiceAddress>>,
    /// A frontend on every HAProxy of `proxies.machines` that sends clients to the primary
    /// alone (the standbys' servers are in maintenance there), moved with the role.
    #[serde(default)]
    #[schemars(with = "Option<ServiceProxy>")]
    pub proxy: Option<Spanned<ServiceProxy>>,
    #[serde(default)]
    pub hooks: Hooks,
    /// With a `postgres` check: how medic makes a server failed away from (an old primary
    /// back after a failover) a standby of the primary again, and the old primary after a
    /// switchover (none: the operator's `on_demote` hook does it).
    #[serde(default)]
    #[schemars(with = "Option<crate::pg_rejoin::PgRejoin>")]
    pub rejoin: Option<Spanned<crate::pg_rejoin::PgRejoin>>,
    /// The standbys never take writes, even serving as primary (seed 000's read-only copy):
    /// a failed primary still serving beside one does no harm, so no fencing hook is needed
    /// to fail over or to switch over.
    #[serde(default)]
    pub standbys_read_only: bool,
    #[serde(default)]
    pub failback: Failback,
    /// `failback: automatic`: how long the nominal primary must pass its checks, without a
    /// miss, before the role moves back to it.
    #[serde(default = "default_failback_after")]
    pub failback_after: Dur,
}

fn default_failback_after() -> Dur {
    Dur::from_secs(300)
}

impl Service {
    /// Every machine serves (`mode: active_active`): none is promoted, none demoted.
    pub fn active_active(&self) -> bool {
        self.mode == ServiceMode::ActiveActive
    }

    /// Every machine of the service, the nominal primary first.
    pub fn machines(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.primary.value.as_str())
            .chain(self.standbys.iter().map(|s| s.value.as_str()))
    }

    /// The hook playbooks the service names, each once.
    pub fn hook_playbooks(&self) -> impl Iterator<Item = &str> {
        [
            &self.hooks.on_fenced,
            &self.hooks.on_promote,
            &self.hooks.on_demote,
        ]
        .into_iter()
        .flatten()
        .map(|h| h.value.as_str())
    }
}

/// How the machines of a service share the work.
#[derive(
    Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ServiceMode {
    /// One primary serves; the standbys wait. On the primary's failure the first healthy
    /// standby is promoted.
    #[default]
    PrimaryStandby,
    /// Every machine serves, behind the proxies (`proxy`): one that fails its checks is taken
    /// out of every proxy (its `on_fenced` hook after), and put back once it passes them
    /// again (its `on_promote` hook first) — never the last one serving.
    ActiveActive,
}

/// What makes a machine of the service healthy.
#[derive(
    Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// A TCP connection to the port is accepted.
    #[default]
    Tcp,
    /// An HTTP request to the port gets the expected status (and body substring).
    Http,
    /// The same request under TLS, the server's certificate verified (against `ca_file` if
    /// given, else the controller host's trusted roots) for `server_name`.
    Https,
    /// `command` run on the machine over SSH (as root) exits 0: what a port cannot show, like
    /// the storage under the service (seed 004) or its database.
    Command,
    /// A PostgreSQL server at the port logs medic in and answers `pg_is_in_recovery()` as its
    /// role requires: not in recovery on the primary, in recovery on a standby (with
    /// `standbys_read_only`, the nominal primary and the standbys keep their roles whoever
    /// serves). Its WAL position is shown with it.
    Postgres,
}

/// A service's health check.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceCheck {
    #[serde(default)]
    pub kind: CheckKind,
    /// `http`, `https`: the request's path.
    #[serde(default)]
    pub path: Option<String>,
    /// `http`, `https`: the status a healthy machine answers with.
    #[serde(default)]
    pub status: Option<u16>,
    /// `http`, `https`: text the healthy answer's body contains.
    #[serde(default)]
    pub body: Option<String>,
    /// `command`: the shell command; exit 0 is healthy.
    #[serde(default)]
    pub command: Option<String>,
    /// `postgres`: the role medic logs in as (`postgres` unless given).
    #[serde(default)]
    pub user: Option<String>,
    /// `postgres`: the database it connects to (`postgres` unless given).
    #[serde(default)]
    pub database: Option<String>,
    /// `postgres`: a file on the controller's host holding that role's password (none: the
    /// server trusts the controller's address).
    #[serde(default)]
    pub password_file: Option<std::path::PathBuf>,
    /// `https`: the CA certificates (PEM, on the controller's host) the server's certificate
    /// must chain to (none: the host's trusted roots).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// `https`: the name the server's certificate must be valid for (none: the machine's
    /// address), also sent as SNI.
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default = "default_interval")]
    pub interval: Dur,
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_fall")]
    pub fall: u32,
    #[serde(default = "default_rise")]
    pub rise: u32,
}

impl Default for ServiceCheck {
    fn default() -> Self {
        ServiceCheck {
            kind: CheckKind::Tcp,
            path: None,
            status: None,
            body: None,
            command: None,
            user: None,
            database: None,
            password_file: None,
            ca_file: None,
            server_name: None,
            interval: default_interval(),
            timeout: default_timeout(),
            fall: default_fall(),
            rise: default_rise(),
        }
    }
}

impl ServiceCheck {
    /// The cadence part, in the form every other check has.
    pub fn cadence(&self) -> Check {
        Check {
            interval: self.interval,
            timeout: self.timeout,
            fall: self.fall,
            rise: self.rise,
            jitter: Dur::from_millis(self.interval.as_millis() as u64 / 10),
        }
    }

    /// `http`, `https`: the path asked for (`/` unless given).
    pub fn http_path(&self) -> &str {
        self.path.as_deref().unwrap_or("/")
    }

    /// `http`, `https`: the status expected (200 unless given).
    pub fn http_status(&self) -> u16 {
        self.status.unwrap_or(200)
    }

    /// `postgres`: the user medic logs in as (`postgres` unless given).
    pub fn pg_user(&self) -> &str {
        self.user.as_deref().unwrap_or("postgres")
    }

    /// `postgres`: the database medic connects to (`postgres` unless given).
    pub fn pg_database(&self) -> &str {
        self.database.as_deref().unwrap_or("postgres")
    }
}

/// One of a service's `more_checks`: what `check` can ask, at a port of its own if given,
/// and no cadence (it has `check`'s).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MoreCheck {
    #[serde(default)]
    pub kind: CheckKind,
    /// The port it asks (the service's `port` unless given).
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub database: Option<String>,
    #[serde(default)]
    pub password_file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub server_name: Option<String>,
}

impl MoreCheck {
    /// As a check of its own, with `main`'s cadence.
    pub fn as_check(&self, main: &ServiceCheck) -> ServiceCheck {
        ServiceCheck {
            kind: self.kind,
            path: self.path.clone(),
            status: self.status,
            body: self.body.clone(),
            command: self.command.clone(),
            user: self.user.clone(),
            database: self.database.clone(),
            password_file: self.password_file.clone(),
            ca_file: self.ca_file.clone(),
            server_name: self.server_name.clone(),
            ..main.clone()
        }
    }
}

impl Service {
    /// Every check of each machine, with the port each asks: `check` first, then
    /// `more_checks`.
    pub fn all_checks(&self) -> Vec<(u16, ServiceCheck)> {
        let main = &self.check.value;
        std::iter::once((self.port.value, main.clone()))
            .chain(self.more_checks.iter().map(|m| {
                (
                    m.value.port.unwrap_or(self.port.value),
                    m.value.as_check(main),
                )
            }))
            .collect()
    }

    /// Whether it has a `postgres` check (without building the checks: asked at each check
    /// result).
    pub fn has_postgres_check(&self) -> bool {
        self.check.value.kind == CheckKind::Postgres
            || self
                .more_checks
                .iter()
                .any(|m| m.value.kind == CheckKind::Postgres)
    }

    /// Its `postgres` check (a service has at most one) with that check's port.
    pub fn postgres_check(&self) -> Option<(u16, ServiceCheck)> {
        self.all_checks()
            .into_iter()
            .find(|(_, c)| c.kind == CheckKind::Postgres)
    }
}

fn default_check() -> Spanned<ServiceCheck> {
    crate::model::unspanned(ServiceCheck::default())
}
fn default_interval() -> Dur {
    Dur::from_millis(500)
}
fn default_timeout() -> Dur {
    Dur::from_millis(400)
}
fn default_fall() -> u32 {
    3
}
fn default_rise() -> u32 {
    2
}

/// The record that follows the primary.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceDns {
    /// Fully qualified, inside the zone of `dns.provider`.
    pub name: String,
    /// Seconds; low, so clients ask again soon after a failover (`dns.ttl` unless given).
    #[serde(default)]
    pub ttl: Option<i64>,
    #[serde(default)]
    pub routing: DnsRouting,
}

/// How the record follows the primary.
#[derive(
    Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DnsRouting {
    /// One A record, UPSERTed to the primary's address by medic.
    #[default]
    Simple,
    /// Route 53 failover routing: a PRIMARY and a SECONDARY record set, each with a Route 53
    /// health check of its address, so that Route 53 answers the secondary while the primary
    /// fails even if no controller runs; medic keeps the two sets on the current roles.
    Failover,
}

/// The service's own address, on the primary's interface.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceAddress {
    /// `10.0.0.100/24`: the address and its prefix length on the interface.
    pub ip: String,
    /// The interface it is added to (`eth0`).
    #[serde(default = "default_interface")]
    pub interface: String,
    /// aws only: an Elastic IP's allocation id (`eipalloc-...`), associated with the address
    /// wherever it moves, for clients outside the VPC. On aws the address itself is a
    /// secondary private IP of the primary's instance, reassigned by medic through EC2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elastic_ip: Option<String>,
}

fn default_interface() -> String {
    "eth0".to_owned()
}

impl ServiceAddress {
    /// The address and prefix length, if `ip` is an IPv4 address with a prefix from 1 to 32.
    pub fn parsed(&self) -> Option<(std::net::Ipv4Addr, u8)> {
        let (ip, len) = self.ip.split_once('/')?;
        let len: u8 = len.parse().ok().filter(|l| (1..=32).contains(l))?;
        Some((ip.parse().ok()?, len))
    }
}

/// The service's frontend on the proxies (`proxies.machines`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceProxy {
    /// The port clients connect to on every proxy machine.
    #[schemars(with = "u16")]
    pub listen: Spanned<u16>,
    #[serde(default)]
    pub mode: ProxyMode,
    /// The name of the service's HAProxy backend on the proxies (default `service-NAME`): for
    /// a deployment whose haproxy.cfg medic did not write.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub backend: Option<Spanned<String>>,
}

/// Whether an HTTP check's `path` can be written into haproxy.cfg as it is (HAProxy's own
/// check asks it): absolute, printable, no space, quote, `#` or backslash.
pub fn haproxy_safe_path(path: &str) -> bool {
    path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"#\\\"'".contains(&b))
}

/// What HAProxy sees of the service's traffic.
#[derive(
    Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ProxyMode {
    /// Connections, passed through as they are (a database, any TCP service).
    #[default]
    Tcp,
    /// HTTP requests (a web service): HAProxy parses them, adds `X-Forwarded-For`, and
    /// keeps connections to the server alive between requests.
    Http,
}

/// Playbooks (names in the topology's `playbooks` directory) run on a machine when its role
/// changes. Each gets the variables `service` (name, port), `machine` (name, address),
/// `primary` (the machine that is primary after the change: name, address) and `previous`
/// (the one before: name, address). Like every playbook they must be idempotent: a recovery
/// that resumes runs a hook again.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// On the failed primary, before anything is promoted, if it can be reached over SSH
    /// (a silent machine is skipped: it serves nobody). A hook that fails on a machine that
    /// answers stops the failover: a primary that could not be fenced is not replaced by a
    /// second one.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub on_fenced: Option<Spanned<String>>,
    /// On the standby being promoted, before the record moves to it.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub on_promote: Option<Spanned<String>>,
    /// On a machine failed away from, when it answers again, before it is counted as a
    /// standby.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub on_demote: Option<Spanned<String>>,
}

/// What happens when the nominal primary is healthy again after a failover.
#[derive(
    Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Failback {
    /// It stays a standby until an operator moves the role back (`medic switchover`).
    #[default]
    Manual,
    /// The role moves back to it by a planned switchover once it has rejoined and passed its
    /// checks for `failback_after`.
    Automatic,
}

/// The role states of a machine of a service (seed 001's names), from its nominal role, its
/// current role and its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleState {
    /// The nominal primary, primary, with a healthy standby.
    Production,
    /// A nominal standby, standing by.
    Standby,
    /// Primary with no healthy standby (the nominal primary, or a standby switched to
    /// production in an emergency).
    ProductionAlone,
    /// A nominal standby serving as primary, with a healthy standby beside it.
    StandbyAsProduction,
    /// The nominal primary standing by (after a failover, before a failback).
    ProductionAsStandby,
    /// Failing its checks, or failed away from and not rejoined yet.
    Down,
    /// Serving beside the others (`active_active`).
    Active,
}

impl RoleState {
    /// `nominal_primary`: the topology names it primary; `primary`: it is primary now;
    /// `healthy`: it passes its checks and has rejoined; `standby_healthy`: some other machine
    /// of the service is a healthy standby.
    pub fn of(nominal_primary: bool, primary: bool, healthy: bool, standby_healthy: bool) -> Self {
        match (healthy, nominal_primary, primary) {
            (false, _, _) => RoleState::Down,
            (true, true, true) if standby_healthy => RoleState::Production,
            (true, true, true) => RoleState::ProductionAlone,
            (true, true, false) => RoleState::ProductionAsStandby,
            (true, false, true) if standby_healthy => RoleState::StandbyAsProduction,
            (true, false, true) => RoleState::ProductionAlone,
            (true, false, false) => RoleState::Standby,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RoleState::Production => "production",
            RoleState::Standby => "standby",
            RoleState::ProductionAlone => "production_alone",
            RoleState::StandbyAsProduction => "standby_as_production",
            RoleState::ProductionAsStandby => "production_as_standby",
            RoleState::Down => "down",
            RoleState::Active => "active",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RoleState;

    #[test]
    fn the_six_states_of_a_production_standby_pair() {
        assert_eq!(RoleState::of(true, true, true, true), RoleState::Production);
        assert_eq!(
            RoleState::of(true, true, true, false),
            RoleState::ProductionAlone
        );
        assert_eq!(RoleState::of(false, false, true, true), RoleState::Standby);
        assert_eq!(
            RoleState::of(false, true, true, true),
            RoleState::StandbyAsProduction
        );
        // Switched to production in an emergency, the other down: alone (seed 001).
        assert_eq!(
            RoleState::of(false, true, true, false),
            RoleState::ProductionAlone
        );
        assert_eq!(
            RoleState::of(true, false, true, true),
            RoleState::ProductionAsStandby
        );
        assert_eq!(RoleState::of(true, true, false, true), RoleState::Down);
    }
}
