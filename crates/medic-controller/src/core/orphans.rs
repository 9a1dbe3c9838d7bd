//! Orphans: instances medic owns (tag `medic:topology`) that are no machine's current
//! instance, no spare and no recovery's in flight ([`medic_cloud::orphans`]). Each is told once,
//! with a warning; none is terminated — an instance medic cannot place may still be in use,
//! and terminating a healthy machine is the one thing medic never risks. The adapter lists the
//! cloud with the spare pool's tending ([`crate::core::Core::tend_spares`]).

use std::collections::{BTreeMap, BTreeSet};

use medic_cloud::{Instance, TAG_RECOVERY};
use medic_plan::AlertLevel;

use super::{Core, Output};

impl Core {
    /// Tells each orphan among `owned` (every live instance tagged with this topology) once,
    /// when two listings in a row found it one (a listing may be older than the state it is
    /// compared with: an instance terminated in between). Not told: an instance tagged as a
    /// machine whose current instance the state does not know (a machine a reload added, a
    /// look-up that failed at start) — it may be that machine. One no longer listed is
    /// forgotten (told again if it comes back).
    pub fn report_orphans(&mut self, owned: &[Instance]) -> Vec<Output> {
        let mut out = Vec::new();
        if !self.leading {
            self.orphans_told.clear();
            self.orphans_seen.clear();
            return out;
        }
        let current: BTreeMap<String, String> = self
            .saved
            .observed
            .machines
            .iter()
            .filter_map(|(m, s)| s.instance_id.clone().map(|i| (m.clone(), i)))
            .collect();
        let in_flight: BTreeSet<String> = self.in_flight().into_iter().map(str::to_owned).collect();
        let unknown = |m: &str| {
            self.saved
                .observed
                .machines
                .get(m)
                .is_some_and(|s| s.instance_id.is_none())
        };
        let found: Vec<&Instance> = medic_cloud::orphans(owned, &current, &in_flight)
            .into_iter()
            .filter(|i| !i.machine().is_some_and(unknown))
            .collect();
        let ids: BTreeSet<String> = found.iter().map(|i| i.id.clone()).collect();
        self.orphans_told.retain(|id| ids.contains(id));
        let before = std::mem::replace(&mut self.orphans_seen, ids);
        for i in found {
            if !before.contains(&i.id) || !self.orphans_told.insert(i.id.clone()) {
                continue;
            }
            let what = match (i.machine(), i.tag(TAG_RECOVERY)) {
                (Some(m), Some(r)) => format!("tagged as machine {m}, launched by recovery {r}"),
                (Some(m), None) => format!("tagged as machine {m}"),
                (None, Some(r)) => format!("launched by recovery {r}"),
                (None, None) => "tagged with this topology only".to_owned(),
            };
            out.push(Output::Alert {
                level: AlertLevel::Warning,
                message: format!(
                    "instance {} ({what}) is an orphan: medic's, but no machine's current instance, no spare and no running recovery's; medic leaves it as it is — terminate it if nothing uses it",
                    i.id
                ),
            });
        }
        out
    }
}
