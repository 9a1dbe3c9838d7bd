//! A redis server's reported role and offset against the recorded ones: the offsets a
//! failover chooses by, a stale master fenced, a replica following another server (see
//! [`super::astray`]), a recorded master answering as a replica told.

use medic_plan::{Action, AlertLevel, Event};
use medic_redis::{LinkStatus, Role};

use super::{Core, Output, Request};
use crate::checks::{CheckResult, Target};

impl Core {
    /// Offsets and roles as a redis server reports them. `true` if it was acted on (a stale
    /// master), and the result is not to be judged further.
    pub(super) fn roles(
        &mut self,
        shard: &str,
        machine: &str,
        info: &medic_redis::ReplicationInfo,
        r: &CheckResult,
        out: &mut Vec<Output>,
    ) -> bool {
        // A shard a recovery is changing: its roles are in motion (a promotion seen before
        // its step is recorded is not a stale master).
        if self.shard_in_motion(shard, machine) {
            return false;
        }
        let Some(s) = self.saved.observed.shards.get(shard) else {
            return false;
        };
        // One replicating from another server: its offset is another stream's. (Not while a
        // recovery promotes in or re-points the shard: its replicas follow the new master
        // only once the proxies route to it.)
        if info.role == Role::Replica && s.master != machine && !self.replicas_in_motion(shard) {
            let follows = self.follows_master(shard, &s.master, info);
            // Every replica's result comes here: the steady path (it follows its master, and
            // none is astray) copies nothing.
            let judge = match follows {
                Some(false) => true,
                Some(true) => self.astray_any(),
                None => false,
            };
            if judge {
                let master = s.master.clone();
                if !self.judge_upstream(shard, machine, &master, follows, info, r, out) {
                    return false;
                }
            }
        }
        let Some(s) = self.saved.observed.shards.get_mut(shard) else {
            return false;
        };
        let recorded_master = s.master == machine;
        match (info.role, recorded_master) {
            (Role::Master, true) => s.master_offset = Some(info.offset),
            (Role::Replica, false) => {
                let linked =
                    info.master_link_status == Some(LinkStatus::Up) && !info.sync_in_progress;
                if let Some(rep) = s.replicas.iter_mut().find(|x| x.machine == machine) {
                    // A replica counts as in sync only while its link is up.
                    if linked {
                        rep.offset = info.replica_offset.or(rep.offset);
                    }
                }
            }
            (Role::Master, false) => {
                let master = s.master.clone();
                let queued = self.request(Request {
                    event: Event::StaleMaster {
                        shard: shard.to_owned(),
                        machine: machine.to_owned(),
                    },
                    trigger: format!("{}: answers as master", r.target),
                    first_failure_ms: Some(r.at_ms),
                    master_last_ok_ms: None,
                    queued_ms: r.at_ms,
                    detected: true,
                    resume: None,
                });
                if queued {
                    out.push(Output::Alert {
                        level: AlertLevel::Critical,
                        message: format!("{shard}@{machine} answers as master, but {master} is the shard's master: fencing it and making it a replica"),
                    });
                }
                return true;
            }
            (Role::Replica, true) => {
                if self.warned.insert(Target::clone(&r.target)) {
                    out.push(Output::Alert {
                        level: AlertLevel::Critical,
                        message: format!("{} answers as a replica but is recorded as its shard's master: clients cannot write; check who demoted it", r.target),
                    });
                    return true;
                }
            }
        }
        false
    }

    /// A running recovery promotes `machine` in `shard`, or moves the shard's master away
    /// (a switchover).
    fn shard_in_motion(&self, shard: &str, machine: &str) -> bool {
        self.running.values().any(|run| {
            run.plan.steps.iter().any(|s| match &s.action {
                Action::PromoteReplica { server, .. } => {
                    server.shard == shard && server.machine == machine
                }
                Action::PauseWrites { server, .. } => server.shard == shard,
                _ => false,
            })
        })
    }

    /// Whether a running recovery promotes a replica of `shard` or points one at a master:
    /// its replicas follow another server than the recorded master for a while.
    fn replicas_in_motion(&self, shard: &str) -> bool {
        self.running.values().any(|run| {
            run.plan.steps.iter().any(|s| match &s.action {
                Action::PromoteReplica { server, .. } | Action::ReplicaOf { server, .. } => {
                    server.shard == shard
                }
                _ => false,
            })
        })
    }
}
