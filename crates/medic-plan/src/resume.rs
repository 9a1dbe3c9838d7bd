//! What a resumed recovery must do again, although its journal says it was done.
//!
//! Every step is idempotent, so resuming from the first step not done is enough — except for
//! a step whose effect **expires**. A switchover holds the old master's writes with a bounded
//! `CLIENT PAUSE` (so that a controller that dies cannot leave them held forever); a controller
//! that dies after the pause and comes back later finds it lifted: writes went on, and the
//! replica's earlier catch-up no longer says it has them all. Fencing and promoting then would
//! discard the writes acknowledged since. So the pause is taken again, and — while the
//! promotion has not happened yet — the wait for the replica to catch up too. A service's
//! fence expires the same way: the old primary may have been restarted as one since.

use std::collections::BTreeSet;

use crate::{Action, Plan};

impl Plan {
    /// The indices of done steps to run again when this plan is resumed with `done` finished:
    /// a pause of writes whose unpause is not done, and the sync waits between that pause and
    /// a promotion not done yet; a service's `on_fenced` (or a switchover's `on_demote`) hook
    /// and the taking down of its address, while its new primary is not recorded yet.
    pub fn redo_on_resume(&self, done: &BTreeSet<usize>) -> BTreeSet<usize> {
        let mut redo = BTreeSet::new();
        for (i, step) in self.steps.iter().enumerate() {
            let Action::PauseWrites { server, .. } = &step.action else {
                continue;
            };
            if !done.contains(&step.index) {
                continue;
            }
            let after = &self.steps[i + 1..];
            let unpaused = after.iter().any(|s| {
                done.contains(&s.index)
                    && matches!(&s.action, Action::Unpause { server: u } if u == server)
            });
            if unpaused {
                continue;
            }
            redo.insert(step.index);
            // The sync waits up to the promotion — unless the promotion is done: then the new
            // master must never wait on the old one again.
            let mut waits = Vec::new();
            let mut promoted = false;
            for s in after {
                match &s.action {
                    Action::PromoteReplica { .. } => {
                        promoted = done.contains(&s.index);
                        break;
                    }
                    Action::WaitInSync { .. } if done.contains(&s.index) => waits.push(s.index),
                    _ => {}
                }
            }
            if !promoted {
                redo.extend(waits);
            }
        }
        // A service's fence (or a switchover's demotion) done before the restart proves
        // nothing now: the old primary may have been restarted meanwhile. Until the new
        // primary is recorded it is done again, so the promotion follows a fresh one.
        for (i, step) in self.steps.iter().enumerate() {
            let service = match &step.action {
                Action::RunHook { service, hook, .. }
                    if matches!(hook.as_str(), "on_fenced" | "on_demote") =>
                {
                    service
                }
                // The address taken down (or skipped on a silent machine) may be back.
                Action::ServiceAddress {
                    service, up: false, ..
                } => service,
                _ => continue,
            };
            if !done.contains(&step.index) {
                continue;
            }
            let promoted = self.steps[i + 1..].iter().any(|s| {
                done.contains(&s.index)
                    && matches!(&s.action, Action::ServiceRole { service: sv, role: crate::ServiceRole::Primary, .. } if sv == service)
            });
            let promotes = self.steps[i + 1..].iter().any(|s| {
                matches!(&s.action, Action::ServiceRole { service: sv, role: crate::ServiceRole::Primary, .. } if sv == service)
            });
            if promotes && !promoted {
                redo.insert(step.index);
            }
        }
        redo
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Addr, Event, RedisServer, Step};

    fn server(machine: &str) -> RedisServer {
        RedisServer {
            shard: "r1".into(),
            machine: machine.into(),
            address: Addr::Of(machine.into()),
            port: 9001,
        }
    }

    /// pause(1), wait(2), promote(3), unpause(4), wait(5) — a switchover's shape.
    fn switchover() -> Plan {
        let actions = vec![
            Action::PauseWrites {
                server: server("a"),
                timeout_ms: 10_000,
            },
            Action::WaitInSync {
                server: server("b"),
                master: Addr::Of("a".into()),
                master_port: 9001,
                timeout_ms: 5_000,
            },
            Action::PromoteReplica {
                server: server("b"),
                offset: 0,
                lag_bytes: 0,
            },
            Action::Unpause {
                server: server("a"),
            },
            Action::WaitInSync {
                server: server("a"),
                master: Addr::Of("b".into()),
                master_port: 9001,
                timeout_ms: 5_000,
            },
        ];
        Plan {
            recovery: "r".into(),
            topology: "t".into(),
            event: Event::Switchover {
                shard: "r1".into(),
                to: None,
            },
            steps: actions
                .into_iter()
                .enumerate()
                .map(|(i, action)| Step {
                    index: i + 1,
                    action,
                })
                .collect(),
        }
    }

    #[test]
    fn a_lifted_pause_is_taken_again_with_its_sync_wait_until_the_promotion() {
        let p = switchover();
        let done = |d: &[usize]| d.iter().copied().collect::<BTreeSet<usize>>();
        let rows: [(&[usize], &[usize]); 6] = [
            (&[], &[]),
            // Died after the pause: the pause again (the wait was not done anyway).
            (&[1], &[1]),
            // Died after the wait: both again, the replica may be behind by now.
            (&[1, 2], &[1, 2]),
            // Died after the promotion: the pause again, never the old sync wait.
            (&[1, 2, 3], &[1]),
            // Unpaused: nothing expires any more.
            (&[1, 2, 3, 4], &[]),
            (&[1, 2, 3, 4, 5], &[]),
        ];
        for (d, want) in rows {
            assert_eq!(p.redo_on_resume(&done(d)), done(want), "done {d:?}");
        }
    }
}
