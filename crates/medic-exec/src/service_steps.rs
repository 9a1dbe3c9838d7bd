//! The steps of a service's failover and switchover the executor runs itself: its role hooks,
//! the address that moves (on a machine, or in the cloud), the role a proxy routes it by, and
//! the DNS that follows the primary (a plain record, or Route 53's failover pair). PostgreSQL's
//! own steps are in `pg_*.rs`.

use std::time::Duration;

use medic_cloud::{Cloud, Dns, upsert_and_wait};
use medic_plan::Action;

use crate::{ExecError, Executor, cloud_err, hook};

impl<C: Cloud, D: Dns> Executor<'_, C, D> {
    /// Runs `action`, one of the service steps above: its summary.
    pub(crate) async fn service_step(
        &mut self,
        index: usize,
        kind: &'static str,
        action: &Action,
    ) -> Result<String, ExecError> {
        Ok(match action {
            Action::RunHook {
                service,
                hook,
                machine,
                address,
                playbook,
                vars,
                skip_unreachable,
            } => {
                if hook == "on_promote" {
                    self.ensure_service_fenced(index, kind, service, machine)
                        .await?;
                }
                let ip = self.resolve(index, kind, address)?;
                match self.unreachable(machine, ip, *skip_unreachable).await {
                    Some(why) => format!(
                        "skipped: {why}; a majority of its observers found it silent: it is demoted when it answers again"
                    ),
                    None => {
                        let ran = self
                            .playbook(index, kind, machine, address, playbook, vars)
                            .await?;
                        format!("{hook} of {service}: {ran}")
                    }
                }
            }
            Action::ServiceAddress {
                service,
                machine,
                address,
                ip,
                up,
                skip_unreachable,
                ..
            } => {
                let at = self.resolve(index, kind, address)?;
                match self.unreachable(machine, at, *skip_unreachable).await {
                    Some(why) => format!(
                        "skipped: {why}; a majority of its observers found it silent: the address is taken down when it rejoins"
                    ),
                    None => {
                        let command = action.address_command().unwrap_or_default();
                        self.address_command(index, kind, machine, at, &command)
                            .await?;
                        format!(
                            "{service}@{machine}: {ip} {}",
                            if *up { "up, announced" } else { "down" }
                        )
                    }
                }
            }
            Action::CloudAddress {
                service,
                machine,
                instance_id,
                ip,
                elastic_ip,
                up: false,
            } => {
                let ids = self
                    .instance_ids(
                        index,
                        kind,
                        machine,
                        instance_id.as_deref(),
                        "release address",
                    )
                    .await?;
                let mut said = Vec::new();
                for id in &ids {
                    said.push(
                        self.cloud
                            .release_address(id, *ip, elastic_ip.as_deref())
                            .await
                            .map_err(cloud_err(index, kind))?,
                    );
                }
                if said.is_empty() {
                    said.push(format!("no instance: {ip} is on none of {machine}'s"));
                }
                format!("{service}@{machine}: {}", said.join("; "))
            }
            Action::CloudAddress {
                service,
                machine,
                instance_id,
                ip,
                elastic_ip,
                up: true,
            } => {
                let ids = self
                    .instance_ids(index, kind, machine, instance_id.as_deref(), "move address")
                    .await?;
                let [id] = ids.as_slice() else {
                    return Err(cloud_err(index, kind)(medic_cloud::CloudError::Invalid {
                        op: "move address",
                        message: format!(
                            "{service}: machine {machine} has no instance to move {ip} to"
                        ),
                    }));
                };
                let moved = self
                    .cloud
                    .move_address(id, *ip, elastic_ip.as_deref())
                    .await
                    .map_err(cloud_err(index, kind))?;
                format!("{service}@{machine}: {moved}")
            }
            Action::ServiceRole {
                service,
                machine,
                role,
            } => match role {
                medic_plan::ServiceRole::Primary => {
                    self.ensure_service_fenced(index, kind, service, machine)
                        .await?;
                    format!("{service}@{machine}: primary now")
                }
                medic_plan::ServiceRole::Standby => format!("{service}@{machine}: a standby now"),
                medic_plan::ServiceRole::Out => {
                    format!("{service}@{machine}: out until it answers and rejoins")
                }
                medic_plan::ServiceRole::Inactive => {
                    format!("{service}@{machine}: out until it passes its checks again")
                }
                medic_plan::ServiceRole::Active => format!("{service}@{machine}: serving again"),
            },
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
                        .map_err(cloud_err(index, kind))?;
                        format!("{name} -> {ips:?}, in sync")
                    }
                    None if self.skip_dns => {
                        format!("skipped: no DNS provider in this run ({name} -> {ips:?})")
                    }
                    None => return Err(ExecError::NoDns { index }),
                }
            }
            Action::FailoverDns {
                name,
                ttl,
                primary,
                secondary,
                http_path,
                https,
                server_name,
                port,
                owner,
                ..
            } => {
                let p = self.resolve(index, kind, primary)?;
                let s = self.resolve(index, kind, secondary)?;
                let Some(dns) = self.dns else {
                    return Err(ExecError::NoDns { index });
                };
                let health = medic_cloud::HealthSpec {
                    http_path: http_path.clone(),
                    https: *https,
                    server_name: server_name.clone(),
                    port: *port,
                    owner: owner.clone(),
                };
                let sets = [
                    medic_cloud::FailoverSet {
                        primary: true,
                        value: p,
                        health: health.clone(),
                    },
                    medic_cloud::FailoverSet {
                        primary: false,
                        value: s,
                        health,
                    },
                ];
                hook::failover_and_wait(dns, name, *ttl, &sets)
                    .await
                    .map_err(cloud_err(index, kind))?;
                format!("{name}: PRIMARY {p}, SECONDARY {s}, each with its health check, in sync")
            }
            _ => return Err(ExecError::Unsupported { index, kind }),
        })
    }
}
