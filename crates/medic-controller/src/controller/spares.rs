//! Tending the spare pool (`policy.spares`): every [`TEND_EVERY`], the spares the cloud holds
//! are listed and handed to the core ([`crate::core::Core::tend_spares`]); the preparations it
//! queues start as recoveries, and the instances it retires are terminated here — each read
//! again first, so one a replacement took meanwhile is left alone. The same listing reports
//! orphans ([`crate::core::Core::report_orphans`]).

use std::time::Duration;

use medic_cloud::spares::{TAG_SPARE, TAG_SPARE_FIT, is_ready, is_spare};
use medic_cloud::{Cloud, Dns, TAG_RECOVERY, list_owned};
use medic_topology::Role;
use serde::Serialize;

use super::{Controller, lock};
use crate::core::SpareSeen;
use crate::journal::now_ms;

/// How often the pool is listed and tended.
pub(super) const TEND_EVERY: Duration = Duration::from_secs(5);
/// Without spares in the policy, every how many rounds the cloud is swept for spares a former
/// policy left (every minute).
const SWEEP_EVERY: u64 = 12;

/// One spare, for `medic status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SpareView {
    pub id: String,
    pub role: String,
    /// `ready`, or `preparing`.
    pub state: String,
    /// The instance's own state (`running`, `stopped`, ...).
    pub instance: String,
    pub address: Option<String>,
}

impl<C: Cloud + 'static, D: Dns + 'static> Controller<C, D> {
    pub(super) async fn tend_spares_forever(&self) {
        let mut round: u64 = 0;
        loop {
            // Without spares in the policy, a slow sweep for those a former policy left.
            let wanted = self
                .top()
                .topology
                .policy
                .spares
                .values()
                .any(|n| n.value > 0);
            if wanted || round.is_multiple_of(SWEEP_EVERY) {
                self.tend_spares().await;
            }
            round += 1;
            tokio::time::sleep(TEND_EVERY).await;
        }
    }

    /// Lists the pool, lets the core decide, retires what it says.
    pub(crate) async fn tend_spares(&self) {
        let loaded = self.top();
        let top = &loaded.topology;
        if !top.provider.value.can_launch() || !top.managed() || !self.may_act() {
            return;
        }
        let owned = match list_owned(&self.inner.cloud, &top.name.value).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot list medic's instances (spares, orphans).");
                return;
            }
        };
        let mut seen = Vec::new();
        let mut views = Vec::new();
        for i in owned.iter().filter(|i| is_spare(i)) {
            let Some(role) = i.tag(TAG_SPARE).and_then(role_named) else {
                continue;
            };
            seen.push(SpareSeen {
                id: i.id.clone(),
                role,
                ready: is_ready(i),
                recovery: i.tag(TAG_RECOVERY).map(str::to_owned),
                fit: i.tag(TAG_SPARE_FIT).map(str::to_owned),
            });
            views.push(SpareView {
                id: i.id.clone(),
                role: role.as_str().to_owned(),
                state: if is_ready(i) { "ready" } else { "preparing" }.to_owned(),
                instance: format!("{:?}", i.state).to_lowercase(),
                address: i.address.map(|a| a.to_string()),
            });
        }
        let live: Vec<medic_cloud::Instance> =
            owned.into_iter().filter(|i| !i.state.is_gone()).collect();
        let (tend, orphans) = {
            let mut st = lock(&self.inner.st);
            st.spares = views;
            let tend = st.core.tend_spares(&seen, now_ms());
            (tend, st.core.report_orphans(&live))
        };
        self.carry_out(tend.out);
        self.carry_out(orphans);
        self.kick();
        for r in tend.retire {
            self.retire_spare(&r.id, &r.why, r.unready).await;
        }
    }

    async fn retire_spare(&self, id: &str, why: &str, unready: bool) {
        // Still leading; the rest is checked again under the lock takings hold: a replacement
        // may have taken it since it was listed, or (retired as unready) its preparation
        // tagged it ready since.
        if !self.may_act() {
            return;
        }
        match medic_cloud::spares::retire(&self.inner.cloud, id, unready).await {
            Ok(true) => self.notify(
                "spare_retired",
                &format!("spare {id} terminated: {why}"),
                Some(serde_json::json!({ "instance": id })),
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(instance = %id, error = %e, "Cannot terminate a spare."),
        }
    }
}

fn role_named(s: &str) -> Option<Role> {
    [Role::Redis, Role::Haproxy, Role::App]
        .into_iter()
        .find(|r| r.as_str() == s)
}
