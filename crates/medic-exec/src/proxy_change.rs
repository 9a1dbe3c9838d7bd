//! A HAProxy runtime change (a fence, an activation, an address), made through the proxy's
//! runtime API and read back; a proxy that does not answer is skipped, and a skipped fence
//! remembered (module `fence`).

use std::net::SocketAddr;

use medic_cloud::{Cloud, Dns};
use medic_haproxy::{AdminState, HaproxyError, ProxyApi as _, RuntimeApi};
use medic_plan::{ProxyApi, ServerRef};

use crate::{ExecError, Executor, RUNTIME_API_TIMEOUT, SUSPECT_WITHIN, proxy_api};

/// A runtime API change (a later `PersistProxyConfig` step writes it into haproxy.cfg).
#[derive(Debug, Clone, Copy)]
pub(crate) enum ProxyChange {
    /// Maintenance and sessions shut; `true`: wait until none is left.
    Fence(bool),
    Activate,
    Address(SocketAddr),
}

impl<C: Cloud, D: Dns> Executor<'_, C, D> {
    /// `change` through `api`; `lingering` says what a fence found still closing.
    async fn change_through(
        &self,
        api: &RuntimeApi,
        server: &ServerRef,
        change: ProxyChange,
        lingering: &mut Option<String>,
    ) -> Result<(), HaproxyError> {
        match change {
            ProxyChange::Fence(false) => match api.set_state(server, AdminState::Maint).await {
                Ok(()) => {
                    // HAProxy answers `shutdown sessions` only once the streams are gone (a
                    // held client's takes ~200 ms). Nothing waits for it here: the old master
                    // holds every write and becomes a replica before it lets them go.
                    let command =
                        medic_haproxy::cmd::shutdown_sessions(&api.aliases.to_haproxy(server));
                    let api = api.clone();
                    tokio::spawn(async move {
                        match api.send(&command).await {
                            Err(e) => tracing::warn!(error = %e, "shutdown sessions"),
                            // HAProxy answers nothing when it took the command.
                            Ok(reply) if !reply.trim().is_empty() => tracing::warn!(
                                %command,
                                reply = %reply.trim(),
                                "shutdown sessions refused"
                            ),
                            Ok(_) => {}
                        }
                    });
                    Ok(())
                }
                Err(e) => Err(e),
            },
            ProxyChange::Fence(true) => match api.set_state(server, AdminState::Maint).await {
                Ok(()) => match api.shutdown_sessions(server).await {
                    // In maintenance (read back), HAProxy sends it nothing new; a session that
                    // outlives the shutdown is one still connecting to a silent server, which
                    // can deliver nothing. Say so rather than fail the failover over it.
                    Err(HaproxyError::NotApplied { found, .. }) => {
                        *lingering = Some(found);
                        Ok(())
                    }
                    other => other,
                },
                Err(e) => Err(e),
            },
            ProxyChange::Activate => api.set_state(server, AdminState::Ready).await,
            ProxyChange::Address(to) => api.set_addr(server, to.ip(), to.port()).await,
        }
    }

    /// One HAProxy change through the runtime API, read back.
    pub(crate) async fn proxy_change(
        &mut self,
        index: usize,
        kind: &'static str,
        proxy: &ProxyApi,
        server: &ServerRef,
        change: ProxyChange,
    ) -> Result<(String, bool), ExecError> {
        // Where the API is comes from the topology as it is now (a journaled step carries the
        // port of its time), for the messages as for reaching it.
        let now = ProxyApi {
            port: self
                .topology
                .runtime_api_of(&proxy.machine)
                .map_or(proxy.port, |a| a.tcp_port()),
            ..proxy.clone()
        };
        let proxy = &now;
        let ip = self.resolve(index, kind, &proxy.address)?;
        if self.unfenced.unreachable.contains(&proxy.machine) {
            return Ok((
                format!(
                    "{}: skipped, its runtime API at {} does not answer (an earlier step of this recovery found so)",
                    proxy.machine,
                    proxy.at(ip)
                ),
                true,
            ));
        }
        let haproxy_err = |source| ExecError::Haproxy {
            index,
            kind,
            source: Box::new(source),
        };
        let mut lingering = None;
        // A proxy the checks see down is tried all the same, only not for as long.
        let suspect = self.unfenced.suspect.contains(&proxy.machine);
        let (reach_within, command_within) = if suspect {
            (SUSPECT_WITHIN * 2, SUSPECT_WITHIN)
        } else {
            (RUNTIME_API_TIMEOUT * 4, RUNTIME_API_TIMEOUT)
        };
        let api = match tokio::time::timeout(
            reach_within,
            proxy_api(self.ssh, self.topology, &proxy.machine, ip, proxy.port),
        )
        .await
        {
            Ok(api) => api,
            Err(_) => Err(HaproxyError::Timeout {
                endpoint: proxy.port.map_or_else(
                    || medic_haproxy::Endpoint::Unix("its admin socket".into()),
                    |p| medic_haproxy::Endpoint::Tcp(SocketAddr::new(ip, p)),
                ),
                command: "reaching the runtime API over SSH".to_owned(),
                after: reach_within,
            }),
        };
        // (With a missing service backend: whether any backend of the proxy still has the
        // fenced machine's server ready, which would send clients to it under another name.)
        let mut routed_elsewhere = None;
        let result = match api {
            Err(e) => Err(e),
            Ok(mut api) => {
                api.timeout = command_within;
                let r = self
                    .change_through(&api, server, change, &mut lingering)
                    .await;
                if let Err(HaproxyError::Rejected { message, .. }) = &r
                    && message.starts_with("No such")
                    && matches!(change, ProxyChange::Fence(_))
                {
                    // (Another shard's or service's own backend is not this one renamed.)
                    let known = |b: &str| known_backend(self.topology, b);
                    routed_elsewhere = Some(match api.servers(None).await {
                        Ok(all) => all
                            .iter()
                            .filter(|s| {
                                s.server == server.server && s.is_ready() && !known(&s.backend)
                            })
                            .map(|s| s.backend.clone())
                            .collect::<Vec<_>>(),
                        // Unknown: not taken for a fence that holds.
                        Err(e) => vec![format!("(its servers could not be read: {e})")],
                    });
                }
                r
            }
        };
        self.unfenced.suspect.remove(&proxy.machine);
        match result {
            Ok(()) => {}
            // A proxy whose haproxy.cfg predates the topology (reloaded since with a service's
            // `proxy`, or a shard's new replica) has no backend or no server for it: it sends
            // no client there, so a fence holds; an activation cannot be made (skipped: the
            // recovery ends incomplete, and the planner said so when it chose the server)
            // until the proxy is configured again.
            // (Not in a deployment medic adopted: there the operator's haproxy.cfg is
            // expected to have every backend and server, and a name that misses is a fence
            // not made.) And only while no other backend of the proxy has that machine's
            // server ready (a backend renamed in the topology since the proxy was configured).
            Err(HaproxyError::Rejected { message, .. })
                if self.topology.managed()
                    && known_backend(self.topology, &server.backend)
                    && message.starts_with("No such")
                    && routed_elsewhere.as_ref().is_none_or(Vec::is_empty) =>
            {
                let fence = matches!(change, ProxyChange::Fence(_));
                return Ok((
                    format!(
                        "{}: has no {server} ({message:?}): it routes no client there — its haproxy.cfg predates the topology; `medic recover {}` configures it{}",
                        proxy.machine,
                        proxy.machine,
                        if fence {
                            "; nothing to fence there"
                        } else {
                            ""
                        }
                    ),
                    !fence,
                ));
            }
            // A proxy that does not answer is down: it is replaced and configured from the
            // current state, so the recovery goes on without it.
            // (Over SSH, a forwarded connection the machine refused comes back as a closed or
            // broken reply: the API cannot be asked either.)
            Err(
                e @ (HaproxyError::Connect { .. }
                | HaproxyError::Timeout { .. }
                | HaproxyError::Io {
                    endpoint: medic_haproxy::Endpoint::Unix(_),
                    ..
                }),
            ) => {
                tracing::warn!(
                    step = index,
                    proxy = %proxy.machine,
                    server = %server,
                    error = %e,
                    "HAProxy runtime API does not answer; skipped."
                );
                self.unfenced.unreachable.insert(proxy.machine.clone());
                return Ok((
                    format!(
                        "{}: skipped, its runtime API at {} does not answer",
                        proxy.machine,
                        proxy.at(ip)
                    ),
                    true,
                ));
            }
            Err(e) => return Err(haproxy_err(e)),
        }
        // (haproxy.cfg is written by a later step, once the traffic has moved.)
        let summary = format!(
            "{}: {} {}",
            proxy.machine,
            server,
            match (change, lingering) {
                (ProxyChange::Fence(_), Some(found)) => format!(
                    "in maintenance, sessions shut ({found} still closing: connections to a silent server)"
                ),
                (ProxyChange::Fence(true), None) => "in maintenance, sessions shut".to_owned(),
                (ProxyChange::Fence(false), None) => {
                    "in maintenance, sessions being shut".to_owned()
                }
                (ProxyChange::Activate, _) => "ready".to_owned(),
                (ProxyChange::Address(to), _) => format!("at {to}"),
            }
        );
        Ok((summary, false))
    }
}

/// A backend the topology routes a shard or a service through.
fn known_backend(top: &medic_topology::Topology, backend: &str) -> bool {
    top.service_of_backend(backend).is_some()
        || top
            .shards
            .iter()
            .any(|s| top.shard_backend(&s.value.name.value) == backend)
}
