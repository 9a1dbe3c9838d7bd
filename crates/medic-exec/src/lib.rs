//! The executor: runs the very `Step`s the planner made, through the traits.
//!
//! Every action kind is executed here; the controller adds the journal, retries and the
//! monitor set around it (`Unmonitor`/`Monitor` are the controller's own and only reported).
//! Each action is idempotent, so a step re-run after a crash has the effect of running it once.
//!
//! HAProxy changes go through the runtime API and are read back; a later step of the plan,
//! once the traffic has moved, writes them into the proxy's haproxy.cfg over SSH (module
//! `persist`), so a reload or a restart keeps them: HAProxy's server-state-file would keep the
//! admin state but silently drop a static server's new address.
//! A proxy whose runtime API does not answer is skipped with a warning, and the step's output
//! says so (`skipped`). A skipped **fence** is not done: the shard's promotion is blocked until
//! it is made good, or the old master's machine is fenced at its source (module `fence`).
//!
//! Addresses not known when the plan was made (`${address:M}`) are resolved here from what
//! each launch step returned; a new machine's SSH host keys are learned from the cloud (the
//! lab's record, EC2's console output) before the first connection.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use medic_cloud::{Cloud, Dns, wait_port};
use medic_plan::{Action, Addr, Plan, Step, StepOutput};
use medic_playbook::Playbooks;
use medic_redis::{Redis, RedisError};
use medic_ssh::{Host, HostKeys, Ssh};
use medic_topology::{HostKeyPolicy, Secrets, Topology};

mod adopted;
mod error;
mod fence;
mod hook;
mod launch;
mod persist;
mod pg_catch_up;
pub mod pg_follow;
mod pg_rejoin;
mod pg_start;
pub mod postgres;
mod proxy_change;
mod reach;
mod redis_steps;
mod service_steps;
pub use error::ExecError;
pub use fence::Unfenced;
use proxy_change::ProxyChange;
pub use reach::proxy_api;

/// Where the haproxy and app-proxy playbooks write HAProxy's configuration.
pub const HAPROXY_CFG: &str = "/etc/haproxy/haproxy.cfg";

/// How long one runtime API command may take.
const RUNTIME_API_TIMEOUT: Duration = Duration::from_secs(2);
/// The bound on a change to a proxy the checks see down: the command (reaching its API, which
/// may mean a new SSH session, gets twice that).
pub const SUSPECT_WITHIN: Duration = Duration::from_secs(1);

/// How long a launched machine may take to run and answer SSH when the step gives no bound.
const BOOT: Duration = Duration::from_secs(120);
/// How often a launched instance's console is read for its host keys.
const HOST_KEYS_POLL: Duration = Duration::from_secs(2);

/// How to reach `machine` at `addr` over SSH, as the topology says (its `ssh` settings, or
/// medic's defaults for a machine the topology does not name).
pub fn ssh_host(top: &Topology, machine: &str, addr: IpAddr) -> Host {
    let settings = top.machine(machine).map(|m| top.ssh_for(m));
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

/// Maps a cloud error to the failing step's error.
fn cloud_err(index: usize, kind: &'static str) -> impl Fn(medic_cloud::CloudError) -> ExecError {
    move |source| ExecError::Cloud {
        index,
        kind,
        source,
    }
}

/// Maps a redis error to the failing step's error.
fn redis_err(index: usize, kind: &'static str) -> impl Fn(RedisError) -> ExecError {
    move |source| ExecError::Redis {
        index,
        kind,
        source: Box::new(source),
    }
}

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
    /// The passwords of `redis_auth`, for the playbooks that render them.
    pub secrets: &'a Secrets,
    /// Every machine's address as known so far; launch steps add theirs.
    pub addresses: BTreeMap<String, IpAddr>,
    /// Admin calls to redis servers (each bounded by its timeout).
    pub redis: Redis,
    /// Fences skipped so far in this recovery (a resumed one is given those of its done steps).
    pub unfenced: Unfenced,
}

/// Replaces each `${KIND:NAME}` of `s` with what `value(KIND, NAME)` gives; one it gives
/// nothing for, and an unclosed `${`, stay as they are.
fn fill_placeholders<E>(
    s: &str,
    mut value: impl FnMut(&str, &str) -> Result<Option<String>, E>,
) -> Result<String, E> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let (kind, name) = after[..end].split_once(':').unwrap_or((&after[..end], ""));
        match value(kind, name)? {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[start..start + 2 + end + 1]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// What a step did, for the caller to show and the journal to keep.
#[derive(Debug, Clone)]
pub struct Done {
    pub summary: String,
    pub duration: Duration,
    pub output: StepOutput,
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

    /// Puts each `${address:M}` (M's address), `${secret:U}` (U's password),
    /// `${secret-sha256:U}` (its SHA-256 in hex) and `${tls:ca|cert|key}` (a `redis_tls` file)
    /// of `s` in.
    fn fill(&self, index: usize, s: &str) -> Result<String, ExecError> {
        fill_placeholders(s, |kind, name| {
            let secret = || {
                self.secrets
                    .password(name)
                    .ok_or_else(|| ExecError::NoSecret {
                        index,
                        user: name.to_owned(),
                    })
            };
            Ok(match kind {
                "address" => Some(
                    self.resolve(index, "playbook", &Addr::Of(name.to_owned()))?
                        .to_string(),
                ),
                "secret" => Some(secret()?.expose().to_owned()),
                "secret-sha256" => {
                    use sha2::Digest as _;
                    Some(format!("{:x}", sha2::Sha256::digest(secret()?.expose())))
                }
                "tls" => {
                    let files = self.secrets.tls().ok_or_else(|| ExecError::NoSecret {
                        index,
                        user: format!("redis_tls.{name}"),
                    })?;
                    match name {
                        "ca" => Some(files.ca.clone()),
                        "cert" => Some(files.cert.clone()),
                        "key" => Some(files.key.expose().to_owned()),
                        _ => None,
                    }
                }
                _ => None,
            })
        })
    }

    /// Replaces every placeholder in the variables (see [`Executor::fill`]).
    fn resolve_vars(
        &self,
        index: usize,
        v: &serde_json::Value,
    ) -> Result<serde_json::Value, ExecError> {
        use serde_json::Value;
        Ok(match v {
            Value::String(s) if s.contains("${") => Value::String(self.fill(index, s)?),
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
        ssh_host(self.topology, machine, addr)
    }

    /// Runs one step.
    pub async fn execute(&mut self, step: &Step) -> Result<Done, ExecError> {
        let started = Instant::now();
        let index = step.index;
        let kind = step.action.kind();
        let mut output = StepOutput::default();
        if !self.topology.managed()
            && matches!(
                step.action,
                Action::LaunchInstance { .. }
                    | Action::PrepareSpare { .. }
                    | Action::TerminateInstance { .. }
                    | Action::FenceAtSource { .. }
                    | Action::RunPlaybook { .. }
                    | Action::PersistProxyConfig { .. }
                    | Action::WaitReachable { .. }
            )
        {
            return Err(ExecError::Unmanaged { index, kind });
        }
        let summary = match &step.action {
            Action::LaunchInstance { spec } => {
                let (summary, addr, id) = self.launch(index, kind, spec).await?;
                output.address = Some(addr);
                output.instance_id = Some(id);
                summary
            }
            Action::PrepareSpare {
                spec,
                like,
                playbook,
                vars,
                stop,
                timeout_ms,
            } => {
                let (summary, addr, id) = self
                    .prepare_spare(index, kind, spec, like, playbook, vars, *stop, *timeout_ms)
                    .await?;
                output.address = Some(addr);
                output.instance_id = Some(id);
                summary
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
                .map_err(cloud_err(index, kind))?;
                format!("{machine} answers on {ip}:{port}")
            }
            Action::RunPlaybook {
                machine,
                address,
                playbook,
                vars,
            } => {
                self.playbook(index, kind, machine, address, playbook, vars)
                    .await?
            }
            Action::RunHook { .. }
            | Action::ServiceAddress { .. }
            | Action::CloudAddress { .. }
            | Action::ServiceRole { .. }
            | Action::UpsertDns { .. }
            | Action::FailoverDns { .. } => self.service_step(index, kind, &step.action).await?,
            Action::PromotePostgres {
                service, machine, ..
            } => {
                self.ensure_service_fenced(index, kind, service, machine)
                    .await?;
                self.promote_postgres(index, kind, &step.action).await?
            }
            // At the end of its plan: a standby that cannot be made to follow is skipped (the
            // recovery ends incomplete, saying why), not a failed recovery.
            Action::FollowPostgres { .. } => {
                match self.follow_postgres(index, kind, &step.action).await {
                    Ok(summary) => summary,
                    Err(e) => {
                        let why = format!("not made to follow the new primary: {e}");
                        output.skipped = Some(why.clone());
                        why
                    }
                }
            }
            Action::StopPostgres { .. } => self.stop_postgres(index, kind, &step.action).await?,
            Action::StartPostgres { .. } => self.start_postgres(index, kind, &step.action).await?,
            // A failure fails the step: the machine stays out, asked again after the backoff.
            Action::RejoinPostgres { .. } => {
                self.rejoin_postgres(index, kind, &step.action).await?
            }
            Action::Monitor { target } => format!("{target}: for the controller to watch"),
            Action::Unmonitor { target } => format!("{target}: no longer watched"),
            Action::Alert { message, .. } => message.clone(),
            Action::FenceServer {
                proxy,
                server,
                wait_sessions,
            } => {
                let (summary, skipped) = self
                    .proxy_change(
                        index,
                        kind,
                        proxy,
                        server,
                        ProxyChange::Fence(*wait_sessions),
                    )
                    .await?;
                if skipped {
                    self.unfenced.fences.push((proxy.clone(), server.clone()));
                    output.skipped = Some(summary.clone());
                }
                summary
            }
            Action::ActivateServer { proxy, server } => {
                let (summary, skipped) = self
                    .proxy_change(index, kind, proxy, server, ProxyChange::Activate)
                    .await?;
                output.skipped = skipped.then(|| summary.clone());
                summary
            }
            Action::PersistProxyConfig { proxy, servers } => {
                let (summary, skipped) = self.persist_proxy(index, kind, proxy, servers).await?;
                output.skipped = skipped.then(|| summary.clone());
                summary
            }
            Action::FenceAtSource {
                machine,
                instance_id,
            } => {
                let (summary, terminated) = self
                    .fence_at_source(index, kind, machine, instance_id.as_deref())
                    .await?;
                output.terminated = terminated;
                summary
            }
            Action::SetServerAddress {
                proxy,
                server,
                address,
                port,
            } => {
                let ip = self.resolve(index, kind, address)?;
                let to = SocketAddr::new(ip, *port);
                let (summary, skipped) = self
                    .proxy_change(index, kind, proxy, server, ProxyChange::Address(to))
                    .await?;
                output.skipped = skipped.then(|| summary.clone());
                summary
            }
            Action::PromoteReplica { .. }
            | Action::ReplicaOf { .. }
            | Action::WaitInSync { .. }
            | Action::PauseWrites { .. }
            | Action::Unpause { .. } => {
                self.redis_step(index, kind, &step.action, &mut output)
                    .await?
            }
            Action::TerminateInstance {
                machine,
                instance_id,
            } => {
                self.terminate(index, kind, machine, instance_id.as_deref())
                    .await?
            }
        };
        tracing::info!(step = index, kind, "{summary}");
        Ok(Done {
            summary,
            duration: started.elapsed(),
            output,
        })
    }

    /// Terminates the machine's instance: the one named, else every instance tagged as that
    /// machine of this topology. (A plan terminates before it launches, and the journal runs a
    /// launch only after the terminate is recorded done, so this never finds the replacement.)
    async fn terminate(
        &self,
        index: usize,
        kind: &'static str,
        machine: &str,
        id: Option<&str>,
    ) -> Result<String, ExecError> {
        let ids = self
            .instance_ids(index, kind, machine, id, "terminate")
            .await?;
        if ids.is_empty() {
            return Ok(format!("{machine}: no instance to terminate"));
        }
        let mut said = Vec::new();
        for id in &ids {
            let outcome = self
                .cloud
                .terminate(id)
                .await
                .map_err(cloud_err(index, kind))?;
            said.push(match outcome {
                medic_cloud::TerminateOutcome::Terminated => format!("{id} terminated"),
                medic_cloud::TerminateOutcome::AlreadyGone => format!("{id} already gone"),
            });
        }
        Ok(format!("{machine}: {}", said.join(", ")))
    }

    /// The instance `id`, or (without one) the instances tagged as `machine`'s; for `op`
    /// (`terminate`, `move address`), which several such instances refuse.
    async fn instance_ids(
        &self,
        index: usize,
        kind: &'static str,
        machine: &str,
        id: Option<&str>,
        op: &'static str,
    ) -> Result<Vec<String>, ExecError> {
        Ok(match id {
            Some(id) => vec![id.to_owned()],
            None => {
                let tags = BTreeMap::from([
                    (
                        medic_cloud::TAG_TOPOLOGY.to_owned(),
                        self.topology.name.value.clone(),
                    ),
                    (medic_cloud::TAG_MACHINE.to_owned(), machine.to_owned()),
                ]);
                let found: Vec<String> = self
                    .cloud
                    .find(&tags)
                    .await
                    .map_err(cloud_err(index, kind))?
                    .into_iter()
                    .filter(|i| !i.state.is_gone())
                    .map(|i| i.id)
                    .collect();
                // Without the instance medic recorded, a tag is all it has: several instances
                // carrying it are a look-alike among them, and none is terminated on a guess.
                if found.len() > 1 {
                    let what = if op == "terminate" {
                        format!(
                            "it terminates none; terminate the lost one yourself, then `medic recover {machine}`"
                        )
                    } else {
                        "it acts on none of them; terminate the look-alike, then retry".to_owned()
                    };
                    return Err(cloud_err(index, kind)(medic_cloud::CloudError::Invalid {
                        op,
                        message: format!(
                            "{} instances carry machine {machine}'s tags ({}) and medic recorded none of them: {what}",
                            found.len(),
                            found.join(", ")
                        ),
                    }));
                }
                found
            }
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

#[cfg(test)]
mod tests {
    use super::fill_placeholders;

    fn fill(s: &str) -> String {
        fill_placeholders::<()>(s, |kind, name| {
            Ok((kind == "address").then(|| format!("<{name}>")))
        })
        .unwrap_or_default()
    }

    #[test]
    fn placeholders_are_filled_and_anything_else_is_kept_as_it_is() {
        assert_eq!(fill("${address:a}:${address:b}"), "<a>:<b>");
        assert_eq!(fill("x ${other:a} y"), "x ${other:a} y");
        assert_eq!(fill("x ${address:a"), "x ${address:a");
        assert_eq!(fill("plain"), "plain");
        assert_eq!(fill("$ {address:a} ${address:b}"), "$ {address:a} <b>");
    }
}
