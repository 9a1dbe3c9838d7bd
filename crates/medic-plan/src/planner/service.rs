//! Plans for services (`services` in the topology): a failover to the first usable standby,
//! the hooks around it, the record that follows the primary, a machine's rejoining, a planned
//! switchover.
//!
//! # Guarantees (tests in `planner/service_tests.rs`)
//! - The failed primary's `on_fenced` hook runs before anything is promoted. On a machine
//!   that answers, a failure there stops the plan, and a primary without `on_fenced` whose
//!   machine answers is not failed over at all: no second primary beside one not fenced. It
//!   is skipped only on a machine a majority of its observers confirmed silent, and only if
//!   its SSH does not answer; such a machine is demoted when it answers again. (With
//!   `standbys_read_only`, where a second server taking no writes does no harm, no fence is
//!   required.)
//! - Only a standby that is neither in `down` (not seen passing its checks) nor out (failed
//!   away from, not rejoined) is promoted; with none, the plan alerts and changes nothing
//!   (the primary stays watched).
//! - The record moves, the service's own address comes up on the new primary, and the
//!   proxies send to it (`proxy`), only after its `on_promote` hook succeeded; the old
//!   primary is put in maintenance on every proxy and its address taken down first (the
//!   address skipped only where the hook may be), and so is a machine that rejoins. On the
//!   proxies only the primary is ever ready.
//! - A service that checks PostgreSQL (and whose standbys are not read-only) has the new
//!   primary's server promoted (`pg_promote()`) after the old one's fence, and recorded as
//!   the primary at once (a promotion cannot be undone: if a later step fails, that server is
//!   still judged as the primary, and no other is promoted beside it); then its `on_promote`
//!   hook. A planned switchover of such a service is refused while the standby is further
//!   behind than `policy.max_promotion_lag_bytes`.
//! - A machine failed away from counts as a standby again only after its `on_demote` hook.
//! - A planned switchover demotes the primary (`on_demote`, else `on_fenced`) before it
//!   promotes another, and never to a machine in `down` or out.
//! - With `rejoin`, the old primary's PostgreSQL is also stopped (`pg-stop`) after its
//!   fencing or demoting hook and before any promotion — a fence of its own, so such a
//!   service needs no hook to fail over or switch over; and a server failed away from is
//!   made a standby of the primary again (`pg-rejoin`) when it answers.

use medic_topology::Service;
use serde_json::json;

use super::{PlanError, Planner};
use crate::step::*;
use crate::vars::addr_of;

impl<'a> Planner<'a> {
    pub(super) fn service_named(&self, name: &str) -> Result<&'a Service, PlanError> {
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

    pub(super) fn in_service(&self, s: &Service, machine: &str) -> Result<(), PlanError> {
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
    pub(super) fn primary_of(&self, s: &Service) -> String {
        self.state
            .services
            .get(&s.name.value)
            .map_or_else(|| s.primary.value.clone(), |st| st.primary.clone())
    }

    /// Whom a failover of `s` away from `old` promotes: the standby medic's own promotion
    /// step was asked to promote in a recovery that failed there, if it answered writable at
    /// its last check (its `pg_promote()` finished after the step gave up) — whatever its
    /// checks say, since promoting another beside it would make two primaries; else a usable
    /// standby. (A standby writable for any other reason is not chosen: its writes may have
    /// forked from the primary's long ago; that is an alert for a person.)
    fn failover_target(&self, s: &Service, old: &str) -> Option<String> {
        match self.state.services.get(&s.name.value) {
            Some(st) if st.promoted_unrecorded(old) && !s.standbys_read_only => {
                st.promoting.clone()
            }
            _ => self.usable_standby(s, old),
        }
    }

    /// A standby of `s` that may be promoted: not failing its checks (the controller keeps
    /// `down`: a machine not yet seen passing `rise` checks in a row is in it) and not failed
    /// away from without rejoining. The first in the topology's order.
    fn usable_standby(&self, s: &Service, besides: &str) -> Option<String> {
        let st = self.state.services.get(&s.name.value);
        let position = |m: &str| st.and_then(|st| st.positions.get(m)).copied();
        // The most advanced by the positions last seen (a service whose check reports none
        // has none: its order decides), the topology's order breaking ties.
        s.machines()
            .filter(|m| *m != besides)
            .filter(|m| st.is_none_or(|st| !st.out.contains(*m) && !st.down.contains(*m)))
            .enumerate()
            .max_by_key(|(i, m)| (position(m), std::cmp::Reverse(*i)))
            .map(|(_, m)| m.to_owned())
    }

    /// A whole machine of role `service` is lost (a majority of its observers confirm it is
    /// silent): each service whose primary it is fails over; of the others it is out. It stays
    /// watched: when it answers again it rejoins (its `on_demote` hook first), so a primary
    /// that comes back after a failover is demoted then, never taken for one.
    pub(super) fn service_machine_lost(&mut self, machine: &str) {
        let target = MonitorTarget::Machine {
            machine: machine.to_owned(),
        };
        self.push(Action::Unmonitor {
            target: target.clone(),
        });
        let services: Vec<&'a Service> = self.top.services_on(machine).collect();
        for s in services {
            if s.active_active() {
                if !self.active_kept(s, machine) {
                    self.active_take_out(s, machine, true);
                }
            } else if self.primary_of(s) == machine {
                self.service_fail_over(s, machine, true);
            } else {
                self.push(Action::ServiceRole {
                    service: s.name.value.clone(),
                    machine: machine.to_owned(),
                    role: ServiceRole::Out,
                });
                self.alert(
                    AlertLevel::Warning,
                    format!(
                        "{machine}, a standby of service {}, is lost: the service runs without it until it answers again and rejoins",
                        s.name.value
                    ),
                );
            }
        }
        self.push(Action::Monitor { target });
    }

    /// `service` fails its checks on `machine`, which answers otherwise.
    pub(super) fn service_down(&mut self, service: &str, machine: &str) -> Result<(), PlanError> {
        let s = self.service_named(service)?;
        self.in_service(s, machine)?;
        if s.active_active() {
            if !self.active_kept(s, machine) {
                let target = MonitorTarget::Machine {
                    machine: machine.to_owned(),
                };
                self.push(Action::Unmonitor {
                    target: target.clone(),
                });
                self.active_take_out(s, machine, false);
                self.push(Action::Monitor { target });
            }
            return Ok(());
        }
        if self.primary_of(s) != machine {
            self.alert(
                AlertLevel::Warning,
                format!("{service}@{machine}, a standby, fails its checks: the service cannot fail over to it until it passes them"),
            );
            return Ok(());
        }
        // Its machine answers: it may still serve clients. Without a hook to fence it (or,
        // with `rejoin`, medic's own stop of its PostgreSQL), a second primary would run
        // beside it.
        if s.hooks.on_fenced.is_none() && s.rejoin.is_none() && !s.standbys_read_only {
            self.alert(
                AlertLevel::Critical,
                format!("service {service} fails its checks on {machine}, its primary, whose machine still answers; it has no on_fenced hook (nor rejoin, with which medic stops its PostgreSQL), so medic cannot stop it serving and does not promote another beside it: stop it by hand, then `medic switchover {service}`"),
            );
            return Ok(());
        }
        let Some(new) = self.failover_target(s, machine) else {
            self.no_standby(s, machine);
            return Ok(());
        };
        if let Some(why) = self.promotion_refused(s, machine, &new) {
            self.alert(AlertLevel::Critical, why);
            return Ok(());
        }
        let target = MonitorTarget::Machine {
            machine: machine.to_owned(),
        };
        self.push(Action::Unmonitor {
            target: target.clone(),
        });
        self.service_fail_over(s, machine, false);
        // Watched again: when it passes its checks it rejoins as a standby.
        self.push(Action::Monitor { target });
        Ok(())
    }

    fn no_standby(&mut self, s: &Service, old: &str) {
        self.alert(
            AlertLevel::Critical,
            format!("service {} is down on {old}, its primary, and no standby has passed its checks: nothing to fail over to (medic fails over as soon as one does)", s.name.value),
        );
    }

    /// Fences `old` (its `on_fenced` hook), promotes the first usable standby (its
    /// `on_promote` hook), records the new primary and moves the record to it. `silent`: a
    /// majority of the machine's observers confirmed it silent, so a hook that cannot reach it
    /// is skipped (it is demoted when it answers again). Alerts if nothing can be promoted.
    fn service_fail_over(&mut self, s: &'a Service, old: &str, silent: bool) {
        let name = &s.name.value;
        let Some(new) = self.failover_target(s, old) else {
            self.push(Action::ServiceRole {
                service: name.clone(),
                machine: old.to_owned(),
                role: ServiceRole::Out,
            });
            self.no_standby(s, old);
            return;
        };
        if let Some(why) = self.promotion_refused(s, old, &new) {
            // Nothing changes: `old` stays the primary, whose data may be the only copy.
            self.alert(AlertLevel::Critical, why);
            return;
        }
        if let Some(unknown) = self.position_unknown(s, old, &new) {
            self.alert(
                AlertLevel::Warning,
                format!("service {}: {unknown}: {new} is promoted without knowing what it lacks of {old}'s writes", s.name.value),
            );
        }
        // The proxies and the address first: clients stop reaching the old primary before
        // anything else.
        self.service_on_proxies(s, old, false, !silent);
        self.service_address(s, old, false, silent);
        if let Some(hook) = &s.hooks.on_fenced {
            self.push(self.hook(s, "on_fenced", &hook.value, old, &new, old, silent, "down"));
        }
        if let Some(stop) = self.pg_stop(s, old, silent, None) {
            self.push(stop);
        }
        let promoted = self.pg_promote(s, &new);
        if let Some(hook) = &s.hooks.on_promote {
            // The old primary has just failed: the new one serves alone.
            let step = self.hook(
                s,
                "on_promote",
                &hook.value,
                &new,
                &new,
                old,
                false,
                "production_alone",
            );
            self.push(step);
        }
        if !promoted {
            self.push(Action::ServiceRole {
                service: name.clone(),
                machine: new.clone(),
                role: ServiceRole::Primary,
            });
        }
        self.service_on_proxies(s, &new, true, false);
        self.service_address(s, &new, true, false);
        let address = addr_of(self.state, &new);
        self.service_dns(s, &address);
        if promoted {
            self.pg_follow(s, &new, old);
        }
    }

    /// On every proxy (if the service is routed through them, `proxy`): `machine`'s server
    /// made ready (`up`), or put in maintenance with its sessions shut (`wait_sessions`: until
    /// HAProxy shows none left, where the server may still answer).
    pub(super) fn service_on_proxies(
        &mut self,
        s: &Service,
        machine: &str,
        up: bool,
        wait_sessions: bool,
    ) {
        if s.proxy.is_none() {
            return;
        }
        for proxy in self.proxies() {
            let server = ServerRef {
                backend: crate::vars::service_backend(self.top, &s.name.value),
                server: machine.to_owned(),
            };
            self.push(if up {
                Action::ActivateServer { proxy, server }
            } else {
                Action::FenceServer {
                    proxy,
                    server,
                    wait_sessions,
                }
            });
        }
    }

    /// Brings the service's own address up on `machine` (`up`) or takes it down there, if
    /// the service has one.
    pub(super) fn service_address(&mut self, s: &Service, machine: &str, up: bool, skip: bool) {
        let Some(a) = &s.address else {
            return;
        };
        // On EC2 the VPC delivers the address only to the instance it is assigned to: taken
        // (with its Elastic IP) from the old primary's instance at the API before the address
        // is taken down inside it (whatever state that machine is in: a fence that needs no
        // answer from it), assigned to the new one's before it is brought up inside.
        let aws = matches!(self.top.provider.value, medic_topology::Provider::Aws(_));
        if let (true, Some((ip, _))) = (aws, a.value.parsed()) {
            self.push(Action::CloudAddress {
                service: s.name.value.clone(),
                machine: machine.to_owned(),
                instance_id: self
                    .state
                    .machines
                    .get(machine)
                    .and_then(|m| m.instance_id.clone()),
                ip,
                elastic_ip: a.value.elastic_ip.clone(),
                up,
            });
        }
        self.push(Action::ServiceAddress {
            service: s.name.value.clone(),
            machine: machine.to_owned(),
            address: addr_of(self.state, machine),
            ip: a.value.ip.clone(),
            interface: a.value.interface.clone(),
            up,
            skip_unreachable: skip,
            detect_duplicate: !aws,
        });
    }

    /// A planned change of primary (`medic switchover SERVICE [--to MACHINE]`, or an
    /// automatic failback): the primary is demoted first (its `on_demote` hook, else its
    /// `on_fenced`), so it stops serving as primary before another starts; then the new one's
    /// `on_promote`; both roles recorded; the record moved.
    pub(super) fn service_switchover(
        &mut self,
        service: &str,
        to: Option<&str>,
    ) -> Result<(), PlanError> {
        let s = self.service_named(service)?;
        let cannot = |reason: String| PlanError::CannotSwitch {
            shard: service.to_owned(),
            reason,
        };
        if s.active_active() {
            return Err(cannot(
                "every machine of an active_active service serves: there is no primary to move (a machine out of it is put back once it passes its checks)".to_owned(),
            ));
        }
        let old = self.primary_of(s);
        if to == Some(old.as_str()) {
            self.service_reassert(s, &old);
            return Ok(());
        }
        let demote = [
            ("on_demote", &s.hooks.on_demote),
            ("on_fenced", &s.hooks.on_fenced),
        ]
        .into_iter()
        .find_map(|(n, h)| Some((n, h.as_ref()?)));
        if demote.is_none() && s.rejoin.is_none() && !s.standbys_read_only {
            return Err(cannot(format!(
                "it has no on_demote or on_fenced hook (nor rejoin, with which medic stops its PostgreSQL) to make {old} stop serving as its primary first"
            )));
        }
        let st = self.state.services.get(service);
        let usable = |m: &str| st.is_none_or(|st| !st.out.contains(m) && !st.down.contains(m));
        let new = match to {
            Some(m) => {
                self.in_service(s, m)?;
                if !usable(m) {
                    return Err(cannot(format!(
                        "{m} has not passed its checks lately or has not rejoined as a standby"
                    )));
                }
                m.to_owned()
            }
            None => self
                .usable_standby(s, &old)
                .ok_or_else(|| cannot("it has no standby that passes its checks".to_owned()))?,
        };
        if let Some((behind, max)) = self.too_far_behind(s, &old, &new) {
            return Err(cannot(format!(
                "{new} is {behind} bytes behind {old} as last seen (policy.max_promotion_lag_bytes is {max}); wait until it has caught up"
            )));
        }
        let state = if s.primary.value == old {
            "production_as_standby"
        } else {
            "standby"
        };
        // Clients through the proxies stop reaching it first.
        self.service_on_proxies(s, &old, false, true);
        if let Some((hook_name, hook)) = demote {
            self.push(self.hook(s, hook_name, &hook.value, &old, &new, &old, false, state));
        }
        // A promoted standby must have all the stopped primary's WAL: a planned switchover
        // loses nothing (a read-only copy is never promoted).
        let then = (!s.standbys_read_only).then_some(new.as_str());
        if let Some(stop) = self.pg_stop(s, &old, false, then) {
            self.push(stop);
        }
        self.service_address(s, &old, false, false);
        let promoted = self.pg_promote(s, &new);
        let demoted = Action::ServiceRole {
            service: service.to_owned(),
            machine: old.clone(),
            role: ServiceRole::Standby,
        };
        if promoted && s.rejoin.is_none() {
            // Demoted already: recorded with the promotion, so that while `on_promote` runs
            // the old primary is not taken for one failed away from (and demoted again).
            self.push(demoted.clone());
        }
        // With `rejoin`, its server was stopped: it stays out (the new primary's record puts
        // it there) until it is made a standby of the new one and passes its checks — at its
        // next check, as any machine failed away from, retried until it is.
        if let Some(hook) = &s.hooks.on_promote {
            let state = if s.primary.value == new {
                "production"
            } else {
                "standby_as_production"
            };
            self.push(self.hook(s, "on_promote", &hook.value, &new, &new, &old, false, state));
        }
        if !promoted {
            self.push(Action::ServiceRole {
                service: service.to_owned(),
                machine: new.clone(),
                role: ServiceRole::Primary,
            });
            self.push(demoted);
        }
        self.service_on_proxies(s, &new, true, false);
        self.service_address(s, &new, true, false);
        let address = addr_of(self.state, &new);
        self.service_dns(s, &address);
        if promoted {
            self.pg_follow(s, &new, &old);
        }
        Ok(())
    }

    /// `medic switchover SERVICE --to P` where P is its primary already: what follows the
    /// record of a new primary is done again — P's PostgreSQL started as the primary if
    /// medic fenced it (a switchover that failed before its promotion: `pg-start`), P's
    /// `on_promote` hook, P alone ready on the
    /// proxies, its address brought up, the record pointed at it — for a failover that stopped after the record (its hook, the
    /// address or the DNS change failed), whose retries would not (P is the primary).
    fn service_reassert(&mut self, s: &'a Service, primary: &str) {
        // Its database serving first: started again if a switchover's pg-stop fenced it
        // (a switchover that failed before its promotion); nothing if it runs as the primary.
        if let Some(start) = self.pg_start(s, primary) {
            self.push(start);
        }
        if let Some(hook) = &s.hooks.on_promote {
            let st = self.state.services.get(&s.name.value);
            let alone = st.is_some_and(|st| {
                s.machines()
                    .any(|m| m != primary && (st.out.contains(m) || st.down.contains(m)))
            });
            let state = if alone {
                "production_alone"
            } else if s.primary.value == primary {
                "production"
            } else {
                "standby_as_production"
            };
            let step = self.hook(
                s,
                "on_promote",
                &hook.value,
                primary,
                primary,
                primary,
                false,
                state,
            );
            self.push(step);
        }
        // Every other machine off the proxies first (one made ready by hand), then the
        // primary ready.
        for m in s.machines().filter(|m| *m != primary) {
            self.service_on_proxies(s, m, false, false);
        }
        self.service_on_proxies(s, primary, true, false);
        self.service_address(s, primary, true, false);
        let address = addr_of(self.state, primary);
        self.service_dns(s, &address);
        if !s.standbys_read_only {
            self.pg_follow(s, primary, primary);
        }
    }

    /// `machine`, failed away from, answers again: its address taken, its `on_demote` hook,
    /// then — if it passes its checks — it is a standby (failing, it stays out).
    /// Out of monitoring meanwhile, so a hook that fails leaves it out and retried later, not
    /// asked again at every check.
    pub(super) fn service_rejoin(&mut self, service: &str, machine: &str) -> Result<(), PlanError> {
        let s = self.service_named(service)?;
        self.in_service(s, machine)?;
        if s.active_active() {
            self.active_rejoin(s, machine);
            return Ok(());
        }
        let primary = self.primary_of(s);
        if primary == machine {
            return Ok(());
        }
        let target = MonitorTarget::Machine {
            machine: machine.to_owned(),
        };
        self.push(Action::Unmonitor {
            target: target.clone(),
        });
        // A primary that comes back after a crash may still be ready on a proxy whose fence
        // was skipped (its runtime API did not answer then), and hold the address: both go
        // first.
        self.service_on_proxies(s, machine, false, true);
        self.service_address(s, machine, false, false);
        // Still failing its checks (the controller keeps `down`): demoted, and left out until
        // it passes them.
        let failing = self
            .state
            .services
            .get(service)
            .is_some_and(|st| st.down.contains(machine));
        // Seen writable (an old primary back, on its own timeline): with `rejoin`, its server
        // is stopped first, whatever may stop the rejoin itself later.
        let writable = self
            .state
            .services
            .get(service)
            .is_some_and(|st| st.writable.contains(machine));
        if failing
            && writable
            && let Some(stop) = self.pg_stop(s, machine, false, None)
        {
            self.push(stop);
        }
        if let Some(hook) = &s.hooks.on_demote {
            let state = if failing {
                "down"
            } else if s.primary.value == machine {
                "production_as_standby"
            } else {
                "standby"
            };
            let step = self.hook(
                s,
                "on_demote",
                &hook.value,
                machine,
                &primary,
                machine,
                false,
                state,
            );
            self.push(step);
        }
        // Its PostgreSQL made a standby of the primary again (`rejoin`): an old primary back
        // after a failover is still writable, on a timeline of its own. Also when it passes
        // its checks if pg-stop fenced it: started again by something else, it answers in
        // recovery, read-only, on that timeline, following nothing — never a standby until
        // rewound (the step leaves one that streams as it is).
        let fenced = self
            .state
            .services
            .get(service)
            .is_some_and(|st| st.fenced.contains(machine));
        if (failing || fenced)
            && let Some(step) = self.pg_rejoin(s, machine, &primary)
        {
            self.push(step);
        }
        if !failing {
            self.push(Action::ServiceRole {
                service: service.to_owned(),
                machine: machine.to_owned(),
                role: ServiceRole::Standby,
            });
        }
        self.push(Action::Monitor { target });
        Ok(())
    }

    /// The step that runs `hook` on `on`; `primary` is the primary after the change,
    /// `previous` the one before, `state` the role state `on` is in once it has run (seed
    /// 001's names: what its status file says).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn hook(
        &self,
        s: &Service,
        hook: &str,
        playbook: &str,
        on: &str,
        primary: &str,
        previous: &str,
        skip_unreachable: bool,
        state: &str,
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
                "state": state,
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
        if d.value.routing == medic_topology::DnsRouting::Failover {
            // The secondary: the first other machine that may be promoted, else the first
            // other machine (Route 53 answers it only while the primary's check fails).
            let primary = match address {
                Addr::Of(m) => Some(m.clone()),
                Addr::Ip(ip) => self
                    .state
                    .machines
                    .iter()
                    .find(|(_, m)| m.address == Some(*ip))
                    .map(|(n, _)| n.clone()),
            };
            let others: Vec<&str> = s
                .machines()
                .filter(|m| Some(*m) != primary.as_deref())
                .collect();
            let st = self.state.services.get(&s.name.value);
            let secondary = others
                .iter()
                .find(|m| st.is_none_or(|st| !st.out.contains(**m) && !st.down.contains(**m)))
                .or(others.first())
                .map(|m| addr_of(self.state, m));
            let Some(secondary) = secondary else {
                return;
            };
            let check = &s.check.value;
            self.push(Action::FailoverDns {
                target,
                name: d.value.name.trim_end_matches('.').to_owned(),
                ttl,
                primary: address.clone(),
                secondary,
                http_path: matches!(
                    check.kind,
                    medic_topology::CheckKind::Http | medic_topology::CheckKind::Https
                )
                .then(|| check.http_path().to_owned()),
                https: check.kind == medic_topology::CheckKind::Https,
                server_name: (check.kind == medic_topology::CheckKind::Https)
                    .then(|| check.server_name.clone())
                    .flatten(),
                port: s.port.value,
                owner: format!("medic:{}:{}", self.top.name.value, s.name.value),
            });
            return;
        }
        self.push(Action::UpsertDns {
            target,
            name: d.value.name.trim_end_matches('.').to_owned(),
            ttl,
            values: vec![address.clone()],
        });
    }
}
