//! Plan steps run against the simulated world, as medic's executor (`medic-exec`) runs them
//! from the monitor host: HAProxy changes through each proxy's runtime API (skipped, and a
//! skipped fence remembered in [`Unfenced`], when it does not answer), a promotion blocked
//! until every skipped fence is made good or the old master was fenced at its source, redis
//! commands to the server at the step's address, the cloud, playbooks and DNS.
//!
//! Nothing waits: a step whose condition does not hold yet (a sync, SSH) fails retryably and
//! the driver tries it again later.

use std::collections::BTreeMap;
use std::net::IpAddr;

use medic_exec::Unfenced;
use medic_plan::{Action, Addr, ProxyApi, RedisServer, ServerRef, Step, StepOutput};
use serde_json::Value;

use crate::world::{Admin, Proxy, Redis, RedisRole, World};

/// A failed step, and whether trying it again may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub message: String,
    pub retryable: bool,
}

/// What the executor keeps across the steps of a recovery.
#[derive(Debug, Clone, Default)]
pub struct SimExec {
    /// Fences skipped, machines fenced at their source, proxies known not to answer.
    pub unfenced: Unfenced,
}

/// A runtime API change.
#[derive(Debug, Clone, Copy)]
enum Change {
    Fence,
    Activate,
    Address(IpAddr, u16),
}

/// Runs one step against the world at `now_ms`. `addresses`: every machine's address as the
/// controller knows it (what `${address:M}` resolves to).
pub fn execute(
    world: &mut World,
    exec: &mut SimExec,
    addresses: &BTreeMap<String, IpAddr>,
    step: &Step,
    now_ms: u64,
) -> Result<StepOutput, StepError> {
    let mut run = Run {
        world,
        exec,
        addresses,
        index: step.index,
        kind: step.action.kind(),
        now_ms,
    };
    let mut out = StepOutput::default();
    match &step.action {
        // The controller's own: nothing to do in the world.
        Action::Unmonitor { .. } | Action::Monitor { .. } | Action::Alert { .. } => {}
        // The simulated proxies have no configuration file (none is reloaded): the write
        // changes nothing in the world.
        Action::PersistProxyConfig { .. } => {}
        // Services are not simulated: their steps change nothing in the world.
        Action::RunHook { .. }
        | Action::ServiceRole { .. }
        | Action::PromotePostgres { .. }
        | Action::FollowPostgres { .. }
        | Action::RejoinPostgres { .. }
        | Action::StopPostgres { .. }
        | Action::StartPostgres { .. }
        | Action::ServiceAddress { .. }
        | Action::CloudAddress { .. }
        | Action::FailoverDns { .. } => {}
        // The simulated topologies keep no spares (`policy.spares`): never planned here.
        Action::PrepareSpare { .. } => {}
        Action::FenceServer { proxy, server, .. } => {
            out.skipped = run.proxy_change(proxy, server, Change::Fence)?;
            if out.skipped.is_some() {
                run.exec
                    .unfenced
                    .fences
                    .push((proxy.clone(), server.clone()));
            }
        }
        Action::ActivateServer { proxy, server } => {
            out.skipped = run.proxy_change(proxy, server, Change::Activate)?;
        }
        Action::SetServerAddress {
            proxy,
            server,
            address,
            port,
        } => {
            let ip = run.resolve(address)?;
            out.skipped = run.proxy_change(proxy, server, Change::Address(ip, *port))?;
        }
        Action::FenceAtSource {
            machine,
            instance_id,
        } => out.terminated = run.fence_at_source(machine, instance_id.as_deref())?,
        Action::PromoteReplica { server, .. } => {
            let backend = run.world.backend_of(&server.shard);
            run.ensure_fenced(&backend, &server.machine)?;
            let r = run.redis(server)?;
            r.role = RedisRole::Master;
            out.offset = Some(r.log.len() as u64);
        }
        Action::ReplicaOf { server, master, .. } => {
            let role = run.replica_of(master)?;
            let r = run.redis(server)?;
            // The same master again changes nothing; another one resyncs at the next advance.
            r.role = role;
        }
        Action::PauseWrites { server, timeout_ms } => {
            run.redis(server)?.paused_until_ms = now_ms + timeout_ms;
        }
        Action::Unpause { server } => run.redis(server)?.paused_until_ms = 0,
        Action::WaitInSync { server, master, .. } => {
            out.offset = Some(run.in_sync(server, master)?)
        }
        Action::TerminateInstance {
            machine,
            instance_id,
        } => run.terminate(machine, instance_id.as_deref()),
        Action::LaunchInstance { spec } => {
            let (id, ip) = run.world.launch(&spec.machine, &spec.client_token);
            out.address = Some(ip);
            out.instance_id = Some(id);
        }
        Action::WaitReachable { address, .. } => {
            run.ssh(address)?;
        }
        Action::RunPlaybook {
            address,
            playbook,
            vars,
            ..
        } => run.playbook(address, playbook, vars)?,
        Action::UpsertDns { name, values, .. } => {
            let ips = values
                .iter()
                .map(|a| run.resolve(a))
                .collect::<Result<_, _>>()?;
            run.world
                .dns
                .insert(name.trim_end_matches('.').to_owned(), ips);
        }
    }
    Ok(out)
}

/// A step being run.
struct Run<'a> {
    world: &'a mut World,
    exec: &'a mut SimExec,
    addresses: &'a BTreeMap<String, IpAddr>,
    index: usize,
    kind: &'static str,
    now_ms: u64,
}

impl Run<'_> {
    fn fail(&self, retryable: bool, message: impl std::fmt::Display) -> StepError {
        StepError {
            message: format!("step {} ({}): {message}", self.index, self.kind),
            retryable,
        }
    }

    fn resolve(&self, a: &Addr) -> Result<IpAddr, StepError> {
        match a {
            Addr::Ip(ip) => Ok(*ip),
            Addr::Of(m) => self.addresses.get(m).copied().ok_or_else(|| {
                let why = format!("the address of {m} is not known: no step launched it");
                self.fail(false, why)
            }),
        }
    }

    /// A machine name for `ip`: as the controller knows it, else as the cloud does.
    fn machine_of(&self, ip: IpAddr) -> String {
        let known = self.addresses.iter().find(|(_, a)| **a == ip);
        known
            .map(|(m, _)| m.clone())
            .or_else(|| self.world.machine_at(ip).map(str::to_owned))
            .unwrap_or_else(|| ip.to_string())
    }

    /// The instance at `ip`, if the monitor reaches it (over SSH, redis or the runtime API).
    fn answering(&self, ip: IpAddr) -> Option<usize> {
        self.world.at(ip).filter(|&i| self.world.monitor_reaches(i))
    }

    /// One HAProxy change through its runtime API; `Some(why)` when skipped because it does
    /// not answer (and the proxy is then skipped at once for the rest of the recovery).
    fn proxy_change(
        &mut self,
        proxy: &ProxyApi,
        server: &ServerRef,
        change: Change,
    ) -> Result<Option<String>, StepError> {
        let ip = self.resolve(&proxy.address)?;
        let (machine, at) = (&proxy.machine, proxy.at(ip));
        if self.exec.unfenced.unreachable.contains(machine) {
            return Ok(Some(format!(
                "{machine}: skipped, its runtime API at {at} does not answer (the checks or an earlier step of this recovery said so)"
            )));
        }
        let i = self.answering(ip);
        let px = i.and_then(|i| self.world.instances[i].proxy.as_mut());
        let Some(px) = px.filter(|p| !p.api_down) else {
            self.exec.unfenced.unreachable.insert(machine.clone());
            return Ok(Some(format!(
                "{machine}: skipped, its runtime API at {at} does not answer"
            )));
        };
        // (The simulated deployments are medic's own: as medic-exec does there, a proxy with
        // no server line for the machine routes no client to it — a fence holds — and an
        // activation or an address cannot be made until the proxy is configured again.)
        let Some(line) = px.line_mut(&server.backend, &server.server) else {
            return match change {
                Change::Fence => Ok(None),
                _ => Ok(Some(format!(
                    "{machine}: has no {server}: it routes no client there; `medic recover {machine}` configures it"
                ))),
            };
        };
        match change {
            Change::Fence => line.admin = Admin::Maint,
            Change::Activate => line.admin = Admin::Ready,
            Change::Address(ip, port) => (line.addr, line.port) = (ip, port),
        }
        Ok(None)
    }

    /// Before promoting in `backend`: every skipped fence of another server is tried again;
    /// one still not made (its machine not fenced at its source) blocks the promotion.
    fn ensure_fenced(&mut self, backend: &str, promoted: &str) -> Result<(), StepError> {
        let pending = self.exec.unfenced.in_backend(backend, promoted);
        for (proxy, _) in &pending {
            self.exec.unfenced.unreachable.remove(&proxy.machine);
        }
        let mut still = Vec::new();
        for (proxy, server) in pending {
            if self.proxy_change(&proxy, &server, Change::Fence)?.is_some() {
                still.push(format!("{server} on {}", proxy.machine));
            } else {
                let fences = &mut self.exec.unfenced.fences;
                fences.retain(|(p, s)| !(p.machine == proxy.machine && *s == server));
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        // medic-exec's `ExecError::Unfenced` is retryable: the proxy may answer at a retry.
        Err(self.fail(true, format!(
            "unfenced: promotion blocked: {} could not be fenced (its runtime API does not answer) and the old master's machine was not fenced at its source",
            still.join(", ")
        )))
    }

    /// Terminates `machine`'s instance (or every running one tagged as it) only if a fence of
    /// one of its servers was skipped.
    fn fence_at_source(&mut self, machine: &str, id: Option<&str>) -> Result<bool, StepError> {
        if self.exec.unfenced.of_machine(machine).next().is_none() {
            return Ok(false);
        }
        self.terminate(machine, id);
        self.exec.unfenced.at_source.insert(machine.to_owned());
        Ok(true)
    }

    /// Terminates the instance named, else every running instance of `machine`; one already
    /// gone (or unknown) is success.
    fn terminate(&mut self, machine: &str, id: Option<&str>) {
        let ids = id.map_or_else(|| self.world.running_ids(machine), |id| vec![id.to_owned()]);
        for id in ids {
            self.world.terminate(&id, self.now_ms);
        }
    }

    /// The redis server a step names (at its address), answering the monitor.
    fn redis(&mut self, s: &RedisServer) -> Result<&mut Redis, StepError> {
        let ip = self.resolve(&s.address)?;
        let at = format!("{}@{} at {ip}:{}", s.shard, s.machine, s.port);
        let Some(i) = self.answering(ip) else {
            return Err(self.fail(true, format!("{at}: no answer")));
        };
        let alive = self.world.instances[i]
            .redis
            .get(&s.shard)
            .is_some_and(|r| r.alive);
        if !alive {
            return Err(self.fail(true, format!("{at}: connection refused")));
        }
        let fail = self.fail(true, format!("{at}: connection refused"));
        self.world.instances[i].redis.get_mut(&s.shard).ok_or(fail)
    }

    fn replica_of(&self, master: &Addr) -> Result<RedisRole, StepError> {
        let addr = self.resolve(master)?;
        let of = self.machine_of(addr);
        Ok(RedisRole::Replica { of, addr })
    }

    /// The replica follows `master`, linked: it catches up (what waiting for it is) and its
    /// offset is returned; otherwise the step fails, to be tried again.
    fn in_sync(&mut self, s: &RedisServer, master: &Addr) -> Result<u64, StepError> {
        let to = self.resolve(master)?;
        let Some(m) = self.answering(to).filter(|&m| {
            let r = self.world.instances[m].redis.get(&s.shard);
            r.is_some_and(|r| r.alive)
        }) else {
            return Err(self.fail(true, format!("master {to}:{}: no answer", s.port)));
        };
        let replica = self.redis(s)?;
        if !matches!(replica.role, RedisRole::Replica { addr, .. } if addr == to) {
            return Err(self.fail(
                true,
                format!("{}@{}: not a replica of {to}", s.shard, s.machine),
            ));
        }
        let ip = self.resolve(&s.address)?;
        let i = self
            .world
            .at(ip)
            .filter(|&i| self.world.source(i, &s.shard) == Some(m));
        let Some(i) = i else {
            return Err(self.fail(true, format!("{}@{}: link down", s.shard, s.machine)));
        };
        let log = self.world.instances[m]
            .redis
            .get(&s.shard)
            .map(|r| r.log.clone());
        let now = self.now_ms;
        let r = self.world.instances[i].redis.get_mut(&s.shard);
        let (Some(r), Some(log)) = (r, log) else {
            return Err(self.fail(true, format!("{}@{}: no server", s.shard, s.machine)));
        };
        r.log = log;
        r.last_sync_ms = now;
        Ok(r.log.len() as u64)
    }

    /// SSH answers at `address`.
    fn ssh(&self, address: &Addr) -> Result<usize, StepError> {
        let ip = self.resolve(address)?;
        self.answering(ip)
            .ok_or_else(|| self.fail(true, format!("ssh {ip}: no answer")))
    }

    /// Runs a playbook: redis starts each server not running (empty, in its role); haproxy
    /// and app-proxy configure and start HAProxy unless one runs (a running one keeps its
    /// runtime state: the playbook does not reload it).
    fn playbook(&mut self, address: &Addr, playbook: &str, vars: &Value) -> Result<(), StepError> {
        let i = self.ssh(address)?;
        match playbook {
            "redis" => {
                let shards = vars["shards"].as_array().cloned().unwrap_or_default();
                for s in shards {
                    let name = s["name"].as_str().unwrap_or_default().to_owned();
                    let role = match s["role"].as_str() {
                        Some("replica") => {
                            let host = s["master_host"].as_str().unwrap_or_default();
                            let addr = Addr::parse(host).ok_or_else(|| {
                                self.fail(false, format!("vars: `{host}` is not an address"))
                            })?;
                            self.replica_of(&addr)?
                        }
                        _ => RedisRole::Master,
                    };
                    let redis = &mut self.world.instances[i].redis;
                    if !redis.get(&name).is_some_and(|r| r.alive) {
                        redis.insert(name, Redis::fresh(role));
                    }
                }
            }
            "haproxy" | "app-proxy" => {
                if self.world.instances[i].proxy.is_none() {
                    let resolve = |s: &str| Addr::parse(s).and_then(|a| self.resolve(&a).ok());
                    let proxy = Proxy::from_vars(vars, resolve).map_err(|e| self.fail(false, e))?;
                    self.world.instances[i].proxy = Some(proxy);
                }
            }
            other => return Err(self.fail(false, format!("playbook `{other}` is not loaded"))),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::tests::lab;

    fn step(index: usize, action: Action) -> Step {
        Step { index, action }
    }

    fn server(w: &World, shard: &str, machine: &str) -> RedisServer {
        let ip = w.instance(machine).expect("instance").address;
        RedisServer {
            shard: shard.into(),
            machine: machine.into(),
            address: Addr::Ip(ip),
            port: w.shards[shard].port,
        }
    }

    fn api(w: &World, machine: &str) -> ProxyApi {
        let ip = w.instance(machine).expect("instance").address;
        ProxyApi {
            machine: machine.into(),
            address: Addr::Ip(ip),
            port: Some(9999),
        }
    }

    #[test]
    fn a_skipped_fence_blocks_the_promotion_until_fenced_at_the_source() {
        let (top, observed) = lab();
        let mut w = World::new(&top, &observed);
        let (mut ex, addrs) = (SimExec::default(), w.addresses());
        w.crash("redis1");
        w.cut_both("monitor", "haproxy2");
        let backend = w.backend_of("r9001");
        for (n, p) in ["haproxy1", "haproxy2"].into_iter().enumerate() {
            let fence = Action::FenceServer {
                proxy: api(&w, p),
                server: ServerRef::new(backend.clone(), "redis1"),
                wait_sessions: false,
            };
            let out = execute(&mut w, &mut ex, &addrs, &step(n + 1, fence), 10).expect("fence");
            assert_eq!(out.skipped.is_some(), p == "haproxy2", "{p}: {out:?}");
        }
        assert_eq!(ex.unfenced.fences.len(), 1);
        let promote = step(
            3,
            Action::PromoteReplica {
                server: server(&w, "r9001", "redis2"),
                offset: 0,
                lag_bytes: 0,
            },
        );
        let e = execute(&mut w, &mut ex, &addrs, &promote, 20).expect_err("blocked");
        assert!(
            e.message
                .contains("unfenced: promotion blocked: redis-r9001/redis1 on haproxy2"),
            "{e}"
        );
        // A fence at the source of a machine every proxy fenced does nothing...
        let at_source = |m: &str| Action::FenceAtSource {
            machine: m.into(),
            instance_id: None,
        };
        let out = execute(&mut w, &mut ex, &addrs, &step(4, at_source("redis2")), 30).expect("fas");
        assert!(!out.terminated);
        // ...and terminates one that a proxy could not fence.
        let out = execute(&mut w, &mut ex, &addrs, &step(5, at_source("redis1")), 30).expect("fas");
        assert!(out.terminated);
        assert_eq!(w.terminations.len(), 1);
        assert!(!w.terminations[0].was_healthy);
        let out = execute(&mut w, &mut ex, &addrs, &promote, 40).expect("promoted");
        assert_eq!(out.offset, Some(0));
        assert_eq!(
            w.redis("r9001", "redis2").expect("r").role,
            RedisRole::Master
        );
    }

    #[test]
    fn a_fence_made_good_at_the_promotion_lets_it_through() {
        let (top, observed) = lab();
        let mut w = World::new(&top, &observed);
        let (mut ex, addrs) = (SimExec::default(), w.addresses());
        w.proxy_api_down("haproxy1", true);
        let fence = Action::FenceServer {
            proxy: api(&w, "haproxy1"),
            server: ServerRef::new(w.backend_of("r9002"), "redis1"),
            wait_sessions: true,
        };
        let out = execute(&mut w, &mut ex, &addrs, &step(1, fence), 0).expect("fence");
        assert!(out.skipped.is_some());
        w.proxy_api_down("haproxy1", false);
        let promote = Action::PromoteReplica {
            server: server(&w, "r9002", "redis2"),
            offset: 0,
            lag_bytes: 0,
        };
        execute(&mut w, &mut ex, &addrs, &step(2, promote), 0).expect("promoted");
        assert!(ex.unfenced.fences.is_empty());
        let line = w
            .instance("haproxy1")
            .and_then(|i| i.proxy.as_ref())
            .and_then(|p| {
                p.backends["redis-r9002"]
                    .iter()
                    .find(|l| l.name == "redis1")
                    .cloned()
            });
        assert_eq!(line.expect("line").admin, Admin::Maint);
    }
}
