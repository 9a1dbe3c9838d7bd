//! The controller's adapters in the simulation: the witnesses' answers, start-up discovery
//! after a restart, and the reconcile (the real `repairs` against the world's proxies).

use std::net::IpAddr;

use medic_controller::checks::Target;
use medic_controller::core::{Core, LastLook};
use medic_detect::{Observation, Seen};
use medic_haproxy::{OpState, ServerState};
use medic_plan::{Addr, ProxyApi, Step};

use super::{Journaled, Sim};
use crate::exec::{SimExec, execute};
use crate::world::Admin;

impl Sim {
    /// What each configured observer of `target`'s machine says (the real observer list).
    pub(super) fn witnesses(
        &self,
        target: &Target,
        knock: bool,
    ) -> (medic_detect::Witnesses, bool) {
        let top = &self.loaded.topology;
        let observed = &self.core.saved.observed;
        let ip = observed
            .address(target.machine())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let asks = medic_controller::witness::observers(top, observed, target, ip);
        let seen: Vec<Option<bool>> = asks
            .iter()
            .map(|a| {
                match if knock {
                    self.world.knock(&a.observer, target.machine())
                } else {
                    self.world.witness(&a.observer, target.machine())
                } {
                    Seen::Up => Some(true),
                    Seen::Gone => Some(false),
                    Seen::Unknown => None,
                }
            })
            .collect();
        let first_hand = seen.iter().all(Option::is_some);
        (medic_controller::witness::merge(&asks, &seen), first_hand)
    }

    /// The last look's second opinion: what `look.machine`'s observers see now, by the
    /// controller's rule (the simulated observers always answer first-hand, as the controller
    /// asks them here).
    pub(super) fn seen_by_observers(&self, look: &LastLook) -> bool {
        medic_controller::checks::target_of(&self.loaded.topology, &look.machine).is_some_and(|t| {
            medic_controller::witness::holds_back(&self.witnesses(&t, false).0, look.terminate)
        })
    }

    /// The controller process dies and starts again: everything in memory is gone; the saved
    /// state and the journal stay.
    pub(super) fn restart_controller(&mut self) {
        self.runners.clear();
        self.asks.clear();
        self.core = Core::new(self.loaded.clone(), self.persisted.clone());
        self.discover();
        let open: Vec<Journaled> = self
            .journal
            .values()
            .filter(|j| !j.ended)
            .cloned()
            .collect();
        for j in open {
            self.core.resume(
                j.resume,
                j.trigger,
                j.first_failure_ms,
                j.master_last_ok_ms,
                self.now,
            );
        }
        self.persisted = self.core.saved.clone();
    }

    /// Start-up discovery, as the controller does it: each machine's newest running instance
    /// from the cloud; roles as recorded.
    pub(super) fn discover(&mut self) {
        for m in self.world.machines() {
            if let Some(i) = self
                .world
                .instance(&m)
                .filter(|i| i.state == crate::world::InstanceState::Running)
            {
                let st = self
                    .core
                    .saved
                    .observed
                    .machines
                    .entry(m.clone())
                    .or_insert(medic_plan::MachineState {
                        address: None,
                        instance_id: None,
                    });
                st.address = Some(i.address);
                st.instance_id = Some(i.id.clone());
            }
        }
        self.persisted = self.core.saved.clone();
    }

    /// The controller's reconcile: each proxy the monitor reaches is read and repaired with
    /// the real `repairs`.
    pub(super) fn reconcile(&mut self) {
        let top = self.loaded.topology.clone();
        let port = top.proxies.value.runtime_api.value.tcp_port();
        let observed = self.core.saved.observed.clone();
        let (up, proxies_up) = (self.core.masters_up(), self.core.proxies_up());
        let mut apis: Vec<(String, Option<u16>, bool)> = top
            .proxy_machines()
            .map(|m| (m.to_owned(), port, false))
            .collect();
        apis.extend(top.app_proxies.iter().map(|a| {
            (
                a.value.machine.value.clone(),
                a.value.runtime_api.value.tcp_port(),
                true,
            )
        }));
        for (machine, port, is_app) in apis {
            if self.core.saved.maintenance.contains(&machine)
                || self.world.check_proxy(&machine) != Observation::Ok
            {
                continue;
            }
            let (Some(ip), Some(servers)) = (observed.address(&machine), self.servers_of(&machine))
            else {
                continue;
            };
            let api = ProxyApi {
                machine: machine.clone(),
                address: Addr::Ip(ip),
                port,
            };
            let fixes = if is_app {
                medic_controller::controller::app_repairs(&top, &api, &servers, |p| {
                    proxies_up.iter().any(|u| u == p)
                })
            } else {
                // What this proxy has no server for, as the controller's reconcile records it.
                let missing =
                    medic_controller::controller::missing_servers(&top, &observed, &servers);
                if self.core.set_missing_on(&machine, missing) {
                    self.persisted = self.core.saved.clone();
                }
                medic_controller::controller::repairs(&top, &observed, &api, &servers, |s| {
                    up.iter().any(|u| u == s)
                })
            };
            let mut exec = SimExec::default();
            let addresses = self.world.addresses();
            for (i, action) in fixes.into_iter().enumerate() {
                let step = Step {
                    index: i + 1,
                    action,
                };
                let r = execute(&mut self.world, &mut exec, &addresses, &step, self.now);
                self.note(format!(
                    "reconcile {machine}: {} {}",
                    step.action.kind(),
                    if r.is_ok() { "done" } else { "failed" }
                ));
            }
        }
    }

    /// A proxy's `show servers state`, as HAProxy would answer it.
    fn servers_of(&self, machine: &str) -> Option<Vec<ServerState>> {
        let proxy = self.world.instance(machine)?.proxy.as_ref()?;
        Some(
            proxy
                .backends
                .iter()
                .flat_map(|(b, lines)| lines.iter().map(move |l| (b, l)))
                .map(|(b, l)| ServerState {
                    backend: b.clone(),
                    server: l.name.clone(),
                    addr: l.addr.to_string(),
                    port: l.port,
                    op_state: OpState::Running,
                    admin_state: if l.admin == Admin::Maint {
                        medic_haproxy::parse::admin::FMAINT
                    } else {
                        0
                    },
                })
                .collect(),
        )
    }

    /// The last look: does any of `machine`'s targets answer the monitor host now?
    pub(super) fn answers(&self, machine: &str) -> bool {
        let redis = self
            .world
            .shards
            .iter()
            .filter(|(_, l)| l.machines.iter().any(|m| m == machine))
            .any(|(shard, _)| self.world.check_redis(shard, machine).0 == Observation::Ok);
        let proxy = self.world.proxies().iter().any(|p| p == machine)
            || self
                .loaded
                .topology
                .app_proxies
                .iter()
                .any(|a| a.value.machine.value == machine);
        redis || (proxy && self.world.check_proxy(machine) == Observation::Ok)
    }
}
