//! Spares (`policy.spares`): instances launched and prepared ahead of need, and taken by a
//! replacement instead of a launch.
//!
//! A spare carries the tags `medic:topology`, `medic:spare` (its role) and, once its
//! preparation has finished, `medic:spare-ready: yes`. It has no `medic:machine`: no machine's
//! lookup by tags finds it. Taking it ([`claim`]) puts the replacement's tags on it
//! (`medic:machine`, `medic:recovery`, `medic:step`, `Name`, the user's) and removes both
//! spare tags, then reads them back: a spare is taken by one step only.

use std::collections::BTreeMap;

use crate::{
    Cloud, CloudError, Instance, InstanceState, LaunchSpec, Launched, TAG_RECOVERY, TAG_STEP,
    TAG_TOPOLOGY,
};

pub use medic_plan::spares::{TAG_SPARE, TAG_SPARE_READY};

/// The tags that find every spare of `role` in `topology` (ready or not).
pub fn spare_tags(topology: &str, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TAG_TOPOLOGY.to_owned(), topology.to_owned()),
        (TAG_SPARE.to_owned(), role.to_owned()),
    ])
}

/// Whether a spare's preparation has finished.
pub fn is_ready(i: &Instance) -> bool {
    i.tag(TAG_SPARE_READY) == Some("yes")
}

/// The instance the launch step `spec` takes instead of launching: the one this step took or
/// launched before a crash (its recovery and step tags), else the first ready spare of its
/// role (by id), re-tagged as `spec`'s machine and started if it was stopped. `None`: no ready
/// spare; the caller launches.
pub async fn claim<C: Cloud>(cloud: &C, spec: &LaunchSpec) -> Result<Option<Launched>, CloudError> {
    let topology = spec.tags.get(TAG_TOPOLOGY).cloned().unwrap_or_default();
    let mut mine = BTreeMap::from([(TAG_TOPOLOGY.to_owned(), topology.clone())]);
    for k in [TAG_RECOVERY, TAG_STEP] {
        if let Some(v) = spec.tags.get(k) {
            mine.insert(k.to_owned(), v.clone());
        }
    }
    if mine.len() == 3
        && let Some(i) = cloud
            .find(&mine)
            .await?
            .into_iter()
            .find(|i| !i.state.is_gone())
    {
        start_if_stopped(cloud, &i).await?;
        return Ok(Some(Launched {
            instance: i,
            reused: true,
            spare: true,
        }));
    }
    let mut ready: Vec<Instance> = cloud
        .find(&spare_tags(&topology, spec.role.as_str()))
        .await?
        .into_iter()
        .filter(|i| is_ready(i) && !i.state.is_gone())
        .collect();
    ready.sort_by(|a, b| a.id.cmp(&b.id));
    // Every tag of the machine but the topology's, which the spare has (and which medic's
    // IAM policy does not let it change).
    let mut tags = spec.tags.clone();
    tags.remove(TAG_TOPOLOGY);
    for spare in ready {
        cloud
            .retag(&spare.id, &tags, &[TAG_SPARE, TAG_SPARE_READY])
            .await?;
        let Some(now) = cloud.describe(&spare.id).await? else {
            continue;
        };
        // Read back: another step may have taken it at the same moment (last tag wins).
        if mine.iter().any(|(k, v)| now.tags.get(k) != Some(v)) || now.state.is_gone() {
            continue;
        }
        start_if_stopped(cloud, &now).await?;
        return Ok(Some(Launched {
            instance: now,
            reused: false,
            spare: true,
        }));
    }
    Ok(None)
}

async fn start_if_stopped<C: Cloud>(cloud: &C, i: &Instance) -> Result<(), CloudError> {
    if matches!(i.state, InstanceState::Stopped | InstanceState::Stopping) {
        cloud.start(&i.id).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::sync::Mutex;

    use super::*;
    use crate::{TAG_MACHINE, TerminateOutcome};

    /// Instances in memory; a launch makes a new one.
    #[derive(Default)]
    struct Mem {
        all: Mutex<Vec<Instance>>,
        starts: Mutex<Vec<String>>,
    }

    impl Mem {
        fn add(&self, id: &str, state: InstanceState, tags: &[(&str, &str)]) {
            self.all.lock().unwrap().push(Instance {
                id: id.into(),
                state,
                address: Some("10.0.0.9".parse().unwrap()),
                instance_type: None,
                tags: tags
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            });
        }
    }

    impl Cloud for Mem {
        async fn launch(&self, _: &LaunchSpec) -> Result<Launched, CloudError> {
            unreachable!("claim never launches")
        }
        async fn describe(&self, id: &str) -> Result<Option<Instance>, CloudError> {
            Ok(self
                .all
                .lock()
                .unwrap()
                .iter()
                .find(|i| i.id == id)
                .cloned())
        }
        async fn find(&self, tags: &BTreeMap<String, String>) -> Result<Vec<Instance>, CloudError> {
            Ok(self
                .all
                .lock()
                .unwrap()
                .iter()
                .filter(|i| tags.iter().all(|(k, v)| i.tags.get(k) == Some(v)))
                .cloned()
                .collect())
        }
        async fn terminate(&self, _: &str) -> Result<TerminateOutcome, CloudError> {
            Ok(TerminateOutcome::Terminated)
        }
        async fn host_keys(&self, _: &str) -> Result<Vec<String>, CloudError> {
            Ok(Vec::new())
        }
        async fn retag(
            &self,
            id: &str,
            set: &BTreeMap<String, String>,
            remove: &[&str],
        ) -> Result<(), CloudError> {
            let mut all = self.all.lock().unwrap();
            let i = all.iter_mut().find(|i| i.id == id).unwrap();
            for k in remove {
                i.tags.remove(*k);
            }
            i.tags.extend(set.clone());
            Ok(())
        }
        async fn stop(&self, _: &str) -> Result<(), CloudError> {
            Ok(())
        }
        async fn start(&self, id: &str) -> Result<(), CloudError> {
            self.starts.lock().unwrap().push(id.to_owned());
            let mut all = self.all.lock().unwrap();
            all.iter_mut().find(|i| i.id == id).unwrap().state = InstanceState::Running;
            Ok(())
        }
    }

    fn spec(step: &str) -> LaunchSpec {
        LaunchSpec {
            machine: "redis2".into(),
            role: medic_plan::spares::Role::Redis,
            ami: "redis".into(),
            image_id: None,
            instance_types: vec![],
            subnet: None,
            security_groups: vec![],
            key_pair: None,
            instance_profile: None,
            tags: [
                (TAG_TOPOLOGY, "t"),
                (TAG_MACHINE, "redis2"),
                (TAG_RECOVERY, "r1"),
                (TAG_STEP, step),
                ("Name", "t-redis2"),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
            client_token: "tok".into(),
            from_spares: true,
        }
    }

    const SPARE: &[(&str, &str)] = &[(TAG_TOPOLOGY, "t"), (TAG_SPARE, "redis")];
    const READY: &[(&str, &str)] = &[
        (TAG_TOPOLOGY, "t"),
        (TAG_SPARE, "redis"),
        (TAG_SPARE_READY, "yes"),
    ];

    #[tokio::test]
    async fn the_first_ready_spare_of_the_role_is_taken_retagged_and_started() {
        let cloud = Mem::default();
        cloud.add("i-1", InstanceState::Running, SPARE);
        cloud.add("i-3", InstanceState::Stopped, READY);
        cloud.add("i-2", InstanceState::Stopped, READY);
        cloud.add(
            "i-0",
            InstanceState::Running,
            &[
                (TAG_TOPOLOGY, "t"),
                (TAG_SPARE, "haproxy"),
                (TAG_SPARE_READY, "yes"),
            ],
        );
        let got = claim(&cloud, &spec("7")).await.unwrap().unwrap();
        assert_eq!(got.instance.id, "i-2", "ready, of the role, first by id");
        assert!(got.spare && !got.reused);
        let now = cloud.describe("i-2").await.unwrap().unwrap();
        assert_eq!(now.machine(), Some("redis2"));
        assert_eq!(now.tag(TAG_STEP), Some("7"));
        assert!(now.tag(TAG_SPARE).is_none() && now.tag(TAG_SPARE_READY).is_none());
        assert_eq!(*cloud.starts.lock().unwrap(), ["i-2"]);
        // Run again (a controller that crashed after the re-tag): the same one, found.
        let again = claim(&cloud, &spec("7")).await.unwrap().unwrap();
        assert_eq!(again.instance.id, "i-2");
        assert!(again.reused);
        // Another step takes the next ready one; then there is none.
        assert_eq!(
            claim(&cloud, &spec("9"))
                .await
                .unwrap()
                .unwrap()
                .instance
                .id,
            "i-3"
        );
        assert!(claim(&cloud, &spec("11")).await.unwrap().is_none());
    }
}
