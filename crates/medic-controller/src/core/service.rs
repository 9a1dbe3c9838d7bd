//! A service check's result, past its detector: which machines of the service fail their
//! checks (a standby that does is never promoted), a primary's failover after `fall` bad
//! answers, and the rejoining of a machine the service was failed away from.
//!
//! Silence is not handled here: it goes to the machine's observers like any other
//! (`detect.rs`), and a machine they confirm lost is failed over by the planner.

use medic_detect::{Health, Observation, Verdict};
use medic_plan::{AlertLevel, Event};

use super::detect::detected;
use super::{Core, Output, Request};
use crate::checks::{CheckResult, Target};

impl Core {
    /// `true` if the result was acted on and is not to be judged further.
    pub(super) fn service_seen(
        &mut self,
        service: &str,
        machine: &str,
        r: &CheckResult,
        verdict: Option<Verdict>,
        out: &mut Vec<Output>,
    ) -> bool {
        // Down or up as the detector sees it now (a detector started afresh, after the
        // machine was watched again, gives no `Recovered`: its state is what counts).
        let health = self.health.get(&*r.target).map(|h| h.detector.health);
        let up = health == Some(Health::Up);
        let Some(st) = self.saved.observed.services.get_mut(service) else {
            return false;
        };
        let primary = st.primary == machine;
        let changed = match health {
            Some(Health::Down { .. }) => st.down.insert(machine.to_owned()),
            Some(Health::Up) => st.down.remove(machine),
            _ => false,
        };
        if changed {
            out.push(Output::Save);
        }
        let rejoins = st.out.contains(machine);
        if verdict == Some(Verdict::Failing) {
            let first_fail = self.health.get(&*r.target).and_then(|h| h.first_fail_ms);
            if primary {
                detected(out, &r.target, &r.detail, first_fail, r.at_ms);
                self.request(Request {
                    event: Event::ServiceDown {
                        service: service.to_owned(),
                        machine: machine.to_owned(),
                    },
                    trigger: format!("{}: {}", r.target, r.detail),
                    first_failure_ms: first_fail,
                    master_last_ok_ms: None,
                    queued_ms: r.at_ms,
                    detected: true,
                    resume: None,
                });
            } else if self.warned.insert(Target::clone(&r.target)) {
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
        // A machine failed away from that passes its checks again rejoins (its `on_demote`
        // hook first): until then it is not a standby.
        if rejoins && up && r.observation == Observation::Ok {
            self.request(Request {
                event: Event::ServiceRejoin {
                    service: service.to_owned(),
                    machine: machine.to_owned(),
                },
                trigger: format!("{} passes its checks again", r.target),
                first_failure_ms: None,
                master_last_ok_ms: None,
                queued_ms: r.at_ms,
                detected: false,
                resume: None,
            });
            return true;
        }
        false
    }
}
