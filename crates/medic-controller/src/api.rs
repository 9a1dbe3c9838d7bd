//! The controller's HTTP API (loopback by default): what `medic status`, `medic history` and
//! the operator commands talk to, `/metrics` for Prometheus, and the status page.
//!
//! | method | path | what |
//! | --- | --- | --- |
//! | GET | `/` | the status page |
//! | GET | `/api/status` | machines, shards, recoveries in flight, alerts |
//! | GET | `/api/history[?limit=N&offset=K&since=MS]` | the recoveries with their steps, newest first (100 by default, 1,000 at most; `since`: only those begun at or after MS, ms since the epoch) |
//! | GET | `/api/events[?after=SEQ]` | what happened since SEQ (detections, steps, alerts) |
//! | GET | `/api/latency` | the checks' mean latency per second and kind, the last 5 minutes |
//! | GET | `/api/stream` | the status (when it changed, and every 5 s), the newest recoveries (when they changed) and the latency (every 5 s) as server-sent events ([`crate::stream`]) |
//! | GET | `/metrics` | Prometheus text format |
//! | POST | `/api/recover/MACHINE` | recover a machine (token) |
//! | POST | `/api/switchover/SHARD[?to=MACHINE]` | planned change of master (token) |
//! | POST | `/api/unmonitor/MACHINE`, `/api/monitor/MACHINE` | maintenance (token) |
//!
//! Mutations need `Authorization: Bearer TOKEN`, the token being `STATE_DIR/api-token`.

use tokio::net::TcpListener;

use medic_cloud::{Cloud, Dns};

use crate::controller::Controller;
use crate::http::{
    Request, Response, origin_allowed, read_request, request_allowed, write_response,
};

/// At most this many connections are served at once; the others wait in the kernel's accept
/// queue and cost this process nothing (no descriptor: the checks need those).
pub const MAX_CONNECTIONS: usize = 64;
/// A failed `accept` (out of descriptors, say) is retried after this pause, never in a spin.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

pub async fn serve<C: Cloud + 'static, D: Dns + 'static>(c: Controller<C, D>, l: TcpListener) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut s = match l.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                if last_warning.is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "The API cannot accept a connection; retrying.");
                    last_warning = Some(tokio::time::Instant::now());
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let c = c.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let resp = match read_request(&mut s).await {
                // (A page of another origin may not hold one: a same-origin EventSource sends
                // no Origin.)
                Ok(req)
                    if req.method == "GET"
                        && req.path.trim_end_matches('/') == "/api/stream"
                        && request_allowed(&req).is_ok()
                        && req.origin.as_deref().is_none_or(origin_allowed) =>
                {
                    crate::stream::serve_stream(c, s).await;
                    return;
                }
                // Answered on a blocking thread: a status or a history reads the controller's
                // state and journals synchronously, and must not hold a runtime thread the
                // recoveries need.
                Ok(req) => match request_allowed(&req) {
                    Ok(()) => tokio::task::spawn_blocking(move || route(&c, &req))
                        .await
                        .unwrap_or_else(|_| Response::error(500, "the request's handler failed")),
                    Err(refused) => refused,
                },
                Err(resp) => resp,
            };
            write_response(&mut s, &resp).await;
        });
    }
}

fn route<C: Cloud + 'static, D: Dns + 'static>(c: &Controller<C, D>, req: &Request) -> Response {
    let path = req.path.trim_end_matches('/');
    match (req.method.as_str(), path) {
        ("GET", "" | "/index.html") => {
            Response::text(200, "text/html; charset=utf-8", crate::page::PAGE)
        }
        ("GET", "/api/status") => Response::json(200, &c.status()),
        ("GET", "/api/history") => match c.history(
            query_number(&req.query, "since").map_or(0, |ms| ms as u64),
            query_number(&req.query, "offset").unwrap_or(0),
            query_number(&req.query, "limit").unwrap_or(crate::controller::HISTORY_PAGE),
        ) {
            Ok(h) => Response::json(200, &h),
            Err(e) => Response::error(500, e.to_string()),
        },
        ("GET", "/api/events") => {
            let after = req
                .query
                .split('&')
                .find_map(|kv| kv.strip_prefix("after="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            Response::json(200, &c.events(after))
        }
        ("GET", "/metrics") => Response::text(200, "text/plain; version=0.0.4", c.metrics()),
        ("GET", "/api/latency") => Response::json(200, &c.check_latency()),
        ("GET", "/api/stream") => {
            Response::error(403, "a page of another origin may not follow the status")
        }
        ("POST", p) if p.starts_with("/api/") => {
            if !c.check_token(req.authorization.as_deref()) {
                return Response::error(
                    401,
                    "this needs the API token: Authorization: Bearer <the controller's STATE_DIR/api-token>",
                );
            }
            let rest = &p["/api/".len()..];
            let (verb, arg) = rest.split_once('/').unwrap_or((rest, ""));
            if arg.is_empty() && verb != "step-down" {
                return Response::error(400, format!("POST /api/{verb}/NAME: the name is missing"));
            }
            let result = match verb {
                "recover" => c.recover_machine(arg),
                "switchover" => {
                    let to = req
                        .query
                        .split('&')
                        .find_map(|kv| kv.strip_prefix("to="))
                        .filter(|m| !m.is_empty());
                    c.switchover(arg, to)
                }
                "unmonitor" => c.set_maintenance(arg, true),
                "monitor" => c.set_maintenance(arg, false),
                "step-down" => c.step_down(),
                _ => Err((404, format!("no command `{verb}`"))),
            };
            match result {
                Ok(msg) => Response::json(202, &serde_json::json!({ "ok": msg })),
                Err((code, msg)) => Response::error(code, msg),
            }
        }
        (_, "/api/status" | "/api/history" | "/metrics") => Response::error(405, "GET only"),
        _ => Response::error(404, format!("nothing at {}", req.path)),
    }
}

/// `name=N` in a query string.
fn query_number(query: &str, name: &str) -> Option<usize> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}
