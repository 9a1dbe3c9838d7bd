//! Spares (`policy.spares`): instances launched and prepared ahead of need, and taken by a
//! replacement instead of a launch.
//!
//! A spare carries the tags `medic:topology`, `medic:spare` (its role), `medic:spare-fit` (how
//! it was launched) and, once its preparation has finished, `medic:spare-ready: yes`. It has
//! no `medic:machine`, and **an instance with `medic:machine` is never a spare**, whatever
//! else it carries: taking a spare ([`claim`]) sets the machine's tags (`medic:machine`,
//! `medic:recovery`, `medic:step`, `Name`, the user's) in one call — from then on it is that
//! machine's — and then removes the spare tags.
//!
//! # One step takes one spare
//! Claims in one process are serialized (the leader is the only process that acts). The
//! candidate is read again just before it is re-tagged (still ready, still no machine's), and
//! the tags are read back after.

use std::collections::BTreeMap;

use crate::{
    Cloud, CloudError, Instance, InstanceState, LaunchSpec, Launched, TAG_MACHINE, TAG_RECOVERY,
    TAG_STEP, TAG_TOPOLOGY,
};

pub use medic_plan::spares::{TAG_SPARE, TAG_SPARE_FIT, TAG_SPARE_HOST_KEY, TAG_SPARE_READY};

/// Serializes claims in this process: two replacements never pick the same spare.
static CLAIMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The tags that find every spare of `role` in `topology` (ready or not).
pub fn spare_tags(topology: &str, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TAG_TOPOLOGY.to_owned(), topology.to_owned()),
        (TAG_SPARE.to_owned(), role.to_owned()),
    ])
}

/// Whether an instance is a spare: tagged `medic:spare`, and no machine's.
pub fn is_spare(i: &Instance) -> bool {
    i.tag(TAG_SPARE).is_some() && i.tag(TAG_MACHINE).is_none() && !i.state.is_gone()
}

/// Whether a spare's preparation has finished.
pub fn is_ready(i: &Instance) -> bool {
    is_spare(i) && i.tag(TAG_SPARE_READY) == Some("yes")
}

/// The instance the launch step `spec` takes instead of launching: the one this step took or
/// launched before a crash (its recovery and step tags; what is left of a spare's tags on it
/// is removed), else the first ready spare of its role and fit (by id), re-tagged as `spec`'s
/// machine and started if it was stopped. `None`: no ready spare; the caller launches. On an
/// error after a spare was re-tagged, the spare is given back to the pool unready (the pool
/// retires it) without this step's tags, so that a launch does not find it.
pub async fn claim<C: Cloud>(cloud: &C, spec: &LaunchSpec) -> Result<Option<Launched>, CloudError> {
    let _one = CLAIMING.lock().await;
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
        if i.tag(TAG_SPARE).is_some() || i.tag(TAG_SPARE_READY).is_some() {
            cloud
                .retag(
                    &i.id,
                    &BTreeMap::new(),
                    &[TAG_SPARE, TAG_SPARE_READY, TAG_SPARE_FIT],
                )
                .await?;
        }
        start_if_stopped(cloud, &i).await?;
        return Ok(Some(Launched {
            instance: i,
            reused: true,
            spare: true,
        }));
    }
    let fit = spec.fit();
    let mut ready: Vec<Instance> = cloud
        .find(&spare_tags(&topology, spec.role.as_str()))
        .await?
        .into_iter()
        .filter(|i| is_ready(i) && i.tag(TAG_SPARE_FIT) == Some(fit.as_str()))
        .collect();
    ready.sort_by(|a, b| a.id.cmp(&b.id));
    // Every tag of the machine but the topology's, which the spare has (and which medic's
    // IAM policy does not let it change).
    let mut tags = spec.tags.clone();
    tags.remove(TAG_TOPOLOGY);
    for candidate in ready {
        // Read again: still a ready spare (another process may have taken it).
        match cloud.describe(&candidate.id).await? {
            Some(i) if is_ready(&i) => {}
            _ => continue,
        }
        let taken = async {
            // One call makes it the machine's: from here on it is no spare ([`is_spare`]).
            cloud.retag(&candidate.id, &tags, &[]).await?;
            cloud
                .retag(
                    &candidate.id,
                    &BTreeMap::new(),
                    &[TAG_SPARE, TAG_SPARE_READY, TAG_SPARE_FIT],
                )
                .await?;
            let now = cloud.describe(&candidate.id).await?;
            let Some(now) = now.filter(|n| !n.state.is_gone()) else {
                return Err(CloudError::Api {
                    op: "take spare",
                    code: "Gone".into(),
                    message: format!("spare {} is gone", candidate.id),
                });
            };
            if let Some((k, v)) = tags.iter().find(|(k, v)| now.tags.get(*k) != Some(*v)) {
                return Err(CloudError::Api {
                    op: "take spare",
                    code: TAKEN.into(),
                    message: format!(
                        "spare {} reads {k}={:?} after it was tagged {v}: someone else took it",
                        candidate.id,
                        now.tag(k)
                    ),
                });
            }
            start_if_stopped(cloud, &now).await?;
            Ok(now)
        }
        .await;
        return match taken {
            Ok(now) => Ok(Some(Launched {
                instance: now,
                reused: false,
                spare: true,
            })),
            // Another's now: left as it is.
            Err(e @ CloudError::Api { .. }) if is_taken(&e) => Err(e),
            // Given back, this step's tags off it: the caller launches. Else the step fails,
            // and run again finishes what it began (it finds its tags).
            Err(e) => {
                if give_back(cloud, &candidate.id, spec).await {
                    tracing::warn!(instance = %candidate.id, error = %e, "A spare could not be taken; given back to the pool unready.");
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        };
    }
    Ok(None)
}

const TAKEN: &str = "Taken";

fn is_taken(e: &CloudError) -> bool {
    matches!(e, CloudError::Api { code, .. } if code == TAKEN)
}

/// A spare whose taking failed: back in the pool, unready (retired at the next tending), and
/// without the machine's, the recovery's and the step's tags — read back. Whether it is.
async fn give_back<C: Cloud>(cloud: &C, id: &str, spec: &LaunchSpec) -> bool {
    let back = BTreeMap::from([(TAG_SPARE.to_owned(), spec.role.as_str().to_owned())]);
    let gone = [TAG_MACHINE, TAG_RECOVERY, TAG_STEP, TAG_SPARE_READY];
    if let Err(e) = cloud.retag(id, &back, &gone).await {
        tracing::warn!(instance = %id, error = %e, "Cannot give a spare back after a failed take.");
        return false;
    }
    match cloud.describe(id).await {
        Ok(Some(i)) => gone.iter().all(|k| i.tag(k).is_none()),
        Ok(None) => true,
        Err(_) => false,
    }
}

/// Terminates the spare `id` if it still is one — and, `unready`, still not ready — checked
/// under the lock takings hold, so never an instance a replacement has taken. Whether it
/// terminated it.
pub async fn retire<C: Cloud>(cloud: &C, id: &str, unready: bool) -> Result<bool, CloudError> {
    let _one = CLAIMING.lock().await;
    match cloud.describe(id).await? {
        Some(i) if is_spare(&i) && !(unready && is_ready(&i)) => {}
        _ => return Ok(false),
    }
    cloud.terminate(id).await?;
    Ok(true)
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
        /// A start of this instance fails.
        fail_start: Mutex<Option<String>>,
    }

    impl Mem {
        fn add<V: AsRef<str>>(&self, id: &str, state: InstanceState, tags: &[(&str, V)]) {
            self.all.lock().unwrap().push(Instance {
                id: id.into(),
                state,
                address: Some("10.0.0.9".parse().unwrap()),
                instance_type: None,
                tags: tags
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.as_ref().to_owned()))
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
            if self.fail_start.lock().unwrap().as_deref() == Some(id) {
                return Err(CloudError::Api {
                    op: "start",
                    code: "InsufficientInstanceCapacity".into(),
                    message: "injected".into(),
                });
            }
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
    /// A ready spare's tags, of `spec`'s fit.
    fn ready() -> Vec<(&'static str, String)> {
        vec![
            (TAG_TOPOLOGY, "t".into()),
            (TAG_SPARE, "redis".into()),
            (TAG_SPARE_READY, "yes".into()),
            (TAG_SPARE_FIT, spec("0").fit()),
        ]
    }

    #[tokio::test]
    async fn the_first_ready_spare_of_the_role_is_taken_retagged_and_started() {
        let cloud = Mem::default();
        cloud.add("i-1", InstanceState::Running, SPARE);
        cloud.add("i-3", InstanceState::Stopped, &ready());
        cloud.add("i-2", InstanceState::Stopped, &ready());
        let mut other_role = ready();
        other_role[1].1 = "haproxy".into();
        cloud.add("i-0", InstanceState::Running, &other_role);
        let mut other_fit = ready();
        other_fit[3].1 = "0000000000000000".into();
        cloud.add("i-00", InstanceState::Running, &other_fit);
        // Half taken (its machine's tags set, its spare tags not yet removed): no spare.
        let mut half = ready();
        half.push((TAG_MACHINE, "redis1".into()));
        cloud.add("i-01", InstanceState::Running, &half);
        let got = claim(&cloud, &spec("7")).await.unwrap().unwrap();
        assert_eq!(
            got.instance.id, "i-2",
            "ready, of the role and fit, no machine's, first by id"
        );
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

    #[tokio::test]
    async fn a_step_run_again_after_a_half_taken_spare_finishes_taking_it() {
        let cloud = Mem::default();
        // The machine's tags were set, then the removal of the spare tags failed.
        let mut half = ready();
        half.extend([
            (TAG_MACHINE, "redis2".into()),
            (TAG_RECOVERY, "r1".into()),
            (TAG_STEP, "7".into()),
        ]);
        cloud.add("i-5", InstanceState::Running, &half);
        let got = claim(&cloud, &spec("7")).await.unwrap().unwrap();
        assert_eq!(got.instance.id, "i-5");
        let now = cloud.describe("i-5").await.unwrap().unwrap();
        assert!(now.tag(TAG_SPARE).is_none() && now.tag(TAG_SPARE_READY).is_none());
        assert!(!is_spare(&now));
    }

    #[tokio::test]
    async fn a_spare_that_cannot_be_started_is_given_back_unready_and_the_step_launches() {
        let cloud = Mem::default();
        cloud.add("i-2", InstanceState::Stopped, &ready());
        *cloud.fail_start.lock().unwrap() = Some("i-2".into());
        assert!(
            claim(&cloud, &spec("7")).await.unwrap().is_none(),
            "given back: the step launches"
        );
        let back = cloud.describe("i-2").await.unwrap().unwrap();
        assert!(is_spare(&back) && !is_ready(&back), "{:?}", back.tags);
        for k in [TAG_MACHINE, TAG_RECOVERY, TAG_STEP] {
            assert!(back.tag(k).is_none(), "{k}: {:?}", back.tags);
        }
        // Run again, the step finds nothing of its own and no ready spare: it launches.
        *cloud.fail_start.lock().unwrap() = None;
        assert!(claim(&cloud, &spec("7")).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn two_steps_at_once_never_take_the_same_spare() {
        let cloud = Mem::default();
        cloud.add("i-2", InstanceState::Running, &ready());
        let (s7, s9) = (spec("7"), spec("9"));
        let (a, b) = tokio::join!(claim(&cloud, &s7), claim(&cloud, &s9));
        let taken: Vec<String> = [a.unwrap(), b.unwrap()]
            .into_iter()
            .flatten()
            .map(|l| l.instance.id)
            .collect();
        assert_eq!(taken, ["i-2"], "one takes it, the other launches");
    }
}
