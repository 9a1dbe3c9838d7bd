//! What the controller keeps across restarts besides the journal: the observed state (current
//! roles, addresses, instance ids), machines in maintenance, and recent replacements (for the
//! flap limits). One JSON file, replaced atomically (temporary file, fsync, rename, fsync dir).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use medic_plan::ObservedState;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not medic state ({message}); move it away to start from the topology")]
    Corrupt { path: PathBuf, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// The topology's name: state of another deployment is never used.
    pub topology: String,
    pub observed: ObservedState,
    /// Machines an operator took out of monitoring (`medic unmonitor`).
    #[serde(default)]
    pub maintenance: BTreeSet<String>,
    /// Machines a recovery took out of monitoring and has not given back (a recovery that
    /// stopped, or a replacement held): they stay out until an operator acts.
    #[serde(default)]
    pub unmonitored: BTreeSet<String>,
    /// Servers (shard, machine) a recovery took out of monitoring and has not given back (a
    /// dead process it was not allowed to restart): only they are left alone, every other
    /// server on their machine is still watched.
    #[serde(default)]
    pub unmonitored_servers: BTreeSet<(String, String)>,
    /// When each machine was last replaced (ms since the epoch), for the flap limits.
    #[serde(default)]
    pub replacements: Vec<(String, u64)>,
    /// Machines whose recovery failed: when they are watched again (ms since the epoch) and
    /// how many times in a row it failed (the wait doubles). Kept here so a restart does not
    /// leave them out of monitoring for good.
    #[serde(default)]
    pub retries: std::collections::BTreeMap<String, (u64, u32)>,
    /// When each machine's automatic recoveries started (ms since the epoch), for
    /// `policy.max_recoveries_per_hour`.
    #[serde(default)]
    pub recoveries: Vec<(String, u64)>,
    /// Lost machines a recovery kept (for the copy on their disk) that no check has had an
    /// answer from since (not even a refusal): kept again, the same loss is judged again, not
    /// counted anew against `policy.max_recoveries_per_hour` — after a restart too.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub kept_unanswered: BTreeSet<String>,
    /// When each spare's preparation was asked for (its role, ms since the epoch):
    /// `policy.max_replacements_per_hour` bounds them per role, so a spare that fails its
    /// preparation is not launched again and again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spare_launches: Vec<(String, u64)>,
    /// Switchbacks asked for and not yet ended, by service (a switchover that failed before
    /// its promotion makes its primary the primary again): queued again after a restart or by
    /// a new leader, so the service does not wait for its stopped primary's checks to fail it
    /// over.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub switchbacks: BTreeMap<String, SavedSwitchback>,
}

/// A switchback asked for: the machine made the primary again, the primary's generation when
/// it was asked for (one changed since no longer stands), and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSwitchback {
    pub to: String,
    pub generation: u64,
    pub trigger: String,
}

impl Saved {
    /// Gives a machine back to monitoring, with any of its servers left out: `true` if
    /// anything of it was out.
    pub fn watch_again(&mut self, machine: &str) -> bool {
        let before = self.unmonitored_servers.len();
        self.unmonitored_servers.retain(|(_, m)| m != machine);
        self.unmonitored.remove(machine) | (self.unmonitored_servers.len() != before)
    }

    /// The state of a deployment medic has no record of: roles as the topology says.
    pub fn fresh(top: &medic_topology::Topology) -> Saved {
        Saved {
            topology: top.name.value.clone(),
            observed: ObservedState::assumed(top),
            maintenance: Default::default(),
            unmonitored: Default::default(),
            unmonitored_servers: Default::default(),
            replacements: Vec::new(),
            retries: Default::default(),
            recoveries: Vec::new(),
            kept_unanswered: BTreeSet::new(),
            spare_launches: Vec::new(),
            switchbacks: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    pub fn new(state_dir: &Path) -> Store {
        Store {
            path: state_dir.join("state.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn load(&self) -> Result<Option<Saved>, StoreError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                message: e.to_string(),
            })
    }

    pub fn save(&self, saved: &Saved) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(saved).map_err(|e| io(std::io::Error::other(e)))?;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&text).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// The flap limits: a cooldown per machine and a maximum of replacements per hour.
/// Returns why a replacement of `machine` must be held, or `None` if it may go ahead.
pub fn hold_reason(
    replacements: &[(String, u64)],
    machine: &str,
    now_ms: u64,
    cooldown_ms: u64,
    max_per_hour: u32,
) -> Option<String> {
    let hour_ago = now_ms.saturating_sub(3_600_000);
    let last_hour = replacements.iter().filter(|(_, at)| *at > hour_ago).count();
    if last_hour >= max_per_hour as usize {
        return Some(format!(
            "{last_hour} machines were replaced in the last hour (policy.max_replacements_per_hour is {max_per_hour})"
        ));
    }
    let last: BTreeMap<&str, u64> =
        replacements
            .iter()
            .fold(BTreeMap::new(), |mut m, (name, at)| {
                let e = m.entry(name.as_str()).or_insert(*at);
                *e = (*e).max(*at);
                m
            });
    if let Some(at) = last.get(machine)
        && now_ms.saturating_sub(*at) < cooldown_ms
    {
        return Some(format!(
            "{machine} was replaced {}s ago (policy.cooldown is {}s)",
            now_ms.saturating_sub(*at) / 1000,
            cooldown_ms / 1000
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn replacements_beyond_the_hourly_limit_or_within_the_cooldown_are_held() {
        let h = 3_600_000;
        let r = vec![("a".to_owned(), 10 * h), ("b".to_owned(), 10 * h + 1000)];
        assert_eq!(hold_reason(&r, "c", 10 * h + 2000, 60_000, 3), None);
        assert!(
            hold_reason(&r, "a", 10 * h + 2000, 60_000, 3)
                .unwrap()
                .contains("policy.cooldown")
        );
        assert!(
            hold_reason(&r, "c", 10 * h + 2000, 60_000, 2)
                .unwrap()
                .contains("max_replacements_per_hour is 2")
        );
        // An hour later, both limits have passed.
        assert_eq!(hold_reason(&r, "a", 11 * h + 2000, 60_000, 2), None);
    }

    #[test]
    fn state_survives_a_save_and_a_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert_eq!(store.load().unwrap(), None);
        let saved = Saved {
            topology: "t".into(),
            observed: ObservedState {
                machines: BTreeMap::new(),
                shards: BTreeMap::new(),
                services: BTreeMap::new(),
            },
            maintenance: BTreeSet::from(["x".to_owned()]),
            unmonitored: BTreeSet::new(),
            unmonitored_servers: BTreeSet::from([("s".to_owned(), "x".to_owned())]),
            replacements: vec![("x".into(), 5)],
            retries: BTreeMap::from([("y".to_owned(), (10, 2))]),
            recoveries: vec![("y".into(), 7)],
            kept_unanswered: BTreeSet::from(["z".to_owned()]),
            spare_launches: Vec::new(),
            switchbacks: BTreeMap::from([(
                "www".to_owned(),
                SavedSwitchback {
                    to: "web1".into(),
                    generation: 3,
                    trigger: "switchback: the switchover r-1 failed at step 4".into(),
                },
            )]),
        };
        store.save(&saved).unwrap();
        assert_eq!(store.load().unwrap(), Some(saved));
        std::fs::write(store.path(), "{").unwrap();
        assert!(store.load().unwrap_err().to_string().contains("state.json"));
    }
}
