//! The end of a run: converged (then I2 and I4), waiting for a human as designed (checked
//! against the world, not taken on an alert's word), or a violation of I5.

use std::collections::{BTreeMap, BTreeSet};

use super::{CONVERGE_WITHIN_MS, Failure, Report, Sim};
use crate::invariants;
use crate::world::InstanceState;

/// An unconverged shard, what an alert said its failover waits for, and its whole copies
/// (machine, served now).
type Judged<'a> = (&'a String, Vec<Wait>, Vec<(String, bool)>);

/// An alert saying a shard's failover waits: for what, its text, and the lost master it
/// names.
#[derive(Debug, Clone)]
pub(super) struct Waited {
    pub(super) wait: Wait,
    pub(super) alert: String,
    pub(super) lost: String,
}

/// What a shard's failover waits for, as medic's alert said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// A human's decision: no replica fit to promote.
    Human,
    /// A replica that alone holds the data and does not answer.
    Silent,
}

impl Sim {
    /// The faults are over and the run did not converge in time: what it is left waiting
    /// for, if that is a human's call, else the violation.
    pub(super) fn end_of_run(mut self) -> Result<Report, Failure> {
        self.world.advance(self.now);
        // What medic may not do alone: a shard whose failover it said waits for a human (no
        // replica fit to promote) must still have a whole copy of its acknowledged writes
        // somewhere (the lost master's disk, kept), and that lost master must not be serving
        // it again (medic would then have to take it back); one it said waits for a replica
        // that does not answer must have a whole copy, and none served or servable by medic
        // alone (every copy on a machine that is down — the simulator never brings a crashed
        // one back — or in a dead master process). A shard told both is judged by both. Every
        // shard that did not converge must be one of them, and the others must have kept
        // their writes (I2, I4). A machine medic kept for the copy it may hold, still down,
        // still running and holding a server of a waiting shard that did not converge, is not
        // counted in the other shards' convergence (their replicas there are away); one kept
        // for nothing is.
        let copies_of =
            |s: &String| invariants::whole_copies(&self.world, s, |a| self.in_window(a));
        let unconverged_with = |kept: &BTreeSet<String>| -> BTreeSet<String> {
            self.world
                .shards
                .keys()
                .filter(|s| {
                    let others = self
                        .world
                        .shards
                        .keys()
                        .filter(|o| o != s)
                        .cloned()
                        .collect();
                    invariants::converged_without(&self.world, &others, kept).is_err()
                })
                .cloned()
                .collect()
        };
        // (Candidates: kept, still down, and still the very instance that was kept. The
        // waiting shards are those that do not converge even with every candidate excused.)
        let candidates: BTreeSet<String> = self
            .kept
            .iter()
            .filter(|(m, id)| {
                !self.world.is_up(m)
                    && self
                        .world
                        .instance(m)
                        .is_some_and(|i| i.state == InstanceState::Running && i.id == **id)
            })
            .map(|(m, _)| m.clone())
            .collect();
        let waiting_shards: Vec<&String> = unconverged_with(&candidates)
            .into_iter()
            .filter_map(|s| self.waits_for.get_key_value(&s).map(|(k, _)| k))
            .collect();
        let kept: BTreeSet<String> = candidates
            .iter()
            .filter(|m| {
                waiting_shards.iter().any(|s| {
                    self.world
                        .shards
                        .get(*s)
                        .is_some_and(|l| l.machines.contains(*m))
                })
            })
            .cloned()
            .collect();
        let unconverged = unconverged_with(&kept);
        let judged: Vec<Judged> = unconverged
            .iter()
            .map(|s| {
                let waits = self
                    .waits_for
                    .get(s)
                    .map_or(Vec::new(), |w| w.iter().map(|w| w.wait).collect());
                (s, waits, copies_of(s))
            })
            .collect();
        let waiting = !judged.is_empty()
            && judged.iter().all(|(s, waits, copies)| {
                let told = &self.waits_for.get(*s).map_or(&[][..], |w| &w[..]);
                !waits.is_empty()
                    && !copies.is_empty()
                    && (!waits.contains(&Wait::Silent) || copies.iter().all(|(_, served)| !served))
                    && told
                        .iter()
                        .filter(|w| w.wait == Wait::Human)
                        .all(|w| !invariants::serves_as_master(&self.world, &w.lost, s))
            });
        if waiting {
            let alert = unconverged
                .iter()
                .find_map(|s| self.waits_for.get(s).and_then(|w| w.last()))
                .map(|w| w.alert.clone());
            return self.settle(&unconverged, 0, alert);
        }
        let why = invariants::converged(&self.world)
            .err()
            .unwrap_or_else(|| "the controller is still busy".to_owned());
        let running: Vec<String> = self
            .core
            .running
            .values()
            .map(|r| r.plan.event.to_string())
            .collect();
        let judged: Vec<String> = judged
            .iter()
            .map(|(s, wait, copies)| format!("{s}: waits for {wait:?}, whole copies {copies:?}"))
            .collect();
        Err(self.fail(format!(
            "I5: not healthy {} s after the faults stopped: {why} (running: {running:?}, unmonitored: {:?}, servers: {:?}; not converged, with (machine, served) of each whole copy: {judged:?}; kept: {kept:?})",
            CONVERGE_WITHIN_MS / 1000,
            self.core.saved.unmonitored,
            self.core.saved.unmonitored_servers
        )))
    }

    pub(super) fn finish(self, since: u64) -> Result<Report, Failure> {
        self.settle(&BTreeSet::new(), since, None)
    }

    /// Whether an acknowledged write was made within a replication window a failover
    /// reported (one it may lose).
    fn in_window(&self, a: &crate::world::Ack) -> bool {
        self.windows
            .iter()
            .any(|(s, from, to)| *s == a.shard && a.at_ms >= *from && a.at_ms <= *to)
    }

    /// I2 and I4 at the end of a run, for every shard but those `waiting` for a human.
    fn settle(
        self,
        waiting: &BTreeSet<String>,
        since: u64,
        needs_human: Option<String>,
    ) -> Result<Report, Failure> {
        let lost = invariants::lost_writes(&self.world);
        let (mut in_window, mut outside) = (0, Vec::new());
        for a in lost.iter().filter(|a| !waiting.contains(&a.shard)) {
            if self.in_window(a) {
                in_window += 1;
            } else {
                outside.push(a);
            }
        }
        if let Some(a) = outside.first() {
            return Err(self.fail(format!(
                "I2: {} acknowledged writes lost outside any replication window, e.g. {} value {} acked by {} at {} ms (windows: {:?})",
                outside.len(),
                a.shard,
                a.value,
                a.instance,
                a.at_ms,
                self.windows
            )));
        }
        let recorded: BTreeMap<String, String> = self
            .core
            .saved
            .observed
            .machines
            .iter()
            .filter_map(|(m, s)| Some((m.clone(), s.instance_id.clone()?)))
            .collect();
        let orphans = invariants::orphans(&self.world, &recorded);
        if !orphans.is_empty() {
            return Err(self.fail(format!("I4: {}", orphans.join("; "))));
        }
        Ok(Report {
            needs_human,
            recoveries: self.recoveries,
            acked: self.world.acks.len(),
            lost_in_window: in_window,
            converged_ms: since,
            trace: self.trace,
        })
    }
}
