//! Playbooks on machines: the roles' own (`RunPlaybook`) and the services' hooks (`RunHook`),
//! whose step on a silent machine is skipped rather than failed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use medic_cloud::{Cloud, Dns};
use medic_plan::Addr;
use medic_ssh::{StepOutcome, run_playbook};

use crate::{ExecError, Executor};

/// Submits `name`'s failover record sets and waits (up to 2 minutes) until the change is in
/// sync, as a plain record's UPSERT does.
pub(crate) async fn failover_and_wait<D: Dns>(
    dns: &D,
    name: &str,
    ttl: u32,
    sets: &[medic_cloud::FailoverSet],
) -> Result<(), medic_cloud::CloudError> {
    let change = dns.upsert_failover(name, ttl, sets).await?;
    let within = Duration::from_secs(120);
    let deadline = tokio::time::Instant::now() + within;
    while !dns.in_sync(&change).await? {
        if tokio::time::Instant::now() >= deadline {
            return Err(medic_cloud::CloudError::Timeout {
                op: "dns change",
                after: within,
                state: format!("change {change} still pending"),
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

/// How long a hook that may be skipped waits for the machine's SSH port to accept: a silent
/// old primary costs a failover this much, not SSH's connect timeout.
pub const HOOK_REACH_WITHIN: Duration = Duration::from_secs(1);

impl<'a, C: Cloud, D: Dns> Executor<'a, C, D> {
    /// Runs `playbook` on `machine` with `vars` (placeholders filled); a summary of its steps.
    /// The loaded playbook `name`, or the step's error.
    pub(crate) fn playbook_named(
        &self,
        index: usize,
        kind: &'static str,
        name: &str,
    ) -> Result<&'a medic_playbook::Playbook, ExecError> {
        self.playbooks
            .get(name)
            .ok_or_else(|| ExecError::NoPlaybook {
                index,
                kind,
                playbook: name.to_owned(),
            })
    }

    pub(crate) async fn playbook(
        &self,
        index: usize,
        kind: &'static str,
        machine: &str,
        address: &Addr,
        playbook: &str,
        vars: &serde_json::Value,
    ) -> Result<String, ExecError> {
        let ip = self.resolve(index, kind, address)?;
        let pb = self.playbook_named(index, kind, playbook)?;
        let vars = self.resolve_vars(index, vars)?;
        let results = run_playbook(self.ssh, &self.host(machine, ip), pb, &vars)
            .await
            .map_err(|source| ExecError::Playbook {
                index,
                kind,
                source: Box::new(source),
            })?;
        let count = |f: fn(&StepOutcome) -> bool| results.iter().filter(|r| f(&r.outcome)).count();
        Ok(format!(
            "{} steps: {} files written, {} commands ran, {} skipped or unchanged",
            results.len(),
            count(|o| matches!(o, StepOutcome::Changed)),
            count(|o| matches!(o, StepOutcome::Ran)),
            count(|o| matches!(o, StepOutcome::Skipped { .. } | StepOutcome::Unchanged)),
        ))
    }

    /// Runs a service address's `command` on `machine` (within 10 s); its failure fails the
    /// step with what the machine said.
    pub(crate) async fn address_command(
        &self,
        index: usize,
        kind: &'static str,
        machine: &str,
        ip: IpAddr,
        command: &str,
    ) -> Result<(), ExecError> {
        use medic_ssh::Remote as _;
        let out = self
            .ssh
            .run(&self.host(machine, ip), command, Duration::from_secs(10))
            .await
            .map_err(|source| ExecError::Ssh {
                index,
                kind,
                source: Box::new(source),
            })?;
        if out.status == Some(0) {
            return Ok(());
        }
        Err(ExecError::Command {
            index,
            kind,
            machine: machine.to_owned(),
            status: out.status,
            stderr: out.stderr.trim().to_owned(),
        })
    }

    /// Why a hook that may be skipped (`may_skip`) is: the machine's SSH port says nothing
    /// within [`HOOK_REACH_WITHIN`], or there is no route to it. `None`: run it — a machine
    /// that refuses the connection has a live network stack and may be serving, so the hook is
    /// tried and its failure fails the step, as does one that accepts and then fails it.
    pub(crate) async fn unreachable(
        &self,
        machine: &str,
        ip: IpAddr,
        may_skip: bool,
    ) -> Option<String> {
        if !may_skip {
            return None;
        }
        let at = SocketAddr::new(ip, self.host(machine, ip).port);
        match tokio::time::timeout(HOOK_REACH_WITHIN, tokio::net::TcpStream::connect(at)).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => None,
            Ok(Err(e)) => Some(format!("{machine}'s SSH at {at}: {e}")),
            Err(_) => Some(format!(
                "{machine}'s SSH at {at} did not answer within {}",
                medic_playbook::human_ms(HOOK_REACH_WITHIN.as_millis() as u64)
            )),
        }
    }
}
