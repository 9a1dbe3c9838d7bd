//! The runtime API commands medic sends, as text. `medic plan` prints these very strings.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// `backend/server`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServerName {
    pub backend: String,
    pub server: String,
}

impl ServerName {
    pub fn new(backend: impl Into<String>, server: impl Into<String>) -> Self {
        ServerName {
            backend: backend.into(),
            server: server.into(),
        }
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.backend, self.server)
    }
}

/// The administrative state `set server ... state` sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// Takes traffic.
    Ready,
    /// Keeps its sessions, takes no new ones.
    Drain,
    /// Takes nothing; health checks stop.
    Maint,
}

impl AdminState {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }
}

/// HAProxy's own health check of a server added at runtime. Passed explicitly: whether
/// `default-server` applies to runtime servers is not something to rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CheckParams {
    pub inter_ms: u64,
    pub fall: u32,
    pub rise: u32,
}

pub fn set_state(s: &ServerName, state: AdminState) -> String {
    format!("set server {s} state {}", state.as_str())
}

pub fn shutdown_sessions(s: &ServerName) -> String {
    format!("shutdown sessions server {s}")
}

/// `addr` may be a reference the executor resolves (`${address:M}`), hence `Display`.
pub fn set_addr(s: &ServerName, addr: &impl fmt::Display, port: u16) -> String {
    format!("set server {s} addr {addr} port {port}")
}

pub fn add_server(s: &ServerName, addr: IpAddr, port: u16, check: Option<&CheckParams>) -> String {
    let addr = std::net::SocketAddr::new(addr, port);
    match check {
        Some(c) => format!(
            "add server {s} {addr} check inter {}ms fall {} rise {}",
            c.inter_ms, c.fall, c.rise
        ),
        None => format!("add server {s} {addr}"),
    }
}

pub fn enable_health(s: &ServerName) -> String {
    format!("enable health {s}")
}

pub fn enable_server(s: &ServerName) -> String {
    format!("enable server {s}")
}

pub fn del_server(s: &ServerName) -> String {
    format!("del server {s}")
}

pub fn show_servers_state(backend: Option<&str>) -> String {
    match backend {
        Some(b) => format!("show servers state {b}"),
        None => "show servers state".to_owned(),
    }
}
