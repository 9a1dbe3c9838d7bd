//! What operators ask (the HTTP API calls these), and what medic tells them: alerts, events
//! and webhooks.

use medic_cloud::{Cloud, Dns};
use medic_plan::{AlertLevel, Event, plan_recovery};

use super::{AlertRecord, Controller, lock, read};
use crate::core::{ALERTS_KEPT, Request};
use crate::journal::now_ms;

impl<C: Cloud + 'static, D: Dns + 'static> Controller<C, D> {
    // ---- alerts and notifications -----------------------------------------------------

    pub(crate) fn alert(&self, level: AlertLevel, message: String) {
        // It may quote remote text (a command's stderr, a server's error).
        let message = crate::hygiene::printable(&crate::hygiene::without_secrets(
            &message,
            self.inner.secrets.values(),
        ));
        match level {
            AlertLevel::Critical => tracing::error!(alert = "critical", "{message}"),
            AlertLevel::Warning => tracing::warn!(alert = "warning", "{message}"),
        }
        {
            let mut st = lock(&self.inner.st);
            st.alerts.push_back(AlertRecord {
                at_ms: now_ms(),
                level,
                message: message.clone(),
            });
            while st.alerts.len() > ALERTS_KEPT {
                st.alerts.pop_front();
            }
            *st.metrics
                .alerts
                .entry(match level {
                    AlertLevel::Critical => "critical",
                    AlertLevel::Warning => "warning",
                })
                .or_default() += 1;
        }
        self.notify(
            "alert",
            &message,
            Some(serde_json::json!({ "level": level })),
        );
    }

    pub(super) fn record_event(&self, kind: &str, message: &str) {
        let message = crate::hygiene::printable(message);
        lock(&self.inner.st).events.push(kind, message, now_ms());
    }

    /// Events after `after` (a sequence number), oldest first.
    pub fn events(&self, after: u64) -> serde_json::Value {
        let st = lock(&self.inner.st);
        serde_json::json!({
            "next": st.events.next(),
            "events": st.events.after(after),
        })
    }

    pub(super) fn notify(&self, event: &str, message: &str, details: Option<serde_json::Value>) {
        self.record_event(event, message);
        // In a group the leader tells the humans (one webhook per event, not one per member);
        // a follower does only while nobody leads (etcd lost, a takeover under way).
        if event != "group" && self.follows_a_leader() {
            return;
        }
        let n = read(&self.inner.notifier).clone();
        let topology = self.top().topology.name.value.clone();
        n.send(event, &topology, message, details);
    }

    // ---- operator commands (the HTTP API calls these) ----------------------------------

    pub(crate) fn check_token(&self, authorization: Option<&str>) -> bool {
        authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), self.inner.token.as_bytes()))
    }

    /// `medic recover MACHINE`: the seed's emergency procedure, planned and journaled.
    /// In a group, only the leader takes operators' commands (a follower's would be lost).
    fn leader_only(&self) -> Result<(), (u16, String)> {
        match self.group_status() {
            Some(g) if !g.leading => Err((
                409,
                format!(
                    "{} is a follower in the group; the leader is {}: send the command to the leader's medic",
                    g.member,
                    g.leader
                        .as_deref()
                        .unwrap_or("nobody (no member leads now: is etcd reachable?)")
                ),
            )),
            _ => Ok(()),
        }
    }

    pub(crate) fn recover_machine(&self, machine: &str) -> Result<String, (u16, String)> {
        self.leader_only()?;
        if self.top().topology.machine(machine).is_none() {
            return Err((404, format!("no machine `{machine}` in the topology")));
        }
        {
            let mut st = lock(&self.inner.st);
            st.core
                .recover_machine(machine, now_ms())
                .map_err(|e| (409, e))?;
            self.save(&st);
        }
        self.kick();
        Ok(format!("recovery of {machine} queued"))
    }

    /// `medic switchover SHARD [--to MACHINE]`: planned, zero loss. Checked against the current
    /// state now, so a refusal is the operator's answer rather than a failed recovery.
    pub(crate) fn switchover(
        &self,
        shard: &str,
        to: Option<&str>,
    ) -> Result<String, (u16, String)> {
        self.leader_only()?;
        let loaded = self.top();
        let event = Event::Switchover {
            shard: shard.to_owned(),
            to: to.map(str::to_owned),
        };
        let queued = {
            let mut st = lock(&self.inner.st);
            let plan = plan_recovery(&loaded.topology, &st.core.saved.observed, &event, "check")
                .map_err(|e| (409, e.to_string()))?;
            st.core
                .request(Request {
                    event,
                    trigger: format!("manual: medic switchover {shard}"),
                    first_failure_ms: None,
                    master_last_ok_ms: None,
                    queued_ms: now_ms(),
                    detected: false,
                    resume: None,
                })
                .then_some(plan.steps.len())
        };
        let Some(steps) = queued else {
            return Err((
                409,
                format!("a switchover of {shard} is already queued or running"),
            ));
        };
        self.kick();
        Ok(format!(
            "switchover of {shard} queued ({steps} steps); `medic history` shows it"
        ))
    }

    /// `medic unmonitor|monitor MACHINE`: maintenance, persisted.
    pub(crate) fn set_maintenance(&self, machine: &str, on: bool) -> Result<String, (u16, String)> {
        if self.top().topology.machine(machine).is_none() {
            return Err((404, format!("no machine `{machine}` in the topology")));
        }
        self.leader_only()?;
        let mut st = lock(&self.inner.st);
        st.core.set_maintenance(machine, on);
        self.save(&st);
        // On disk before the operator is told.
        self.inner.saver.flush().map_err(|e| (500, e))?;
        Ok(if on {
            format!(
                "{machine} is in maintenance: not checked, never recovered, until `medic monitor {machine}`"
            )
        } else {
            format!("{machine} is monitored")
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
