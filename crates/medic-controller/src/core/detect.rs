//! Detection: each check's result into its target's [`Detector`], and silence judged by the
//! machine's observers.
//!
//! A refusal is certain of a redis process (`ProcessDied` at once); silence needs `fall` misses
//! and then the witnesses — asked ahead at the first miss, so the verdict need not wait for
//! them — before a machine is declared lost. If they still see it after they have had time to
//! notice, the monitor host is the one cut off: alert, do nothing.
//!
//! Silence of the machine itself is faster: a check that went unanswered *and* whose machine
//! did not answer a fresh TCP connection (the check's knock, [`crate::knock`]) has the
//! machine's witnesses knock too, at once. If a majority of them get no answer either, and
//! nothing on the machine has answered since, it is lost without waiting for `fall` misses. A
//! busy or hung process never takes this path: its kernel answers the knock.

use std::time::Duration;

use medic_detect::{Decision, Detector, Health, Observation, Verdict, Witnesses, judge_silence};
use medic_plan::{AlertLevel, Event};

use super::{Core, Early, Judging, Output, Request, TargetHealth};
use crate::checks::{CheckResult, Target};
use crate::witness;

/// A replica that heard nothing from its master for longer than this sees it as gone (the
/// redis playbook sets `repl-ping-replica-period 1`).
pub const LINK_SILENT_SECS: u64 = 2;

impl Core {
    /// A target whose results decide nothing: its machine in maintenance or out of
    /// monitoring, or the server itself left out by a recovery.
    pub fn left_alone(&self, t: &Target) -> bool {
        let machine = t.machine();
        self.saved.maintenance.contains(machine)
            || self.saved.unmonitored.contains(machine)
            || matches!(t, Target::Redis { shard, machine }
                if self.saved.unmonitored_servers.iter().any(|(s, m)| s == shard && m == machine))
    }

    /// One check's result.
    pub fn on_check(&mut self, r: &CheckResult) -> Vec<Output> {
        // (Refused or unhealthy is an answer too: the machine is there.)
        let answered = !self.saved.kept_unanswered.is_empty()
            && r.observation != Observation::Silent
            && self.saved.kept_unanswered.remove(r.target.machine());
        let mut out = match self.miscast(r) {
            Some(out) => out,
            None => self.on_result(r),
        };
        if answered {
            out.push(Output::Save);
        }
        out
    }

    pub(super) fn on_result(&mut self, r: &CheckResult) -> Vec<Output> {
        let mut out = Vec::new();
        let machine = r.target.machine();
        if self.left_alone(&r.target) {
            return out;
        }
        if self.busy.contains(machine) {
            // Queued, not yet running: what it answers decides whether the recovery still
            // starts (see `schedule`). Nothing else is acted on.
            if r.observation == Observation::Ok
                && let Some(h) = self.health.get_mut(&*r.target)
            {
                h.last_ok_ms = Some(r.at_ms);
            }
            return out;
        }
        let top = &self.loaded.topology;
        let check = check_of(top, &r.target);
        // Thousands of results a second: one lookup and no allocation on the steady path (the
        // target is cloned only the first time, the detail only when it changes).
        let h = match self.health.get_mut(&*r.target) {
            Some(h) => h,
            None => self
                .health
                .entry(Target::clone(&r.target))
                .or_insert(TargetHealth {
                    detector: Detector::new(check.fall, check.rise),
                    last: Observation::Ok,
                    detail: String::new(),
                    last_ok_ms: None,
                    first_fail_ms: None,
                    ok_since_ms: None,
                    role: None,
                    offset: None,
                    checks: 0,
                    knocked: None,
                }),
        };
        h.checks += 1;
        if r.knocked.is_some() || r.observation == Observation::Ok {
            h.knocked = r.knocked;
        }
        // (An answer's detail is always the same: compared only when something is wrong.)
        let steady = r.observation == Observation::Ok && h.last == Observation::Ok;
        if !steady && h.detail != r.detail {
            h.detail = r.detail.to_string();
        }
        h.last = r.observation;
        if r.observation == Observation::Ok {
            h.last_ok_ms = Some(r.at_ms);
            h.first_fail_ms = None;
            h.ok_since_ms.get_or_insert(r.at_ms);
        } else {
            h.ok_since_ms = None;
            if h.first_fail_ms.is_none() {
                h.first_fail_ms = Some(r.at_ms);
            }
        }
        if let Some(info) = &r.info {
            h.role = Some(info.role);
            h.offset = Some(info.replica_offset.unwrap_or(info.offset));
        }
        // A refusal is certain of a redis process. Not of a proxy's machine: HAProxy's runtime
        // API or a frontend refuses while it restarts or reloads, and there is no process
        // restart for it, only a replacement — so it is judged like silence: `fall` of them,
        // then the machine's observers.
        // A service's refusal is a bad answer: `fall` of them fail it over (a restart by its
        // supervisor is not a failover), and its machine answers.
        let observation = match (&*r.target, r.observation) {
            (Target::Proxy { .. } | Target::App { .. }, Observation::Refused) => {
                Observation::Silent
            }
            (Target::Service { .. }, Observation::Refused) => Observation::Unhealthy,
            (_, o) => o,
        };
        let was_up = h.detector.health == Health::Up;
        let verdict = h.detector.observe(observation);
        let health = h.detector.health;
        let first_fail = h.first_fail_ms;
        let first_miss = was_up && verdict.is_none() && observation == Observation::Silent;
        if let (Target::Redis { shard, machine }, Some(info)) = (&*r.target, &r.info)
            && self.roles(shard, machine, info, r, &mut out)
        {
            return out;
        }
        if let Target::Service { service, machine } = &*r.target
            && self.service_seen(service, machine, r, verdict, &mut out)
        {
            return out;
        }
        if let Some(within) = r.knocked
            && !matches!(health, Health::Up | Health::Down { certain: true, .. })
        {
            self.knock_ahead(&r.target, within, r.at_ms, &mut out);
        }
        let Some(verdict) = verdict else {
            if first_miss {
                self.ask_ahead(&r.target, r.at_ms, &mut out);
            } else if matches!(health, Health::Down { certain: false, .. })
                && observation == Observation::Silent
            {
                // Silence that has not been acted on is judged again as it goes on.
                self.judge(&r.target, first_fail, r.at_ms, &mut out);
            }
            return out;
        };
        tracing::info!(target = %r.target, ?verdict, detail = %r.detail, "Health changed.");
        match verdict {
            Verdict::Recovered => {
                self.cut_off.remove(machine);
                self.warned.remove(&*r.target);
                out.push(notify("recovered", format!("{} answers again", r.target)));
            }
            Verdict::Dead => {
                // Only a redis target is ever dead: a proxy's refusal is judged as silence.
                if let Target::Redis { shard, machine } = &*r.target {
                    let event = Event::ProcessDied {
                        shard: shard.clone(),
                        machine: machine.clone(),
                    };
                    let req = Request {
                        event,
                        trigger: format!("{}: {}", r.target, r.detail),
                        first_failure_ms: first_fail,
                        master_last_ok_ms: self.last_ok_if_master(machine),
                        queued_ms: r.at_ms,
                        detected: true,
                        resume: None,
                    };
                    detected(&mut out, &r.target, &r.detail, first_fail, r.at_ms);
                    self.request(req);
                }
            }
            Verdict::Silent => self.judge(&r.target, first_fail, r.at_ms, &mut out),
            Verdict::Failing if matches!(&*r.target, Target::Service { .. }) => {}
            Verdict::Failing => {
                if self.warned.insert(Target::clone(&r.target)) {
                    out.push(Output::Alert {
                        level: AlertLevel::Warning,
                        message: format!("{} answers but is unusable: {}", r.target, r.detail),
                    });
                }
            }
        }
        out
    }

    /// The last good check of `machine`'s servers that are masters (the start of the window
    /// of writes a failover may lose).
    pub(super) fn last_ok_if_master(&self, machine: &str) -> Option<u64> {
        let mut last = None;
        for (target, h) in &self.health {
            if let Target::Redis { shard, machine: m } = target
                && m == machine
                && self
                    .saved
                    .observed
                    .shards
                    .get(shard)
                    .is_some_and(|s| s.master == *m)
            {
                last = last.max(h.last_ok_ms);
            }
        }
        last
    }

    /// For a silent redis server: another redis server of its machine that answers. Any one
    /// makes the silence a hung process, not a lost machine. (None for other targets.)
    fn answering_beside(&self, target: &Target) -> Option<&Target> {
        let Target::Redis { .. } = target else {
            return None;
        };
        self.health
            .iter()
            .find(|(t, h)| {
                *t != target
                    && t.machine() == target.machine()
                    && matches!(t, Target::Redis { .. })
                    && h.detector.health == Health::Up
                    // A server left out answers nothing now: its last health is stale.
                    && !self.left_alone(t)
            })
            .map(|(t, _)| t)
    }

    /// A machine's first missed check: its witnesses are asked now, so that if the silence
    /// lasts the `fall` checks the verdict has their answer at once. Nothing is decided here.
    fn ask_ahead(&mut self, target: &Target, now_ms: u64, out: &mut Vec<Output>) {
        let machine = target.machine();
        if self.busy.contains(machine)
            || self.judging.contains_key(machine)
            || matches!(self.early.get(machine), Some(Early::Asked { .. }))
            || self.answering_beside(target).is_some()
        {
            return;
        }
        self.early
            .insert(machine.to_owned(), Early::Asked { asked_ms: now_ms });
        out.push(Output::Ask {
            target: target.clone(),
            ahead: true,
            knock: None,
        });
    }

    /// The monitor's knock at `target`'s machine went unanswered: its witnesses knock too, now
    /// (at most one question at a time per machine; one unanswered for 2 s is asked again).
    fn knock_ahead(
        &mut self,
        target: &Target,
        within: Duration,
        now_ms: u64,
        out: &mut Vec<Output>,
    ) {
        let machine = target.machine();
        if self.busy.contains(machine)
            || self.judging.contains_key(machine)
            || self
                .knocking
                .get(machine)
                .is_some_and(|at| now_ms.saturating_sub(*at) < 2_000)
        {
            return;
        }
        self.knocking.insert(machine.to_owned(), now_ms);
        out.push(Output::Ask {
            target: target.clone(),
            ahead: true,
            knock: Some(within),
        });
    }

    /// The witnesses' knocks at `target`'s machine: lost at once if a majority got no answer,
    /// the target is still missing and nothing on its machine has answered since the monitor's
    /// own knock. Anything else decides nothing: `fall` misses and the usual question follow.
    fn on_knocks(
        &mut self,
        target: &Target,
        w: &Witnesses,
        first_hand: bool,
        now_ms: u64,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        let machine = target.machine();
        let Some(asked_ms) = self.knocking.remove(machine) else {
            return out;
        };
        let Some(h) = self.health.get(target) else {
            return out;
        };
        let missing = matches!(
            h.detector.health,
            Health::Suspect { .. } | Health::Down { certain: false, .. }
        );
        let answered = self
            .health
            .iter()
            .any(|(t, h)| t.machine() == machine && h.last_ok_ms.is_some_and(|ok| ok >= asked_ms));
        tracing::info!(%target, ?w, missing, answered, "Witnesses knocked.");
        if missing && !answered && judge_silence(w) == Decision::FailOver {
            let first_fail = h.first_fail_ms;
            self.decide(target, first_fail, w, first_hand, now_ms, true, &mut out);
        }
        out
    }

    /// Silence: the witnesses are asked whether the machine is really gone (or their answer
    /// asked ahead is used).
    fn judge(
        &mut self,
        target: &Target,
        first_fail: Option<u64>,
        now_ms: u64,
        out: &mut Vec<Output>,
    ) {
        let machine = target.machine().to_owned();
        let interval = check_of(&self.loaded.topology, target)
            .interval
            .as_duration()
            .as_millis() as u64;
        if self.busy.contains(&machine) || self.judging.contains_key(&machine) {
            return;
        }
        if self
            .judged_at
            .get(&machine)
            .is_some_and(|at| now_ms.saturating_sub(*at) < interval)
        {
            return;
        }
        // Every redis server of the machine must be failing: one silent server next to
        // answering ones is a hung process, not a lost machine.
        if self.answering_beside(target).is_some() {
            if self.warned.insert(target.clone()) {
                let mut answering: Vec<String> = self
                    .health
                    .iter()
                    .filter(|(t, h)| {
                        *t != target
                            && t.machine() == target.machine()
                            && matches!(t, Target::Redis { .. })
                            && h.detector.health == Health::Up
                            && !self.left_alone(t)
                    })
                    .map(|(t, _)| t.to_string())
                    .collect();
                answering.sort();
                let more = answering.len().saturating_sub(3);
                answering.truncate(3);
                if more > 0 {
                    answering.push(format!("{more} more"));
                }
                out.push(Output::Alert {
                    level: AlertLevel::Warning,
                    message: format!("{target} is silent while {} on the same machine answer: a hung process? medic does not act on it", answering.join(", ")),
                });
            }
            return;
        }
        self.judged_at.insert(machine.clone(), now_ms);
        let mut judging = Judging {
            target: target.clone(),
            first_fail,
            on_early: false,
        };
        match self.early.remove(&machine) {
            Some(Early::Asked { asked_ms }) => {
                // Asked ahead and not answered yet: wait for that answer.
                self.early
                    .insert(machine.clone(), Early::Asked { asked_ms });
                judging.on_early = true;
                self.judging.insert(machine, judging);
            }
            Some(Early::Answered {
                asked_ms,
                w,
                first_hand,
            }) if first_fail.is_some_and(|f| asked_ms >= f)
                && judge_silence(&w) == Decision::FailOver =>
            {
                self.decide(target, first_fail, &w, first_hand, now_ms, false, out);
            }
            _ => {
                self.judging.insert(machine, judging);
                out.push(Output::Ask {
                    target: target.clone(),
                    ahead: false,
                    knock: None,
                });
            }
        }
    }

    /// The witnesses' answer about `target`'s machine.
    pub fn on_witnesses(
        &mut self,
        target: &Target,
        ahead: bool,
        knock: bool,
        w: Witnesses,
        first_hand: bool,
        now_ms: u64,
    ) -> Vec<Output> {
        if knock {
            return self.on_knocks(target, &w, first_hand, now_ms);
        }
        let mut out = Vec::new();
        let machine = target.machine().to_owned();
        if ahead {
            let asked_ms = match self.early.get(&machine) {
                Some(Early::Asked { asked_ms }) => *asked_ms,
                _ => now_ms,
            };
            let waiting = self.judging.get(&machine).is_some_and(|j| j.on_early);
            if !waiting {
                self.early.insert(
                    machine,
                    Early::Answered {
                        asked_ms,
                        w,
                        first_hand,
                    },
                );
                return out;
            }
            self.early.remove(&machine);
            let Some(j) = self.judging.get(&machine).cloned() else {
                return out;
            };
            if j.first_fail.is_some_and(|f| asked_ms >= f)
                && judge_silence(&w) == Decision::FailOver
            {
                self.judging.remove(&machine);
                self.decide(
                    &j.target,
                    j.first_fail,
                    &w,
                    first_hand,
                    now_ms,
                    false,
                    &mut out,
                );
            } else {
                // It may be stale by now: asked again.
                if let Some(j) = self.judging.get_mut(&machine) {
                    j.on_early = false;
                }
                out.push(Output::Ask {
                    target: j.target,
                    ahead: false,
                    knock: None,
                });
            }
            return out;
        }
        let Some(j) = self.judging.remove(&machine) else {
            return out;
        };
        self.decide(
            &j.target,
            j.first_fail,
            &w,
            first_hand,
            now_ms,
            false,
            &mut out,
        );
        out
    }

    /// How long the witnesses may take to notice a silent server: a HAProxy's checks, or a
    /// replica's silent-link threshold, whichever is slower.
    pub fn witness_grace(&self) -> Duration {
        let h = &self.loaded.topology.proxies.value.haproxy;
        let haproxy =
            h.check_interval.as_duration() * (h.check_fall + 1) + h.timeout_check.as_duration();
        haproxy.max(Duration::from_secs(LINK_SILENT_SECS + 2))
    }

    /// `knocked`: on the witnesses' knocks, before `fall` misses (the target may still be
    /// only suspect).
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &mut self,
        target: &Target,
        first_fail: Option<u64>,
        w: &Witnesses,
        first_hand: bool,
        now_ms: u64,
        knocked: bool,
        out: &mut Vec<Output>,
    ) {
        let machine = target.machine().to_owned();
        if self.busy.contains(&machine) || self.left_alone(target) {
            return;
        }
        // Answered since the question was asked: not silent any more.
        if !self
            .health
            .get(target)
            .is_some_and(|h| match h.detector.health {
                Health::Down { certain, .. } => !certain,
                Health::Suspect { .. } => knocked,
                Health::Up => false,
            })
        {
            return;
        }
        let mut decision = judge_silence(w);
        let silent_ms = first_fail.map_or(0, |f| now_ms.saturating_sub(f));
        let early = silent_ms < self.witness_grace().as_millis() as u64;
        if (decision == Decision::MonitorCutOff && !first_hand && early)
            || (decision == Decision::Unconfirmed && early)
        {
            // Some witnesses spoke from their own checks, which may not have noticed yet, or
            // could not be asked this time: the next checks ask again.
            decision = Decision::Wait;
        }
        tracing::info!(%target, ?w, ?decision, silent_ms, "Witnesses asked.");
        match decision {
            Decision::FailOver => {
                let how = if knocked {
                    ", its machine answering no knock"
                } else {
                    ""
                };
                let detail = format!("silent for {silent_ms} ms{how}; {}", witness::describe(w));
                detected(out, target, &detail, first_fail, now_ms);
                let last_ok = self.last_ok_if_master(&machine);
                self.request(Request {
                    event: Event::MachineLost {
                        machine: machine.clone(),
                    },
                    trigger: format!("{target}: {detail}"),
                    first_failure_ms: first_fail,
                    master_last_ok_ms: last_ok,
                    queued_ms: now_ms,
                    detected: true,
                    resume: None,
                });
            }
            Decision::MonitorCutOff => {
                if self.cut_off.insert(machine.clone()) {
                    out.push(Output::Alert {
                        level: AlertLevel::Critical,
                        message: format!("the monitor host cannot reach {machine}, but other observers still see it — {}: medic does not fail over; check the monitor host's network", witness::describe(w)),
                    });
                }
            }
            Decision::Unconfirmed => {
                if self.cut_off.insert(machine.clone()) {
                    out.push(Output::Alert {
                        level: AlertLevel::Critical,
                        message: format!("{machine} is silent to the monitor host, but only {}: no majority of its observers confirms it is gone, so medic does not fail over (the monitor host may be on the minority side of a partition); check the network, or `medic recover {machine}` if it is really lost", witness::describe(w)),
                    });
                }
            }
            Decision::Wait => {}
        }
    }
}

/// The check settings of `target`.
fn check_of(top: &medic_topology::Topology, target: &Target) -> medic_topology::Check {
    match target {
        Target::Redis { .. } => top.checks.redis.value,
        Target::Proxy { .. } => top.checks.haproxy.value,
        Target::App { .. } => top.checks.app_proxy.value,
        Target::Service { service, .. } => top
            .service(service)
            .map_or(top.checks.haproxy.value, |s| s.check.value.cadence()),
    }
}

pub(super) fn notify(event: &'static str, message: String) -> Output {
    Output::Notify {
        event,
        message,
        details: None,
    }
}

/// The detection of a failure: its time for the metrics and its event.
pub(super) fn detected(
    out: &mut Vec<Output>,
    target: &Target,
    detail: &str,
    first_fail: Option<u64>,
    now_ms: u64,
) {
    out.push(Output::Detected {
        seconds: first_fail.map(|f| now_ms.saturating_sub(f) as f64 / 1000.0),
    });
    out.push(Output::Notify {
        event: "detection",
        message: format!("{target}: {detail}"),
        details: Some(serde_json::json!({ "target": target, "detail": detail })),
    });
}
