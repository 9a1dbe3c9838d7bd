//! A service's switchover that failed before its new primary was promoted: the primary,
//! still the recorded one, is made the primary again at once — the plan of `medic switchover
//! SERVICE --to PRIMARY`, which starts its PostgreSQL again if the switchover's `pg-stop`
//! fenced it (`pg-start`), runs its `on_promote`, puts it back on the proxies and brings its
//! address and DNS record back. Without it the service had no primary until its checks
//! failed it over, and that failover promoted under the lag limit what the switchover had
//! refused to promote without every write.

use medic_plan::{Action, AlertLevel, Event, Plan, ServiceRole};

use super::{Core, Output, Request, Running};
use crate::store::SavedSwitchback;

/// How a switchback's trigger starts.
const SWITCHBACK: &str = "switchback:";

impl Core {
    /// After a service's switchover failed at `step`: its switchback asked for, first in
    /// the queue, if nothing of the new primary had been done (no promotion asked for, no
    /// role recorded, no `on_promote` run — in a run resumed after a restart, not even begun
    /// before it) and the service's primary is still the one the switchover demoted. A
    /// switchback that fails is not switched back again. Whether it was asked for.
    pub(super) fn switch_back(
        &mut self,
        run: &Running,
        step: usize,
        error: &str,
        now_ms: u64,
        out: &mut Vec<Output>,
    ) -> bool {
        let Event::Switchover { shard: service, to } = &run.plan.event else {
            return false;
        };
        if self.loaded.topology.service(service).is_none() {
            return false;
        }
        let Some(st) = self.saved.observed.services.get(service) else {
            return false;
        };
        let primary = st.primary.clone();
        let generation = st.generation;
        // Not a resumed run whose promotion was begun before the restart (its intent, or a
        // later step's, is journaled: it may have been asked for), nor while an earlier recovery's promotion
        // may still be under way or another server was seen writable.
        if to.as_deref() == Some(primary.as_str())
            || (run.resumed
                && run
                    .begun_before
                    .last()
                    .is_some_and(|&i| !before_promotion(&run.plan, i, service)))
            || st.other_primary(&primary).is_some()
            || !before_promotion(&run.plan, step, service)
        {
            return false;
        }
        // Its pg-stop ran (done, or failed at its wait for the standby after the stop): the
        // server is recorded fenced, so the switchback starts it again whether or not a check
        // has seen it down yet.
        let stopped = run.plan.steps.iter().any(|s| {
            s.index <= step
                && matches!(&s.action, Action::StopPostgres { service: sv, machine, .. }
                    if sv == service && *machine == primary)
        });
        if stopped && let Some(st) = self.saved.observed.services.get_mut(service) {
            st.fenced.insert(primary.clone());
            out.push(Output::Save);
        }
        out.push(Output::Alert {
            level: AlertLevel::Critical,
            message: format!(
                "the switchover of service {service} failed at step {step} ({error}) before anything was promoted: {primary} is made its primary again (its PostgreSQL started again if medic stopped it, its on_promote, the proxies, its address and DNS record)"
            ),
        });
        let back = SavedSwitchback {
            to: primary,
            generation,
            trigger: format!(
                "{SWITCHBACK} the switchover {} failed at step {step}",
                run.plan.recovery
            ),
        };
        let service = service.clone();
        if !self.queue_switchback(&service, &back, now_ms) {
            return false;
        }
        // Saved: queued again after a restart, or by a new leader ([`Core::requeue_switchbacks`]).
        self.saved.switchbacks.insert(service, back);
        out.push(Output::Save);
        true
    }

    /// Queues the switchback `back` of `service` at the head of the queue, before a failover
    /// its stopped server may have queued meanwhile: whether it was queued.
    fn queue_switchback(&mut self, service: &str, back: &SavedSwitchback, now_ms: u64) -> bool {
        let queued = self.request(Request {
            event: Event::Switchover {
                shard: service.to_owned(),
                to: Some(back.to.clone()),
            },
            trigger: back.trigger.clone(),
            first_failure_ms: None,
            master_last_ok_ms: None,
            queued_ms: now_ms,
            detected: false,
            resume: None,
        });
        if queued && let Some(r) = self.queue.pop_back() {
            self.queue.push_front(r);
        }
        queued
    }

    /// Whether `req` is a switchback.
    pub(super) fn is_switchback(req_trigger: &str) -> bool {
        req_trigger.starts_with(SWITCHBACK)
    }

    /// Why a queued switchback no longer stands, if it does not: the service's primary is no
    /// longer the one it would make the primary again, or is that one again after a change
    /// (a failover, or another switchover, ran meanwhile — under another leader of a group,
    /// say: its generation tells), or a promotion may be under way.
    pub(super) fn switchback_stale(&self, req: &Request) -> Option<String> {
        let Event::Switchover { shard: service, to } = &req.event else {
            return None;
        };
        if !Self::is_switchback(&req.trigger) {
            return None;
        }
        let st = self.saved.observed.services.get(service)?;
        if to.as_deref() != Some(st.primary.as_str()) {
            return Some(format!(
                "the switchback of service {service} no longer stands: {} is its primary now",
                st.primary
            ));
        }
        // Asked for here and not yet started, it is saved; not saved, it started or was
        // dropped already (under another leader of a group, whose state this one adopted).
        let Some(g) = self.saved.switchbacks.get(service).map(|s| s.generation) else {
            if req.resume.is_some() {
                return None;
            }
            return Some(format!(
                "the switchback of service {service} no longer stands: it was run or dropped since it was asked for"
            ));
        };
        if g != st.generation {
            return Some(format!(
                "the switchback of service {service} no longer stands: its primary changed since it was asked for ({} is its primary again, after {} change(s))",
                st.primary,
                st.generation.saturating_sub(g)
            ));
        }
        st.other_primary(&st.primary).map(|m| {
            format!("the switchback of service {service} no longer stands: {m} may be a primary (its promotion under way, or seen writable)")
        })
    }

    /// A switchback ended (its plan ran to the end): the service's machines are judged
    /// afresh, and a failover queued on the checks its switchover failed (its primary
    /// stopped, since started again) no longer starts.
    pub(super) fn switched_back(&mut self, run: &Running, now_ms: u64) {
        if !Self::is_switchback(&run.trigger) {
            return;
        }
        let Event::Switchover { shard: service, .. } = &run.plan.event else {
            return;
        };
        self.health.retain(
            |t, _| !matches!(t, crate::checks::Target::Service { service: s, .. } if s == service),
        );
        self.switched_back_ms.insert(service.clone(), now_ms);
    }

    /// A switchback that starts (the journal has it from then on), is dropped or cannot be
    /// planned: no longer saved. Whether it was one.
    pub(super) fn switchback_over(&mut self, trigger: &str, event: &Event) -> bool {
        let Event::Switchover { shard: service, .. } = event else {
            return false;
        };
        Self::is_switchback(trigger) && self.saved.switchbacks.remove(service).is_some()
    }

    /// After a restart, or when this controller starts leading: the saved switchbacks queued
    /// again, at the head of the queue (before a failover the stopped primary's checks may
    /// have queued meanwhile). One whose recovery resumes from the journal is that recovery
    /// already; one that no longer stands is dropped when it would start.
    pub fn requeue_switchbacks(&mut self, now_ms: u64) {
        let saved: Vec<(String, SavedSwitchback)> = self
            .saved
            .switchbacks
            .iter()
            .map(|(s, b)| (s.clone(), b.clone()))
            .collect();
        for (service, back) in saved.iter().rev() {
            self.queue_switchback(service, back, now_ms);
        }
    }

    /// Why a failover of `service` queued at `queued_ms` no longer stands, if a switchback
    /// of the service ended since.
    pub(super) fn switched_back_since(&self, service: &str, queued_ms: u64) -> Option<String> {
        self.switched_back_ms
            .get(service)
            .filter(|at| **at >= queued_ms)
            .map(|_| {
                format!("service {service}'s primary was made the primary again since (a switchback): its machines are judged afresh")
            })
    }
}

/// Whether a service plan's step `failed` comes before anything that makes another machine
/// the primary: its promotion asked for, a primary recorded, or its `on_promote` run.
fn before_promotion(plan: &Plan, failed: usize, service: &str) -> bool {
    let first = plan.steps.iter().find(|s| match &s.action {
        Action::PromotePostgres { service: sv, .. } => sv == service,
        Action::ServiceRole {
            service: sv,
            role: ServiceRole::Primary,
            ..
        } => sv == service,
        Action::RunHook {
            service: sv, hook, ..
        } => sv == service && hook == "on_promote",
        _ => false,
    });
    first.is_some_and(|s| failed < s.index)
}
