//! A service's health check from the controller: a TCP connection, or an HTTP request whose
//! status (and body) must be as the topology says.
//!
//! What each outcome means for detection: accepted and answered as expected is `Ok`; refused
//! is `Refused` (the machine is there, the process is not); no connection or no answer in time
//! is `Silent` (for the machine's observers to judge); a wrong status, a body without the
//! expected text, or a reply that is not HTTP is `Unhealthy`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use medic_detect::Observation;
use medic_topology::{CheckKind, ServiceCheck};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most of a reply read: a health page is small, and a huge one is not read to its end.
const MAX_REPLY: usize = 64 * 1024;

/// Checks the service at `ip:port` within `within`.
pub async fn check(
    ip: IpAddr,
    port: u16,
    how: &ServiceCheck,
    within: Duration,
) -> (Observation, String) {
    let at = SocketAddr::new(ip, port);
    match tokio::time::timeout(within, probe(at, how)).await {
        Ok(r) => r,
        Err(_) => (
            Observation::Silent,
            format!(
                "{at}: no answer within {}",
                medic_playbook::human_ms(within.as_millis() as u64)
            ),
        ),
    }
}

async fn probe(at: SocketAddr, how: &ServiceCheck) -> (Observation, String) {
    let mut conn = match TcpStream::connect(at).await {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return (Observation::Refused, format!("{at}: connection refused"));
        }
        Err(e) => return (Observation::Silent, format!("{at}: {e}")),
    };
    if how.kind == CheckKind::Tcp {
        return (Observation::Ok, format!("{at} accepts"));
    }
    let path = how.http_path();
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {}\r\nUser-Agent: medic\r\nConnection: close\r\n\r\n",
        at.ip()
    );
    if let Err(e) = conn.write_all(request.as_bytes()).await {
        return (
            Observation::Unhealthy,
            format!("{at}: sending the request: {e}"),
        );
    }
    let mut reply = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                reply.extend_from_slice(&buf[..n]);
                if reply.len() >= MAX_REPLY {
                    break;
                }
            }
            Err(e) if reply.is_empty() => {
                return (
                    Observation::Unhealthy,
                    format!("{at}: reading the reply: {e}"),
                );
            }
            Err(_) => break,
        }
    }
    judge(&reply, how, path)
}

/// What an HTTP reply says (pure).
pub fn judge(reply: &[u8], how: &ServiceCheck, path: &str) -> (Observation, String) {
    let text = String::from_utf8_lossy(reply);
    let status_line = text.lines().next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok());
    let Some(status) = status else {
        let shown: String = status_line.chars().take(60).collect();
        return (
            Observation::Unhealthy,
            format!("GET {path}: not an HTTP reply ({:?})", shown),
        );
    };
    if status != how.http_status() {
        return (
            Observation::Unhealthy,
            format!(
                "GET {path}: status {status}, expected {}",
                how.http_status()
            ),
        );
    }
    if let Some(want) = &how.body {
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        if !body.contains(want.as_str()) {
            return (
                Observation::Unhealthy,
                format!("GET {path}: status {status}, but the body lacks {want:?}"),
            );
        }
    }
    (Observation::Ok, format!("GET {path}: {status}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use medic_topology::ServiceCheck;

    fn http(body: Option<&str>) -> ServiceCheck {
        ServiceCheck {
            kind: CheckKind::Http,
            path: Some("/health".into()),
            status: Some(200),
            body: body.map(str::to_owned),
            ..ServiceCheck::default()
        }
    }

    #[test]
    fn replies_are_judged_by_status_and_body() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok primary";
        assert_eq!(
            judge(ok, &http(Some("primary")), "/health").0,
            Observation::Ok
        );
        assert_eq!(
            judge(ok, &http(Some("standby")), "/health").0,
            Observation::Unhealthy
        );
        let err = b"HTTP/1.1 503 Service Unavailable\r\n\r\n";
        let (o, d) = judge(err, &http(None), "/health");
        assert_eq!(o, Observation::Unhealthy);
        assert!(d.contains("503"), "{d}");
        assert_eq!(
            judge(b"+PONG\r\n", &http(None), "/").0,
            Observation::Unhealthy
        );
        assert_eq!(judge(b"", &http(None), "/").0, Observation::Unhealthy);
    }

    #[tokio::test]
    async fn a_real_socket_refused_silent_and_answering() {
        let within = Duration::from_millis(300);
        // Refused: a port just freed.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let ip: IpAddr = [127, 0, 0, 1].into();
        assert_eq!(
            check(ip, port, &http(None), within).await.0,
            Observation::Refused
        );
        // Accepting but never answering: silent for http, fine for tcp.
        let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = mute.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Ok((c, _)) = mute.accept().await {
                kept.push(c);
            }
        });
        assert_eq!(
            check(ip, port, &http(None), within).await.0,
            Observation::Silent
        );
        let tcp = ServiceCheck::default();
        assert_eq!(check(ip, port, &tcp, within).await.0, Observation::Ok);
        held.abort();
        // Answering.
        let web = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = web.local_addr().unwrap().port();
        let served = tokio::spawn(async move {
            while let Ok((mut c, _)) = web.accept().await {
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf).await;
                let _ = c.write_all(b"HTTP/1.0 200 OK\r\n\r\nprimary\n").await;
            }
        });
        let (o, d) = check(ip, port, &http(Some("primary")), within).await;
        assert_eq!(o, Observation::Ok, "{d}");
        served.abort();
    }
}
