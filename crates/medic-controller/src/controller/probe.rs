//! Writes as clients make them: every few seconds a `SET medic:probe <time> PX 60000` is sent
//! through each proxy's frontend of each shard (a few shards per round on a large deployment).
//! A proxy that routes to a replica answers `READONLY`, one with no usable server closes the
//! connection: the status calls such a shard `unwritable`, and a critical alert says so once
//! per episode (a notification says when writes pass again). Health as the clients see it,
//! beside the routing read back from each proxy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use medic_cloud::{Cloud, Dns};
use medic_plan::AlertLevel;
use medic_redis::{Redis, RedisAddr};

use super::{Controller, lock};
use crate::journal::now_ms;

/// How long one probe write may take.
const WRITE_WITHIN: Duration = Duration::from_millis(500);
/// Shards probed through each proxy per round (the rest in later rounds).
const SHARDS_PER_ROUND: usize = 16;
/// Failed probes in a row before the alert (a failover costs one or two).
const ALERT_AFTER: u32 = 3;
/// A probe older than this says nothing any more.
pub(super) const PROBE_STALE_MS: u64 = 10_000;

/// The last write probe through one proxy to one shard.
#[derive(Debug, Clone, Serialize)]
pub(super) struct WriteProbe {
    pub ok: bool,
    pub at_ms: u64,
    pub detail: String,
    /// Failures in a row.
    #[serde(skip)]
    pub failures: u32,
}

impl<C: Cloud + 'static, D: Dns + 'static> Controller<C, D> {
    /// One round of write probes, all at once.
    pub(super) async fn probe_writes(&self, round: usize) {
        let loaded = self.top();
        let top = &loaded.topology;
        let (observed, paused) = {
            let st = lock(&self.inner.st);
            (st.core.saved.observed.clone(), st.core.paused())
        };
        let frontends: Vec<(u16, String)> = top
            .proxies
            .value
            .frontends
            .iter()
            .map(|f| (f.value.listen.value, f.value.shard.value.clone()))
            .collect();
        let start = (round * SHARDS_PER_ROUND) % frontends.len().max(1);
        let mut set = tokio::task::JoinSet::new();
        for proxy in top.proxy_machines() {
            if paused.contains(proxy) {
                continue;
            }
            let Some(ip) = observed.address(proxy) else {
                continue;
            };
            for (port, shard) in frontends
                .iter()
                .cycle()
                .skip(start)
                .take(SHARDS_PER_ROUND.min(frontends.len()))
            {
                let (proxy, shard, at) =
                    (proxy.to_owned(), shard.clone(), SocketAddr::new(ip, *port));
                let client = Redis {
                    timeout: WRITE_WITHIN,
                    ..self.inner.redis.clone()
                };
                set.spawn(async move {
                    let r = client
                        .write_probe(
                            RedisAddr::new(at.ip(), at.port()),
                            "medic:probe",
                            &now_ms().to_string(),
                            60_000,
                        )
                        .await;
                    (proxy, shard, r.map_err(|e| e.to_string()))
                });
            }
        }
        let mut results = Vec::new();
        while let Some(Ok(r)) = set.join_next().await {
            results.push(r);
        }
        for (proxy, shard, r) in results {
            let (alert, recovered) = {
                let mut st = lock(&self.inner.st);
                let busy = !st.core.idle();
                // A proxy the monitor host cannot read at all has its own alert (it cannot be
                // reached): its failed writes say nothing more.
                let readable = st
                    .routing
                    .get(&proxy)
                    .is_some_and(|r| now_ms().saturating_sub(r.read_ms) <= PROBE_STALE_MS);
                let e = st
                    .writes
                    .entry((proxy.clone(), shard.clone()))
                    .or_insert(WriteProbe {
                        ok: true,
                        at_ms: 0,
                        detail: String::new(),
                        failures: 0,
                    });
                let was_alerted = e.failures >= ALERT_AFTER;
                e.at_ms = now_ms();
                match &r {
                    Ok(()) => {
                        e.ok = true;
                        e.detail = "OK".into();
                        e.failures = 0;
                    }
                    Err(why) => {
                        e.ok = false;
                        e.detail = why.clone();
                        e.failures += 1;
                    }
                }
                // While a recovery runs, failed writes are its window, not news.
                let alert = !busy && readable && e.failures == ALERT_AFTER;
                (alert.then(|| e.detail.clone()), was_alerted && e.ok)
            };
            if let Some(why) = alert {
                self.alert(
                    AlertLevel::Critical,
                    format!("writes to {shard} through {proxy} fail ({why}): its clients cannot write; `medic status` shows each proxy's routing"),
                );
            }
            if recovered {
                self.notify(
                    "recovered",
                    &format!("writes to {shard} through {proxy} pass again"),
                    None,
                );
            }
        }
    }
}

/// The last probes of `shard`, one per proxy.
pub(super) fn writes_of(
    writes: &BTreeMap<(String, String), WriteProbe>,
    shard: &str,
) -> Vec<serde_json::Value> {
    writes
        .iter()
        .filter(|((_, s), _)| s == shard)
        .map(|((p, _), w)| serde_json::json!({"proxy": p, "ok": w.ok, "at_ms": w.at_ms, "detail": w.detail}))
        .collect()
}
