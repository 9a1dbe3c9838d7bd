//! The proxies' routing, compared with what it should be and repaired (the services'
//! backends: `reconcile_services.rs`).
//!
//! A proxy that did not answer during a recovery (partitioned from the monitor host, or slow)
//! keeps routing as before: to a terminated master, with the promoted replica in maintenance.
//! Every few seconds, while no recovery runs, each proxy that answers is read (`show servers
//! state`) and compared with the intended routing of every shard's backend ([`repairs`], pure):
//! - a server that is not the shard's master must be in maintenance;
//! - every server must be at its machine's current address and the shard's port;
//! - the master must be `ready`.
//!
//! The first and the last are enforced only while the shard's recorded master answers its own
//! checks, as master: a master that medic could not fail over (and fenced) is not let back in
//! here, and a state medic is unsure of never cuts clients off the server they use.
//!
//! Repairs run through the executor's own steps (fences first, then addresses, then the
//! master's activation), so each is read back, then those made are written into haproxy.cfg
//! (one write per proxy), and an alert says what was found.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use medic_cloud::{Cloud, Dns};
use medic_haproxy::{ProxyApi as _, ServerState};
use medic_plan::{
    Action, Addr, AlertLevel, ObservedState, ProxyApi, ServerPersist, ServerRef, Step,
};
use medic_topology::Topology;

use super::{Controller, lock, read};

/// How often the proxies' routing is compared with the intended one.
pub(super) const RECONCILE_EVERY: Duration = Duration::from_secs(2);
/// How long reading one proxy's state may take.
const READ_WITHIN: Duration = Duration::from_secs(1);
/// A proxy's routing read longer ago than this (or never, this long after start) is unknown.
const ROUTING_STALE_MS: u64 = 10_000;

/// One proxy's routing as last read: per backend, the servers it may send traffic to.
#[derive(Debug, Clone)]
pub(super) struct Routing {
    pub read_ms: u64,
    pub ready: BTreeMap<String, Vec<String>>,
}

impl Routing {
    fn of(servers: &[ServerState], read_ms: u64) -> Routing {
        let mut ready: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in servers {
            let e = ready.entry(s.backend.clone()).or_default();
            if s.is_ready() {
                e.push(s.server.clone());
            }
        }
        Routing { read_ms, ready }
    }
}

/// `{"proxy", "to": [servers] | null, "read_ms"}`: where `proxy` sends `backend`'s clients,
/// as last read; `to` is null when that reading is missing or older than ten seconds (a proxy
/// the monitor host cannot read is not known to route well).
pub(super) fn route_of(st: &super::St, proxy: &str, backend: &str, now: u64) -> serde_json::Value {
    match st.routing.get(proxy) {
        Some(r) if now.saturating_sub(r.read_ms) <= ROUTING_STALE_MS => serde_json::json!({
            "proxy": proxy,
            "to": r.ready.get(backend).cloned().unwrap_or_default(),
            "read_ms": r.read_ms,
        }),
        Some(r) => serde_json::json!({"proxy": proxy, "to": null, "read_ms": r.read_ms}),
        // Never read: unknown only once the first readings should have come.
        None if now.saturating_sub(st.started_ms) > ROUTING_STALE_MS => {
            serde_json::json!({"proxy": proxy, "to": null, "read_ms": null})
        }
        None => serde_json::json!({"proxy": proxy, "to": null, "read_ms": null, "pending": true}),
    }
}

/// The changes that bring one proxy's redis backends to the intended routing, in a safe order:
/// every fence, then every address, then the activations. `master_up(shard)`: whether the
/// shard's recorded master answers its checks, as master. Only then is the shard's routing
/// changed at all (a fence of another server, the master's activation): a state medic is not
/// sure of — its master silent, or answering as a replica — is never enforced on the proxies;
/// an address is always corrected (it sends nothing to a server in maintenance).
pub fn repairs(
    top: &Topology,
    observed: &ObservedState,
    proxy: &ProxyApi,
    servers: &[ServerState],
    master_up: impl Fn(&str) -> bool,
) -> Vec<Action> {
    let (mut fences, mut addresses, mut activations) = (Vec::new(), Vec::new(), Vec::new());
    for s in top.shards.iter().map(|s| &s.value) {
        let name = &s.name.value;
        let Some(st) = observed.shards.get(name) else {
            continue;
        };
        let backend = medic_plan::vars::proxy_backend(top, name);
        for sv in servers.iter().filter(|x| x.backend == backend) {
            let server = ServerRef {
                backend: backend.clone(),
                server: sv.server.clone(),
            };
            let is_master = sv.server == st.master;
            let sure = master_up(name);
            if !is_master && sv.is_ready() && sure {
                fences.push(Action::FenceServer {
                    proxy: proxy.clone(),
                    server: server.clone(),
                    wait_sessions: false,
                });
            }
            // (Not in an adopted deployment: medic moves no machine there, and the operator's
            // proxies may reach the servers at addresses of their own.)
            if let Some(ip) = observed.address(&sv.server).filter(|_| top.managed())
                && (sv.addr.parse::<IpAddr>().ok() != Some(ip) || sv.port != s.port.value)
            {
                addresses.push(Action::SetServerAddress {
                    proxy: proxy.clone(),
                    server: server.clone(),
                    address: Addr::Ip(ip),
                    port: s.port.value,
                });
            }
            if is_master && !sv.is_ready() && sure {
                activations.push(Action::ActivateServer {
                    proxy: proxy.clone(),
                    server,
                });
            }
        }
    }
    fences.extend(addresses);
    fences.extend(activations);
    fences
}

/// The server a runtime change acts on.
fn changed_server(a: &Action) -> Option<&ServerRef> {
    match a {
        Action::FenceServer { server, .. }
        | Action::ActivateServer { server, .. }
        | Action::SetServerAddress { server, .. } => Some(server),
        _ => None,
    }
}

/// An operator's maintenance: not touched at all.
fn st_maintenance(st: &std::sync::Mutex<super::St>, machine: &str) -> bool {
    lock(st).core.saved.maintenance.contains(machine)
}

/// The changes that bring one app proxy's backends back to the proxies it may use: every proxy
/// that `proxy_up` (its checks say it answers, and no recovery holds it) and that the app
/// proxy keeps in maintenance is made `ready` again — a recovery that fenced it and then
/// stopped (its machine answered again), or an activation skipped while the app proxy could
/// not be reached. Nothing is fenced here: taking a proxy out is a recovery's decision.
pub fn app_repairs(
    top: &Topology,
    app: &ProxyApi,
    servers: &[ServerState],
    proxy_up: impl Fn(&str) -> bool,
) -> Vec<Action> {
    let mut out = Vec::new();
    for a in top.app_proxies.iter().map(|a| &a.value) {
        if a.machine.value != app.machine {
            continue;
        }
        for f in a.frontends.iter().map(|f| &f.value) {
            let backend = medic_plan::vars::app_backend(top, &a.machine.value, &f.shard.value);
            for sv in servers.iter().filter(|x| x.backend == backend) {
                let configured = sv.server == a.primary.value || sv.server == a.backup.value;
                if configured && !sv.is_ready() && proxy_up(&sv.server) {
                    out.push(Action::ActivateServer {
                        proxy: app.clone(),
                        server: ServerRef {
                            backend: backend.clone(),
                            server: sv.server.clone(),
                        },
                    });
                }
            }
        }
    }
    out
}

impl<C: Cloud + 'static, D: Dns + 'static> Controller<C, D> {
    /// Reads every proxy's routing every [`RECONCILE_EVERY`] (for the status) and repairs what
    /// differs from the intended one — never while a recovery runs (it makes its own changes).
    pub(super) async fn reconcile_proxies(&self) {
        let mut round = 0;
        loop {
            self.reconcile_once().await;
            self.probe_writes(round).await;
            round += 1;
            // (Also the clock for the core's timed decisions: a failed recovery's retry.)
            self.kick();
            tokio::time::sleep(RECONCILE_EVERY).await;
        }
    }

    /// Every server of the HAProxy on `machine`, as its runtime API says within
    /// [`READ_WITHIN`] (reaching it included); `None` if it does not.
    async fn read_proxy(
        &self,
        top: &Topology,
        machine: &str,
        ip: std::net::IpAddr,
        port: Option<u16>,
    ) -> Option<Vec<ServerState>> {
        let read = async {
            let mut api = medic_exec::proxy_api(&self.inner.ssh, top, machine, ip, port).await?;
            api.timeout = READ_WITHIN;
            api.servers(None).await
        };
        tokio::time::timeout(READ_WITHIN, read).await.ok()?.ok()
    }

    async fn reconcile_once(&self) {
        let loaded = self.top();
        let top = &loaded.topology;
        let port = top.proxies.value.runtime_api.value.tcp_port();
        let (observed, proxies_up) = {
            let st = lock(&self.inner.st);
            (st.core.saved.observed.clone(), st.core.proxies_up())
        };
        for machine in top.proxy_machines() {
            // (A proxy a recovery took out of monitoring is still repaired if it answers: a
            // proxy that routes wrongly is a danger whether or not medic watches it.)
            if st_maintenance(&self.inner.st, machine) {
                continue;
            }
            let Some(ip) = observed.address(machine) else {
                continue;
            };
            let Some(servers) = self.read_proxy(top, machine, ip, port).await else {
                continue;
            };
            // A backend unlike the topology's is never repaired: medic's names would miss.
            let unlike = super::layout::mismatches(top, machine, &servers);
            self.tell_layout(machine, &unlike);
            // What the routing should be is taken under the same lock as the idle check: a
            // recovery that ran while the proxies were read has changed it.
            let now = {
                let mut st = lock(&self.inner.st);
                let reading = Routing::of(&servers, crate::journal::now_ms());
                st.routing.insert(machine.to_owned(), reading);
                let missing = super::layout::missing(top, &observed, &servers);
                if st.core.set_missing_on(machine, missing) {
                    self.save(&st);
                }
                st.core.idle().then(|| {
                    (
                        st.core.saved.observed.clone(),
                        st.core.masters_up(),
                        st.core.service_machines_up(),
                    )
                })
            };
            let Some((observed, up, services_up)) = now else {
                continue;
            };
            self.write_owed(machine, ip, port, &servers).await;
            let proxy = ProxyApi {
                machine: machine.to_owned(),
                address: Addr::Ip(ip),
                port,
            };
            let fixes: Vec<Action> = super::merged(
                repairs(top, &observed, &proxy, &servers, |s| {
                    up.iter().any(|u| u == s)
                }),
                super::service_repairs(top, &observed, &proxy, &servers, |s, m| {
                    services_up.iter().any(|(us, um)| us == s && um == m)
                }),
            )
            .into_iter()
            .filter(|a| {
                !changed_server(a)
                    .is_some_and(|s| unlike.iter().any(|u| u.blocks && u.backend == s.backend))
            })
            .collect();
            if !fixes.is_empty() {
                self.repair(machine, fixes).await;
            }
        }
        for a in top.app_proxies.iter().map(|a| &a.value) {
            let machine = a.machine.value.as_str();
            if st_maintenance(&self.inner.st, machine) || !lock(&self.inner.st).core.idle() {
                continue;
            }
            let Some(ip) = observed.address(machine) else {
                continue;
            };
            let port = a.runtime_api.value.tcp_port();
            let Some(servers) = self.read_proxy(top, machine, ip, port).await else {
                continue;
            };
            let unlike = super::layout::mismatches(top, machine, &servers);
            self.tell_layout(machine, &unlike);
            self.write_owed(machine, ip, port, &servers).await;
            let app = ProxyApi {
                machine: machine.to_owned(),
                address: Addr::Ip(ip),
                port,
            };
            let fixes: Vec<Action> =
                app_repairs(top, &app, &servers, |p| proxies_up.iter().any(|u| u == p))
                    .into_iter()
                    .filter(|a| {
                        !changed_server(a).is_some_and(|s| {
                            unlike.iter().any(|u| u.blocks && u.backend == s.backend)
                        })
                    })
                    .collect();
            if !fixes.is_empty() {
                self.repair(machine, fixes).await;
            }
        }
    }

    /// A critical alert for each backend of `machine` newly found unlike the topology's
    /// (`layout`); one corrected and then broken again is told again.
    fn tell_layout(&self, machine: &str, unlike: &[super::layout::Mismatch]) {
        let now: std::collections::BTreeSet<String> =
            unlike.iter().map(|u| u.message.clone()).collect();
        let told = lock(&self.inner.st)
            .layout_told
            .insert(machine.to_owned(), now)
            .unwrap_or_default();
        for u in unlike.iter().filter(|u| !told.contains(&u.message)) {
            if u.blocks {
                tracing::error!(proxy = %machine, "{}", u.message);
                self.alert(AlertLevel::Critical, u.message.clone());
            } else {
                tracing::warn!(proxy = %machine, "{}", u.message);
                self.alert(AlertLevel::Warning, u.message.clone());
            }
        }
    }

    /// An executor for the reconcile's own changes (no DNS, no recovery's state).
    fn repairer<'a>(
        &'a self,
        topology: &'a Topology,
        playbooks: &'a medic_playbook::Playbooks,
    ) -> medic_exec::Executor<'a, C, D> {
        medic_exec::Executor {
            topology,
            cloud: &self.inner.cloud,
            dns: self.inner.dns.as_ref(),
            skip_dns: true,
            ssh: &self.inner.ssh,
            playbooks,
            secrets: &self.inner.secrets,
            addresses: Default::default(),
            redis: self.inner.redis.clone(),
            unfenced: medic_exec::Unfenced::default(),
        }
    }

    /// Writes the haproxy.cfg lines owed on `machine` (a write that failed after a runtime
    /// change) as its runtime says now (`servers`, just read): in maintenance or not, and
    /// where. Forgotten once written.
    async fn write_owed(
        &self,
        machine: &str,
        ip: IpAddr,
        port: Option<u16>,
        servers: &[ServerState],
    ) {
        if !self.top().topology.managed() {
            return;
        }
        let owed = match lock(&self.inner.st).owed_writes.get(machine) {
            Some(o) if !o.is_empty() => o.clone(),
            _ => return,
        };
        if !self.may_act() {
            return;
        }
        let lines: Vec<ServerPersist> = servers
            .iter()
            .filter_map(|sv| {
                let server = ServerRef {
                    backend: sv.backend.clone(),
                    server: sv.server.clone(),
                };
                let at: IpAddr = sv.addr.parse().ok()?;
                owed.contains(&server).then(|| ServerPersist {
                    server,
                    enabled: Some(!sv.in_maint()),
                    address: Some(Addr::Ip(at)),
                    port: Some(sv.port),
                })
            })
            .collect();
        let loaded = self.top();
        let playbooks = read(&self.inner.playbooks).clone();
        let mut exec = self.repairer(&loaded.topology, &playbooks);
        let step = Step {
            index: 0,
            action: Action::PersistProxyConfig {
                proxy: ProxyApi {
                    machine: machine.to_owned(),
                    address: Addr::Ip(ip),
                    port,
                },
                servers: lines,
            },
        };
        match exec.execute(&step).await {
            Ok(d) if d.output.skipped.is_none() => {
                tracing::info!(proxy = %machine, "Owed haproxy.cfg lines written: {}", d.summary);
                lock(&self.inner.st).owed_writes.remove(machine);
            }
            Ok(d) => tracing::warn!(proxy = %machine, "{}", d.summary),
            Err(e) => {
                tracing::warn!(proxy = %machine, error = %e, "Owed haproxy.cfg lines not written.")
            }
        }
    }

    /// Runs the repairs of one proxy through the executor (read back, persisted).
    async fn repair(&self, machine: &str, fixes: Vec<Action>) {
        // In a group only the leader changes a proxy (a follower reads, for its status).
        if !self.may_act() {
            return;
        }
        let loaded = self.top();
        let playbooks = read(&self.inner.playbooks).clone();
        let mut exec = self.repairer(&loaded.topology, &playbooks);
        let mut done = Vec::new();
        let mut failed = None;
        let mut applied = Vec::new();
        for action in fixes {
            let view = medic_plan::describe::describe(
                &Step {
                    index: 0,
                    action: action.clone(),
                },
                &playbooks,
            );
            match exec
                .execute(&Step {
                    index: 0,
                    action: action.clone(),
                })
                .await
            {
                Ok(d) if d.output.skipped.is_none() => {
                    done.push(format!("{} {}", action.kind(), view.target));
                    applied.push(action);
                }
                Ok(d) => {
                    failed = Some(d.summary);
                    break;
                }
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        // What was changed is then written into haproxy.cfg, so a reload keeps it (or, if
        // that fails, by a later round: `write_owed`). Not in an adopted deployment, whose
        // haproxy.cfg is the operator's: there this repair is made again after a reload.
        let writes = if loaded.topology.managed() {
            medic_plan::persisting(&applied)
        } else {
            Vec::new()
        };
        for write in writes {
            let step = Step {
                index: 0,
                action: write,
            };
            match exec.execute(&step).await {
                Ok(d) if d.output.skipped.is_none() => {}
                Ok(d) => {
                    self.owe_write(&step.action);
                    failed.get_or_insert(d.summary);
                }
                Err(e) => {
                    self.owe_write(&step.action);
                    failed.get_or_insert(e.to_string());
                }
            }
        }
        *lock(&self.inner.st)
            .metrics
            .repairs
            .entry((
                machine.to_owned(),
                if failed.is_none() {
                    "repaired"
                } else {
                    "failed"
                },
            ))
            .or_default() += 1;
        let message = match failed {
            None => format!(
                "{machine} did not route as intended; repaired: {}",
                done.join(", ")
            ),
            Some(e) => format!(
                "{machine} does not route as intended; repaired {} of it, then: {e}",
                if done.is_empty() {
                    "none".to_owned()
                } else {
                    done.join(", ")
                }
            ),
        };
        tracing::warn!(proxy = %machine, "{message}");
        self.alert(AlertLevel::Warning, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medic_haproxy::OpState;

    fn lab() -> (Topology, ObservedState) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lab.yaml");
        let loaded = medic_topology::load_topology(&path).expect("examples/lab.yaml loads");
        let mut observed = ObservedState::assumed(&loaded.topology);
        for (m, last) in [("redis1", 10), ("redis2", 11)] {
            if let Some(s) = observed.machines.get_mut(m) {
                s.address = Some(IpAddr::from([10, 77, 0, last]));
            }
        }
        (loaded.topology, observed)
    }

    fn server(backend: &str, name: &str, addr: &str, port: u16, maint: bool) -> ServerState {
        ServerState {
            backend: backend.to_owned(),
            server: name.to_owned(),
            addr: addr.to_owned(),
            port,
            op_state: OpState::Running,
            admin_state: u32::from(maint),
        }
    }

    fn proxy() -> ProxyApi {
        ProxyApi {
            machine: "haproxy2".into(),
            address: Addr::Ip(IpAddr::from([10, 77, 0, 13])),
            port: Some(9999),
        }
    }

    #[test]
    fn the_intended_routing_needs_nothing() {
        let (top, obs) = lab();
        let servers = [
            server("redis-r9001", "redis1", "10.77.0.10", 9001, false),
            server("redis-r9001", "redis2", "10.77.0.11", 9001, true),
            server("redis-r9002", "redis1", "10.77.0.10", 9002, false),
            server("redis-r9002", "redis2", "10.77.0.11", 9002, true),
        ];
        assert_eq!(repairs(&top, &obs, &proxy(), &servers, |_| true), []);
    }

    /// A proxy that missed a failover of r9001 to redis2 and redis1's replacement at .15:
    /// the old master fenced first, its new address set, then redis2 let in.
    #[test]
    fn a_proxy_that_missed_a_recovery_is_fenced_first_then_pointed_then_activated() {
        let (top, mut obs) = lab();
        if let Some(s) = obs.shards.get_mut("r9001") {
            s.master = "redis2".into();
        }
        if let Some(m) = obs.machines.get_mut("redis1") {
            m.address = Some(IpAddr::from([10, 77, 0, 15]));
        }
        let servers = [
            server("redis-r9001", "redis1", "10.77.0.10", 9001, false),
            server("redis-r9001", "redis2", "10.77.0.11", 9001, true),
        ];
        let kinds: Vec<String> = repairs(&top, &obs, &proxy(), &servers, |_| true)
            .iter()
            .map(|a| match a {
                Action::FenceServer { server, .. } => format!("fence {}", server.server),
                Action::SetServerAddress {
                    server, address, ..
                } => format!("address {} {address}", server.server),
                Action::ActivateServer { server, .. } => format!("activate {}", server.server),
                other => other.kind().to_owned(),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "fence redis1",
                "address redis1 10.77.0.15",
                "activate redis2"
            ]
        );
        // A master whose own check does not see it up (as master) is not let in, and no
        // other server is fenced for it: only the address is corrected.
        let unsure = repairs(&top, &obs, &proxy(), &servers, |_| false);
        assert!(
            unsure
                .iter()
                .all(|a| matches!(a, Action::SetServerAddress { .. })),
            "{unsure:?}"
        );
    }

    /// An app proxy that keeps a proxy in maintenance (a recovery fenced it, then stopped at
    /// its last look; or its activation was skipped): let back in only while that proxy
    /// answers; never fenced here.
    #[test]
    fn an_app_proxy_lets_back_in_only_the_proxies_that_answer() {
        let (top, _) = lab();
        let app = ProxyApi {
            machine: "app".into(),
            address: Addr::Ip(IpAddr::from([10, 77, 0, 14])),
            port: Some(9998),
        };
        let servers = [
            server("app-r9001", "haproxy1", "10.77.0.12", 8001, true),
            server("app-r9001", "haproxy2", "10.77.0.13", 8001, true),
            server("app-r9002", "haproxy1", "10.77.0.12", 8002, false),
            server("app-r9002", "haproxy2", "10.77.0.13", 8002, false),
        ];
        let activated: Vec<String> = app_repairs(&top, &app, &servers, |p| p == "haproxy1")
            .iter()
            .map(|a| match a {
                Action::ActivateServer { server, .. } => {
                    format!("{}/{}", server.backend, server.server)
                }
                other => other.kind().to_owned(),
            })
            .collect();
        assert_eq!(activated, ["app-r9001/haproxy1"]);
        assert_eq!(app_repairs(&top, &app, &servers, |_| false), []);
    }
}
