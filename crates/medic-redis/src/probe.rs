//! The health check of one redis server.

use std::time::Duration;

use std::net::SocketAddr;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
/// (the controller checks every server concurrently). After any failure the connection is
/// dropped and the next check connects afresh.
///
/// It speaks RESP itself on a plain (or TLS) socket — one fixed request, the reply read in
/// place into its one small reused buffer, no buffered reader beside it — rather than through a
/// client library's multiplexed connection (a task, channels and buffers per server): a
/// controller keeps thousands of these.
pub struct Probe {
    pub addr: RedisAddr,
    /// The role the server should have, if the caller knows it.
    pub expect: Option<Role>,
    pub timeout: Duration,
    /// Whom to log in as on each new connection.
    auth: Option<Credentials>,
    /// TLS on each new connection, the server's certificate verified.
    tls: Option<Tls>,
    conn: Option<Box<dyn Conn>>,
    /// The reply read so far: kept between checks, so its capacity is allocated once.
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
/// What a first read may fill: an `INFO replication` reply usually fits (a larger one is read
/// in more than one call, the buffer grown to the length its header gives).
const READ_BUFFER: usize = 512;
/// A reply's first line longer than this is not redis's.
const MAX_HEADER: usize = 4096;

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
            // Boxed: connecting (a TLS handshake) is rare and its future large, and a check's
            // future is held for each of the thousands of checks in flight.
            if let Some(refused) = Box::pin(self.connect()).await? {
                return Ok(refused);
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(Fail::Other("no connection".into()));
        };
        let broken = |e: std::io::Error| Fail::Broken(e.to_string());
        conn.write_all(INFO_REPLICATION).await.map_err(broken)?;
        conn.flush().await.map_err(broken)?;
        let body = match read_reply(conn, &mut self.buf).await? {
            Reply::Bulk(body) => body,
            Reply::Error { code, message } => return Ok(ProbeResult::ErrorReply { code, message }),
            Reply::Simple(line) => {
                return Err(Fail::Other(format!("unexpected reply `+{line}`")));
            }
        };
        // Parsed in place: the reply is read into the probe's own buffer, not copied out.
        let Some(body) = self.buf.get(body) else {
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
        let mut conn = s;
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
    conn: &mut Box<dyn Conn>,
    a: &Credentials,
    buf: &mut Vec<u8>,
) -> Result<Option<ProbeResult>, Fail> {
    let bulk = |s: &str| format!("${}\r\n{s}\r\n", s.len());
    let request = format!(
        "*3\r\n$4\r\nAUTH\r\n{}{}",
        bulk(&a.user),
        bulk(a.password())
    );
    let failed = |e: std::io::Error| Fail::Other(e.to_string());
    conn.write_all(request.as_bytes()).await.map_err(failed)?;
    conn.flush().await.map_err(failed)?;
    let reply = read_reply(conn, buf).await.map_err(|e| match e {
        Fail::Broken(why) => Fail::Other(why),
        other => other,
    })?;
    match reply {
        Reply::Simple(_) => Ok(None),
        Reply::Error { code, message } => Ok(Some(ProbeResult::ErrorReply { code, message })),
        Reply::Bulk(_) => Err(Fail::Other(
            "unexpected reply to AUTH (a bulk string)".into(),
        )),
    }
}

/// One whole reply, as far as a probe reads replies.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// A bulk string: where its body is in the buffer.
    Bulk(std::ops::Range<usize>),
    /// `-CODE message`.
    Error { code: String, message: String },
    /// `+line`.
    Simple(String),
}

/// Reads one reply into `buf` (emptied first; its capacity kept): as much as the first read
/// brings, then as much as the header says is missing.
async fn read_reply(conn: &mut Box<dyn Conn>, buf: &mut Vec<u8>) -> Result<Reply, Fail> {
    buf.clear();
    let mut want = READ_BUFFER;
    loop {
        match parse_reply(buf)? {
            Parsed::Whole(reply) => return Ok(reply),
            Parsed::Needs(total) => want = total,
            Parsed::Header => {}
        }
        if buf.capacity() == buf.len() {
            buf.reserve(want.saturating_sub(buf.len()).max(64));
        }
        let n = conn
            .read_buf(buf)
            .await
            .map_err(|e| Fail::Broken(e.to_string()))?;
        if n == 0 {
            return Err(Fail::Broken("connection closed".into()));
        }
    }
}

/// How far `buf` holds a reply.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Whole(Reply),
    /// A bulk string's header is in: the reply is this many bytes in all.
    Needs(usize),
    /// Not even its first line yet.
    Header,
}

fn parse_reply(buf: &[u8]) -> Result<Parsed, Fail> {
    let Some(end) = buf.iter().position(|b| *b == b'\n') else {
        if buf.len() > MAX_HEADER {
            return Err(Fail::Other("a reply's first line is too long".into()));
        }
        return Ok(Parsed::Header);
    };
    let header = buf[..end].trim_ascii_end();
    let unexpected =
        |h: &[u8]| Fail::Other(format!("unexpected reply `{}`", String::from_utf8_lossy(h)));
    match header.first() {
        Some(b'$') => {
            let len: usize = std::str::from_utf8(&header[1..])
                .ok()
                .and_then(|l| l.parse().ok())
                .filter(|l| *l <= MAX_REPLY)
                .ok_or_else(|| unexpected(header))?;
            let start = end + 1;
            let total = start + len + 2;
            Ok(if buf.len() >= total {
                Parsed::Whole(Reply::Bulk(start..start + len))
            } else {
                Parsed::Needs(total)
            })
        }
        Some(b'-') => {
            let line = String::from_utf8_lossy(&header[1..]);
            let (code, message) = line.split_once(' ').unwrap_or((&line, ""));
            Ok(Parsed::Whole(Reply::Error {
                code: code.to_owned(),
                message: message.to_owned(),
            }))
        }
        Some(b'+') => Ok(Parsed::Whole(Reply::Simple(
            String::from_utf8_lossy(&header[1..]).into_owned(),
        ))),
        _ => Err(unexpected(header)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_whole_only_once_its_body_is_in() {
        let whole = b"$5\r\nhello\r\n";
        for cut in 0..whole.len() {
            let part = parse_reply(&whole[..cut]).ok();
            assert!(
                !matches!(part, Some(Parsed::Whole(_))),
                "{cut} bytes are not a reply"
            );
        }
        assert_eq!(
            parse_reply(&whole[..4]).ok(),
            Some(Parsed::Needs(whole.len()))
        );
        assert_eq!(parse_reply(&whole[..2]).ok(), Some(Parsed::Header));
        assert_eq!(
            parse_reply(whole).ok(),
            Some(Parsed::Whole(Reply::Bulk(4..9)))
        );
        assert_eq!(
            parse_reply(b"-LOADING Redis is loading\r\n").ok(),
            Some(Parsed::Whole(Reply::Error {
                code: "LOADING".into(),
                message: "Redis is loading".into()
            }))
        );
        assert_eq!(
            parse_reply(b"+OK\r\n").ok(),
            Some(Parsed::Whole(Reply::Simple("OK".into())))
        );
        assert!(parse_reply(b":1\r\n").is_err());
        assert!(parse_reply(format!("${}\r\n", MAX_REPLY + 1).as_bytes()).is_err());
        assert!(parse_reply(&[b'-'; MAX_HEADER + 1]).is_err());
    }
}
