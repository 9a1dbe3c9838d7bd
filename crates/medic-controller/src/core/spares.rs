//! The spare pool (`policy.spares`): how many of each role to prepare, and which to retire.
//!
//! The adapter lists the spares the cloud holds (tags `medic:topology`, `medic:spare`) and
//! hands them to [`Core::tend_spares`], which queues a preparation ([`Event::Spare`], a
//! recovery of one journaled step, claiming no machine or shard) per spare missing, and says
//! which instances to terminate:
//! - a spare not ready whose preparation is no longer in flight (it failed, or its journal
//!   was lost), once seen so for a minute (a new leader resumes the preparations it took
//!   over first): never left as an orphan;
//! - a ready spare launched otherwise than the role's spares are now (its AMI, subnet or
//!   instance types changed): no replacement would take it;
//! - ready spares beyond the policy (it was lowered), the last by id — not while a
//!   replacement that may take a spare runs.
//!
//! A spare whose preparation is still in flight counts as that preparation, ready or not.
//! The adapter reads each instance again before it terminates it, and leaves it if it is no
//! longer a spare (a replacement took it) or, retired as unready, if it is ready by now.
//!
//! Preparations per role and hour are bounded by `policy.max_replacements_per_hour`: a spare
//! whose preparation keeps failing stops being launched, with a critical alert.

use std::collections::{BTreeMap, BTreeSet};

use medic_plan::{Action, AlertLevel, Event};
use medic_topology::Role;

use super::{Core, Output, Request};

/// One spare as the cloud lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpareSeen {
    pub id: String,
    pub role: Role,
    pub ready: bool,
    /// The preparation that launched it (`medic:recovery`).
    pub recovery: Option<String>,
    /// How it was launched (`medic:spare-fit`): a replacement takes only a spare launched
    /// as it would launch itself.
    pub fit: Option<String>,
}

/// A spare to terminate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retire {
    pub id: String,
    pub why: String,
    /// Retired because it is not ready: left alone if it reads ready by then.
    pub unready: bool,
}

/// What the adapter is to do about the pool.
#[derive(Debug, Default, PartialEq)]
pub struct Tend {
    pub retire: Vec<Retire>,
    pub out: Vec<Output>,
}

const HOUR_MS: u64 = 3_600_000;
/// How long a spare is seen unready, with no preparation of it in flight, before it is retired.
const UNREADY_GRACE_MS: u64 = 60_000;

impl Core {
    /// Preparations queued or running, by the machine each copies.
    fn spare_jobs(&self) -> BTreeMap<String, usize> {
        let mut n = BTreeMap::new();
        let events = self
            .queue
            .iter()
            .map(|r| &r.event)
            .chain(self.running.values().map(|r| &r.plan.event));
        for e in events {
            if let Event::Spare { like, .. } = e {
                *n.entry(like.clone()).or_default() += 1;
            }
        }
        n
    }

    /// The recoveries in flight: running, or journaled and queued to resume.
    pub(super) fn in_flight(&self) -> BTreeSet<&str> {
        self.running
            .keys()
            .map(String::as_str)
            .chain(
                self.queue
                    .iter()
                    .filter_map(|r| r.resume.as_ref().map(|x| x.id.as_str())),
            )
            .collect()
    }

    /// Whether a running replacement may be taking a spare now.
    fn taking_spares(&self) -> bool {
        self.running.values().any(|r| {
            r.plan
                .steps
                .iter()
                .any(|s| matches!(&s.action, Action::LaunchInstance { spec } if spec.from_spares))
        })
    }

    /// Tends the pool against the policy, given every spare the cloud holds now:
    /// `policy.spares` of each role for each way its machines are launched
    /// ([`medic_plan::spare_fits`]: on aws, per subnet).
    pub fn tend_spares(&mut self, seen: &[SpareSeen], now_ms: u64) -> Tend {
        let mut t = Tend::default();
        if !self.leading {
            self.unready_since.clear();
            return t;
        }
        let loaded = self.loaded.clone();
        let top = &loaded.topology;
        let policy = &top.policy;
        let in_flight: BTreeSet<String> = self.in_flight().into_iter().map(str::to_owned).collect();
        // Per role, its fits now: (fit, the machine a spare of it copies).
        let fits: BTreeMap<Role, Vec<(String, String)>> = policy
            .spares
            .iter()
            .filter(|(_, n)| n.value > 0)
            .map(|(r, _)| (*r, medic_plan::spare_fits(top, *r)))
            .collect();
        let mut ready: BTreeMap<String, Vec<&SpareSeen>> = BTreeMap::new();
        for s in seen {
            let preparing = s.recovery.as_deref().is_some_and(|r| in_flight.contains(r));
            if preparing {
                // Counted as its preparation until that ends (ready or not).
                continue;
            }
            let fit = s.fit.as_deref().filter(|f| {
                fits.get(&s.role)
                    .is_some_and(|v| v.iter().any(|(x, _)| x == f))
            });
            match (s.ready, fit) {
                (true, Some(f)) => ready.entry(f.to_owned()).or_default().push(s),
                (true, None) => t.retire.push(Retire {
                    id: s.id.clone(),
                    why: if policy.spares_of(s.role) == 0 {
                        format!("a spare of role {}, which policy.spares no longer lists", s.role.as_str())
                    } else {
                        format!(
                            "a spare of role {} launched otherwise (AMI, subnet or instance types) than any of the role's machines is now",
                            s.role.as_str()
                        )
                    },
                    unready: false,
                }),
                // Only once seen so for a while: a leader that just took over may not have
                // resumed the preparation yet.
                (false, _) => {
                    let since = *self.unready_since.entry(s.id.clone()).or_insert(now_ms);
                    if now_ms.saturating_sub(since) >= UNREADY_GRACE_MS {
                        t.retire.push(Retire {
                            id: s.id.clone(),
                            why: format!(
                                "a spare of role {} whose preparation is over but that is not ready (it failed)",
                                s.role.as_str()
                            ),
                            unready: true,
                        });
                    }
                }
            }
        }
        // Only those unready with no preparation now: seen ready or preparing since, a spare
        // starts its minute afresh.
        let unready: BTreeSet<&str> = seen
            .iter()
            .filter(|s| !s.ready && !s.recovery.as_deref().is_some_and(|r| in_flight.contains(r)))
            .map(|s| s.id.as_str())
            .collect();
        self.unready_since
            .retain(|id, _| unready.contains(id.as_str()));
        let jobs = self.spare_jobs();
        let taking = self.taking_spares();
        let mut queue = Vec::new();
        for (role, role_fits) in &fits {
            let role = *role;
            let want = policy.spares_of(role) as usize;
            let mut missing: Vec<(String, usize)> = Vec::new();
            let mut short = 0;
            for (fit, like) in role_fits {
                let mut have = ready.remove(fit).unwrap_or_default();
                let preparing = jobs.get(like).copied().unwrap_or(0);
                // Beyond the policy by the ready ones alone (a preparation may still fail).
                if have.len() > want && !taking {
                    // The last by id go (the first by id are the ones a replacement takes).
                    have.sort_by(|a, b| a.id.cmp(&b.id));
                    for s in have.split_off(want) {
                        t.retire.push(Retire {
                            id: s.id.clone(),
                            why: format!(
                                "a spare of role {} beyond policy.spares ({want})",
                                role.as_str()
                            ),
                            unready: false,
                        });
                    }
                }
                let m = want.saturating_sub(have.len() + preparing);
                if m > 0 {
                    missing.push((like.clone(), m));
                    short += m;
                }
            }
            if short == 0 {
                self.spares_held.remove(&role);
                continue;
            }
            let key = role.as_str().to_owned();
            let hour_ago = now_ms.saturating_sub(HOUR_MS);
            self.saved.spare_launches.retain(|(_, at)| *at > hour_ago);
            let launched = self
                .saved
                .spare_launches
                .iter()
                .filter(|(r, _)| *r == key)
                .count();
            let max = policy.max_replacements_per_hour.value as usize;
            let mut allowed = max.saturating_sub(launched).min(short);
            if allowed < short && self.spares_held.insert(role) {
                t.out.push(Output::Alert {
                    level: AlertLevel::Critical,
                    message: format!(
                        "spares of role {} held: {launched} were prepared in the last hour (policy.max_replacements_per_hour is {max}); {short} are missing until the hour has passed — check why their preparations fail (`medic history`)",
                        role.as_str(),
                    ),
                });
            }
            if allowed == short {
                self.spares_held.remove(&role);
            }
            for (like, m) in missing {
                for _ in 0..m {
                    if allowed == 0 {
                        break;
                    }
                    allowed -= 1;
                    let name = format!("spare-{}-{now_ms}-{}", role.as_str(), queue.len());
                    queue.push((role, name, like.clone()));
                    self.saved.spare_launches.push((key.clone(), now_ms));
                }
            }
        }
        for (role, name, like) in queue {
            self.request(Request {
                event: Event::Spare { role, name, like },
                trigger: format!(
                    "spare pool: fewer than policy.spares.{} ({})",
                    role.as_str(),
                    policy.spares_of(role)
                ),
                first_failure_ms: None,
                master_last_ok_ms: None,
                queued_ms: now_ms,
                detected: false,
                resume: None,
            });
            t.out.push(Output::Save);
        }
        t
    }
}
