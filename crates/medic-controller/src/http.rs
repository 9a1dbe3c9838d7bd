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
    /// The `Host` header, if any.
    pub host: Option<String>,
    /// The `Origin` header a browser adds to a cross-site request, if any.
    pub origin: Option<String>,
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
/// The whole request, head and body, must arrive within this: a client trickling a byte at a
/// time cannot hold a connection longer.
pub const READ_WITHIN: Duration = Duration::from_secs(5);
/// The whole response must be taken within this.
pub const WRITE_WITHIN: Duration = Duration::from_secs(10);

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        421 => "Misdirected Request",
        503 => "Service Unavailable",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        _ => "Error",
    }
}

/// Reads one request from `s`, all of it within [`READ_WITHIN`]; `Err` carries the response
/// to send instead.
pub async fn read_request(s: &mut TcpStream) -> Result<Request, Response> {
    tokio::time::timeout(READ_WITHIN, read_request_unbounded(s))
        .await
        .unwrap_or_else(|_| Err(Response::error(408, "the request did not arrive in time")))
}

async fn read_request_unbounded(s: &mut TcpStream) -> Result<Request, Response> {
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(Response::error(413, "request head too large"));
        }
        let mut chunk = [0u8; 4096];
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(Response::error(400, "incomplete request")),
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
    };
    let (mut req, length) = parse_head(&buf[..head_end])?;
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = vec![0u8; length - body.len()];
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(Response::error(400, "incomplete body")),
            Ok(n) => n,
        };
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    req.body = body;
    Ok(req)
}

/// A request's head (without its blank line): the request, its body still empty, and the
/// body's length (`Content-Length`, at most [`MAX_BODY`]). Any bytes at all give a request or
/// the response that refuses it.
pub fn parse_head(head: &[u8]) -> Result<(Request, usize), Response> {
    let head = String::from_utf8_lossy(head);
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
    let (mut host, mut origin) = (None, None);
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
        } else if k.eq_ignore_ascii_case("host") {
            host = Some(v.to_owned());
        } else if k.eq_ignore_ascii_case("origin") {
            origin = Some(v.to_owned());
        }
    }
    if length > MAX_BODY {
        return Err(Response::error(413, "request body too large"));
    }
    Ok((
        Request {
            method,
            path,
            query,
            authorization,
            host,
            origin,
            body: Vec::new(),
        },
        length,
    ))
}

/// Whether a `Host` (or an `Origin`'s host) names this API the way its users reach it: an
/// IP address or `localhost`, with any port. Any other name is a page that had its own name
/// resolved to this address (DNS rebinding), or a proxy that should say where it forwards.
pub fn host_allowed(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest
            .split_once(']')
            .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok());
    } else {
        host.rsplit_once(':').map_or(host, |(n, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                n
            } else {
                host
            }
        })
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

/// Whether a request may be served: no `Host`, or one [`host_allowed`]; and for a mutation,
/// no `Origin` or a same-host one (`http://HOST`).
/// Whether a request's `Origin` is a page of this API (an address or localhost).
pub fn origin_allowed(o: &str) -> bool {
    o.strip_prefix("http://")
        .or_else(|| o.strip_prefix("https://"))
        .is_some_and(host_allowed)
}

pub fn request_allowed(req: &Request) -> Result<(), Response> {
    if let Some(h) = &req.host
        && !host_allowed(h)
    {
        return Err(Response::error(
            421,
            format!(
                "Host {h:?} is not an address of this API; use its IP address or localhost (a proxy in front must send one)"
            ),
        ));
    }
    if req.method != "GET"
        && let Some(o) = &req.origin
        && !origin_allowed(o)
    {
        return Err(Response::error(
            403,
            format!("a command from the web page at {o:?} is refused"),
        ));
    }
    Ok(())
}

/// Writes `r`, all of it within [`WRITE_WITHIN`] (a client that does not read is dropped).
pub async fn write_response(s: &mut TcpStream, r: &Response) {
    let _ = tokio::time::timeout(WRITE_WITHIN, write_response_unbounded(s, r)).await;
}

async fn write_response_unbounded(s: &mut TcpStream, r: &Response) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_and_localhost_name_the_api() {
        for ok in [
            "127.0.0.1:7600",
            "127.0.0.1",
            "localhost:7600",
            "LOCALHOST",
            "[::1]:7600",
            "10.0.0.5:7600",
        ] {
            assert!(host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example.com",
            "evil.example.com:7600",
            "127.0.0.1.evil.example.com",
            "localhost.evil.example.com:7600",
            "[::1",
            "",
        ] {
            assert!(!host_allowed(bad), "{bad}");
        }
    }

    fn req(method: &str, host: Option<&str>, origin: Option<&str>) -> Request {
        Request {
            method: method.to_owned(),
            path: "/api/recover/redis1".to_owned(),
            query: String::new(),
            authorization: None,
            host: host.map(str::to_owned),
            origin: origin.map(str::to_owned),
            body: Vec::new(),
        }
    }

    #[test]
    fn a_rebound_name_or_a_foreign_page_is_refused() {
        assert!(request_allowed(&req("GET", None, None)).is_ok());
        assert!(request_allowed(&req("GET", Some("127.0.0.1:7600"), None)).is_ok());
        assert!(
            request_allowed(&req(
                "POST",
                Some("127.0.0.1:7600"),
                Some("http://127.0.0.1:7600")
            ))
            .is_ok()
        );
        let refused = |r: Result<(), Response>| r.err().map(|r| r.status);
        assert_eq!(
            refused(request_allowed(&req(
                "GET",
                Some("evil.example.com:7600"),
                None
            ))),
            Some(421)
        );
        assert_eq!(
            refused(request_allowed(&req(
                "POST",
                Some("127.0.0.1:7600"),
                Some("http://evil.example.com")
            ))),
            Some(403)
        );
        assert_eq!(
            refused(request_allowed(&req(
                "POST",
                Some("127.0.0.1:7600"),
                Some("null")
            ))),
            Some(403)
        );
    }
}
