//! EC2: re-tagging, stopping and starting an instance — what spares need (`policy.spares`).

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ec2::types::Tag;
use medic_cloud::{CloudError, InstanceState};

use crate::classify;
use crate::ec2::Ec2;

/// How long a start waits for an instance still stopping to be stopped.
const STOPPING_WITHIN: Duration = Duration::from_secs(300);

impl Ec2 {
    pub(crate) async fn retag_instance(
        &self,
        id: &str,
        set: &BTreeMap<String, String>,
        remove: &[&str],
    ) -> Result<(), CloudError> {
        if !set.is_empty() {
            let tags: Vec<Tag> = set
                .iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect();
            self.client
                .create_tags()
                .resources(id)
                .set_tags(Some(tags))
                .send()
                .await
                .map_err(|e| classify("retag", "ec2:CreateTags", |_| None, e))?;
        }
        if !remove.is_empty() {
            let tags: Vec<Tag> = remove
                .iter()
                .map(|k| Tag::builder().key(*k).build())
                .collect();
            self.client
                .delete_tags()
                .resources(id)
                .set_tags(Some(tags))
                .send()
                .await
                .map_err(|e| classify("retag", "ec2:DeleteTags", |_| None, e))?;
        }
        Ok(())
    }

    pub(crate) async fn stop_instance(&self, id: &str) -> Result<(), CloudError> {
        use medic_cloud::Cloud as _;
        match self.describe(id).await? {
            Some(i) if matches!(i.state, InstanceState::Stopped | InstanceState::Stopping) => {
                return Ok(());
            }
            _ => {}
        }
        self.client
            .stop_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| classify("stop", "ec2:StopInstances", |_| None, e))?;
        Ok(())
    }

    pub(crate) async fn start_instance(&self, id: &str) -> Result<(), CloudError> {
        use medic_cloud::Cloud as _;
        let deadline = tokio::time::Instant::now() + STOPPING_WITHIN;
        loop {
            match self.describe(id).await? {
                Some(i) if i.state == InstanceState::Stopping => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(CloudError::Timeout {
                            op: "start",
                            after: STOPPING_WITHIN,
                            state: format!("{id} is still stopping"),
                        });
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Some(i) if i.state == InstanceState::Stopped => break,
                // Running, pending, gone: nothing to start (wait_running says the rest).
                _ => return Ok(()),
            }
        }
        self.client
            .start_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| classify("start", "ec2:StartInstances", |_| None, e))?;
        Ok(())
    }
}
