//! The simulated deployment: machines (as cloud instances), redis servers, HAProxies, the
//! network, DNS and the clients, and what the monitor host sees of them.
//!
//! Everything is addressed as the real system addresses it: a HAProxy server line and a
//! replica's master are *addresses*, resolved to whichever running instance has that address
//! now, so a line left at a replaced machine's old address reaches nothing (or the old instance,
//! if it still runs). Every method is deterministic; faults come from the driver.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use medic_plan::vars;
use medic_plan::{Addr, ObservedState};
use medic_topology::{Role, Topology};

mod faults;
mod model;
mod monitor;

pub use model::*;

/// Where addresses handed out by the simulated cloud start: 10.77.1.1, 10.77.1.2, ...
const LAUNCH_BASE: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 0);

/// The whole simulated deployment.
#[derive(Debug, Clone)]
pub struct World {
    /// The monitor host: always up, no instance; medic's steps act from it.
    pub monitor: String,
    /// Every other machine's role.
    pub roles: BTreeMap<String, Role>,
    pub shards: BTreeMap<String, ShardLayout>,
    /// Each app machine (one client on it) and the shards it writes to.
    pub clients: BTreeMap<String, Vec<String>>,
    /// Each (app machine, shard)'s backend on the app proxy (the topology's name for it).
    pub app_backends: BTreeMap<(String, String), String>,
    /// Every instance ever launched, in launch order.
    pub instances: Vec<Instance>,
    /// Directed cuts `(from, to)`: `from` cannot reach `to`.
    pub cuts: BTreeSet<(String, String)>,
    pub dns: BTreeMap<String, Vec<IpAddr>>,
    pub acks: Vec<Ack>,
    pub failed_writes: u64,
    pub terminations: Vec<Termination>,
    pub now_ms: u64,
    /// Machines whose HAProxy admin API medic reaches over SSH (`runtime_api.reach: ssh`): an
    /// API that does not answer while HAProxy routes is then a HAProxy medic cannot control,
    /// seen as unhealthy (its frontends accept), not as a dead one.
    pub api_over_ssh: BTreeSet<String>,
    current: BTreeMap<String, usize>,
    tokens: BTreeMap<String, usize>,
    next_value: u64,
    handed_out: u32,
}

impl World {
    /// The backend on the proxies that serves `shard`.
    pub fn backend_of(&self, shard: &str) -> String {
        self.shards
            .get(shard)
            .map_or_else(|| format!("unknown shard {shard}"), |s| s.backend.clone())
    }

    /// A healthy deployment as `observed` says: every machine running, roles as observed,
    /// replicas in sync, every HAProxy configured as its playbook would configure it.
    pub fn new(top: &Topology, observed: &ObservedState) -> World {
        let mut w = World {
            monitor: String::new(),
            roles: BTreeMap::new(),
            shards: BTreeMap::new(),
            clients: BTreeMap::new(),
            app_backends: BTreeMap::new(),
            instances: Vec::new(),
            cuts: BTreeSet::new(),
            dns: BTreeMap::new(),
            acks: Vec::new(),
            failed_writes: 0,
            terminations: Vec::new(),
            now_ms: 0,
            api_over_ssh: top
                .machines
                .iter()
                .map(|m| m.value.name.value.clone())
                .filter(|m| {
                    top.runtime_api_of(m)
                        .is_some_and(|r| r.reach == medic_topology::Reach::Ssh)
                })
                .collect(),
            current: BTreeMap::new(),
            tokens: BTreeMap::new(),
            next_value: 0,
            handed_out: 0,
        };
        for s in top.shards.iter().map(|s| &s.value) {
            let machines = Topology::shard_machines(s).map(str::to_owned).collect();
            w.shards.insert(
                s.name.value.clone(),
                ShardLayout {
                    port: s.port.value,
                    backend: top.shard_backend(&s.name.value),
                    machines,
                },
            );
        }
        for a in top.app_proxies.iter().map(|a| &a.value) {
            let shards = a
                .frontends
                .iter()
                .map(|f| f.value.shard.value.clone())
                .collect();
            for f in &a.frontends {
                let shard = f.value.shard.value.clone();
                let backend = top.app_backend(&a.machine.value, &shard);
                w.app_backends
                    .insert((a.machine.value.clone(), shard), backend);
            }
            w.clients.insert(a.machine.value.clone(), shards);
        }
        for m in top.machines.iter().map(|m| &m.value) {
            let name = m.name.value.clone();
            if m.role.value == Role::Monitor {
                w.monitor = name;
                continue;
            }
            w.roles.insert(name.clone(), m.role.value);
            let address = observed.address(&name).unwrap_or_else(|| w.next_address());
            w.add_instance(&name, address);
        }
        let addresses = w.addresses();
        for (shard, st) in &observed.shards {
            let Some(master) = addresses.get(&st.master).copied() else {
                continue;
            };
            let role = |m: &str| {
                if m == st.master {
                    RedisRole::Master
                } else {
                    RedisRole::Replica {
                        of: st.master.clone(),
                        addr: master,
                    }
                }
            };
            let machines =
                std::iter::once(&st.master).chain(st.replicas.iter().map(|r| &r.machine));
            for m in machines {
                if let Some(&i) = w.current.get(m) {
                    w.instances[i]
                        .redis
                        .insert(shard.clone(), Redis::fresh(role(m)));
                }
            }
        }
        let masters = observed
            .shards
            .iter()
            .map(|(k, v)| (k.clone(), v.master.clone()))
            .collect();
        let resolve = |s: &str| match Addr::parse(s)? {
            Addr::Ip(ip) => Some(ip),
            Addr::Of(m) => addresses.get(&m).copied(),
        };
        for (machine, &i) in &w.current {
            let addr = vars::addr_of(observed, machine);
            let v = match w.roles.get(machine) {
                Some(Role::Haproxy) => {
                    Some(vars::haproxy_vars(top, observed, machine, &addr, &masters))
                }
                Some(Role::App) => vars::app_proxy_vars(top, observed, machine, &addr),
                _ => None,
            };
            w.instances[i].proxy = v.and_then(|v| Proxy::from_vars(&v, resolve).ok());
        }
        for r in top
            .dns
            .iter()
            .flat_map(|d| d.value.records.iter())
            .map(|r| &r.value)
        {
            let ips = r
                .machines
                .iter()
                .filter_map(|m| addresses.get(&m.value).copied());
            w.dns
                .insert(r.name.value.trim_end_matches('.').to_owned(), ips.collect());
        }
        w
    }

    fn next_address(&mut self) -> IpAddr {
        self.handed_out += 1;
        IpAddr::V4(Ipv4Addr::from(u32::from(LAUNCH_BASE) + self.handed_out))
    }

    fn add_instance(&mut self, machine: &str, address: IpAddr) -> usize {
        let n = self
            .instances
            .iter()
            .filter(|i| i.machine == machine)
            .count()
            + 1;
        self.instances.push(Instance {
            id: format!("i-{machine}-{n}"),
            machine: machine.to_owned(),
            address,
            state: InstanceState::Running,
            status: Status::Up,
            redis: BTreeMap::new(),
            proxy: None,
        });
        let i = self.instances.len() - 1;
        self.current.insert(machine.to_owned(), i);
        i
    }

    // ---- queries ---------------------------------------------------------------------------

    /// Every machine but the monitor, by name.
    pub fn machines(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    /// The proxy machines (role haproxy).
    pub fn proxies(&self) -> Vec<String> {
        self.roles
            .iter()
            .filter(|(_, r)| **r == Role::Haproxy)
            .map(|(m, _)| m.clone())
            .collect()
    }

    /// A machine's current instance (the last launched for it).
    pub fn instance(&self, machine: &str) -> Option<&Instance> {
        self.current.get(machine).map(|&i| &self.instances[i])
    }

    /// The index in `instances` of a machine's current instance.
    pub fn current_idx(&self, machine: &str) -> Option<usize> {
        self.current.get(machine).copied()
    }

    /// Each machine's current address.
    pub fn addresses(&self) -> BTreeMap<String, IpAddr> {
        self.current
            .iter()
            .map(|(m, &i)| (m.clone(), self.instances[i].address))
            .collect()
    }

    /// The running instance at `ip`, by index in `instances`.
    pub fn at(&self, ip: IpAddr) -> Option<usize> {
        self.instances
            .iter()
            .position(|i| i.address == ip && i.state == InstanceState::Running)
    }

    /// The machine of the running instance at `ip`.
    pub fn machine_at(&self, ip: IpAddr) -> Option<&str> {
        self.at(ip).map(|i| self.instances[i].machine.as_str())
    }

    /// The machine's current instance is up (the monitor always is).
    pub fn is_up(&self, machine: &str) -> bool {
        machine == self.monitor || self.instance(machine).is_some_and(Instance::is_up)
    }

    /// No cut between the two, either way (a TCP exchange needs both directions).
    fn linked(&self, a: &str, b: &str) -> bool {
        a == b
            || !(self.cuts.contains(&(a.to_owned(), b.to_owned()))
                || self.cuts.contains(&(b.to_owned(), a.to_owned())))
    }

    /// `a` reaches `b`: both up, no cut either way.
    pub fn reach(&self, a: &str, b: &str) -> bool {
        self.is_up(a) && self.is_up(b) && self.linked(a, b)
    }

    /// Instance `a` reaches instance `b`.
    pub fn reaches(&self, a: usize, b: usize) -> bool {
        let (a, b) = (&self.instances[a], &self.instances[b]);
        a.is_up() && b.is_up() && self.linked(&a.machine, &b.machine)
    }

    /// The monitor reaches instance `i`.
    pub fn monitor_reaches(&self, i: usize) -> bool {
        let i = &self.instances[i];
        i.is_up() && self.linked(&self.monitor, &i.machine)
    }

    /// The redis server of `shard` on `machine`'s current instance.
    pub fn redis(&self, shard: &str, machine: &str) -> Option<&Redis> {
        self.instance(machine)?.redis.get(shard)
    }

    /// When each current server of `shard` last copied its master's log (I2's window).
    pub fn last_sync(&self, shard: &str) -> BTreeMap<String, u64> {
        self.current
            .iter()
            .filter_map(|(m, &i)| {
                Some((m.clone(), self.instances[i].redis.get(shard)?.last_sync_ms))
            })
            .collect()
    }

    /// The instance a replica copies from now: its master's, both up and alive, linked.
    pub fn source(&self, i: usize, shard: &str) -> Option<usize> {
        let r = self.instances[i].redis.get(shard).filter(|r| r.alive)?;
        let RedisRole::Replica { addr, .. } = r.role else {
            return None;
        };
        let m = self.at(addr).filter(|&m| m != i && self.reaches(i, m))?;
        self.instances[m]
            .redis
            .get(shard)
            .filter(|r| r.alive)
            .map(|_| m)
    }

    // ---- time and clients ------------------------------------------------------------------

    /// Moves time on to `to_ms`: every linked replica copies its master's log (a replica
    /// whose log diverged is fully resynced: it takes the master's).
    pub fn advance(&mut self, to_ms: u64) {
        self.now_ms = self.now_ms.max(to_ms);
        // Logs only ever grow by unique values or are replaced by a copy, so two logs of one
        // length and one last value are the same log: most ticks copy nothing.
        let mut copies = Vec::new();
        for (i, inst) in self.instances.iter().enumerate() {
            for (shard, r) in &inst.redis {
                if let Some(src) = self.source(i, shard) {
                    let log = &self.instances[src].redis[shard].log;
                    let same = log.len() == r.log.len() && log.last() == r.log.last();
                    copies.push((i, shard.clone(), (!same).then(|| log.clone())));
                }
            }
        }
        let now = self.now_ms;
        for (i, shard, log) in copies {
            if let Some(r) = self.instances[i].redis.get_mut(&shard) {
                if let Some(log) = log {
                    r.log = log;
                }
                r.last_sync_ms = now;
            }
        }
    }

    /// The effective address of a line: its DNS record's when it follows one.
    fn line_addr(&self, l: &ServerLine) -> IpAddr {
        l.fqdn
            .as_ref()
            .and_then(|f| self.dns.get(f))
            .and_then(|ips| ips.first().copied())
            .unwrap_or(l.addr)
    }

    /// The proxy instance `client`'s app proxy sends `shard` to now (the primary while its
    /// check passes, else the backup), and every server that proxy may send it to: ready and
    /// answering its `PING`/`+PONG` check (alive and reached: a replica or a paused master
    /// passes it too), in line order.
    pub fn route(&self, client: &str, shard: &str) -> Result<(usize, Vec<usize>), String> {
        let app = self
            .current_idx(client)
            .filter(|&a| self.instances[a].is_up());
        let app = app.ok_or(format!("client machine {client} is down"))?;
        let px = self.instances[app]
            .proxy
            .as_ref()
            .ok_or("no app proxy runs")?;
        let lines = px
            .backends
            .get(
                self.app_backends
                    .get(&(client.to_owned(), shard.to_owned()))
                    .ok_or("no app frontend for the shard")?,
            )
            .ok_or("no app backend")?;
        let up = |l: &&ServerLine| -> Option<usize> {
            let p = self.at(self.line_addr(l))?;
            let ok = l.admin == Admin::Ready && self.instances[p].proxy.is_some();
            (ok && self.reaches(app, p)).then_some(p)
        };
        let first = |backup: bool| {
            lines
                .iter()
                .filter(|l| l.backup == backup)
                .find_map(|l| up(&l))
        };
        let proxy = first(false)
            .or_else(|| first(true))
            .ok_or("no proxy up for the app")?;
        let lines = self.instances[proxy]
            .proxy
            .as_ref()
            .and_then(|p| p.backends.get(&self.backend_of(shard)));
        let servers = lines
            .into_iter()
            .flatten()
            .filter(|l| l.admin == Admin::Ready)
            .filter_map(|l| self.at(self.line_addr(l)))
            .filter(|&s| self.reaches(proxy, s))
            .filter(|&s| self.instances[s].redis.get(shard).is_some_and(|r| r.alive))
            .collect();
        Ok((proxy, servers))
    }

    /// Whether the server of `shard` on instance `i` takes a write at `now_ms`.
    pub fn accepts_writes(&self, i: usize, shard: &str, now_ms: u64) -> Result<(), &'static str> {
        let r = self.instances[i]
            .redis
            .get(shard)
            .filter(|r| r.alive)
            .ok_or("no server")?;
        match r.role {
            RedisRole::Replica { .. } => Err("READONLY: a replica"),
            RedisRole::Master if r.paused_until_ms > now_ms => Err("writes paused"),
            RedisRole::Master => Ok(()),
        }
    }

    /// Each client writes one new value to each of its shards, through its app proxy, the
    /// proxy that routes it and the first server that proxy sends it to.
    pub fn client_writes(&mut self, now_ms: u64) -> Vec<Write> {
        self.now_ms = self.now_ms.max(now_ms);
        let mut out = Vec::new();
        for (client, shards) in self.clients.clone() {
            for shard in shards {
                self.next_value += 1;
                let value = self.next_value;
                let target = self.route(&client, &shard).and_then(|(_, servers)| {
                    let s = *servers.first().ok_or("no server up behind the proxy")?;
                    self.accepts_writes(s, &shard, self.now_ms)
                        .map(|()| s)
                        .map_err(str::to_owned)
                });
                match target {
                    Ok(s) => {
                        let inst = &mut self.instances[s];
                        if let Some(r) = inst.redis.get_mut(&shard) {
                            r.log.push(value);
                        }
                        let ack = Ack {
                            client: client.clone(),
                            shard,
                            value,
                            server_machine: inst.machine.clone(),
                            instance: inst.id.clone(),
                            at_ms: self.now_ms,
                        };
                        self.acks.push(ack.clone());
                        out.push(Write::Acked(ack));
                    }
                    Err(reason) => {
                        self.failed_writes += 1;
                        out.push(Write::Failed {
                            client: client.clone(),
                            shard,
                            reason,
                        });
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use medic_detect::{Observation, Seen};
    use medic_redis::LinkStatus;

    use super::*;

    pub(crate) fn lab() -> (Topology, ObservedState) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lab.yaml");
        let top = medic_topology::load_topology(&path)
            .expect("lab.yaml loads")
            .topology;
        let observed = ObservedState::assumed(&top);
        (top, observed)
    }

    pub(crate) fn world() -> World {
        let (top, observed) = lab();
        World::new(&top, &observed)
    }

    pub(crate) fn acked_on(writes: &[Write]) -> Vec<String> {
        writes
            .iter()
            .map(|w| match w {
                Write::Acked(a) => a.server_machine.clone(),
                Write::Failed { reason, .. } => format!("failed: {reason}"),
            })
            .collect()
    }

    #[test]
    fn a_healthy_world_acks_writes_on_the_master_and_replicates_them() {
        let mut w = world();
        assert_eq!(w.monitor, "monitor");
        assert_eq!(w.instance("redis1").expect("redis1").id, "i-redis1-1");
        let writes = w.client_writes(10);
        assert_eq!(acked_on(&writes), ["redis1", "redis1"]);
        assert_eq!(
            w.route("app", "r9001").expect("route").0,
            w.current_idx("haproxy1").expect("hp1")
        );
        w.advance(20);
        assert_eq!(w.redis("r9001", "redis2").expect("replica").log, [1]);
        assert_eq!(w.last_sync("r9001")["redis2"], 20);
        let (o, info) = w.check_redis("r9001", "redis2");
        assert_eq!(o, Observation::Ok);
        let info = info.expect("info");
        assert_eq!(info.master_link_status, Some(LinkStatus::Up));
        assert_eq!(info.replica_offset, Some(1));
        let (_, info) = w.check_redis("r9001", "redis1");
        assert_eq!(info.expect("info").replicas.len(), 1);
        assert_eq!(w.check_proxy("haproxy1"), Observation::Ok);
        assert_eq!(w.witness("haproxy1", "redis1"), Seen::Up);
    }

    #[test]
    fn a_crashed_master_fails_writes_and_is_silent() {
        let mut w = world();
        w.crash("redis1");
        let writes = w.client_writes(10);
        assert!(
            acked_on(&writes).iter().all(|s| s.starts_with("failed")),
            "{writes:?}"
        );
        assert_eq!(w.check_redis("r9001", "redis1").0, Observation::Silent);
        assert_eq!(w.witness("haproxy1", "redis1"), Seen::Gone);
        // The replica's link is down: nothing to copy.
        w.advance(20);
        let (_, info) = w.check_redis("r9001", "redis2");
        assert_eq!(
            info.expect("info").master_link_status,
            Some(LinkStatus::Down)
        );
    }

    #[test]
    fn a_client_cut_from_its_primary_proxy_goes_through_the_backup() {
        let mut w = world();
        w.cut("haproxy1", "app");
        assert!(!w.reach("app", "haproxy1"));
        let hp2 = w.current_idx("haproxy2").expect("haproxy2");
        assert_eq!(w.route("app", "r9001").expect("route").0, hp2);
        assert_eq!(acked_on(&w.client_writes(5)), ["redis1", "redis1"]);
        w.cut_both("haproxy2", "redis1");
        assert!(acked_on(&w.client_writes(6))[0].starts_with("failed"));
        w.heal_network();
        assert_eq!(
            w.route("app", "r9001").expect("route").0,
            w.current_idx("haproxy1").expect("hp1")
        );
    }
}
