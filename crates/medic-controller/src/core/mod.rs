//! The controller's decisions, without I/O: a state machine that owns no socket, clock, file
//! or task.
//!
//! # Inputs and outputs
//! The adapters around it (the checks, the witnesses' questions, the recovery runners,
//! the HTTP API — or the simulator) call it with what happened, each call with the time:
//! - a check's result ([`Core::on_check`]),
//! - the witnesses' answer about a silent machine ([`Core::on_witnesses`]),
//! - a step's outcome ([`Core::step_done`], [`Core::step_failed`]),
//! - a tick ([`Core::schedule`]: queued recoveries whose machines are free start),
//! - an operator's request ([`Core::request`]),
//!
//! and get back [`Output`]s to carry out: alerts, events, questions to the witnesses,
//! recoveries to run (each step asked for with [`Core::next_step`]) and "the state changed,
//! persist it".
//!
//! # Guarantees
//! - A machine is failed over only on the word of a majority of its configured observers
//!   ([`medic_detect::judge_silence`]), never on the monitor host's alone.
//! - At most one recovery per machine (and per shard) is queued or running; recoveries whose
//!   machines and shards are disjoint run at the same time, so a master's failover never waits
//!   behind another machine's boot.
//! - A recovery queued on a check's verdict is checked again before it starts: a machine that
//!   answered since is not acted on.
//! - A server that a running recovery is promoting is not taken for a stale master.

mod astray;
mod detect;
mod finish;
mod holds;
mod orphans;
mod recovery;
mod roles;
mod service;
mod spares;
#[cfg(test)]
mod spares_tests;
pub mod startup;
mod steps;
mod switchback;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;

use medic_detect::{Detector, Observation, Witnesses};
use medic_plan::{AlertLevel, Event, ObservedState, Plan, StepOutput};
use medic_redis::Role;
use medic_topology::LoadedTopology;

use crate::checks::Target;
use crate::store::Saved;

pub use detect::LINK_SILENT_SECS;
pub use recovery::Next;
pub use spares::{Retire, SpareSeen, Tend};
pub use steps::{LastLook, internal_summary, is_internal, last_look_failed, note_skips};

/// Alerts kept for the status page.
pub const ALERTS_KEPT: usize = 50;

/// One target's health, for status and decisions.
#[derive(Debug, Clone)]
pub struct TargetHealth {
    pub detector: Detector,
    pub last: Observation,
    pub detail: String,
    pub last_ok_ms: Option<u64>,
    /// The first failed check of the current run of failures.
    pub first_fail_ms: Option<u64>,
    /// The first good check of the current run of good ones.
    pub ok_since_ms: Option<u64>,
    pub role: Option<Role>,
    pub offset: Option<u64>,
    pub checks: u64,
    /// The bound of its latest knock that went unanswered ([`crate::knock`]): how long the
    /// last look before acting on its machine knocks.
    pub knocked: Option<Duration>,
}

/// A recovery asked for, waiting its turn.
#[derive(Debug, Clone)]
pub struct Request {
    pub event: Event,
    pub trigger: String,
    pub first_failure_ms: Option<u64>,
    pub master_last_ok_ms: Option<u64>,
    /// When it was asked for.
    pub queued_ms: u64,
    /// Asked for on a check's verdict (re-validated before it starts), not by an operator or
    /// a journal.
    pub detected: bool,
    /// Set when resuming a journaled recovery: its id, and what its finished steps output.
    pub resume: Option<Resume>,
}

/// A journaled recovery that did not finish.
#[derive(Debug, Clone)]
pub struct Resume {
    pub id: String,
    pub plan: Plan,
    pub done: BTreeMap<usize, StepOutput>,
    /// When each finished launch step was done (ms), for the flap limits.
    pub launched_ms: BTreeMap<usize, u64>,
    /// The steps begun before the restart (an intent journaled), done or not.
    pub begun: BTreeSet<usize>,
}

impl Request {
    /// The key that makes requests exclusive: one recovery per machine, one switchover per
    /// shard.
    pub fn key(&self) -> Option<&str> {
        match &self.event {
            Event::MachineLost { machine }
            | Event::ProcessDied { machine, .. }
            | Event::StaleMaster { machine, .. }
            | Event::FollowMaster { machine, .. }
            | Event::ServiceDown { machine, .. }
            | Event::ServiceRejoin { machine, .. }
            | Event::ServiceFollow { machine, .. } => Some(machine),
            Event::Switchover { shard, .. } => Some(shard),
            Event::Spare { name, .. } => Some(name),
            Event::Bootstrap => None,
        }
    }
}

/// What the core asks its adapters to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Tell a human (status page, log, webhook).
    Alert { level: AlertLevel, message: String },
    /// An event for `medic events` and the webhooks (`step` events only for `medic events`).
    Notify {
        event: &'static str,
        message: String,
        details: Option<serde_json::Value>,
    },
    /// A failure was detected `seconds` after its first failed check.
    Detected { seconds: Option<f64> },
    /// Ask the observers of `target`'s machine whether they see it, and answer with
    /// [`Core::on_witnesses`]. `ahead`: asked at the first missed check, before any verdict.
    /// `knock`: asked to knock at the machine (a TCP connection, any answer of its kernel
    /// counts) within this long, because the monitor's own knock went unanswered.
    Ask {
        target: Target,
        ahead: bool,
        knock: Option<Duration>,
    },
    /// Run this recovery: ask [`Core::next_step`] for its steps.
    Start { recovery: String },
    /// The saved state changed: persist it, and tell the checks where machines are and which
    /// are not to be checked.
    Save,
}

/// A recovery being run.
#[derive(Debug, Clone)]
pub struct Running {
    pub plan: Plan,
    pub trigger: String,
    pub first_failure_ms: Option<u64>,
    pub master_last_ok_ms: Option<u64>,
    pub started_ms: u64,
    /// Resumed from the journal: it already has one.
    pub resumed: bool,
    /// Steps begun before a restart (their intent journaled), done or not.
    pub begun_before: BTreeSet<usize>,
    /// Steps finished (before a restart too), and those to run again although finished.
    pub done: BTreeSet<usize>,
    pub redo: BTreeSet<usize>,
    /// The step running now and when it started.
    pub current: Option<(usize, u64)>,
    /// The proxy changes its steps skipped, and the fences it made good at the source.
    pub skipped: Vec<String>,
    pub unfenced: medic_exec::Unfenced,
    /// Started on a verdict (not by an operator or a journal).
    pub detected: bool,
    pub alerted: bool,
    pub held: Option<String>,
    /// Why it stopped, when a step failed: (step, error).
    pub failed: Option<(usize, String)>,
    key: Option<String>,
    claims: Claims,
}

/// What a recovery may change: machines and shards. Two recoveries whose claims are disjoint
/// run at the same time.
#[derive(Debug, Clone, Default)]
struct Claims {
    machines: BTreeSet<String>,
    shards: BTreeSet<String>,
}

impl Claims {
    fn overlaps(&self, other: &Claims) -> bool {
        !self.machines.is_disjoint(&other.machines) || !self.shards.is_disjoint(&other.shards)
    }
}

/// What the witnesses said when asked ahead of a verdict.
#[derive(Debug, Clone)]
enum Early {
    Asked {
        asked_ms: u64,
    },
    Answered {
        asked_ms: u64,
        w: Witnesses,
        first_hand: bool,
    },
}

/// A silent machine whose witnesses are being asked.
#[derive(Debug, Clone)]
struct Judging {
    target: Target,
    first_fail: Option<u64>,
    /// Waiting for the answer asked ahead rather than for a question of its own.
    on_early: bool,
}

/// The controller's decisions. See the module's documentation.
#[derive(Debug)]
pub struct Core {
    loaded: Arc<LoadedTopology>,
    pub saved: Saved,
    /// Hashed, not ordered: it is looked up for every check result (thousands a second), and
    /// only listings (status, metrics) need an order, which they sort for.
    pub health: FxHashMap<Target, TargetHealth>,
    queue: VecDeque<Request>,
    /// Recoveries running now, by id.
    pub running: BTreeMap<String, Running>,
    /// Keys (machine or shard) of the recoveries queued or running.
    busy: BTreeSet<String>,
    /// Machines whose "monitor cut off" or "unconfirmed" alert was raised (once per episode).
    cut_off: BTreeSet<String>,
    judging: BTreeMap<String, Judging>,
    judged_at: BTreeMap<String, u64>,
    early: BTreeMap<String, Early>,
    /// Machines whose witnesses are knocking at them, and since when.
    knocking: BTreeMap<String, u64>,
    /// Warnings raised once per episode (hung process, bad answers).
    warned: BTreeSet<Target>,
    /// Whether this controller may start recoveries: always when it runs alone; in a group,
    /// only while it leads. A follower detects and queues, and starts nothing.
    pub leading: bool,
    /// Services whose automatic failback failed: not tried again until an operator's
    /// switchover of the service completes.
    failback_stopped: BTreeSet<String>,
    /// Services whose switchback (after a failed switchover) ended, and when: a failover of
    /// the service queued before that does not start.
    switched_back_ms: BTreeMap<String, u64>,
    /// Machines out of a service that answered and were demoted (their address taken, their
    /// `on_demote` run) while still failing: not again until they go silent or rejoin.
    disarmed: BTreeSet<(String, String)>,
    /// (service, machine): standbys asked to follow the primary (`ServiceFollow`), until seen
    /// streaming from it — asked once, not at every check.
    following: BTreeSet<(String, String)>,
    /// (shard, machine): redis replicas asked to follow their master (`FollowMaster`), until
    /// seen following it — asked once, not at every check.
    astray: BTreeSet<(String, String)>,
    /// Service targets whose data store answers in the wrong role, told once per episode.
    miscast: BTreeSet<Target>,
    /// Roles whose spares are held by the hourly bound, told once per episode.
    spares_held: BTreeSet<medic_topology::Role>,
    /// Orphan instances told, while they are listed.
    orphans_told: BTreeSet<String>,
    /// The orphans the last listing found (one is told when the next finds it too).
    orphans_seen: BTreeSet<String>,
    /// Spares seen unready with no preparation in flight, and since when.
    unready_since: BTreeMap<String, u64>,
    /// Each shard's port, by name: read for every replica's result (the topology's own lookup
    /// walks the list of shards, thousands of them).
    ports: FxHashMap<String, u16>,
}

/// Each shard's port, by name.
fn ports_of(top: &medic_topology::Topology) -> FxHashMap<String, u16> {
    top.shards
        .iter()
        .map(|s| (s.value.name.value.clone(), s.value.port.value))
        .collect()
}

impl Core {
    /// A core over `saved`, the state as the last run left it (or as the topology assumes).
    pub fn new(loaded: Arc<LoadedTopology>, mut saved: Saved) -> Core {
        service::forget_health(&mut saved.observed, &loaded.topology);
        Core {
            ports: ports_of(&loaded.topology),
            loaded,
            saved,
            health: FxHashMap::default(),
            queue: VecDeque::new(),
            running: BTreeMap::new(),
            busy: BTreeSet::new(),
            cut_off: BTreeSet::new(),
            judging: BTreeMap::new(),
            judged_at: BTreeMap::new(),
            early: BTreeMap::new(),
            knocking: BTreeMap::new(),
            warned: BTreeSet::new(),
            leading: true,
            failback_stopped: BTreeSet::new(),
            switched_back_ms: BTreeMap::new(),
            disarmed: BTreeSet::new(),
            following: BTreeSet::new(),
            astray: BTreeSet::new(),
            miscast: BTreeSet::new(),
            spares_held: BTreeSet::new(),
            orphans_told: BTreeSet::new(),
            orphans_seen: BTreeSet::new(),
            unready_since: BTreeMap::new(),
        }
    }

    pub fn topology(&self) -> &Arc<LoadedTopology> {
        &self.loaded
    }

    /// A reloaded topology (same deployment): new machines and shards join the state.
    pub fn set_topology(&mut self, loaded: Arc<LoadedTopology>) {
        add_new(&mut self.saved.observed, &loaded.topology);
        self.ports = ports_of(&loaded.topology);
        self.loaded = loaded;
    }

    /// Whether `key` (a machine, or a shard for a switchover) has a recovery queued or running.
    pub fn is_busy(&self, key: &str) -> bool {
        self.busy.contains(key)
    }

    /// Keys of the recoveries queued or running.
    pub fn busy(&self) -> impl Iterator<Item = &String> {
        self.busy.iter()
    }

    /// No recovery queued or running.
    pub fn idle(&self) -> bool {
        self.busy.is_empty() && self.running.is_empty()
    }

    /// Machines the checks leave alone: in maintenance, or taken out by a recovery.
    pub fn paused(&self) -> BTreeSet<String> {
        self.saved
            .maintenance
            .iter()
            .chain(self.saved.unmonitored.iter())
            .cloned()
            .collect()
    }

    /// Queues a recovery (an operator's, a resumed one, or a verdict's). `false` if one for
    /// the same machine or shard is queued or running.
    ///
    /// A resumed recovery (a new leader's, from the journal) takes the place of a verdict
    /// queued for the same key: the recovery already under way is the one that goes on.
    pub fn request(&mut self, req: Request) -> bool {
        if let Some(k) = req.key()
            && !self.busy.insert(k.to_owned())
        {
            let queued = self
                .queue
                .iter()
                .position(|q| q.resume.is_none() && q.key() == Some(k));
            match queued {
                Some(i) if req.resume.is_some() => {
                    self.queue.remove(i);
                    self.queue.push_front(req);
                    return true;
                }
                _ => return false,
            }
        }
        if req.resume.is_some() {
            self.queue.push_front(req);
        } else {
            self.queue.push_back(req);
        }
        true
    }

    /// This controller no longer leads (its lease is gone, or it stepped down): it starts
    /// nothing, and forgets the recoveries it ran — the leader resumes them from the journal
    /// in etcd. Verdicts stay queued: if it leads again, they are re-validated before they
    /// start.
    pub fn stand_down(&mut self) {
        self.leading = false;
        let ids: Vec<String> = self.running.keys().cloned().collect();
        for id in ids {
            self.abandon(&id);
        }
    }

    /// The state as the leader saved it (a follower follows it; a new leader starts from it).
    /// What this controller has seen of each target stays.
    pub fn adopt(&mut self, mut saved: Saved) {
        add_new(&mut saved.observed, &self.loaded.topology);
        service::forget_health(&mut saved.observed, &self.loaded.topology);
        self.saved = saved;
    }

    /// `medic recover MACHINE`: the operator decides, so the flap limits and a previous stop
    /// no longer apply.
    pub fn recover_machine(&mut self, machine: &str, now_ms: u64) -> Result<(), String> {
        if self.busy.contains(machine) {
            return Err(format!(
                "a recovery of {machine} is already queued or running"
            ));
        }
        self.saved.replacements.retain(|(m, _)| m != machine);
        self.saved.watch_again(machine);
        self.saved.retries.remove(machine);
        let of_server = format!("@{machine}");
        self.saved
            .recoveries
            .retain(|(m, _)| m != machine && !m.ends_with(&of_server));
        self.request(Request {
            event: Event::MachineLost {
                machine: machine.to_owned(),
            },
            trigger: format!("manual: medic recover {machine}"),
            first_failure_ms: None,
            master_last_ok_ms: None,
            queued_ms: now_ms,
            detected: false,
            resume: None,
        });
        Ok(())
    }

    /// The redis servers not answering now, for the planner ([`medic_plan::Hints::silent`]):
    /// out of monitoring (a recovery of theirs or their machine's under way, or failed), on a
    /// machine whose loss is queued, or down by their checks (`fall` of them failed; one miss
    /// is not enough).
    fn silent_servers(&self) -> BTreeSet<(String, String)> {
        let lost: BTreeSet<&str> = self
            .queue
            .iter()
            .filter_map(|r| match &r.event {
                Event::MachineLost { machine } => Some(machine.as_str()),
                _ => None,
            })
            .collect();
        let mut silent = BTreeSet::new();
        for (shard, st) in &self.saved.observed.shards {
            let machines =
                std::iter::once(&st.master).chain(st.replicas.iter().map(|r| &r.machine));
            for machine in machines {
                let server = (shard.clone(), machine.clone());
                let failing = || {
                    self.health
                        .get(&Target::Redis {
                            shard: shard.clone(),
                            machine: machine.clone(),
                        })
                        .is_some_and(|h| {
                            matches!(h.detector.health, medic_detect::Health::Down { .. })
                        })
                };
                if self.saved.unmonitored.contains(machine)
                    || self.saved.unmonitored_servers.contains(&server)
                    || lost.contains(machine.as_str())
                    || failing()
                {
                    silent.insert(server);
                }
            }
        }
        silent
    }

    /// `medic unmonitor|monitor MACHINE`.
    pub fn set_maintenance(&mut self, machine: &str, on: bool) {
        if on {
            self.saved.maintenance.insert(machine.to_owned());
        } else {
            self.saved.maintenance.remove(machine);
            self.saved.watch_again(machine);
            // Its servers' crash loops start counting afresh (the machine's own count is
            // reset by `medic recover` only).
            let of_server = format!("@{machine}");
            self.saved
                .recoveries
                .retain(|(m, _)| !m.ends_with(&of_server));
            self.health.retain(|t, _| t.machine() != machine);
        }
    }

    /// What the reconcile just read of `proxy`: for each shard, the machines it has no
    /// server for in the shard's backend (a planner's failover prefers the other replicas).
    /// Whether that changed the saved state: then it is to be saved, for a controller that
    /// takes over to plan from it before its own first reading.
    pub fn set_missing_on(
        &mut self,
        proxy: &str,
        missing: BTreeMap<String, BTreeSet<String>>,
    ) -> bool {
        let top = &self.loaded.topology;
        let mut changed = false;
        for (shard, st) in self.saved.observed.shards.iter_mut() {
            // A proxy the topology no longer has is forgotten.
            let before = st.missing_on.len();
            st.missing_on
                .retain(|p, _| top.proxy_machines().any(|q| q == p));
            changed |= st.missing_on.len() != before;
            match missing.get(shard).filter(|m| !m.is_empty()) {
                Some(m) => {
                    if st.missing_on.get(proxy) != Some(m) {
                        st.missing_on.insert(proxy.to_owned(), m.clone());
                        changed = true;
                    }
                }
                None => changed |= st.missing_on.remove(proxy).is_some(),
            }
        }
        changed
    }

    /// The shard's recorded master.
    pub fn master_of(&self, shard: &str) -> Option<&str> {
        self.saved
            .observed
            .shards
            .get(shard)
            .map(|s| s.master.as_str())
    }

    /// Shards whose recorded master answers its own checks, as master: the only ones whose
    /// routing the reconcile may enforce on the proxies.
    pub fn masters_up(&self) -> Vec<String> {
        self.saved
            .observed
            .shards
            .iter()
            .filter(|(shard, s)| {
                self.health
                    .get(&Target::Redis {
                        shard: (*shard).clone(),
                        machine: s.master.clone(),
                    })
                    .is_some_and(|h| {
                        h.detector.health == medic_detect::Health::Up
                            && h.role == Some(Role::Master)
                    })
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// (service, machine) of every service machine that passes its checks and has been seen
    /// passing `rise` of them in a row (not in the service's `down`).
    /// Machines in maintenance, out of monitoring (their health as last seen) or with a
    /// recovery queued or running are not among them.
    pub fn service_machines_up(&self) -> Vec<(String, String)> {
        let paused = self.paused();
        let mut out = Vec::new();
        for s in self.loaded.topology.services.iter().map(|s| &s.value) {
            let name = &s.name.value;
            let st = self.saved.observed.services.get(name);
            for m in s.machines() {
                if paused.contains(m) || self.is_busy(m) {
                    continue;
                }
                let t = Target::Service {
                    service: name.clone(),
                    machine: m.to_owned(),
                };
                let up = self
                    .health
                    .get(&t)
                    .is_some_and(|h| h.detector.health == medic_detect::Health::Up);
                if up && st.is_none_or(|st| !st.down.contains(m)) {
                    out.push((name.clone(), m.to_owned()));
                }
            }
        }
        out
    }

    /// Proxies that answer their checks and that no recovery, maintenance or failed recovery
    /// holds: the ones the reconcile lets back into the app proxies' backends.
    pub fn proxies_up(&self) -> Vec<String> {
        let paused = self.paused();
        self.loaded
            .topology
            .proxy_machines()
            .filter(|p| !paused.contains(*p) && !self.is_busy(p))
            .filter(|p| {
                self.health
                    .get(&Target::Proxy {
                        machine: (*p).to_owned(),
                    })
                    .is_some_and(|h| h.detector.health == medic_detect::Health::Up)
            })
            .map(str::to_owned)
            .collect()
    }

    /// Queued requests, oldest first (for the status).
    pub fn queued(&self) -> impl Iterator<Item = &Request> {
        self.queue.iter()
    }
}

/// Adds the machines and shards the topology has and the state does not (saved before they
/// were added), as the topology describes them; what the state knows stays.
pub fn add_new(observed: &mut ObservedState, top: &medic_topology::Topology) {
    let assumed = ObservedState::assumed(top);
    for (m, s) in assumed.machines {
        observed.machines.entry(m).or_insert(s);
    }
    for (n, s) in assumed.shards {
        observed.shards.entry(n).or_insert(s);
    }
    for (n, s) in assumed.services {
        observed.services.entry(n).or_insert(s);
    }
}

/// A recovery's id: its start time and machine.
fn recovery_id(key: &str, now_ms: u64) -> String {
    let m: String = key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(24)
        .collect();
    format!("r{now_ms}-{m}")
}

#[cfg(test)]
mod active_tests;
#[cfg(test)]
mod adopt_tests;
#[cfg(test)]
mod holds_tests;
#[cfg(test)]
mod knock_tests;
#[cfg(test)]
mod service_tests;
#[cfg(test)]
mod silent_tests;
#[cfg(test)]
mod switchback_tests;
#[cfg(test)]
mod tests;
