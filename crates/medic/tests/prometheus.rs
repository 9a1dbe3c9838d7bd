//! The Prometheus rules and the Grafana dashboard in packaging/, checked with Prometheus's own
//! `promtool`: the rules load, their unit tests (packaging/prometheus/medic-rules.test.yml)
//! pass, and every dashboard query is valid PromQL. That each metric they name is one a live
//! controller announces is checked against a real scrape in run_lab.rs
//! ([`common::check_scrape`]).

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::process::Command;

mod cli_support;

use cli_support::root;

/// Runs promtool; panics with its output unless it succeeds.
fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(root())
        .output()
        .expect("promtool (Debian's prometheus package; scripts/deps installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn the_alerting_rules_load_and_their_unit_tests_pass() {
    let checked = promtool(&["check", "rules", "packaging/prometheus/medic-rules.yml"]);
    assert!(checked.contains("SUCCESS: 17 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "packaging/prometheus/medic-rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let text = std::fs::read_to_string(root().join("packaging/grafana/medic.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "a panel with no query: {panel}");
        for t in targets {
            exprs.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() >= 12, "{exprs:?}");
    // Each query as a recording rule: promtool parses it as Prometheus would. The
    // dashboard's own variable is given a value Prometheus can parse.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e.replace("$instance", ".*");
        assert!(
            !e.contains('$'),
            "a Grafana macro Prometheus cannot parse: {e}"
        );
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, rules).unwrap();
    let checked = promtool(&["check", "rules", file.to_str().unwrap()]);
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{checked}"
    );
}
