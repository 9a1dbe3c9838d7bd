//! Running one recovery the core started: each step's intent journaled, the step executed
//! (with retries and backoff) through the executor, its outcome journaled and handed to the
//! core, which says what comes next.

use std::time::Instant;

use tracing::Instrument;

use medic_cloud::{Cloud, Dns};
use medic_exec::{ExecError, Executor};
use medic_plan::{Action, AlertLevel, Step, StepOutput};

use super::{ATTEMPTS, BACKOFF, Controller, ControllerError, error_chain, lock, read};
use crate::checks::Target;
use crate::core::{Next, internal_summary, is_internal, last_look_failed};
use crate::journal::{JournalError, Outcome, Record, Writer, now_ms};
use medic_detect::Health;

impl<C: Cloud + 'static, D: Dns + 'static> Controller<C, D> {
    /// Runs recovery `id` to its end (or to the next safe point when stopping).
    pub(super) async fn run_recovery(&self, id: &str) {
        let span = {
            let st = lock(&self.inner.st);
            let event = st
                .core
                .running
                .get(id)
                .map(|r| r.plan.event.to_string())
                .unwrap_or_default();
            tracing::info_span!("recovery", recovery = %id, %event)
        };
        let result = self.recovery(id).instrument(span).await;
        if let Err(ControllerError::Deposed(why)) = &result {
            // The leader goes on from the journal in etcd.
            tracing::warn!(recovery = %id, "Recovery left to the group's leader: {why}.");
            lock(&self.inner.st).core.abandon(id);
            return;
        }
        if let Err(e) = result {
            tracing::error!(recovery = %id, error = %e, "The recovery could not be journaled.");
            self.alert(
                AlertLevel::Critical,
                format!("recovery {id} stopped: its journal cannot be written: {e}"),
            );
            let outcome = Outcome::Failed {
                step: 0,
                error: format!("the journal cannot be written: {e}"),
            };
            let outputs = lock(&self.inner.st).core.finished(id, &outcome, now_ms());
            self.carry_out(outputs);
        }
    }

    async fn recovery(&self, id: &str) -> Result<(), ControllerError> {
        let loaded = self.top();
        let top = &loaded.topology;
        let playbooks = read(&self.inner.playbooks).clone();
        let (run, addresses, suspect) = {
            let st = lock(&self.inner.st);
            let Some(run) = st.core.running.get(id).cloned() else {
                return Ok(());
            };
            let addresses = st.core.saved.observed.addresses();
            // Proxies the checks see down are tried once, briefly (medic_exec::SUSPECT_WITHIN).
            let suspect = st
                .core
                .health
                .iter()
                .filter(|(t, h)| {
                    matches!(t, Target::Proxy { .. } | Target::App { .. })
                        && matches!(h.detector.health, Health::Down { .. })
                })
                .map(|(t, _)| t.machine().to_owned())
                .collect();
            (run, addresses, suspect)
        };
        let plan = &run.plan;
        let mut writer = if run.resumed {
            let mut w = self.inner.journal.reopen(id)?;
            let from_step = plan
                .steps
                .iter()
                .find(|s| !run.done.contains(&s.index))
                .map_or(0, |s| s.index);
            self.journaled(
                &mut w,
                id,
                &Record::Resumed {
                    at_ms: now_ms(),
                    from_step,
                },
            )
            .await?;
            if !run.redo.is_empty() {
                tracing::info!(steps = ?run.redo, "Resumed: steps whose effect may be gone run again.");
            }
            w
        } else {
            self.inner.journal.begin(&Record::Begin {
                at_ms: now_ms(),
                trigger: run.trigger.clone(),
                first_failure_ms: run.first_failure_ms,
                master_last_ok_ms: run.master_last_ok_ms,
                plan: plan.clone(),
            })?
        };
        tracing::info!(steps = plan.steps.len(), trigger = %run.trigger, "Recovery starts.");
        let mut exec = Executor {
            topology: top,
            cloud: &self.inner.cloud,
            dns: self.inner.dns.as_ref(),
            skip_dns: self.inner.dns.is_none(),
            ssh: &self.inner.ssh,
            playbooks: &playbooks,
            secrets: &self.inner.secrets,
            addresses,
            redis: self.inner.redis.clone(),
            unfenced: run.unfenced.clone(),
        };
        exec.unfenced.suspect = suspect;
        // haproxy.cfg writes skipped in this run: what they were to write is still owed.
        let mut unwritten = std::collections::BTreeSet::new();
        loop {
            if self.stopping() {
                self.write_unpersisted(&mut exec, id, plan, &unwritten)
                    .await;
                tracing::warn!("Stopping between steps; the next start goes on from here.");
                lock(&self.inner.st).core.abandon(id);
                return Ok(());
            }
            if !self.may_act() {
                return Err(ControllerError::Deposed(
                    "its lease may have run out".to_owned(),
                ));
            }
            let next = lock(&self.inner.st).core.next_step(id, now_ms());
            let step = match next {
                Next::Unknown => return Ok(()),
                Next::End(outcome) => {
                    self.write_unpersisted(&mut exec, id, plan, &unwritten)
                        .await;
                    // The state its steps left (roles, monitoring given back) on disk before
                    // the journal says it is over: a restart then finds both or resumes it.
                    let saver = self.inner.saver.clone();
                    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || saver.flush()).await {
                        tracing::error!(error = %e, "Cannot save the state before the recovery's end.");
                    }
                    self.journaled(
                        &mut writer,
                        id,
                        &Record::End {
                            at_ms: now_ms(),
                            outcome: outcome.clone(),
                        },
                    )
                    .await?;
                    let took = now_ms().saturating_sub(run.started_ms);
                    tracing::info!(outcome = outcome.label(), took_ms = took, "Recovery ends.");
                    let outputs = {
                        let mut st = lock(&self.inner.st);
                        *st.metrics.recoveries.entry(outcome.label()).or_default() += 1;
                        st.core.finished(id, &outcome, now_ms())
                    };
                    self.carry_out(outputs);
                    return Ok(());
                }
                Next::Run(step) => step,
            };
            let look = lock(&self.inner.st).core.last_look(id, &step);
            if let Some(look) = look
                && self.answers_again(&look).await
            {
                let error = last_look_failed(&look);
                tracing::warn!(step = step.index, "{error}");
                let failed = Record::Failed {
                    step: step.index,
                    at_ms: now_ms(),
                    attempt: 1,
                    error: error.clone(),
                };
                self.journaled(&mut writer, id, &failed).await?;
                lock(&self.inner.st).core.step_failed(id, step.index, error);
                continue;
            }
            let view = medic_plan::describe::describe(&step, &playbooks);
            let span = tracing::info_span!("step", index = step.index, kind = step.action.kind(), target = %view.target);
            let started = Instant::now();
            match self
                .run_step(&mut exec, &mut writer, id, &step)
                .instrument(span)
                .await?
            {
                Ok((summary, output)) => {
                    tracing::info!(step = step.index, kind = step.action.kind(), "{summary}");
                    if matches!(step.action, Action::PersistProxyConfig { .. })
                        && output.skipped.is_some()
                    {
                        unwritten.insert(step.index);
                    }
                    let outputs = lock(&self.inner.st)
                        .core
                        .step_done(id, &step, &output, now_ms());
                    self.carry_out(outputs);
                    self.record_event(
                        "step",
                        &format!(
                            "{:>2}/{} {:<11} {:>6.2}s  {summary}",
                            step.index,
                            plan.steps.len(),
                            step.action.kind(),
                            started.elapsed().as_secs_f64()
                        ),
                    );
                }
                Err(e) => lock(&self.inner.st).core.step_failed(id, step.index, e),
            }
        }
    }

    /// A recovery that ends (or stops) before its haproxy.cfg writes — a step failed, or a
    /// write was skipped (`unwritten`) — has the runtime changes it made written all the
    /// same, so that a reload of a proxy does not undo a fence. Best effort: a resumed
    /// recovery makes its unwritten changes again, and the reconcile repairs what a reload
    /// undoes. Only while this member may act (in a group, the leader).
    async fn write_unpersisted(
        &self,
        exec: &mut Executor<'_, C, D>,
        id: &str,
        plan: &medic_plan::Plan,
        unwritten: &std::collections::BTreeSet<usize>,
    ) {
        // An adopted deployment's haproxy.cfg is the operator's: medic never writes it.
        if !exec.topology.managed() {
            return;
        }
        let done = match lock(&self.inner.st).core.running.get(id) {
            Some(r) => r.done.difference(unwritten).copied().collect(),
            None => return,
        };
        for action in plan.unpersisted(&done) {
            if !self.may_act() {
                return;
            }
            let step = Step { index: 0, action };
            match exec.execute(&step).await {
                Ok(d) if d.output.skipped.is_none() => tracing::info!("{}", d.summary),
                Ok(d) => {
                    tracing::warn!("{}", d.summary);
                    self.owe_write(&step.action);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Runtime changes not written into haproxy.cfg.");
                    self.owe_write(&step.action);
                }
            }
        }
    }

    /// A haproxy.cfg write that could not be made: the reconcile makes it, from the runtime.
    pub(super) fn owe_write(&self, write: &Action) {
        if let Action::PersistProxyConfig { proxy, servers } = write {
            lock(&self.inner.st)
                .owed_writes
                .entry(proxy.machine.clone())
                .or_default()
                .extend(servers.iter().map(|s| s.server.clone()));
        }
    }

    /// One step with its journal records and retries. The outer `Result` is the journal's;
    /// the inner one the step's.
    async fn run_step(
        &self,
        exec: &mut Executor<'_, C, D>,
        w: &mut Writer,
        id: &str,
        step: &Step,
    ) -> Result<Result<(String, StepOutput), String>, ControllerError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            // In a group, the intent lands in etcd under the leader's token before the step
            // starts: a deposed leader's step never starts.
            let token = self.inner.group.as_ref().and_then(|g| g.acting_token());
            let intent = Record::Intent {
                step: step.index,
                at_ms: now_ms(),
                attempt,
                token,
            };
            self.journaled(w, id, &intent).await?;
            self.failpoint("after-intent", step.index);
            let started = Instant::now();
            // Steps that may take a while say that they started, so a follower is not left
            // looking at silence while a machine boots or a replica syncs.
            if attempt == 1
                && matches!(
                    step.action,
                    Action::LaunchInstance { .. }
                        | Action::PrepareSpare { .. }
                        | Action::WaitReachable { .. }
                        | Action::RunPlaybook { .. }
                        | Action::WaitInSync { .. }
                        | Action::UpsertDns { .. }
                )
            {
                self.record_event(
                    "step_start",
                    &format!("{:>2} {} started", step.index, step.action.kind()),
                );
            }
            let result: Result<(String, StepOutput), ExecError> = if is_internal(&step.action) {
                Ok((internal_summary(&step.action), StepOutput::default()))
            } else {
                let work = exec.execute(step);
                tokio::pin!(work);
                loop {
                    tokio::select! {
                        r = &mut work => break r.map(|d| (d.summary, d.output)),
                        // A leader whose tenure runs out mid-step drops the step: the next
                        // leader does it again (every step is idempotent).
                        () = tokio::time::sleep(std::time::Duration::from_millis(100)), if self.inner.group.is_some() => {
                            if !self.may_act() {
                                return Err(ControllerError::Deposed(format!(
                                    "its lease may have run out while step {} was in flight",
                                    step.index
                                )));
                            }
                        }
                    }
                }
            };
            let took = started.elapsed();
            if result.is_ok() {
                // Done, but not yet journaled: the case where only idempotence saves us.
                self.failpoint("after-exec", step.index);
            }
            {
                let mut st = lock(&self.inner.st);
                let e = st
                    .metrics
                    .steps
                    .entry(step.action.kind().to_owned())
                    .or_default();
                e.0 += took.as_secs_f64();
                e.1 += 1;
            }
            match result {
                Ok((summary, output)) => {
                    let done = Record::Done {
                        step: step.index,
                        at_ms: now_ms(),
                        duration_ms: took.as_millis() as u64,
                        summary: summary.clone(),
                        output: output.clone(),
                    };
                    self.journaled(w, id, &done).await?;
                    self.failpoint("after-done", step.index);
                    return Ok(Ok((summary, output)));
                }
                Err(e) => {
                    let message = crate::hygiene::without_secrets(
                        &error_chain(&e),
                        self.inner.secrets.values(),
                    );
                    let failed = Record::Failed {
                        step: step.index,
                        at_ms: now_ms(),
                        attempt,
                        error: message.clone(),
                    };
                    self.journaled(w, id, &failed).await?;
                    *lock(&self.inner.st)
                        .metrics
                        .step_failures
                        .entry(step.action.kind().to_owned())
                        .or_default() += 1;
                    tracing::warn!(step = step.index, attempt, error = %message, "Step failed.");
                    self.notify(
                        "step_failed",
                        &format!("step {} ({}) failed, attempt {attempt}: {message}", step.index, step.action.kind()),
                        Some(serde_json::json!({"step": step.index, "kind": step.action.kind(), "attempt": attempt, "error": message})),
                    );
                    if !e.is_retryable() || attempt >= ATTEMPTS {
                        return Ok(Err(message));
                    }
                    tokio::time::sleep(BACKOFF * 2u32.pow(attempt - 1)).await;
                }
            }
        }
    }

    /// Appends a record to the recovery's journal (on disk, fsynced). In a group, an intent or
    /// an end is first written to etcd with the whole journal, under the leader's token
    /// (`Deposed` if it no longer leads): the guard before each step, so that an intent in any
    /// copy of the journal means the step was allowed to start. The records between (begin,
    /// done, failed, resumed) reach etcd with the next intent or the end: a leader that dies
    /// before then leaves its successor one idempotent step to redo, and the failover path
    /// waits for one etcd write per step rather than two.
    async fn journaled(&self, w: &mut Writer, id: &str, r: &Record) -> Result<(), ControllerError> {
        if self.inner.group.is_some() && matches!(r, Record::Intent { .. } | Record::End { .. }) {
            let line = serde_json::to_string(r).map_err(|e| JournalError::Io {
                path: w.path().to_path_buf(),
                source: std::io::Error::other(e),
            })?;
            let text = self.inner.journal.raw(id)? + &line + "\n";
            self.mirror(id, &text).await?;
        }
        w.append(r)?;
        Ok(())
    }

    /// In a group: the recovery's journal to etcd, guarded by the leader's token.
    async fn mirror(&self, id: &str, text: &str) -> Result<(), ControllerError> {
        let Some(g) = self.inner.group.as_ref() else {
            return Ok(());
        };
        let Some(token) = g.acting_token() else {
            return Err(ControllerError::Deposed(
                "its lease may have run out".to_owned(),
            ));
        };
        let why = match g.guard_journal(id, text, token).await {
            Ok(true) => return Ok(()),
            Ok(false) => "etcd refused its journal write: another member leads".to_owned(),
            Err(e) => format!("its journal could not be written to etcd: {e}"),
        };
        self.stand_down(&why);
        Err(ControllerError::Deposed(why))
    }

    fn failpoint(&self, point: &str, step: usize) {
        if self
            .inner
            .failpoint
            .as_ref()
            .is_some_and(|(p, n)| p == point && *n == step)
        {
            tracing::error!(point, step, "MEDIC_FAILPOINT: aborting now.");
            std::process::abort();
        }
    }
}
