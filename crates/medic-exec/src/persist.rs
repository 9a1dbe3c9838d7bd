//! haproxy.cfg: a recovery's runtime changes on one proxy written into its configuration file
//! over SSH (one read, one write), so that a reload or a restart keeps them.
//!
//! This is a step of its own (`PersistProxyConfig`), planned once the traffic has moved: a
//! fence, a promotion and an activation wait for no file write. A runtime change whose write
//! is not done yet is made again when a recovery is resumed (`Plan::redo_on_resume`), and a
//! recovery that ends before its writes, or whose write was skipped, has the changes it made
//! written at its end (`Plan::unpersisted`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use medic_cloud::{Cloud, Dns};
use medic_haproxy::{ServerEdit, ServerName};
use medic_plan::{ProxyApi, ServerPersist};
use medic_ssh::Remote as _;

use crate::{ExecError, Executor, HAPROXY_CFG};

/// How long reading or writing the file may take.
const WITHIN: Duration = Duration::from_secs(10);
/// The same, on a proxy whose runtime API did not answer earlier in the recovery.
const QUIET_WITHIN: Duration = Duration::from_secs(2);

/// One haproxy.cfg read-edit-write at a time on each proxy machine, across every recovery
/// and the reconcile this process runs at once: two at once would each write back the file
/// as it read it, the later undoing the earlier's change.
fn file_lock(machine: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
        LazyLock::new(Mutex::default);
    let mut locks = LOCKS.lock().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(locks.entry(machine.to_owned()).or_default())
}

impl<C: Cloud, D: Dns> Executor<'_, C, D> {
    /// Writes `servers`' state and address into `proxy`'s haproxy.cfg. A write that cannot
    /// be made (SSH fails, a server line is missing) does not stop the recovery — the traffic
    /// has moved — and is reported as skipped (`true`): the runtime keeps the changes until
    /// HAProxy reloads, and the recovery's end tries the write again.
    pub(crate) async fn persist_proxy(
        &mut self,
        index: usize,
        kind: &'static str,
        proxy: &ProxyApi,
        servers: &[ServerPersist],
    ) -> Result<(String, bool), ExecError> {
        let ip = self.resolve(index, kind, &proxy.address)?;
        let mut edits = Vec::with_capacity(servers.len());
        for s in servers {
            let addr = match (&s.address, s.port) {
                (Some(a), Some(port)) => Some(SocketAddr::new(self.resolve(index, kind, a)?, port)),
                _ => None,
            };
            // (Said with the address resolved, as the file will have it.)
            let said = ServerPersist {
                address: addr.map(|a| medic_plan::Addr::Ip(a.ip())),
                ..s.clone()
            };
            edits.push((
                said.to_string(),
                s.server.clone(),
                ServerEdit {
                    addr,
                    enabled: s.enabled,
                },
            ));
        }
        // A proxy that did not answer earlier in this recovery is tried, only not for long.
        let within = if self.unfenced.unreachable.contains(&proxy.machine) {
            QUIET_WITHIN
        } else {
            WITHIN
        };
        let (written, missing) = match self.write_config(&proxy.machine, ip, &edits, within).await {
            Ok(w) => w,
            Err(why) => {
                return Ok((
                    format!(
                        "{}: haproxy.cfg NOT written ({why}): the runtime keeps the changes until HAProxy reloads",
                        proxy.machine
                    ),
                    true,
                ));
            }
        };
        let mut summary = if written.is_empty() {
            format!("{}: haproxy.cfg already had every change", proxy.machine)
        } else {
            format!("{}: haproxy.cfg has {}", proxy.machine, written.join(", "))
        };
        if !missing.is_empty() {
            summary += &format!("; NOT written: {}", missing.join("; "));
        }
        Ok((summary, !missing.is_empty()))
    }

    /// Reads the proxy's haproxy.cfg, makes each edit that applies and writes the file back if
    /// that changed it. Returns the edits written and those that could not be made (why).
    async fn write_config(
        &self,
        machine: &str,
        ip: IpAddr,
        edits: &[(String, ServerName, ServerEdit)],
        within: Duration,
    ) -> Result<(Vec<String>, Vec<String>), String> {
        let lock = file_lock(machine);
        let _one_at_a_time = lock.lock().await;
        let host = self.host(machine, ip);
        let out = self
            .ssh
            .run(&host, &format!("cat {HAPROXY_CFG}"), within)
            .await
            .map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(format!("cannot read {HAPROXY_CFG}: {}", out.stderr_tail()));
        }
        let mut edited = out.stdout.clone();
        let (mut written, mut missing) = (Vec::new(), Vec::new());
        for (what, server, edit) in edits {
            match medic_haproxy::edit_server(&edited, server, *edit) {
                Ok(e) if e == edited => {}
                Ok(e) => {
                    edited = e;
                    written.push(what.clone());
                }
                Err(e) => missing.push(format!("{what}: {e}")),
            }
        }
        if edited != out.stdout {
            self.ssh
                .upload(&host, HAPROXY_CFG, edited.as_bytes(), 0o644, within)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok((written, missing))
    }
}
