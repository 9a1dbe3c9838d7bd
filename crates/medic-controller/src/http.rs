//! HTTP, small: a minimal HTTP/1.1 server for the controller's loopback API and status page
//! (one request per connection, bounded sizes and times), and a client (hyper, with rustls for
//! `https` webhooks) for the CLI and notifications.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{url}: {message}")]
    Request { url: String, message: String },
    #[error("{url}: no answer within {after:?}")]
    Timeout { url: String, after: Duration },
}

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
    pub body: Vec<u8>,
}

/// A response to write.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, v: &serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: serde_json::to_vec_pretty(v).unwrap_or_default(),
        }
    }

    pub fn text(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
        }
    }

    pub fn error(status: u16, message: impl Into<String>) -> Response {
        Response::json(status, &serde_json::json!({ "error": message.into() }))
    }
}

const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 64 * 1024;
const READ_WITHIN: Duration = Duration::from_secs(5);

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        _ => "Error",
    }
}

/// Reads one request from `s`; `Err` carries the response to send instead.
pub async fn read_request(s: &mut TcpStream) -> Result<Request, Response> {
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(Response::error(413, "request head too large"));
        }
        let mut chunk = [0u8; 4096];
        let n = match tokio::time::timeout(READ_WITHIN, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => {
                return Err(Response::error(400, "incomplete request"));
            }
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let target = first.next().unwrap_or_default().to_owned();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (target, String::new()),
    };
    let mut length = 0usize;
    let mut authorization = None;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            length = v
                .parse()
                .map_err(|_| Response::error(400, "bad Content-Length"))?;
        } else if k.eq_ignore_ascii_case("authorization") {
            authorization = Some(v.to_owned());
        }
    }
    if length > MAX_BODY {
        return Err(Response::error(413, "request body too large"));
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = vec![0u8; length - body.len()];
        let n = match tokio::time::timeout(READ_WITHIN, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Err(Response::error(400, "incomplete body")),
            Ok(Ok(n)) => n,
        };
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(Request {
        method,
        path,
        query,
        authorization,
        body,
    })
}

pub async fn write_response(s: &mut TcpStream, r: &Response) {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(&r.body).await;
    let _ = s.shutdown().await;
}

/// Sends one request; returns the status and the body.
pub async fn send(
    method: &str,
    url: &str,
    authorization: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
    within: Duration,
) -> Result<(u16, Vec<u8>), HttpError> {
    let err = |message: String| HttpError::Request {
        url: url.to_owned(),
        message,
    };
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider)
        .map_err(|e| err(format!("TLS roots: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", content_type)
        .header("user-agent", concat!("medic/", env!("CARGO_PKG_VERSION")));
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| err(e.to_string()))?;
    let work = async {
        let resp = client.request(req).await.map_err(|e| err(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| err(e.to_string()))?
            .to_bytes()
            .to_vec();
        Ok((status, body))
    };
    tokio::time::timeout(within, work)
        .await
        .map_err(|_| HttpError::Timeout {
            url: url.to_owned(),
            after: within,
        })?
}

/// The URL of the controller's API at `listen`.
pub fn base_url(listen: SocketAddr) -> String {
    format!("http://{listen}")
}
