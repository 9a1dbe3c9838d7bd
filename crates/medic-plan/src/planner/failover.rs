//! The failover of one shard: which replica is promoted (the most advanced, preferring one
//! every proxy can route to and one that answers), and the alerts that say what it costs.

use medic_topology::{Remedy, Shard};

use super::{PlanError, Planner, lacking_on};
use crate::step::*;
use crate::vars::addr_of;

impl<'a> Planner<'a> {
    /// Promotes the best replica of `shard` in place of `lost` (the callers fence `lost` on
    /// every proxy before, and route the proxies to the new master after), with the alerts
    /// that say what the choice costs. Returns false (after alerting) when no replica may be
    /// promoted.
    pub(super) fn fail_over(&mut self, shard: &'a Shard, lost: &str) -> Result<bool, PlanError> {
        let name = &shard.name.value;
        let st = self.shard_state(name)?;
        if !self.top.policy.allows(Remedy::Failover) {
            self.alert(
                AlertLevel::Critical,
                format!("shard {name} lost its master {lost} and failover is not in policy.remediation: promote a replica by hand"),
            );
            return Ok(false);
        }
        // Largest offset wins; on a tie, the replica listed first. A replica some proxy has
        // no server for is the choice only when no other may be promoted: its activation
        // there would fail, and the shard have no route until that proxy is configured again.
        // A replica not answering now (its machine lost too, out of monitoring, or down by its
        // checks) is the choice only when no answering one may be promoted: its promotion
        // fails until it answers, and the recovery is retried until then.
        let max = self.top.policy.max_promotion_lag_bytes.value;
        let top = self.top;
        let hints = self.hints;
        let lacking = |m: &str| lacking_on(top, st, m);
        let silent = |m: &str| hints.silent(name, m);
        let best_of = |routable: Option<bool>, answering: bool| {
            st.replicas
                .iter()
                .filter(|r| r.machine != lost)
                .filter(|r| !answering || !silent(&r.machine))
                .filter(|r| routable.is_none_or(|want| lacking(&r.machine).is_empty() == want))
                .fold(None::<&crate::state::ReplicaState>, |best, r| {
                    match (best, r.offset) {
                        (None, _) => Some(r),
                        (Some(b), Some(o)) if b.offset.is_none_or(|bo| o > bo) => Some(r),
                        (b, _) => b,
                    }
                })
        };
        // What a promotion may lose is measured from the newest data known: the master's
        // offset when last seen, or a surviving replica's if it got further since (a replica
        // keeps streaming while a dying master's checks already fail).
        let newest = st
            .replicas
            .iter()
            .filter(|r| r.machine != lost)
            .filter_map(|r| r.offset)
            .chain(st.master_offset)
            .max();
        let behind = |o: u64| newest.map_or(0, |n| n.saturating_sub(o));
        let promotable =
            |r: &&crate::state::ReplicaState| r.offset.is_some_and(|o| behind(o) <= max);
        let pick = |answering: bool| {
            let most_advanced = best_of(None, answering);
            let best = best_of(Some(true), answering)
                .filter(promotable)
                .or(most_advanced);
            (best, most_advanced)
        };
        let (best, most_advanced) = match pick(true) {
            (Some(b), m) if promotable(&b) => (Some(b), m),
            _ => pick(false),
        };
        // The most advanced replica that does not answer, if it is ahead of the one promoted:
        // said, as the writes it has and the one promoted lacks are lost.
        // (On a tie, the one listed first, as everywhere here.)
        let silent_ahead = st
            .replicas
            .iter()
            .rev()
            .filter(|r| r.machine != lost && silent(&r.machine))
            .filter(|r| best.is_some_and(|b| r.offset > b.offset))
            .max_by_key(|r| r.offset);
        let Some(best) = best else {
            self.alert(
                AlertLevel::Critical,
                format!("shard {name} lost its master {lost} and has no replica to promote"),
            );
            return Ok(false);
        };
        let Some(offset) = best.offset else {
            self.alert(
                AlertLevel::Critical,
                format!(
                    "shard {name} lost its master {lost}; replica {} was never seen in sync, so it is not promoted automatically",
                    best.machine
                ),
            );
            return Ok(false);
        };
        let lag = behind(offset);
        if lag > max {
            self.alert(
                AlertLevel::Critical,
                format!(
                    "shard {name} lost its master {lost}; the best replica {} is {lag} bytes behind (policy.max_promotion_lag_bytes is {max}), so it is not promoted automatically",
                    best.machine
                ),
            );
            return Ok(false);
        }
        if silent(&best.machine) {
            self.alert(
                AlertLevel::Critical,
                format!(
                    "shard {name} lost its master {lost}, and {}, the replica to promote, does not answer either (its machine lost too, out of monitoring, or failing its checks): its promotion is tried, and the recovery retried until it answers; no replica that answers is in sync within policy.max_promotion_lag_bytes",
                    best.machine
                ),
            );
        } else if let Some(ahead) = silent_ahead {
            self.alert(
                AlertLevel::Warning,
                format!(
                    "shard {name}: {} is promoted ({lag} bytes behind the newest data seen) rather than the more advanced {}, which does not answer",
                    best.machine, ahead.machine
                ),
            );
        }
        if let Some(ahead) = most_advanced.filter(|m| m.offset > best.offset) {
            self.alert(
                AlertLevel::Warning,
                format!(
                    "shard {name}: {} is promoted ({lag} bytes behind the newest data seen) rather than the more advanced {}, which {} had no server for when last read",
                    best.machine,
                    ahead.machine,
                    lacking(&ahead.machine).join(", ")
                ),
            );
        }
        let lacks = lacking(&best.machine);
        if !lacks.is_empty() {
            self.alert(
                AlertLevel::Critical,
                format!(
                    "shard {name}: {} is promoted though {} had no server for it when last read (no other replica that answers may be promoted); until `medic recover PROXY` configures them, they cannot route to it",
                    best.machine,
                    lacks.join(", ")
                ),
            );
        }
        let server = self.server(shard, &best.machine, addr_of(self.state, &best.machine));
        self.push(Action::PromoteReplica {
            server,
            offset,
            lag_bytes: lag,
        });
        self.new_masters.insert(name.clone(), best.machine.clone());
        Ok(true)
    }
}
