//! Sockets forwarded through a machine's SSH session: a local unix socket whose connections
//! reach an address as the machine itself sees it (its loopback, say), or a unix socket on
//! the machine. This is how medic reaches a HAProxy admin API that listens on the machine's
//! loopback only, or only on its admin socket.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use openssh::ForwardType;
use tokio::time::timeout;

use crate::{Host, Ssh, SshError};

/// Where a forwarded connection goes, as the machine sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ForwardTo {
    /// A TCP address (`direct-tcpip`).
    Tcp(SocketAddr),
    /// A unix socket's path on the machine (`direct-streamlocal`; sshd's
    /// `AllowStreamLocalForwarding`, on by default, and the login's permission on it).
    Unix(PathBuf),
}

impl fmt::Display for ForwardTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardTo::Tcp(a) => write!(f, "{a}"),
            ForwardTo::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Numbers the local sockets: a new session never reuses the path of an old one's.
static NEXT: AtomicU64 = AtomicU64::new(1);

impl Ssh {
    /// A local unix socket whose connections reach `remote` from `host` (a channel of the
    /// session per connection). Made once per session and kept; a session that died is opened
    /// again, with its forward, on the next call.
    pub async fn forward(&self, host: &Host, remote: ForwardTo) -> Result<PathBuf, SshError> {
        let c = match self.conn(host).await {
            Ok(c) if c.session.check().await.is_ok() => c,
            Ok(_) => {
                // The master is gone (the machine rebooted, the connection broke): a fresh
                // session, and its forwards made anew.
                self.drop_conn(host).await;
                self.conn(host).await?
            }
            Err(e) => return Err(e),
        };
        let mut forwards = c.forwards.lock().await;
        if let Some(path) = forwards.get(&remote) {
            return Ok(path.clone());
        }
        let path = self
            .control_dir
            .path()
            .join(format!("fwd-{}.sock", NEXT.fetch_add(1, Ordering::Relaxed)));
        let to: openssh::Socket<'static> = match &remote {
            ForwardTo::Tcp(a) => (*a).into(),
            ForwardTo::Unix(p) => p.clone().into(),
        };
        let request = c
            .session
            .request_port_forward(ForwardType::Local, path.clone(), to);
        timeout(self.connect_timeout, request)
            .await
            .map_err(|_| SshError::Timeout {
                name: host.name.clone(),
                host: host.socket(),
                after: self.connect_timeout,
            })?
            .map_err(|source| SshError::Session {
                name: host.name.clone(),
                host: host.socket(),
                what: "forwarding a socket",
                source,
            })?;
        tracing::debug!(machine = %host.name, %remote, local = %path.display(), "Socket forwarded over SSH.");
        forwards.insert(remote, path.clone());
        Ok(path)
    }
}
