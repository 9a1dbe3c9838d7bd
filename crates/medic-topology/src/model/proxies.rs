//! The topology's HAProxy parts: the proxies in front of the shards and services, their
//! runtime API and how medic reaches it, their frontends and check settings, and the
//! client-side app proxies.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::unspanned;
use crate::duration::Dur;

/// No proxies: a topology of services alone.
pub(super) fn default_proxies() -> Spanned<Proxies> {
    unspanned(Proxies {
        machines: Vec::new(),
        runtime_api: unspanned(RuntimeApi {
            port: Some(unspanned(9999)),
            socket: default_admin_socket(),
            reach: Reach::Ssh,
        }),
        frontends: Vec::new(),
        haproxy: HaproxySettings::default(),
    })
}

/// The HAProxy nodes that route clients to each shard's current master.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Proxies {
    #[schemars(with = "Vec<String>")]
    pub machines: Vec<Spanned<String>>,
    #[schemars(with = "RuntimeApi")]
    pub runtime_api: Spanned<RuntimeApi>,
    #[schemars(with = "Vec<Frontend>")]
    pub frontends: Vec<Spanned<Frontend>>,
    #[serde(default)]
    pub haproxy: HaproxySettings,
}

/// Where a HAProxy's runtime API (level admin) listens, and how medic reaches it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeApi {
    /// The TCP port: on the machine's loopback (`reach: ssh`) or its address (`network`).
    /// Without it (`reach: ssh` only), medic reaches the API at `socket` through its SSH
    /// session: an HAProxy whose only admin API is a unix socket, as Debian ships it.
    #[serde(default)]
    #[schemars(with = "Option<u16>")]
    pub port: Option<Spanned<u16>>,
    /// The admin unix socket on the machine: enabled by the playbook for operators on the
    /// machine, and the API medic reaches over SSH when there is no `port`.
    #[serde(default = "default_admin_socket")]
    #[schemars(with = "PathBuf")]
    pub socket: Spanned<PathBuf>,
    #[serde(default)]
    pub reach: Reach,
}

/// How medic reaches a HAProxy's admin API.
#[derive(
    Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Reach {
    /// The API listens on the machine's loopback only; medic reaches it through its SSH
    /// session to the machine (a forwarded socket). Nobody on the network can.
    #[default]
    Ssh,
    /// The API listens on the machine's address, unauthenticated: anyone who can reach that
    /// port can repoint every backend. Only behind a firewall that lets the monitor hosts
    /// alone reach it (or for tools that must reach it directly, like a Sentinel script).
    Network,
}

impl RuntimeApi {
    /// The TCP port medic reaches the API at, if any (else the unix socket, over SSH).
    pub fn tcp_port(&self) -> Option<u16> {
        self.port.as_ref().map(|p| p.value)
    }
}

fn default_admin_socket() -> Spanned<PathBuf> {
    unspanned(PathBuf::from("/run/haproxy/admin.sock"))
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Frontend {
    /// The port clients connect to on every proxy machine.
    #[schemars(with = "u16")]
    pub listen: Spanned<u16>,
    #[schemars(with = "String")]
    pub shard: Spanned<String>,
    /// An app proxy's backend for the shard (default `app-SHARD`): for a haproxy.cfg medic
    /// did not write. Not in `proxies.frontends`, whose backend is the shard's `backend`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub backend: Option<Spanned<String>>,
}

/// The HAProxy parameters the playbook renders. Their defaults are medic's recommendation;
/// docs/topology.md explains each.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HaproxySettings {
    #[serde(default = "default_hc_inter")]
    pub check_interval: Dur,
    #[serde(default = "default_hc_fall")]
    pub check_fall: u32,
    #[serde(default = "default_hc_rise")]
    pub check_rise: u32,
    #[serde(default = "default_timeout_connect")]
    pub timeout_connect: Dur,
    #[serde(default = "default_timeout_check")]
    pub timeout_check: Dur,
    #[serde(default = "default_timeout_client")]
    pub timeout_client: Dur,
    #[serde(default = "default_timeout_client")]
    pub timeout_server: Dur,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_true")]
    pub redispatch: bool,
    /// `on-marked-down shutdown-sessions`: cut clients off a server HAProxy marks down.
    #[serde(default = "default_true")]
    pub shutdown_sessions_on_down: bool,
}

impl Default for HaproxySettings {
    fn default() -> Self {
        HaproxySettings {
            check_interval: default_hc_inter(),
            check_fall: default_hc_fall(),
            check_rise: default_hc_rise(),
            timeout_connect: default_timeout_connect(),
            timeout_check: default_timeout_check(),
            timeout_client: default_timeout_client(),
            timeout_server: default_timeout_client(),
            retries: default_retries(),
            redispatch: true,
            shutdown_sessions_on_down: true,
        }
    }
}

fn default_hc_inter() -> Dur {
    Dur::from_millis(1000)
}
fn default_hc_fall() -> u32 {
    2
}
fn default_hc_rise() -> u32 {
    2
}
fn default_timeout_connect() -> Dur {
    Dur::from_millis(50)
}
fn default_timeout_check() -> Dur {
    Dur::from_millis(500)
}
fn default_timeout_client() -> Dur {
    Dur::from_secs(3600)
}
fn default_retries() -> u32 {
    8
}
fn default_true() -> bool {
    true
}

/// A client-side HAProxy: its frontends go to the proxy machines, `primary` first and `backup`
/// when the primary is unavailable.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppProxy {
    #[schemars(with = "String")]
    pub machine: Spanned<String>,
    #[schemars(with = "RuntimeApi")]
    pub runtime_api: Spanned<RuntimeApi>,
    #[schemars(with = "String")]
    pub primary: Spanned<String>,
    #[schemars(with = "String")]
    pub backup: Spanned<String>,
    #[schemars(with = "Vec<Frontend>")]
    pub frontends: Vec<Spanned<Frontend>>,
}
