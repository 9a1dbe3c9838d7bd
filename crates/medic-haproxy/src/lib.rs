//! HAProxy's runtime API: what the controller changes on a running HAProxy, and how it checks
//! that the change took.
//!
//! [`ProxyApi`] is the seam; [`RuntimeApi`] talks to a real HAProxy over its admin socket (unix
//! or TCP), one command per connection. Every mutating call reads the state back and fails
//! with [`HaproxyError::NotApplied`] if HAProxy did not end where it was asked to; a command
//! HAProxy refuses fails with [`HaproxyError::Rejected`] carrying HAProxy's own words.
//!
//! Runtime changes are lost when HAProxy reloads: [`config::edit_server`] rewrites the server's
//! line in haproxy.cfg so the configuration says what the runtime API did (see that module for
//! why not HAProxy's server-state-file). [`ProxyApi::dump_state`] still returns the
//! `show servers state` text for operators and diagnostics.

pub mod aliases;
pub mod cmd;
pub mod config;
pub mod parse;

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, sleep, timeout};

pub use aliases::Aliases;
pub use cmd::{AdminState, CheckParams, ServerName};
pub use config::{ConfigEditError, ServerEdit, edit_server};
pub use parse::{OpState, ServerState, StatRow, parse_servers_state, parse_stat};

/// Where a runtime API listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "{a}"),
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HaproxyError {
    #[error("haproxy {endpoint}: cannot connect to the runtime API")]
    Connect {
        endpoint: Endpoint,
        #[source]
        source: std::io::Error,
    },
    #[error("haproxy {endpoint}: `{command}`: no complete answer within {after:?}")]
    Timeout {
        endpoint: Endpoint,
        command: String,
        after: Duration,
    },
    #[error("haproxy {endpoint}: `{command}`")]
    Io {
        endpoint: Endpoint,
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("haproxy {endpoint}: `{command}` refused: {message}")]
    Rejected {
        endpoint: Endpoint,
        command: String,
        message: String,
    },
    #[error("haproxy {endpoint}: `{command}` did not take: wanted {wanted}, found {found}")]
    NotApplied {
        endpoint: Endpoint,
        command: String,
        wanted: String,
        found: String,
    },
    #[error("haproxy {endpoint}: no server {server}")]
    UnknownServer {
        endpoint: Endpoint,
        server: ServerName,
    },
    #[error("haproxy {endpoint}: {source}")]
    Parse {
        endpoint: Endpoint,
        #[source]
        source: parse::ParseError,
    },
}

/// What the controller does to a HAProxy. Mutations are read back before they return.
pub trait ProxyApi: Send + Sync {
    /// `show servers state [backend]`, typed.
    fn servers(
        &self,
        backend: Option<&str>,
    ) -> impl Future<Output = Result<Vec<ServerState>, HaproxyError>> + Send;
    /// `show stat`, typed.
    fn stats(&self) -> impl Future<Output = Result<Vec<StatRow>, HaproxyError>> + Send;
    /// `set server B/S state ready|drain|maint`.
    fn set_state(
        &self,
        s: &ServerName,
        state: AdminState,
    ) -> impl Future<Output = Result<(), HaproxyError>> + Send;
    /// `shutdown sessions server B/S`, then waits (briefly) until it has no session.
    fn shutdown_sessions(
        &self,
        s: &ServerName,
    ) -> impl Future<Output = Result<(), HaproxyError>> + Send;
    /// `set server B/S addr A port P`.
    fn set_addr(
        &self,
        s: &ServerName,
        addr: IpAddr,
        port: u16,
    ) -> impl Future<Output = Result<(), HaproxyError>> + Send;
    /// `add server` with explicit check parameters, then `enable health` and `enable server`.
    fn add_server(
        &self,
        s: &ServerName,
        addr: IpAddr,
        port: u16,
        check: Option<CheckParams>,
    ) -> impl Future<Output = Result<(), HaproxyError>> + Send;
    /// Maintenance first (HAProxy deletes only servers in maintenance), then `del server`.
    fn del_server(&self, s: &ServerName) -> impl Future<Output = Result<(), HaproxyError>> + Send;
    /// The text of `show servers state`, in the format of a `server-state-file`.
    fn dump_state(&self) -> impl Future<Output = Result<String, HaproxyError>> + Send;
}

/// A real HAProxy's runtime API.
#[derive(Debug, Clone)]
pub struct RuntimeApi {
    pub endpoint: Endpoint,
    /// Bound on one command: connecting, sending, and reading the whole reply.
    pub timeout: Duration,
    /// Servers HAProxy names otherwise than medic: every command and every reading is
    /// translated, so callers speak of machines.
    pub aliases: Arc<Aliases>,
}

/// How long `shutdown sessions` may take to show zero sessions.
const SESSIONS_GONE_WITHIN: Duration = Duration::from_secs(2);

impl RuntimeApi {
    pub fn new(endpoint: Endpoint) -> Self {
        RuntimeApi {
            endpoint,
            timeout: Duration::from_secs(2),
            aliases: Arc::default(),
        }
    }

    pub fn tcp(addr: SocketAddr) -> Self {
        Self::new(Endpoint::Tcp(addr))
    }

    /// Sends one command and returns HAProxy's whole reply.
    pub async fn send(&self, command: &str) -> Result<String, HaproxyError> {
        let work = async {
            let line = format!("{command}\n");
            let mut reply = Vec::new();
            let io = |source| HaproxyError::Io {
                endpoint: self.endpoint.clone(),
                command: command.to_owned(),
                source,
            };
            match &self.endpoint {
                Endpoint::Tcp(a) => {
                    let mut s = tokio::net::TcpStream::connect(a).await.map_err(|source| {
                        HaproxyError::Connect {
                            endpoint: self.endpoint.clone(),
                            source,
                        }
                    })?;
                    s.write_all(line.as_bytes()).await.map_err(io)?;
                    s.read_to_end(&mut reply).await.map_err(io)?;
                }
                Endpoint::Unix(p) => {
                    let mut s = tokio::net::UnixStream::connect(p).await.map_err(|source| {
                        HaproxyError::Connect {
                            endpoint: self.endpoint.clone(),
                            source,
                        }
                    })?;
                    s.write_all(line.as_bytes()).await.map_err(io)?;
                    s.read_to_end(&mut reply).await.map_err(io)?;
                }
            }
            // HAProxy ends every reply with a line end (an empty reply is "\n"): nothing at all
            // is a connection closed before HAProxy said anything (a forward the machine
            // refused, HAProxy dying).
            if reply.is_empty() {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the connection closed without a reply",
                )));
            }
            Ok(String::from_utf8_lossy(&reply).into_owned())
        };
        timeout(self.timeout, work).await.unwrap_or_else(|_| {
            Err(HaproxyError::Timeout {
                endpoint: self.endpoint.clone(),
                command: command.to_owned(),
                after: self.timeout,
            })
        })
    }

    /// Sends a command whose success reply is one of `ok` (the empty reply included when
    /// `ok` has ""), and turns any other reply into `Rejected` with HAProxy's words.
    async fn expect(&self, command: String, ok: &[&str]) -> Result<String, HaproxyError> {
        let reply = self.send(&command).await?;
        let text = reply.trim();
        if ok.iter().any(|p| {
            if p.is_empty() {
                text.is_empty()
            } else {
                text.starts_with(p)
            }
        }) {
            Ok(text.to_owned())
        } else {
            Err(HaproxyError::Rejected {
                endpoint: self.endpoint.clone(),
                command,
                message: text.to_owned(),
            })
        }
    }

    async fn server(&self, s: &ServerName) -> Result<Option<ServerState>, HaproxyError> {
        let text = self
            .send(&cmd::show_servers_state(Some(&s.backend)))
            .await?;
        if text.trim() == "Can't find backend." {
            return Err(HaproxyError::UnknownServer {
                endpoint: self.endpoint.clone(),
                server: s.clone(),
            });
        }
        Ok(self
            .parse_states(&text)?
            .into_iter()
            .find(|x| x.server == s.server))
    }

    /// `show servers state`'s reply, its servers named as medic knows them.
    fn parse_states(&self, text: &str) -> Result<Vec<ServerState>, HaproxyError> {
        let all = parse_servers_state(text).map_err(|source| HaproxyError::Parse {
            endpoint: self.endpoint.clone(),
            source,
        })?;
        Ok(all
            .into_iter()
            .map(|st| self.aliases.to_medic(st))
            .collect())
    }

    async fn existing(&self, s: &ServerName) -> Result<ServerState, HaproxyError> {
        self.server(s)
            .await?
            .ok_or_else(|| HaproxyError::UnknownServer {
                endpoint: self.endpoint.clone(),
                server: s.clone(),
            })
    }

    fn not_applied(
        &self,
        command: String,
        wanted: impl Into<String>,
        found: impl Into<String>,
    ) -> HaproxyError {
        HaproxyError::NotApplied {
            endpoint: self.endpoint.clone(),
            command,
            wanted: wanted.into(),
            found: found.into(),
        }
    }
}

fn describe(st: &ServerState) -> String {
    let admin = if st.in_maint() {
        "maint"
    } else if st.in_drain() {
        "drain"
    } else {
        "ready"
    };
    format!(
        "{admin} (admin state {:#x}, {:?}) at {}:{}",
        st.admin_state, st.op_state, st.addr, st.port
    )
}

impl ProxyApi for RuntimeApi {
    async fn servers(&self, backend: Option<&str>) -> Result<Vec<ServerState>, HaproxyError> {
        let text = self.send(&cmd::show_servers_state(backend)).await?;
        self.parse_states(&text)
    }

    async fn stats(&self) -> Result<Vec<StatRow>, HaproxyError> {
        let text = self.send("show stat").await?;
        parse_stat(&text).map_err(|source| HaproxyError::Parse {
            endpoint: self.endpoint.clone(),
            source,
        })
    }

    async fn set_state(&self, s: &ServerName, state: AdminState) -> Result<(), HaproxyError> {
        let command = cmd::set_state(&self.aliases.to_haproxy(s), state);
        self.expect(command.clone(), &[""]).await?;
        let st = self.existing(s).await?;
        let took = match state {
            AdminState::Maint => st.in_maint(),
            AdminState::Drain => st.in_drain() && !st.in_maint(),
            AdminState::Ready => st.is_ready(),
        };
        if took {
            Ok(())
        } else {
            Err(self.not_applied(command, state.as_str(), describe(&st)))
        }
    }

    async fn shutdown_sessions(&self, s: &ServerName) -> Result<(), HaproxyError> {
        let command = cmd::shutdown_sessions(&self.aliases.to_haproxy(s));
        self.expect(command.clone(), &[""]).await?;
        let deadline = Instant::now() + SESSIONS_GONE_WITHIN;
        loop {
            let rows = self.stats().await?;
            let row = rows
                .iter()
                .find(|r| r.proxy == s.backend && r.name == self.aliases.haproxy_name(&s.server));
            let Some(row) = row else {
                return Err(HaproxyError::UnknownServer {
                    endpoint: self.endpoint.clone(),
                    server: s.clone(),
                });
            };
            if row.scur == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.not_applied(
                    command,
                    "0 sessions",
                    format!("{} sessions", row.scur),
                ));
            }
            sleep(Duration::from_millis(20)).await;
        }
    }

    async fn set_addr(&self, s: &ServerName, addr: IpAddr, port: u16) -> Result<(), HaproxyError> {
        let command = cmd::set_addr(&self.aliases.to_haproxy(s), &addr, port);
        self.expect(
            command.clone(),
            &["IP changed", "no need to change", "port changed"],
        )
        .await?;
        let st = self.existing(s).await?;
        if st.addr.parse::<IpAddr>().is_ok_and(|a| a == addr) && st.port == port {
            Ok(())
        } else {
            Err(self.not_applied(
                command,
                SocketAddr::new(addr, port).to_string(),
                describe(&st),
            ))
        }
    }

    async fn add_server(
        &self,
        s: &ServerName,
        addr: IpAddr,
        port: u16,
        check: Option<CheckParams>,
    ) -> Result<(), HaproxyError> {
        let wire = self.aliases.to_haproxy(s);
        let command = cmd::add_server(&wire, addr, port, check.as_ref());
        self.expect(command.clone(), &["New server registered."])
            .await?;
        if check.is_some() {
            self.expect(cmd::enable_health(&wire), &[""]).await?;
        }
        self.expect(cmd::enable_server(&wire), &[""]).await?;
        let st = self.existing(s).await?;
        let at = st.addr.parse::<IpAddr>().is_ok_and(|a| a == addr) && st.port == port;
        if at && st.is_ready() {
            Ok(())
        } else {
            Err(self.not_applied(
                command,
                format!("ready at {}", SocketAddr::new(addr, port)),
                describe(&st),
            ))
        }
    }

    async fn del_server(&self, s: &ServerName) -> Result<(), HaproxyError> {
        if self.server(s).await?.is_none() {
            return Ok(()); // already gone: deleting twice is harmless
        }
        self.set_state(s, AdminState::Maint).await?;
        let command = cmd::del_server(&self.aliases.to_haproxy(s));
        self.expect(command.clone(), &["Server deleted."]).await?;
        match self.server(s).await? {
            None => Ok(()),
            Some(st) => Err(self.not_applied(command, "no such server", describe(&st))),
        }
    }

    async fn dump_state(&self) -> Result<String, HaproxyError> {
        let text = self.send(&cmd::show_servers_state(None)).await?;
        // Check it parses: a state file HAProxy cannot read would be worse than none.
        parse_servers_state(&text).map_err(|source| HaproxyError::Parse {
            endpoint: self.endpoint.clone(),
            source,
        })?;
        Ok(text)
    }
}

/// Takes a server out of rotation and cuts its clients off: maint, then shutdown sessions.
pub async fn fence<P: ProxyApi>(proxy: &P, s: &ServerName) -> Result<(), HaproxyError> {
    proxy.set_state(s, AdminState::Maint).await?;
    proxy.shutdown_sessions(s).await
}
