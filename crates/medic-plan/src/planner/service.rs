//! Plans for services (`services` in the topology): a failover to the first healthy standby,
//! the hooks around it, the record that follows the primary, and a machine's rejoining.
//!
//! # Guarantees (tests in `planner/tests.rs`)
//! - The failed primary's `on_fenced` hook runs before anything is promoted; on a machine that
//!   answers, its failure stops the plan (no second primary beside one not fenced).
//! - Only a standby that is neither failing its checks nor out (failed away from and not
//!   rejoined) is promoted; with none, the plan alerts and changes nothing.
//! - The record moves only after the new primary's `on_promote` hook succeeded.
//! - A machine failed away from counts as a standby again only after its `on_demote` hook.

use medic_topology::Service;
use serde_json::json;

use super::{PlanError, Planner};
use crate::step::*;
use crate::vars::addr_of;

impl<'a> Planner<'a> {
    fn service_named(&self, name: &str) -> Result<&'a Service, PlanError> {
        self.top
            .service(name)
            .ok_or_else(|| PlanError::UnknownService {
                service: name.to_owned(),
                known: self
                    .top
                    .services
                    .iter()
                    .map(|s| s.value.name.value.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    fn in_service(&self, s: &Service, machine: &str) -> Result<(), PlanError> {
        if s.machines().any(|m| m == machine) {
            return Ok(());
        }
        Err(PlanError::NotInService {
            service: s.name.value.clone(),
            machine: machine.to_owned(),
            on: s.machines().collect::<Vec<_>>().join(", "),
        })
    }

    /// The machine that is `s`'s primary now.
    fn primary_of(&self, s: &Service) -> String {
        self.state
            .services
            .get(&s.name.value)
            .map_or_else(|| s.primary.value.clone(), |st| st.primary.clone())
    }

    /// A whole machine of role `service` is lost: each service whose primary it is fails over;
    /// for the others it was a standby of, an alert. It is left out of monitoring: when it is
    /// back, `medic monitor` lets it rejoin (its `on_demote` hook first).
    pub(super) fn service_machine_lost(&mut self, machine: &str) {
        self.push(Action::Unmonitor {
            target: MonitorTarget::Machine {
                machine: machine.to_owned(),
            },
        });
        let services: Vec<&'a Service> = self.top.services_on(machine).collect();
        for s in services {
            if self.primary_of(s) == machine {
                if !self.service_fail_over(s, machine, true) {
                    return;
                }
            } else {
                self.alert(
                    AlertLevel::Warning,
                    format!(
                        "{machine}, a standby of service {}, is lost: the service runs without it",
                        s.name.value
                    ),
                );
            }
        }
        self.alert(
            AlertLevel::Warning,
            format!("{machine} is lost and out of monitoring: when it is back, `medic monitor {machine}`; it rejoins its services as a standby"),
        );
    }

    /// `service` fails its checks on `machine`, which answers otherwise.
    pub(super) fn service_down(&mut self, service: &str, machine: &str) -> Result<(), PlanError> {
        let s = self.service_named(service)?;
        self.in_service(s, machine)?;
        if self.primary_of(s) != machine {
            self.alert(
                AlertLevel::Warning,
                format!("{service}@{machine}, a standby, fails its checks: the service cannot fail over to it until it passes them"),
            );
            return Ok(());
        }
        let target = MonitorTarget::Machine {
            machine: machine.to_owned(),
        };
        self.push(Action::Unmonitor {
            target: target.clone(),
        });
        if self.service_fail_over(s, machine, false) {
            // Watched again: when it passes its checks it rejoins as a standby.
            self.push(Action::Monitor { target });
        }
        Ok(())
    }

    /// Fences `old` (its `on_fenced` hook), promotes the first healthy standby (its
    /// `on_promote` hook), records the new primary and moves the record to it. `silent`: the
    /// machine did not answer, so a hook that cannot reach it is skipped. False if nothing
    /// could be promoted (alerted).
    fn service_fail_over(&mut self, s: &'a Service, old: &str, silent: bool) -> bool {
        let name = &s.name.value;
        let st = self.state.services.get(name);
        let candidate = s
            .machines()
            .filter(|m| *m != old)
            .find(|m| st.is_none_or(|st| !st.out.contains(*m) && !st.down.contains(*m)))
            .map(str::to_owned);
        let Some(new) = candidate else {
            self.alert(
                AlertLevel::Critical,
                format!("service {name} is down on {old}, its primary, and no standby is healthy: nothing to fail over to"),
            );
            return false;
        };
        if let Some(hook) = &s.hooks.on_fenced {
            self.push(self.hook(s, "on_fenced", &hook.value, old, &new, old, silent));
        }
        if let Some(hook) = &s.hooks.on_promote {
            self.push(self.hook(s, "on_promote", &hook.value, &new, &new, old, false));
        }
        self.push(Action::ServiceRole {
            service: name.clone(),
            machine: new.clone(),
            role: ServiceRole::Primary,
        });
        let address = addr_of(self.state, &new);
        self.service_dns(s, &address);
        true
    }

    /// `machine`, failed away from, answers again: its `on_demote` hook, then it is a standby.
    pub(super) fn service_rejoin(&mut self, service: &str, machine: &str) -> Result<(), PlanError> {
        let s = self.service_named(service)?;
        self.in_service(s, machine)?;
        let primary = self.primary_of(s);
        if primary == machine {
            return Ok(());
        }
        if let Some(hook) = &s.hooks.on_demote {
            self.push(self.hook(
                s,
                "on_demote",
                &hook.value,
                machine,
                &primary,
                machine,
                false,
            ));
        }
        self.push(Action::ServiceRole {
            service: service.to_owned(),
            machine: machine.to_owned(),
            role: ServiceRole::Standby,
        });
        Ok(())
    }

    /// The step that runs `hook` on `on`; `primary` is the primary after the change,
    /// `previous` the one before.
    #[allow(clippy::too_many_arguments)]
    fn hook(
        &self,
        s: &Service,
        hook: &str,
        playbook: &str,
        on: &str,
        primary: &str,
        previous: &str,
        skip_unreachable: bool,
    ) -> Action {
        let at = |m: &str| json!({ "name": m, "address": addr_of(self.state, m).to_string() });
        Action::RunHook {
            service: s.name.value.clone(),
            hook: hook.to_owned(),
            machine: on.to_owned(),
            address: addr_of(self.state, on),
            playbook: playbook.to_owned(),
            vars: json!({
                "service": { "name": s.name.value, "port": s.port.value },
                "machine": at(on),
                "primary": at(primary),
                "previous": at(previous),
            }),
            skip_unreachable,
        }
    }

    /// Points `s`'s record at `address` (the primary's), if it has one.
    pub(super) fn service_dns(&mut self, s: &Service, address: &Addr) {
        let (Some(d), Some((target, ttl))) = (&s.dns, self.dns_target()) else {
            return;
        };
        let ttl = d
            .value
            .ttl
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(ttl);
        self.push(Action::UpsertDns {
            target,
            name: d.value.name.trim_end_matches('.').to_owned(),
            ttl,
            values: vec![address.clone()],
        });
    }
}
