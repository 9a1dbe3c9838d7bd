//! What this member of the group does, once a tick: renew its lease, stand for election,
//! publish its view and read the others'; take over (state and open journals from etcd) when
//! it wins, stand down when it may no longer act, follow the leader's state while it follows;
//! and the leader's writes of the state to etcd.

use std::collections::BTreeMap;
use std::time::Duration;

use medic_cloud::{Cloud, Dns};
use medic_coord::etcd::EtcdError;
use medic_detect::Observation;
use medic_plan::AlertLevel;

use super::{ETCD_ALERT_EVERY_MS, Group, MachineView, View};
use crate::controller::{Controller, lock};
use crate::journal::now_ms;
use crate::store::Saved;

impl<C: Cloud + 'static, D: Dns + 'static> Controller<C, D> {
    fn group(&self) -> Option<&Group> {
        self.inner.group.as_ref()
    }

    /// Runs the group's duties until the controller stops.
    pub(in crate::controller) async fn run_group(&self) {
        let Some(g) = self.group() else { return };
        let writer = {
            let c = self.clone();
            tokio::spawn(async move { c.write_states().await })
        };
        while !self.stopping() {
            self.group_tick(g).await;
            let tick = g.tick();
            // Between ticks, a leader whose tenure runs out stands down on time.
            let deadline = tokio::time::Instant::now() + tick;
            while tokio::time::Instant::now() < deadline && !self.stopping() {
                if lock(&g.st).token.is_some() && g.acting_token().is_none() {
                    self.stand_down(
                        "its lease may have expired (etcd did not confirm a renewal in time)",
                    );
                }
                tokio::time::sleep(Duration::from_millis(100).min(tick)).await;
            }
        }
        writer.abort();
        let lease = lock(&g.st).lease;
        if let Some(id) = lease {
            // Leave at once rather than when the lease runs out.
            let _ = g.etcd.revoke(id).await;
        }
    }

    async fn group_tick(&self, g: &Group) {
        let result = self.renew_and_campaign(g).await;
        let now = now_ms();
        match result {
            Ok(()) => {
                let mut st = lock(&g.st);
                if st.etcd_error.take().is_some() {
                    drop(st);
                    self.group_event("etcd answers again");
                    st = lock(&g.st);
                }
                st.etcd_ok_ms = Some(now);
            }
            Err(e) => {
                let text = e.to_string();
                let alert = {
                    let mut st = lock(&g.st);
                    st.etcd_error = Some(text.clone());
                    // Who leads is unknown while etcd does not answer (and every member's
                    // webhooks speak, see `notify`).
                    st.leader = None;
                    let due = now.saturating_sub(st.alerted_ms) >= ETCD_ALERT_EVERY_MS;
                    if due {
                        st.alerted_ms = now;
                    }
                    due
                };
                if alert {
                    self.alert(
                        AlertLevel::Critical,
                        format!("etcd cannot be reached ({text}): no member of the group performs a recovery until it answers; the checks and alerts go on"),
                    );
                }
                return;
            }
        }
        self.publish_view(g).await;
        let (leader, lease) = {
            let st = lock(&g.st);
            (st.leader.clone(), st.lease)
        };
        // This process leads if the key is under its own lease (not merely its name: a member
        // restarted under the same name waits for its predecessor's lease to run out).
        let me = leader
            .as_ref()
            .filter(|l| l.name == g.member && Some(l.lease) == lease);
        let leading = lock(&g.st).token;
        match (me, leading) {
            (Some(l), None) if g.acting_token_from(l.token) => self.take_over(g, l.token).await,
            (Some(l), Some(t)) if l.token != t => {
                self.stand_down("the leader key was created again (a new term)");
            }
            (None, Some(_)) => {
                let who = leader.map_or("nobody".to_owned(), |l| l.name);
                self.stand_down(&format!("etcd says {who} leads"));
            }
            _ => {}
        }
        if lock(&g.st).token.is_none() {
            self.follow_state(g).await;
        }
    }

    async fn renew_and_campaign(&self, g: &Group) -> Result<(), EtcdError> {
        let sent = g.mono_ms();
        let lease = lock(&g.st).lease;
        match lease {
            None => {
                let l = g.etcd.grant(g.ttl).await?;
                let mut st = lock(&g.st);
                st.lease = Some(l.id);
                st.granted_ms = Some(sent);
                st.tenure.renewed(sent);
            }
            Some(id) => match g.etcd.keep_alive(id).await {
                Ok(_) => lock(&g.st).tenure.renewed(sent),
                Err(EtcdError::LeaseGone { .. }) => {
                    {
                        let mut st = lock(&g.st);
                        st.lease = None;
                        st.tenure.lost();
                    }
                    self.stand_down("its lease is gone");
                    return Ok(());
                }
                Err(e) => return Err(e),
            },
        }
        let (lease, hold) = {
            let st = lock(&g.st);
            (st.lease, st.hold_until_ms)
        };
        let leader = match lease {
            Some(id) if now_ms() >= hold => {
                Some(g.etcd.campaign(&g.keys.leader, &g.member, id).await?)
            }
            _ => g.etcd.leader(&g.keys.leader).await?,
        };
        let views = g.etcd.range_prefix(&g.keys.views).await?;
        let mut st = lock(&g.st);
        st.leader = leader;
        st.views = views
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_str::<View>(&v).ok())
            .map(|v| (v.member.clone(), v))
            .collect();
        Ok(())
    }

    /// Publishes what this member sees, under its lease.
    async fn publish_view(&self, g: &Group) {
        let Some(lease) = lock(&g.st).lease else {
            return;
        };
        let mut machines: BTreeMap<String, MachineView> = BTreeMap::new();
        {
            let st = lock(&self.inner.st);
            for (t, h) in &st.core.health {
                let m = machines.entry(t.machine().to_owned()).or_default();
                m.ok_ms = m.ok_ms.max(h.last_ok_ms);
                if h.last != Observation::Ok
                    && let Some(f) = h.first_fail_ms
                {
                    m.failing_since_ms = Some(m.failing_since_ms.map_or(f, |s| s.min(f)));
                }
            }
        }
        let view = View {
            member: g.member.clone(),
            at_ms: now_ms(),
            leading: lock(&g.st).token.is_some(),
            machines,
        };
        if let Ok(text) = serde_json::to_string(&view) {
            let key = format!("{}{}", g.keys.views, g.member);
            if let Err(e) = g.etcd.put_leased(&key, &text, lease).await {
                tracing::warn!(error = %e, "Cannot publish this member's view.");
            }
        }
    }

    /// A follower takes the leader's state (where the machines are now).
    async fn follow_state(&self, g: &Group) {
        let Ok(Some(text)) = g.etcd.get(&g.keys.state).await else {
            return;
        };
        if lock(&g.st).state_text.as_deref() == Some(text.as_str()) {
            return;
        }
        let topology = self.top().topology.name.value.clone();
        match serde_json::from_str::<Saved>(&text) {
            Ok(saved) if saved.topology == topology => self.adopt(saved).await,
            Ok(_) => return,
            Err(e) => tracing::warn!(error = %e, "The group's state in etcd is not medic state."),
        }
        lock(&g.st).state_text = Some(text);
    }

    /// Takes the group's state; the SSH host keys of machines another member replaced are
    /// learned from the cloud (as the member that launched them did).
    async fn adopt(&self, saved: Saved) {
        let before = self.machines_now();
        {
            let mut st = lock(&self.inner.st);
            st.core.adopt(saved);
            self.save(&st);
        }
        self.learn_replaced(&before).await;
    }

    fn machines_now(&self) -> BTreeMap<String, medic_plan::MachineState> {
        lock(&self.inner.st).core.saved.observed.machines.clone()
    }

    /// Learns the host keys of the machines whose instance is not the one in `before`.
    async fn learn_replaced(&self, before: &BTreeMap<String, medic_plan::MachineState>) {
        let changed: Vec<(String, std::net::IpAddr, String)> = self
            .machines_now()
            .into_iter()
            .filter(|(name, m)| {
                before
                    .get(name)
                    .is_none_or(|b| b.instance_id != m.instance_id)
            })
            .filter_map(|(name, m)| Some((name, m.address?, m.instance_id?)))
            .collect();
        let loaded = self.top();
        for (machine, ip, id) in changed {
            self.learn_host_keys(&loaded.topology, &machine, Some(ip), &id)
                .await;
        }
    }

    /// This member won the election: the state and the open journals from etcd, then the
    /// recoveries in flight resume and new ones may start.
    async fn take_over(&self, g: &Group, token: i64) {
        let topology = self.top().topology.name.value.clone();
        let journals = match g.etcd.range_prefix(&g.keys.journal).await {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read the journals from etcd; not leading yet.");
                return;
            }
        };
        let state = match g.etcd.get(&g.keys.state).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read the state from etcd; not leading yet.");
                return;
            }
        };
        if let Some(text) = &state
            && let Ok(saved) = serde_json::from_str::<Saved>(text)
            && saved.topology == topology
        {
            self.adopt(saved).await;
        }
        // The journal is etcd's: local copies of open recoveries it does not have were never
        // acted on (their first guard failed) and are set aside.
        let mut in_etcd = std::collections::BTreeSet::new();
        for (key, text) in &journals {
            let id = key.trim_start_matches(&g.keys.journal).to_owned();
            if let Err(e) = self.inner.journal.install(&id, text) {
                tracing::error!(error = %e, "Cannot write the journal from etcd; not leading yet.");
                return;
            }
            in_etcd.insert(id);
        }
        if let Ok(open) = self.inner.journal.open_recoveries() {
            for log in open {
                if !in_etcd.contains(&log.id) {
                    match self.inner.journal.move_aside(&log.id, "superseded") {
                        Ok(to) => {
                            tracing::warn!(recovery = %log.id, to = %to.display(), "A local journal etcd does not have was set aside.")
                        }
                        Err(e) => tracing::error!(error = %e, "Cannot set a local journal aside."),
                    }
                }
            }
        }
        {
            let mut st = lock(&g.st);
            st.token = Some(token);
            st.state_text = state;
        }
        // Resumed first (they take the place of this member's own verdicts for the same
        // machines), then allowed to start. Resuming applies what the journal's steps did (a
        // replacement launched by the previous leader): its host keys are learned before a
        // step needs them.
        let before = self.machines_now();
        if let Err(e) = self.resume_open() {
            tracing::error!(error = %e, "Cannot resume the journals.");
        }
        self.learn_replaced(&before).await;
        lock(&self.inner.st).core.leading = true;
        {
            let st = lock(&self.inner.st);
            self.save(&st);
        }
        self.group_event(&format!("{} leads the group now (term {token})", g.member));
        self.kick();
    }

    /// A change in the group, for `medic events`, the log and the webhooks.
    fn group_event(&self, message: &str) {
        tracing::info!("{message}");
        self.record_event("group", message);
        self.notify("group", message, None);
    }

    /// Stops acting at once: no recovery starts, and the running ones stop before their next
    /// step (the leader resumes them from etcd).
    pub(in crate::controller) fn stand_down(&self, why: &str) {
        let Some(g) = self.group() else { return };
        if lock(&g.st).token.take().is_none() {
            return;
        }
        lock(&self.inner.st).core.stand_down();
        tracing::warn!(member = %g.member, "Not leading any more: {why}.");
        self.alert(
            AlertLevel::Warning,
            format!("{} does not lead the group any more: {why}", g.member),
        );
    }

    /// `medic step-down`: gives the lease up (another member takes over at once) and does not
    /// stand again for two leases.
    pub(crate) fn step_down(&self) -> Result<String, (u16, String)> {
        let Some(g) = self.group() else {
            return Err((
                409,
                "this controller runs alone (no controller.cluster)".to_owned(),
            ));
        };
        if lock(&g.st).token.is_none() {
            return Err((409, format!("{} does not lead the group", g.member)));
        }
        let lease = {
            let mut st = lock(&g.st);
            st.hold_until_ms = now_ms() + 2 * g.ttl.as_millis() as u64;
            st.tenure.lost();
            st.lease.take()
        };
        self.stand_down("an operator asked it to step down");
        if let Some(id) = lease {
            let etcd = g.etcd.clone();
            tokio::spawn(async move {
                if let Err(e) = etcd.revoke(id).await {
                    tracing::warn!(error = %e, "Cannot give the lease up; it runs out by itself.");
                }
            });
        }
        Ok(format!(
            "{} stepped down: it does not stand for {} s; another member takes over",
            g.member,
            2 * g.ttl.as_secs()
        ))
    }

    /// Writes the leader's state to etcd, the latest first, under its token.
    async fn write_states(&self) {
        let Some(g) = self.group() else { return };
        let mut rx = g.state_tx.subscribe();
        while rx.changed().await.is_ok() {
            let text = rx.borrow_and_update().clone();
            let Some(text) = text else { continue };
            // Until it lands, a newer state replaces it, or this member stops leading.
            while let Some(token) = g.acting_token() {
                match g
                    .etcd
                    .put_if_leader(&g.keys.leader, token, &g.keys.state, &text)
                    .await
                {
                    Ok(true) => {
                        lock(&g.st).state_text = Some(text);
                        break;
                    }
                    Ok(false) => {
                        self.stand_down("etcd refused its write (another member leads)");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Cannot write the state to etcd; trying again.");
                        tokio::time::sleep(g.tick()).await;
                        if rx.has_changed().unwrap_or(false) {
                            break;
                        }
                    }
                }
            }
        }
    }
}

impl Group {
    /// Whether this member may act under `token` now (it holds the key and its tenure runs).
    fn acting_token_from(&self, token: i64) -> bool {
        let st = lock(&self.st);
        st.lease.is_some() && st.tenure.may_act(self.mono_ms()) && token > 0
    }
}
