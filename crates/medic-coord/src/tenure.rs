//! How long a leader may act (pure).
//!
//! # The timing argument
//! A lease of TTL `T` granted or renewed by a keep-alive that the leader **sent** at its
//! monotonic time `s` cannot expire in etcd before `s + T` by etcd's clock: etcd processes the
//! request after it was sent, and counts `T` from then. The leader therefore acts only until
//! `s + T − margin` by its own clock, where `margin` covers the rate difference of the two
//! clocks over `T` (bounded: a monotonic clock drifts by parts per million, not seconds) and
//! the time a step's etcd guard takes. Another controller becomes leader only after etcd
//! deleted the key at the lease's expiry, so no two leaders act in the same instant. A step
//! that started before the deadline may still be in flight after it: each side effect is
//! therefore also guarded by the fencing token in an etcd transaction, which a deposed leader
//! fails.

use std::time::Duration;

/// A leader's right to act, from its lease renewals (all times in ms of one monotonic clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tenure {
    ttl_ms: u64,
    margin_ms: u64,
    /// When the last keep-alive that etcd confirmed was sent.
    renewed_sent_ms: Option<u64>,
}

impl Tenure {
    /// A lease of `ttl`; the leader stops `margin` before the earliest expiry. Panics-free: a
    /// margin longer than the TTL means it never acts.
    pub fn new(ttl: Duration, margin: Duration) -> Tenure {
        Tenure {
            ttl_ms: ttl.as_millis() as u64,
            margin_ms: margin.as_millis() as u64,
            renewed_sent_ms: None,
        }
    }

    /// etcd confirmed the keep-alive (or the grant) sent at `sent_ms`.
    pub fn renewed(&mut self, sent_ms: u64) {
        self.renewed_sent_ms = Some(self.renewed_sent_ms.map_or(sent_ms, |s| s.max(sent_ms)));
    }

    /// The lease is gone (etcd said so, or it was revoked).
    pub fn lost(&mut self) {
        self.renewed_sent_ms = None;
    }

    /// Until when (exclusive) the leader may act, if at all.
    pub fn acts_until(&self) -> Option<u64> {
        let s = self.renewed_sent_ms?;
        (self.ttl_ms > self.margin_ms).then(|| s + self.ttl_ms - self.margin_ms)
    }

    pub fn may_act(&self, now_ms: u64) -> bool {
        self.acts_until().is_some_and(|until| now_ms < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_acts_only_until_its_lease_could_expire_less_the_margin() {
        let mut t = Tenure::new(Duration::from_secs(5), Duration::from_secs(1));
        assert!(!t.may_act(0), "never renewed");
        t.renewed(1_000);
        assert!(t.may_act(1_000) && t.may_act(4_999));
        assert!(
            !t.may_act(5_000),
            "stops 1 s before the earliest expiry (6 000)"
        );
        // A late answer to an older keep-alive does not move the deadline back.
        t.renewed(3_000);
        t.renewed(2_000);
        assert_eq!(t.acts_until(), Some(7_000));
        t.lost();
        assert!(!t.may_act(3_001));
        let mut never = Tenure::new(Duration::from_secs(1), Duration::from_secs(2));
        never.renewed(0);
        assert!(!never.may_act(0));
    }
}
