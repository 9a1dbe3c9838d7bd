//! The faults the driver injects, and the cloud: launches and terminations.

use std::net::IpAddr;

use medic_topology::Role;

use super::{Instance, InstanceState, Status, Termination, World};

impl World {
    fn current_mut(&mut self, machine: &str) -> Option<&mut Instance> {
        self.current.get(machine).map(|&i| &mut self.instances[i])
    }

    /// The machine's current instance crashes: gone until replaced.
    pub fn crash(&mut self, machine: &str) {
        if let Some(i) = self.current_mut(machine) {
            i.status = Status::Crashed;
        }
    }

    /// The machine hangs: connections are accepted, nothing answers.
    pub fn hang(&mut self, machine: &str) {
        if let Some(i) = self.current_mut(machine).filter(|i| i.status == Status::Up) {
            i.status = Status::Hung;
        }
    }

    /// A hung machine answers again, as it was.
    pub fn unhang(&mut self, machine: &str) {
        if let Some(i) = self
            .current_mut(machine)
            .filter(|i| i.status == Status::Hung)
        {
            i.status = Status::Up;
        }
    }

    /// The redis process of `shard` on `machine` dies (connections are refused).
    pub fn kill_redis(&mut self, shard: &str, machine: &str) {
        if let Some(r) = self
            .current_mut(machine)
            .and_then(|i| i.redis.get_mut(shard))
        {
            r.alive = false;
        }
    }

    /// `from` can no longer reach `to` (nor exchange anything with it over TCP).
    pub fn cut(&mut self, from: &str, to: &str) {
        self.cuts.insert((from.to_owned(), to.to_owned()));
    }

    /// Cuts both ways.
    pub fn cut_both(&mut self, a: &str, b: &str) {
        self.cut(a, b);
        self.cut(b, a);
    }

    /// Removes every cut.
    pub fn heal_network(&mut self) {
        self.cuts.clear();
    }

    /// The proxy's runtime API refuses (`true`) or answers again; HAProxy routes either way.
    pub fn proxy_api_down(&mut self, proxy: &str, down: bool) {
        if let Some(p) = self.current_mut(proxy).and_then(|i| i.proxy.as_mut()) {
            p.api_down = down;
        }
    }

    /// The proxy's HAProxy has no `server` line for `machine` in `shard`'s backend: a replica
    /// added to the topology that the proxy's configuration does not have yet (in a deployment
    /// medic manages, until `medic recover PROXY`). The line is gone from the running HAProxy.
    pub fn lose_line(&mut self, proxy: &str, shard: &str, machine: &str) {
        let backend = self.backend_of(shard);
        if let Some(lines) = self
            .current_mut(proxy)
            .and_then(|i| i.proxy.as_mut())
            .and_then(|p| p.backends.get_mut(&backend))
        {
            lines.retain(|l| l.name != machine);
        }
    }

    /// The proxy's configuration has `machine`'s server again (`medic recover PROXY`): in
    /// maintenance, at the machine's current address, for the reconcile to set as the
    /// routing wants. A proxy replaced since was configured whole, and has it already.
    pub fn restore_line(&mut self, proxy: &str, shard: &str, machine: &str) {
        let backend = self.backend_of(shard);
        let port = self.shards.get(shard).map_or(0, |s| s.port);
        let Some(addr) = self.addresses().get(machine).copied() else {
            return;
        };
        if let Some(lines) = self
            .current_mut(proxy)
            .and_then(|i| i.proxy.as_mut())
            .and_then(|p| p.backends.get_mut(&backend))
            .filter(|lines| !lines.iter().any(|l| l.name == machine))
        {
            lines.push(super::ServerLine {
                name: machine.to_owned(),
                addr,
                port,
                admin: super::Admin::Maint,
                backup: false,
                fqdn: None,
            });
        }
    }

    // ---- cloud -----------------------------------------------------------------------------

    /// Launches `machine`'s replacement, once per `token`: up, with nothing configured, and
    /// from now on the machine's instance. Returns its id and address.
    pub fn launch(&mut self, machine: &str, token: &str) -> (String, IpAddr) {
        let i = match self.tokens.get(token) {
            Some(&i) => i,
            None => {
                let address = self.next_address();
                let i = self.add_instance(machine, address);
                self.tokens.insert(token.to_owned(), i);
                i
            }
        };
        (self.instances[i].id.clone(), self.instances[i].address)
    }

    /// The ids of `machine`'s running instances (what a search by its tags finds).
    pub fn running_ids(&self, machine: &str) -> Vec<String> {
        let running = self
            .instances
            .iter()
            .filter(|i| i.state == InstanceState::Running);
        running
            .filter(|i| i.machine == machine)
            .map(|i| i.id.clone())
            .collect()
    }

    /// Terminates instance `id`: `Some(true)` if it ran, `Some(false)` if already gone,
    /// `None` if there is no such instance. Logs whether its machine was healthy.
    pub fn terminate(&mut self, id: &str, at_ms: u64) -> Option<bool> {
        let i = self.instances.iter().position(|i| i.id == id)?;
        if self.instances[i].state == InstanceState::Terminated {
            return Some(false);
        }
        let was_healthy = self.healthy(i);
        let inst = &mut self.instances[i];
        inst.state = InstanceState::Terminated;
        self.terminations.push(Termination {
            machine: inst.machine.clone(),
            instance: inst.id.clone(),
            at_ms,
            was_healthy,
        });
        Some(true)
    }

    /// Instance `i` is its machine's current one, up, (redis) with every process alive, and
    /// reached by every up machine that uses it: the proxies and clients for a redis machine,
    /// the clients for a proxy. A machine that is down does not count against it.
    fn healthy(&self, i: usize) -> bool {
        let inst = &self.instances[i];
        if self.current.get(&inst.machine) != Some(&i) || !inst.is_up() {
            return false;
        }
        let clients = self.clients.keys().cloned();
        let users: Vec<String> = match self.roles.get(&inst.machine) {
            Some(Role::Redis) if inst.redis.is_empty() || inst.redis.values().any(|r| !r.alive) => {
                return false;
            }
            Some(Role::Redis) => self.proxies().into_iter().chain(clients).collect(),
            // A proxy whose runtime API refuses on the network cannot be fenced in a failover:
            // medic replaces it (its observers cannot reach the API either), so it does not
            // count as healthy. (An app machine likewise: its HAProxy is what it serves.) One
            // whose API medic reaches over SSH and cannot ask still routes, and its observers
            // see its frontends: it is healthy, and must not be terminated.
            Some(Role::Haproxy | Role::App)
                if inst
                    .proxy
                    .as_ref()
                    .is_none_or(|p| p.api_down && !self.api_over_ssh.contains(&inst.machine)) =>
            {
                return false;
            }
            Some(Role::Haproxy) => clients.collect(),
            _ => Vec::new(),
        };
        users
            .iter()
            .filter(|u| self.is_up(u))
            .all(|u| self.linked(u, &inst.machine))
    }
}

#[cfg(test)]
mod tests {
    use crate::world::tests::world;
    use medic_detect::Observation;

    #[test]
    fn a_launch_is_idempotent_by_token_and_a_terminate_is_logged() {
        let mut w = world();
        let healthy = w.instance("redis2").expect("redis2").id.clone();
        let (id, ip) = w.launch("redis2", "t-1");
        assert_eq!(
            (id.as_str(), ip.to_string().as_str()),
            ("i-redis2-2", "10.77.1.1")
        );
        assert_eq!(w.launch("redis2", "t-1"), (id.clone(), ip));
        assert_eq!(w.running_ids("redis2"), [healthy.clone(), id.clone()]);
        // The old instance is not the machine's any more: terminating it is no harm.
        assert_eq!(w.terminate(&healthy, 7), Some(true));
        assert_eq!(w.terminate(&healthy, 8), Some(false));
        assert!(!w.terminations[0].was_healthy);
        // The new one has no redis yet.
        assert_eq!(w.check_redis("r9001", "redis2").0, Observation::Refused);
        let hp = w.instance("haproxy2").expect("haproxy2").id.clone();
        assert_eq!(w.terminate(&hp, 9), Some(true));
        assert!(w.terminations[1].was_healthy);
    }
}
