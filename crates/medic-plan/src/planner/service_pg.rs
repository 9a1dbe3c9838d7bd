//! A service's built-in PostgreSQL in its plans: the lag guard before a promotion, the
//! promotion itself (`pg_promote()`, recorded at once), the other standbys made to follow
//! the new primary, and a server failed away from made a standby again (`rejoin`;
//! docs/topology.md, "Services").

use medic_topology::Service;

use super::{PlanError, Planner};
use crate::step::*;
use crate::vars::addr_of;

impl Planner<'_> {
    /// Which position the lag guard lacks, if the service's checks report positions and one
    /// of the two was not seen since medic started (a primary lost before its first check).
    pub(super) fn position_unknown(&self, s: &Service, old: &str, new: &str) -> Option<String> {
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
    pub(super) fn promotion_refused(&self, s: &Service, old: &str, new: &str) -> Option<String> {
        let (behind, max) = self.too_far_behind(s, old, new)?;
        Some(format!(
            "service {} lost its primary {old}; the most advanced standby {new} is {behind} bytes behind it as last seen (policy.max_promotion_lag_bytes is {max}): nothing promoted, so that no acknowledged write is lost. Bring {old} back if you can (it is still the primary, and its data the newest); to accept the loss, raise the limit (SIGHUP reloads the topology), then `medic recover {old}`",
            s.name.value
        ))
    }

    /// How far `new` is behind `old` by their last seen positions, and the policy's limit, if
    /// that is beyond the limit and `new` would take writes once promoted.
    pub(super) fn too_far_behind(&self, s: &Service, old: &str, new: &str) -> Option<(u64, u64)> {
        if s.standbys_read_only {
            return None;
        }
        let st = self.state.services.get(&s.name.value)?;
        let (at_old, at_new) = (*st.positions.get(old)?, *st.positions.get(new)?);
        let behind = at_old.saturating_sub(at_new);
        let max = self.top.policy.max_promotion_lag_bytes.value;
        (behind > max).then_some((behind, max))
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
    pub(super) fn pg_follow(&mut self, s: &Service, new: &str, old: &str) {
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
    pub(super) fn pg_follow_one(&mut self, s: &Service, machine: &str, primary: &str) {
        let Some((port, check)) = s.postgres_check() else {
            return;
        };
        let login = login_of(&check);
        self.last.push(Action::FollowPostgres {
            service: s.name.value.clone(),
            machine: machine.to_owned(),
            address: addr_of(self.state, machine),
            port,
            user: login.0,
            database: login.1,
            password_file: login.2,
            primary: primary.to_owned(),
            primary_address: addr_of(self.state, primary),
        });
    }

    /// The step that stops `machine`'s server (the fence of an old primary), if the service
    /// has a `rejoin` (which says how). `silent`: skipped if its SSH does not answer.
    /// `then`: the standby a switchover promotes next, which must have received all the
    /// stopped server's WAL first.
    pub(super) fn pg_stop(
        &self,
        s: &Service,
        machine: &str,
        silent: bool,
        then: Option<&str>,
    ) -> Option<Action> {
        let rejoin = s.rejoin.as_ref()?;
        let (port, check) = s.postgres_check()?;
        let login = login_of(&check);
        let caught_up = then.map(|m| PgStandby {
            machine: m.to_owned(),
            address: addr_of(self.state, m),
            user: login.0,
            database: login.1,
            password_file: login.2,
        });
        Some(Action::StopPostgres {
            service: s.name.value.clone(),
            machine: machine.to_owned(),
            address: addr_of(self.state, machine),
            port,
            rejoin: rejoin.value.clone(),
            skip_unreachable: silent,
            caught_up,
        })
    }

    /// The step that starts `machine`'s server (the recorded primary) again as the primary
    /// if medic's `pg-stop` fenced it, if the service has a `rejoin` (which says how) and a
    /// `postgres` check (to read it back), and the server is recorded fenced or failing its
    /// checks (one that passes runs already: nothing to start, and no SSH needed). Never
    /// while a promotion of another server may still be under way (`promoting`) or another
    /// server was seen writable: a warning says so instead, as two primaries could follow.
    pub(super) fn pg_start(&mut self, s: &Service, machine: &str) -> Option<Action> {
        let rejoin = s.rejoin.as_ref()?;
        let (port, check) = s.postgres_check()?;
        let login = login_of(&check);
        let st = self.state.services.get(&s.name.value)?;
        if !st.fenced.contains(machine) && !st.down.contains(machine) {
            return None;
        }
        if let Some(other) = st.other_primary(machine) {
            self.alert(
                AlertLevel::Warning,
                format!(
                    "service {}: {machine}'s PostgreSQL is not started again by medic: {other} may be a primary (its promotion may still be under way, or it was seen writable), and {machine} started as the primary beside it would be a second one. Once {other} is seen as a standby (or you know it is not a primary), `medic switchover {} --to {machine}` again",
                    s.name.value, s.name.value
                ),
            );
            return None;
        }
        Some(Action::StartPostgres {
            service: s.name.value.clone(),
            machine: machine.to_owned(),
            address: addr_of(self.state, machine),
            port,
            user: login.0,
            database: login.1,
            password_file: login.2,
            rejoin: rejoin.value.clone(),
        })
    }

    /// The step that makes `machine`'s server a standby of `primary` again, if the service
    /// has a `rejoin` (and a `postgres` check, which it then must have).
    pub(super) fn pg_rejoin(&self, s: &Service, machine: &str, primary: &str) -> Option<Action> {
        let rejoin = s.rejoin.as_ref()?;
        let (port, check) = s.postgres_check()?;
        let login = login_of(&check);
        Some(Action::RejoinPostgres {
            service: s.name.value.clone(),
            machine: machine.to_owned(),
            address: addr_of(self.state, machine),
            port,
            user: login.0,
            database: login.1,
            password_file: login.2,
            primary: primary.to_owned(),
            primary_address: addr_of(self.state, primary),
            rejoin: rejoin.value.clone(),
        })
    }

    /// For a service that checks PostgreSQL (`kind: postgres`) and whose standbys take
    /// writes once promoted (not `standbys_read_only`: a read-only copy is never promoted):
    /// the step that makes `machine`'s server the primary, and at once the record that it is
    /// — a promotion cannot be undone, so whatever fails after it, medic judges that server
    /// as the primary it is (never promotes another beside it). Whether it planned them.
    pub(super) fn pg_promote(&mut self, s: &Service, machine: &str) -> bool {
        if s.standbys_read_only {
            return false;
        }
        let Some((port, check)) = s.postgres_check() else {
            return false;
        };
        let login = login_of(&check);
        self.push(Action::PromotePostgres {
            service: s.name.value.clone(),
            machine: machine.to_owned(),
            address: addr_of(self.state, machine),
            port,
            user: login.0,
            database: login.1,
            password_file: login.2,
        });
        self.push(Action::ServiceRole {
            service: s.name.value.clone(),
            machine: machine.to_owned(),
            role: ServiceRole::Primary,
        });
        true
    }
}

/// Who medic logs in to a service's PostgreSQL as (as its `postgres` check does): the user,
/// the database and the password file.
fn login_of(check: &medic_topology::service::ServiceCheck) -> (String, String, Option<String>) {
    (
        check.pg_user().to_owned(),
        check.pg_database().to_owned(),
        check
            .password_file
            .as_ref()
            .map(|p| p.display().to_string()),
    )
}
