//! The health check of one redis server.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde::Serialize;
use tokio::time::timeout;

use crate::info::{ReplicationInfo, Role, parse_replication};
use crate::{RedisAddr, RedisError, connect};

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
#[derive(Debug)]
pub struct Probe {
    pub addr: RedisAddr,
    /// The role the server should have, if the caller knows it.
    pub expect: Option<Role>,
    pub timeout: Duration,
    conn: Option<MultiplexedConnection>,
}

impl Probe {
    pub fn new(addr: RedisAddr, expect: Option<Role>, timeout: Duration) -> Self {
        Probe {
            addr,
            expect,
            timeout,
            conn: None,
        }
    }

    /// One check: `INFO replication`, bounded by the timeout (connecting included).
    pub async fn check(&mut self) -> ProbeResult {
        let result = match timeout(self.timeout, self.ask()).await {
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
        match self.ask_once().await {
            Err(RedisError::Io { source, .. }) if reused && !source.is_timeout() => {
                self.conn = None;
                self.ask_once().await.unwrap_or_else(classify)
            }
            Err(e) => classify(e),
            Ok(r) => r,
        }
    }

    async fn ask_once(&mut self) -> Result<ProbeResult, RedisError> {
        if self.conn.is_none() {
            self.conn = Some(connect(self.addr, self.timeout).await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Ok(ProbeResult::Failed {
                reason: "no connection".into(),
            });
        };
        let mut cmd = redis::cmd("INFO");
        cmd.arg("replication");
        let text: String = cmd
            .query_async(conn)
            .await
            .map_err(|e| RedisError::from_redis(self.addr, "INFO replication", e))?;
        Ok(match parse_replication(&text) {
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
}

fn classify(e: RedisError) -> ProbeResult {
    match e {
        RedisError::Refused { .. } => ProbeResult::Refused,
        RedisError::Timeout { .. } => ProbeResult::Timeout,
        RedisError::Reply { code, message, .. } => ProbeResult::ErrorReply { code, message },
        RedisError::Io { source, .. } if source.is_timeout() => ProbeResult::Timeout,
        other => ProbeResult::Failed {
            reason: other.to_string(),
        },
    }
}
