//! The topology's policy (what medic may do on its own, and how often), its notifications
//! and its controller's settings (where it listens, its state, its group).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::{Role, unspanned};
use crate::duration::Dur;

/// What medic may do on its own, and how often.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The remedies medic may apply, mildest first. A remedy left out becomes an alert.
    #[serde(default = "default_remediation")]
    #[schemars(with = "Vec<Remedy>")]
    pub remediation: Vec<Spanned<Remedy>>,
    #[serde(default = "default_max_replacements")]
    #[schemars(with = "u32")]
    pub max_replacements_per_hour: Spanned<u32>,
    /// Automatic recoveries of one machine (restarts, failovers, replacements, retries) in an
    /// hour beyond which no more start: a crash loop is held for a human.
    #[serde(default = "default_max_recoveries")]
    #[schemars(with = "u32")]
    pub max_recoveries_per_hour: Spanned<u32>,
    /// After a machine is replaced, how long before it may be replaced again.
    #[serde(default = "default_cooldown")]
    #[schemars(with = "Dur")]
    pub cooldown: Spanned<Dur>,
    /// A replica further behind its lost master than this (bytes of replication stream) is not
    /// promoted automatically: medic alerts and waits for an operator.
    #[serde(default = "default_max_lag")]
    #[schemars(with = "u64")]
    pub max_promotion_lag_bytes: Spanned<u64>,
    /// How long a new replica may take to sync before its step fails.
    #[serde(default = "default_sync_timeout")]
    #[schemars(with = "Dur")]
    pub sync_timeout: Spanned<Dur>,
    /// How long a launched machine may take until its SSH port answers.
    #[serde(default = "default_boot_timeout")]
    #[schemars(with = "Dur")]
    pub boot_timeout: Spanned<Dur>,
    /// Spares kept per role, launched and prepared ahead of need: a replacement of a machine
    /// of that role takes one instead of waiting for a boot (see [`crate::spares`]).
    #[serde(default)]
    #[schemars(with = "BTreeMap<Role, u32>")]
    pub spares: BTreeMap<Role, Spanned<u32>>,
    /// What a prepared spare is left as: `running` (default) or `stopped`.
    #[serde(default = "default_spare_state")]
    #[schemars(with = "crate::spares::SpareState")]
    pub spare_state: Spanned<crate::spares::SpareState>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            remediation: default_remediation(),
            max_replacements_per_hour: default_max_replacements(),
            max_recoveries_per_hour: default_max_recoveries(),
            cooldown: default_cooldown(),
            max_promotion_lag_bytes: default_max_lag(),
            sync_timeout: default_sync_timeout(),
            boot_timeout: default_boot_timeout(),
            spares: BTreeMap::new(),
            spare_state: default_spare_state(),
        }
    }
}

impl Policy {
    pub fn allows(&self, remedy: Remedy) -> bool {
        self.remediation.iter().any(|r| r.value == remedy)
    }

    /// How many spares of `role` medic keeps (0: none, a replacement launches).
    pub fn spares_of(&self, role: Role) -> u32 {
        self.spares.get(&role).map_or(0, |n| n.value)
    }
}

fn default_remediation() -> Vec<Spanned<Remedy>> {
    vec![
        unspanned(Remedy::RestartProcess),
        unspanned(Remedy::Failover),
        unspanned(Remedy::ReplaceMachine),
    ]
}
fn default_max_replacements() -> Spanned<u32> {
    unspanned(3)
}
fn default_max_recoveries() -> Spanned<u32> {
    unspanned(6)
}
fn default_cooldown() -> Spanned<Dur> {
    unspanned(Dur::from_secs(300))
}
fn default_max_lag() -> Spanned<u64> {
    unspanned(1024 * 1024)
}
fn default_sync_timeout() -> Spanned<Dur> {
    unspanned(Dur::from_secs(120))
}
fn default_spare_state() -> Spanned<crate::spares::SpareState> {
    unspanned(crate::spares::SpareState::Running)
}
fn default_boot_timeout() -> Spanned<Dur> {
    unspanned(Dur::from_secs(300))
}

/// The rungs of the remediation ladder.
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
pub enum Remedy {
    /// Restart a dead redis process on a live machine (always as a replica).
    RestartProcess,
    /// Promote a replica when a master is lost.
    Failover,
    /// Terminate a lost machine and launch a replacement from its AMI.
    ReplaceMachine,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Notification {
    Webhook(Webhook),
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// The URL; a URL carrying a secret (Slack's do) belongs in `url_env` instead.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub url: Option<Spanned<String>>,
    /// Name of an environment variable of the controller holding the URL.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub url_env: Option<Spanned<String>>,
    #[serde(default)]
    pub format: WebhookFormat,
}

#[derive(
    Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    #[default]
    Json,
    Slack,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Controller {
    /// The HTTP API and status page. Loopback unless you put a proxy with TLS in front.
    #[serde(default = "default_listen")]
    #[schemars(with = "SocketAddr")]
    pub listen: Spanned<SocketAddr>,
    /// Journal, API token, known hosts.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Controllers in a group (one leader by an etcd lease). Absent: this controller runs
    /// alone on its local files.
    #[serde(default)]
    #[schemars(with = "Option<Cluster>")]
    pub cluster: Option<Spanned<Cluster>>,
}

impl Default for Controller {
    fn default() -> Self {
        Controller {
            listen: default_listen(),
            state_dir: default_state_dir(),
            cluster: None,
        }
    }
}

/// `controller.cluster`: the etcd cluster the group coordinates through.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// etcd members' client addresses (`host:port`), any of which may answer.
    #[schemars(with = "Vec<SocketAddr>")]
    pub etcd: Spanned<Vec<Spanned<SocketAddr>>>,
    /// The leader's lease: a dead leader is replaced after about this long.
    #[serde(default = "default_lease")]
    #[schemars(with = "Dur")]
    pub lease: Spanned<Dur>,
    /// This member's name in the group; the host's name when absent (each member has its own
    /// copy of the file, or they share one and differ by host).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub member: Option<Spanned<String>>,
}

fn default_lease() -> Spanned<Dur> {
    unspanned(Dur::from_secs(5))
}

fn default_listen() -> Spanned<SocketAddr> {
    unspanned(SocketAddr::from(([127, 0, 0, 1], 7600)))
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/medic")
}
