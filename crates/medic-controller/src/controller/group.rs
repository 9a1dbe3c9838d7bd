//! Controllers in a group (`controller.cluster`): one leader by an etcd lease; the state and
//! the journal in etcd; followers watching and publishing what they see.
//!
//! Every member runs the checks and the detection. Once a tick (a fifth of the lease) a member
//! renews its lease, stands for election (the leader key, created under its lease if nobody
//! holds it), publishes its view of the machines (a key under its lease) and reads the
//! others'. The one holding the leader key leads while its [`Tenure`] allows: it takes the
//! state and the open journals from etcd, resumes what was in flight, and only then starts
//! recoveries. Each step's intent is written to etcd in a transaction guarded by the leader
//! key's creation revision (the fencing token) before the step starts; a leader whose write is
//! refused, whose lease is gone or whose tenure ran out stands down at once. Followers follow
//! the leader's state, so their checks look where the machines are now.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use medic_coord::etcd::{Etcd, EtcdError, Leader};
use medic_coord::tenure::Tenure;
use medic_detect::Seen;
use medic_topology::Topology;

use super::lock;
use crate::store::Saved;

/// How long before its lease could expire a leader stops acting (covers the clocks' rate
/// difference and a step's guard).
mod member;

const MARGIN: Duration = Duration::from_secs(1);
/// How often the "etcd is unreachable" alert repeats while it lasts.
const ETCD_ALERT_EVERY_MS: u64 = 30_000;

/// What a member publishes of what it sees, per machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineView {
    /// Its last passing check of the machine (ms since the epoch).
    pub ok_ms: Option<u64>,
    /// Since when its checks of the machine fail, if they do now.
    pub failing_since_ms: Option<u64>,
}

/// A member's published view.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    pub member: String,
    pub at_ms: u64,
    pub leading: bool,
    pub machines: BTreeMap<String, MachineView>,
}

/// The group's keys in etcd, under `/medic/<topology>/`.
#[derive(Debug, Clone)]
struct Keys {
    leader: String,
    state: String,
    journal: String,
    views: String,
}

#[derive(Debug)]
struct GroupSt {
    lease: Option<i64>,
    tenure: Tenure,
    /// When the lease was granted (monotonic ms), for the status.
    granted_ms: Option<u64>,
    /// The fencing token while this member leads (its takeover done).
    token: Option<i64>,
    leader: Option<Leader>,
    etcd_ok_ms: Option<u64>,
    etcd_error: Option<String>,
    alerted_ms: u64,
    /// After `medic step-down`: no campaign before this (ms since the epoch).
    hold_until_ms: u64,
    views: BTreeMap<String, View>,
    /// The state as last read from etcd (a follower adopts it when it changes).
    state_text: Option<String>,
}

/// This member of the group.
#[derive(Debug)]
pub(super) struct Group {
    etcd: Etcd,
    pub(super) member: String,
    ttl: Duration,
    keys: Keys,
    epoch: Instant,
    st: Mutex<GroupSt>,
    /// The latest state to write to etcd (the leader's saves, written in order, latest wins).
    state_tx: tokio::sync::watch::Sender<Option<String>>,
}

/// The group's part of `medic status`.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    pub member: String,
    pub leading: bool,
    pub leader: Option<String>,
    pub term: Option<i64>,
    pub lease_secs: u64,
    /// How long ago this member's lease was last renewed (ms), if it holds one.
    pub renewed_ms_ago: Option<u64>,
    pub etcd: String,
    pub members: Vec<View>,
}

/// What another member's view says of `machine`, silent to the leader since `first_fail_ms`
/// (pure): gone if that member's checks fail now; seen if it saw the machine answer since the
/// leader began to miss it; otherwise it could not be asked (it has not checked since).
pub(super) fn member_says(view: &View, machine: &str, first_fail_ms: Option<u64>) -> Seen {
    match view.machines.get(machine) {
        Some(m) if m.failing_since_ms.is_some() => Seen::Gone,
        Some(m) if m.ok_ms.zip(first_fail_ms).is_some_and(|(ok, f)| ok >= f) => Seen::Up,
        _ => Seen::Unknown,
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "medic".to_owned())
}

impl Group {
    /// The group `top` describes, if it describes one.
    pub(super) fn from_topology(top: &Topology) -> Option<Group> {
        let c = &top.controller.cluster.as_ref()?.value;
        let ttl = c.lease.value.as_duration();
        let endpoints = c.etcd.value.iter().map(|e| e.value).collect();
        let base = format!("/medic/{}/", top.name.value);
        let (state_tx, _) = tokio::sync::watch::channel(None);
        Some(Group {
            etcd: Etcd::new(endpoints, (ttl / 5).max(Duration::from_millis(300))),
            member: c
                .member
                .as_ref()
                .map_or_else(host_name, |m| m.value.clone()),
            ttl,
            keys: Keys {
                leader: format!("{base}leader"),
                state: format!("{base}state"),
                journal: format!("{base}journal/"),
                views: format!("{base}views/"),
            },
            epoch: Instant::now(),
            st: Mutex::new(GroupSt {
                lease: None,
                tenure: Tenure::new(ttl, MARGIN),
                granted_ms: None,
                token: None,
                leader: None,
                etcd_ok_ms: None,
                etcd_error: None,
                alerted_ms: 0,
                hold_until_ms: 0,
                views: BTreeMap::new(),
                state_text: None,
            }),
            state_tx,
        })
    }

    fn mono_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// How often a member renews, campaigns and publishes.
    fn tick(&self) -> Duration {
        (self.ttl / 5).max(Duration::from_millis(200))
    }

    /// The token this member may act under now: it leads, and its tenure has not run out.
    pub(super) fn acting_token(&self) -> Option<i64> {
        let st = lock(&self.st);
        st.token.filter(|_| st.tenure.may_act(self.mono_ms()))
    }

    /// The state as saved (read at start, before this member leads or follows).
    pub(super) async fn load_state(&self, topology: &str) -> Option<Saved> {
        let text = self.etcd.get(&self.keys.state).await.ok()??;
        let saved: Saved = serde_json::from_str(&text).ok()?;
        (saved.topology == topology).then_some(saved)
    }

    /// Queues the leader's state for etcd (the writer task sends the latest).
    pub(super) fn save_state(&self, saved: &Saved) {
        if let Ok(text) = serde_json::to_string(saved) {
            self.state_tx.send_replace(Some(text));
        }
    }

    /// Writes a step's journal to etcd under the leader's token: `Ok(true)` if it landed.
    pub(super) async fn guard_journal(
        &self,
        id: &str,
        text: &str,
        token: i64,
    ) -> Result<bool, EtcdError> {
        self.etcd
            .put_if_leader(
                &self.keys.leader,
                token,
                &format!("{}{id}", self.keys.journal),
                text,
            )
            .await
    }

    /// The other members' fresh views (published within three ticks).
    pub(super) fn fresh_views(&self, now_ms: u64) -> Vec<View> {
        let fresh = 3 * self.tick().as_millis() as u64 + 500;
        lock(&self.st)
            .views
            .values()
            .filter(|v| v.member != self.member && now_ms.saturating_sub(v.at_ms) <= fresh)
            .cloned()
            .collect()
    }

    /// It does not lead, and etcd named a leader at its last answer.
    pub(super) fn follows_a_leader(&self) -> bool {
        let st = lock(&self.st);
        let leading = st.token.is_some() && st.tenure.may_act(self.mono_ms());
        !leading && st.leader.is_some()
    }

    pub(super) fn status(&self) -> GroupStatus {
        let st = lock(&self.st);
        let now = self.mono_ms();
        GroupStatus {
            member: self.member.clone(),
            leading: st.token.is_some() && st.tenure.may_act(now),
            leader: st.leader.as_ref().map(|l| l.name.clone()),
            term: st.leader.as_ref().map(|l| l.token),
            lease_secs: self.ttl.as_secs(),
            renewed_ms_ago: st.lease.and(st.tenure.acts_until()).map(|until| {
                (now + self.ttl.as_millis() as u64)
                    .saturating_sub(until + MARGIN.as_millis() as u64)
            }),
            etcd: match (&st.etcd_error, st.etcd_ok_ms) {
                (None, Some(_)) => "reachable".to_owned(),
                (Some(e), _) => format!("unreachable: {e}"),
                (None, None) => "not asked yet".to_owned(),
            },
            members: st.views.values().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_confirms_a_loss_only_from_its_own_failing_checks_and_vetoes_it_with_a_newer_answer()
    {
        let view = |ok_ms, failing_since_ms| View {
            member: "b".into(),
            at_ms: 10_000,
            leading: false,
            machines: BTreeMap::from([(
                "redis1".to_owned(),
                MachineView {
                    ok_ms,
                    failing_since_ms,
                },
            )]),
        };
        // The leader misses redis1 since 5 000.
        let first = Some(5_000);
        assert_eq!(
            member_says(&view(Some(4_000), Some(4_500)), "redis1", first),
            Seen::Gone
        );
        assert_eq!(
            member_says(&view(Some(5_200), None), "redis1", first),
            Seen::Up
        );
        // An answer older than the leader's first miss says nothing about now.
        assert_eq!(
            member_says(&view(Some(4_900), None), "redis1", first),
            Seen::Unknown
        );
        assert_eq!(
            member_says(&view(None, None), "redis1", first),
            Seen::Unknown
        );
        assert_eq!(
            member_says(&view(Some(9_000), None), "redis2", first),
            Seen::Unknown
        );
    }
}
