//! The lab as a [`Cloud`]: what the controller calls, the same calls as on EC2, over the lab's
//! records and machines.

use std::collections::BTreeMap;
use std::net::IpAddr;

use medic_cloud::{
    Cloud, CloudError, Instance, InstanceState, LaunchSpec, Launched, TAG_MACHINE, TAG_RECOVERY,
    TAG_STEP, TerminateOutcome,
};

use crate::{Lab, Record, err, run_quiet};

impl Lab {
    fn instance(&self, r: &Record) -> Instance {
        let state = match r.state.as_str() {
            "launching" => InstanceState::Pending,
            "running" => InstanceState::Running,
            "terminated" => InstanceState::Terminated,
            "stopped" => InstanceState::Stopped,
            other => InstanceState::Other(other.to_owned()),
        };
        Instance {
            id: r.id.clone(),
            state,
            address: Some(IpAddr::V4(r.address)),
            instance_type: None,
            tags: r.tags.clone(),
        }
    }
}

impl Cloud for Lab {
    async fn launch(&self, spec: &LaunchSpec) -> Result<Launched, CloudError> {
        let _g = self.lock.lock().await;
        let recovery = spec.tags.get(TAG_RECOVERY);
        let step = spec.tags.get(TAG_STEP);
        if let Some(r) = self.records().into_iter().find(|r| {
            r.state != "terminated"
                && r.tags.get(TAG_RECOVERY) == recovery
                && r.tags.get(TAG_STEP) == step
                && r.tags.get(TAG_MACHINE) == spec.tags.get(TAG_MACHINE)
        }) {
            return Ok(Launched {
                instance: self.instance(&r),
                reused: true,
                spare: false,
            });
        }
        let r = self.create(spec, None).await?;
        Ok(Launched {
            instance: self.instance(&r),
            reused: false,
            spare: false,
        })
    }

    async fn describe(&self, id: &str) -> Result<Option<Instance>, CloudError> {
        Ok(self.record(id).map(|r| self.instance(&r)))
    }

    async fn find(&self, tags: &BTreeMap<String, String>) -> Result<Vec<Instance>, CloudError> {
        Ok(self
            .records()
            .iter()
            .filter(|r| {
                r.state != "terminated" && tags.iter().all(|(k, v)| r.tags.get(k) == Some(v))
            })
            .map(|r| self.instance(r))
            .collect())
    }

    async fn terminate(&self, id: &str) -> Result<TerminateOutcome, CloudError> {
        let _g = self.lock.lock().await;
        let Some(mut r) = self.record(id).filter(|r| r.state != "terminated") else {
            return Ok(TerminateOutcome::AlreadyGone);
        };
        self.kill_all(&r.netns).await;
        run_quiet("ip", &["netns", "del", &r.netns]).await;
        run_quiet("ip", &["link", "del", &r.veth]).await;
        let d = self.dir(&r.id);
        for sub in ["etc-upper", "etc-work", "var-lib", "var-log", "run"] {
            let _ = std::fs::remove_dir_all(d.join(sub));
        }
        r.state = "terminated".into();
        self.write_record(&r)?;
        tracing::info!(instance = %id, "Lab machine terminated.");
        Ok(TerminateOutcome::Terminated)
    }

    async fn retag(
        &self,
        id: &str,
        set: &BTreeMap<String, String>,
        remove: &[&str],
    ) -> Result<(), CloudError> {
        let _g = self.lock.lock().await;
        let Some(mut r) = self.record(id).filter(|r| r.state != "terminated") else {
            return Err(err("retag", format!("{id} is not a live lab machine")));
        };
        for k in remove {
            r.tags.remove(*k);
        }
        r.tags
            .extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.write_record(&r)
    }

    /// Stops every process of the machine (its network stays): what a stopped instance is.
    async fn stop(&self, id: &str) -> Result<(), CloudError> {
        let _g = self.lock.lock().await;
        let Some(mut r) = self.record(id).filter(|r| r.state != "terminated") else {
            return Err(err("stop", format!("{id} is not a live lab machine")));
        };
        if r.state == "stopped" {
            return Ok(());
        }
        self.kill_all(&r.netns).await;
        r.state = "stopped".into();
        self.write_record(&r)?;
        tracing::info!(instance = %id, "Lab machine stopped.");
        Ok(())
    }

    async fn start(&self, id: &str) -> Result<(), CloudError> {
        let _g = self.lock.lock().await;
        let Some(mut r) = self.record(id).filter(|r| r.state != "terminated") else {
            return Err(err("start", format!("{id} is not a live lab machine")));
        };
        if r.state != "stopped" {
            return Ok(());
        }
        self.start_machine(&r).await?;
        r.state = "running".into();
        self.write_record(&r)?;
        tracing::info!(instance = %id, "Lab machine started.");
        Ok(())
    }

    async fn host_keys(&self, id: &str) -> Result<Vec<String>, CloudError> {
        Ok(self
            .record(id)
            .map(|r| vec![r.host_key])
            .unwrap_or_default())
    }
}
