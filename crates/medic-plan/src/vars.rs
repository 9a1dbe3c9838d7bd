//! The variables each playbook gets, and the names medic gives HAProxy backends.
//!
//! The names here are the contract between the config a playbook renders and the runtime API
//! commands a plan sends: both come from these functions.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use medic_topology::{Shard, Topology};

use crate::state::ObservedState;
use crate::step::Addr;

/// The backend on a proxy machine that serves `shard`: the shard's `backend`, else medic's
/// name (`redis-SHARD`).
pub fn proxy_backend(top: &Topology, shard: &str) -> String {
    top.shard_backend(shard)
}

/// The backend on the app proxy on `machine` that serves `shard`: its frontend's `backend`,
/// else medic's name (`app-SHARD`).
pub fn app_backend(top: &Topology, machine: &str, shard: &str) -> String {
    top.app_backend(machine, shard)
}

/// The backend on a proxy machine that serves `service` (its `proxy`): its `proxy.backend`,
/// else medic's name (`service-NAME`).
pub fn service_backend(top: &Topology, service: &str) -> String {
    top.service_backend(service)
}

/// A machine's address for a step: known, or resolved when the step runs.
pub fn addr_of(state: &ObservedState, machine: &str) -> Addr {
    state
        .address(machine)
        .map_or_else(|| Addr::Of(machine.to_owned()), Addr::Ip)
}

fn host(top: &Topology, machine: &str, address: &Addr) -> Value {
    let role = top
        .machine(machine)
        .map(|m| m.role.value.as_str())
        .unwrap_or("unknown");
    json!({ "name": machine, "address": address.to_string(), "role": role, "topology": top.name.value })
}

/// `runtime_api` for the haproxy and app-proxy playbooks. Without a TCP port medic reaches
/// the admin socket over SSH as its login on `machine`: `owner` is that login (the socket is
/// made its own), unless it is root or not a plain user name.
fn runtime_api_vars(top: &Topology, machine: &str, api: &medic_topology::RuntimeApi) -> Value {
    let login = top.machine(machine).map(|m| top.ssh_for(m).user);
    let owner = login.filter(|u| {
        api.port.is_none()
            && u != "root"
            && !u.is_empty()
            && !u.starts_with('-')
            && u.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    });
    json!({ "port": api.tcp_port(), "socket": api.socket.value, "reach": api.reach, "owner": owner })
}

/// A password in playbook variables, as a placeholder: the plan and the journal show it as
/// it is; the executor puts the password in when the step runs.
pub fn secret(user: &str) -> String {
    format!("${{secret:{user}}}")
}

/// As [`secret`], for the password's SHA-256 in hex (what a redis ACL line may hold instead
/// of the password).
pub fn secret_sha256(user: &str) -> String {
    format!("${{secret-sha256:{user}}}")
}

/// `redis_auth` for the redis playbook: each user with its rules and its password's hash, and
/// the replication password (the one a replica must send).
fn redis_auth_vars(top: &Topology) -> Value {
    let Some(a) = &top.redis_auth else {
        return Value::Null;
    };
    let a = &a.value;
    let user = |name: &str, rules: &str| json!({ "user": name, "rules": rules, "hash": secret_sha256(name) });
    let clients: Vec<Value> = a
        .clients
        .iter()
        .map(|c| user(&c.value.user.value, &c.value.rules.value))
        .collect();
    let repl = &a.replication.value.user.value;
    let mut replication = user(repl, medic_topology::auth::REPLICATION_RULES);
    replication["password"] = Value::String(secret(repl));
    json!({
        "medic": user(&a.medic.value.user.value, medic_topology::auth::MEDIC_RULES),
        "replication": replication,
        "clients": clients,
    })
}

/// `redis_tls` for the playbooks: the certificate's name and its files as placeholders (the
/// executor puts each file's text in when the step runs; a plan shows `${tls:key}`).
fn redis_tls_vars(top: &Topology) -> Value {
    let Some(t) = &top.redis_tls else {
        return Value::Null;
    };
    json!({
        "name": t.value.name.value,
        "ca": "${tls:ca}",
        "cert": "${tls:cert}",
        "key": "${tls:key}",
    })
}

/// The role a redis server should have when its playbook runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerRole {
    Master,
    ReplicaOf { machine: String },
}

/// Variables for `playbooks/redis.yaml`: the machine and each of its servers with its role.
pub fn redis_vars(
    top: &Topology,
    state: &ObservedState,
    machine: &str,
    address: &Addr,
    servers: &[(&Shard, ServerRole)],
) -> Value {
    let shards: Vec<Value> = servers
        .iter()
        .map(|(s, role)| {
            let (role, master_host, master_port) = match role {
                ServerRole::Master => ("master", Value::Null, Value::Null),
                ServerRole::ReplicaOf { machine } => (
                    "replica",
                    Value::String(addr_of(state, machine).to_string()),
                    Value::from(s.port.value),
                ),
            };
            json!({
                "name": s.name.value,
                "port": s.port.value,
                "role": role,
                "master_host": master_host,
                "master_port": master_port,
                "persistence": s.persistence,
                "maxmemory": s.maxmemory.as_ref().map(|m| &m.value),
            })
        })
        .collect();
    json!({
        "host": host(top, machine, address),
        "shards": shards,
        "auth": redis_auth_vars(top),
        "tls": redis_tls_vars(top),
    })
}

/// Variables for `playbooks/haproxy.yaml`: every shard's frontend and backend, with the current
/// master ready and every other server in maintenance.
pub fn haproxy_vars(
    top: &Topology,
    state: &ObservedState,
    machine: &str,
    address: &Addr,
    masters: &BTreeMap<String, String>,
) -> Value {
    let px = &top.proxies.value;
    let frontends: Vec<Value> = px
        .frontends
        .iter()
        .filter_map(|f| {
            let shard = top.shard(&f.value.shard.value)?;
            let master = masters
                .get(&shard.name.value)
                .map(String::as_str)
                .unwrap_or(&shard.master.value);
            let servers: Vec<Value> = Topology::shard_machines(shard)
                .map(|m| {
                    json!({
                        "name": m,
                        "address": addr_of(state, m).to_string(),
                        "port": shard.port.value,
                        "active": m == master,
                    })
                })
                .collect();
            Some(json!({
                "shard": shard.name.value,
                "listen": f.value.listen.value,
                "backend": proxy_backend(top, &shard.name.value),
                "servers": servers,
            }))
        })
        .collect();
    json!({
        "host": host(top, machine, address),
        "runtime_api": runtime_api_vars(top, machine, &px.runtime_api.value),
        "haproxy": haproxy_settings(&px.haproxy),
        "frontends": frontends,
        "services": service_frontends(top, state),
        "redis_auth": top.redis_auth.is_some(),
        // The proxies' checks need the name and the CA, not the servers' certificate or key.
        "redis_tls": top.redis_tls.as_ref().map(|t| json!({
            "name": t.value.name.value,
            "ca": "${tls:ca}",
        })),
    })
}

/// The frontends of the services routed through the proxies: every machine of each a server,
/// the current primary alone ready (`active_active`: every machine not taken out). HAProxy's own check asks the service's `path` where medic
/// checks it over HTTP (a path HAProxy's configuration can hold as it is), else connects.
fn service_frontends(top: &Topology, state: &ObservedState) -> Vec<Value> {
    top.services
        .iter()
        .map(|s| &s.value)
        .filter_map(|s| {
            let proxy = &s.proxy.as_ref()?.value;
            let st = state.services.get(&s.name.value);
            let primary = st.map_or(s.primary.value.as_str(), |st| st.primary.as_str());
            // Ready: the primary alone; in an active_active service every machine not out.
            let active = |m: &str| match s.active_active() {
                true => st.is_none_or(|st| !st.out.contains(m)),
                false => m == primary,
            };
            let check = &s.check.value;
            let path = check.http_path();
            let http_check = (check.kind == medic_topology::CheckKind::Http
                && medic_topology::service::haproxy_safe_path(path))
            .then(|| json!({ "path": path, "status": check.http_status() }));
            let servers: Vec<Value> = s
                .machines()
                .map(|m| {
                    json!({
                        "name": m,
                        "address": addr_of(state, m).to_string(),
                        "port": s.port.value,
                        "active": active(m),
                    })
                })
                .collect();
            Some(json!({
                "service": s.name.value,
                "listen": proxy.listen.value,
                "mode": proxy.mode,
                "backend": service_backend(top, &s.name.value),
                "http_check": http_check,
                "servers": servers,
            }))
        })
        .collect()
}

fn haproxy_settings(h: &medic_topology::HaproxySettings) -> Value {
    json!({
        "check_interval_ms": h.check_interval.as_millis() as u64,
        "check_fall": h.check_fall,
        "check_rise": h.check_rise,
        "timeout_connect_ms": h.timeout_connect.as_millis() as u64,
        "timeout_check_ms": h.timeout_check.as_millis() as u64,
        "timeout_client_ms": h.timeout_client.as_millis() as u64,
        "timeout_server_ms": h.timeout_server.as_millis() as u64,
        "retries": h.retries,
        "redispatch": h.redispatch,
        "shutdown_sessions_on_down": h.shutdown_sessions_on_down,
    })
}

/// The port of the proxies' frontend for `shard`.
pub fn proxy_port(top: &Topology, shard: &str) -> Option<u16> {
    top.proxies
        .value
        .frontends
        .iter()
        .find(|f| f.value.shard.value == shard)
        .map(|f| f.value.listen.value)
}

/// Variables for `playbooks/app-proxy.yaml`: each app frontend goes to the primary proxy, and
/// to the backup when the primary is unavailable. With an RFC 2136 DNS (its server's address
/// is known), the app proxy resolves each proxy by its DNS record through that server, so a
/// DNS change reaches it; it starts from the address known now.
pub fn app_proxy_vars(
    top: &Topology,
    state: &ObservedState,
    machine: &str,
    address: &Addr,
) -> Option<Value> {
    let app = top
        .app_proxies
        .iter()
        .map(|a| &a.value)
        .find(|a| a.machine.value == machine)?;
    let resolver = top
        .dns
        .as_ref()
        .and_then(|d| match &d.value.provider.value {
            medic_topology::DnsProvider::Rfc2136(r) => Some(r.server.to_string()),
            medic_topology::DnsProvider::Route53(_) => None,
        });
    // The record naming exactly this proxy machine, if any.
    let fqdn = |proxy: &str| {
        top.dns_records_of(proxy)
            .find(|r| r.machines.len() == 1)
            .map(|r| r.name.value.trim_end_matches('.').to_owned())
    };
    let frontends: Vec<Value> = app
        .frontends
        .iter()
        .filter_map(|f| {
            let shard = &f.value.shard.value;
            let port = proxy_port(top, shard)?;
            let servers: Vec<Value> = [(&app.primary.value, false), (&app.backup.value, true)]
                .into_iter()
                .map(|(m, backup)| {
                    json!({ "name": m, "address": addr_of(state, m).to_string(), "port": port, "backup": backup, "fqdn": fqdn(m) })
                })
                .collect();
            Some(json!({
                "shard": shard,
                "listen": f.value.listen.value,
                "backend": app_backend(top, &app.machine.value, shard),
                "servers": servers,
            }))
        })
        .collect();
    Some(json!({
        "host": host(top, machine, address),
        "runtime_api": runtime_api_vars(top, machine, &app.runtime_api.value),
        "haproxy": haproxy_settings(&top.proxies.value.haproxy),
        "resolver": resolver,
        "frontends": frontends,
    }))
}
