//! The checks' latency over the last minutes, per target kind and second, for the status page's
//! chart: one bucket per second (sum and count), the oldest dropped past [`KEEP_S`]. Adding a
//! result costs a map lookup and an addition (the checks' path runs it for every result).

use std::collections::{BTreeMap, VecDeque};

/// How many seconds of buckets are kept.
pub(super) const KEEP_S: u64 = 300;

#[derive(Debug, Default)]
pub(super) struct LatencySeries {
    /// Per kind: `(second, sum of seconds, count)`, oldest first.
    buckets: BTreeMap<&'static str, VecDeque<(u64, f64, u64)>>,
}

impl LatencySeries {
    /// One check of `kind`, done at `now_ms`, that took `took_s`.
    pub(super) fn add(&mut self, kind: &'static str, now_ms: u64, took_s: f64) {
        let sec = now_ms / 1000;
        let q = self.buckets.entry(kind).or_default();
        match q.back_mut() {
            // The same second; or the clock stepped back: counted in the newest second, so the
            // buckets stay in order and bounded.
            Some(b) if b.0 >= sec => {
                b.1 += took_s;
                b.2 += 1;
            }
            _ => q.push_back((sec, took_s, 1)),
        }
        let newest = q.back().map_or(sec, |b| b.0);
        while q.front().is_some_and(|f| f.0 + KEEP_S < newest) || q.len() > KEEP_S as usize + 1 {
            q.pop_front();
        }
    }

    /// `{kind: [[second's start in ms, mean ms], ...]}`, the seconds since `now_ms - KEEP_S`.
    pub(super) fn json(&self, now_ms: u64) -> serde_json::Value {
        let from = (now_ms / 1000).saturating_sub(KEEP_S);
        let map: serde_json::Map<String, serde_json::Value> = self
            .buckets
            .iter()
            .map(|(kind, q)| {
                let points: Vec<serde_json::Value> = q
                    .iter()
                    .filter(|b| b.0 >= from && b.2 > 0)
                    .map(|b| {
                        serde_json::json!([b.0 * 1000, (b.1 / b.2 as f64 * 1e6).round() / 1e3])
                    })
                    .collect();
                ((*kind).to_owned(), serde_json::Value::Array(points))
            })
            .collect();
        serde_json::Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bucket_per_second_and_only_the_last_minutes() {
        let mut s = LatencySeries::default();
        s.add("redis", 10_000, 0.001);
        s.add("redis", 10_900, 0.003);
        s.add("redis", 11_100, 0.010);
        s.add("haproxy", 11_200, 0.002);
        assert_eq!(
            s.json(11_500),
            serde_json::json!({"haproxy": [[11_000, 2.0]], "redis": [[10_000, 2.0], [11_000, 10.0]]})
        );
        // A clock stepped back counts in the newest second.
        s.add("redis", 9_000, 0.010);
        assert_eq!(
            s.json(11_500)["redis"],
            serde_json::json!([[10_000, 2.0], [11_000, 10.0]])
        );
        // Past KEEP_S, the old seconds go.
        s.add("redis", (11 + KEEP_S + 1) * 1000, 0.004);
        assert_eq!(
            s.json((11 + KEEP_S + 1) * 1000)["redis"],
            serde_json::json!([[(11 + KEEP_S + 1) * 1000, 4.0]])
        );
    }
}
