//! What a step that fails says: [`ExecError`], and whether trying it again may help.

use std::time::Duration;

use medic_cloud::CloudError;
use medic_haproxy::HaproxyError;
use medic_redis::RedisError;
use medic_ssh::{PlaybookError, SshError};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("step {index} ({kind}): {source}")]
    Cloud {
        index: usize,
        kind: &'static str,
        #[source]
        source: CloudError,
    },
    #[error("step {index} ({kind}): {source}")]
    Playbook {
        index: usize,
        kind: &'static str,
        #[source]
        source: Box<PlaybookError>,
    },
    #[error("step {index} ({kind}): {source}")]
    Ssh {
        index: usize,
        kind: &'static str,
        #[source]
        source: Box<SshError>,
    },
    #[error("step {index} ({kind}): on {machine}: exit {}: {stderr}", status.map_or("signal".to_owned(), |c| c.to_string()))]
    Command {
        index: usize,
        kind: &'static str,
        machine: String,
        status: Option<i32>,
        stderr: String,
    },
    #[error(
        "step {index} ({kind}): the address of {machine} is not known: no step launched it and the topology gives none"
    )]
    UnknownAddress {
        index: usize,
        kind: &'static str,
        machine: String,
    },
    #[error(
        "step {index} (launch): {machine}'s instance {instance} showed no SSH host key within {after:?}; with ssh.host_keys: strict it cannot be verified (the console output carries the keys once cloud-init has run)"
    )]
    NoHostKey {
        index: usize,
        machine: String,
        instance: String,
        after: Duration,
    },
    #[error(
        "step {index} (playbook): the secret `{user}` (a redis_auth user's password or a redis_tls file) was not read when medic started"
    )]
    NoSecret { index: usize, user: String },
    #[error("step {index} ({kind}): playbook `{playbook}` is not loaded")]
    NoPlaybook {
        index: usize,
        kind: &'static str,
        playbook: String,
    },
    #[error(
        "step {index}: `{kind}` steps are run by the controller (`medic run`), not by this executor"
    )]
    Unsupported { index: usize, kind: &'static str },
    #[error(
        "step {index} ({kind}): the topology says `managed: false`: medic writes no haproxy.cfg, runs no role's playbook and launches or terminates no machine in a deployment it adopted (this step was planned before the topology said so)"
    )]
    Unmanaged { index: usize, kind: &'static str },
    #[error(
        "step {index} ({kind}): promotion blocked: {what}; in a deployment medic adopted (managed: false) each proxy's backend must have the promoted machine's server, named after it, and no other server ready: medic will not make a second master reachable, nor promote one no proxy can send clients to"
    )]
    NotClear {
        index: usize,
        kind: &'static str,
        what: String,
    },
    #[error("step {index} (dns): no DNS provider is configured for this run")]
    NoDns { index: usize },
    #[error("step {index} ({kind}): {source}")]
    Haproxy {
        index: usize,
        kind: &'static str,
        #[source]
        source: Box<HaproxyError>,
    },
    #[error("step {index} ({kind}): {service}@{machine}: {message}")]
    Postgres {
        index: usize,
        kind: &'static str,
        service: String,
        machine: String,
        message: String,
        /// Asking again cannot help (a login or a right refused).
        lasting: bool,
    },
    #[error("step {index} ({kind}): {source}")]
    Redis {
        index: usize,
        kind: &'static str,
        #[source]
        source: Box<RedisError>,
    },
    #[error(
        "step {index} ({kind}): promotion blocked: {missed} could not be fenced (its runtime API does not answer) and the old master's (or primary's) machine was not fenced at its source; medic will not make a second one reachable"
    )]
    Unfenced {
        index: usize,
        kind: &'static str,
        missed: String,
    },
    #[error("step {index} ({kind}): {machine}: {message}")]
    ProxyConfig {
        index: usize,
        kind: &'static str,
        machine: String,
        message: String,
    },
}

impl ExecError {
    /// Whether trying the step again may help (a timeout, a connection, throttling), as
    /// opposed to a refusal that will not change (bad input, an unknown server).
    pub fn is_retryable(&self) -> bool {
        match self {
            ExecError::Cloud { source, .. } => !matches!(
                source,
                CloudError::Unauthorized { .. }
                    | CloudError::NotFound { .. }
                    | CloudError::Invalid { .. }
            ),
            ExecError::Haproxy { source, .. } => !matches!(
                **source,
                HaproxyError::Rejected { .. } | HaproxyError::UnknownServer { .. }
            ),
            ExecError::Postgres { lasting, .. } => !lasting,
            ExecError::Redis { .. }
            | ExecError::Ssh { .. }
            | ExecError::Playbook { .. }
            | ExecError::ProxyConfig { .. }
            | ExecError::Unfenced { .. }
            | ExecError::Command { .. }
            | ExecError::NoHostKey { .. } => true,
            ExecError::UnknownAddress { .. }
            | ExecError::Unmanaged { .. }
            | ExecError::NotClear { .. }
            | ExecError::NoPlaybook { .. }
            | ExecError::NoSecret { .. }
            | ExecError::Unsupported { .. }
            | ExecError::NoDns { .. } => false,
        }
    }
}
