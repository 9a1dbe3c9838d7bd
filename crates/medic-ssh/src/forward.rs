//! Sockets forwarded through a machine's SSH session: a local unix socket whose connections
//! reach an address as the machine itself sees it (its loopback, say). This is how medic
//! reaches a HAProxy admin API that listens on the machine's loopback only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use openssh::ForwardType;
use tokio::time::timeout;

use crate::{Host, Ssh, SshError};

/// Numbers the local sockets: a new session never reuses the path of an old one's.
static NEXT: AtomicU64 = AtomicU64::new(1);

impl Ssh {
    /// A local unix socket whose connections reach `remote` from `host` (a `direct-tcpip`
    /// channel of the session per connection). Made once per session and kept; a session that
    /// died is opened again, with its forward, on the next call.
    pub async fn forward(&self, host: &Host, remote: SocketAddr) -> Result<PathBuf, SshError> {
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
        let request = c
            .session
            .request_port_forward(ForwardType::Local, path.clone(), remote);
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
