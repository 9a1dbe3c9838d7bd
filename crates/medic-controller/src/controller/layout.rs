//! Whether a proxy's backends are the ones the topology names: each shard's (and each routed
//! service's) backend there, with one server per machine, named after it.
//!
//! In a deployment medic set up this holds by construction (its playbook renders the
//! backends). In one it adopted (`managed: false`) the operator's haproxy.cfg may say
//! otherwise — a backend under another name, servers named `cache1` rather than after the
//! machines — and then every runtime command medic would send there misses, or the reconcile
//! would take the real master for an unknown server and fence it. So a backend that does not
//! match is left alone on that proxy (no repair touches it) and a critical alert names what
//! differs, until the topology or haproxy.cfg is corrected. A recovery's fence there fails
//! (HAProxy: "No such ..."): the promotion it guards does not happen.

use std::collections::BTreeSet;

use medic_haproxy::ServerState;
use medic_topology::Topology;

/// One backend of `proxy` that differs from the topology's: its name and what differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub backend: String,
    pub message: String,
}

/// Every backend the proxy `proxy` should have that its `servers` (the whole of `show servers
/// state`) do not match: missing, with a server that is no machine of its shard or service, or
/// without a server for one of them.
pub fn mismatches(top: &Topology, proxy: &str, servers: &[ServerState]) -> Vec<Mismatch> {
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
    let mut out = Vec::new();
    for (what, backend, machines) in shards.chain(services) {
        let names: BTreeSet<&str> = servers
            .iter()
            .filter(|s| s.backend == backend)
            .map(|s| s.server.as_str())
            .collect();
        let message = if names.is_empty() {
            format!(
                "{proxy} has no backend `{backend}` for {what} (no server in it): medic's runtime commands there would miss; expected the topology's backend name to be haproxy.cfg's"
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
            format!(
                "{proxy}'s backend `{backend}` has the servers {} for {what}, whose machines are {}: medic names each server after its machine; expected haproxy.cfg's servers (or the machines) renamed to match",
                names.iter().copied().collect::<Vec<_>>().join(", "),
                machines.join(", ")
            )
        };
        out.push(Mismatch { backend, message });
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

    /// Every server of every shard's backend, as medic's playbook renders them.
    fn rendered(top: &Topology) -> Vec<ServerState> {
        top.shards
            .iter()
            .flat_map(|s| {
                let b = top.shard_backend(&s.value.name.value);
                Topology::shard_machines(&s.value)
                    .map(|m| server(&b, m))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn a_proxy_as_medic_renders_it_matches() {
        let top = lab();
        assert_eq!(mismatches(&top, "haproxy1", &rendered(&top)), []);
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
    }
}
