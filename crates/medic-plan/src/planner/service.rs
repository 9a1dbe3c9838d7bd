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
//! - The record moves, and the service's own address comes up on the new primary, only after
//!   its `on_promote` hook succeeded; the address is taken down on the old primary first
//!   (skipped only where the hook may be), and on a machine that rejoins.
//! - A service that checks PostgreSQL (and whose standbys are not read-only) has the new
//!   primary's server promoted (`pg_promote()`) after the old one's fence, and recorded as
//!   the primary at once (a promotion cannot be undone: if a later step fails, that server is
//!   still judged as the primary, and no other is promoted beside it); then its `on_promote`
//!   hook. A planned switchover of such a service is refused while the standby is further
//!   behind than `policy.max_promotion_lag_bytes`.
//! - A machine failed away from counts as a standby again only after its `on_demote` hook.
//! - A planned switchover demotes the primary (`on_demote`, else `on_fenced`) before it
//!   promotes another, and never to a machine in `down` or out.

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

    /// Which position the lag guard lacks, if the service's checks report positions and one
    /// of the two was not seen since medic started (a primary lost before its first check).
    fn position_unknown(&self, s: &Service, old: &str, new: &str) -> Option<String> {
        if !s.has_postgres_check() || s.standbys_read_only {
            return None;
        }
        let st = self.state.services.get(&s.name.value);
        let unseen: Vec<&str> = [old, new]
            .into_iter()
            .filter(|m| st.is_none_or(|st| !st.positions.contains_key(*m)))
            .collect();
        (!unseen.is_empty()).then(|| {
            format!(
                "the WAL position of {} was not seen since medic started",
                unseen.join(" and ")
            )
        })
    }

    /// Why promoting `new` in place of `old` would lose writes beyond the policy's limit, if
    /// it would: `old`'s last seen position ahead of `new`'s by more than
    /// `policy.max_promotion_lag_bytes`. Standbys that never take writes lose nothing.
    fn promotion_refused(&self, s: &Service, old: &str, new: &str) -> Option<String> {
        let (behind, max) = self.too_far_behind(s, old, new)?;
        Some(format!(
            "service {} lost its primary {old}; the most advanced standby {new} is {behind} bytes behind it as last seen (policy.max_promotion_lag_bytes is {max}): nothing promoted, so that no acknowledged write is lost. Bring {old} back if you can (it is still the primary, and its data the newest); to accept the loss, raise the limit (SIGHUP reloads the topology), then `medic recover {old}`",
            s.name.value
        ))
    }

    /// How far `new` is behind `old` by their last seen positions, and the policy's limit, if
    /// that is beyond the limit and `new` would take writes once promoted.
    fn too_far_behind(&self, s: &Service, old: &str, new: &str) -> Option<(u64, u64)> {
        if s.standbys_read_only {
            return None;
        }
        let st = self.state.services.get(&s.name.value)?;
        let (at_old, at_new) = (*st.positions.get(old)?, *st.positions.get(new)?);
        let behind = at_old.saturating_sub(at_new);
        let max = self.top.policy.max_promotion_lag_bytes.value;
        (behind > max).then_some((behind, max))
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
            if self.primary_of(s) == machine {
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
        if self.primary_of(s) != machine {
            self.alert(
                AlertLevel::Warning,
                format!("{service}@{machine}, a standby, fails its checks: the service cannot fail over to it until it passes them"),
            );
            return Ok(());
        }
        // Its machine answers: it may still serve clients. Without a hook to fence it, a
        // second primary would run beside it.
        if s.hooks.on_fenced.is_none() && !s.standbys_read_only {
            self.alert(
                AlertLevel::Critical,
                format!("service {service} fails its checks on {machine}, its primary, whose machine still answers; it has no on_fenced hook, so medic cannot stop it serving and does not promote another beside it: stop it by hand, then `medic switchover {service}`"),
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
        // The address first: clients stop reaching the old primary before anything else.
        self.service_address(s, old, false, silent);
        if let Some(hook) = &s.hooks.on_fenced {
            self.push(self.hook(s, "on_fenced", &hook.value, old, &new, old, silent, "down"));
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
        self.service_address(s, &new, true, false);
        let address = addr_of(self.state, &new);
        self.service_dns(s, &address);
        if promoted {
            self.pg_follow(s, &new, old);
        }
    }

    /// A standby of `service` whose PostgreSQL streams from another server than the primary's:
    /// made to follow the primary (nothing for the primary itself, a machine failed away
    /// from, or a service whose standbys are never promoted by medic).
    pub(super) fn service_follow(&mut self, service: &str, machine: &str) -> Result<(), PlanError> {
        let s = self.service_named(service)?;
        self.in_service(s, machine)?;
        let primary = self.primary_of(s);
        let out = self
            .state
            .services
            .get(service)
            .is_some_and(|st| st.out.contains(machine));
        if primary == machine || out || s.standbys_read_only || s.postgres_check().is_none() {
            self.alert(
                AlertLevel::Warning,
                format!("{machine} is not a standby of service {service} that medic re-points: nothing done"),
            );
            return Ok(());
        }
        self.pg_follow_one(s, machine, &primary);
        let follow = self.last.pop();
        self.steps.extend(follow);
        Ok(())
    }

    /// After `new`'s database was promoted in place of `old`'s: every other standby of `s`
    /// (three machines or more) is made to follow it, at the end of the plan — the service
    /// (and any other the plan fails over) is whole again before, and a standby that cannot
    /// be made to follow is skipped (the recovery ends incomplete, saying why). One failing
    /// its checks is not asked: a warning says it still follows `old` (a critical alert if
    /// it is writable).
    fn pg_follow(&mut self, s: &Service, new: &str, old: &str) {
        if s.postgres_check().is_none() {
            return;
        }
        let st = self.state.services.get(&s.name.value);
        let others: Vec<&str> = s
            .machines()
            .filter(|m| *m != new && *m != old)
            .filter(|m| st.is_none_or(|st| !st.out.contains(*m)))
            .collect();
        for m in others {
            if st.is_some_and(|st| st.writable.contains(m)) {
                self.alert(
                    AlertLevel::Critical,
                    format!(
                        "service {}: {m}'s PostgreSQL is writable (not in recovery) beside {new}, the new primary: a second primary? It is not made to follow {new}; rebuild it as {new}'s standby (pg_rewind or pg_basebackup)",
                        s.name.value
                    ),
                );
                continue;
            }
            if st.is_some_and(|st| st.down.contains(m)) {
                self.alert(
                    AlertLevel::Warning,
                    format!(
                        "service {}: {m}'s PostgreSQL standby fails its checks, so it was not made to follow {new}, the new primary: it may still follow {old}. Once it answers, point its primary_conninfo at {new} (or `medic switchover {} --to {new}` does it)",
                        s.name.value, s.name.value
                    ),
                );
                continue;
            }
            self.pg_follow_one(s, m, new);
        }
    }

    /// The step that makes `machine`'s standby follow `primary`, among the last steps.
    fn pg_follow_one(&mut self, s: &Service, machine: &str, primary: &str) {
        let Some((port, check)) = s.postgres_check() else {
            return;
        };
        self.last.push(Action::FollowPostgres {
            service: s.name.value.clone(),
            machine: machine.to_owned(),
            address: addr_of(self.state, machine),
            port,
            user: check.pg_user().to_owned(),
            database: check.pg_database().to_owned(),
            password_file: check
                .password_file
                .as_ref()
                .map(|p| p.display().to_string()),
            primary: primary.to_owned(),
            primary_address: addr_of(self.state, primary),
        });
    }

    /// For a service that checks PostgreSQL (`kind: postgres`) and whose standbys take
    /// writes once promoted (not `standbys_read_only`: a read-only copy is never promoted):
    /// the step that makes `machine`'s server the primary, and at once the record that it is
    /// — a promotion cannot be undone, so whatever fails after it, medic judges that server
    /// as the primary it is (never promotes another beside it). Whether it planned them.
    fn pg_promote(&mut self, s: &Service, machine: &str) -> bool {
        if s.standbys_read_only {
            return false;
        }
        let Some((port, check)) = s.postgres_check() else {
            return false;
        };
        self.push(Action::PromotePostgres {
            service: s.name.value.clone(),
            machine: machine.to_owned(),
            address: addr_of(self.state, machine),
            port,
            user: check.pg_user().to_owned(),
            database: check.pg_database().to_owned(),
            password_file: check
                .password_file
                .as_ref()
                .map(|p| p.display().to_string()),
        });
        self.push(Action::ServiceRole {
            service: s.name.value.clone(),
            machine: machine.to_owned(),
            role: ServiceRole::Primary,
        });
        true
    }

    /// Brings the service's own address up on `machine` (`up`) or takes it down there, if
    /// the service has one.
    pub(super) fn service_address(&mut self, s: &Service, machine: &str, up: bool, skip: bool) {
        let Some(a) = &s.address else {
            return;
        };
        // On EC2 the VPC delivers the address only to the instance it is assigned to: taken
        // from the old primary's instance at the API first (whatever state that machine is
        // in: the fence that needs no answer from it), assigned to the new one's before the
        // address is brought up inside it.
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
                elastic_ip: a.value.elastic_ip.clone().filter(|_| up),
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
        if demote.is_none() && !s.standbys_read_only {
            return Err(cannot(format!(
                "it has no on_demote or on_fenced hook to make {old} stop serving as its primary first"
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
        if let Some((hook_name, hook)) = demote {
            self.push(self.hook(s, hook_name, &hook.value, &old, &new, &old, false, state));
        }
        self.service_address(s, &old, false, false);
        let promoted = self.pg_promote(s, &new);
        let demoted = Action::ServiceRole {
            service: service.to_owned(),
            machine: old.clone(),
            role: ServiceRole::Standby,
        };
        if promoted {
            // Demoted already: recorded with the promotion, so that while `on_promote` runs
            // the old primary is not taken for one failed away from (and demoted again).
            self.push(demoted.clone());
        }
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
        self.service_address(s, &new, true, false);
        let address = addr_of(self.state, &new);
        self.service_dns(s, &address);
        if promoted {
            self.pg_follow(s, &new, &old);
        }
        Ok(())
    }

    /// `medic switchover SERVICE --to P` where P is its primary already: what follows the
    /// record of a new primary is done again — P's `on_promote` hook, its address brought up,
    /// the record pointed at it — for a failover that stopped after the record (its hook, the
    /// address or the DNS change failed), whose retries would not (P is the primary).
    fn service_reassert(&mut self, s: &'a Service, primary: &str) {
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
        // A primary that comes back after a crash may still hold the address: it goes first.
        self.service_address(s, machine, false, false);
        // Still failing its checks (the controller keeps `down`): demoted, and left out until
        // it passes them.
        let failing = self
            .state
            .services
            .get(service)
            .is_some_and(|st| st.down.contains(machine));
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
    fn hook(
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
