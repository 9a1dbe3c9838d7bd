//! `GET /api/stream`: the status page's updates pushed as server-sent events instead of polled.
//!
//! Every [`STREAM_EVERY`] the status and the newest recoveries are computed as `/api/status` and
//! `/api/history` would answer — once for all the open streams, by one producer that runs
//! while any is open. A status is sent when it changed in more than its counters and
//! clocks (each check's count and last success, when a proxy or a write was last read), and at
//! least every [`REFRESH_EVERY`]; the history when it changed; the checks' latency
//! (`/api/latency`) every [`REFRESH_EVERY`]. Each event is `event: NAME` and its JSON on one
//! `data:` line.
//!
//! A client that closes its connection is let go at once (the stream watches its side for the
//! end), one that stops reading once a write has waited [`crate::http::WRITE_WITHIN`]. At most
//! [`MAX_STREAMS`] are open at once, so the operators' commands always find a connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;

use medic_cloud::{Cloud, Dns};

use crate::controller::Controller;
use crate::http::{Response, WRITE_WITHIN, write_response};

/// How often a stream looks for changes (the old page polled as often).
pub const STREAM_EVERY: Duration = Duration::from_secs(1);
/// A status (and the latency) at least this often, changed or not: the page's clock moves on,
/// and a client gone without a word is found by the write.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// Streams open at once, at most (each holds one of the API's connections).
pub const MAX_STREAMS: usize = 16;
/// How many recoveries a `history` event carries (the newest).
const HISTORY_EVENTS: usize = 20;
/// Fields that change with every check or probe, not with the deployment's state.
const VOLATILE: [&str; 5] = ["now_ms", "checks", "last_ok_ms", "read_ms", "at_ms"];

static OPEN: AtomicUsize = AtomicUsize::new(0);
static SNAPSHOTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many snapshots the producer has computed (`medic_status_snapshots_total`).
pub fn snapshots() -> u64 {
    SNAPSHOTS.load(Ordering::Relaxed)
}

/// How many streams are open now (`medic_status_streams_open`).
pub fn open_streams() -> usize {
    OPEN.load(Ordering::SeqCst).min(MAX_STREAMS)
}

/// Counts a stream while it is open.
struct Open;

impl Drop for Open {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One SSE event: its name and its JSON on one line (JSON text has no raw newline).
fn event(name: &str, data: &serde_json::Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// The status without what changes with every check: what "changed" is judged on.
fn key(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .filter(|(k, _)| !VOLATILE.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), key(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        serde_json::Value::Array(a) => a.iter().map(key).collect::<Vec<_>>().into(),
        v => v.clone(),
    }
}

/// What every open stream sends from: computed once per [`STREAM_EVERY`] by one producer
/// while at least one stream is open, however many are (each stream only compares it with
/// what it sent last).
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    status: Arc<serde_json::Value>,
    /// The status without its counters and clocks: what "changed" is judged on.
    status_key: Arc<serde_json::Value>,
    history: Option<Arc<serde_json::Value>>,
    latency: Arc<serde_json::Value>,
}

/// The producer's channel, while one runs.
#[derive(Debug, Default)]
pub(crate) struct Feed {
    tx: std::sync::Mutex<Option<Arc<watch::Sender<Option<Snapshot>>>>>,
}

impl Feed {
    /// A receiver of the snapshots; the producer is started if none runs. It ends by itself
    /// once no stream is open.
    fn subscribe<C: Cloud + 'static, D: Dns + 'static>(
        &self,
        c: &Controller<C, D>,
    ) -> watch::Receiver<Option<Snapshot>> {
        let mut tx = self
            .tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(t) = tx.as_ref() {
            return t.subscribe();
        }
        let (t, rx) = watch::channel(None);
        let t = Arc::new(t);
        *tx = Some(Arc::clone(&t));
        tokio::spawn(produce(c.clone(), t));
        rx
    }
}

/// Computes the snapshot every [`STREAM_EVERY`] while a stream listens.
async fn produce<C: Cloud + 'static, D: Dns + 'static>(
    c: Controller<C, D>,
    tx: Arc<watch::Sender<Option<Snapshot>>>,
) {
    loop {
        let cc = c.clone();
        let Ok(snapshot) = tokio::task::spawn_blocking(move || {
            let status = cc.status();
            Snapshot {
                status_key: Arc::new(key(&status)),
                status: Arc::new(status),
                history: cc.history(0, 0, HISTORY_EVENTS).ok().map(Arc::new),
                latency: Arc::new(cc.check_latency()),
            }
        })
        .await
        else {
            break;
        };
        SNAPSHOTS.fetch_add(1, Ordering::Relaxed);
        tx.send_replace(Some(snapshot));
        tokio::time::sleep(STREAM_EVERY).await;
        // Nobody listening: end (under the lock, so that no stream subscribes meanwhile).
        let feed = c.stream_feed();
        let mut slot = feed
            .tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if tx.receiver_count() == 0 {
            *slot = None;
            return;
        }
    }
    let feed = c.stream_feed();
    *feed
        .tx
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
}

pub async fn serve_stream<C: Cloud + 'static, D: Dns + 'static>(
    c: Controller<C, D>,
    mut s: TcpStream,
) {
    if OPEN.fetch_add(1, Ordering::SeqCst) >= MAX_STREAMS {
        OPEN.fetch_sub(1, Ordering::SeqCst);
        let busy = Response::error(
            503,
            format!("{MAX_STREAMS} status streams are open already"),
        );
        write_response(&mut s, &busy).await;
        return;
    }
    let _open = Open;
    let mut feed = c.stream_feed().subscribe(&c);
    let (mut from_client, mut to_client) = s.split();
    let mut out =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
                   X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\nretry: 1000\n\n"
            .to_owned();
    let (mut last_status, mut last_history): (Option<Arc<_>>, Option<Arc<_>>) = (None, None);
    let mut refreshed = tokio::time::Instant::now();
    let mut first = true;
    loop {
        // The newest snapshot: at once if there is one (a stream joining a running producer),
        // else the next.
        let current = feed.borrow_and_update().clone();
        let snap = match current {
            Some(snap) => snap,
            None => {
                let mut byte = [0u8; 1];
                tokio::select! {
                    changed = feed.changed() => if changed.is_err() { return },
                    _ = from_client.read(&mut byte) => return,
                }
                continue;
            }
        };
        let refresh = first || refreshed.elapsed() >= REFRESH_EVERY;
        if refresh || last_status.as_deref() != Some(&*snap.status_key) {
            out.push_str(&event("status", &snap.status));
            last_status = Some(Arc::clone(&snap.status_key));
        }
        if refresh {
            out.push_str(&event("latency", &snap.latency));
            refreshed = tokio::time::Instant::now();
        }
        if let Some(h) = &snap.history
            && last_history.as_deref() != Some(&**h)
        {
            out.push_str(&event("history", h));
            last_history = Some(Arc::clone(h));
        }
        first = false;
        if !out.is_empty() {
            let sent =
                tokio::time::timeout(WRITE_WITHIN, to_client.write_all(out.as_bytes())).await;
            if !matches!(sent, Ok(Ok(()))) {
                return;
            }
            out.clear();
        }
        // The client sends nothing after its request: anything read is its end.
        let mut byte = [0u8; 1];
        tokio::select! {
            changed = feed.changed() => if changed.is_err() { return },
            _ = from_client.read(&mut byte) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::key;

    #[test]
    fn counters_and_clocks_are_no_change() {
        let a = serde_json::json!({"now_ms": 1, "shards": [{"state": "ok", "routes": [{"read_ms": 5}]}],
            "machines": [{"targets": [{"health": {"state": "up", "checks": 10, "last_ok_ms": 7}}]}]});
        let b = serde_json::json!({"now_ms": 2, "shards": [{"state": "ok", "routes": [{"read_ms": 6}]}],
            "machines": [{"targets": [{"health": {"state": "up", "checks": 11, "last_ok_ms": 8}}]}]});
        let c = serde_json::json!({"now_ms": 2, "shards": [{"state": "down", "routes": [{"read_ms": 6}]}],
            "machines": [{"targets": [{"health": {"state": "up", "checks": 11, "last_ok_ms": 8}}]}]});
        assert_eq!(key(&a), key(&b));
        assert_ne!(key(&b), key(&c));
    }
}
