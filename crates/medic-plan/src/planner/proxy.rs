//! The plans of a HAProxy, app or proxy machine lost, and of a first start (bootstrap).

use std::collections::BTreeMap;

use medic_topology::{Role, Shard};

use super::Planner;
use crate::step::*;
use crate::vars::{self, ServerRole, addr_of};

impl<'a> Planner<'a> {
    pub(super) fn haproxy_lost(&mut self, machine: &str) {
        let target = MonitorTarget::Machine {
            machine: machine.to_owned(),
        };
        self.push(Action::Unmonitor {
            target: target.clone(),
        });
        // Every app proxy stops sending to it now, rather than after its own checks fail.
        let apps = self.app_proxies_using(machine);
        for (api, backend, _) in &apps {
            let server = ServerRef {
                backend: backend.clone(),
                server: machine.to_owned(),
            };
            // A lost proxy's sessions hang on a silent peer: do not wait for them.
            self.push(Action::FenceServer {
                proxy: api.clone(),
                server,
                wait_sessions: false,
            });
        }
        if !self.may_replace(machine, "clients go through the remaining proxies") {
            return;
        }
        let address = self.replace(machine);
        let masters: BTreeMap<String, String> = self
            .state
            .shards
            .iter()
            .map(|(k, v)| (k.clone(), v.master.clone()))
            .collect();
        let vars = vars::haproxy_vars(self.top, self.state, machine, &address, &masters);
        self.push(Action::RunPlaybook {
            machine: machine.to_owned(),
            address: address.clone(),
            playbook: "haproxy".into(),
            vars,
        });
        self.update_dns(machine, &address);
        for (api, backend, port) in &apps {
            let server = ServerRef {
                backend: backend.clone(),
                server: machine.to_owned(),
            };
            self.push(Action::SetServerAddress {
                proxy: api.clone(),
                server: server.clone(),
                address: address.clone(),
                port: *port,
            });
            self.push(Action::ActivateServer {
                proxy: api.clone(),
                server,
            });
        }
        self.push(Action::Monitor { target });
    }

    /// (app proxy API, backend, proxy port) for every app backend with a server on `proxy`.
    fn app_proxies_using(&self, proxy: &str) -> Vec<(ProxyApi, String, u16)> {
        let mut out = Vec::new();
        for app in self.top.app_proxies.iter().map(|a| &a.value) {
            if app.primary.value != proxy && app.backup.value != proxy {
                continue;
            }
            let api = ProxyApi {
                machine: app.machine.value.clone(),
                address: addr_of(self.state, &app.machine.value),
                port: app.runtime_api.value.tcp_port(),
            };
            for f in &app.frontends {
                let shard = &f.value.shard.value;
                if let Some(port) = vars::proxy_port(self.top, shard) {
                    out.push((
                        api.clone(),
                        vars::app_backend(self.top, &app.machine.value, shard),
                        port,
                    ));
                }
            }
        }
        out
    }

    /// Every machine launched and configured through the same steps a replacement takes:
    /// redis machines first (masters as masters), then the services' machines (a proxy routes
    /// to them), then proxies, then app proxies.
    pub(super) fn bootstrap(&mut self) {
        let top = self.top;
        if !top.managed() {
            self.alert(
                AlertLevel::Critical,
                "medic sets up nothing in a deployment it adopted (managed: false): its machines, configs and processes are the operator's".to_owned(),
            );
            return;
        }
        for role in [Role::Redis, Role::Service, Role::Haproxy, Role::App] {
            let names: Vec<String> = top
                .machines
                .iter()
                .map(|m| &m.value)
                .filter(|m| m.role.value == role)
                .map(|m| m.name.value.clone())
                .collect();
            for machine in names {
                let address = self.launch(&machine);
                let vars = match role {
                    Role::Redis => {
                        let servers: Vec<(&Shard, ServerRole)> = top
                            .shards_on(&machine)
                            .map(|s| {
                                let role = if s.master.value == machine {
                                    ServerRole::Master
                                } else {
                                    ServerRole::ReplicaOf {
                                        machine: s.master.value.clone(),
                                    }
                                };
                                (s, role)
                            })
                            .collect();
                        Some((
                            "redis",
                            vars::redis_vars(top, self.state, &machine, &address, &servers),
                        ))
                    }
                    Role::Haproxy => {
                        let masters = top
                            .shards
                            .iter()
                            .map(|s| (s.value.name.value.clone(), s.value.master.value.clone()))
                            .collect();
                        Some((
                            "haproxy",
                            vars::haproxy_vars(top, self.state, &machine, &address, &masters),
                        ))
                    }
                    Role::App => vars::app_proxy_vars(top, self.state, &machine, &address)
                        .map(|v| ("app-proxy", v)),
                    Role::Monitor | Role::Service => None,
                };
                if let Some((playbook, vars)) = vars {
                    self.push(Action::RunPlaybook {
                        machine: machine.clone(),
                        address: address.clone(),
                        playbook: playbook.into(),
                        vars,
                    });
                }
                self.update_dns(&machine, &address);
                self.push(Action::Monitor {
                    target: MonitorTarget::Machine { machine },
                });
            }
        }
        for s in &top.services {
            let s = &s.value;
            let primary = Addr::Of(s.primary.value.clone());
            self.service_address(s, &s.primary.value, true, false);
            self.service_dns(s, &primary);
        }
    }

    pub(super) fn app_lost(&mut self, machine: &str) {
        let target = MonitorTarget::Machine {
            machine: machine.to_owned(),
        };
        self.push(Action::Unmonitor {
            target: target.clone(),
        });
        if !self.may_replace(machine, "its clients have no proxy") {
            return;
        }
        let address = self.replace(machine);
        if let Some(vars) = vars::app_proxy_vars(self.top, self.state, machine, &address) {
            self.push(Action::RunPlaybook {
                machine: machine.to_owned(),
                address: address.clone(),
                playbook: "app-proxy".into(),
                vars,
            });
        }
        self.update_dns(machine, &address);
        self.push(Action::Monitor { target });
    }
}
