//! Whether a proxy's backends are the ones the topology names: each shard's (and each routed
//! service's) backend there, with one server per machine, named after it; on an app proxy,
//! each frontend's backend with a server per proxy machine it uses.
//!
//! In a deployment medic set up this holds by construction (its playbook renders the
//! backends), except after a reload of the topology that added a shard, a service or a
//! machine: the proxy lacks it until `medic recover PROXY` renders its haproxy.cfg again (a
//! warning; the reconcile goes on with the servers there).
//!
//! In one it adopted (`managed: false`) the operator's haproxy.cfg may say otherwise — a
//! backend under another name, servers named `cache1` rather than after the machines — and
//! then every runtime command medic would send there misses, or the reconcile would take the
//! real master for an unknown server and fence it. So such a backend (and, in any deployment,
//! one with a server that is no machine of it) is left alone by the reconcile, and a critical
//! alert names what differs, until the topology or haproxy.cfg is corrected. A recovery there
//! does not promote: its fence fails (HAProxy: "No such ..."), or the read-back before the
//! promotion finds the backend unlike (medic-exec's `adopted`).

use std::collections::{BTreeMap, BTreeSet};

use medic_haproxy::ServerState;
use medic_plan::ObservedState;
use medic_topology::Topology;

/// One backend of `proxy` that differs from the topology's: its name and what differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub backend: String,
    pub message: String,
    /// Whether the reconcile must leave the backend alone (critical); otherwise it goes on
    /// with the servers there (a warning).
    pub blocks: bool,
}

/// Every backend the proxy `proxy` should have that its `servers` (the whole of `show servers
/// state`) do not match: missing, with a server that is no machine of its shard or service, or
/// without a server for one of them.
pub fn mismatches(top: &Topology, proxy: &str, servers: &[ServerState]) -> Vec<Mismatch> {
    // An app proxy's backends: one per frontend, with a server per proxy machine it uses.
    if let Some(app) = top
        .app_proxies
        .iter()
        .map(|a| &a.value)
        .find(|a| a.machine.value == proxy)
    {
        let wanted = app.frontends.iter().map(|f| {
            let shard = &f.value.shard.value;
            (
                format!("shard {shard}"),
                top.app_backend(proxy, shard),
                vec![app.primary.value.as_str(), app.backup.value.as_str()],
            )
        });
        return compare(top, proxy, servers, wanted);
    }
    let shards = top.shards.iter().map(|s| &s.value).map(|s| {
        (
            format!("shard {}", s.name.value),
            top.shard_backend(&s.name.value),
            Topology::shard_machines(s).collect::<Vec<_>>(),
        )
    });
    let services = top
        .services
        .iter()
        .map(|s| &s.value)
        .filter(|s| s.proxy.is_some())
        .map(|s| {
            (
                format!("service {}", s.name.value),
                top.service_backend(&s.name.value),
                s.machines().collect::<Vec<_>>(),
            )
        });
    compare(top, proxy, servers, shards.chain(services))
}

/// For each shard, the machines of it (as `observed` records them) that have no server in the
/// shard's backend among a proxy's `servers` (its whole `show servers state`).
pub fn missing(
    top: &Topology,
    observed: &ObservedState,
    servers: &[ServerState],
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for (shard, st) in &observed.shards {
        // A shard the topology no longer has is routed by nothing.
        if top.shard(shard).is_none() {
            continue;
        }
        let backend = top.shard_backend(shard);
        let lacking: BTreeSet<String> = std::iter::once(&st.master)
            .chain(st.replicas.iter().map(|r| &r.machine))
            .filter(|m| {
                !servers
                    .iter()
                    .any(|s| s.backend == backend && s.server == **m)
            })
            .cloned()
            .collect();
        if !lacking.is_empty() {
            out.insert(shard.clone(), lacking);
        }
    }
    out
}

/// Each `(what, backend, machines)` that `servers` do not match.
fn compare<'t>(
    top: &Topology,
    proxy: &str,
    servers: &[ServerState],
    wanted: impl Iterator<Item = (String, String, Vec<&'t str>)>,
) -> Vec<Mismatch> {
    let mut out = Vec::new();
    for (what, backend, machines) in wanted {
        let names: BTreeSet<&str> = servers
            .iter()
            .filter(|s| s.backend == backend)
            .map(|s| s.server.as_str())
            .collect();
        let managed = top.managed();
        let fix = if managed {
            format!("`medic recover {proxy}` renders its haproxy.cfg again")
        } else {
            "expected the topology's names to be haproxy.cfg's".to_owned()
        };
        let (message, blocks) = if names.is_empty() {
            (
                format!(
                    "{proxy} has no backend `{backend}` for {what} (no server in it): medic's runtime commands there would miss; {fix}"
                ),
                !managed,
            )
        } else {
            let unknown: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| !machines.contains(n))
                .collect();
            let missing: Vec<&str> = machines
                .iter()
                .copied()
                .filter(|m| !names.contains(m))
                .collect();
            if unknown.is_empty() && missing.is_empty() {
                continue;
            }
            (
                format!(
                    "{proxy}'s backend `{backend}` has the servers {} for {what}, whose machines are {}: medic names each server after its machine; {}",
                    names.iter().copied().collect::<Vec<_>>().join(", "),
                    machines.join(", "),
                    if unknown.is_empty() || managed {
                        fix
                    } else {
                        "expected each machine's `server` in the topology to name its server there, or haproxy.cfg's servers renamed to match"
                            .to_owned()
                    }
                ),
                !unknown.is_empty() || !managed,
            )
        };
        out.push(Mismatch {
            backend,
            message,
            blocks,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use medic_haproxy::OpState;

    fn lab() -> Topology {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lab.yaml");
        medic_topology::load_topology(&path)
            .expect("examples/lab.yaml loads")
            .topology
    }

    fn server(backend: &str, name: &str) -> ServerState {
        ServerState {
            backend: backend.into(),
            server: name.into(),
            addr: "10.77.0.10".into(),
            port: 9001,
            op_state: OpState::Running,
            admin_state: 0,
        }
    }

    /// Every server of every backend in the variables medic's haproxy (or app-proxy)
    /// playbook renders haproxy.cfg from.
    fn servers_of(vars: &serde_json::Value) -> Vec<ServerState> {
        let mut out = Vec::new();
        for key in ["frontends", "services"] {
            for f in vars[key].as_array().into_iter().flatten() {
                let backend = f["backend"].as_str().expect("a backend");
                for sv in f["servers"].as_array().into_iter().flatten() {
                    out.push(server(backend, sv["name"].as_str().expect("a name")));
                }
            }
        }
        out
    }

    fn rendered(top: &Topology) -> Vec<ServerState> {
        let observed = medic_plan::ObservedState::assumed(top);
        let masters = top
            .shards
            .iter()
            .map(|s| (s.value.name.value.clone(), s.value.master.value.clone()))
            .collect();
        servers_of(&medic_plan::vars::haproxy_vars(
            top,
            &observed,
            "haproxy1",
            &medic_plan::Addr::Of("haproxy1".into()),
            &masters,
        ))
    }

    #[test]
    fn a_proxy_as_medic_renders_it_matches() {
        let top = lab();
        assert_eq!(mismatches(&top, "haproxy1", &rendered(&top)), []);
    }

    #[test]
    fn a_replica_a_proxy_has_no_server_for_is_recorded_as_missing_there() {
        let top = lab();
        let observed = medic_plan::ObservedState::assumed(&top);
        let all = rendered(&top);
        assert_eq!(missing(&top, &observed, &all), BTreeMap::new());
        // A proxy configured before redis2 was a replica of r9001.
        let older: Vec<ServerState> = all
            .into_iter()
            .filter(|s| !(s.backend == "redis-r9001" && s.server == "redis2"))
            .collect();
        let lacking = missing(&top, &observed, &older);
        assert_eq!(
            lacking,
            BTreeMap::from([("r9001".to_owned(), BTreeSet::from(["redis2".to_owned()]))])
        );
    }

    #[test]
    fn an_app_proxy_s_backends_have_a_server_per_proxy_machine() {
        let top = lab();
        let app = &top.app_proxies[0].value;
        let machine = app.machine.value.clone();
        let backends: Vec<String> = app
            .frontends
            .iter()
            .map(|f| top.app_backend(&machine, &f.value.shard.value))
            .collect();
        let observed = medic_plan::ObservedState::assumed(&top);
        let vars = medic_plan::vars::app_proxy_vars(
            &top,
            &observed,
            &machine,
            &medic_plan::Addr::Of(machine.clone()),
        )
        .expect("the app proxy's variables");
        let rendered = servers_of(&vars);
        assert_eq!(rendered.len(), 2 * backends.len(), "{vars}");
        assert_eq!(mismatches(&top, &machine, &rendered), []);
        // The proxies' backends are not an app proxy's business, nor the reverse.
        let renamed: Vec<ServerState> = rendered
            .iter()
            .map(|s| server(&s.backend, &format!("{}-x", s.server)))
            .collect();
        let differs = mismatches(&top, &machine, &renamed);
        assert_eq!(differs.len(), backends.len(), "{differs:?}");
        assert!(
            differs[0].message.contains(&format!(
                "whose machines are {}, {}",
                app.primary.value, app.backup.value
            )),
            "{}",
            differs[0].message
        );
    }

    #[test]
    fn a_backend_under_another_name_or_with_other_servers_is_named() {
        let top = lab();
        let shard = top.shards[0].value.name.value.clone();
        let backend = top.shard_backend(&shard);
        let others: Vec<ServerState> = rendered(&top)
            .into_iter()
            .filter(|s| s.backend != backend)
            .collect();
        let missing = mismatches(&top, "haproxy1", &others);
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert_eq!(missing[0].backend, backend);
        assert!(
            missing[0].message.starts_with(&format!(
                "haproxy1 has no backend `{backend}` for shard {shard}"
            )),
            "{}",
            missing[0].message
        );
        // (medic's own proxy lacks a shard added since it was configured: a warning, and the
        // reconcile goes on with the servers there.)
        assert!(!missing[0].blocks);
        let mut renamed = others.clone();
        renamed.push(server(&backend, "cache1"));
        renamed.push(server(&backend, "redis2"));
        let differs = mismatches(&top, "haproxy1", &renamed);
        assert_eq!(differs.len(), 1, "{differs:?}");
        assert!(
            differs[0]
                .message
                .contains("has the servers cache1, redis2 for shard"),
            "{}",
            differs[0].message
        );
        // A server that is no machine of the shard: left alone, whoever set the proxy up.
        assert!(differs[0].blocks);
    }
}
