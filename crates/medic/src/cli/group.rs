//! The group's part of `medic status`, and `medic step-down`.

use std::path::Path;
use std::process::ExitCode;

/// The group's lines of `medic status` (nothing for a controller that runs alone).
pub(super) fn print(v: &serde_json::Value, now: u64) {
    let g = &v["group"];
    if g.is_null() {
        return;
    }
    let s = |x: &serde_json::Value| x.as_str().unwrap_or("-").to_owned();
    println!();
    println!(
        "group: this member {} ({}); leader {} (term {}); lease {}s{}; etcd {}",
        s(&g["member"]),
        if g["leading"].as_bool() == Some(true) {
            "leads"
        } else {
            "follows"
        },
        g["leader"].as_str().unwrap_or("none"),
        g["term"],
        g["lease_secs"],
        g["renewed_ms_ago"]
            .as_u64()
            .map(|ms| format!(", renewed {:.1}s ago", ms as f64 / 1000.0))
            .unwrap_or_default(),
        s(&g["etcd"]),
    );
    println!(
        "{:<12} {:<8} {:<12} DOWN AS IT SEES",
        "MEMBER", "LEADS", "PUBLISHED"
    );
    for m in g["members"].as_array().into_iter().flatten() {
        let down: Vec<String> = m["machines"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| !v["failing_since_ms"].is_null())
            .map(|(k, _)| k.clone())
            .collect();
        println!(
            "{:<12} {:<8} {:<12} {}",
            s(&m["member"]),
            if m["leading"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            format!(
                "{:.1}s ago",
                now.saturating_sub(m["at_ms"].as_u64().unwrap_or(now)) as f64 / 1000.0
            ),
            if down.is_empty() {
                "none".to_owned()
            } else {
                down.join(", ")
            }
        );
    }
}

/// `medic step-down`: the leader gives its lease up; another member takes over.
pub(super) fn step_down(file: &Path, format: super::Format) -> anyhow::Result<ExitCode> {
    super::run::command(file, "step-down", "", None, format)
}
