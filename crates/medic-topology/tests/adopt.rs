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
