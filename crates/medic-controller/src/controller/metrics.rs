//! `/metrics`: the controller's state in Prometheus's text format.
//!
//! Names and units follow Prometheus's conventions (`promtool check metrics` passes on a live
//! scrape, which the lab test checks): counters end in `_total`, times are in seconds, a state
//! is one series per possible value with 1 for the current one. Every family is announced
//! (`# HELP`, `# TYPE`) even when it has no series yet, so rules and dashboards can name them
//! all; packaging/prometheus/ has the alerting rules and the Grafana dashboard built on them.

use std::fmt::Write as _;

use medic_cloud::{Cloud, Dns};
use medic_detect::Health;

use super::{Controller, lock};
use crate::checks::Target;
use crate::core::TargetHealth;

/// The states a shard can be in, as `medic status` names them.
pub(super) const SHARD_STATES: [&str; 6] = [
    "ok",
    "degraded",
    "down",
    "misrouted",
    "unwritable",
    "routing unknown",
];

/// How a recovery can end ([`crate::journal::Outcome::label`]).
const OUTCOMES: [&str; 5] = ["completed", "alerted", "incomplete", "held", "failed"];

/// Writes a family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value as the text format needs it.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl<C: Cloud + 'static, D: Dns + 'static> Controller<C, D> {
    pub(crate) fn metrics(&self) -> String {
        let group = self.group_status();
        // The shards' states as the status computes them (routing, replicas, health).
        let shards = self.shard_states();
        let topology = label(&self.top().topology.name.value);
        let st = lock(&self.inner.st);
        let m = &st.metrics;
        let mut out = String::new();
        family(
            &mut out,
            "medic_build_info",
            "gauge",
            "The running medic's version and the topology it watches (always 1).",
        );
        let _ = writeln!(
            out,
            "medic_build_info{{version=\"{}\",topology=\"{topology}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        family(
            &mut out,
            "medic_group_leader",
            "gauge",
            "Whether this member leads its group (1) or follows (0), by topology (the group); no series outside a group.",
        );
        family(
            &mut out,
            "medic_group_term",
            "gauge",
            "The leader's term (the fencing token; 0 if nobody leads).",
        );
        family(
            &mut out,
            "medic_group_etcd_up",
            "gauge",
            "Whether etcd answered this member's last request.",
        );
        if let Some(g) = group {
            let _ = writeln!(
                out,
                "medic_group_leader{{topology=\"{topology}\",member=\"{}\"}} {}",
                label(&g.member),
                u8::from(g.leading)
            );
            let _ = writeln!(out, "medic_group_term {}", g.term.unwrap_or(0));
            let _ = writeln!(
                out,
                "medic_group_etcd_up {}",
                u8::from(g.etcd == "reachable")
            );
        }
        family(
            &mut out,
            "medic_checks_total",
            "counter",
            "Health checks by target kind and result.",
        );
        for ((kind, result), n) in &m.checks {
            let _ = writeln!(
                out,
                "medic_checks_total{{kind=\"{kind}\",result=\"{result}\"}} {n}"
            );
        }
        family(
            &mut out,
            "medic_check_duration_seconds",
            "summary",
            "Time the checks took.",
        );
        for (kind, (sum, count)) in &m.check_seconds {
            let _ = writeln!(
                out,
                "medic_check_duration_seconds_sum{{kind=\"{kind}\"}} {sum}\nmedic_check_duration_seconds_count{{kind=\"{kind}\"}} {count}"
            );
        }
        family(
            &mut out,
            "medic_target_up",
            "gauge",
            "Whether each target is up (1), suspect (0.5) or down (0).",
        );
        let mut listed: Vec<(&Target, &TargetHealth)> = st.core.health.iter().collect();
        listed.sort_by(|a, b| a.0.cmp(b.0));
        for (t, h) in listed {
            let v = match h.detector.health {
                Health::Up => 1.0,
                Health::Suspect { .. } => 0.5,
                Health::Down { .. } => 0.0,
            };
            let _ = writeln!(
                out,
                "medic_target_up{{target=\"{}\",machine=\"{}\"}} {v}",
                label(&t.to_string()),
                label(t.machine())
            );
        }
        family(
            &mut out,
            "medic_server_unmonitored",
            "gauge",
            "Redis servers a recovery left out of monitoring (a process not restarted, a crash loop held): 1 each.",
        );
        for (shard, machine) in &st.core.saved.unmonitored_servers {
            let _ = writeln!(
                out,
                "medic_server_unmonitored{{shard=\"{}\",machine=\"{}\"}} 1",
                label(shard),
                label(machine)
            );
        }
        family(
            &mut out,
            "medic_shard_state",
            "gauge",
            "Each shard's state as `medic status` names it: 1 for the one it is in.",
        );
        for (name, now) in &shards {
            let name = label(name);
            for state in SHARD_STATES {
                let _ = writeln!(
                    out,
                    "medic_shard_state{{shard=\"{name}\",state=\"{}\"}} {}",
                    state.replace(' ', "_"),
                    u8::from(state == *now)
                );
            }
        }
        family(
            &mut out,
            "medic_detection_seconds",
            "gauge",
            "From the first failed check to the verdict, last detection.",
        );
        if let Some(d) = m.detection_seconds {
            let _ = writeln!(out, "medic_detection_seconds {d}");
        }
        family(
            &mut out,
            "medic_recoveries_total",
            "counter",
            "Recoveries by outcome (completed, alerted, incomplete, held, failed).",
        );
        // Every outcome from 0: an alert on `increase()` sees the first one too.
        for o in OUTCOMES {
            let n = m.recoveries.get(o).copied().unwrap_or(0);
            let _ = writeln!(out, "medic_recoveries_total{{outcome=\"{o}\"}} {n}");
        }
        family(
            &mut out,
            "medic_step_duration_seconds",
            "summary",
            "Recovery steps by kind.",
        );
        for (k, (sum, count)) in &m.steps {
            let _ = writeln!(
                out,
                "medic_step_duration_seconds_sum{{kind=\"{k}\"}} {sum}\nmedic_step_duration_seconds_count{{kind=\"{k}\"}} {count}"
            );
        }
        family(
            &mut out,
            "medic_step_failures_total",
            "counter",
            "Failed step attempts by kind.",
        );
        for (k, n) in &m.step_failures {
            let _ = writeln!(out, "medic_step_failures_total{{kind=\"{k}\"}} {n}");
        }
        family(
            &mut out,
            "medic_proxy_repairs_total",
            "counter",
            "Proxies found routing other than intended by the reconcile, by proxy and whether the repair succeeded.",
        );
        let mut repairs = m.repairs.clone();
        let loaded = self.top();
        let proxies = loaded.topology.proxy_machines().map(str::to_owned).chain(
            loaded
                .topology
                .app_proxies
                .iter()
                .map(|a| a.value.machine.value.clone()),
        );
        for proxy in proxies {
            for result in ["repaired", "failed"] {
                repairs.entry((proxy.clone(), result)).or_default();
            }
        }
        for ((proxy, result), n) in &repairs {
            let _ = writeln!(
                out,
                "medic_proxy_repairs_total{{proxy=\"{}\",result=\"{result}\"}} {n}",
                label(proxy)
            );
        }
        family(
            &mut out,
            "medic_alerts_total",
            "counter",
            "Alerts raised by level.",
        );
        for l in ["critical", "warning"] {
            let n = m.alerts.get(l).copied().unwrap_or(0);
            let _ = writeln!(out, "medic_alerts_total{{level=\"{l}\"}} {n}");
        }
        family(
            &mut out,
            "medic_recovery_in_flight",
            "gauge",
            "How many recoveries are running.",
        );
        let _ = writeln!(out, "medic_recovery_in_flight {}", st.core.running.len());
        family(
            &mut out,
            "medic_status_streams_open",
            "gauge",
            "Status pages (event streams, GET /api/stream) open now.",
        );
        let _ = writeln!(
            out,
            "medic_status_streams_open {}",
            crate::stream::open_streams()
        );
        family(
            &mut out,
            "medic_status_snapshots_total",
            "counter",
            "Status snapshots computed for the event streams: one a second while any is open, however many are.",
        );
        let _ = writeln!(
            out,
            "medic_status_snapshots_total {}",
            crate::stream::snapshots()
        );
        let up = |t: &Target| {
            st.core
                .health
                .get(t)
                .is_some_and(|h| h.detector.health == Health::Up)
        };
        super::service_status::service_metrics(
            &loaded.topology,
            &st.core.saved.observed,
            &up,
            &mut out,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::OUTCOMES;
    use crate::journal::Outcome;

    #[test]
    fn every_outcome_is_announced_from_zero() {
        for o in [
            Outcome::Completed,
            Outcome::Alerted,
            Outcome::Incomplete { skipped: vec![] },
            Outcome::Held {
                reason: String::new(),
            },
            Outcome::Failed {
                step: 0,
                error: String::new(),
            },
        ] {
            assert!(OUTCOMES.contains(&o.label()), "{}", o.label());
        }
    }
}
