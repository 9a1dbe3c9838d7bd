//! Recoveries: which queued one starts (and whether it still should), which step comes next,
//! what a step's outcome changes, and how a recovery ends.
//!
//! Each is planned when it starts, against the state the recoveries before it left. One runs
//! per machine and per shard; recoveries whose machines and shards are disjoint run at the
//! same time. A step that still fails after its retries stops the recovery: the machine stays
//! out of monitoring and an alert says where it stopped; a process that cannot be restarted
//! escalates to the recovery of its machine.
//!
//! **Flap damping**: a replacement beyond `policy.cooldown` or
//! `policy.max_replacements_per_hour` is held — the plan runs up to its terminate step
//! (failover included) and alerts instead of replacing.

use std::collections::BTreeSet;

use medic_plan::{
    Action, AlertLevel, Event, Hints, MonitorTarget, Plan, Step, StepOutput, plan_with,
};

use super::holds::Held;
use super::steps::note_skips;
use super::{Claims, Core, Output, Request, Resume, Running, recovery_id};
use crate::checks::Target;
use crate::journal::Outcome;
use crate::store::hold_reason;

/// What a recovery does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Run this step (journal its intent first).
    Run(Box<Step>),
    /// It is over: journal this outcome, then call [`Core::finished`].
    End(Outcome),
    /// No such recovery running.
    Unknown,
}

/// The first wait before a machine whose recovery failed is watched again, and the longest.
pub(super) const RETRY_FIRST_MS: u64 = 10_000;
pub(super) const RETRY_MAX_MS: u64 = 300_000;

impl Core {
    /// A journaled recovery that did not finish: what its finished steps did is applied to
    /// the state again (idempotent), and it is queued to go on from where it stopped.
    pub fn resume(
        &mut self,
        resume: Resume,
        trigger: String,
        first_failure_ms: Option<u64>,
        master_last_ok_ms: Option<u64>,
        now_ms: u64,
    ) {
        for step in &resume.plan.steps {
            if let Some(output) = resume.done.get(&step.index) {
                self.saved.observed.apply(&step.action, output);
            }
            // A replacement launched before the restart counts for the flap limits.
            if let (Action::LaunchInstance { spec }, Some(at)) =
                (&step.action, resume.launched_ms.get(&step.index))
                && !self
                    .saved
                    .replacements
                    .iter()
                    .any(|(m, t)| *m == spec.machine && t == at)
            {
                self.saved.replacements.push((spec.machine.clone(), *at));
            }
        }
        self.request(Request {
            event: resume.plan.event.clone(),
            trigger,
            first_failure_ms,
            master_last_ok_ms,
            queued_ms: now_ms,
            detected: false,
            resume: Some(resume),
        });
    }

    /// What a request may change.
    fn claims(&self, req: &Request) -> Claims {
        let mut c = Claims::default();
        let holds = |m: &str| -> BTreeSet<String> {
            self.saved
                .observed
                .shards
                .iter()
                .filter(|(_, s)| s.master == m || s.replicas.iter().any(|r| r.machine == m))
                .map(|(n, _)| n.clone())
                .collect()
        };
        match &req.event {
            Event::MachineLost { machine } => {
                c.machines.insert(machine.clone());
                c.shards = holds(machine);
                for s in self.loaded.topology.services_on(machine) {
                    c.shards.insert(service_claim(&s.name.value));
                }
                // A proxy's replacement is configured with each routed service's roles as
                // planned: no change of them may run beside it.
                let top = &self.loaded.topology;
                if top.proxy_machines().any(|p| p == machine) {
                    for s in top.services.iter().filter(|s| s.value.proxy.is_some()) {
                        c.shards.insert(service_claim(&s.value.name.value));
                    }
                }
            }
            Event::ServiceDown { service, machine }
            | Event::ServiceRejoin { service, machine }
            | Event::ServiceFollow { service, machine } => {
                c.machines.insert(machine.clone());
                c.shards.insert(service_claim(service));
            }
            Event::ProcessDied { shard, machine }
            | Event::StaleMaster { shard, machine }
            | Event::FollowMaster { shard, machine } => {
                c.machines.insert(machine.clone());
                c.shards.insert(shard.clone());
            }
            Event::Switchover { shard, .. } if self.loaded.topology.service(shard).is_some() => {
                c.shards.insert(service_claim(shard));
            }
            Event::Switchover { shard, .. } => {
                c.shards.insert(shard.clone());
            }
            // A spare is no machine's and no shard's until a replacement takes it (ready).
            Event::Spare { .. } => {}
            Event::Bootstrap => {
                c.machines = self.saved.observed.machines.keys().cloned().collect();
                c.shards = self.saved.observed.shards.keys().cloned().collect();
                c.shards.extend(
                    self.saved
                        .observed
                        .services
                        .keys()
                        .map(|s| service_claim(s)),
                );
            }
        }
        if let Some(r) = &req.resume {
            for s in &r.plan.steps {
                if let Action::PromoteReplica { server, .. } | Action::ReplicaOf { server, .. } =
                    &s.action
                {
                    c.shards.insert(server.shard.clone());
                }
                if let Action::ServiceRole { service, .. } = &s.action {
                    c.shards.insert(service_claim(service));
                }
            }
        }
        c
    }

    /// Starts every queued recovery whose machines and shards no running one holds (in the
    /// order they were asked for: none overtakes an earlier one it overlaps).
    pub fn schedule(&mut self, now_ms: u64) -> Vec<Output> {
        let mut out = Vec::new();
        if !self.leading {
            return out;
        }
        let due: Vec<String> = self
            .saved
            .retries
            .iter()
            .filter(|(m, (at, _))| *at <= now_ms && !self.busy.contains(*m))
            .map(|(m, _)| m.clone())
            .collect();
        for m in due {
            if let Some(r) = self.saved.retries.get_mut(&m) {
                r.0 = u64::MAX;
            }
            if self.saved.watch_again(&m) {
                self.health.retain(|t, _| t.machine() != m);
                out.push(Output::Alert {
                    level: AlertLevel::Warning,
                    message: format!("{m} is watched again after its recovery's backoff (it failed, or kept the machine): what is still wrong is detected and acted on afresh"),
                });
                out.push(Output::Save);
            }
        }
        let mut waiting: Vec<Claims> = Vec::new();
        let mut i = 0;
        while i < self.queue.len() {
            let claims = self.claims(&self.queue[i]);
            if self.running.values().any(|r| r.claims.overlaps(&claims))
                || waiting.iter().any(|w| w.overlaps(&claims))
            {
                waiting.push(claims);
                i += 1;
                continue;
            }
            let Some(req) = self.queue.remove(i) else {
                break;
            };
            self.start(req, claims, now_ms, &mut out);
        }
        out
    }

    /// Whether a request queued on a verdict still stands: the machine (or the server) has
    /// not answered since, and a stale master is still not the recorded one.
    fn still_wanted(&self, req: &Request) -> Result<(), String> {
        if let Event::FollowMaster { shard, machine } = &req.event
            && self.master_of(shard) == Some(machine)
        {
            return Err(format!("{machine} is {shard}'s recorded master by now"));
        }
        if let Some(why) = self.switchback_stale(req) {
            return Err(why);
        }
        if !req.detected {
            return Ok(());
        }
        if let Event::ServiceDown { service, .. } = &req.event
            && let Some(why) = self.switched_back_since(service, req.queued_ms)
        {
            return Err(why);
        }
        let answered = |machine: &str, shard: Option<&str>| {
            self.health.iter().any(|(t, h)| {
                t.machine() == machine
                    && shard.is_none_or(
                        |s| matches!(t, crate::checks::Target::Redis { shard, .. } if shard == s),
                    )
                    && h.last_ok_ms.is_some_and(|ok| ok > req.queued_ms)
            })
        };
        match &req.event {
            Event::MachineLost { machine } if answered(machine, None) => {
                Err(format!("{machine} answered again since"))
            }
            Event::ProcessDied { shard, machine } if answered(machine, Some(shard)) => {
                Err(format!("{shard}@{machine} answered again since"))
            }
            Event::ServiceDown { service, machine }
                if self.health.iter().any(|(t, h)| {
                    matches!(t, crate::checks::Target::Service { service: s, machine: m } if s == service && m == machine)
                        && h.last_ok_ms.is_some_and(|ok| ok > req.queued_ms)
                }) =>
            {
                Err(format!("{service}@{machine} passed its checks again since"))
            }
            Event::StaleMaster { shard, machine } if self.master_of(shard) == Some(machine) => {
                Err(format!("{machine} is {shard}'s recorded master by now"))
            }
            _ => Ok(()),
        }
    }

    fn start(&mut self, req: Request, claims: Claims, now_ms: u64, out: &mut Vec<Output>) {
        let key = req.key().map(str::to_owned);
        let wanted = self.still_wanted(&req);
        // A switchback is saved until it starts (the journal has it from then on), is dropped,
        // or cannot be planned: never run twice, once by a restarted controller.
        if self.switchback_over(&req.trigger, &req.event) {
            out.push(Output::Save);
        }
        if let Err(why) = wanted {
            out.push(Output::Alert {
                level: AlertLevel::Warning,
                message: format!("{}: not acted on: {why}", req.event),
            });
            self.release(key.as_deref());
            return;
        }
        let held = self.crash_loop_held(&req, &claims, now_ms, out);
        if held == Held::Whole {
            self.release(key.as_deref());
            return;
        }
        let (id, plan, done, begun_before, resumed) = match req.resume {
            Some(r) => (r.id, r.plan, Some(r.done), r.begun, true),
            None => {
                let id = recovery_id(key.as_deref().unwrap_or("all"), now_ms);
                let hints = Hints {
                    no_restart: match &held {
                        Held::RestartOnly(why) => Some(why.clone()),
                        _ => None,
                    },
                    silent: self.silent_servers(),
                };
                let (top, state) = (&self.loaded.topology, &self.saved.observed);
                let planned = plan_with(top, state, &req.event, &id, &hints);
                match planned {
                    Ok(p) => (
                        id,
                        self.apply_flap_limits(p, now_ms),
                        None,
                        BTreeSet::new(),
                        false,
                    ),
                    Err(e) => {
                        out.push(Output::Alert {
                            level: AlertLevel::Critical,
                            message: format!("{}: cannot plan a recovery: {e}", req.event),
                        });
                        self.release(key.as_deref());
                        return;
                    }
                }
            }
        };
        // (A resumed one was detected unless an operator asked for it.)
        let detected = req.detected || (resumed && !req.trigger.starts_with("manual:"));
        let mut run = Running {
            redo: BTreeSet::new(),
            done: BTreeSet::new(),
            plan,
            trigger: req.trigger,
            first_failure_ms: req.first_failure_ms,
            master_last_ok_ms: req.master_last_ok_ms,
            started_ms: now_ms,
            resumed,
            begun_before,
            current: None,
            skipped: Vec::new(),
            unfenced: medic_exec::Unfenced::default(),
            detected,
            alerted: false,
            held: None,
            failed: None,
            key,
            claims,
        };
        if let Some(done) = done {
            // The fences its finished steps skipped, and what it fenced at the source, still
            // count; steps whose effect expires (a switchover's bounded pause) run again.
            for s in &run.plan.steps {
                if let Some(o) = done.get(&s.index) {
                    note_skips(&mut run.unfenced, &mut run.skipped, &s.action, o);
                    run.done.insert(s.index);
                }
            }
            run.redo = run.plan.redo_on_resume(&run.done);
            // An adopted deployment's runtime changes are never written into haproxy.cfg: a
            // proxy reloaded while the controller was away may have undone any of them.
            if !self.loaded.topology.managed() {
                run.redo.extend(run.plan.runtime_changes_done(&run.done));
            }
        }
        out.push(Output::Notify {
            event: "recovery_start",
            message: format!(
                "{}: recovery {} starts ({} steps) after {}",
                run.plan.event,
                run.plan.recovery,
                run.plan.steps.len(),
                run.trigger
            ),
            details: Some(serde_json::json!({"recovery": run.plan.recovery, "event": run.plan.event, "steps": run.plan.steps.len()})),
        });
        self.running.insert(id.clone(), run);
        out.push(Output::Start { recovery: id });
    }

    pub(super) fn release(&mut self, key: Option<&str>) {
        if let Some(k) = key {
            self.busy.remove(k);
        }
    }

    /// Cuts the plan before its terminate step when a replacement would break the flap limits.
    fn apply_flap_limits(&self, mut plan: Plan, now_ms: u64) -> Plan {
        let top = &self.loaded.topology;
        let Some(pos) = plan
            .steps
            .iter()
            .position(|s| matches!(s.action, Action::TerminateInstance { .. }))
        else {
            return plan;
        };
        let Action::TerminateInstance { machine, .. } = &plan.steps[pos].action else {
            return plan;
        };
        let Some(reason) = hold_reason(
            &self.saved.replacements,
            machine,
            now_ms,
            top.policy.cooldown.value.as_duration().as_millis() as u64,
            top.policy.max_replacements_per_hour.value,
        ) else {
            return plan;
        };
        let machine = machine.clone();
        plan.steps.truncate(pos);
        plan.steps.push(Step {
            index: pos + 1,
            action: Action::Alert {
                level: AlertLevel::Critical,
                message: format!(
                    "replacement held: {reason}. {machine} stays out of monitoring and is not replaced; `medic recover {machine}` replaces it when you decide"
                ),
            },
        });
        plan
    }

    /// The next step of a running recovery, or how it ended.
    pub fn next_step(&mut self, id: &str, now_ms: u64) -> Next {
        let Some(run) = self.running.get_mut(id) else {
            return Next::Unknown;
        };
        if let Some((step, error)) = &run.failed {
            return Next::End(Outcome::Failed {
                step: *step,
                error: error.clone(),
            });
        }
        let after = run.current.map(|(i, _)| i);
        let next = run.plan.steps.iter().find(|s| {
            after.is_none_or(|a| s.index > a)
                && (!run.done.contains(&s.index) || run.redo.contains(&s.index))
        });
        match next {
            Some(s) => {
                run.current = Some((s.index, now_ms));
                Next::Run(Box::new(s.clone()))
            }
            None => Next::End(match (&run.held, run.alerted) {
                (Some(reason), _) => Outcome::Held {
                    reason: reason.clone(),
                },
                (None, true) => Outcome::Alerted,
                (None, false) if !run.skipped.is_empty() => Outcome::Incomplete {
                    skipped: run.skipped.clone(),
                },
                (None, false) => Outcome::Completed,
            }),
        }
    }

    /// A step is done (and journaled): what it did is now the state.
    pub fn step_done(
        &mut self,
        id: &str,
        step: &Step,
        output: &StepOutput,
        now_ms: u64,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(run) = self.running.get_mut(id) else {
            return out;
        };
        run.done.insert(step.index);
        note_skips(&mut run.unfenced, &mut run.skipped, &step.action, output);
        match &step.action {
            Action::Alert { level, message } => {
                run.alerted = true;
                if message.starts_with("replacement held") {
                    run.held = Some(message.clone());
                }
                out.push(Output::Alert {
                    level: *level,
                    message: message.clone(),
                });
            }
            // One server out is that server only: the rest of its machine (other shards'
            // masters) stays watched when the plan ends without giving it back.
            Action::Unmonitor {
                target: MonitorTarget::Server { shard, machine },
            } => {
                self.saved
                    .unmonitored_servers
                    .insert((shard.clone(), machine.clone()));
                // Its last health is not kept: a stale `up` would make a lost machine look
                // like a hung process beside an answering server.
                self.health.remove(&Target::Redis {
                    shard: shard.clone(),
                    machine: machine.clone(),
                });
            }
            Action::Monitor {
                target: MonitorTarget::Server { shard, machine },
            } => {
                self.saved
                    .unmonitored_servers
                    .remove(&(shard.clone(), machine.clone()));
                let server = Target::Redis {
                    shard: shard.clone(),
                    machine: machine.clone(),
                };
                self.health.remove(&server);
            }
            Action::Unmonitor {
                target: MonitorTarget::Machine { machine },
            } => {
                self.saved.unmonitored.insert(machine.clone());
            }
            Action::Monitor {
                target: MonitorTarget::Machine { machine },
            } => {
                self.saved.watch_again(machine);
                self.health.retain(|t, _| t.machine() != machine);
            }
            Action::LaunchInstance { spec } => {
                self.saved.replacements.push((spec.machine.clone(), now_ms));
            }
            _ => {}
        }
        self.saved.observed.apply(&step.action, output);
        out.push(Output::Save);
        out
    }

    /// Whether `step` must wait for a last look at a machine: a machine lost on the checks'
    /// and witnesses' word is terminated only if it still does not answer (its hang or its
    /// partition may have ended since the verdict), nor fenced at the source (a failover's
    /// first step) if it answers again. Returns the machine to look at and the step's kind; the
    /// adapter probes it and, if it answers ([`crate::witness::holds_back`]), fails the step
    /// with [`last_look_failed`](super::last_look_failed).
    /// An operator's `medic recover` is not second-guessed.
    pub fn last_look(&self, id: &str, step: &Step) -> Option<super::LastLook> {
        let run = self.running.get(id)?;
        let Event::MachineLost { machine } = &run.plan.event else {
            return None;
        };
        let terminate = match &step.action {
            Action::TerminateInstance { machine: m, .. } if m == machine => true,
            Action::FenceAtSource { machine: m, .. } if m == machine => false,
            _ => return None,
        };
        run.detected.then(|| super::LastLook {
            machine: machine.clone(),
            terminate,
        })
    }

    /// A step failed after its retries: the recovery stops there.
    pub fn step_failed(&mut self, id: &str, step: usize, error: String) {
        if let Some(run) = self.running.get_mut(id) {
            run.failed = Some((step, error));
        }
    }

    /// The controller stops between steps: the recovery is left for the next start (its
    /// journal says where it was).
    pub fn abandon(&mut self, id: &str) {
        if let Some(r) = self.running.remove(id) {
            self.release(r.key.as_deref());
        }
    }
}

/// A service's key among the claims (beside shard names, which cannot contain `:`): one role
/// change per service at a time.
pub(super) fn service_claim(service: &str) -> String {
    format!("service:{service}")
}
