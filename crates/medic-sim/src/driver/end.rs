//! The end of a run: converged (then I2 and I4), waiting for a human as designed (checked
//! against the world, not taken on an alert's word), or a violation of I5.

use std::collections::{BTreeMap, BTreeSet};

use super::{CONVERGE_WITHIN_MS, Failure, Report, Sim};
use crate::invariants;

/// An unconverged shard, whether an alert said its failover waits, and its whole copies
/// (machine, served now).
type Judged<'a> = (&'a String, bool, Vec<(String, bool)>);

impl Sim {
    /// The faults are over and the run did not converge in time: what it is left waiting
    /// for, if that is a human's call, else the violation.
    pub(super) fn end_of_run(mut self) -> Result<Report, Failure> {
        self.world.advance(self.now);
        if let Some(reason) = self.human.clone() {
            // Waiting for a human, as designed: safe (I1 and I3 held all along) but not
            // required to converge.
            return Ok(Report {
                needs_human: Some(reason),
                recoveries: self.recoveries,
                acked: self.world.acks.len(),
                lost_in_window: 0,
                converged_ms: 0,
                trace: self.trace,
            });
        }
        // Shards whose every whole copy of their writes is on machines that are down (the
        // simulator never brings a crashed one back) or in a process that died, but still
        // there, after medic said their failover waits for such a replica: what it may not do
        // alone. Every shard that did
        // not converge must be one, and the others must have kept their writes (I2, I4). The
        // machines medic kept because they may hold such a copy, and that are still down,
        // are not counted in the other shards' convergence (their replicas there are away).
        let kept: BTreeSet<String> = self
            .kept
            .iter()
            .filter(|m| !self.world.is_up(m))
            .cloned()
            .collect();
        let unconverged: BTreeSet<String> = self
            .world
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
                invariants::converged_without(&self.world, &others, &kept).is_err()
            })
            .cloned()
            .collect();
        let judged: Vec<Judged> = unconverged
            .iter()
            .map(|s| {
                let copies = invariants::whole_copies(&self.world, s, |a| self.in_window(a));
                (s, self.waits_for.contains_key(s), copies)
            })
            .collect();
        let waiting = !judged.is_empty()
            && judged.iter().all(|(_, said, copies)| {
                *said && !copies.is_empty() && copies.iter().all(|(_, served)| !served)
            });
        if waiting {
            let alerts: Vec<&String> = unconverged
                .iter()
                .filter_map(|s| self.waits_for.get(s))
                .collect();
            let alert = alerts.first().map(|a| (*a).clone());
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
            .map(|(s, said, copies)| format!("{s}: waits said {said}, whole copies {copies:?}"))
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
