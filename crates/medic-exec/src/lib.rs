//! The executor: runs the very `Step`s the planner made, through the traits.
//!
//! This first version executes what setting a deployment up needs — launch, wait for SSH,
//! playbooks, DNS — and refuses, by name, the step kinds the controller (issue 6) adds with
//! its journal (fencing, promotion, replication, re-registration). A refused step is an error,
//! never silently skipped.
//!
//! Addresses not known when the plan was made (`${address:M}`) are resolved here from what
//! each launch step returned; a new machine's SSH host keys are learned from the cloud (the
//! lab's record, EC2's console output) before the first connection.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use medic_cloud::{Cloud, CloudError, Dns, upsert_and_wait, wait_port, wait_running};
use medic_plan::{Action, Addr, Plan, Step};
use medic_playbook::Playbooks;
use medic_ssh::{Host, HostKeys, PlaybookError, Ssh, SshError, run_playbook};
use medic_topology::{HostKeyPolicy, Topology};

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
    #[error(
        "step {index} ({kind}): the address of {machine} is not known: no step launched it and the topology gives none"
    )]
    UnknownAddress {
        index: usize,
        kind: &'static str,
        machine: String,
    },
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
    #[error("step {index} (dns): no DNS provider is configured for this run")]
    NoDns { index: usize },
}

/// How long a launched machine may take to run and answer SSH when the step gives no bound.
const BOOT: Duration = Duration::from_secs(120);

/// Runs steps in order; stops at the first failure, which names the step.
#[derive(Debug)]
pub struct Executor<'a, C, D> {
    pub topology: &'a Topology,
    pub cloud: &'a C,
    /// `None`: DNS steps fail with [`ExecError::NoDns`] unless `skip_dns`.
    pub dns: Option<&'a D>,
    /// Skip DNS steps (saying so) when the run has no DNS provider yet.
    pub skip_dns: bool,
    pub ssh: &'a Ssh,
    pub playbooks: &'a Playbooks,
    /// Every machine's address as known so far; launch steps add theirs.
    pub addresses: BTreeMap<String, IpAddr>,
}

/// What a step did, for the caller to show.
#[derive(Debug, Clone)]
pub struct Done {
    pub summary: String,
    pub duration: Duration,
}

impl<'a, C: Cloud, D: Dns> Executor<'a, C, D> {
    fn resolve(&self, index: usize, kind: &'static str, a: &Addr) -> Result<IpAddr, ExecError> {
        match a {
            Addr::Ip(ip) => Ok(*ip),
            Addr::Of(m) => {
                self.addresses
                    .get(m)
                    .copied()
                    .ok_or_else(|| ExecError::UnknownAddress {
                        index,
                        kind,
                        machine: m.clone(),
                    })
            }
        }
    }

    /// Replaces every `${address:M}` in the variables with M's address.
    fn resolve_vars(
        &self,
        index: usize,
        v: &serde_json::Value,
    ) -> Result<serde_json::Value, ExecError> {
        use serde_json::Value;
        Ok(match v {
            Value::String(s) if s.contains("${address:") => {
                let mut out = String::new();
                let mut rest = s.as_str();
                while let Some(start) = rest.find("${address:") {
                    out.push_str(&rest[..start]);
                    let after = &rest[start + "${address:".len()..];
                    let Some(end) = after.find('}') else { break };
                    let ip = self.resolve(index, "playbook", &Addr::Of(after[..end].to_owned()))?;
                    out.push_str(&ip.to_string());
                    rest = &after[end + 1..];
                }
                out.push_str(rest);
                Value::String(out)
            }
            Value::Array(a) => Value::Array(
                a.iter()
                    .map(|x| self.resolve_vars(index, x))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| Ok((k.clone(), self.resolve_vars(index, x)?)))
                    .collect::<Result<_, ExecError>>()?,
            ),
            other => other.clone(),
        })
    }

    fn host(&self, machine: &str, addr: IpAddr) -> Host {
        let settings = self
            .topology
            .machine(machine)
            .map(|m| self.topology.ssh_for(m));
        Host {
            name: machine.to_owned(),
            addr,
            port: settings.as_ref().map_or(22, |s| s.port),
            user: settings
                .as_ref()
                .map_or_else(|| "medic".to_owned(), |s| s.user.clone()),
            key: settings.as_ref().and_then(|s| s.key.clone()),
            host_keys: match settings.map(|s| s.host_keys) {
                Some(HostKeyPolicy::AcceptNew) => HostKeys::AcceptNew,
                _ => HostKeys::Strict,
            },
        }
    }

    /// Runs one step.
    pub async fn execute(&mut self, step: &Step) -> Result<Done, ExecError> {
        let started = Instant::now();
        let index = step.index;
        let kind = step.action.kind();
        let summary = match &step.action {
            Action::LaunchInstance { spec } => {
                let cloud_err = |source| ExecError::Cloud {
                    index,
                    kind,
                    source,
                };
                let launched = self.cloud.launch(spec).await.map_err(cloud_err)?;
                let running = wait_running(
                    self.cloud,
                    &launched.instance.id,
                    BOOT,
                    Duration::from_millis(200),
                )
                .await
                .map_err(cloud_err)?;
                let addr = running.address.ok_or_else(|| ExecError::UnknownAddress {
                    index,
                    kind,
                    machine: spec.machine.clone(),
                })?;
                self.addresses.insert(spec.machine.clone(), addr);
                let host = self.host(&spec.machine, addr);
                self.ssh.forget(&host).await;
                for key in self.cloud.host_keys(&running.id).await.map_err(cloud_err)? {
                    self.ssh
                        .learn_host_key(&host, &key)
                        .map_err(|source| ExecError::Ssh {
                            index,
                            kind,
                            source: Box::new(source),
                        })?;
                }
                format!(
                    "{} {} at {addr}",
                    if launched.reused { "found" } else { "launched" },
                    running.id
                )
            }
            Action::WaitReachable {
                machine,
                address,
                port,
                timeout_ms,
            } => {
                let ip = self.resolve(index, kind, address)?;
                wait_port(
                    SocketAddr::new(ip, *port),
                    Duration::from_millis(*timeout_ms),
                )
                .await
                .map_err(|source| ExecError::Cloud {
                    index,
                    kind,
                    source,
                })?;
                format!("{machine} answers on {ip}:{port}")
            }
            Action::RunPlaybook {
                machine,
                address,
                playbook,
                vars,
            } => {
                let ip = self.resolve(index, kind, address)?;
                let pb = self
                    .playbooks
                    .get(playbook)
                    .ok_or_else(|| ExecError::NoPlaybook {
                        index,
                        kind,
                        playbook: playbook.clone(),
                    })?;
                let vars = self.resolve_vars(index, vars)?;
                let results = run_playbook(self.ssh, &self.host(machine, ip), pb, &vars)
                    .await
                    .map_err(|source| ExecError::Playbook {
                        index,
                        kind,
                        source: Box::new(source),
                    })?;
                use medic_ssh::StepOutcome;
                let count =
                    |f: fn(&StepOutcome) -> bool| results.iter().filter(|r| f(&r.outcome)).count();
                format!(
                    "{} steps: {} files written, {} commands ran, {} skipped or unchanged",
                    results.len(),
                    count(|o| matches!(o, StepOutcome::Changed)),
                    count(|o| matches!(o, StepOutcome::Ran)),
                    count(|o| matches!(o, StepOutcome::Skipped { .. } | StepOutcome::Unchanged)),
                )
            }
            Action::UpsertDns {
                name, ttl, values, ..
            } => {
                let ips = values
                    .iter()
                    .map(|a| self.resolve(index, kind, a))
                    .collect::<Result<Vec<_>, _>>()?;
                match self.dns {
                    Some(dns) => {
                        upsert_and_wait(
                            dns,
                            name,
                            *ttl,
                            &ips,
                            Duration::from_secs(120),
                            Duration::from_secs(1),
                        )
                        .await
                        .map_err(|source| ExecError::Cloud {
                            index,
                            kind,
                            source,
                        })?;
                        format!("{name} -> {ips:?}, in sync")
                    }
                    None if self.skip_dns => {
                        format!("skipped: no DNS provider in this run ({name} -> {ips:?})")
                    }
                    None => return Err(ExecError::NoDns { index }),
                }
            }
            Action::Monitor { target } => format!("{target}: for the controller to watch"),
            Action::Alert { message, .. } => message.clone(),
            _ => return Err(ExecError::Unsupported { index, kind }),
        };
        tracing::info!(step = index, kind, "{summary}");
        Ok(Done {
            summary,
            duration: started.elapsed(),
        })
    }

    /// Runs a whole plan, calling `progress` after each step.
    pub async fn run(
        &mut self,
        plan: &Plan,
        mut progress: impl FnMut(&Step, &Done),
    ) -> Result<(), ExecError> {
        for step in &plan.steps {
            let done = self.execute(step).await?;
            progress(step, &done);
        }
        Ok(())
    }
}
