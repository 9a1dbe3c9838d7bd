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
    let deadline = tokio::time::Instant::now() + within;
    let silent = || {
        (
            Observation::Silent,
            format!(
                "{at}: no answer within {}",
                medic_playbook::human_ms(within.as_millis() as u64)
            ),
        )
    };
    let mut conn = match tokio::time::timeout_at(deadline, TcpStream::connect(at)).await {
        Err(_) => return silent(),
        Ok(Ok(c)) => c,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return (Observation::Refused, format!("{at}: connection refused"));
        }
        Ok(Err(e)) => return (Observation::Silent, format!("{at}: {e}")),
    };
    if how.kind == CheckKind::Tcp {
        return (Observation::Ok, format!("{at} accepts"));
    }
    let path = how.http_path();
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {}\r\nUser-Agent: medic\r\nConnection: close\r\n\r\n",
        at.ip()
    );
    match tokio::time::timeout_at(deadline, conn.write_all(request.as_bytes())).await {
        Err(_) => return silent(),
        Ok(Err(e)) => {
            return (
                Observation::Unhealthy,
                format!("{at}: sending the request: {e}"),
            );
        }
        Ok(Ok(())) => {}
    }
    let mut reply = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            // Nothing at all in time is silence; a reply begun and not finished is judged on
            // what came (its status line is there: the server answers).
            Err(_) if reply.is_empty() => return silent(),
            Err(_) => break,
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => {
                reply.extend_from_slice(&buf[..n]);
                if reply.len() >= MAX_REPLY || complete(&reply) {
                    break;
                }
            }
            Ok(Err(e)) if reply.is_empty() => {
                return (
                    Observation::Unhealthy,
                    format!("{at}: reading the reply: {e}"),
                );
            }
            Ok(Err(_)) => break,
        }
    }
    judge(&reply, how, path)
}

/// Where the body of `reply` starts, if its head is complete (`\r\n\r\n`, or a bare
/// `\n\n`).
fn body_start(reply: &[u8]) -> Option<usize> {
    let crlf = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = reply.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether `reply` holds its whole body by its `Content-Length` (a server that keeps the
/// connection open despite `Connection: close` is not waited for).
fn complete(reply: &[u8]) -> bool {
    let Some(start) = body_start(reply) else {
        return false;
    };
    let head = String::from_utf8_lossy(&reply[..start]);
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .is_some_and(|len| reply.len() - start >= len)
}

/// `s` quoted for a POSIX shell: in single quotes, each of its own as `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
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
        let body = body_start(reply).map_or(String::new(), |i| {
            String::from_utf8_lossy(&reply[i..]).into_owned()
        });
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
    fn a_command_is_quoted_for_the_shell() {
        assert_eq!(shell_quote("touch /x"), "'touch /x'");
        assert_eq!(shell_quote("echo 'a' $b"), "'echo '\\''a'\\'' $b'");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "sh -c {}",
                shell_quote("printf '%s' \"it's $((1+1))\"")
            ))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's 2");
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
        let bare = b"HTTP/1.0 200 OK\nServer: x\n\nok primary\n";
        assert_eq!(judge(bare, &http(Some("primary")), "/").0, Observation::Ok);
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
        // Keeping the connection open: the body by its length is enough; a reply that stops
        // short is judged on what came, not taken for silence.
        for (reply, want) in [
            (
                &b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nprimary\n"[..],
                Observation::Ok,
            ),
            (
                &b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nprim"[..],
                Observation::Unhealthy,
            ),
        ] {
            let web = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = web.local_addr().unwrap().port();
            let served = tokio::spawn(async move {
                let mut kept = Vec::new();
                while let Ok((mut c, _)) = web.accept().await {
                    let mut buf = [0u8; 1024];
                    let _ = c.read(&mut buf).await;
                    let _ = c.write_all(reply).await;
                    kept.push(c);
                }
            });
            let (o, d) = check(ip, port, &http(Some("primary")), within).await;
            assert_eq!(o, want, "{d}");
            served.abort();
        }
    }
}
