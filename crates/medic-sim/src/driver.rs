//! The simulation: medic's real controller core and real planner against the simulated world,
//! in virtual time, with faults drawn from one seed.
//!
//! Every 50 ms of virtual time: the world replicates and the clients write; faults start and
//! end; due health checks are made from the monitor host and handed to the core; witnesses
//! answer; queued recoveries start; each running recovery's step completes (executed against
//! the world as medic's executor would); every 2 s an idle controller reconciles the proxies
//! with the real `repairs`. After every tick the invariants I1 and I3 are checked; once the
//! faults have stopped, the run must converge (I5) within [`CONVERGE_WITHIN_MS`], and then no
//! acknowledged write may be missing outside a promotion's replication window (I2) and no
//! instance may be orphaned (I4).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use medic_controller::checks::{CheckResult, Target};
use medic_controller::core::{Core, Next, Output, Resume, is_internal, last_look_failed};
use medic_controller::store::Saved;
use medic_detect::Observation;
use medic_plan::{Action, ObservedState, Step, StepOutput};
use medic_topology::LoadedTopology;

use crate::exec::{SimExec, execute};

mod adapters;
mod end;
use crate::faults::{Fault, Planned};
use crate::invariants;
use crate::rng::Rng;
use crate::world::World;

/// Virtual time between two looks at the world.
pub const TICK_MS: u64 = 50;
/// After the last fault ends, everything must be healthy within this.
pub const CONVERGE_WITHIN_MS: u64 = 600_000;
/// After the faults stop, the operator acts on the alerts that asked for `medic recover`.
const OPERATOR_AFTER_MS: u64 = 30_000;
/// How often an idle controller reconciles the proxies.
const RECONCILE_MS: u64 = 2_000;

/// One journaled recovery, as the controller's journal keeps it.
#[derive(Debug, Clone)]
struct Journaled {
    resume: Resume,
    trigger: String,
    first_failure_ms: Option<u64>,
    master_last_ok_ms: Option<u64>,
    ended: bool,
}

/// A recovery being run: the step in progress, its attempt and when it completes.
#[derive(Debug)]
struct Runner {
    exec: SimExec,
    addresses: BTreeMap<String, IpAddr>,
    step: Option<(Step, u32, u64)>,
}

/// A failed run: the seed, the broken invariant and what led to it.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    /// The replay's extra flag for the deployment (`--three`), if not the lab's.
    pub flag: &'static str,
    pub at_ms: u64,
    pub violation: String,
    pub trace: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {}: at {} ms: {}",
            self.seed, self.at_ms, self.violation
        )?;
        for line in self.trace.iter().rev().take(40).rev() {
            writeln!(f, "  {line}")?;
        }
        write!(
            f,
            "replay: cargo run -p medic-sim --bin medic-sim --{} --seed {} --trace",
            self.flag, self.seed
        )
    }
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    /// The run ended waiting for a human, as designed (the alert that says so): it is not
    /// required to converge, and writes lost with both copies of a shard are not counted.
    pub needs_human: Option<String>,
    pub recoveries: usize,
    pub acked: usize,
    pub lost_in_window: usize,
    pub converged_ms: u64,
    pub trace: Vec<String>,
}

/// The simulation of one seed.
pub struct Sim {
    seed: u64,
    loaded: Arc<LoadedTopology>,
    world: World,
    core: Core,
    persisted: Saved,
    journal: BTreeMap<String, Journaled>,
    runners: BTreeMap<String, Runner>,
    /// Questions to the witnesses: when they answer, of whom, asked ahead, knocking.
    asks: Vec<(u64, Target, bool, bool)>,
    checks: Vec<(Target, u64, u64)>,
    faults: Vec<Planned>,
    /// Crash the controller right after the n-th executed step, before its outcome is
    /// journaled.
    crash_after_exec: Option<usize>,
    executed: usize,
    /// (shard, promoted replica's last sync, promotion time): writes acknowledged in between
    /// may be lost.
    windows: Vec<(String, u64, u64)>,
    now: u64,
    rng: Rng,
    trace: Vec<String>,
    recoveries: usize,
    /// Shards whose failover an alert said waits for a human (no replica fit to promote) or
    /// for a replica that alone holds the shard's data and does not answer, each with that
    /// alert. A human's call if each shard that did
    /// not converge is one of them, with a whole copy of its writes still there and none
    /// served (on a machine up, by a live process) — checked against the world, not taken on
    /// the alert's word.
    waits_for: BTreeMap<String, Vec<end::Waited>>,
    /// Machines an alert said are left as they are because they may hold such a shard's only
    /// copy (kept, not replaced, so the other shards' replicas there are away), each with
    /// its instance then: a later instance of the machine is not excused.
    kept: BTreeMap<String, String>,
    /// Machines an alert told the operator to `medic recover` if they are really lost, and
    /// those the simulated operator recovered.
    ask_operator: std::collections::BTreeSet<String>,
    recovered_by_operator: std::collections::BTreeSet<String>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("seed", &self.seed).finish()
    }
}

impl Sim {
    /// A healthy deployment of `loaded`, faults as planned.
    pub fn new(
        seed: u64,
        loaded: Arc<LoadedTopology>,
        faults: Vec<Planned>,
        crash_after_exec: Option<usize>,
    ) -> Sim {
        let top = &loaded.topology;
        let observed = ObservedState::assumed(top);
        let world = World::new(top, &observed);
        let saved = Saved {
            topology: top.name.value.clone(),
            observed,
            maintenance: Default::default(),
            unmonitored: Default::default(),
            unmonitored_servers: Default::default(),
            replacements: Vec::new(),
            retries: Default::default(),
            recoveries: Vec::new(),
            kept_unanswered: Default::default(),
            spare_launches: Vec::new(),
            switchbacks: Default::default(),
        };
        let mut rng = Rng::new(seed ^ 0x5eed);
        let checks = medic_controller::checks::targets(top)
            .into_iter()
            .map(|(t, c, _, _)| {
                let every = c.interval.as_duration().as_millis() as u64;
                let first = rng.below(every);
                (t, every, first)
            })
            .collect();
        let core = Core::new(loaded.clone(), saved.clone());
        let mut sim = Sim {
            seed,
            loaded,
            world,
            core,
            persisted: saved,
            journal: BTreeMap::new(),
            runners: BTreeMap::new(),
            asks: Vec::new(),
            checks,
            faults,
            crash_after_exec,
            executed: 0,
            windows: Vec::new(),
            now: 0,
            rng,
            trace: Vec::new(),
            recoveries: 0,
            waits_for: BTreeMap::new(),
            kept: BTreeMap::new(),
            ask_operator: Default::default(),
            recovered_by_operator: Default::default(),
        };
        sim.discover();
        sim
    }

    fn note(&mut self, text: String) {
        self.trace.push(format!("{:>7} {text}", self.now));
    }

    fn fail(&self, violation: String) -> Failure {
        Failure {
            seed: self.seed,
            flag: if self.loaded.path.ends_with("three.yaml") {
                " --three"
            } else {
                ""
            },
            at_ms: self.now,
            violation,
            trace: self.trace.clone(),
        }
    }

    /// Runs until the faults are over and everything converged (or an invariant breaks).
    pub fn run(mut self) -> Result<Report, Failure> {
        let faults_end = self
            .faults
            .iter()
            .map(|f| f.heal_ms.unwrap_or(f.at_ms))
            .max()
            .unwrap_or(0);
        let deadline = faults_end + CONVERGE_WITHIN_MS;
        let mut converged_since = None;
        while self.now < deadline {
            self.now += TICK_MS;
            self.tick()?;
            if self.now > faults_end + OPERATOR_AFTER_MS {
                self.operator();
            }
            if let Err(v) = invariants::check(&self.world, self.now) {
                return Err(self.fail(v.to_string()));
            }
            // (Once the faults are over, the replicas are given the tick's writes before the
            // comparison: a replica one tick behind is in sync.)
            if self.now > faults_end && self.core.idle() && self.runners.is_empty() && {
                self.world.advance(self.now);
                invariants::converged(&self.world).is_ok()
            } {
                let since = *converged_since.get_or_insert(self.now);
                // Steady for a while (a check may still be about to act).
                if self.now - since >= 5_000 {
                    return self.finish(since);
                }
            } else {
                converged_since = None;
            }
        }
        self.end_of_run()
    }

    /// The on-call engineer: a machine an alert said to `medic recover` if it is really lost,
    /// and that is lost (not up), is recovered by hand, once. The run must then converge.
    fn operator(&mut self) {
        // (machine, replace it): a held machine that does not answer is replaced; one that
        // answers again is watched again (`medic monitor`); an unconfirmed loss that is real
        // is recovered.
        let due: Vec<(String, bool)> = self
            .ask_operator
            .iter()
            .filter_map(|m| match m.strip_prefix('!') {
                Some(held) => Some((held.to_owned(), !self.answers(held))),
                None => (!self.world.is_up(m)).then(|| (m.clone(), true)),
            })
            .filter(|(m, _)| !self.recovered_by_operator.contains(m))
            .collect();
        for (m, replace) in due {
            self.recovered_by_operator.insert(m.clone());
            if replace {
                match self.core.recover_machine(&m, self.now) {
                    Ok(()) => self.note(format!("operator: medic recover {m}")),
                    Err(e) => self.note(format!("operator: medic recover {m}: {e}")),
                }
            } else {
                self.core.set_maintenance(&m, false);
                self.note(format!("operator: medic monitor {m} (it answers again)"));
            }
            self.persisted = self.core.saved.clone();
        }
    }

    fn tick(&mut self) -> Result<(), Failure> {
        let now = self.now;
        self.world.advance(now);
        self.world.client_writes(now);
        self.apply_faults();
        // Health checks due.
        let paused = self.core.paused();
        for i in 0..self.checks.len() {
            let (target, every, due) = self.checks[i].clone();
            if due > now {
                continue;
            }
            self.checks[i].2 = due + every;
            if paused.contains(target.machine()) {
                continue;
            }
            let (observation, info) = match &target {
                Target::Redis { shard, machine } => self.world.check_redis(shard, machine),
                Target::Proxy { machine } | Target::App { machine } => {
                    (self.world.check_proxy(machine), None)
                }
                // The simulated world has no services (docs/DESIGN.md, the simulator's gaps).
                Target::Service { .. } => continue,
            };
            let r = CheckResult {
                target: Arc::new(target),
                at_ms: now,
                observation,
                detail: match observation {
                    Observation::Ok => "ok",
                    Observation::Refused => "connection refused",
                    Observation::Silent => "no answer",
                    Observation::Unhealthy => "bad answer",
                }
                .into(),
                info,
                took: std::time::Duration::ZERO,
                // Silence in this world is always the machine's: unreachable or hung whole.
                knocked: (observation == Observation::Silent)
                    .then_some(medic_controller::knock::FLOOR),
            };
            let out = self.core.on_check(&r);
            self.carry_out(out);
        }
        // Witnesses answering.
        let due: Vec<(u64, Target, bool, bool)> =
            self.asks.iter().filter(|a| a.0 <= now).cloned().collect();
        self.asks.retain(|a| a.0 > now);
        for (_, target, ahead, knock) in due {
            let (w, first_hand) = self.witnesses(&target, knock);
            let out = self
                .core
                .on_witnesses(&target, ahead, knock, w, first_hand, now);
            self.carry_out(out);
        }
        let out = self.core.schedule(now);
        self.carry_out(out);
        let ids: Vec<String> = self.runners.keys().cloned().collect();
        for id in ids {
            self.advance_recovery(&id)?;
        }
        if now.is_multiple_of(RECONCILE_MS) && self.core.idle() {
            self.reconcile();
        }
        Ok(())
    }

    fn carry_out(&mut self, outputs: Vec<Output>) {
        for o in outputs {
            match o {
                Output::Alert { level, message } => {
                    // What a human must decide: promoting a replica that was never in sync
                    // or too far behind (losing writes), or promoting none while the one
                    // that has the data does not answer, is left to them (checked shard by
                    // shard at the end: see `end_of_run`); a held replacement and a loss too
                    // few observers could confirm are what `medic recover` is for, and the
                    // simulated operator runs it (see `operator`).
                    let wait = if message.contains("is not promoted automatically") {
                        Some(end::Wait::Human)
                    } else if message.contains(", the replica to promote, does not answer either") {
                        Some(end::Wait::Silent)
                    } else {
                        None
                    };
                    if let Some(wait) = wait
                        && let Some((shard, rest)) = message
                            .strip_prefix("shard ")
                            .and_then(|m| m.split_once(" lost its master "))
                    {
                        let lost = rest.split([',', ';']).next().unwrap_or_default().to_owned();
                        self.waits_for
                            .entry(shard.to_owned())
                            .or_default()
                            .push(end::Waited {
                                wait,
                                alert: message.clone(),
                                lost,
                            });
                    }
                    if let Some((m, _)) = message.split_once(medic_plan::KEPT) {
                        // (Kept: medic watches it again itself, after a backoff.)
                        if let Some(i) = self.world.instance(m) {
                            self.kept.insert(m.to_owned(), i.id.clone());
                        }
                    }
                    if let Some(m) = message
                        .split_once(" stays out of monitoring and is not replaced")
                        .and_then(|(before, _)| before.rsplit(' ').next())
                        .filter(|_| message.starts_with("replacement held"))
                    {
                        // (Held: the operator decides to replace it, whatever it does now.)
                        self.ask_operator.insert(format!("!{m}"));
                    }
                    if let Some(m) = message
                        .strip_prefix("recoveries of ")
                        .and_then(|r| r.split_once(" held:"))
                        .map(|(m, _)| m)
                    {
                        // A server's (`S@M`): the operator acts on its machine, each time one
                        // of its servers is held.
                        if let Some((_, machine)) = m.split_once('@') {
                            self.recovered_by_operator.remove(machine);
                            self.ask_operator.insert(format!("!{machine}"));
                        } else {
                            self.ask_operator.insert(format!("!{m}"));
                        }
                    }
                    if message.contains("no majority of its observers confirms")
                        && let Some((m, _)) = message.split_once(" is silent to the monitor host")
                    {
                        self.ask_operator.insert(m.to_owned());
                    }
                    self.note(format!("alert {level:?}: {message}"))
                }
                Output::Notify { event, message, .. } => self.note(format!("{event}: {message}")),
                Output::Detected { .. } => {}
                Output::Ask {
                    target,
                    ahead,
                    knock,
                } => {
                    let delay = 50 + self.rng.below(400);
                    self.asks
                        .push((self.now + delay, target, ahead, knock.is_some()));
                }
                Output::Start { recovery } => self.start(recovery),
                Output::Save => self.persisted = self.core.saved.clone(),
            }
        }
    }

    fn start(&mut self, id: String) {
        let Some(run) = self.core.running.get(&id) else {
            return;
        };
        self.recoveries += 1;
        if !self.journal.contains_key(&id) {
            self.journal.insert(
                id.clone(),
                Journaled {
                    resume: Resume {
                        id: id.clone(),
                        plan: run.plan.clone(),
                        done: BTreeMap::new(),
                        launched_ms: BTreeMap::new(),
                        begun: Default::default(),
                    },
                    trigger: run.trigger.clone(),
                    first_failure_ms: run.first_failure_ms,
                    master_last_ok_ms: run.master_last_ok_ms,
                    ended: false,
                },
            );
        }
        let exec = SimExec {
            unfenced: run.unfenced.clone(),
        };
        let addresses = self.core.saved.observed.addresses();
        self.runners.insert(
            id,
            Runner {
                exec,
                addresses,
                step: None,
            },
        );
    }

    /// How long a step takes (virtual ms).
    fn duration(&mut self, action: &Action) -> u64 {
        match action {
            Action::LaunchInstance { .. } => 2_000 + self.rng.below(3_000),
            Action::RunPlaybook { .. } => 1_000 + self.rng.below(2_000),
            Action::UpsertDns { .. } => 100 + self.rng.below(400),
            _ => 10 + self.rng.below(100),
        }
    }

    fn advance_recovery(&mut self, id: &str) -> Result<(), Failure> {
        loop {
            let Some(current) = self.runners.get(id).map(|r| r.step.clone()) else {
                return Ok(());
            };
            let Some((step, attempt, due)) = current else {
                match self.core.next_step(id, self.now) {
                    Next::Run(step) => {
                        // Its intent, journaled before it starts: a restart from here on
                        // finds it begun.
                        if let Some(j) = self.journal.get_mut(id) {
                            j.resume.begun.insert(step.index);
                        }
                        let d = if is_internal(&step.action) {
                            0
                        } else {
                            self.duration(&step.action)
                        };
                        if let Some(r) = self.runners.get_mut(id) {
                            r.step = Some((*step, 1, self.now + d));
                        }
                        continue;
                    }
                    Next::End(outcome) => {
                        self.note(format!("recovery {id} ends: {}", outcome.label()));
                        if let Some(j) = self.journal.get_mut(id) {
                            j.ended = true;
                        }
                        self.runners.remove(id);
                        let out = self.core.finished(id, &outcome, self.now);
                        self.carry_out(out);
                        return Ok(());
                    }
                    Next::Unknown => {
                        self.runners.remove(id);
                        return Ok(());
                    }
                }
            };
            if due > self.now {
                return Ok(());
            }
            // The last look before terminating a machine lost on the checks' word: the
            // monitor's own, then its observers' (as the controller's runner looks).
            if attempt == 1
                && let Some(look) = self.core.last_look(id, &step)
                && (self.answers(&look.machine) || self.seen_by_observers(&look))
            {
                self.note(format!(
                    "{id} step {} {}: {} answers again, not {}",
                    step.index,
                    step.action.kind(),
                    look.machine,
                    if look.terminate {
                        "terminated"
                    } else {
                        "fenced at the source"
                    }
                ));
                self.core
                    .step_failed(id, step.index, last_look_failed(&look));
                if let Some(r) = self.runners.get_mut(id) {
                    r.step = None;
                }
                continue;
            }
            let result = if is_internal(&step.action) {
                Ok(StepOutput::default())
            } else {
                let promoted_sync = match &step.action {
                    Action::PromoteReplica { server, .. } => self
                        .world
                        .redis(&server.shard, &server.machine)
                        .map(|r| (server.shard.clone(), r.last_sync_ms)),
                    _ => None,
                };
                let Some(runner) = self.runners.get_mut(id) else {
                    return Ok(());
                };
                let r = execute(
                    &mut self.world,
                    &mut runner.exec,
                    &runner.addresses,
                    &step,
                    self.now,
                );
                if let (Ok(_), Some((shard, last))) = (&r, promoted_sync) {
                    self.windows.push((shard, last, self.now));
                }
                r
            };
            match result {
                Ok(output) => {
                    self.note(format!(
                        "{id} step {} {} done{}",
                        step.index,
                        step.action.kind(),
                        output
                            .skipped
                            .as_ref()
                            .map(|s| format!(" (skipped: {s})"))
                            .unwrap_or_default()
                    ));
                    if let (Action::LaunchInstance { spec }, Some(ip)) =
                        (&step.action, output.address)
                        && let Some(r) = self.runners.get_mut(id)
                    {
                        r.addresses.insert(spec.machine.clone(), ip);
                    }
                    self.executed += 1;
                    if self.crash_after_exec == Some(self.executed) {
                        self.note(format!(
                            "controller crashes after step {} ran, before it is journaled",
                            step.index
                        ));
                        self.restart_controller();
                        return Ok(());
                    }
                    if let Some(j) = self.journal.get_mut(id) {
                        j.resume.done.insert(step.index, output.clone());
                        if matches!(step.action, Action::LaunchInstance { .. }) {
                            j.resume.launched_ms.insert(step.index, self.now);
                        }
                    }
                    let out = self.core.step_done(id, &step, &output, self.now);
                    self.carry_out(out);
                    if let Some(r) = self.runners.get_mut(id) {
                        r.step = None;
                    }
                }
                Err(e) => {
                    let (tries, pause) = match &step.action {
                        Action::WaitInSync { timeout_ms, .. }
                        | Action::WaitReachable { timeout_ms, .. } => {
                            ((*timeout_ms / 1_000).max(1) as u32, 1_000)
                        }
                        _ => (3, 500 * 2u64.pow(attempt.saturating_sub(1))),
                    };
                    if e.retryable && attempt < tries {
                        if let Some(r) = self.runners.get_mut(id) {
                            r.step = Some((step, attempt + 1, self.now + pause));
                        }
                        return Ok(());
                    }
                    self.note(format!(
                        "{id} step {} {} failed: {}",
                        step.index,
                        step.action.kind(),
                        e.message
                    ));
                    self.core.step_failed(id, step.index, e.message);
                    if let Some(r) = self.runners.get_mut(id) {
                        r.step = None;
                    }
                }
            }
        }
    }

    fn apply_faults(&mut self) {
        let now = self.now;
        let mut notes = Vec::new();
        let mut restart = false;
        for f in &self.faults {
            if f.at_ms > now - TICK_MS && f.at_ms <= now {
                notes.push(format!("fault: {}", f.fault));
                match &f.fault {
                    Fault::Controller => restart = true,
                    other => other.start(&mut self.world),
                }
            }
            if let Some(h) = f.heal_ms
                && h > now - TICK_MS
                && h <= now
            {
                notes.push(format!("fault over: {}", f.fault));
                f.fault.end(&mut self.world);
            }
        }
        for n in notes {
            self.note(n);
        }
        if restart {
            self.restart_controller();
        }
    }
}
