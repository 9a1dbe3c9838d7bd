//! Fences that did not happen.
//!
//! A fence whose proxy's runtime API does not answer is *not* done: that proxy may still send
//! clients to the old master. The executor remembers every such fence ([`Unfenced`]), and a
//! promotion of the shard is **blocked** until each of them is made good: the fence is tried
//! again at the promotion, or the old master's machine was fenced at its source (its instance
//! terminated and gone, [`Action::FenceAtSource`](medic_plan::Action::FenceAtSource)). A
//! blocked promotion fails its step, with the proxies named: the recovery stops there and the
//! controller alerts — never two writable masters behind one proxy.

use std::collections::BTreeSet;
use std::time::Duration;

use medic_cloud::{Cloud, Dns, wait_gone};
use medic_plan::{ProxyApi, ServerRef};

use crate::{ExecError, Executor, ProxyChange, cloud_err};

/// How long a terminated instance may take to be gone before the fence at its source fails
/// (EC2 takes seconds to a minute to go from `shutting-down` to `terminated`).
const GONE_WITHIN: Duration = Duration::from_secs(180);

/// Fences not made, and machines fenced at their source instead.
#[derive(Debug, Clone, Default)]
pub struct Unfenced {
    /// (proxy, server) whose fence was skipped and not made good since.
    pub fences: Vec<(ProxyApi, ServerRef)>,
    /// Machines whose instance a fence at the source terminated.
    pub at_source: BTreeSet<String>,
    /// Proxies a step of this recovery found not answering: their changes are skipped at once
    /// rather than each waiting out the timeout (the reconcile repairs them when they answer;
    /// a promotion still retries their fences for real).
    pub unreachable: BTreeSet<String>,
    /// Proxies the controller's checks see down when the recovery starts: the first change is
    /// still tried, within [`SUSPECT_WITHIN`](crate::SUSPECT_WITHIN) rather than the full
    /// timeout (a check that failed under load must not cost a fence), and only a failure
    /// makes them unreachable.
    pub suspect: BTreeSet<String>,
}

impl Unfenced {
    /// The skipped fences of `machine`'s servers that still matter (not fenced at the source).
    pub fn of_machine(&self, machine: &str) -> impl Iterator<Item = &(ProxyApi, ServerRef)> {
        let gone = self.at_source.contains(machine);
        self.fences
            .iter()
            .filter(move |(_, s)| !gone && s.server == machine)
    }

    /// The skipped fences in `backend` of any server but `keep` that still matter.
    pub fn in_backend(&self, backend: &str, keep: &str) -> Vec<(ProxyApi, ServerRef)> {
        self.fences
            .iter()
            .filter(|(_, s)| {
                s.backend == backend && s.server != keep && !self.at_source.contains(&s.server)
            })
            .cloned()
            .collect()
    }
}

impl<C: Cloud, D: Dns> Executor<'_, C, D> {
    /// Terminates `machine`'s instance and waits until it is gone — only if a fence of one of
    /// its servers was skipped. Returns the summary and whether it terminated.
    pub(crate) async fn fence_at_source(
        &mut self,
        index: usize,
        kind: &'static str,
        machine: &str,
        instance_id: Option<&str>,
    ) -> Result<(String, bool), ExecError> {
        let missed: Vec<String> = self
            .unfenced
            .of_machine(machine)
            .map(|(p, s)| format!("{s} on {}", p.machine))
            .collect();
        if missed.is_empty() {
            return Ok((
                format!("{machine}: fenced on every proxy; nothing to do at the source"),
                false,
            ));
        }
        let said = self.terminate(index, kind, machine, instance_id).await?;
        let ids = self
            .instance_ids(index, kind, machine, instance_id, "terminate")
            .await?;
        for id in &ids {
            wait_gone(self.cloud, id, GONE_WITHIN, Duration::from_millis(200))
                .await
                .map_err(cloud_err(index, kind))?;
        }
        self.unfenced.at_source.insert(machine.to_owned());
        Ok((
            format!(
                "{said}; gone before any promotion, since {} could not be fenced",
                missed.join(", ")
            ),
            true,
        ))
    }

    /// Before a service's primary changes to `promoted` (its database promoted, its
    /// `on_promote` hook, its record): [`Self::ensure_fenced`] in its backend on the proxies,
    /// for a primary/standby service routed through them — a proxy whose fence was skipped
    /// may still send clients to the old primary. (An active_active service has no primary.)
    pub(crate) async fn ensure_service_fenced(
        &mut self,
        index: usize,
        kind: &'static str,
        service: &str,
        promoted: &str,
    ) -> Result<(), ExecError> {
        match self.topology.service(service) {
            Some(s) if s.proxy.is_some() && !s.active_active() => {
                let backend = medic_plan::vars::service_backend(self.topology, service);
                self.ensure_fenced(index, kind, &backend, promoted).await?;
                self.ensure_backend_clear(index, kind, &backend, promoted)
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Before promoting in `backend`: every skipped fence of another server of it is tried
    /// again; any that still cannot be made (and whose machine was not fenced at its source)
    /// blocks the promotion.
    pub(crate) async fn ensure_fenced(
        &mut self,
        index: usize,
        kind: &'static str,
        backend: &str,
        promoted: &str,
    ) -> Result<(), ExecError> {
        let pending = self.unfenced.in_backend(backend, promoted);
        for (proxy, _) in &pending {
            self.unfenced.unreachable.remove(&proxy.machine);
        }
        let mut still = Vec::new();
        for (proxy, server) in pending {
            let (_, skipped) = self
                .proxy_change(index, kind, &proxy, &server, ProxyChange::Fence(false))
                .await?;
            if skipped {
                still.push(format!("{server} on {}", proxy.machine));
            } else {
                self.unfenced
                    .fences
                    .retain(|(p, s)| !(p.machine == proxy.machine && *s == server));
            }
        }
        if still.is_empty() {
            Ok(())
        } else {
            Err(ExecError::Unfenced {
                index,
                kind,
                missed: still.join(", "),
            })
        }
    }
}
