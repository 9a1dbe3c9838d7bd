//! A live `/metrics` scrape checked as Prometheus would: `promtool check metrics` finds no
//! problem in it, and every metric the alerting rules and the Grafana dashboard in packaging/
//! name is a family it announces.

use std::io::Write;
use std::process::{Command, Stdio};

/// The metric names (`medic_…`) a file names.
fn names_in(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .match_indices("medic_")
        .filter(|(i, _)| {
            // Not the tail of a longer identifier.
            !text[..*i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `response`: the whole HTTP response to `GET /metrics`.
pub fn check_scrape(response: &str) {
    let (head, metrics) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "Prometheus's text format announced: {head}"
    );
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/deps installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics on a live scrape:\n{said}\nthe scrape:\n{metrics}"
    );
    let announced: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for file in [
        "packaging/prometheus/medic-rules.yml",
        "packaging/prometheus/medic-rules.test.yml",
        "packaging/grafana/medic.json",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let names = names_in(&text);
        assert!(!names.is_empty(), "{file} names no metric");
        for name in names {
            let family = name
                .strip_suffix("_sum")
                .or_else(|| name.strip_suffix("_count"))
                .filter(|f| announced.contains(f))
                .unwrap_or(&name);
            assert!(
                announced.contains(&family),
                "{file} names {name}, which /metrics does not announce: {announced:?}"
            );
        }
    }
}
