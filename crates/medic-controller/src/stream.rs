//! `GET /api/stream`: the status page's updates pushed as server-sent events instead of polled.
//!
//! Every [`STREAM_EVERY`] the status (and the newest recoveries) are computed as `/api/status`
//! and `/api/history` would answer; what changed since the last event is sent (`event: status`,
//! `event: history`, the JSON on one `data:` line), nothing otherwise. A client that stops
//! reading is dropped after [`crate::http::WRITE_WITHIN`]; at most [`MAX_STREAMS`] are open at
//! once, so the operators' commands always find a connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use medic_cloud::{Cloud, Dns};

use crate::controller::Controller;
use crate::http::{Response, WRITE_WITHIN, write_response};

/// How often a stream looks for changes.
pub const STREAM_EVERY: Duration = Duration::from_millis(500);
/// Streams open at once, at most (each holds one of the API's connections).
pub const MAX_STREAMS: usize = 16;
/// How many recoveries a `history` event carries (the newest).
const HISTORY_EVENTS: usize = 20;

static OPEN: AtomicUsize = AtomicUsize::new(0);

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
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
                X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\nretry: 1000\n\n";
    let mut last_status = None;
    let mut last_history = None;
    let mut out = head.to_owned();
    loop {
        let cc = c.clone();
        let Ok((status, history)) = tokio::task::spawn_blocking(move || {
            (cc.status(), cc.history(0, 0, HISTORY_EVENTS).ok())
        })
        .await
        else {
            return;
        };
        // The clock alone is no change.
        let mut key = status.clone();
        key["now_ms"] = serde_json::Value::Null;
        if last_status.as_ref() != Some(&key) {
            out.push_str(&event("status", &status));
            last_status = Some(key);
        }
        if let Some(h) = history
            && last_history.as_ref() != Some(&h)
        {
            out.push_str(&event("history", &h));
            last_history = Some(h);
        }
        if !out.is_empty() {
            let sent = tokio::time::timeout(WRITE_WITHIN, s.write_all(out.as_bytes())).await;
            if !matches!(sent, Ok(Ok(()))) {
                return;
            }
            out.clear();
        }
        tokio::time::sleep(STREAM_EVERY).await;
    }
}
