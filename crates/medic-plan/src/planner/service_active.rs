//! Plans for `active_active` services: every machine serves behind the proxies, none is
//! promoted. One that fails its checks (or is lost) is taken out of every proxy — in
//! maintenance, its sessions shut — and recorded out, and then its `on_fenced` hook runs; one
//! that passes them again gets its `on_promote` hook and is then put back.
//!
//! # Guarantees (tests in `planner/service_active_tests.rs`)
//! - The last machine in the proxies (every other one out) is never taken out: that is a
//!   critical alert, and nothing changes — a check that fails everywhere may be the check's
//!   own fault, and taking the last one out is an outage for certain. (The controller asks to
//!   take a machine out only while another one passes its checks.)
//! - A machine is put back only once its `on_promote` hook succeeded.

use medic_topology::Service;

use super::Planner;
use crate::step::*;

impl<'a> Planner<'a> {
    /// Whether any machine of `s` besides `machine` is in the proxies (not out).
    fn others_serving(&self, s: &Service, machine: &str) -> bool {
        let st = self.state.services.get(&s.name.value);
        s.machines()
            .filter(|m| *m != machine)
            .any(|m| st.is_none_or(|st| !st.out.contains(m)))
    }

    /// Whether `machine` is the last one of `s` in the proxies, to be kept in; if so, alerts.
    pub(super) fn active_kept(&mut self, s: &Service, machine: &str) -> bool {
        if self.others_serving(s, machine) {
            return false;
        }
        let name = &s.name.value;
        self.alert(
            AlertLevel::Critical,
            format!("{name}@{machine} fails, but every other machine of service {name} is out: it is kept in the proxies, as the last one; look at the machines, and at the check itself"),
        );
        true
    }

    /// Takes `machine` out of `s`: off every proxy, then its `on_fenced` hook. `silent`: a
    /// majority of its observers confirmed it silent (its sessions are not waited for, its
    /// hook is skipped if its SSH does not answer). The caller has made sure it is not the
    /// last one serving ([`Planner::active_kept`]).
    pub(super) fn active_take_out(&mut self, s: &'a Service, machine: &str, silent: bool) {
        let name = &s.name.value;
        self.service_on_proxies(s, machine, false, !silent);
        // Recorded out as soon as it is off the proxies: a hook that fails then leaves it out
        // (put back only through its `on_promote` hook), never counted on as serving.
        self.push(Action::ServiceRole {
            service: name.clone(),
            machine: machine.to_owned(),
            role: ServiceRole::Inactive,
        });
        if let Some(hook) = &s.hooks.on_fenced {
            let primary = self.primary_of(s);
            let step = self.hook(
                s,
                "on_fenced",
                &hook.value,
                machine,
                &primary,
                machine,
                silent,
                "down",
            );
            self.push(step);
        }
    }

    /// `machine`, out of `s`, answers again: passing its checks, its `on_promote` hook runs
    /// and it is put back on every proxy; still failing them, it is only made sure to be off
    /// every proxy (one whose runtime API did not answer when it was taken out may still send
    /// to it).
    pub(super) fn active_rejoin(&mut self, s: &'a Service, machine: &str) {
        let name = &s.name.value;
        let target = MonitorTarget::Machine {
            machine: machine.to_owned(),
        };
        self.push(Action::Unmonitor {
            target: target.clone(),
        });
        let failing = self
            .state
            .services
            .get(name)
            .is_some_and(|st| st.down.contains(machine));
        if failing {
            self.service_on_proxies(s, machine, false, true);
        } else {
            if let Some(hook) = &s.hooks.on_promote {
                let primary = self.primary_of(s);
                let step = self.hook(
                    s,
                    "on_promote",
                    &hook.value,
                    machine,
                    &primary,
                    machine,
                    false,
                    "active",
                );
                self.push(step);
            }
            self.service_on_proxies(s, machine, true, false);
            self.push(Action::ServiceRole {
                service: name.clone(),
                machine: machine.to_owned(),
                role: ServiceRole::Active,
            });
        }
        self.push(Action::Monitor { target });
    }
}
