//! Which instance is a machine's, and how its SSH host key is learned: only from an instance
//! medic launched, never from a look-alike carrying its tags, and never silently replaced.

use std::time::Duration;

use tokio::time::{Instant, sleep};

use crate::{Cloud, CloudError, Instance, TAG_RECOVERY};

/// What discovery makes of the instances carrying a machine's tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The machine's instance: the one medic recorded, else the newest one a recovery of
    /// this controller launched (its journal knows the recovery), else — with nothing
    /// recorded at all, the first start — the newest one (trust on first use).
    pub adopt: Option<Instance>,
    /// Alive instances with the machine's tags that are not the one adopted and were not
    /// launched by a recovery medic knows: another deployment's, or an impostor's. Never
    /// adopted, never terminated: an operator is told.
    pub foreign: Vec<String>,
}

/// Chooses among `found` (alive instances with the machine's tags, oldest first): `recorded`
/// is the instance medic's state names for the machine; `ours(recovery)` says whether a
/// recovery id is one of this controller's (its journal has it).
pub fn choose_instance(
    found: &[Instance],
    recorded: Option<&str>,
    ours: impl Fn(&str) -> bool,
) -> Choice {
    let alive: Vec<&Instance> = found.iter().filter(|i| !i.state.is_gone()).collect();
    let launched_by_us = |i: &Instance| i.tag(TAG_RECOVERY).is_some_and(&ours);
    let adopt = match recorded {
        Some(id) => alive
            .iter()
            .find(|i| i.id == id)
            .or_else(|| alive.iter().rev().find(|i| launched_by_us(i)))
            .map(|i| (*i).clone()),
        None if alive.iter().any(|i| launched_by_us(i)) => alive
            .iter()
            .rev()
            .find(|i| launched_by_us(i))
            .map(|i| (*i).clone()),
        None => alive.last().map(|i| (*i).clone()),
    };
    let foreign = alive
        .iter()
        .filter(|i| adopt.as_ref().is_none_or(|a| a.id != i.id))
        .filter(|i| !launched_by_us(i) && Some(i.id.as_str()) != recorded)
        .map(|i| i.id.clone())
        .collect();
    Choice { adopt, foreign }
}

/// The instance's host keys from the cloud (EC2: its console output, which appears a while
/// after the instance runs), asked every `poll` until there are some or `within` has passed;
/// empty then.
pub async fn host_keys_when_ready<C: Cloud>(
    cloud: &C,
    id: &str,
    within: Duration,
    poll: Duration,
) -> Result<Vec<String>, CloudError> {
    let deadline = Instant::now() + within;
    loop {
        let keys = cloud.host_keys(id).await?;
        if !keys.is_empty() || Instant::now() + poll > deadline {
            return Ok(keys);
        }
        sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{InstanceState, LaunchSpec, Launched, TAG_MACHINE, TerminateOutcome};

    fn inst(id: &str, recovery: Option<&str>) -> Instance {
        let mut tags = BTreeMap::from([(TAG_MACHINE.to_owned(), "redis1".to_owned())]);
        if let Some(r) = recovery {
            tags.insert(TAG_RECOVERY.to_owned(), r.to_owned());
        }
        Instance {
            id: id.into(),
            state: InstanceState::Running,
            address: None,
            instance_type: None,
            tags,
        }
    }

    fn ids(c: &Choice) -> (Option<&str>, Vec<&str>) {
        (
            c.adopt.as_ref().map(|i| i.id.as_str()),
            c.foreign.iter().map(String::as_str).collect(),
        )
    }

    #[test]
    fn the_recorded_instance_is_kept_and_a_look_alike_is_foreign() {
        let ours = |r: &str| r == "rec-1";
        // An impostor launched after medic's instance, with medic's tags.
        let found = [inst("i-1", Some("rec-1")), inst("i-9", Some("rec-1x"))];
        assert_eq!(
            ids(&choose_instance(&found, Some("i-1"), ours)),
            (Some("i-1"), vec!["i-9"])
        );
        // The recorded one gone: a replacement one of medic's recoveries launched is adopted;
        // the look-alike still is not.
        let found = [inst("i-2", Some("rec-1")), inst("i-9", None)];
        assert_eq!(
            ids(&choose_instance(&found, Some("i-1"), ours)),
            (Some("i-2"), vec!["i-9"])
        );
        // Nothing of medic's alive: nothing adopted, the look-alike named.
        let found = [inst("i-9", Some("rec-other"))];
        assert_eq!(
            ids(&choose_instance(&found, Some("i-1"), ours)),
            (None, vec!["i-9"])
        );
        // First start, nothing recorded: the newest is trusted on first use.
        let found = [inst("i-1", Some("bootstrap")), inst("i-3", None)];
        assert_eq!(
            ids(&choose_instance(&found, None, |_| false)),
            (Some("i-3"), vec!["i-1"])
        );
    }

    /// A cloud whose console shows no key for its first `empty` calls.
    struct SlowConsole {
        empty: usize,
        calls: AtomicUsize,
    }

    impl Cloud for SlowConsole {
        async fn launch(&self, _: &LaunchSpec) -> Result<Launched, CloudError> {
            Err(CloudError::Invalid {
                op: "launch",
                message: "not in this test".into(),
            })
        }
        async fn describe(&self, _: &str) -> Result<Option<Instance>, CloudError> {
            Ok(None)
        }
        async fn find(&self, _: &BTreeMap<String, String>) -> Result<Vec<Instance>, CloudError> {
            Ok(Vec::new())
        }
        async fn terminate(&self, _: &str) -> Result<TerminateOutcome, CloudError> {
            Ok(TerminateOutcome::AlreadyGone)
        }
        async fn retag(
            &self,
            _: &str,
            _: &BTreeMap<String, String>,
            _: &[&str],
        ) -> Result<(), CloudError> {
            Ok(())
        }
        async fn stop(&self, _: &str) -> Result<(), CloudError> {
            Ok(())
        }
        async fn start(&self, _: &str) -> Result<(), CloudError> {
            Ok(())
        }
        async fn host_keys(&self, _: &str) -> Result<Vec<String>, CloudError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(if n < self.empty {
                Vec::new()
            } else {
                vec!["ssh-ed25519 AAAAC3Nz".to_owned()]
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn host_keys_are_waited_for_until_the_console_shows_them() {
        let cloud = SlowConsole {
            empty: 3,
            calls: AtomicUsize::new(0),
        };
        let keys = host_keys_when_ready(
            &cloud,
            "i-1",
            Duration::from_secs(60),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
        assert_eq!(keys, ["ssh-ed25519 AAAAC3Nz"]);
        assert_eq!(cloud.calls.load(Ordering::SeqCst), 4);
        // A console that never shows one gives up at the deadline, empty.
        let never = SlowConsole {
            empty: usize::MAX,
            calls: AtomicUsize::new(0),
        };
        let keys = host_keys_when_ready(
            &never,
            "i-1",
            Duration::from_secs(10),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
        assert!(keys.is_empty());
    }
}
