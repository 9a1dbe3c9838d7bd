//! A deployment medic adopted (`managed: false`): its haproxy.cfg is the operator's, and may
//! hold what medic's own never does — a server named otherwise than its machine, a backup line
//! to the same redis, a fence undone by a reload. So before anything is promoted, every proxy
//! that answers is read back: the backend must have the promoted machine's server, and no
//! other server of it may be ready. Otherwise the promotion is blocked (never two writable
//! masters behind one proxy, and never a promoted master no proxy can be routed to).
//!
//! A proxy that does not answer is left to [`Executor::ensure_fenced`]: its fence was skipped
//! and is tried again there, or the promotion is blocked already.

use medic_cloud::{Cloud, Dns};
use medic_haproxy::{HaproxyError, ProxyApi as _};
use medic_plan::Addr;

use crate::{ExecError, Executor, RUNTIME_API_TIMEOUT, proxy_api};

impl<C: Cloud, D: Dns> Executor<'_, C, D> {
    /// In an adopted deployment, before promoting `promoted` in `backend`: each answering
    /// proxy's `backend` has `promoted`'s server and no other server ready.
    pub(crate) async fn ensure_backend_clear(
        &mut self,
        index: usize,
        kind: &'static str,
        backend: &str,
        promoted: &str,
    ) -> Result<(), ExecError> {
        if self.topology.managed() {
            return Ok(());
        }
        let port = self.topology.proxies.value.runtime_api.value.tcp_port();
        let machines: Vec<String> = self.topology.proxy_machines().map(str::to_owned).collect();
        let mut wrong = Vec::new();
        for machine in machines {
            if self.unfenced.unreachable.contains(&machine) {
                continue;
            }
            let ip = self.resolve(index, kind, &Addr::Of(machine.clone()))?;
            let Ok(mut api) = proxy_api(self.ssh, self.topology, &machine, ip, port).await else {
                continue;
            };
            api.timeout = RUNTIME_API_TIMEOUT;
            let servers = match api.servers(Some(backend)).await {
                Ok(s) => s,
                // Not answering now: its fences were read back when made.
                Err(
                    HaproxyError::Connect { .. }
                    | HaproxyError::Timeout { .. }
                    | HaproxyError::Io { .. },
                ) => continue,
                // It answers, but not with the backend ("Can't find backend." does not parse
                // as servers): never taken for a clear one.
                Err(e) => {
                    wrong.push(format!("{machine} has no readable backend {backend} ({e})"));
                    continue;
                }
            };
            if !servers.iter().any(|s| s.server == promoted) {
                wrong.push(format!("{machine} has no server {backend}/{promoted}"));
            }
            for s in servers
                .iter()
                .filter(|s| s.server != promoted && s.is_ready())
            {
                wrong.push(format!("{backend}/{} is ready on {machine}", s.server));
            }
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(ExecError::NotClear {
                index,
                kind,
                what: wrong.join(", "),
            })
        }
    }
}
