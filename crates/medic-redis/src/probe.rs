//! The health check of one redis server.

use std::time::Duration;

use std::net::SocketAddr;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::time::timeout;

use crate::info::{ReplicationInfo, Role, parse_replication};
use crate::tls::{Conn, Tls, open};
use crate::{Credentials, RedisAddr};

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ProbeResult {
    /// It answered, in the expected role (or no role was expected).
    Up { info: ReplicationInfo },
    /// Connection refused: the host answered, no process listens. Certain.
    Refused,
    /// No answer within the timeout: the host, the network or the process is silent.
    Timeout,
    /// The server answered with an error (`LOADING`, `MASTERDOWN`, `READONLY`, ...).
    ErrorReply { code: String, message: String },
    /// It answered in the other role.
    WrongRole { expected: Role, actual: Role },
    /// Anything else (a reset connection, a reply that does not parse).
    Failed { reason: String },
}

impl ProbeResult {
    pub fn is_up(&self) -> bool {
        matches!(self, ProbeResult::Up { .. })
    }
}

/// Checks one server, keeping its connection between checks.
///
/// A probe owns its connection and nothing else: a check of one server never waits for another
/// (the controller runs each probe in its own task). After any failure the connection is
/// dropped and the next check connects afresh.
///
/// It speaks RESP itself on a plain (or TLS) socket — one fixed request, the reply read in place into a
/// small reused buffer — rather than through a client library's multiplexed connection (a task,
/// channels and buffers per server): a controller keeps thousands of these.
pub struct Probe {
    pub addr: RedisAddr,
    /// The role the server should have, if the caller knows it.
    pub expect: Option<Role>,
    pub timeout: Duration,
    /// Whom to log in as on each new connection.
    auth: Option<Credentials>,
    /// TLS on each new connection, the server's certificate verified.
    tls: Option<Tls>,
    conn: Option<BufReader<Box<dyn Conn>>>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("addr", &self.addr)
            .field("expect", &self.expect)
            .field("timeout", &self.timeout)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

/// Why one attempt failed.
enum Fail {
    Refused,
    /// The TLS handshake failed on what the server sent (it runs).
    Tls(String),
    /// The kept connection broke (reset, closed): worth one fresh attempt.
    Broken(String),
    Other(String),
}

const INFO_REPLICATION: &[u8] = b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n";
/// An `INFO replication` reply is a few hundred bytes; more than this is not one.
const MAX_REPLY: usize = 64 * 1024;
/// The read buffer of a kept connection: an `INFO replication` reply fits (a larger one is
/// read in more than one call).
const READ_BUFFER: usize = 512;

impl Probe {
    pub fn new(addr: RedisAddr, expect: Option<Role>, timeout: Duration) -> Self {
        Probe {
            addr,
            expect,
            timeout,
            auth: None,
            tls: None,
            conn: None,
            buf: Vec::new(),
        }
    }

    /// Logs in as `auth` (`AUTH user password`) on every new connection.
    pub fn with_auth(mut self, auth: Option<Credentials>) -> Self {
        self.auth = auth;
        self
    }

    /// Speaks TLS (`tls`) on every new connection.
    pub fn with_tls(mut self, tls: Option<Tls>) -> Self {
        self.tls = tls;
        self
    }

    /// One check: `INFO replication`, bounded by the timeout (connecting included).
    pub async fn check(&mut self) -> ProbeResult {
        self.check_within(self.timeout).await
    }

    /// One check bounded by `within` instead of the probe's timeout. A check that times out
    /// leaves no connection behind: the next one connects afresh.
    pub async fn check_within(&mut self, within: Duration) -> ProbeResult {
        let result = match timeout(within, self.ask()).await {
            Err(_) => ProbeResult::Timeout,
            Ok(r) => r,
        };
        if !result.is_up() && !matches!(result, ProbeResult::WrongRole { .. }) {
            self.conn = None;
        }
        result
    }

    async fn ask(&mut self) -> ProbeResult {
        // A kept connection that breaks says little (the process died? the network blinked?):
        // reconnect once, within the same check, and let the fresh attempt say which.
        let reused = self.conn.is_some();
        let first = self.ask_once().await;
        let outcome = match first {
            Err(Fail::Broken(_)) if reused => {
                self.conn = None;
                self.ask_once().await
            }
            other => other,
        };
        match outcome {
            Ok(r) => r,
            Err(Fail::Refused) => ProbeResult::Refused,
            Err(Fail::Tls(message)) => ProbeResult::ErrorReply {
                code: crate::TLS_REFUSED.to_owned(),
                message,
            },
            Err(Fail::Broken(reason) | Fail::Other(reason)) => ProbeResult::Failed { reason },
        }
    }

    async fn ask_once(&mut self) -> Result<ProbeResult, Fail> {
        if self.conn.is_none() {
            // Boxed: connecting (a TLS handshake) is rare and its future large, and a probe's
            // future is held by each of thousands of check tasks.
            if let Some(refused) = Box::pin(self.connect()).await? {
                return Ok(refused);
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(Fail::Other("no connection".into()));
        };
        let broken = |e: std::io::Error| Fail::Broken(e.to_string());
        let w = conn.get_mut();
        w.write_all(INFO_REPLICATION).await.map_err(broken)?;
        w.flush().await.map_err(broken)?;
        self.buf.clear();
        let n = conn
            .read_until(b'\n', &mut self.buf)
            .await
            .map_err(broken)?;
        if n == 0 {
            return Err(Fail::Broken("connection closed".into()));
        }
        let header = self.buf.trim_ascii_end();
        let unexpected =
            |h: &[u8]| Fail::Other(format!("unexpected reply `{}`", String::from_utf8_lossy(h)));
        match header.first() {
            Some(b'$') => {
                let len: usize = std::str::from_utf8(&header[1..])
                    .ok()
                    .and_then(|l| l.parse().ok())
                    .filter(|l| *l <= MAX_REPLY)
                    .ok_or_else(|| unexpected(header))?;
                self.buf.clear();
                self.buf.resize(len + 2, 0);
                conn.read_exact(&mut self.buf).await.map_err(broken)?;
            }
            Some(b'-') => {
                let line = String::from_utf8_lossy(&header[1..]);
                let (code, message) = line.split_once(' ').unwrap_or((&line, ""));
                return Ok(ProbeResult::ErrorReply {
                    code: code.to_owned(),
                    message: message.to_owned(),
                });
            }
            _ => return Err(unexpected(header)),
        }
        // Parsed in place: the reply is read into the probe's own buffer, not copied out.
        let Some(body) = self.buf.get(..self.buf.len() - 2) else {
            return Err(Fail::Other("short reply".into()));
        };
        let Ok(text) = std::str::from_utf8(body) else {
            return Err(Fail::Other("reply is not UTF-8".into()));
        };
        Ok(match parse_replication(text) {
            Err(e) => ProbeResult::Failed {
                reason: e.to_string(),
            },
            Ok(info) => match self.expect {
                Some(expected) if expected != info.role => ProbeResult::WrongRole {
                    expected,
                    actual: info.role,
                },
                _ => ProbeResult::Up { info },
            },
        })
    }

    /// Opens the connection (and logs in): `Some` is the server refusing the login.
    async fn connect(&mut self) -> Result<Option<ProbeResult>, Fail> {
        let s = open(
            SocketAddr::new(self.addr.host, self.addr.port),
            self.tls.as_ref(),
        )
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Fail::Refused,
            // The server sent something: a certificate medic refuses, or not TLS at all.
            std::io::ErrorKind::InvalidData => Fail::Tls(e.to_string()),
            _ => Fail::Other(e.to_string()),
        })?;
        let mut conn = BufReader::with_capacity(READ_BUFFER, s);
        if let Some(a) = &self.auth
            && let Some(refused) = login(&mut conn, a, &mut self.buf).await?
        {
            return Ok(Some(refused));
        }
        self.conn = Some(conn);
        Ok(None)
    }
}

/// `AUTH user password` on a fresh connection: `None` once logged in, the server's refusal
/// otherwise.
async fn login(
    conn: &mut BufReader<Box<dyn Conn>>,
    a: &Credentials,
    buf: &mut Vec<u8>,
) -> Result<Option<ProbeResult>, Fail> {
    let bulk = |s: &str| format!("${}\r\n{s}\r\n", s.len());
    let request = format!(
        "*3\r\n$4\r\nAUTH\r\n{}{}",
        bulk(&a.user),
        bulk(a.password())
    );
    let broken = |e: std::io::Error| Fail::Other(e.to_string());
    let w = conn.get_mut();
    w.write_all(request.as_bytes()).await.map_err(broken)?;
    w.flush().await.map_err(broken)?;
    buf.clear();
    let n = conn.read_until(b'\n', buf).await.map_err(broken)?;
    if n == 0 {
        return Err(Fail::Other("connection closed".into()));
    }
    let line = buf.trim_ascii_end();
    match line.first() {
        Some(b'+') => Ok(None),
        Some(b'-') => {
            let line = String::from_utf8_lossy(&line[1..]);
            let (code, message) = line.split_once(' ').unwrap_or((&line, ""));
            Ok(Some(ProbeResult::ErrorReply {
                code: code.to_owned(),
                message: message.to_owned(),
            }))
        }
        _ => Err(Fail::Other(format!(
            "unexpected reply to AUTH `{}`",
            String::from_utf8_lossy(line)
        ))),
    }
}
