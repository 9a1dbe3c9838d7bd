//! Start-up: where every machine is (the cloud's instances by tag, or the topology's
//! addresses), who is master of each shard, the recoveries the journal left unfinished, and
//! SSH sessions opened before a failover needs them.
//!
//! # Who is master
//! The saved state is the truth, and each shard's generation (bumped by every change of
//! master) says which record is newest. A server that answers as master is adopted only when
//! - nothing was saved (a first start: the deployment's own roles), or
//! - the recorded master answers as a **replica of it** (someone moved the role while medic
//!   was away, and the old master already follows the new one: nothing it held is lost).
//!
//! A recorded master that does not answer in time is kept: another server answering as master
//! is then a stale one from before a failover (its writes since are not the shard's), and the
//! checks fence it — never the other way round.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use medic_cloud::{Cloud, Dns};
use medic_plan::{AlertLevel, ReplicaState, ShardState};
use medic_redis::{Redis, RedisAddr, RedisAdmin as _};
use medic_topology::Topology;

use super::{Controller, ControllerError, WITNESS_WITHIN, lock};
use crate::core::startup::{Adoption, who_is_master};
use crate::core::{Resume, add_new};

impl<C: Cloud + 'static, D: Dns + 'static> Controller<C, D> {
    pub(super) async fn discover(&self, had_state: bool) -> Result<(), ControllerError> {
        let loaded = self.top();
        let top = &loaded.topology;
        let mut observed = lock(&self.inner.st).core.saved.observed.clone();
        add_new(&mut observed, top);
        if top.provider.value.can_launch() {
            // The recoveries this controller ran: an instance one of them launched is medic's.
            let ours: std::collections::BTreeSet<String> = self
                .inner
                .journal
                .all()
                .map(|logs| logs.into_iter().map(|l| l.id).collect())
                .unwrap_or_default();
            for m in top.machines.iter().map(|m| &m.value) {
                if m.role.value == medic_topology::Role::Monitor {
                    continue;
                }
                let tags = BTreeMap::from([
                    (medic_cloud::TAG_TOPOLOGY.to_owned(), top.name.value.clone()),
                    (medic_cloud::TAG_MACHINE.to_owned(), m.name.value.clone()),
                ]);
                match self.inner.cloud.find(&tags).await {
                    Ok(found) => {
                        let recorded = observed
                            .machines
                            .get(&m.name.value)
                            .and_then(|s| s.instance_id.clone());
                        let choice =
                            medic_cloud::adopt::choose_instance(&found, recorded.as_deref(), |r| {
                                ours.contains(r)
                            });
                        for id in &choice.foreign {
                            self.alert(
                                AlertLevel::Warning,
                                format!(
                                    "instance {id} carries medic's tags for machine {} of topology {} but medic did not launch it: it is neither adopted nor terminated; terminate it or remove its tags if it is not yours",
                                    m.name.value, top.name.value
                                ),
                            );
                        }
                        let Some(i) = choice.adopt else {
                            tracing::warn!(machine = %m.name.value, "No instance of medic's found for the machine.");
                            continue;
                        };
                        let known = recorded.as_deref() == Some(i.id.as_str());
                        let st = observed.machines.entry(m.name.value.clone()).or_insert(
                            medic_plan::MachineState {
                                address: None,
                                instance_id: None,
                            },
                        );
                        st.address = i.address.or(st.address);
                        st.instance_id = Some(i.id.clone());
                        // The instance medic recorded keeps the key medic learned for it (a
                        // key is never replaced for the same instance).
                        let has_key = i.address.is_some_and(|ip| {
                            self.inner
                                .ssh
                                .knows(&medic_exec::ssh_host(top, &m.name.value, ip))
                        });
                        if !(known && has_key) {
                            self.learn_host_keys(top, &m.name.value, i.address, &i.id)
                                .await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(machine = %m.name.value, error = %e, "Cannot look the machine up.")
                    }
                }
            }
        }
        let tls = self.inner.redis.tls.is_some();
        let mut mismatched = Vec::new();
        for s in top.shards.iter().map(|s| &s.value) {
            let mut answers = BTreeMap::new();
            for m in Topology::shard_machines(s) {
                let Some(ip) = observed.address(m) else {
                    continue;
                };
                let at = SocketAddr::new(ip, s.port.value);
                if let Some(info) = replication_now(&self.inner.redis, at).await {
                    answers.insert(m.to_owned(), info);
                } else if medic_redis::speaks_tls(at, WITNESS_WITHIN).await == Some(!tls) {
                    // Taken for silent, such a server would be failed over, and so would every
                    // other: medic does not start on a deployment that is not as described.
                    mismatched.push(format!(
                        "{}@{m} ({at}) {}",
                        s.name.value,
                        if tls {
                            "answers in the clear"
                        } else {
                            "speaks TLS (it closes a clear-text connection at once)"
                        }
                    ));
                }
            }
            let recorded = observed.shards.get(&s.name.value).map(|x| x.master.clone());
            let Adoption { adopt, alert } = who_is_master(
                &s.name.value,
                s.port.value,
                had_state,
                recorded.as_deref(),
                &answers,
                |m| observed.address(m),
            );
            if let Some(a) = alert {
                self.alert(AlertLevel::Critical, a);
            }
            let offset = |m: &str| answers.get(m).map(|i| i.replica_offset.unwrap_or(i.offset));
            match adopt {
                Some(master) => {
                    let generation = observed.shards.get(&s.name.value).map_or(0, |x| {
                        x.generation + u64::from(recorded.as_ref() != Some(&master))
                    });
                    let replicas = Topology::shard_machines(s)
                        .filter(|m| *m != master)
                        .map(|m| ReplicaState {
                            machine: m.to_owned(),
                            offset: offset(m),
                        })
                        .collect();
                    observed.shards.insert(
                        s.name.value.clone(),
                        ShardState {
                            master_offset: offset(&master),
                            master,
                            replicas,
                            generation,
                            missing_on: Default::default(),
                        },
                    );
                }
                None => {
                    // Offsets as they answered; roles as recorded.
                    if let Some(x) = observed.shards.get_mut(&s.name.value) {
                        for r in &mut x.replicas {
                            if let Some(o) = offset(&r.machine) {
                                r.offset = Some(o);
                            }
                        }
                    }
                }
            }
        }
        self.pg_rights(top, &observed).await;
        if !mismatched.is_empty() {
            return Err(ControllerError::TlsMismatch(format!(
                "{} redis_tls; {}: restart those servers from their playbook first (docs/topology.md, redis_tls)",
                if tls {
                    "the topology has"
                } else {
                    "the topology has no"
                },
                mismatched.join(", ")
            )));
        }
        let mut st = lock(&self.inner.st);
        st.core.saved.observed = observed;
        self.save(&st);
        Ok(())
    }

    /// Whether medic may promote each database it would promote (a service's `postgres`
    /// check, its standbys not read-only): a user without the right is told at the start, not
    /// found out at a failover, which would stop at that step. A server that does not answer
    /// now is left to the checks.
    async fn pg_rights(&self, top: &Topology, observed: &medic_plan::ObservedState) {
        for s in top.services.iter().map(|s| &s.value) {
            let Some((port, check)) = s.postgres_check().filter(|_| !s.standbys_read_only) else {
                continue;
            };
            for m in s.machines() {
                let Some(ip) = observed.address(m) else {
                    continue;
                };
                let Ok(config) = medic_exec::postgres::login(
                    ip,
                    port,
                    check.pg_user(),
                    check.pg_database(),
                    check.password_file.as_deref(),
                ) else {
                    continue;
                };
                let at = SocketAddr::new(ip, port);
                if medic_exec::postgres::may_promote(&config, at, WITNESS_WITHIN).await == Ok(false)
                {
                    self.alert(
                        AlertLevel::Warning,
                        format!(
                            "service {}: medic's PostgreSQL user {} may not call pg_promote() on {m} ({at}): a failover to {m} would stop at that step; `GRANT EXECUTE ON FUNCTION pg_promote TO {}` (or make it a superuser)",
                            s.name.value,
                            check.pg_user(),
                            check.pg_user()
                        ),
                    );
                }
                // With three machines or more, the others follow the promoted one.
                if s.machines().count() < 3 {
                    continue;
                }
                if let Ok(missing) =
                    medic_exec::pg_follow::follow_rights_missing(&config, at, WITNESS_WITHIN).await
                    && !missing.is_empty()
                {
                    self.alert(
                        AlertLevel::Warning,
                        format!(
                            "service {}: medic's PostgreSQL user {} may not make {m} ({at}) follow a new primary: after a failover that step would be skipped, and {m} would not replicate from the new primary; as a superuser, on the primary: {}",
                            s.name.value,
                            check.pg_user(),
                            missing.join("; "),
                        ),
                    );
                }
            }
        }
    }

    pub(super) async fn learn_host_keys(
        &self,
        top: &Topology,
        machine: &str,
        ip: Option<IpAddr>,
        id: &str,
    ) {
        let Some(ip) = ip else {
            return;
        };
        let Ok(keys) = self.inner.cloud.host_keys(id).await else {
            return;
        };
        let host = medic_exec::ssh_host(top, machine, ip);
        for k in keys {
            if let Err(e) = self.inner.ssh.learn_host_key(&host, &k) {
                tracing::warn!(machine, error = %e, "Cannot record the host key.");
            }
        }
    }

    /// Queues every recovery the journal says is unfinished, oldest first.
    pub(super) fn resume_open(&self) -> Result<(), ControllerError> {
        let open = self.inner.journal.open_recoveries()?;
        open.alert_damaged(|level, text| self.alert(level, text));
        for log in open {
            tracing::warn!(recovery = %log.id, next = ?log.next_step(), "Resuming an unfinished recovery.");
            let resume = Resume {
                id: log.id.clone(),
                plan: log.plan.clone(),
                done: log
                    .done
                    .iter()
                    .map(|(i, d)| (*i, d.output.clone()))
                    .collect(),
                launched_ms: log
                    .plan
                    .steps
                    .iter()
                    .filter(|s| matches!(s.action, medic_plan::Action::LaunchInstance { .. }))
                    .filter_map(|s| log.done.get(&s.index).map(|d| (s.index, d.at_ms)))
                    .collect(),
                begun: log.begun.clone(),
            };
            let mut st = lock(&self.inner.st);
            st.core.resume(
                resume,
                log.trigger.clone(),
                log.first_failure_ms,
                log.master_last_ok_ms,
                crate::journal::now_ms(),
            );
            self.save(&st);
        }
        // A switchback asked for before the restart (or under the former leader) and not
        // ended: queued again, ahead of the rest.
        lock(&self.inner.st)
            .core
            .requeue_switchbacks(crate::journal::now_ms());
        Ok(())
    }

    /// Opens the SSH sessions a failover uses before they are needed (opening one costs
    /// ~200 ms): to every proxy, whose haproxy.cfg each runtime change is written into, and to
    /// every machine that may be asked as a witness.
    pub(super) fn warm_up_ssh(&self) {
        let c = self.clone();
        tokio::spawn(async move {
            let loaded = c.top();
            let top = &loaded.topology;
            let observed = lock(&c.inner.st).core.saved.observed.clone();
            let mut set = tokio::task::JoinSet::new();
            for m in top.machines.iter().map(|m| &m.value) {
                if m.role.value == medic_topology::Role::Monitor {
                    continue;
                }
                let name = m.name.value.clone();
                let Some(host) = observed
                    .address(&name)
                    .map(|ip| medic_exec::ssh_host(top, &name, ip))
                else {
                    continue;
                };
                let c = c.clone();
                let managed = top.managed();
                set.spawn(async move {
                    use medic_ssh::Remote as _;
                    match c.inner.ssh.run(&host, "true", Duration::from_secs(10)).await {
                        Ok(_) => {}
                        Err(e) if managed => {
                            tracing::warn!(machine = %name, error = %e, "No SSH session: this machine cannot be a first-hand witness, and runtime changes on it cannot be made permanent.");
                        }
                        // (An adopted deployment's runtime changes are never written by medic.)
                        Err(e) => {
                            tracing::info!(machine = %name, error = %e, "No SSH session: this machine cannot be a first-hand witness; its other observers are asked.");
                        }
                    }
                });
            }
            while set.join_next().await.is_some() {}
        });
    }
}

/// A server's `INFO replication` within the witnesses' bound (the admin client bounds each
/// call itself); `None` if it does not answer in time.
pub(super) async fn replication_now(
    client: &Redis,
    at: SocketAddr,
) -> Option<medic_redis::ReplicationInfo> {
    Redis {
        timeout: WITNESS_WITHIN,
        ..client.clone()
    }
    .replication(RedisAddr::new(at.ip(), at.port()))
    .await
    .ok()
}
