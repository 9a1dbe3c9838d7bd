//! Failure detection, as pure functions: what the controller concludes from check results.
//!
//! Per target, [`Detector`] keeps up / suspect / down with the topology's `fall` and `rise`:
//! - a **refused** connection from a host that otherwise answers is certain — the process is
//!   gone — and marks the target down at once;
//! - **silence** (a timeout) needs `fall` misses in a row, and then still only makes the target
//!   *silent*: before failing a machine over, [`judge_silence`] asks the independent observers
//!   the topology configures for it (each HAProxy, the redis peers, the app proxies). Failing
//!   over needs a majority of them to say it is gone and none to see it; an observer that
//!   cannot be asked counts against. If they still see it, the monitor host is the one cut
//!   off: medic must not fail over, it must alert.
//!
//! # Guarantees (each is a test)
//! - One refusal is enough; one timeout is never enough.
//! - A target marked down needs `rise` successes in a row to be up again.
//! - Silence with any witness still seeing the target is never a failover.
//! - Silence confirmed by no majority of the configured witnesses is never a failover, and a
//!   machine with no configured witness is never failed over on silence.

use serde::Serialize;

/// One check's result, as the probe classified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Observation {
    /// It answered as expected.
    Ok,
    /// Connection refused: the host is there, the process is not.
    Refused,
    /// No answer within the timeout.
    Silent,
    /// It answered with an error (LOADING, MASTERDOWN...) or in the wrong role.
    Unhealthy,
}

/// What the detector believes of a target now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Health {
    Up,
    /// Missed checks, not yet `fall` of them.
    Suspect {
        misses: u32,
    },
    /// Down: `certain` when a refusal said so, else `fall` misses of silence or bad answers.
    Down {
        certain: bool,
        successes: u32,
    },
}

/// A change worth acting on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The process is gone from a live host: act now.
    Dead,
    /// `fall` checks failed without a refusal: ask the witnesses before acting.
    Silent,
    /// It answered badly `fall` times: it is there but unusable.
    Failing,
    /// Down before, `rise` good checks since.
    Recovered,
}

/// up / suspect / down for one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detector {
    pub fall: u32,
    pub rise: u32,
    pub health: Health,
}

impl Detector {
    pub fn new(fall: u32, rise: u32) -> Self {
        Detector {
            fall: fall.max(1),
            rise: rise.max(1),
            health: Health::Up,
        }
    }

    /// Takes one check's result; returns a verdict when the health changes in a way that
    /// matters.
    pub fn observe(&mut self, o: Observation) -> Option<Verdict> {
        let (next, verdict) = match (self.health, o) {
            (Health::Down { certain, successes }, Observation::Ok) => {
                if successes + 1 >= self.rise {
                    (Health::Up, Some(Verdict::Recovered))
                } else {
                    (
                        Health::Down {
                            certain,
                            successes: successes + 1,
                        },
                        None,
                    )
                }
            }
            // Silent, and now refused: the host is back and the process is not.
            (Health::Down { certain, .. }, Observation::Refused) => (
                Health::Down {
                    certain: true,
                    successes: 0,
                },
                (!certain).then_some(Verdict::Dead),
            ),
            (Health::Down { certain, .. }, _) => (
                Health::Down {
                    certain,
                    successes: 0,
                },
                None,
            ),
            (_, Observation::Ok) => (Health::Up, None),
            (_, Observation::Refused) => (
                Health::Down {
                    certain: true,
                    successes: 0,
                },
                Some(Verdict::Dead),
            ),
            (h, bad) => {
                let misses = match h {
                    Health::Suspect { misses } => misses + 1,
                    _ => 1,
                };
                if misses >= self.fall {
                    let verdict = if bad == Observation::Silent {
                        Verdict::Silent
                    } else {
                        Verdict::Failing
                    };
                    (
                        Health::Down {
                            certain: false,
                            successes: 0,
                        },
                        Some(verdict),
                    )
                } else {
                    (Health::Suspect { misses }, None)
                }
            }
        };
        self.health = next;
        verdict
    }
}

/// What one observer says of a silent machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Seen {
    /// It reaches the machine: a server there answered it.
    Up,
    /// It does not reach the machine either.
    Gone,
    /// It could not be asked (cut off from the monitor host too, no session, no answer in
    /// time): its view is unknown, and it counts against failing over.
    Unknown,
}

/// What the independent observers of a silent machine say: one answer per **configured**
/// observer (each proxy, each redis peer, each app proxy that the topology says can see the
/// machine), whether or not it could be asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Witnesses {
    /// (observer, what it says), one per configured observer.
    pub answers: Vec<(String, Seen)>,
}

impl Witnesses {
    /// How many observers say `seen`.
    pub fn count(&self, seen: Seen) -> usize {
        self.answers.iter().filter(|(_, s)| *s == seen).count()
    }
}

/// What to do about silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// A majority of the configured observers say it is gone, and none sees it: fail over.
    FailOver,
    /// Observers still see it and none says it is gone: the monitor host is the one cut off.
    /// Alert, do nothing.
    MonitorCutOff,
    /// The observers disagree: wait for the next checks.
    Wait,
    /// No observer sees it, but those who say it is gone are no majority of the configured
    /// ones (the rest could not be asked, or there are none): the monitor host may be on the
    /// minority side of a partition. Alert, never fail over on it.
    Unconfirmed,
}

/// Decides whether silence may be acted on: **a majority of the configured observers** must
/// say the machine is gone, and none may see it. An observer that could not be asked counts
/// against failing over, so a monitor host cut off together with a few observers can never
/// outvote the rest; a machine with no configured observer is never failed over on silence.
pub fn judge_silence(w: &Witnesses) -> Decision {
    let configured = w.answers.len();
    let up = w.count(Seen::Up);
    let gone = w.count(Seen::Gone);
    match (up, gone) {
        (0, g) if configured > 0 && 2 * g > configured => Decision::FailOver,
        (0, _) => Decision::Unconfirmed,
        (_, 0) => Decision::MonitorCutOff,
        _ => Decision::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Observation::*;

    /// name, fall, rise, checks in order, the verdict expected after each.
    type Row = (
        &'static str,
        u32,
        u32,
        Vec<Observation>,
        Vec<Option<Verdict>>,
    );

    /// A row: checks in order, and the verdicts expected after each.
    fn run(fall: u32, rise: u32, seq: &[Observation]) -> Vec<Option<Verdict>> {
        let mut d = Detector::new(fall, rise);
        seq.iter().map(|o| d.observe(*o)).collect()
    }

    #[test]
    fn table() {
        let rows: Vec<Row> = vec![
            (
                "one refusal is certain",
                3,
                2,
                vec![Refused],
                vec![Some(Verdict::Dead)],
            ),
            (
                "one timeout is not enough",
                3,
                2,
                vec![Silent, Ok],
                vec![None, None],
            ),
            (
                "fall timeouts make silence",
                3,
                2,
                vec![Silent, Silent, Silent],
                vec![None, None, Some(Verdict::Silent)],
            ),
            (
                "a success resets the misses",
                3,
                2,
                vec![Silent, Silent, Ok, Silent, Silent],
                vec![None; 5],
            ),
            (
                "bad answers are failing, not silent",
                2,
                2,
                vec![Unhealthy, Unhealthy],
                vec![None, Some(Verdict::Failing)],
            ),
            (
                // (The host came back without the process: found by the simulator, where a
                // process killed during a partition was never restarted.)
                "silence then refusal: the process is dead, once",
                2,
                1,
                vec![Silent, Silent, Refused, Refused],
                vec![None, Some(Verdict::Silent), Some(Verdict::Dead), None],
            ),
            (
                "rise successes in a row to recover",
                1,
                3,
                vec![Refused, Ok, Ok, Silent, Ok, Ok, Ok],
                vec![
                    Some(Verdict::Dead),
                    None,
                    None,
                    None,
                    None,
                    None,
                    Some(Verdict::Recovered),
                ],
            ),
            (
                "fall 1 acts on the first timeout",
                1,
                1,
                vec![Silent],
                vec![Some(Verdict::Silent)],
            ),
        ];
        for (name, fall, rise, seq, want) in rows {
            assert_eq!(run(fall, rise, &seq), want, "{name}");
        }
    }

    #[test]
    fn down_remembers_whether_it_was_certain() {
        let mut d = Detector::new(2, 2);
        d.observe(Silent);
        d.observe(Silent);
        assert_eq!(
            d.health,
            Health::Down {
                certain: false,
                successes: 0
            }
        );
        d.observe(Refused);
        assert_eq!(
            d.health,
            Health::Down {
                certain: true,
                successes: 0
            }
        );
    }

    #[test]
    fn silence_is_judged_by_a_majority_of_the_configured_witnesses() {
        use Seen::{Gone, Unknown, Up};
        let w = |answers: &[Seen]| Witnesses {
            answers: answers
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("o{i}"), *s))
                .collect(),
        };
        let rows = [
            (w(&[Gone, Gone, Gone]), Decision::FailOver),
            (w(&[Gone, Gone, Unknown]), Decision::FailOver),
            (w(&[Gone]), Decision::FailOver),
            (w(&[Up, Up, Up]), Decision::MonitorCutOff),
            (w(&[Up, Unknown, Unknown]), Decision::MonitorCutOff),
            (w(&[Up, Gone, Gone]), Decision::Wait),
            (w(&[Gone, Gone, Up]), Decision::Wait),
            // The monitor host and the replica cut off from the master and the proxies: the
            // replica's "link down" is one of three, no majority.
            (w(&[Unknown, Unknown, Gone]), Decision::Unconfirmed),
            (w(&[Gone, Unknown]), Decision::Unconfirmed),
            (w(&[Unknown]), Decision::Unconfirmed),
            // No observer at all (an app proxy nobody else can see): never on silence alone.
            (w(&[]), Decision::Unconfirmed),
        ];
        for (witnesses, want) in rows {
            assert_eq!(judge_silence(&witnesses), want, "{witnesses:?}");
        }
    }
}
