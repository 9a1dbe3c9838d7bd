//! What must hold of the world, checked after every event of a simulation:
//!
//! - **I1a** no proxy has two servers of one shard's backend ready;
//! - **I1b** the clients, through the proxies as they route now, can write to at most one
//!   server of each shard;
//! - **I2** ([`lost_writes`]) no acknowledged write is missing from its shard's master (the
//!   driver allows those within a replication window);
//! - **I3** no healthy machine is ever terminated;
//! - **I4** ([`orphans`]) no instance runs that is not its machine's recorded one;
//! - **I5** ([`converged`]) once faults stop, the deployment is back to one master per shard,
//!   routed by every proxy and followed by every replica.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use medic_topology::Role;

use crate::world::{Ack, Admin, Instance, InstanceState, RedisRole, Status, World};

/// An invariant that does not hold, and the details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// I1a: a proxy has two servers of one shard's backend ready.
    TwoReady {
        proxy: String,
        instance: String,
        backend: String,
        servers: Vec<String>,
    },
    /// I1b: clients can write to two servers of one shard.
    TwoWritable { shard: String, servers: Vec<String> },
    /// I3: a healthy machine was terminated.
    HealthyTerminated {
        machine: String,
        instance: String,
        at_ms: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::TwoReady {
                proxy,
                instance,
                backend,
                servers,
            } => write!(
                f,
                "I1a: proxy {proxy} ({instance}) has {} ready in {backend}",
                servers.join(" and ")
            ),
            Violation::TwoWritable { shard, servers } => write!(
                f,
                "I1b: clients can write to {} servers of {shard}: {}",
                servers.len(),
                servers.join(", ")
            ),
            Violation::HealthyTerminated {
                machine,
                instance,
                at_ms,
            } => write!(
                f,
                "I3: {machine}'s instance {instance} was terminated at {at_ms} ms while healthy"
            ),
        }
    }
}

/// Checks I1a, I1b and I3 at `now_ms`.
pub fn check(world: &World, now_ms: u64) -> Result<(), Violation> {
    two_ready(world)?;
    for shard in world.shards.keys() {
        let servers = writable(world, shard, now_ms);
        if servers.len() > 1 {
            return Err(Violation::TwoWritable {
                shard: shard.clone(),
                servers: servers.into_iter().collect(),
            });
        }
    }
    match world.terminations.iter().find(|t| t.was_healthy) {
        Some(t) => Err(Violation::HealthyTerminated {
            machine: t.machine.clone(),
            instance: t.instance.clone(),
            at_ms: t.at_ms,
        }),
        None => Ok(()),
    }
}

/// I1a. Only servers whose line points at a running instance count: an old master fenced at
/// its source is terminated, so a proxy whose fence was skipped (and whose runtime API came
/// back only later) may still list it as ready next to the new master while sending it
/// nothing — the very case the fence at the source exists for. A crashed or hung instance the
/// cloud still runs does count: it may come back.
fn two_ready(world: &World) -> Result<(), Violation> {
    let haproxies = world
        .instances
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .filter(|i| world.roles.get(&i.machine) == Some(&Role::Haproxy));
    for inst in haproxies {
        for (backend, lines) in inst.proxy.iter().flat_map(|p| &p.backends) {
            let ready: Vec<String> = lines
                .iter()
                .filter(|l| l.admin == Admin::Ready && world.at(l.addr).is_some())
                .map(|l| l.name.clone())
                .collect();
            if ready.len() > 1 {
                return Err(Violation::TwoReady {
                    proxy: inst.machine.clone(),
                    instance: inst.id.clone(),
                    backend: backend.clone(),
                    servers: ready,
                });
            }
        }
    }
    Ok(())
}

/// The servers of `shard` (as `machine (instance)`) that some client can write to at `now_ms`
/// through the proxies as they route now: any server its proxy may send it to (HAProxy
/// balances over every ready server that passes its check) that is an alive, unpaused master.
pub fn writable(world: &World, shard: &str, now_ms: u64) -> BTreeSet<String> {
    let clients = world
        .clients
        .iter()
        .filter(|(_, s)| s.iter().any(|s| s == shard));
    clients
        .filter_map(|(c, _)| world.route(c, shard).ok())
        .flat_map(|(_, servers)| servers)
        .filter(|&s| world.accepts_writes(s, shard, now_ms).is_ok())
        .map(|s| format!("{} ({})", world.instances[s].machine, world.instances[s].id))
        .collect()
}

/// The shard's master now: the one server clients can write to, else the one alive master
/// on an instance that is not crashed; `None` when neither is unique.
pub fn current_master<'a>(world: &'a World, shard: &str) -> Option<&'a Instance> {
    let routed: BTreeSet<usize> = world
        .clients
        .keys()
        .filter_map(|c| world.route(c, shard).ok())
        .flat_map(|(_, servers)| servers)
        .filter(|&s| world.accepts_writes(s, shard, world.now_ms).is_ok())
        .collect();
    if let [only] = routed.into_iter().collect::<Vec<_>>()[..] {
        return Some(&world.instances[only]);
    }
    let masters: Vec<&Instance> = world
        .instances
        .iter()
        .filter(|i| is_master(i, shard))
        .collect();
    match masters[..] {
        [only] => Some(only),
        _ => None,
    }
}

fn is_master(i: &Instance, shard: &str) -> bool {
    i.state == InstanceState::Running
        && i.status != Status::Crashed
        && i.redis
            .get(shard)
            .is_some_and(|r| r.alive && r.role == RedisRole::Master)
}

/// Whether `machine`'s current instance is up and serves `shard` as a live master.
pub fn serves_as_master(world: &World, machine: &str, shard: &str) -> bool {
    world
        .instance(machine)
        .is_some_and(|i| i.is_up() && is_master(i, shard))
}

/// I2: acknowledged writes missing from the log of their shard's current master (shards
/// with no unique master are left out: check [`converged`] first). Each carries the server
/// and time it was acknowledged at, for the driver to compare with [`World::last_sync`].
pub fn lost_writes(world: &World) -> Vec<Ack> {
    let mut lost = Vec::new();
    for shard in world.shards.keys() {
        let Some(log) = current_master(world, shard).and_then(|m| m.redis.get(shard)) else {
            continue;
        };
        let kept: HashSet<u64> = log.log.iter().copied().collect();
        let missing = world
            .acks
            .iter()
            .filter(|a| a.shard == *shard && !kept.contains(&a.value));
        lost.extend(missing.cloned());
    }
    lost
}

/// The machines whose current instance still runs (up or not) and has every acknowledged
/// write of `shard` but those `excused` (made within a reported replication window), each
/// with whether that copy is served now, or could be by medic alone (the machine up, its
/// process alive or a replica's, which medic restarts): where the shard could be served
/// again without losing any. (A dead process keeps its data, as redis's persistence does; a
/// dead master is never restarted as one without a human.)
pub fn whole_copies(
    world: &World,
    shard: &str,
    excused: impl Fn(&Ack) -> bool,
) -> Vec<(String, bool)> {
    let acked: Vec<u64> = world
        .acks
        .iter()
        .filter(|a| a.shard == shard && !excused(a))
        .map(|a| a.value)
        .collect();
    world
        .instances
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .filter(|i| world.instance(&i.machine).is_some_and(|c| c.id == i.id))
        .filter(|i| {
            i.redis.get(shard).is_some_and(|r| {
                let kept: HashSet<u64> = r.log.iter().copied().collect();
                acked.iter().all(|v| kept.contains(v))
            })
        })
        .map(|i| {
            let usable = i
                .redis
                .get(shard)
                .is_some_and(|r| r.alive || r.role != RedisRole::Master);
            (i.machine.clone(), i.is_up() && usable)
        })
        .collect()
}

/// I4: running instances that are not their machine's recorded one (`recorded`: machine →
/// instance id), and machines with more than one running instance.
pub fn orphans(world: &World, recorded: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut running: BTreeMap<&str, usize> = BTreeMap::new();
    for i in world
        .instances
        .iter()
        .filter(|i| i.state == InstanceState::Running)
    {
        *running.entry(&i.machine).or_default() += 1;
        if recorded.get(&i.machine) != Some(&i.id) {
            out.push(format!(
                "{} runs but is not {}'s recorded instance",
                i.id, i.machine
            ));
        }
    }
    let several = running.into_iter().filter(|(_, n)| *n > 1);
    out.extend(several.map(|(m, n)| format!("{m} has {n} running instances")));
    out
}

/// I5: every shard has exactly one master, up and reached by every proxy; every other server
/// of the shard is alive and a linked replica of it with the same log; every proxy routes the
/// shard to that master (ready, at its address) with every other server in maintenance; and
/// every client can write.
pub fn converged(world: &World) -> Result<(), String> {
    converged_but(world, &BTreeSet::new())
}

/// I5 for every shard but those in `skip` (shards waiting for a human, checked apart).
pub fn converged_but(world: &World, skip: &BTreeSet<String>) -> Result<(), String> {
    converged_without(world, skip, &BTreeSet::new())
}

/// I5 for every shard but those in `skip`, not counting the replicas on the machines `kept`
/// (left as they are while they may hold a waiting shard's only copy).
pub fn converged_without(
    world: &World,
    skip: &BTreeSet<String>,
    kept: &BTreeSet<String>,
) -> Result<(), String> {
    let proxies: Vec<Option<usize>> = world
        .proxies()
        .iter()
        .map(|p| world.current_idx(p))
        .collect();
    for (shard, layout) in world.shards.iter().filter(|(s, _)| !skip.contains(*s)) {
        let masters: Vec<usize> = (0..world.instances.len())
            .filter(|&i| is_master(&world.instances[i], shard))
            .collect();
        let [m] = masters[..] else {
            return Err(format!("{shard} has {} masters", masters.len()));
        };
        let master = &world.instances[m];
        if world.current_idx(&master.machine) != Some(m) || !master.is_up() {
            return Err(format!("{shard}: master {} is not up", master.id));
        }
        if proxies
            .iter()
            .any(|p| !p.is_some_and(|p| world.reaches(p, m)))
        {
            return Err(format!(
                "{shard}: some proxy does not reach the master {}",
                master.machine
            ));
        }
        let log = master.redis.get(shard).map(|r| &r.log);
        for machine in layout
            .machines
            .iter()
            .filter(|m| **m != master.machine && !kept.contains(*m))
        {
            let i = world
                .current_idx(machine)
                .filter(|&i| world.source(i, shard) == Some(m));
            let r = i.and_then(|i| world.instances[i].redis.get(shard));
            match r {
                Some(r) if Some(&r.log) == log => {}
                _ => return Err(format!("{shard}@{machine} is not a replica in sync")),
            }
        }
        for p in proxies.iter().flatten().map(|&p| &world.instances[p]) {
            let lines = p
                .proxy
                .as_ref()
                .and_then(|x| x.backends.get(&world.backend_of(shard)));
            let right = lines.is_some_and(|lines| {
                lines.iter().all(|l| {
                    if l.name == master.machine {
                        l.admin == Admin::Ready && l.addr == master.address
                    } else {
                        l.admin == Admin::Maint
                    }
                })
            });
            if !right {
                return Err(format!(
                    "{}: {shard} is not routed to {} alone",
                    p.machine, master.machine
                ));
            }
        }
    }
    for (client, shards) in &world.clients {
        for shard in shards.iter().filter(|s| !skip.contains(*s)) {
            let (_, servers) = world.route(client, shard)?;
            let s = *servers
                .first()
                .ok_or(format!("{client}: no server for {shard}"))?;
            world
                .accepts_writes(s, shard, world.now_ms)
                .map_err(|e| format!("{client}: cannot write to {shard}: {e}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::tests::world;

    #[test]
    fn a_healthy_world_holds_every_invariant() {
        let mut w = world();
        check(&w, 0).expect("I1, I3");
        converged(&w).expect("I5");
        w.client_writes(5);
        w.advance(10);
        assert!(lost_writes(&w).is_empty());
        let recorded = w.machines().into_iter().map(|m| {
            let id = w.instance(&m).expect("instance").id.clone();
            (m, id)
        });
        assert!(orphans(&w, &recorded.collect()).is_empty());
    }

    #[test]
    fn a_crashed_master_breaks_no_safety_invariant_but_is_not_converged() {
        let mut w = world();
        w.crash("redis1");
        w.client_writes(5);
        check(&w, 5).expect("I1, I3");
        assert_eq!(converged(&w).expect_err("down"), "r9001 has 0 masters");
    }

    #[test]
    fn two_ready_masters_behind_a_proxy_break_i1() {
        let mut w = world();
        let hp1 = w.current_idx("haproxy1").expect("haproxy1");
        let r2 = w.current_idx("redis2").expect("redis2");
        if let Some(r) = w.instances[r2].redis.get_mut("r9001") {
            r.role = RedisRole::Master;
        }
        assert_eq!(writable(&w, "r9001", 0).len(), 1);
        let line = w.instances[hp1]
            .proxy
            .as_mut()
            .and_then(|p| p.line_mut("redis-r9001", "redis2"));
        line.expect("line").admin = Admin::Ready;
        assert_eq!(writable(&w, "r9001", 0).len(), 2);
        let v = check(&w, 0).expect_err("I1a");
        assert_eq!(
            v.to_string(),
            "I1a: proxy haproxy1 (i-haproxy1-1) has redis1 and redis2 ready in redis-r9001"
        );
        // A paused master takes no write: one writable server left (I1a still counts it).
        if let Some(r) = w.instances[r2].redis.get_mut("r9001") {
            r.paused_until_ms = 100;
        }
        assert_eq!(writable(&w, "r9001", 50).len(), 1);
    }

    #[test]
    fn terminating_a_healthy_machine_breaks_i3_and_a_second_instance_is_an_orphan() {
        let mut w = world();
        let id = w.instance("redis2").expect("redis2").id.clone();
        let recorded: BTreeMap<String, String> = w
            .machines()
            .into_iter()
            .map(|m| {
                let id = w.instance(&m).expect("instance").id.clone();
                (m, id)
            })
            .collect();
        w.launch("app", "tok");
        assert_eq!(
            orphans(&w, &recorded),
            [
                "i-app-2 runs but is not app's recorded instance",
                "app has 2 running instances"
            ]
        );
        w.terminate(&id, 42);
        let v = check(&w, 50).expect_err("I3");
        assert_eq!(
            v.to_string(),
            "I3: redis2's instance i-redis2-1 was terminated at 42 ms while healthy"
        );
    }

    #[test]
    fn writes_acked_by_a_master_that_is_replaced_are_lost() {
        let mut w = world();
        w.client_writes(5);
        // redis2 never copied them: the master is lost before the next advance.
        w.crash("redis1");
        let r2 = w.current_idx("redis2").expect("redis2");
        if let Some(r) = w.instances[r2].redis.get_mut("r9001") {
            r.role = RedisRole::Master;
        }
        let lost = lost_writes(&w);
        assert_eq!(lost.len(), 1);
        assert_eq!(
            (lost[0].server_machine.as_str(), lost[0].at_ms),
            ("redis1", 5)
        );
    }
}
