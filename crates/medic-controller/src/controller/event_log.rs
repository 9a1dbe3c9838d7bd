//! What `medic events` follows: the last events, numbered. Alerts are kept apart from the
//! rest, each kind to its own bound, so that a flood of alerts (thousands of servers failing
//! their checks at once) cannot push the detections and recoveries out before anyone reads
//! them.

use std::collections::VecDeque;

use serde::Serialize;

/// Alerts kept, and as many of every other kind.
pub(super) const KEPT: usize = 1000;

/// One line of `medic events`.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub seq: u64,
    pub at_ms: u64,
    /// detection, recovery_start, step, step_failed, recovery_done, recovery_failed, held,
    /// alert, recovered.
    pub kind: String,
    pub message: String,
}

#[derive(Debug)]
pub(super) struct EventLog {
    alerts: VecDeque<EventRecord>,
    others: VecDeque<EventRecord>,
    next: u64,
}

impl Default for EventLog {
    fn default() -> Self {
        Self {
            alerts: VecDeque::new(),
            others: VecDeque::new(),
            next: 1,
        }
    }
}

impl EventLog {
    pub(super) fn push(&mut self, kind: &str, message: String, at_ms: u64) {
        let seq = self.next;
        self.next += 1;
        let kept = if kind == "alert" {
            &mut self.alerts
        } else {
            &mut self.others
        };
        kept.push_back(EventRecord {
            seq,
            at_ms,
            kind: kind.to_owned(),
            message,
        });
        while kept.len() > KEPT {
            kept.pop_front();
        }
    }

    /// The number the next event will get.
    pub(super) fn next(&self) -> u64 {
        self.next
    }

    /// The events kept numbered after `after`, oldest first.
    pub(super) fn after(&self, after: u64) -> Vec<&EventRecord> {
        let from = |q: &VecDeque<EventRecord>| q.partition_point(|e| e.seq <= after);
        let mut a = self.alerts.range(from(&self.alerts)..).peekable();
        let mut o = self.others.range(from(&self.others)..).peekable();
        let mut out = Vec::with_capacity(a.len() + o.len());
        loop {
            let e = match (a.peek(), o.peek()) {
                (Some(x), Some(y)) if x.seq < y.seq => a.next(),
                (Some(_), Some(_)) | (None, Some(_)) => o.next(),
                (Some(_), None) => a.next(),
                (None, None) => break,
            };
            out.extend(e);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_alerts_evicts_older_alerts_and_never_a_detection() {
        let mut log = EventLog::default();
        log.push("detection", "redis1 failed".into(), 1);
        log.push("alert", "first alert".into(), 2);
        log.push("recovery_start", "recovery of redis1".into(), 3);
        for i in 0..3 * KEPT {
            log.push("alert", format!("alert {i}"), 4);
        }
        log.push("recovery_done", "redis1 recovered".into(), 5);
        let all = log.after(0);
        assert_eq!(
            all.len(),
            KEPT + 3,
            "every alert but the last {KEPT} is evicted"
        );
        assert_eq!(all[0].kind, "detection");
        assert_eq!(all[1].kind, "recovery_start");
        assert_eq!(all[2].message, format!("alert {}", 2 * KEPT));
        assert_eq!(all[KEPT + 2].kind, "recovery_done");
        assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "oldest first");
        assert_eq!(log.next(), 3 * KEPT as u64 + 5);
        let tail = log.after(3 * KEPT as u64 + 1);
        let kinds: Vec<&str> = tail.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["alert", "alert", "recovery_done"]);
        assert!(log.after(log.next()).is_empty());
    }

    #[test]
    fn other_events_are_bounded_too() {
        let mut log = EventLog::default();
        for i in 0..KEPT + 10 {
            log.push("step", format!("step {i}"), 1);
        }
        let all = log.after(0);
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0].message, "step 10");
    }
}
