//! A replica that replicates from another server than its shard's recorded master.
//!
//! A recovery points each surviving replica at the new master (`REPLICAOF`); a replica whose
//! machine the monitor could not reach then keeps following the old master, which works as
//! chained replication once that one is demoted but is not the recorded layout — and if the
//! old master is replaced, the replica follows nobody. Every check of a replica reports whom it
//! follows: one that follows another address than the recorded master's for [`ASTRAY_MS`],
//! while no recovery holds its shard or machine, is pointed at the recorded master
//! (`ReplicaAstray`).

use std::net::IpAddr;

use medic_plan::{AlertLevel, Event};
use medic_redis::{ReplicationInfo, Role};

use super::{Core, Output, Request};

/// How long a replica must follow another server before it is acted on: longer than any
/// recovery's gap between a promotion and its `REPLICAOF` steps.
pub const ASTRAY_MS: u64 = 5_000;

impl Core {
    /// Whom the replica `shard@machine` follows, as its check reports it.
    pub(super) fn follows(
        &mut self,
        shard: &str,
        machine: &str,
        info: &ReplicationInfo,
        now_ms: u64,
        out: &mut Vec<Output>,
    ) {
        let key = (shard.to_owned(), machine.to_owned());
        let Some(why) = self.astray_from(shard, machine, info) else {
            self.astray.remove(&key);
            return;
        };
        let held = self.busy.contains(machine)
            || self.busy.contains(shard)
            || self
                .running
                .values()
                .any(|r| r.claims.shards.contains(shard) || r.claims.machines.contains(machine))
            || self
                .queue
                .iter()
                .any(|q| self.claims(q).shards.contains(shard));
        if held {
            self.astray.remove(&key);
            return;
        }
        let since = *self.astray.entry(key.clone()).or_insert(now_ms);
        if now_ms.saturating_sub(since) < ASTRAY_MS {
            return;
        }
        self.astray.remove(&key);
        let event = Event::ReplicaAstray {
            shard: shard.to_owned(),
            machine: machine.to_owned(),
        };
        let queued = self.request(Request {
            event,
            trigger: format!("{shard}@{machine}: {why}"),
            first_failure_ms: Some(since),
            master_last_ok_ms: None,
            queued_ms: now_ms,
            detected: true,
            resume: None,
        });
        if queued {
            out.push(Output::Alert {
                level: AlertLevel::Warning,
                message: format!("{shard}@{machine} {why}: pointing it at its master"),
            });
        }
    }

    /// Why the replica `shard@machine` is astray, if it is: it follows an address that is not
    /// its shard's recorded master's (a master given by name is not judged).
    fn astray_from(&self, shard: &str, machine: &str, info: &ReplicationInfo) -> Option<String> {
        if info.role != Role::Replica {
            return None;
        }
        let recorded = self.saved.observed.shards.get(shard)?;
        if recorded.master == machine {
            return None;
        }
        let want = self.saved.observed.address(&recorded.master)?;
        let port = self
            .loaded
            .topology
            .shards
            .iter()
            .find(|s| s.value.name.value == shard)?
            .value
            .port
            .value;
        let (host, p) = info.master.as_ref()?;
        let ip: IpAddr = host.parse().ok()?;
        (ip != want || *p != port).then(|| {
            format!(
                "replicates from {host}:{p}, not from its master {} ({want}:{port})",
                recorded.master
            )
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use std::sync::Arc;

    use medic_detect::Observation;
    use medic_redis::LinkStatus;

    use super::*;
    use crate::checks::{CheckResult, Target};
    use crate::store::Saved;

    /// examples/lab.yaml, redis1 (10.77.0.10) the masters, redis2 (10.77.0.11) the replicas.
    fn core() -> Core {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lab.yaml");
        let loaded = medic_topology::load_topology(&path).expect("examples/lab.yaml loads");
        let mut saved = Saved::fresh(&loaded.topology);
        for (m, ip) in [("redis1", [10, 77, 0, 10]), ("redis2", [10, 77, 0, 11])] {
            saved.observed.machines.get_mut(m).unwrap().address = Some(IpAddr::from(ip));
        }
        Core::new(Arc::new(loaded), saved)
    }

    /// redis2's r9001 answers as a replica of `master`.
    fn replica_of(c: &mut Core, master: &str, at_ms: u64) -> Vec<Output> {
        c.on_check(&CheckResult {
            target: Arc::new(Target::Redis {
                shard: "r9001".into(),
                machine: "redis2".into(),
            }),
            at_ms,
            observation: Observation::Ok,
            detail: "test".into(),
            info: Some(ReplicationInfo {
                role: Role::Replica,
                master: Some((master.into(), 9001)),
                master_link_status: Some(LinkStatus::Up),
                sync_in_progress: false,
                offset: 100,
                replica_offset: Some(100),
                replicas: Vec::new(),
                master_last_io_secs: Some(0),
            }),
            took: std::time::Duration::ZERO,
            knocked: None,
        })
    }

    fn queued(c: &Core) -> Vec<Event> {
        c.queued().map(|r| r.event.clone()).collect()
    }

    #[test]
    fn a_replica_following_another_server_for_long_is_pointed_at_its_master() {
        let mut c = core();
        // Following its recorded master: nothing, however long.
        for t in 0..30 {
            replica_of(&mut c, "10.77.0.10", 1_000 + t * 250);
        }
        assert_eq!(queued(&c), []);
        // Following 10.77.0.99: acted on only once it has lasted ASTRAY_MS.
        replica_of(&mut c, "10.77.0.99", 10_000);
        replica_of(&mut c, "10.77.0.99", 10_000 + ASTRAY_MS - 1);
        assert_eq!(queued(&c), [], "too soon");
        let out = replica_of(&mut c, "10.77.0.99", 10_000 + ASTRAY_MS);
        assert_eq!(
            queued(&c),
            [Event::ReplicaAstray {
                shard: "r9001".into(),
                machine: "redis2".into()
            }]
        );
        assert!(
            out.iter().any(|o| matches!(o, Output::Alert { message, .. } if message.contains("replicates from 10.77.0.99:9001, not from its master redis1"))),
            "{out:?}"
        );
    }

    #[test]
    fn a_replica_back_on_its_master_or_held_by_a_recovery_is_not_acted_on() {
        let mut c = core();
        replica_of(&mut c, "10.77.0.99", 10_000);
        // Back on its master in between: the clock starts again.
        replica_of(&mut c, "10.77.0.10", 11_000);
        replica_of(&mut c, "10.77.0.99", 12_000);
        replica_of(&mut c, "10.77.0.99", 10_000 + ASTRAY_MS);
        assert_eq!(queued(&c), []);
        // A recovery of its shard queued: it is the one re-pointing replicas.
        let mut c = core();
        assert!(c.request(Request {
            event: Event::Switchover {
                shard: "r9001".into(),
                to: None
            },
            trigger: "test".into(),
            first_failure_ms: None,
            master_last_ok_ms: None,
            queued_ms: 9_000,
            detected: false,
            resume: None,
        }));
        replica_of(&mut c, "10.77.0.99", 10_000);
        replica_of(&mut c, "10.77.0.99", 10_000 + 2 * ASTRAY_MS);
        assert_eq!(queued(&c).len(), 1, "only the switchover");
    }
}
