//! A redis replica that replicates from another server than its shard's master: it was away
//! (or its re-pointing failed) when the master changed, or someone pointed it elsewhere by
//! hand. Its offset counts in another server's stream — an old master's writes after the
//! failover, a history the master never had — so it is never taken for in sync: its offset
//! is forgotten (a failover never promotes it on it), the operators are told, and it is
//! asked once to follow its master again (`FollowMaster`), until seen following it.

use std::net::IpAddr;

use medic_plan::{AlertLevel, Event};
use medic_redis::ReplicationInfo;

use super::{Core, Output, Request};
use crate::checks::CheckResult;

impl Core {
    /// Whether a replica whose INFO is `info` replicates from `master`'s server of `shard`
    /// (its address and the shard's port). `None`: medic cannot tell (the master's address
    /// unknown, or no master in the INFO read).
    pub(super) fn follows_master(
        &self,
        shard: &str,
        master: &str,
        info: &ReplicationInfo,
    ) -> Option<bool> {
        let at = self.saved.observed.address(master)?.to_canonical();
        let port = *self.ports.get(shard)?;
        let (host, p) = info.master.as_ref()?;
        Some(
            *p == port
                && host
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.to_canonical() == at),
        )
    }

    /// Whether any replica was asked to follow its master and not yet seen following it.
    pub(super) fn astray_any(&self) -> bool {
        !self.astray.is_empty()
    }

    /// `machine`'s replica of `shard`, whose INFO is `info` and which `follows` `master` (as
    /// [`Core::follows_master`] says): `false` if it replicates from another server (its
    /// offset then forgotten, and the rest done here), else `true` (following it, or medic
    /// cannot tell).
    #[allow(clippy::too_many_arguments, reason = "one call site, in `roles`")]
    pub(super) fn judge_upstream(
        &mut self,
        shard: &str,
        machine: &str,
        master: &str,
        follows: Option<bool>,
        info: &ReplicationInfo,
        r: &CheckResult,
        out: &mut Vec<Output>,
    ) -> bool {
        match follows {
            None => return true,
            Some(true) => {
                self.astray.remove(&(shard.to_owned(), machine.to_owned()));
                return true;
            }
            Some(false) => {}
        }
        let key = (shard.to_owned(), machine.to_owned());
        if let Some(rep) = self
            .saved
            .observed
            .shards
            .get_mut(shard)
            .and_then(|s| s.replicas.iter_mut().find(|x| x.machine == machine))
        {
            rep.offset = None;
        }
        if self.astray.contains(&key) {
            return false;
        }
        let from = info
            .master
            .as_ref()
            .map_or_else(String::new, |(h, p)| format!("{h}:{p}"));
        let asked = self.request(Request {
            event: Event::FollowMaster {
                shard: shard.to_owned(),
                machine: machine.to_owned(),
            },
            trigger: format!("{}: replicates from {from}, not from {master}", r.target),
            first_failure_ms: None,
            master_last_ok_ms: None,
            queued_ms: r.at_ms,
            detected: false,
            resume: None,
        });
        if asked {
            self.astray.insert(key);
            out.push(Output::Alert {
                level: AlertLevel::Warning,
                message: format!(
                    "{shard}@{machine} replicates from {from}, not from {master}, the shard's master: it is not counted in sync (never promoted) until it follows {master} again; making it a replica of {master}"
                ),
            });
        }
        false
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use medic_detect::Observation;
    use medic_redis::Role;

    use super::super::tests::{alerts, check, core, redis};
    use super::*;

    /// A check of redis2's replica of r9001 (examples/lab.yaml: its master is redis1)
    /// replicating from `from`.
    fn replica_of(c: &Core, from: &str, port: u16, at_ms: u64) -> CheckResult {
        let mut r = check(
            &redis("r9001", "redis2"),
            at_ms,
            Observation::Ok,
            Some(Role::Replica),
        );
        let master = c.saved.observed.address("redis1").unwrap().to_string();
        let host = if from == "redis1" {
            master
        } else {
            from.to_owned()
        };
        r.info.as_mut().unwrap().master = Some((host, port));
        r
    }

    fn offset(c: &Core) -> Option<u64> {
        c.saved.observed.shards["r9001"].replicas[0].offset
    }

    #[test]
    fn a_replica_following_its_master_counts_in_sync() {
        let mut c = core();
        c.saved.observed.shards.get_mut("r9001").unwrap().replicas[0].offset = None;
        let r = replica_of(&c, "redis1", 9001, 1_000);
        let out = c.on_check(&r);
        assert!(alerts(&out).is_empty(), "{out:?}");
        assert_eq!(offset(&c), Some(100));
        assert_eq!(c.queued().count(), 0);
    }

    #[test]
    fn a_replica_following_another_server_is_never_in_sync_and_is_asked_once_to_follow() {
        let mut c = core();
        assert_eq!(
            offset(&c),
            Some(0),
            "examples/lab.yaml's replicas start in sync"
        );
        // An old master's address, or the right host on another port: both another stream.
        for (n, (from, port)) in [("10.77.0.99", 9001), ("redis1", 9002)]
            .into_iter()
            .enumerate()
        {
            let at = 1_000 * (n as u64 + 1);
            let out = c.on_check(&replica_of(&c, from, port, at));
            assert_eq!(
                offset(&c),
                None,
                "{from}:{port}: its offset is another server's"
            );
            let asked: Vec<&Event> = c.queued().map(|q| &q.event).collect();
            assert_eq!(
                asked,
                [&Event::FollowMaster {
                    shard: "r9001".into(),
                    machine: "redis2".into()
                }],
                "{from}:{port}"
            );
            assert!(
                alerts(&out)
                    .iter()
                    .any(|a| a.contains("not counted in sync") && a.contains("replica of redis1")),
                "{out:?}"
            );
            // Asked once: the next check of the same episode asks nothing more.
            let again = c.on_check(&replica_of(&c, from, port, at + 250));
            assert!(alerts(&again).is_empty(), "{again:?}");
            assert_eq!(c.queued().count(), 1);
            // Following its master again: in sync, and the next stray is asked about anew.
            c.queue.clear();
            c.busy.clear();
            c.on_check(&replica_of(&c, "redis1", 9001, at + 500));
            assert_eq!(offset(&c), Some(100));
        }
    }

    #[test]
    fn a_replica_whose_info_names_no_master_keeps_what_it_had() {
        let mut c = core();
        // medic cannot tell whom it follows: nothing asked, its offset as read.
        let mut r = replica_of(&c, "redis1", 9001, 1_000);
        r.info.as_mut().unwrap().master = None;
        c.on_check(&r);
        assert_eq!(offset(&c), Some(100));
        assert_eq!(c.queued().count(), 0);
    }
}
