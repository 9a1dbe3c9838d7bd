//! What `medic status`, `medic history`, `medic events` and `/metrics` show.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use medic_cloud::{Cloud, Dns};
use medic_detect::{Health, Observation};
use medic_plan::Action;
use medic_playbook::Playbooks;
use medic_redis::Role;

use super::{Controller, ControllerError, InFlight, St, lock, probe, read, reconcile};
use crate::checks::Target;
use crate::core::TargetHealth;
use crate::journal::{RecoveryLog, now_ms};
use rustc_hash::FxHashMap;

impl<C: Cloud + 'static, D: Dns + 'static> Controller<C, D> {
    /// Each shard's state as [`Self::status`] names it (empty before its first reading),
    /// computed without building the status: `/metrics` asks for it at every scrape, and at
    /// thousands of servers the whole status is tens of megabytes of JSON values.
    pub(crate) fn shard_states(&self) -> Vec<(String, &'static str)> {
        let loaded = self.top();
        let top = &loaded.topology;
        let st = lock(&self.inner.st);
        let now = now_ms();
        top.shards
            .iter()
            .map(|s| {
                let name = &s.value.name.value;
                let Some(ss) = st.core.saved.observed.shards.get(name) else {
                    return (name.clone(), "");
                };
                let up = |machine: &str| {
                    let t = Target::Redis {
                        shard: name.clone(),
                        machine: machine.to_owned(),
                    };
                    st.core
                        .health
                        .get(&t)
                        .is_some_and(|h| h.detector.health == Health::Up)
                };
                let synced = ss
                    .replicas
                    .iter()
                    .filter(|r| r.offset.is_some() && up(&r.machine))
                    .count();
                let routing = routing_of(&st, top, name, now);
                (
                    name.clone(),
                    shard_state(up(&ss.master), &ss.master, &routing, synced),
                )
            })
            .collect()
    }

    pub fn status(&self) -> serde_json::Value {
        let group = self.group_status();
        let loaded = self.top();
        let top = &loaded.topology;
        let playbooks = read(&self.inner.playbooks).clone();
        let (v, spares) = {
            let st = lock(&self.inner.st);
            (View::of(&st, top, &playbooks), st.spares.clone())
        };
        // The JSON is built from the copy: a check's result never waits for a status.
        let obs = &v.observed;
        let mut by_machine: BTreeMap<&str, Vec<(&Target, &TargetHealth)>> = BTreeMap::new();
        for (t, h) in &v.health {
            by_machine.entry(t.machine()).or_default().push((t, h));
        }
        for targets in by_machine.values_mut() {
            targets.sort_by(|a, b| a.0.cmp(b.0));
        }
        let health_of = |t: &Target| -> serde_json::Value {
            match v.health.get(t) {
                None => serde_json::json!({"state": "unknown"}),
                Some(h) => health_json(h),
            }
        };
        let up = |t: &Target| {
            v.health
                .get(t)
                .is_some_and(|h| h.detector.health == Health::Up)
        };
        let machines: Vec<serde_json::Value> = top
            .machines
            .iter()
            .map(|m| {
                let name = &m.value.name.value;
                let ms = obs.machines.get(name);
                let of_machine = by_machine.get(name.as_str()).map_or(&[][..], Vec::as_slice);
                let targets: Vec<serde_json::Value> = of_machine
                    .iter()
                    .map(|(t, h)| serde_json::json!({"target": t.to_string(), "health": health_json(h)}))
                    .collect();
                let any = |f: fn(&Health) -> bool| of_machine.iter().any(|(_, h)| f(&h.detector.health));
                let state = if v.maintenance.contains(name) {
                    "maintenance"
                } else if v.busy.contains(name) {
                    "recovering"
                } else if v.unmonitored.contains(name) {
                    "unmonitored"
                } else if m.value.role.value == medic_topology::Role::Monitor {
                    "this host"
                } else if targets.is_empty() {
                    "unknown"
                } else if any(|h| matches!(h, Health::Down { .. })) {
                    "down"
                } else if any(|h| matches!(h, Health::Suspect { .. })) {
                    "suspect"
                } else {
                    "up"
                };
                serde_json::json!({
                    "name": name,
                    "role": m.value.role.value.as_str(),
                    "address": ms.and_then(|s| s.address),
                    "instance": ms.and_then(|s| s.instance_id.clone()),
                    "state": state,
                    "targets": targets,
                    // Servers a recovery left out of monitoring (their process not restarted).
                    "unmonitored_servers": v
                        .unmonitored_servers
                        .iter()
                        .filter(|(_, m)| m == name)
                        .map(|(s, _)| s.as_str())
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
        let shards: Vec<serde_json::Value> = top
            .shards
            .iter()
            .map(|s| {
                let name = &s.value.name.value;
                let Some(ss) = obs.shards.get(name) else {
                    return serde_json::json!({"name": name});
                };
                let master_t = Target::Redis {
                    shard: name.clone(),
                    machine: ss.master.clone(),
                };
                let master_up = up(&master_t);
                let replicas: Vec<serde_json::Value> = ss
                    .replicas
                    .iter()
                    .map(|r| {
                        let t = Target::Redis {
                            shard: name.clone(),
                            machine: r.machine.clone(),
                        };
                        serde_json::json!({
                            "machine": r.machine,
                            "in_sync": r.offset.is_some() && up(&t),
                            "offset": r.offset,
                            "health": health_of(&t),
                        })
                    })
                    .collect();
                let synced = replicas
                    .iter()
                    .filter(|r| r["in_sync"].as_bool() == Some(true))
                    .count();
                let routing = v.routing.get(name).cloned().unwrap_or_default();
                let state = shard_state(master_up, &ss.master, &routing, synced);
                let ShardRouting { routes, writes, .. } = routing;
                serde_json::json!({
                    "name": name,
                    "port": s.value.port.value,
                    "master": ss.master,
                    "master_offset": ss.master_offset,
                    "generation": ss.generation,
                    "master_health": health_of(&master_t),
                    "replicas": replicas,
                    "routes": routes,
                    "writes": writes,
                    "state": state,
                })
            })
            .collect();
        let dns: Vec<serde_json::Value> = top
            .dns
            .iter()
            .flat_map(|d| d.value.records.iter())
            .map(|r| {
                let values: Vec<Option<IpAddr>> = r
                    .value
                    .machines
                    .iter()
                    .map(|m| obs.address(&m.value))
                    .collect();
                serde_json::json!({"name": r.value.name.value, "machines": r.value.machines.iter().map(|m| &m.value).collect::<Vec<_>>(), "values": values})
            })
            .collect();
        let apps: Vec<serde_json::Value> = top
            .app_proxies
            .iter()
            .map(|a| serde_json::json!({"machine": a.value.machine.value, "primary": a.value.primary.value, "backup": a.value.backup.value}))
            .collect();
        let services: Vec<serde_json::Value> = top
            .services
            .iter()
            .map(|s| super::service_status::service_json(&s.value, obs, &up, &health_of))
            .collect();
        serde_json::json!({
            "topology": top.name.value,
            "provider": top.provider.value.kind(),
            "now_ms": now_ms(),
            "machines": machines,
            "shards": shards,
            "services": services,
            "proxies": top.proxy_machines().collect::<Vec<_>>(),
            "app_proxies": apps,
            "dns": dns,
            "spares": spares,
            "in_flight": v.running.first(),
            "running": v.running,
            "queued": v.queued,
            "maintenance": v.maintenance,
            "alerts": v.alerts.iter().rev().collect::<Vec<_>>(),
            "group": group,
        })
    }

    /// The checks' mean latency per second and kind, the last minutes (`/api/latency`):
    /// `{kind: [[second's start in ms, mean ms], ...]}`.
    pub fn check_latency(&self) -> serde_json::Value {
        lock(&self.inner.st).metrics.latency.json(now_ms())
    }

    /// Every recovery in the journal, newest first, with step durations and the estimated
    /// window of writes that may have been lost.
    /// Only those begun at `since_ms` or later; `offset` and `limit` page it ([`super::history::MAX_PAGE`] at most); each journal is
    /// read again only when it changed.
    pub fn history(
        &self,
        since_ms: u64,
        offset: usize,
        limit: usize,
    ) -> Result<serde_json::Value, ControllerError> {
        let page =
            lock(&self.inner.history).page(self.inner.journal.dir(), since_ms, offset, limit)?;
        Ok(serde_json::Value::Array(page))
    }
}

/// What the status shows of the controller's state, copied under its lock: a copy of each
/// target's health (cheap next to writing it out), the routing per shard (proxies × shards),
/// the rest as it is. The checks take the same lock for each result; they never wait for a
/// status to be written.
struct View {
    health: FxHashMap<Target, TargetHealth>,
    observed: medic_plan::ObservedState,
    maintenance: BTreeSet<String>,
    unmonitored: BTreeSet<String>,
    unmonitored_servers: BTreeSet<(String, String)>,
    busy: BTreeSet<String>,
    routing: BTreeMap<String, ShardRouting>,
    running: Vec<InFlight>,
    queued: Vec<String>,
    alerts: Vec<super::AlertRecord>,
}

/// One shard's routing as the status shows it.
#[derive(Debug, Clone, Default)]
struct ShardRouting {
    /// Each proxy's route for the shard.
    routes: Vec<serde_json::Value>,
    /// The write probes through each proxy.
    writes: Vec<serde_json::Value>,
    /// Writes fail now through a proxy the monitor host can read.
    unwritable: bool,
}

impl View {
    fn of(st: &St, top: &medic_topology::Topology, playbooks: &Playbooks) -> View {
        let now = now_ms();
        let routing = top
            .shards
            .iter()
            .map(|s| {
                let name = &s.value.name.value;
                let mut routing = routing_of(st, top, name, now);
                routing.writes = probe::writes_of(&st.writes, name);
                (name.clone(), routing)
            })
            .collect();
        View {
            health: st.core.health.clone(),
            observed: st.core.saved.observed.clone(),
            maintenance: st.core.saved.maintenance.clone(),
            unmonitored: st.core.saved.unmonitored.clone(),
            unmonitored_servers: st.core.saved.unmonitored_servers.clone(),
            busy: st.core.busy().cloned().collect(),
            routing,
            running: in_flight(st, playbooks),
            queued: st.core.queued().map(|r| r.event.to_string()).collect(),
            alerts: st.alerts.iter().cloned().collect(),
        }
    }
}

/// What clients get for the shard: the server each proxy sends its writes to, whether writes
/// fail now through a proxy the monitor host can read (the write probes themselves are the
/// status's alone: [`View::of`]).
fn routing_of(st: &St, top: &medic_topology::Topology, name: &str, now: u64) -> ShardRouting {
    let backend = medic_plan::vars::proxy_backend(top, name);
    let routes: Vec<serde_json::Value> = top
        .proxy_machines()
        .map(|p| reconcile::route_of(st, p, &backend, now))
        .collect();
    // (One the monitor host cannot reach at all is `routing unknown`, not known to refuse
    // its clients.)
    let unwritable = st.writes.iter().any(|((p, sh), w)| {
        sh == name
            && !w.ok
            && now.saturating_sub(w.at_ms) <= probe::PROBE_STALE_MS
            && st
                .routing
                .get(p)
                .is_some_and(|r| now.saturating_sub(r.read_ms) <= probe::PROBE_STALE_MS)
    });
    ShardRouting {
        routes,
        writes: Vec::new(),
        unwritable,
    }
}

/// A shard's state as `medic status` names it, from its master's health, where the proxies
/// route it and how many replicas are in sync.
fn shard_state(
    master_up: bool,
    master: &str,
    routing: &ShardRouting,
    synced: usize,
) -> &'static str {
    // (Before the first readings after start, a proxy counts as neither.)
    let read = || routing.routes.iter().filter(|r| r["pending"] != true);
    let misrouted = read().any(|r| {
        r["to"]
            .as_array()
            .is_some_and(|to| to.len() != 1 || to[0] != master)
    });
    let unknown = read().any(|r| r["to"].is_null());
    if !master_up {
        "down"
    } else if misrouted {
        "misrouted"
    } else if routing.unwritable {
        "unwritable"
    } else if unknown {
        "routing unknown"
    } else if synced == 0 {
        "degraded"
    } else {
        "ok"
    }
}

fn health_json(h: &TargetHealth) -> serde_json::Value {
    serde_json::json!({
        "state": health_label(h.detector.health),
        "last": observation_label(h.last),
        "detail": h.detail,
        "last_ok_ms": h.last_ok_ms,
        // The first failed check of the failure under way (none while it answers).
        "first_fail_ms": h.first_fail_ms,
        "role": h.role.map(Role::as_str),
        "offset": h.offset,
        "checks": h.checks,
    })
}

/// The running recoveries, oldest first, with the step each is in.
fn in_flight(st: &St, playbooks: &Playbooks) -> Vec<InFlight> {
    let mut out: Vec<InFlight> = st
        .core
        .running
        .values()
        .map(|r| {
            let step = r
                .current
                .and_then(|(i, _)| r.plan.steps.iter().find(|s| s.index == i));
            InFlight {
                recovery: r.plan.recovery.clone(),
                event: r.plan.event.to_string(),
                trigger: r.trigger.clone(),
                started_ms: r.started_ms,
                step: r.current.map_or(0, |(i, _)| i),
                steps: r.plan.steps.len(),
                kind: step.map_or("", |s| s.action.kind()).to_owned(),
                target: step
                    .map(|s| medic_plan::describe::describe(s, playbooks).target)
                    .unwrap_or_default(),
                step_started_ms: r.current.map_or(r.started_ms, |(_, at)| at),
            }
        })
        .collect();
    out.sort_by_key(|f| f.started_ms);
    out
}

pub(crate) fn observation_label(o: Observation) -> &'static str {
    match o {
        Observation::Ok => "ok",
        Observation::Refused => "refused",
        Observation::Silent => "silent",
        Observation::Unhealthy => "unhealthy",
    }
}

fn health_label(h: Health) -> &'static str {
    match h {
        Health::Up => "up",
        Health::Suspect { .. } => "suspect",
        Health::Down { .. } => "down",
    }
}

/// One recovery for `medic history`.
pub fn history_entry(l: &RecoveryLog) -> serde_json::Value {
    let steps: Vec<serde_json::Value> = l
        .plan
        .steps
        .iter()
        .map(|s| {
            let d = l.done.get(&s.index);
            let failed: Vec<&String> = l
                .failures
                .iter()
                .filter(|(i, _)| *i == s.index)
                .map(|(_, e)| e)
                .collect();
            serde_json::json!({
                "index": s.index,
                "kind": s.action.kind(),
                "status": if d.is_some() { "done" } else if !failed.is_empty() { "failed" } else { "not run" },
                "duration_ms": d.map(|d| d.duration_ms),
                "ended_ms": d.map(|d| d.at_ms),
                "summary": d.map(|d| d.summary.clone()),
                "errors": failed,
            })
        })
        .collect();
    // Writes acknowledged by the old master after its last good check may not have reached
    // the replica: the window closes when the promoted replica takes over.
    let promoted_at = l
        .plan
        .steps
        .iter()
        .filter(|s| matches!(s.action, Action::PromoteReplica { .. }))
        .filter_map(|s| l.done.get(&s.index).map(|d| d.at_ms))
        .max();
    let window = match (l.master_last_ok_ms, promoted_at) {
        (Some(ok), Some(p)) => Some(p.saturating_sub(ok)),
        _ => None,
    };
    serde_json::json!({
        "id": l.id,
        "event": l.plan.event.to_string(),
        "trigger": l.trigger,
        "started_ms": l.begun_ms,
        "ended_ms": l.end.as_ref().map(|e| e.0),
        "outcome": l.end.as_ref().map(|e| e.1.clone()),
        "resumed": l.resumed.len(),
        "detection_ms": l.first_failure_ms.map(|f| l.begun_ms.saturating_sub(f)),
        "write_loss_window_ms": window,
        "steps": steps,
    })
}
