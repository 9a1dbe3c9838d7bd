//! The end of a recovery: its machine freed and judged afresh, and what follows from how it
//! ended — a failed one watched again after a backoff (or escalated, a process that cannot
//! be restarted), a lost machine kept for the copy on its disk watched again likewise, a
//! service's switchover that failed before its promotion switched back.

use medic_plan::{Action, AlertLevel, Event, KEPT};

use super::recovery::{RETRY_FIRST_MS, RETRY_MAX_MS};
use super::steps::step_machine;
use super::{Core, Output, Request};
use crate::journal::Outcome;

impl Core {
    /// A recovery is over (its end journaled): its machine is free, judged afresh, and what
    /// follows from a failure is asked for.
    pub fn finished(&mut self, id: &str, outcome: &Outcome, now_ms: u64) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(run) = self.running.remove(id) else {
            return out;
        };
        self.release(run.key.as_deref());
        for m in &run.claims.machines {
            // Fresh detectors: what is still wrong is detected (and acted on) again.
            self.health.retain(|t, _| t.machine() != m);
            self.cut_off.remove(m);
            self.warned.retain(|t| t.machine() != m);
        }
        let took = now_ms.saturating_sub(run.started_ms);
        out.push(Output::Notify {
            event: match outcome {
                Outcome::Held { .. } => "held",
                Outcome::Failed { .. } => "recovery_failed",
                _ => "recovery_done",
            },
            message: format!(
                "{}: recovery {} {} in {:.1}s",
                run.plan.event,
                run.plan.recovery,
                outcome.label(),
                took as f64 / 1000.0
            ),
            details: Some(
                serde_json::json!({"recovery": run.plan.recovery, "outcome": outcome, "took_ms": took}),
            ),
        });
        // A service's switchover that failed before anything was promoted: switched back.
        let switched_back = match outcome {
            Outcome::Failed { step, error } => {
                self.switch_back(&run, *step, error, now_ms, &mut out)
            }
            _ => {
                self.switched_back(&run, now_ms);
                false
            }
        };
        // Failed before medic's own promotion of a database was confirmed done (at it, or at a
        // step redone before it after a restart): its `pg_promote()` may have been asked for,
        // and may still finish. Remembered (saved) until a primary is recorded or the server
        // is seen streaming from the primary: answering writable, that server is the one the
        // next failover records, not another promoted beside it.
        if let Outcome::Failed { .. } = outcome
            && !switched_back
            && let Some(Action::PromotePostgres {
                service, machine, ..
            }) = run
                .plan
                .steps
                .iter()
                .find(|s| {
                    matches!(s.action, Action::PromotePostgres { .. })
                        && !run.done.contains(&s.index)
                })
                .map(|s| &s.action)
            && let Some(st) = self.saved.observed.services.get_mut(service)
        {
            st.promoting = Some(machine.clone());
            out.push(Output::Save);
        }
        // A demotion of a machine back in a service that failed (its hook, its rewind) is
        // asked again at its next answer, after the usual backoff, not only once it goes
        // silent.
        if let Outcome::Failed { .. } = outcome
            && let Event::ServiceRejoin { service, machine } = &run.plan.event
        {
            self.disarmed.remove(&(service.clone(), machine.clone()));
        }
        // A replica re-pointed at its master is judged afresh at its next check: one still
        // following another server (the re-pointing failed) is asked about again.
        if let Event::FollowMaster { shard, machine } = &run.plan.event {
            self.astray.remove(&(shard.clone(), machine.clone()));
        }
        if let Event::Switchover { shard, .. } = &run.plan.event
            && self.loaded.topology.service(shard).is_some()
        {
            let automatic = run.trigger.starts_with("failback:");
            match outcome {
                Outcome::Failed { .. }
                    if automatic && self.failback_stopped.insert(shard.clone()) =>
                {
                    out.push(Output::Alert {
                        level: AlertLevel::Critical,
                        message: format!("the automatic failback of service {shard} failed: medic does not try it again; check both machines, then `medic switchover {shard}` by hand"),
                    });
                }
                // (An operator's: not the switchback of a failed failback.)
                Outcome::Completed if !automatic && !Self::is_switchback(&run.trigger) => {
                    self.failback_stopped.remove(shard);
                }
                _ => {}
            }
        }
        if let Outcome::Failed { step, error } = outcome {
            // The restart itself (its playbook, or reaching the machine for it), not a step
            // that also needs another machine (a sync from the master).
            let failed_on = run
                .plan
                .steps
                .iter()
                .find(|s| s.index == *step)
                .and_then(|s| match &s.action {
                    Action::RunPlaybook { .. } | Action::WaitReachable { .. } => {
                        step_machine(&s.action)
                    }
                    _ => Some(""),
                });
            match &run.plan.event {
                // A spare's preparation: its instance is retired by the pool's next tending,
                // and another prepared (within the hourly bound).
                Event::Spare { role, name, .. } => {
                    out.push(Output::Alert {
                        level: AlertLevel::Warning,
                        message: format!(
                            "spare {name} of role {} could not be prepared ({error}); its instance is terminated and another is prepared, up to policy.max_replacements_per_hour an hour",
                            role.as_str()
                        ),
                    });
                }
                // The ladder: a process that cannot be restarted on its machine means the
                // machine is not usable (it may be going down): recover the machine. (Not when
                // the step that failed was another machine's: a replica that cannot be reached
                // says nothing of this machine.)
                Event::ProcessDied { machine, .. } if failed_on.is_some_and(|m| m == machine) => {
                    out.push(Output::Alert {
                        level: AlertLevel::Warning,
                        message: format!("restarting the process on {machine} failed at step {step} ({error}); recovering the whole machine"),
                    });
                    self.request(Request {
                        event: Event::MachineLost {
                            machine: machine.clone(),
                        },
                        trigger: format!("escalated from {}: {error}", run.plan.event),
                        first_failure_ms: run.first_failure_ms,
                        master_last_ok_ms: None,
                        queued_ms: now_ms,
                        detected: false,
                        resume: None,
                    });
                }
                _ => {
                    let kind = run
                        .plan
                        .steps
                        .iter()
                        .find(|s| s.index == *step)
                        .map(|s| s.action.kind())
                        .unwrap_or("step");
                    let who = run.key.clone().unwrap_or_else(|| "MACHINE".to_owned());
                    // Watched again after a backoff: what is still wrong then is detected and
                    // acted on afresh (a partition that made the step fail may be over).
                    let retry = if run.claims.machines.contains(&who) {
                        let (wait, tries) = self.watch_later(&who, now_ms);
                        format!(
                            "it is watched again in {} s (try {tries}), or `medic recover {who}` now",
                            wait / 1000
                        )
                    } else {
                        format!("`medic recover {who}` tries again")
                    };
                    // What its unmonitor step took out stays out: the machine, or one server.
                    let out_now: Vec<String> = self
                        .saved
                        .unmonitored_servers
                        .iter()
                        .filter(|(_, m)| *m == who)
                        .map(|(s, m)| format!("{s}@{m}"))
                        .collect();
                    let stays = if self.saved.unmonitored.contains(&who) || out_now.is_empty() {
                        "The machine stays out of monitoring".to_owned()
                    } else {
                        format!(
                            "{} stays out of monitoring (the rest of {who} is watched)",
                            out_now.join(", ")
                        )
                    };
                    out.push(Output::Alert {
                        level: AlertLevel::Critical,
                        message: format!(
                            "recovery {} stopped at step {step} of {} ({kind}): {error}. {stays}; `medic history` shows what was done; {retry}",
                            run.plan.recovery,
                            run.plan.steps.len(),
                        ),
                    });
                }
            }
        } else if let Some(m) = run.key.as_ref().filter(|m| {
            run.claims.machines.contains(*m)
                && run.plan.steps.iter().any(|s| {
                    matches!(&s.action, Action::Alert { message, .. } if message.starts_with(&format!("{m}{KEPT}")))
                })
        }) {
            // A lost machine kept for the copy its disk may hold: watched again after the
            // backoff, as after a failed recovery. Lost still, it is planned afresh (kept
            // again while the copy may be the only one, replaced once not); answering, it is
            // judged as it answers.
            // Kept again without having answered since it was last kept: the same loss
            // judged again, not something breaking it again, so not counted against
            // `policy.max_recoveries_per_hour` (else the watches would end in a crash-loop
            // hold within minutes). A machine that answered in between counts as any other.
            if !self.saved.kept_unanswered.insert(m.clone())
                && run.detected
                && let Some(at) = self.saved.recoveries.iter().rposition(|(what, _)| what == m)
            {
                self.saved.recoveries.remove(at);
            }
            let (wait, tries) = self.watch_later(m, now_ms);
            out.push(Output::Alert {
                level: AlertLevel::Warning,
                message: format!(
                    "{m} stays out of monitoring, kept: it is watched again in {} s (try {tries}), or `medic monitor {m}` now",
                    wait / 1000
                ),
            });
        } else if let Some(m) = &run.key {
            // A recovery that did not fail starts the backoff afresh — unless something of the
            // machine that an earlier failed recovery left out of monitoring is still out (one
            // shard's server, when this recovery was another's) and its watch-again has not
            // come yet: that one stays due.
            // (One that came already is dropped: its backoff starts afresh too.)
            let still_out = self.saved.unmonitored.contains(m)
                || self.saved.unmonitored_servers.iter().any(|(_, x)| x == m);
            let due = self.saved.retries.get(m).is_some_and(|r| r.0 != u64::MAX);
            if !(still_out && due) {
                self.saved.retries.remove(m);
            }
        }
        out.push(Output::Save);
        out
    }

    /// Schedules `machine`'s watch-again after the backoff (10 s, doubling at each try, at
    /// most 5 min); returns the wait and the try.
    fn watch_later(&mut self, machine: &str, now_ms: u64) -> (u64, u32) {
        let tries = self.saved.retries.get(machine).map_or(0, |r| r.1) + 1;
        let wait = (RETRY_FIRST_MS << (tries - 1).min(5)).min(RETRY_MAX_MS);
        self.saved
            .retries
            .insert(machine.to_owned(), (now_ms + wait, tries));
        (wait, tries)
    }
}
