//! Redis administration over the redis protocol: what the controller asks of redis servers.
//!
//! [`RedisAdmin`] is the seam: a small trait with the primitives (read replication state,
//! `REPLICAOF`, `CONFIG SET`, `CONFIG REWRITE`, `CLIENT PAUSE`), implemented for real servers by
//! [`Redis`].
//! What is built from the primitives — waiting until a replica has caught up — is a free
//! function over the trait ([`wait_caught_up`], [`wait_in_sync`]).
//!
//! [`Probe`] is the health check: one connection per server, kept between checks, and a result
//! that tells a dead process (refused) from a silent host (timeout), an error reply (`LOADING`,
//! `READONLY`, `MASTERDOWN`) and a server in the wrong role.
//!
//! # Errors
//! Every error names the server and the operation; a reply error keeps redis's own code and
//! message.

pub mod info;
mod probe;
mod tls;

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio::time::{Instant, sleep, timeout};

pub use info::{
    ConnectedReplica, LinkStatus, ReplicationInfo, Role, RoleReply, parse_replication, parse_role,
};
pub use probe::{Probe, ProbeResult};
pub use tls::{Conn, Tls, TlsError, check_server_files, speaks_tls};

/// A redis ACL user and its password, sent as `AUTH user password` on every new connection.
/// The password is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    password: String,
}

impl Credentials {
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    pub(crate) fn password(&self) -> &str {
        &self.password
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, ********)", self.user)
    }
}

/// Whether a redis error code says the server refused whom we logged in as (or that we did not),
/// not that it is unwell.
pub fn is_auth_refusal(code: &str) -> bool {
    matches!(code, "NOAUTH" | "WRONGPASS" | "NOPERM")
}

/// The [`ProbeResult::ErrorReply`] code of a server whose TLS handshake failed on what it sent
/// (a certificate medic refuses: expired, from another CA, for another name; or no TLS at
/// all): it runs, and medic cannot talk to it until the certificates are put right.
pub const TLS_REFUSED: &str = "TLS";

/// Where a redis server listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RedisAddr {
    pub host: IpAddr,
    pub port: u16,
}

impl RedisAddr {
    pub fn new(host: IpAddr, port: u16) -> Self {
        RedisAddr { host, port }
    }
}

impl From<SocketAddr> for RedisAddr {
    fn from(a: SocketAddr) -> Self {
        RedisAddr {
            host: a.ip(),
            port: a.port(),
        }
    }
}

impl fmt::Display for RedisAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", SocketAddr::new(self.host, self.port))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis {addr}: {op}: connection refused (the host answered, no process listens)")]
    Refused { addr: RedisAddr, op: &'static str },
    #[error("redis {addr}: {op}: no answer within {after:?}")]
    Timeout {
        addr: RedisAddr,
        op: &'static str,
        after: Duration,
    },
    #[error("redis {addr}: {op}: the server replied {code}: {message}")]
    Reply {
        addr: RedisAddr,
        op: &'static str,
        code: String,
        message: String,
    },
    #[error("redis {addr}: {op} failed")]
    Io {
        addr: RedisAddr,
        op: &'static str,
        #[source]
        source: redis::RedisError,
    },
    #[error("redis {addr}: {op}: {source}")]
    Parse {
        addr: RedisAddr,
        op: &'static str,
        #[source]
        source: info::InfoParseError,
    },
    /// `CONFIG REWRITE` on a server started without a config file (`redis-server --port ...`):
    /// there is no file to write its settings (its role) into.
    #[error(
        "redis {addr}: CONFIG REWRITE: the server runs without a config file, so nothing keeps its settings over a restart"
    )]
    NoConfigFile { addr: RedisAddr },
    #[error("redis {replica}: not in sync with {master} after {after:?}: {state}")]
    NotInSync {
        replica: RedisAddr,
        master: RedisAddr,
        after: Duration,
        state: String,
    },
}

impl RedisError {
    fn from_redis(addr: RedisAddr, op: &'static str, e: redis::RedisError) -> Self {
        if e.is_connection_refusal() {
            RedisError::Refused { addr, op }
        } else if let Some(code) = e.code() {
            RedisError::Reply {
                addr,
                op,
                code: code.to_owned(),
                message: e.detail().unwrap_or_default().to_owned(),
            }
        } else {
            RedisError::Io {
                addr,
                op,
                source: e,
            }
        }
    }
}

/// The primitives the controller needs from a redis server. Each call is bounded in time.
pub trait RedisAdmin: Send + Sync {
    /// `PING`: the server answers `PONG`.
    fn ping(&self, at: RedisAddr) -> impl Future<Output = Result<(), RedisError>> + Send;
    /// `ROLE`, parsed.
    fn role(&self, at: RedisAddr) -> impl Future<Output = Result<RoleReply, RedisError>> + Send;
    /// `INFO replication`, parsed.
    fn replication(
        &self,
        at: RedisAddr,
    ) -> impl Future<Output = Result<ReplicationInfo, RedisError>> + Send;
    /// `REPLICAOF host port`, or `REPLICAOF NO ONE` when `master` is `None`.
    fn replicaof(
        &self,
        at: RedisAddr,
        master: Option<RedisAddr>,
    ) -> impl Future<Output = Result<(), RedisError>> + Send;
    /// `CONFIG REWRITE`: the server writes its running settings — its role (`replicaof`)
    /// among them — into the config file it was started from, so a restart keeps them.
    /// [`RedisError::NoConfigFile`] when it was started without one.
    fn config_rewrite(&self, at: RedisAddr) -> impl Future<Output = Result<(), RedisError>> + Send;
    /// `CONFIG SET key value`.
    fn config_set(
        &self,
        at: RedisAddr,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<(), RedisError>> + Send;
    /// `CLIENT PAUSE ms WRITE`: writes wait (reads go on) for at most `how_long`.
    fn pause_writes(
        &self,
        at: RedisAddr,
        how_long: Duration,
    ) -> impl Future<Output = Result<(), RedisError>> + Send;
    /// `CLIENT UNPAUSE`.
    fn unpause(&self, at: RedisAddr) -> impl Future<Output = Result<(), RedisError>> + Send;
}

/// Real redis servers, a fresh connection per call (admin calls are rare; probes keep theirs).
#[derive(Debug, Clone)]
pub struct Redis {
    /// The bound on each call: connecting and the reply together.
    pub timeout: Duration,
    /// Whom to log in as; `None` for a server without ACLs.
    pub auth: Option<Credentials>,
    /// TLS, the servers' certificate verified; `None` in the clear.
    pub tls: Option<Tls>,
}

impl Default for Redis {
    fn default() -> Self {
        Redis {
            timeout: Duration::from_secs(2),
            auth: None,
            tls: None,
        }
    }
}

impl Redis {
    /// A health check of the server at `addr` that logs in and speaks TLS as this client does.
    pub fn probe(&self, addr: RedisAddr, expect: Option<info::Role>, within: Duration) -> Probe {
        Probe::new(addr, expect, within)
            .with_auth(self.auth.clone())
            .with_tls(self.tls.clone())
    }

    /// The default bound, logging in as `auth`.
    pub fn with_auth(auth: Option<Credentials>) -> Redis {
        Redis {
            auth,
            ..Redis::default()
        }
    }
}

pub(crate) async fn connect(
    addr: RedisAddr,
    auth: Option<&Credentials>,
    tls: Option<&Tls>,
    within: Duration,
) -> Result<MultiplexedConnection, RedisError> {
    let info = redis::RedisConnectionInfo {
        username: auth.map(|a| a.user.clone()),
        password: auth.map(|a| a.password().to_owned()),
        ..Default::default()
    };
    let timed_out = || RedisError::Timeout {
        addr,
        op: "connect",
        after: within,
    };
    let stream = match timeout(
        within,
        tls::open(SocketAddr::new(addr.host, addr.port), tls),
    )
    .await
    {
        Err(_) => return Err(timed_out()),
        Ok(Err(e)) => return Err(RedisError::from_redis(addr, "connect", e.into())),
        Ok(Ok(s)) => s,
    };
    let config = AsyncConnectionConfig::new().set_response_timeout(within);
    match timeout(
        within,
        MultiplexedConnection::new_with_config(&info, stream, config),
    )
    .await
    {
        Err(_) => Err(timed_out()),
        Ok(Err(e)) if e.is_timeout() => Err(timed_out()),
        Ok(Err(e)) => Err(RedisError::from_redis(addr, "connect", e)),
        Ok(Ok((con, driver))) => {
            tokio::spawn(driver);
            Ok(con)
        }
    }
}

impl Redis {
    /// A client's write, to see whether writes pass (through a proxy, say): `SET key value PX
    /// ttl_ms`, which must answer `OK`.
    pub async fn write_probe(
        &self,
        at: RedisAddr,
        key: &str,
        value: &str,
        ttl_ms: u64,
    ) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("PX").arg(ttl_ms);
        let reply: String = self.call(at, "SET", cmd).await?;
        if reply == "OK" {
            Ok(())
        } else {
            Err(RedisError::Reply {
                addr: at,
                op: "SET",
                code: "UNEXPECTED".into(),
                message: reply,
            })
        }
    }

    async fn call<T: redis::FromRedisValue + Send>(
        &self,
        addr: RedisAddr,
        op: &'static str,
        cmd: redis::Cmd,
    ) -> Result<T, RedisError> {
        let work = async {
            let mut con =
                connect(addr, self.auth.as_ref(), self.tls.as_ref(), self.timeout).await?;
            cmd.query_async::<T>(&mut con)
                .await
                .map_err(|e| RedisError::from_redis(addr, op, e))
        };
        match timeout(self.timeout, work).await {
            Ok(Err(RedisError::Io { source, .. })) if source.is_timeout() => {
                Err(RedisError::Timeout {
                    addr,
                    op,
                    after: self.timeout,
                })
            }
            Ok(r) => r,
            Err(_) => Err(RedisError::Timeout {
                addr,
                op,
                after: self.timeout,
            }),
        }
    }
}

impl RedisAdmin for Redis {
    async fn ping(&self, at: RedisAddr) -> Result<(), RedisError> {
        let reply: String = self.call(at, "PING", redis::cmd("PING")).await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(RedisError::Reply {
                addr: at,
                op: "PING",
                code: "UNEXPECTED".into(),
                message: reply,
            })
        }
    }

    async fn role(&self, at: RedisAddr) -> Result<RoleReply, RedisError> {
        let v: redis::Value = self.call(at, "ROLE", redis::cmd("ROLE")).await?;
        parse_role(&v).map_err(|source| RedisError::Parse {
            addr: at,
            op: "ROLE",
            source,
        })
    }

    async fn replication(&self, at: RedisAddr) -> Result<ReplicationInfo, RedisError> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg("replication");
        let text: String = self.call(at, "INFO replication", cmd).await?;
        parse_replication(&text).map_err(|source| RedisError::Parse {
            addr: at,
            op: "INFO replication",
            source,
        })
    }

    async fn replicaof(&self, at: RedisAddr, master: Option<RedisAddr>) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("REPLICAOF");
        match master {
            None => cmd.arg("NO").arg("ONE"),
            Some(m) => cmd.arg(m.host.to_string()).arg(m.port),
        };
        let _: String = self.call(at, "REPLICAOF", cmd).await?;
        Ok(())
    }

    async fn config_set(&self, at: RedisAddr, key: &str, value: &str) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("SET").arg(key).arg(value);
        let _: String = self.call(at, "CONFIG SET", cmd).await?;
        Ok(())
    }

    async fn config_rewrite(&self, at: RedisAddr) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("REWRITE");
        match self.call::<String>(at, "CONFIG REWRITE", cmd).await {
            Ok(_) => Ok(()),
            // redis: "ERR The server is running without a config file".
            Err(RedisError::Reply { message, .. }) if message.contains("without a config file") => {
                Err(RedisError::NoConfigFile { addr: at })
            }
            Err(e) => Err(e),
        }
    }

    async fn pause_writes(&self, at: RedisAddr, how_long: Duration) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("CLIENT");
        cmd.arg("PAUSE")
            .arg(how_long.as_millis().max(1) as u64)
            .arg("WRITE");
        let _: String = self.call(at, "CLIENT PAUSE", cmd).await?;
        Ok(())
    }

    async fn unpause(&self, at: RedisAddr) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("CLIENT");
        cmd.arg("UNPAUSE");
        let _: String = self.call(at, "CLIENT UNPAUSE", cmd).await?;
        Ok(())
    }
}

/// How often a sync wait asks the replica.
pub const SYNC_POLL: Duration = Duration::from_millis(50);

/// Waits until `replica` replicates `master` with its link up, no sync in progress, and has
/// processed at least `offset`. Errors raised while waiting (the replica still loading, a
/// dropped connection) are retried until `within` runs out; the error then says what was seen
/// last.
pub async fn wait_caught_up<R: RedisAdmin>(
    redis: &R,
    replica: RedisAddr,
    master: RedisAddr,
    offset: u64,
    within: Duration,
) -> Result<ReplicationInfo, RedisError> {
    let started = Instant::now();
    let deadline = started + within;
    loop {
        let last = match redis.replication(replica).await {
            Ok(info) => {
                let replicates = info.role == Role::Replica
                    && info.master.as_ref().is_some_and(|(h, p)| {
                        *p == master.port && h.parse::<IpAddr>().is_ok_and(|ip| ip == master.host)
                    });
                let received = info.replica_offset.unwrap_or(0);
                if replicates
                    && info.master_link_status == Some(LinkStatus::Up)
                    && !info.sync_in_progress
                    && received >= offset
                {
                    return Ok(info);
                }
                match (&info.role, &info.master) {
                    (Role::Master, _) => "it is a master".to_owned(),
                    (_, Some((h, p))) if !replicates => format!("it replicates {h}:{p}"),
                    _ => format!(
                        "link {}, sync {}, offset {received} of {offset}",
                        match info.master_link_status {
                            Some(LinkStatus::Up) => "up",
                            _ => "down",
                        },
                        if info.sync_in_progress {
                            "in progress"
                        } else {
                            "not running"
                        }
                    ),
                }
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() + SYNC_POLL > deadline {
            return Err(RedisError::NotInSync {
                replica,
                master,
                after: within,
                state: last,
            });
        }
        sleep(SYNC_POLL).await;
    }
}

/// Reads the master's offset now and waits until the replica has caught up with it.
pub async fn wait_in_sync<R: RedisAdmin>(
    redis: &R,
    replica: RedisAddr,
    master: RedisAddr,
    within: Duration,
) -> Result<ReplicationInfo, RedisError> {
    let offset = redis.replication(master).await?.offset;
    wait_caught_up(redis, replica, master, offset, within).await
}
