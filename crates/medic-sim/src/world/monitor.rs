//! What the monitor host sees: its checks of redis servers and proxies, and what each
//! observer says of a machine when asked.

use medic_detect::{Observation, Seen};
use medic_redis::{ConnectedReplica, LinkStatus, ReplicationInfo};
use medic_topology::Role;

use super::{Redis, RedisRole, World};

impl World {
    /// The monitor's check of the server of `shard` on `machine`.
    pub fn check_redis(
        &self,
        shard: &str,
        machine: &str,
    ) -> (Observation, Option<ReplicationInfo>) {
        let Some(i) = self
            .current_idx(machine)
            .filter(|&i| self.monitor_reaches(i))
        else {
            return (Observation::Silent, None);
        };
        match self.instances[i].redis.get(shard) {
            Some(r) if r.alive => (Observation::Ok, Some(self.info(i, shard, r))),
            _ => (Observation::Refused, None),
        }
    }

    /// `INFO replication` of a server.
    fn info(&self, i: usize, shard: &str, r: &Redis) -> ReplicationInfo {
        let port = self.shards.get(shard).map_or(0, |s| s.port);
        let offset = r.log.len() as u64;
        let mut info = ReplicationInfo {
            role: medic_redis::Role::Master,
            master: None,
            master_link_status: None,
            sync_in_progress: false,
            offset,
            replica_offset: None,
            replicas: Vec::new(),
            master_last_io_secs: None,
        };
        match &r.role {
            RedisRole::Master => {
                let linked =
                    (0..self.instances.len()).filter(|&j| self.source(j, shard) == Some(i));
                info.replicas = linked
                    .map(|j| ConnectedReplica {
                        ip: self.instances[j].address.to_string(),
                        port,
                        state: "online".to_owned(),
                        offset: self.instances[j]
                            .redis
                            .get(shard)
                            .map_or(0, |r| r.log.len() as u64),
                        lag: 0,
                    })
                    .collect();
            }
            RedisRole::Replica { addr, .. } => {
                let up = self.source(i, shard).is_some();
                info.role = medic_redis::Role::Replica;
                info.master = Some((addr.to_string(), port));
                info.master_link_status = Some(if up { LinkStatus::Up } else { LinkStatus::Down });
                info.replica_offset = Some(offset);
                info.master_last_io_secs =
                    up.then(|| self.now_ms.saturating_sub(r.last_sync_ms) / 1000);
            }
        }
        info
    }

    /// The monitor's check of a proxy's (or an app proxy's) runtime API.
    pub fn check_proxy(&self, machine: &str) -> Observation {
        let Some(i) = self
            .current_idx(machine)
            .filter(|&i| self.monitor_reaches(i))
        else {
            return Observation::Silent;
        };
        match &self.instances[i].proxy {
            Some(p) if !p.api_down => Observation::Ok,
            // Over SSH, an API that cannot be asked while the frontends accept: unhealthy.
            Some(_) if self.api_over_ssh.contains(machine) => Observation::Unhealthy,
            _ => Observation::Refused,
        }
    }

    /// What `observer` finds when the monitor asks it to knock at `machine` (a TCP connection:
    /// its kernel answers if the two are up and linked, whatever its processes do).
    pub fn knock(&self, observer: &str, machine: &str) -> Seen {
        if !self.reach(&self.monitor, observer) {
            return Seen::Unknown;
        }
        if self.reach(observer, machine) {
            Seen::Up
        } else {
            Seen::Gone
        }
    }

    /// What `observer` says of `machine` when the monitor asks it.
    pub fn witness(&self, observer: &str, machine: &str) -> Seen {
        if !self.reach(&self.monitor, observer) {
            return Seen::Unknown;
        }
        // A redis machine is seen through its servers, a proxy through its runtime API (its
        // frontends, when medic reaches the API over SSH).
        let serves = self.instance(machine).is_some_and(|i| {
            if self.roles.get(machine) == Some(&Role::Redis) {
                i.redis.values().any(|r| r.alive)
            } else {
                i.proxy
                    .as_ref()
                    .is_some_and(|p| !p.api_down || self.api_over_ssh.contains(machine))
            }
        });
        if self.reach(observer, machine) && serves {
            Seen::Up
        } else {
            Seen::Gone
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::tests::{acked_on, world};

    #[test]
    fn a_dead_process_is_refused_and_a_hung_machine_silent() {
        let mut w = world();
        w.kill_redis("r9002", "redis2");
        assert_eq!(w.check_redis("r9002", "redis2").0, Observation::Refused);
        assert_eq!(w.check_redis("r9001", "redis2").0, Observation::Ok);
        w.hang("redis2");
        assert_eq!(w.check_redis("r9001", "redis2").0, Observation::Silent);
        w.hang("haproxy2");
        assert_eq!(w.witness("haproxy2", "redis2"), Seen::Unknown);
        w.unhang("redis2");
        assert_eq!(w.check_redis("r9001", "redis2").0, Observation::Ok);
        w.proxy_api_down("haproxy1", true);
        // Over SSH (lab.yaml's default reach): a HAProxy medic cannot control, its frontends
        // accepting; on the network, a refusal.
        assert_eq!(w.check_proxy("haproxy1"), Observation::Unhealthy);
        assert_eq!(w.witness("app", "haproxy1"), Seen::Up);
        w.api_over_ssh.clear();
        assert_eq!(w.check_proxy("haproxy1"), Observation::Refused);
        assert_eq!(acked_on(&w.client_writes(5)), ["redis1", "redis1"]);
    }
}
