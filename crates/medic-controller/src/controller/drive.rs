//! Feeding the core: each check's result, the witnesses' answers, and carrying out what the
//! core asks for (alerts, events, questions, recoveries to start, state to persist).

use medic_cloud::{Cloud, Dns};
use medic_plan::AlertLevel;

use super::{Controller, lock, observation_label};
use crate::checks::{CheckResult, Target};
use crate::core::Output;
use crate::journal::now_ms;

impl<C: Cloud + 'static, D: Dns + 'static> Controller<C, D> {
    /// One check's result (on the checks' thread).
    pub(super) fn on_result(&self, r: CheckResult) {
        let outputs = {
            let mut st = lock(&self.inner.st);
            let m = &mut st.metrics;
            *m.checks
                .entry((r.target.kind(), observation_label(r.observation)))
                .or_default() += 1;
            let took = r.took.as_secs_f64();
            let e = m.check_seconds.entry(r.target.kind()).or_default();
            e.0 += took;
            e.1 += 1;
            m.latency.add(r.target.kind(), now_ms(), took);
            st.core.on_check(&r)
        };
        if !outputs.is_empty() {
            self.carry_out(outputs);
            self.kick();
        }
    }

    /// Starts the queued recoveries that may start.
    pub(super) fn kick(&self) {
        if self.stopping() {
            return;
        }
        let outputs = lock(&self.inner.st).core.schedule(now_ms());
        self.carry_out(outputs);
    }

    /// Does what the core asked.
    pub(super) fn carry_out(&self, outputs: Vec<Output>) {
        for o in outputs {
            match o {
                Output::Alert { level, message } => self.alert(level, message),
                Output::Notify {
                    event,
                    message,
                    details,
                } => self.notify(event, &message, details),
                Output::Detected { seconds } => {
                    lock(&self.inner.st).metrics.detection_seconds = seconds;
                }
                Output::Ask {
                    target,
                    ahead,
                    knock,
                } => self.ask(target, ahead, knock),
                Output::Start { recovery } => self.spawn_recovery(recovery),
                Output::Save => {
                    let st = lock(&self.inner.st);
                    self.save(&st);
                }
            }
        }
    }

    /// Asks the witnesses of `target`'s machine in a task of its own; their answer goes to
    /// the core.
    fn ask(&self, target: Target, ahead: bool, knock: Option<std::time::Duration>) {
        let c = self.clone();
        tokio::spawn(async move {
            let (w, first_hand) = c.witnesses(&target, knock).await;
            let outputs = lock(&c.inner.st).core.on_witnesses(
                &target,
                ahead,
                knock.is_some(),
                w,
                first_hand,
                now_ms(),
            );
            if !outputs.is_empty() {
                c.carry_out(outputs);
                c.kick();
            }
        });
    }

    /// Runs a recovery the core started, supervised: a panic in it is reported, the recovery
    /// ends as failed, and the controller goes on watching.
    fn spawn_recovery(&self, id: String) {
        let rt = lock(&self.inner.main_rt)
            .clone()
            .unwrap_or_else(tokio::runtime::Handle::current);
        let c = self.clone();
        let task = {
            let (c, id) = (c.clone(), id.clone());
            rt.spawn(async move { c.run_recovery(&id).await })
        };
        let supervisor = rt.spawn(async move {
            let Err(e) = task.await else {
                c.kick();
                return;
            };
            let why = if e.is_panic() {
                "the recovery's task panicked (a bug in medic)"
            } else {
                "the recovery's task was cancelled"
            };
            tracing::error!(recovery = %id, "{why}");
            let step = lock(&c.inner.st)
                .core
                .running
                .get(&id)
                .and_then(|r| r.current.map(|(i, _)| i))
                .unwrap_or(0);
            let outcome = crate::journal::Outcome::Failed {
                step,
                error: why.to_owned(),
            };
            if let Ok(mut w) = c.inner.journal.reopen(&id)
                && let Err(e) = w.append(&crate::journal::Record::End {
                    at_ms: now_ms(),
                    outcome: outcome.clone(),
                })
            {
                tracing::error!(recovery = %id, error = %e, "Cannot journal the end.");
            }
            c.alert(
                AlertLevel::Critical,
                format!("recovery {id} stopped at step {step}: {why}; the controller goes on watching. `medic history` shows what was done"),
            );
            let outputs = lock(&c.inner.st).core.finished(&id, &outcome, now_ms());
            c.carry_out(outputs);
            c.kick();
        });
        let mut runners = lock(&self.inner.runners);
        runners.retain(|h| !h.is_finished());
        runners.push(supervisor);
    }
}
