//! The services' backends on the proxies (`proxy`), compared with what they should be and
//! repaired by the reconcile (`reconcile.rs`), as the shards' are: a proxy that did not answer
//! during a failover (its fence and the new primary's activation skipped) keeps sending to the
//! old primary, and a proxy changed by hand may send to a standby.
//! - primary/standby: every server but the recorded primary's in maintenance, the primary's
//!   ready — both only while the primary passes its checks (a state medic is unsure of never
//!   cuts clients off the server they use);
//! - active_active: the servers of machines taken out in maintenance; every other machine's
//!   ready while it passes its checks;
//! - every server at its machine's current address and the service's port.

use std::net::IpAddr;

use medic_haproxy::ServerState;
use medic_plan::{Action, Addr, ObservedState, ProxyApi, ServerRef};
use medic_topology::Topology;

/// The changes that bring one proxy's service backends to the intended routing, in a safe
/// order: every fence, then every address, then the activations. `up(service, machine)`:
/// whether the machine passes the service's checks.
pub fn service_repairs(
    top: &Topology,
    observed: &ObservedState,
    proxy: &ProxyApi,
    servers: &[ServerState],
    up: impl Fn(&str, &str) -> bool,
) -> Vec<Action> {
    let (mut fences, mut addresses, mut activations) = (Vec::new(), Vec::new(), Vec::new());
    for s in top.services.iter().map(|s| &s.value) {
        if s.proxy.is_none() {
            continue;
        }
        let name = &s.name.value;
        let st = observed.services.get(name);
        let primary = st.map_or(s.primary.value.as_str(), |st| st.primary.as_str());
        let out = |m: &str| st.is_some_and(|st| st.out.contains(m));
        let backend = medic_plan::vars::service_backend(top, name);
        for sv in servers.iter().filter(|x| x.backend == backend) {
            let m = sv.server.as_str();
            if !s.machines().any(|x| x == m) {
                continue;
            }
            let server = ServerRef {
                backend: backend.clone(),
                server: m.to_owned(),
            };
            let (fence, activate) = if s.active_active() {
                (out(m), !out(m) && up(name, m))
            } else {
                let sure = up(name, primary);
                (m != primary && sure, m == primary && sure)
            };
            if fence && sv.is_ready() {
                fences.push(Action::FenceServer {
                    proxy: proxy.clone(),
                    server: server.clone(),
                    wait_sessions: false,
                });
            }
            if let Some(ip) = observed.address(m).filter(|_| top.managed())
                && (sv.addr.parse::<IpAddr>().ok() != Some(ip) || sv.port != s.port.value)
            {
                addresses.push(Action::SetServerAddress {
                    proxy: proxy.clone(),
                    server: server.clone(),
                    address: Addr::Ip(ip),
                    port: s.port.value,
                });
            }
            if activate && !sv.is_ready() {
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

/// Shards' and services' repairs of one proxy merged: every fence first, then the addresses,
/// then the activations (each list in its own order).
pub fn merged(mut a: Vec<Action>, b: Vec<Action>) -> Vec<Action> {
    let rank = |x: &Action| match x {
        Action::FenceServer { .. } => 0,
        Action::SetServerAddress { .. } => 1,
        _ => 2,
    };
    a.extend(b);
    a.sort_by_key(rank);
    a
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::path::Path;

    use medic_haproxy::{OpState, ServerState};
    use medic_plan::{Action, Addr, ObservedState, ProxyApi};
    use medic_topology::Topology;

    use super::{merged, service_repairs};

    fn topology(mode: &str) -> Topology {
        let text = include_str!("../../../../examples/domino.yaml")
            .replace(
                "  - {name: monitor, role: monitor}\n",
                "  - {name: lb1, role: haproxy}\n  - {name: monitor, role: monitor}\n\nproxies:\n  machines: [lb1]\n  runtime_api: {port: 9999}\n  frontends: []\n",
            )
            .replace("    mode: primary_standby\n", &format!("    mode: {mode}\n"))
            .replace("    port: 80\n", "    port: 80\n    proxy: {listen: 8080}\n");
        medic_topology::load::parse_str(Path::new("t.yaml"), &text, "a topology")
            .into_result()
            .unwrap()
    }

    fn proxy() -> ProxyApi {
        ProxyApi {
            machine: "lb1".into(),
            address: Addr::Of("lb1".into()),
            port: Some(9999),
        }
    }

    /// web1 and web2 on lb1, each ready or in maintenance (forced), at their assumed addresses.
    fn servers(obs: &ObservedState, web1_ready: bool, web2_ready: bool) -> Vec<ServerState> {
        [("web1", web1_ready), ("web2", web2_ready)]
            .into_iter()
            .map(|(m, ready)| ServerState {
                backend: "service-www".into(),
                server: m.into(),
                addr: obs.address(m).unwrap().to_string(),
                port: 80,
                op_state: OpState::Running,
                admin_state: if ready { 0 } else { 1 },
            })
            .collect()
    }

    fn kinds(a: &[Action]) -> Vec<String> {
        a.iter()
            .map(|x| match x {
                Action::FenceServer { server, .. } => format!("fence {}", server.server),
                Action::ActivateServer { server, .. } => format!("ready {}", server.server),
                Action::SetServerAddress { server, .. } => format!("address {}", server.server),
                other => other.kind().to_owned(),
            })
            .collect()
    }

    #[test]
    fn a_proxy_left_on_the_old_primary_is_moved_to_the_recorded_one_while_it_passes() {
        let top = topology("primary_standby");
        let mut obs = ObservedState::assumed(&top);
        obs.services.get_mut("www").unwrap().primary = "web2".into();
        // A proxy skipped in the failover: still on web1, web2 in maintenance.
        let stale = servers(&obs, true, false);
        let fixes = service_repairs(&top, &obs, &proxy(), &stale, |_, _| true);
        assert_eq!(kinds(&fixes), ["fence web1", "ready web2"]);
        // The recorded primary not passing its checks: nothing is changed on an unsure state.
        let unsure = service_repairs(&top, &obs, &proxy(), &stale, |_, m| m != "web2");
        assert_eq!(kinds(&unsure), Vec::<String>::new());
        // As intended: nothing to do.
        let fine = servers(&obs, false, true);
        assert!(service_repairs(&top, &obs, &proxy(), &fine, |_, _| true).is_empty());
        // A server at another address is moved there.
        let mut moved = servers(&obs, false, true);
        moved[0].addr = "10.9.9.9".into();
        assert_eq!(
            kinds(&service_repairs(&top, &obs, &proxy(), &moved, |_, _| true)),
            ["address web1"]
        );
    }

    #[test]
    fn in_an_active_active_service_a_machine_out_is_fenced_and_one_that_passes_is_ready() {
        let top = topology("active_active");
        let mut obs = ObservedState::assumed(&top);
        obs.services
            .get_mut("www")
            .unwrap()
            .out
            .insert("web1".into());
        let both_off = servers(&obs, true, false);
        assert_eq!(
            kinds(&service_repairs(&top, &obs, &proxy(), &both_off, |_, _| {
                true
            })),
            ["fence web1", "ready web2"]
        );
        // web2 failing its checks: left as it is (taking it out is a recovery's decision).
        assert_eq!(
            kinds(&service_repairs(&top, &obs, &proxy(), &both_off, |_, m| m != "web2")),
            ["fence web1"]
        );
        // Merged with a shard's repairs (a master's activation, an address): every fence
        // first, then the addresses, then the activations.
        let shard = vec![
            Action::ActivateServer {
                proxy: proxy(),
                server: medic_plan::ServerRef::new("redis-r9001", "redis1"),
            },
            Action::SetServerAddress {
                proxy: proxy(),
                server: medic_plan::ServerRef::new("redis-r9001", "redis2"),
                address: Addr::Of("redis2".into()),
                port: 9001,
            },
        ];
        let fixes = service_repairs(&top, &obs, &proxy(), &both_off, |_, _| true);
        assert_eq!(
            kinds(&merged(shard, fixes)),
            ["fence web1", "address redis2", "ready redis1", "ready web2"]
        );
    }
}
