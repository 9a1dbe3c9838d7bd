//! SSH to the machines, and the playbook runner.
//!
//! [`Remote`] is the seam: run a command with a timeout, upload a file atomically. [`Ssh`] is
//! the real one, on the `openssh` crate with native multiplexing: one master connection per
//! host, reused by every command (≈3 ms each here) and re-opened when it drops.
//!
//! # Host keys
//! Host keys are always checked against a known_hosts file that medic owns. A freshly launched
//! machine's key is learned from a source other than the connection itself (the cloud's console
//! output, the lab's own record) through [`Ssh::learn_host_key`]; only a host whose topology
//! says `host_keys: accept-new` is trusted on first contact.
//!
//! # Privileges
//! Playbooks write under /etc and /var. When the login user is not root (EC2's `admin`), each
//! command runs under `sudo -n`; a user without passwordless sudo fails with sudo's own message.
//!
//! # Secrets
//! Command text and file contents are never logged: only the host, the playbook and the step.

mod runner;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openssh::{KnownHosts, Session, SessionBuilder};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;
use tokio::time::timeout;

mod forward;
pub use forward::ForwardTo;
pub use runner::{PlaybookError, StepOutcome, StepResult, run_playbook};

/// How a host's key is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub enum HostKeys {
    /// Only keys in medic's known_hosts file.
    #[default]
    Strict,
    /// Trust the key a new host presents on first contact (then it is recorded and checked).
    AcceptNew,
}

/// A machine to reach.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Host {
    /// The machine's name in the topology (for messages).
    pub name: String,
    pub addr: IpAddr,
    pub port: u16,
    pub user: String,
    pub key: Option<PathBuf>,
    pub host_keys: HostKeys,
}

impl Host {
    pub fn socket(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }

    /// The host's name in known_hosts: `addr` on port 22, `[addr]:port` otherwise.
    pub fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.addr.to_string()
        } else {
            format!("[{}]:{}", self.addr, self.port)
        }
    }
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandOutput {
    /// The exit status; `None` if it was killed by a signal.
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// The last lines of stderr, for messages.
    pub fn stderr_tail(&self) -> String {
        let lines: Vec<&str> = self.stderr.trim_end().lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("ssh {user}@{host} ({name}): cannot connect: {reason}")]
    Connect {
        name: String,
        user: String,
        host: SocketAddr,
        reason: String,
    },
    #[error("ssh {name} ({host}): command did not finish within {after:?}")]
    Timeout {
        name: String,
        host: SocketAddr,
        after: Duration,
    },
    #[error("ssh {name} ({host}): {what}")]
    Session {
        name: String,
        host: SocketAddr,
        what: &'static str,
        #[source]
        source: openssh::Error,
    },
    #[error("ssh {name} ({host}): upload of {path} failed (exit {status:?}): {stderr}")]
    Upload {
        name: String,
        host: SocketAddr,
        path: String,
        status: Option<i32>,
        stderr: String,
    },
    #[error("known_hosts {path}: {source}")]
    KnownHosts {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Running commands on machines.
pub trait Remote: Send + Sync {
    /// Runs a shell command (as root: under `sudo -n` if the login user is not root).
    fn run(
        &self,
        host: &Host,
        command: &str,
        within: Duration,
    ) -> impl Future<Output = Result<CommandOutput, SshError>> + Send;
    /// Writes `content` to `path` atomically (a temporary file renamed over it) with `mode`.
    fn upload(
        &self,
        host: &Host,
        path: &str,
        content: &[u8],
        mode: u32,
        within: Duration,
    ) -> impl Future<Output = Result<(), SshError>> + Send;
}

/// One multiplexed session per host, reused; see the module docs.
#[derive(Debug)]
pub struct Ssh {
    known_hosts: PathBuf,
    control_dir: tempfile::TempDir,
    pub connect_timeout: Duration,
    sessions: Mutex<HashMap<Host, Arc<Mutex<Option<Conn>>>>>,
}

#[derive(Debug, Clone)]
struct Conn {
    session: Arc<Session>,
    /// `sudo -n ` when the login user is not root, else empty.
    prefix: &'static str,
    /// Sockets forwarded through this session (see [`Ssh::forward`]): remote address → the
    /// local socket. They go with the session.
    forwards: Arc<Mutex<HashMap<ForwardTo, PathBuf>>>,
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn connect_reason(e: &openssh::Error) -> String {
    // ssh's own words (e.g. "Host key verification failed.") are in the source chain.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text.trim().replace('\n', " ")
}

impl Ssh {
    /// `known_hosts` is medic's own file (created if missing).
    pub fn new(known_hosts: &Path) -> Result<Ssh, SshError> {
        let kh_err = |source| SshError::KnownHosts {
            path: known_hosts.to_path_buf(),
            source,
        };
        if let Some(dir) = known_hosts.parent() {
            std::fs::create_dir_all(dir).map_err(kh_err)?;
        }
        if !known_hosts.exists() {
            std::fs::write(known_hosts, "").map_err(kh_err)?;
        }
        // Control sockets need a short path (sun_path is 108 bytes).
        let control_dir = tempfile::Builder::new()
            .prefix("medic-ssh")
            .tempdir_in("/tmp")
            .map_err(kh_err)?;
        Ok(Ssh {
            known_hosts: known_hosts.to_path_buf(),
            control_dir,
            connect_timeout: Duration::from_secs(5),
            sessions: Mutex::new(HashMap::new()),
        })
    }

    pub fn known_hosts_path(&self) -> &Path {
        &self.known_hosts
    }

    /// Records `key` (`ssh-ed25519 AAAA...`) as the host key of `host`, replacing whatever was
    /// recorded for that address and port (a replacement machine reuses no key).
    pub fn learn_host_key(&self, host: &Host, key: &str) -> Result<(), SshError> {
        let kh_err = |source| SshError::KnownHosts {
            path: self.known_hosts.clone(),
            source,
        };
        let name = host.known_hosts_name();
        let old = std::fs::read_to_string(&self.known_hosts).map_err(kh_err)?;
        let mut lines: Vec<String> = old
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .next()
                    .is_none_or(|n| !n.split(',').any(|x| x == name))
            })
            .map(str::to_owned)
            .collect();
        let mut parts = key.split_whitespace();
        let (Some(kind), Some(b64)) = (parts.next(), parts.next()) else {
            return Err(kh_err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a public key: {key:?}"),
            )));
        };
        lines.push(format!("{name} {kind} {b64}"));
        let tmp = self.known_hosts.with_extension("tmp");
        std::fs::write(&tmp, lines.join("\n") + "\n").map_err(kh_err)?;
        std::fs::rename(&tmp, &self.known_hosts).map_err(kh_err)
    }

    /// Whether medic's known_hosts has a key for `host` (its address and port).
    pub fn knows(&self, host: &Host) -> bool {
        let name = host.known_hosts_name();
        std::fs::read_to_string(&self.known_hosts).is_ok_and(|text| {
            text.lines().any(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|n| n.split(',').any(|x| x == name))
            })
        })
    }

    /// Drops the session to `host` (after it was replaced, say).
    pub async fn forget(&self, host: &Host) {
        self.sessions.lock().await.remove(host);
    }

    async fn slot(&self, host: &Host) -> Arc<Mutex<Option<Conn>>> {
        self.sessions
            .lock()
            .await
            .entry(host.clone())
            .or_default()
            .clone()
    }

    async fn conn(&self, host: &Host) -> Result<Conn, SshError> {
        let slot = self.slot(host).await;
        let mut guard = slot.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let mut b = SessionBuilder::default();
        b.user(host.user.clone())
            .port(host.port)
            .known_hosts_check(match host.host_keys {
                HostKeys::Strict => KnownHosts::Strict,
                HostKeys::AcceptNew => KnownHosts::Add,
            })
            .user_known_hosts_file(&self.known_hosts)
            .control_directory(self.control_dir.path())
            .connect_timeout(self.connect_timeout)
            .server_alive_interval(Duration::from_secs(5))
            .config_file("/dev/null");
        if let Some(k) = &host.key {
            b.keyfile(k);
        }
        let connect = b.connect_mux(host.addr.to_string());
        let session = match timeout(self.connect_timeout + Duration::from_secs(1), connect).await {
            Err(_) => {
                return Err(SshError::Connect {
                    name: host.name.clone(),
                    user: host.user.clone(),
                    host: host.socket(),
                    reason: format!("no answer within {:?}", self.connect_timeout),
                });
            }
            Ok(Err(e)) => {
                return Err(SshError::Connect {
                    name: host.name.clone(),
                    user: host.user.clone(),
                    host: host.socket(),
                    reason: connect_reason(&e),
                });
            }
            Ok(Ok(s)) => Arc::new(s),
        };
        let id = session
            .raw_command("id -u")
            .output()
            .await
            .map_err(|source| SshError::Session {
                name: host.name.clone(),
                host: host.socket(),
                what: "id -u",
                source,
            })?;
        let prefix = if String::from_utf8_lossy(&id.stdout).trim() == "0" {
            ""
        } else {
            "sudo -n "
        };
        tracing::debug!(machine = %host.name, host = %host.socket(), "SSH session opened.");
        let conn = Conn {
            session,
            prefix,
            forwards: Arc::default(),
        };
        *guard = Some(conn.clone());
        Ok(conn)
    }

    async fn drop_conn(&self, host: &Host) {
        let slot = self.slot(host).await;
        *slot.lock().await = None;
    }

    /// Runs a shell command as the login user itself, never under `sudo` (a witness's probe
    /// needs no privilege, and sudo's own failures must not look like the probe's answer).
    pub async fn run_unprivileged(
        &self,
        host: &Host,
        command: &str,
        within: Duration,
    ) -> Result<CommandOutput, SshError> {
        match self.run_once_as(host, command, within, false).await {
            Err(e) if session_lost(&e) => {
                self.drop_conn(host).await;
                self.run_once_as(host, command, within, false).await
            }
            other => other,
        }
    }

    async fn run_once(
        &self,
        host: &Host,
        command: &str,
        within: Duration,
    ) -> Result<CommandOutput, SshError> {
        self.run_once_as(host, command, within, true).await
    }

    async fn run_once_as(
        &self,
        host: &Host,
        command: &str,
        within: Duration,
        privileged: bool,
    ) -> Result<CommandOutput, SshError> {
        let c = self.conn(host).await?;
        let prefix = if privileged { c.prefix } else { "" };
        let wrapped = format!("{prefix}sh -c {}", shell_quote(command));
        let out = timeout(within, c.session.raw_command(&wrapped).output())
            .await
            .map_err(|_| SshError::Timeout {
                name: host.name.clone(),
                host: host.socket(),
                after: within,
            })?
            .map_err(|source| SshError::Session {
                name: host.name.clone(),
                host: host.socket(),
                what: "command failed to run",
                source,
            })?;
        Ok(CommandOutput {
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    async fn upload_once(
        &self,
        host: &Host,
        path: &str,
        content: &[u8],
        mode: u32,
        within: Duration,
    ) -> Result<(), SshError> {
        let c = self.conn(host).await?;
        let tmp = format!("{path}.medic-tmp");
        let script = format!(
            "set -e; mkdir -p \"$(dirname {p})\"; umask 077; cat > {t}; chmod {mode:o} {t}; mv -f {t} {p}",
            p = shell_quote(path),
            t = shell_quote(&tmp)
        );
        let wrapped = format!("{}sh -c {}", c.prefix, shell_quote(&script));
        let session_err = |what, source| SshError::Session {
            name: host.name.clone(),
            host: host.socket(),
            what,
            source,
        };
        let work = async {
            let mut child = c
                .session
                .raw_command(&wrapped)
                .stdin(openssh::Stdio::piped())
                .stdout(openssh::Stdio::null())
                .stderr(openssh::Stdio::piped())
                .spawn()
                .await
                .map_err(|e| session_err("upload failed to start", e))?;
            if let Some(mut stdin) = child.stdin().take() {
                stdin
                    .write_all(content)
                    .await
                    .map_err(|e| session_err("upload: writing", openssh::Error::ChildIo(e)))?;
                stdin
                    .shutdown()
                    .await
                    .map_err(|e| session_err("upload: closing", openssh::Error::ChildIo(e)))?;
            }
            child
                .wait_with_output()
                .await
                .map_err(|e| session_err("upload failed", e))
        };
        let out = timeout(within, work)
            .await
            .map_err(|_| SshError::Timeout {
                name: host.name.clone(),
                host: host.socket(),
                after: within,
            })??;
        if out.status.success() {
            Ok(())
        } else {
            Err(SshError::Upload {
                name: host.name.clone(),
                host: host.socket(),
                path: path.to_owned(),
                status: out.status.code(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }
}

impl Drop for Ssh {
    /// The masters run with ControlPersist and would outlive us: tell each one to exit.
    fn drop(&mut self) {
        for slot in self.sessions.get_mut().values() {
            let Ok(conn) = slot.try_lock() else { continue };
            let Some(conn) = conn.as_ref() else { continue };
            let _ = std::process::Command::new("ssh")
                .arg("-S")
                .arg(conn.session.control_socket())
                .args(["-O", "exit", "medic-master"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Whether an error means the session itself is gone, so a fresh one may succeed.
fn session_lost(e: &SshError) -> bool {
    matches!(
        e,
        SshError::Session {
            source: openssh::Error::Disconnected
                | openssh::Error::SshMux(_)
                | openssh::Error::Master(_)
                | openssh::Error::RemoteProcessTerminated,
            ..
        }
    )
}

impl Remote for Ssh {
    async fn run(
        &self,
        host: &Host,
        command: &str,
        within: Duration,
    ) -> Result<CommandOutput, SshError> {
        match self.run_once(host, command, within).await {
            Err(e) if session_lost(&e) => {
                tracing::info!(machine = %host.name, error = %e, "SSH session lost; reconnecting.");
                self.drop_conn(host).await;
                self.run_once(host, command, within).await
            }
            other => other,
        }
    }

    async fn upload(
        &self,
        host: &Host,
        path: &str,
        content: &[u8],
        mode: u32,
        within: Duration,
    ) -> Result<(), SshError> {
        match self.upload_once(host, path, content, mode, within).await {
            Err(e) if session_lost(&e) => {
                self.drop_conn(host).await;
                self.upload_once(host, path, content, mode, within).await
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn known_hosts_names() {
        let mut h = Host {
            name: "m".into(),
            addr: "10.0.0.1".parse().unwrap(),
            port: 22,
            user: "u".into(),
            key: None,
            host_keys: HostKeys::Strict,
        };
        assert_eq!(h.known_hosts_name(), "10.0.0.1");
        h.port = 2222;
        assert_eq!(h.known_hosts_name(), "[10.0.0.1]:2222");
    }

    #[test]
    fn learning_a_key_replaces_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        std::fs::write(
            &kh,
            "10.0.0.1 ssh-ed25519 OLD\n10.0.0.2 ssh-ed25519 OTHER\n",
        )
        .unwrap();
        let ssh = Ssh::new(&kh).unwrap();
        let h = Host {
            name: "m".into(),
            addr: "10.0.0.1".parse().unwrap(),
            port: 22,
            user: "u".into(),
            key: None,
            host_keys: HostKeys::Strict,
        };
        ssh.learn_host_key(&h, "ssh-ed25519 NEW host@lab").unwrap();
        assert_eq!(
            std::fs::read_to_string(&kh).unwrap(),
            "10.0.0.2 ssh-ed25519 OTHER\n10.0.0.1 ssh-ed25519 NEW\n"
        );
        assert!(ssh.learn_host_key(&h, "garbage").is_err());
    }
}
