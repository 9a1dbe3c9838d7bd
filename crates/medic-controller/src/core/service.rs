//! A service check's result, past its detector: which machines of the service may be
//! promoted (those seen passing `rise` checks in a row; the rest are in `down`), a primary's
//! failover after `fall` bad answers, the rejoining of a machine the service was failed away
//! from, and the automatic failback to the nominal primary (`failback: automatic`).
//!
//! Silence goes to the machine's observers like any other (`detect.rs`), and a machine they
//! confirm lost is failed over by the planner — except a machine already out of the service:
//! its silence changes nothing, and it rejoins when it answers.

use medic_detect::{Health, Observation, Verdict};
use medic_plan::{AlertLevel, Event, ObservedState};
use medic_topology::{Failback, Topology};

use super::detect::detected;
use super::{Core, Output, Request};
use crate::checks::{CheckResult, Target};

/// Nothing is known of any service's machines yet (a start, a new leader): none may be
/// promoted until it has been seen passing its checks.
pub(super) fn forget_health(observed: &mut ObservedState, top: &Topology) {
    for s in top.services.iter().map(|s| &s.value) {
        if let Some(st) = observed.services.get_mut(&s.name.value) {
            st.down = s.machines().map(str::to_owned).collect();
            st.positions.clear();
        }
    }
}

impl Core {
    /// A service's data store answering in the wrong role ([`Core::wrong_role`]): the result
    /// judged as a bad answer (told once per episode), or `None` if the role is right.
    pub(super) fn miscast(&mut self, r: &CheckResult) -> Option<Vec<Output>> {
        // A data store of a service answering in the wrong role is a bad answer (rare: the
        // result is copied only then). A writable one beside the primary is told as critical.
        // (A database that answered beside another check that failed is judged too: the
        // result is bad already, but a second primary is still told.)
        if let (Target::Service { service, machine }, Some(info)) = (&*r.target, &r.info) {
            match self.wrong_role(service, machine, info) {
                Some(_) if self.left_alone(&r.target) => {}
                Some(why) => {
                    let mut out = Vec::new();
                    let writable = info.role == medic_redis::Role::Master;
                    // Beside another check that failed the result is bad already: only a
                    // second primary is still worth telling.
                    if (r.observation == Observation::Ok || writable)
                        && self.miscast.insert(Target::clone(&r.target))
                    {
                        out.push(Output::Alert {
                            level: if writable {
                                AlertLevel::Critical
                            } else {
                                AlertLevel::Warning
                            },
                            message: format!("{}: {why}", r.target),
                        });
                    }
                    if r.observation == Observation::Ok {
                        let mut wrong = r.clone();
                        wrong.observation = Observation::Unhealthy;
                        wrong.detail = format!("{} — {why}", r.detail).into();
                        out.extend(self.on_result(&wrong));
                    } else {
                        out.extend(self.on_result(r));
                    }
                    return Some(out);
                }
                None => {
                    self.miscast.remove(&*r.target);
                }
            }
        }
        None
    }

    /// Why a service's data store answers in a role its machine should not have, if it does:
    /// the primary in recovery (read-only), or another machine not in recovery (writable: a
    /// second primary). With `standbys_read_only` the roles are the nominal ones whoever
    /// serves: the copy that serves while the nominal primary is out stays read-only.
    pub(super) fn wrong_role(
        &self,
        service: &str,
        machine: &str,
        info: &medic_redis::ReplicationInfo,
    ) -> Option<String> {
        let s = self.loaded.topology.service(service)?;
        let st = self.saved.observed.services.get(service)?;
        // Roles move inside the service's own recoveries (a promotion before its record, a
        // demotion before the other's promotion): the machines whose role a running plan
        // changes — the recorded primary and the one it promotes — are not judged until the
        // record is made. Any other machine is.
        let claim = super::recovery::service_claim(service);
        let in_motion = self
            .running
            .values()
            .filter(|r| r.claims.shards.contains(&claim))
            .any(|r| {
                machine == st.primary
                    || r.plan.steps.iter().any(|s| {
                        matches!(&s.action, medic_plan::Action::ServiceRole {
                            service: sv,
                            machine: m,
                            role: medic_plan::ServiceRole::Primary,
                        } if sv == service && m == machine)
                    })
            });
        if in_motion {
            return None;
        }
        let primary = if s.standbys_read_only {
            s.primary.value.as_str()
        } else {
            st.primary.as_str()
        };
        match (machine == primary, info.role) {
            (true, medic_redis::Role::Replica) => Some(format!(
                "in recovery (read-only), but {machine} is {service}'s primary"
            )),
            (false, medic_redis::Role::Master) => Some(format!(
                "not in recovery (writable), but {primary} is {service}'s primary: a second primary?"
            )),
            _ => None,
        }
    }

    /// A standby whose PostgreSQL streams from another machine of the service than the
    /// primary (it was away when the primary changed, or was pointed there by hand): asked
    /// once to follow the primary (`ServiceFollow`), unless a recovery of the service runs (its
    /// own steps make its standbys follow) or the primary is failing. An upstream that is no
    /// machine of the service (the service's moving address, a replication network) is left
    /// alone. Seen streaming from the primary, it may be asked again later; and the promotion
    /// medic remembers (`promoting`) is over for it.
    fn follow_primary(&mut self, service: &str, machine: &str, primary: &str, r: &CheckResult) {
        let Some(info) = &r.info else {
            return;
        };
        let key = (service.to_owned(), machine.to_owned());
        let Some(upstream) = info
            .master
            .as_ref()
            .filter(|_| info.role == medic_redis::Role::Replica)
            .and_then(|(host, _)| host.parse::<std::net::IpAddr>().ok())
            .map(|ip| ip.to_canonical())
        else {
            return;
        };
        let loaded = std::sync::Arc::clone(&self.loaded);
        let Some(s) = loaded.topology.service(service) else {
            return;
        };
        let of = |m: &str| self.saved.observed.address(m).map(|a| a.to_canonical());
        let primary_at = of(primary);
        let from_member = s
            .machines()
            .any(|m| m != primary && m != machine && of(m) == Some(upstream));
        if primary_at == Some(upstream) {
            self.following.remove(&key);
            if let Some(st) = self.saved.observed.services.get_mut(service)
                && st.promoting.as_deref() == Some(machine)
            {
                st.promoting = None;
            }
            return;
        }
        let primary_failing = self
            .saved
            .observed
            .services
            .get(service)
            .is_some_and(|st| st.down.contains(primary));
        if !from_member || primary_failing {
            return;
        }
        let claim = super::recovery::service_claim(service);
        let busy = self
            .running
            .values()
            .any(|run| run.claims.shards.contains(&claim));
        if busy || self.following.contains(&key) {
            return;
        }
        let asked = self.request(Request {
            event: Event::ServiceFollow {
                service: service.to_owned(),
                machine: machine.to_owned(),
            },
            trigger: format!(
                "{} streams from {upstream}, another machine of the service than {primary}, the primary",
                r.target
            ),
            first_failure_ms: None,
            master_last_ok_ms: None,
            queued_ms: r.at_ms,
            detected: false,
            resume: None,
        });
        if asked {
            self.following.insert(key);
        }
    }

    /// `true` if the result was acted on and is not to be judged further.
    pub(super) fn service_seen(
        &mut self,
        service: &str,
        machine: &str,
        r: &CheckResult,
        verdict: Option<Verdict>,
        out: &mut Vec<Output>,
    ) -> bool {
        let loaded = std::sync::Arc::clone(&self.loaded);
        let Some(s) = loaded.topology.service(service) else {
            return false;
        };
        let cadence = s.check.value.cadence();
        let (automatic, hold) = (
            s.failback == Failback::Automatic,
            s.failback_after.as_millis() as u64,
        );
        let nominal = s.primary.value == machine;
        // Usable: up, and passing for the time `rise` checks take (a detector started afresh,
        // after the machine was watched again, is up at once: that is not enough).
        let h = self.health.get(&*r.target);
        let up = h.is_some_and(|h| h.detector.health == Health::Up);
        let ok_since = h.and_then(|h| h.ok_since_ms);
        let rise_ms =
            cadence.interval.as_millis() as u64 * u64::from(cadence.rise.saturating_sub(1));
        let ready = up && ok_since.is_some_and(|t| r.at_ms.saturating_sub(t) >= rise_ms);
        let Some(st) = self.saved.observed.services.get_mut(service) else {
            return false;
        };
        // The position as last seen, for the choice of a standby (its change alone asks for
        // no save: it changes with every write; positions are forgotten at a start or on
        // adopting a leader's state, and seen again within a check).
        if let Some(info) = &r.info {
            match st.positions.get_mut(machine) {
                Some(p) => *p = info.offset,
                None => {
                    st.positions.insert(machine.to_owned(), info.offset);
                }
            }
        }
        // Writable beside the primary at its last answer (a promotion medic did not see
        // finish, or a second primary); only an answer in recovery ends it — a check it did
        // not answer says nothing of its role, and a promoted server that misses one check
        // must not let another be promoted beside it.
        let flipped = match r.info.as_ref().map(|i| i.role) {
            Some(medic_redis::Role::Master) if machine != st.primary => {
                st.writable.insert(machine.to_owned())
            }
            Some(_) => st.writable.remove(machine),
            None => false,
        };
        if flipped {
            out.push(Output::Save);
        }
        let primary = st.primary.clone();
        let changed = if ready {
            st.down.remove(machine)
        } else if st.down.contains(machine) {
            false
        } else {
            st.down.insert(machine.to_owned())
        };
        let rejoins = st.out.contains(machine);
        // A database that takes writes once promoted is failed back to only once it has
        // caught up with the primary (by the positions last seen): a switchover to one further
        // behind than the policy allows is refused, and one not yet seen is not tried.
        let max_lag = loaded.topology.policy.max_promotion_lag_bytes.value;
        let behind = if s.standbys_read_only || !s.has_postgres_check() {
            Some(0)
        } else {
            match (st.positions.get(&primary), st.positions.get(machine)) {
                (Some(p), Some(m)) => Some(p.saturating_sub(*m)),
                _ => None,
            }
        };
        let caught_up = behind.is_some_and(|b| b <= max_lag);
        let primary_down = st.down.contains(&primary);
        // (A standby medic promoted in a recovery that failed there, writable now, is the
        // one to record: it fails its checks, being writable beside the primary.)
        let standby_usable = s
            .machines()
            .any(|m| m != machine && !st.out.contains(m) && !st.down.contains(m))
            || (!s.standbys_read_only && st.promoted_unrecorded(machine));
        if changed {
            out.push(Output::Save);
        }
        if rejoins {
            // Out already: its silence changes nothing. Answering at all — even failing its
            // check — it is demoted at once (its address taken, its `on_demote` run: it may
            // have come back believing it is the primary), once; passing `rise` checks, it
            // rejoins as a standby.
            let key = (service.to_owned(), machine.to_owned());
            if r.observation == Observation::Silent {
                self.disarmed.remove(&key);
                return true;
            }
            // (An active_active machine taken out is off the proxies already: only its
            // passing again matters.)
            let first = !ready && !s.active_active() && !self.disarmed.contains(&key);
            if ready || first {
                let asked = self.request(Request {
                    event: Event::ServiceRejoin {
                        service: service.to_owned(),
                        machine: machine.to_owned(),
                    },
                    trigger: if ready {
                        format!("{} passes its checks again", r.target)
                    } else {
                        format!("{} answers again ({}): demoted first", r.target, r.detail)
                    },
                    first_failure_ms: None,
                    master_last_ok_ms: None,
                    queued_ms: r.at_ms,
                    detected: false,
                    resume: None,
                });
                if asked && first {
                    self.disarmed.insert(key);
                }
            }
            return true;
        }
        if !self.disarmed.is_empty() {
            self.disarmed
                .retain(|(s, m)| !(s == service && m == machine));
        }
        if s.active_active() {
            self.active_seen(s, machine, r, verdict, out);
            return verdict == Some(Verdict::Failing);
        }
        if !s.standbys_read_only && s.has_postgres_check() && primary != machine {
            self.follow_primary(service, machine, &primary, r);
        }
        if verdict == Some(Verdict::Failing) {
            let first_fail = self.health.get(&*r.target).and_then(|h| h.first_fail_ms);
            if primary == machine && !standby_usable {
                // Nothing to fail over to: told once, watched on; failed over as soon as a
                // standby passes its checks (below), without a recovery meanwhile.
                if self.warned.insert(Target::clone(&r.target)) {
                    out.push(Output::Alert {
                        level: AlertLevel::Critical,
                        message: format!(
                            "{}, the primary, fails its checks ({}) and no standby passes its checks: nothing to fail over to yet; medic fails over as soon as one does",
                            r.target, r.detail
                        ),
                    });
                }
            } else if primary == machine {
                detected(out, &r.target, &r.detail, first_fail, r.at_ms);
                self.service_down(
                    service,
                    machine,
                    &r.target.to_string(),
                    &r.detail,
                    first_fail,
                    r.at_ms,
                );
            } else if !self.miscast.contains(&*r.target)
                && self.warned.insert(Target::clone(&r.target))
            {
                // (Not again for a role already told: that alert says more.)
                out.push(Output::Alert {
                    level: AlertLevel::Warning,
                    message: format!(
                        "{}, not the primary, fails its checks: {}; the service cannot fail over to it meanwhile",
                        r.target, r.detail
                    ),
                });
            }
            return true;
        }
        // A standby just became usable while the primary fails its checks (a failover that
        // found no standby): now it can.
        if changed && ready && primary != machine && primary_down {
            let t = Target::Service {
                service: service.to_owned(),
                machine: primary.clone(),
            };
            // Still answering badly now: not silent, and not passing again (a primary whose
            // detector has yet to see `rise` answers is healthy, not failing).
            let failing = self.health.get(&t).filter(|h| {
                matches!(h.detector.health, Health::Down { .. })
                    && matches!(h.last, Observation::Unhealthy | Observation::Refused)
            });
            if let Some(h) = failing {
                let (detail, first_fail) = (h.detail.clone(), h.first_fail_ms);
                let why = format!("{machine} passes its checks now");
                self.service_down(
                    service,
                    &primary,
                    &t.to_string(),
                    &format!("{detail} ({why})"),
                    first_fail,
                    r.at_ms,
                );
            }
        }
        // Automatic failback: the nominal primary, rejoined, healthy for `failback_after`.
        if automatic
            && !self.failback_stopped.contains(service)
            && nominal
            && primary != machine
            && up
            && ok_since.is_some_and(|t| r.at_ms.saturating_sub(t) >= hold)
        {
            if !caught_up {
                // Told once (a standby whose replication is broken never catches up).
                if let Some(b) = behind
                    && self.warned.insert(Target::clone(&r.target))
                {
                    out.push(Output::Alert {
                        level: AlertLevel::Warning,
                        message: format!(
                            "the automatic failback of service {service} to {machine} waits: its database is {b} bytes behind {primary}'s (policy.max_promotion_lag_bytes is {max_lag}); look at its replication if this lasts"
                        ),
                    });
                }
                return false;
            }
            self.warned.remove(&*r.target);
            let asked = self.request(Request {
                event: Event::Switchover {
                    shard: service.to_owned(),
                    to: Some(machine.to_owned()),
                },
                trigger: format!(
                    "failback: {} has passed its checks for {}",
                    r.target, s.failback_after
                ),
                first_failure_ms: None,
                master_last_ok_ms: None,
                queued_ms: r.at_ms,
                detected: false,
                resume: None,
            });
            // The next attempt, if this one fails, only after another `failback_after` of
            // good checks: never a switchover per check.
            if let Some(h) = self.health.get_mut(&*r.target) {
                h.ok_since_ms = Some(r.at_ms);
            }
            return asked;
        }
        false
    }

    /// A check of `machine`, in an `active_active` service and not out of it: failing, it is
    /// taken out (unless it is the last serving: told once, kept); passing, a machine of the
    /// service kept in as the last one while failing can be taken out now (asked once).
    fn active_seen(
        &mut self,
        s: &medic_topology::Service,
        machine: &str,
        r: &CheckResult,
        verdict: Option<Verdict>,
        out: &mut Vec<Output>,
    ) {
        let service = s.name.value.as_str();
        let Some(st) = self.saved.observed.services.get(service) else {
            return;
        };
        // Serving: in the proxies, and not judged failing (a machine that missed a check or
        // two still serves; one not checked yet since the start is not counted on).
        let serving = |m: &str| {
            !st.out.contains(m)
                && self
                    .health
                    .get(&Target::Service {
                        service: service.to_owned(),
                        machine: m.to_owned(),
                    })
                    .is_some_and(|h| !matches!(h.detector.health, Health::Down { .. }))
        };
        if verdict == Some(Verdict::Failing) {
            let first_fail = self.health.get(&*r.target).and_then(|h| h.first_fail_ms);
            if s.machines().any(|m| m != machine && serving(m)) {
                detected(out, &r.target, &r.detail, first_fail, r.at_ms);
                self.service_down(
                    service,
                    machine,
                    &r.target.to_string(),
                    &r.detail,
                    first_fail,
                    r.at_ms,
                );
            } else if self.warned.insert(Target::clone(&r.target)) {
                out.push(Output::Alert {
                    level: AlertLevel::Critical,
                    message: format!(
                        "{} fails its checks ({}), but no other machine of service {service} serves: it is kept in the proxies, as the last one; it is taken out as soon as another passes its checks",
                        r.target, r.detail
                    ),
                });
            }
            return;
        }
        if !serving(machine) || r.observation != Observation::Ok {
            return;
        }
        // A machine still in the proxies though judged failing — kept as the last one (by
        // the core, or by a plan) — is taken out now that this one serves. (Asked again at
        // each good check only while none is queued or running for it: the request is keyed
        // by machine; one in maintenance or out of monitoring is left alone.)
        let paused = self.paused();
        let kept: Vec<(String, String, Option<u64>)> = s
            .machines()
            .filter(|m| *m != machine && !st.out.contains(*m) && !paused.contains(*m))
            .filter(|m| !self.is_busy(m))
            .filter_map(|m| {
                let t = Target::Service {
                    service: service.to_owned(),
                    machine: m.to_owned(),
                };
                self.health
                    .get(&t)
                    .filter(|h| matches!(h.detector.health, Health::Down { .. }))
                    .map(|h| (m.to_owned(), h.detail.to_string(), h.first_fail_ms))
            })
            .collect();
        for (m, detail, first_fail) in kept {
            let t = Target::Service {
                service: service.to_owned(),
                machine: m.clone(),
            };
            self.warned.remove(&t);
            self.service_down(
                service,
                &m,
                &t.to_string(),
                &format!("{detail} ({machine} passes its checks now)"),
                first_fail,
                r.at_ms,
            );
        }
    }

    fn service_down(
        &mut self,
        service: &str,
        machine: &str,
        target: &str,
        detail: &str,
        first_fail: Option<u64>,
        now_ms: u64,
    ) {
        self.request(Request {
            event: Event::ServiceDown {
                service: service.to_owned(),
                machine: machine.to_owned(),
            },
            trigger: format!("{target}: {detail}"),
            first_failure_ms: first_fail,
            master_last_ok_ms: None,
            queued_ms: now_ms,
            detected: true,
            resume: None,
        });
    }
}
