//! Launch steps: a machine's replacement (a ready spare taken first, with `from_spares`) and
//! a spare's preparation (`policy.spares`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use medic_cloud::spares::{TAG_SPARE_HOST_KEY, TAG_SPARE_READY, claim, is_ready, is_spare};
use medic_cloud::{Cloud, Dns, Instance, Launched, wait_port, wait_running};
use medic_plan::LaunchSpec;
use medic_ssh::{Host, HostKeys, StepOutcome, run_playbook};

use crate::{BOOT, ExecError, Executor, HOST_KEYS_POLL, cloud_err};

impl<C: Cloud, D: Dns> Executor<'_, C, D> {
    /// Takes a spare (with `from_spares`) or launches; waits until the instance runs and
    /// learns its host keys. Returns what it did, the address and the instance id.
    pub(crate) async fn launch(
        &mut self,
        index: usize,
        kind: &'static str,
        spec: &LaunchSpec,
    ) -> Result<(String, IpAddr, String), ExecError> {
        let mut launched = None;
        if spec.from_spares {
            // A spare that could not be taken and was given back: `None`, the step launches.
            // Any other error fails the step: run again, it finds what it began by its tags.
            launched = claim(self.cloud, spec)
                .await
                .map_err(cloud_err(index, kind))?;
        }
        let launched = match launched {
            Some(l) => l,
            None => self
                .cloud
                .launch(spec)
                .await
                .map_err(cloud_err(index, kind))?,
        };
        let (running, addr) = self.running(index, kind, &spec.machine, &launched).await?;
        let host = self.host(&spec.machine, addr);
        // A spare's key as learned when it was prepared, used only if the console shows none
        // now (a stopped one started again may not print its keys again): whatever the
        // console shows comes first.
        let pinned = match running.tag(TAG_SPARE_HOST_KEY).filter(|_| launched.spare) {
            Some(k) => {
                let console = self
                    .cloud
                    .host_keys(&running.id)
                    .await
                    .map_err(cloud_err(index, kind))?;
                console.is_empty().then(|| k.to_owned())
            }
            None => None,
        };
        self.learn_keys(index, kind, &host, &spec.machine, &running, pinned)
            .await?;
        let what = match (launched.spare, launched.reused) {
            (_, true) => "found",
            (true, false) => "took spare",
            (false, false) => "launched",
        };
        Ok((format!("{what} {} at {addr}", running.id), addr, running.id))
    }

    /// Launches a spare (or finds the one this step launched), waits for its SSH, runs the
    /// spare steps of its role's playbook, stops it if asked, and tags it ready.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn prepare_spare(
        &mut self,
        index: usize,
        kind: &'static str,
        spec: &LaunchSpec,
        like: &str,
        playbook: &str,
        vars: &serde_json::Value,
        stop: bool,
        timeout_ms: u64,
    ) -> Result<(String, IpAddr, String), ExecError> {
        let launched = self
            .cloud
            .launch(spec)
            .await
            .map_err(cloud_err(index, kind))?;
        let id = launched.instance.id.clone();
        // Run again after a replacement took it (EC2 answers a launch's token with the
        // instance it launched, whoever's it is now): it is a machine's, and left alone.
        if !is_spare(&launched.instance) {
            let addr = address_of(index, kind, &spec.machine, &launched.instance)?;
            return Ok((
                format!(
                    "spare {id} was prepared and taken by a replacement since ({}); left as it is",
                    launched.instance.machine().unwrap_or("no machine")
                ),
                addr,
                id,
            ));
        }
        let ready = is_ready(&launched.instance);
        if ready {
            let addr = address_of(index, kind, &spec.machine, &launched.instance)?;
            return Ok((format!("spare {id} at {addr} is ready already"), addr, id));
        }
        // A spare stopped before a crash, not yet tagged ready: started again to finish.
        if matches!(
            launched.instance.state,
            medic_cloud::InstanceState::Stopped | medic_cloud::InstanceState::Stopping
        ) {
            self.cloud
                .start(&id)
                .await
                .map_err(cloud_err(index, kind))?;
        }
        let (running, addr) = self.running(index, kind, &spec.machine, &launched).await?;
        let mut host = crate::ssh_host(self.topology, like, addr);
        host.name = spec.machine.clone();
        let keys = self
            .learn_keys(index, kind, &host, &spec.machine, &running, None)
            .await?;
        wait_port(
            SocketAddr::new(addr, host.port),
            Duration::from_millis(timeout_ms),
        )
        .await
        .map_err(cloud_err(index, kind))?;
        let pb = self.playbook_named(index, kind, playbook)?;
        let vars = pb.spare_vars(&self.resolve_vars(index, vars)?);
        let results = run_playbook(self.ssh, &host, &pb.spare_only(), &vars)
            .await
            .map_err(|source| ExecError::Playbook {
                index,
                kind,
                source: Box::new(source),
            })?;
        let ran = results
            .iter()
            .filter(|r| matches!(r.outcome, StepOutcome::Changed | StepOutcome::Ran))
            .count();
        if stop {
            self.cloud.stop(&id).await.map_err(cloud_err(index, kind))?;
        }
        let mut ready =
            std::collections::BTreeMap::from([(TAG_SPARE_READY.to_owned(), "yes".to_owned())]);
        // (EC2 takes tag values up to 256 characters: an ed25519 key, not an RSA one.)
        if let Some(k) = keys
            .iter()
            .filter(|k| k.len() <= 255)
            .min_by_key(|k| !k.starts_with("ssh-ed25519"))
        {
            ready.insert(TAG_SPARE_HOST_KEY.to_owned(), k.clone());
        }
        self.cloud
            .retag(&id, &ready, &[])
            .await
            .map_err(cloud_err(index, kind))?;
        Ok((
            format!(
                "spare {id} at {addr} ready: {} of playbook `{playbook}`'s spare steps changed something{}",
                ran,
                if stop { "; stopped" } else { "" }
            ),
            addr,
            id,
        ))
    }

    /// Waits until the instance runs; records its address under `machine`.
    async fn running(
        &mut self,
        index: usize,
        kind: &'static str,
        machine: &str,
        launched: &Launched,
    ) -> Result<(Instance, IpAddr), ExecError> {
        let running = wait_running(
            self.cloud,
            &launched.instance.id,
            BOOT,
            Duration::from_millis(200),
        )
        .await
        .map_err(cloud_err(index, kind))?;
        let addr = address_of(index, kind, machine, &running)?;
        self.addresses.insert(machine.to_owned(), addr);
        Ok((running, addr))
    }

    /// Forgets what SSH knew of `host` and learns the instance's host keys from the cloud —
    /// or `pinned`, a key medic learned from it before. Returns them.
    async fn learn_keys(
        &self,
        index: usize,
        kind: &'static str,
        host: &Host,
        machine: &str,
        running: &Instance,
        pinned: Option<String>,
    ) -> Result<Vec<String>, ExecError> {
        self.ssh.forget(host).await;
        if let Some(key) = pinned {
            self.ssh
                .learn_host_key(host, &key)
                .map_err(|source| ExecError::Ssh {
                    index,
                    kind,
                    source: Box::new(source),
                })?;
            return Ok(vec![key]);
        }
        // EC2 shows the keys in the console output a while after the instance runs:
        // a strict SSH waits for them (never accepts whatever key answers first).
        let keys = match host.host_keys {
            HostKeys::Strict => {
                medic_cloud::adopt::host_keys_when_ready(
                    self.cloud,
                    &running.id,
                    BOOT,
                    HOST_KEYS_POLL,
                )
                .await
            }
            HostKeys::AcceptNew => self.cloud.host_keys(&running.id).await,
        }
        .map_err(cloud_err(index, kind))?;
        if keys.is_empty() && host.host_keys == HostKeys::Strict {
            return Err(ExecError::NoHostKey {
                index,
                machine: machine.to_owned(),
                instance: running.id.clone(),
                after: BOOT,
            });
        }
        for key in &keys {
            self.ssh
                .learn_host_key(host, key)
                .map_err(|source| ExecError::Ssh {
                    index,
                    kind,
                    source: Box::new(source),
                })?;
        }
        Ok(keys)
    }
}

/// The instance's address, which a step needs to go on.
fn address_of(
    index: usize,
    kind: &'static str,
    machine: &str,
    i: &Instance,
) -> Result<IpAddr, ExecError> {
    i.address.ok_or_else(|| ExecError::UnknownAddress {
        index,
        kind,
        machine: machine.to_owned(),
    })
}
