//! The draft written out: the topology's YAML, and the report as text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::draft::{Draft, Machine, Note, Options, Role, Verdict};

impl Draft {
    /// The report as text: the mapped, the assumed, then what was not mapped.
    pub fn report(&self, source: &str) -> String {
        let mut out = String::new();
        for (verdict, title) in [
            (Verdict::Mapped, "mapped"),
            (Verdict::Assumed, "assumed (check each)"),
            (Verdict::NotMapped, "not mapped"),
        ] {
            let mut notes: Vec<&Note> =
                self.notes.iter().filter(|n| n.verdict == verdict).collect();
            // By line; the notes about the whole file last.
            notes.sort_by_key(|n| n.line.unwrap_or(usize::MAX));
            if notes.is_empty() {
                continue;
            }
            let _ = writeln!(out, "{title}:");
            for n in notes {
                match n.line {
                    Some(l) => {
                        let _ = writeln!(out, "  {source}:{l}: {}", n.text);
                    }
                    None => {
                        let _ = writeln!(out, "  {}", n.text);
                    }
                }
            }
        }
        out
    }
}

/// A YAML scalar for `v`: as it is when YAML reads it back as that string, else quoted.
fn q(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        && !v.starts_with(['-', '.'])
        && v.parse::<f64>().is_err()
        && ![
            "y", "yes", "n", "no", "on", "off", "true", "false", "null", "~",
        ]
        .contains(&v.to_ascii_lowercase().as_str());
    if plain {
        v.to_owned()
    } else {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

pub(crate) fn yaml(
    name: &str,
    opts: &Options,
    machines: &[Machine],
    shards: &BTreeMap<u16, Vec<&str>>,
    frontends: &[(u16, u16)],
    (interval_s, fall, timeout_ms): (u64, u32, u64),
) -> String {
    let mut y = String::new();
    let _ = writeln!(
        y,
        "name: {}\nprovider: static\nmanaged: false\nplaybooks: {}",
        q(name),
        q(&opts.playbooks)
    );
    let _ = writeln!(
        y,
        "ssh:\n  user: medic\n  key: /etc/medic/id_ed25519\n\nmachines:"
    );
    for m in machines {
        let addr = match &m.address {
            Ok(ip) => ip.to_string(),
            Err(a) => q(&format!("TODO: the address of {a}")),
        };
        let _ = writeln!(
            y,
            "  - {{name: {}, role: {}, address: {addr}}}",
            q(&m.name),
            m.role.as_str()
        );
    }
    let _ = writeln!(
        y,
        "  - {{name: monitor, role: monitor, address: 127.0.0.1}}"
    );
    if !shards.is_empty() {
        let _ = writeln!(y, "\nshards:");
        for (port, on) in shards {
            let _ = writeln!(
                y,
                "  - {{name: r{port}, port: {port}, master: {}, replicas: [{}]}}",
                q(on[0]),
                on[1..].iter().map(|n| q(n)).collect::<Vec<_>>().join(", ")
            );
        }
    }
    let proxies: Vec<String> = machines
        .iter()
        .filter(|m| m.role == Role::Haproxy)
        .map(|m| q(&m.name))
        .collect();
    if !proxies.is_empty() {
        let _ = writeln!(
            y,
            "\nproxies:\n  machines: [{}]\n  runtime_api: {{port: 9999, reach: network}}\n  frontends:",
            proxies.join(", ")
        );
        for (f, s) in frontends {
            let _ = writeln!(y, "    - {{listen: {f}, shard: r{s}}}");
        }
        if frontends.is_empty() {
            let _ = writeln!(
                y,
                "    []  # TODO: {{listen: PORT, shard: NAME}} for each shard"
            );
        }
    }
    let check =
        format!("{{interval: {interval_s}s, timeout: {timeout_ms}ms, fall: {fall}, rise: 2}}");
    let _ = writeln!(
        y,
        "\nchecks:\n  redis: {check}\n  haproxy: {check}\n\npolicy:\n  remediation: [failover]\n\ncontroller:\n  listen: 127.0.0.1:7600\n  state_dir: /var/lib/medic"
    );
    y
}
