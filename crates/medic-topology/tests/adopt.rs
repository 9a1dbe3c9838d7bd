//! Adopting a deployment: backend names from the topology and `managed: false`, validated
//! with the file, line and field of each mistake.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::path::PathBuf;

use medic_topology::load_topology;

/// examples/static.yaml with `edit` applied, loaded from a temporary file: the topology, or
/// every diagnostic as `LINE: path: message`.
fn load(edit: impl Fn(String) -> String) -> Result<medic_topology::LoadedTopology, Vec<String>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("examples/static.yaml"))
        .unwrap()
        .replace(
            "../playbooks",
            &root.join("playbooks").display().to_string(),
        );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("static.yaml");
    std::fs::write(&file, edit(text)).unwrap();
    load_topology(&file).map_err(|e| {
        e.diagnostics
            .iter()
            .map(|d| format!("{}: {}: {}", d.pos.line, d.path, d.message))
            .collect()
    })
}

fn adopted(text: String) -> String {
    text.replace("provider: static\n", "provider: static\nmanaged: false\n")
        .replace(
            "{name: r9001, port: 9001, master: redis1, replicas: [redis2]}",
            "{name: r9001, port: 9001, master: redis1, replicas: [redis2], backend: bk_cache}",
        )
        .replace(
            "runtime_api: {port: 9999}",
            "runtime_api: {port: 9999, reach: network}",
        )
}

#[test]
fn an_adopted_deployment_names_its_own_backends_and_needs_no_ssh_to_fail_over() {
    let loaded = load(adopted).unwrap();
    let top = &loaded.topology;
    assert!(!top.managed());
    assert_eq!(top.shard_backend("r9001"), "bk_cache");
    assert_eq!(top.shard_backend("r9002"), "redis-r9002");
    let warnings: Vec<String> = loaded.warnings.iter().map(|d| d.to_string()).collect();
    assert!(
        !warnings.iter().any(|w| w.contains("managed")),
        "{warnings:?}"
    );
    // Without a `managed` field, medic manages the deployment.
    assert!(load(|t| t).unwrap().topology.managed());
}

#[test]
fn a_backend_name_haproxy_cannot_take_or_taken_twice_is_an_error_at_its_field() {
    let errors = load(|t| adopted(t).replace("backend: bk_cache", "backend: \"bk cache\""))
        .err()
        .unwrap();
    assert!(
        errors.iter().any(|e| e.starts_with(
            "28: shards[0].backend: `bk cache` is not a HAProxy backend name; expected 1 to 63 letters"
        )),
        "{errors:?}"
    );
    // Another shard's own name for its backend, or medic's name for another shard's.
    for (name, first) in [
        ("bk_cache", "shards[0].backend"),
        ("redis-r9001", "shards[0]"),
    ] {
        let errors = load(|t| {
            t.replace(
                "{name: r9002, port: 9002, master: redis1, replicas: [redis2]}",
                &format!("{{name: r9002, port: 9002, master: redis1, replicas: [redis2], backend: {name}}}"),
            )
            .replace(
                "{name: r9001, port: 9001, master: redis1, replicas: [redis2]}",
                &format!(
                    "{{name: r9001, port: 9001, master: redis1, replicas: [redis2]{}}}",
                    if first == "shards[0]" { "" } else { ", backend: bk_cache" }
                ),
            )
        })
        .err()
        .unwrap();
        assert!(
            errors.iter().any(|e| e.starts_with(&format!(
                "28: shards[1].backend: backend `{name}` is also {first}'s (line 27)"
            ))),
            "{errors:?}"
        );
    }
}

#[test]
fn an_adopted_deployment_reaching_its_proxies_through_ssh_is_warned_of() {
    let loaded = load(|t| {
        adopted(t).replace(
            "runtime_api: {port: 9999, reach: network}",
            "runtime_api: {port: 9999}",
        )
    })
    .unwrap();
    let warnings: Vec<String> = loaded
        .warnings
        .iter()
        .map(|d| format!("{}: {}", d.path, d.message))
        .collect();
    assert!(
        warnings.iter().any(|w| w.starts_with(
            "proxies.runtime_api.reach: with `managed: false` medic still reaches each proxy's runtime API through SSH"
        )),
        "{warnings:?}"
    );
}

#[test]
fn an_app_proxy_s_backends_are_named_by_its_frontends_and_the_proxies_by_the_shards() {
    let named = |t: String| {
        adopted(t).replace(
            "      - {listen: 7001, shard: r9001}",
            "      - {listen: 7001, shard: r9001, backend: be_app}",
        )
    };
    let loaded = load(named).unwrap();
    assert_eq!(loaded.topology.app_backend("app", "r9001"), "be_app");
    assert_eq!(loaded.topology.app_backend("app", "r9002"), "app-r9002");
    let errors = load(|t| {
        named(t)
            .replace(
                "      - {listen: 7002, shard: r9002}",
                "      - {listen: 7002, shard: r9002, backend: be_app}",
            )
            .replace(
                "    - {listen: 8001, shard: r9001}",
                "    - {listen: 8001, shard: r9001, backend: bk_cache}",
            )
    })
    .err()
    .unwrap();
    assert!(
        errors.iter().any(|e| e.contains(
            "proxies.frontends[0].backend: the proxies' backend of a shard is named by the shard's `backend`"
        )),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains(
            "app_proxies[0].frontends[1].backend: backend `be_app` is also app_proxies[0].frontends[0].backend's"
        )),
        "{errors:?}"
    );
}

#[test]
fn an_app_proxy_whose_frontends_name_backends_has_one_frontend_per_shard() {
    let errors = load(|t| {
        adopted(t)
            .replace(
                "      - {listen: 7001, shard: r9001}",
                "      - {listen: 7001, shard: r9001, backend: be_a}",
            )
            .replace(
                "      - {listen: 7002, shard: r9002}",
                "      - {listen: 7002, shard: r9001, backend: be_b}",
            )
    })
    .err()
    .unwrap();
    assert!(
        errors.iter().any(|e| e.contains(
            "app_proxies[0].frontends[1].shard: shard `r9001` has a frontend already (app_proxies[0].frontends[0])"
        )),
        "{errors:?}"
    );
}

#[test]
fn servers_named_otherwise_than_their_machines_are_given_once_each_in_an_adopted_deployment() {
    let named = |t: String| {
        t.replace(
            "{name: redis1, role: redis, address: 127.0.20.1}",
            "{name: redis1, role: redis, address: 127.0.20.1, server: cache1}",
        )
        .replace(
            "{name: redis2, role: redis, address: 127.0.20.2}",
            "{name: redis2, role: redis, address: 127.0.20.2, server: redis2}",
        )
    };
    let loaded = load(|t| named(adopted(t))).unwrap();
    // A name equal to the machine's is no alias.
    assert_eq!(
        loaded.topology.server_aliases(),
        [("redis1".to_owned(), "cache1".to_owned())]
    );

    // medic names the servers it configures itself.
    let errors = load(named).unwrap_err();
    assert!(
        errors.iter().any(|e| e.starts_with(
            "19: machines[0].server: a server name of its own is only for a deployment medic adopted; expected `managed: false`"
        )),
        "{errors:?}"
    );

    // Another machine's name, a name twice, a name HAProxy cannot take (one line lower:
    // `managed: false` is inserted above).
    let errors = load(|t| {
        adopted(t)
            .replace(
                "{name: redis1, role: redis, address: 127.0.20.1}",
                "{name: redis1, role: redis, address: 127.0.20.1, server: redis2}",
            )
            .replace(
                "{name: redis2, role: redis, address: 127.0.20.2}",
                "{name: redis2, role: redis, address: 127.0.20.2, server: redis2}",
            )
            .replace(
                "{name: haproxy1, role: haproxy, address: 127.0.20.11}",
                "{name: haproxy1, role: haproxy, address: 127.0.20.11, server: \"lb 1\"}",
            )
    })
    .unwrap_err();
    for want in [
        "20: machines[0].server: `redis2` is machine `redis2`'s name (line 21); expected a server name that no other machine has",
        "21: machines[1].server: server `redis2` is also machine `redis1`'s (line 20); expected one machine per server name",
        "22: machines[2].server: `lb 1` is not a HAProxy server name; expected 1 to 63 letters, digits, '-', '_', '.' or ':'",
    ] {
        assert!(
            errors.iter().any(|e| e == want),
            "{want}\nnot in {errors:?}"
        );
    }
}

#[test]
fn a_runtime_api_without_a_port_is_the_admin_socket_over_ssh_and_never_on_the_network() {
    let loaded = load(|t| {
        t.replace(
            "runtime_api: {port: 9999}",
            "runtime_api: {socket: /run/haproxy/admin.sock}",
        )
    })
    .unwrap();
    let api = loaded.topology.runtime_api_of("haproxy1").unwrap();
    assert_eq!(api.tcp_port(), None);
    assert_eq!(api.socket.value, PathBuf::from("/run/haproxy/admin.sock"));
    let errors = load(|t| t.replace("runtime_api: {port: 9999}", "runtime_api: {reach: network}"))
        .unwrap_err();
    assert!(
        errors.iter().any(|e| e.starts_with(
            "32: proxies.runtime_api.port: `reach: network` needs the API's TCP port"
        )),
        "{errors:?}"
    );
}
