//! A service's health checks from the controller: a TCP connection, or an HTTP request whose
//! status (and body) must be as the topology says; the `command` and `postgres` kinds
//! dispatched to theirs; a machine's several checks (`more_checks`) made together and judged
//! as one.
//!
//! What each outcome means for detection: accepted and answered as expected is `Ok`; refused
//! is `Refused` (the machine is there, the process is not); no connection or no answer in time
//! is `Silent` (for the machine's observers to judge) — except for `https`, whose observers
//! only connect: once connected, no handshake or no reply in time is `Unhealthy`; a wrong
//! status, a body without the expected text, a reply that is not HTTP, or a certificate that
//! does not verify is `Unhealthy`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use medic_detect::Observation;
use medic_redis::ReplicationInfo;
use medic_topology::{CheckKind, ServiceCheck};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
    let conn = match tokio::time::timeout_at(deadline, TcpStream::connect(at)).await {
        Err(_) => return silent(at, within),
        Ok(Ok(c)) => c,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return (Observation::Refused, format!("{at}: connection refused"));
        }
        Ok(Err(e)) => return (Observation::Silent, format!("{at}: {e}")),
    };
    if how.kind == CheckKind::Tcp {
        return (Observation::Ok, format!("{at} accepts"));
    }
    if how.kind != CheckKind::Https {
        return exchange(conn, at, how, deadline, silent(at, within)).await;
    }
    // Connected, a TLS server that then says nothing in time is a hung server on a machine
    // that answers — a bad answer, not silence: its observers only connect (they have no TLS
    // client), so they would find the port open and take the monitor host for cut off.
    let hung = |what: &str| {
        (
            Observation::Unhealthy,
            format!(
                "{at}: connected, but {what} within {}",
                medic_playbook::human_ms(within.as_millis() as u64)
            ),
        )
    };
    let name = how
        .server_name
        .clone()
        .unwrap_or_else(|| at.ip().to_string());
    let tls = match &how.ca_file {
        Some(f) => std::fs::read(f)
            .map_err(|e| format!("cannot read ca_file {}: {e}", f.display()))
            .and_then(|pem| {
                medic_redis::Tls::new(&pem, &name)
                    .map_err(|e| format!("ca_file {}: {e}", f.display()))
            }),
        None => medic_redis::Tls::system(&name).map_err(|e| e.to_string()),
    };
    let tls = match tls {
        Ok(t) => t,
        // Nothing is known of the server: not silent (its machine is not in doubt).
        Err(e) => return (Observation::Unhealthy, format!("{at}: not asked: {e}")),
    };
    match tokio::time::timeout_at(deadline, tls.handshake(conn)).await {
        Err(_) => hung("no TLS handshake"),
        // A certificate not valid for the name, expired, or signed by another CA; or a server
        // that does not speak TLS: it answers, wrongly.
        Ok(Err(e)) => (
            Observation::Unhealthy,
            format!("{at}: TLS handshake (for {name}): {e}"),
        ),
        Ok(Ok(stream)) => exchange(stream, at, how, deadline, hung("no reply")).await,
    }
}

fn silent(at: SocketAddr, within: Duration) -> (Observation, String) {
    (
        Observation::Silent,
        format!(
            "{at}: no answer within {}",
            medic_playbook::human_ms(within.as_millis() as u64)
        ),
    )
}

/// The request on an open connection (in the clear or under TLS) and its reply, judged;
/// `late`: what no reply at all by the deadline is.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: S,
    at: SocketAddr,
    how: &ServiceCheck,
    deadline: tokio::time::Instant,
    late: (Observation, String),
) -> (Observation, String) {
    let silent = || late.clone();
    let path = how.http_path();
    let host = how
        .server_name
        .clone()
        .unwrap_or_else(|| at.ip().to_string());
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: medic\r\nConnection: close\r\n\r\n"
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

/// A service's checks of one machine, made together within `within`: one alone is as it
/// says; several are combined ([`crate::service_check::combine`]).
pub(crate) async fn of_machine(
    run: &crate::checks::RunFor,
    machine: &str,
    ip: IpAddr,
    checks: &[(u16, medic_topology::ServiceCheck)],
    within: Duration,
) -> (Observation, String, Option<ReplicationInfo>) {
    let one = |port: u16, how: &medic_topology::ServiceCheck| {
        service_check(run, machine, ip, port, how.clone(), within)
    };
    if let [(port, how)] = checks {
        return one(*port, how).await;
    }
    let results =
        futures_util::future::join_all(checks.iter().map(|(port, how)| one(*port, how))).await;
    combine(checks.iter().map(|(port, how)| (*port, how.kind)), results)
}

/// One service check, of its kind.
async fn service_check(
    run: &crate::checks::RunFor,
    machine: &str,
    ip: IpAddr,
    port: u16,
    how: medic_topology::ServiceCheck,
    within: Duration,
) -> (Observation, String, Option<ReplicationInfo>) {
    use medic_topology::CheckKind;
    match how.kind {
        CheckKind::Command => {
            let command = how.command.clone().unwrap_or_default();
            let (o, d) = command_check(run, machine, ip, command, within).await;
            (o, d, None)
        }
        CheckKind::Postgres => {
            let (o, d, seen) = crate::pg_check::check(ip, port, &how, within).await;
            (o, d, seen.map(crate::pg_check::PgSeen::info))
        }
        CheckKind::Tcp | CheckKind::Http | CheckKind::Https => {
            let (o, d) = check(ip, port, &how, within).await;
            (o, d, None)
        }
    }
}

/// A `command` check: exit 0 is healthy, any other exit unhealthy (the machine answered);
/// a machine that cannot be asked in time is silent, for its observers to judge.
async fn command_check(
    run: &crate::checks::RunFor,
    machine: &str,
    ip: IpAddr,
    command: String,
    within: Duration,
) -> (Observation, String) {
    // The runner bounds the command by `within` itself (on the machine and over SSH): this
    // bound, a little later, only covers a session that cannot be opened, so that a hung
    // command is reliably a failed check, not silence.
    let outer = within + Duration::from_millis(250);
    match tokio::time::timeout(outer, run(machine.to_owned(), ip, command, within)).await {
        Ok(Ok(None)) => (Observation::Ok, "the command exits 0".to_owned()),
        Ok(Ok(Some(why))) => (Observation::Unhealthy, why),
        Ok(Err(e)) => (Observation::Silent, e),
        Err(_) => (
            Observation::Silent,
            format!(
                "the command did not finish within {}",
                medic_playbook::human_ms(within.as_millis() as u64)
            ),
        ),
    }
}

/// Several checks of one machine as one result: healthy if every one is (the detail the
/// first's, the database's role and position if one reports them); silent only if every one
/// is silent (the machine's observers judge that); otherwise unhealthy, naming each check that
/// failed and what it saw (its machine answered at least one).
pub fn combine(
    checks: impl IntoIterator<Item = (u16, CheckKind)>,
    results: Vec<(Observation, String, Option<ReplicationInfo>)>,
) -> (Observation, String, Option<ReplicationInfo>) {
    let info = results.iter().find_map(|(_, _, i)| i.clone());
    let checks: Vec<(u16, CheckKind)> = checks.into_iter().collect();
    let answered = results.iter().any(|(o, _, _)| *o != Observation::Silent);
    let failed: Vec<String> = checks
        .iter()
        .zip(&results)
        .filter(|(_, (o, _, _))| *o != Observation::Ok)
        // A command that could not be run at all (no SSH session) beside checks its machine
        // answered says nothing of the service: the controller's SSH is not the service.
        .filter(|((_, kind), (o, _, _))| {
            !(answered && *kind == CheckKind::Command && *o == Observation::Silent)
        })
        .map(|((port, kind), (_, d, _))| format!("{} check at port {port}: {d}", kind_name(*kind)))
        .collect();
    if failed.is_empty() {
        let first = results.into_iter().next().map(|(_, d, _)| d);
        return (Observation::Ok, first.unwrap_or_default(), info);
    }
    let observation = if !answered {
        Observation::Silent
    } else {
        Observation::Unhealthy
    };
    (observation, failed.join("; "), info)
}

/// A check kind as the topology writes it.
fn kind_name(kind: CheckKind) -> &'static str {
    match kind {
        CheckKind::Tcp => "tcp",
        CheckKind::Http => "http",
        CheckKind::Https => "https",
        CheckKind::Command => "command",
        CheckKind::Postgres => "postgres",
    }
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
    fn several_checks_are_healthy_together_silent_only_all_together() {
        let ok = |d: &str| (Observation::Ok, d.to_owned(), None);
        let kinds = [
            (80, CheckKind::Http),
            (8983, CheckKind::Tcp),
            (5432, CheckKind::Postgres),
        ];
        let db = crate::pg_check::PgSeen {
            in_recovery: false,
            wal_bytes: 7,
            upstream: None,
        };
        let all = combine(
            kinds,
            vec![
                ok("GET /: 200"),
                ok("accepts"),
                (Observation::Ok, "primary".into(), Some(db.info())),
            ],
        );
        assert_eq!(all.0, Observation::Ok);
        assert_eq!(all.1, "GET /: 200");
        assert_eq!(all.2.map(|i| i.offset), Some(7));
        // One refused beside answers: unhealthy, the one that failed named.
        let one = combine(
            kinds,
            vec![
                ok("GET /: 200"),
                (
                    Observation::Refused,
                    "10.0.0.1:8983: connection refused".into(),
                    None,
                ),
                ok("primary"),
            ],
        );
        assert_eq!(one.0, Observation::Unhealthy);
        assert_eq!(
            one.1,
            "tcp check at port 8983: 10.0.0.1:8983: connection refused"
        );
        // Silent beside an answer: the machine answered, so unhealthy, not silent.
        let silent = |d: &str| (Observation::Silent, d.to_owned(), None);
        let mixed = combine(
            kinds,
            vec![silent("no answer"), ok("accepts"), ok("primary")],
        );
        assert_eq!(mixed.0, Observation::Unhealthy);
        // A command that could not be run (no SSH session) beside answers: not the service's
        // failure. Beside no answer at all, it is part of the silence.
        let with_command = [(80, CheckKind::Http), (22, CheckKind::Command)];
        let no_ssh = combine(
            with_command,
            vec![ok("GET /: 200"), silent("ssh: timed out")],
        );
        assert_eq!(no_ssh.0, Observation::Ok, "{}", no_ssh.1);
        let hung = combine(
            with_command,
            vec![
                ok("GET /: 200"),
                (Observation::Unhealthy, "did not finish".into(), None),
            ],
        );
        assert_eq!(hung.0, Observation::Unhealthy);
        let gone = combine(with_command, vec![silent("a"), silent("ssh: timed out")]);
        assert_eq!(gone.0, Observation::Silent);
        // Every one silent: silence, for the observers.
        let none = combine(kinds, vec![silent("a"), silent("b"), silent("c")]);
        assert_eq!(none.0, Observation::Silent);
        assert_eq!(
            none.1,
            "http check at port 80: a; tcp check at port 8983: b; postgres check at port 5432: c"
        );
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
