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
//!
//! A HAProxy runtime change is durable only once its haproxy.cfg write (a later step) is
//! done: a proxy reloaded or restarted meanwhile has forgotten it. So a runtime change whose
//! write is not done is made again, before the write.

use std::collections::BTreeSet;

use crate::{Action, Plan, ProxyApi, persisting};

impl Plan {
    /// The indices of done steps to run again when this plan is resumed with `done` finished:
    /// a pause of writes whose unpause is not done, and the sync waits between that pause and
    /// a promotion not done yet; a service's `on_fenced` (or a switchover's `on_demote`) hook
    /// and the taking down of its address, while its new primary is not recorded yet; a
    /// HAProxy runtime change whose haproxy.cfg write is not done (with a fence at the source
    /// after it, while the promotion is not done).
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
                // A server stopped may have been started again.
                Action::StopPostgres { service, .. } => service,
                _ => continue,
            };
            if !done.contains(&step.index) {
                continue;
            }
            // (A PostgreSQL promotion done counts as the record: it cannot be undone, and its
            // fence came before it.)
            let promoted = self.steps[i + 1..].iter().any(|s| {
                done.contains(&s.index)
                    && matches!(&s.action,
                        Action::ServiceRole { service: sv, role: crate::ServiceRole::Primary, .. }
                        | Action::PromotePostgres { service: sv, .. } if sv == service)
            });
            let promotes = self.steps[i + 1..].iter().any(|s| {
                matches!(&s.action, Action::ServiceRole { service: sv, role: crate::ServiceRole::Primary, .. } if sv == service)
            });
            if promotes && !promoted {
                redo.insert(step.index);
            }
        }
        // (A plan journaled before the writes were steps of their own has none: its changes
        // were written as they were made.)
        if self
            .steps
            .iter()
            .any(|s| matches!(s.action, Action::PersistProxyConfig { .. }))
        {
            let changes: BTreeSet<usize> = self
                .unpersisted_changes(done)
                .into_iter()
                .flat_map(|(_, changes)| changes.into_iter().map(|(index, _)| index))
                .collect();
            // A fence made again may be skipped now (its proxy gone quiet): the fence at the
            // source between it and the promotion is made again too, so that it covers it.
            for (i, step) in self.steps.iter().enumerate() {
                if !matches!(step.action, Action::FenceAtSource { .. })
                    || !done.contains(&step.index)
                    || !changes.iter().any(|c| *c < step.index)
                {
                    continue;
                }
                let promoted = self.steps[i + 1..]
                    .iter()
                    .find(|s| matches!(s.action, Action::PromoteReplica { .. }))
                    .is_some_and(|s| done.contains(&s.index));
                if !promoted {
                    redo.insert(step.index);
                }
            }
            redo.extend(changes);
        }
        redo
    }

    /// The HAProxy runtime changes in `done`, to make again when a recovery of a deployment
    /// medic adopted (`managed: false`) is resumed: nothing writes them into haproxy.cfg, so a
    /// proxy reloaded or restarted meanwhile may have forgotten every one of them.
    pub fn runtime_changes_done(&self, done: &BTreeSet<usize>) -> BTreeSet<usize> {
        self.unpersisted_changes(done)
            .into_iter()
            .flat_map(|(_, changes)| changes.into_iter().map(|(index, _)| index))
            .collect()
    }

    /// The haproxy.cfg writes owed for the runtime changes in `done` that no write in `done`
    /// covers: what a recovery that stopped before its writes still owes the proxies. Only the
    /// changes made are written, never those planned after them (a new master not yet
    /// promoted is never written in as ready).
    pub fn unpersisted(&self, done: &BTreeSet<usize>) -> Vec<Action> {
        persisting(
            self.unpersisted_changes(done)
                .iter()
                .flat_map(|(_, changes)| changes.iter().map(|(_, a)| *a)),
        )
    }

    /// By proxy (in the order first changed): the runtime changes done and not yet followed
    /// by a done haproxy.cfg write of that proxy.
    fn unpersisted_changes(
        &self,
        done: &BTreeSet<usize>,
    ) -> Vec<(ProxyApi, Vec<(usize, &Action)>)> {
        let mut owed: Vec<(ProxyApi, Vec<(usize, &Action)>)> = Vec::new();
        for step in self.steps.iter().filter(|s| done.contains(&s.index)) {
            match &step.action {
                Action::FenceServer { proxy, .. }
                | Action::ActivateServer { proxy, .. }
                | Action::SetServerAddress { proxy, .. } => {
                    match owed.iter_mut().find(|(p, _)| p == proxy) {
                        Some((_, changes)) => changes.push((step.index, &step.action)),
                        None => owed.push((proxy.clone(), vec![(step.index, &step.action)])),
                    }
                }
                Action::PersistProxyConfig { proxy, .. } => {
                    owed.retain(|(p, _)| p != proxy);
                }
                _ => {}
            }
        }
        owed
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

    /// A plan of `actions`, numbered from 1.
    fn plan_of(event: Event, actions: Vec<Action>) -> Plan {
        Plan {
            recovery: "r".into(),
            topology: "t".into(),
            event,
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
        plan_of(
            Event::Switchover {
                shard: "r1".into(),
                to: None,
            },
            actions,
        )
    }

    /// fence(1) on p1, fence(2) on p2, promote(3), activate(4) on p1, activate(5) on p2, the
    /// writes of p1 (6) and p2 (7), then a sync wait (8): a failover's shape.
    fn failover() -> Plan {
        let proxy = |m: &str| crate::ProxyApi {
            machine: m.into(),
            address: Addr::Of(m.into()),
            port: Some(9999),
        };
        let srv = |s: &str| crate::ServerRef {
            backend: "redis-r1".into(),
            server: s.into(),
        };
        let mut actions = Vec::new();
        for p in ["p1", "p2"] {
            actions.push(Action::FenceServer {
                proxy: proxy(p),
                server: srv("a"),
                wait_sessions: true,
            });
        }
        actions.push(Action::PromoteReplica {
            server: server("b"),
            offset: 0,
            lag_bytes: 0,
        });
        for p in ["p1", "p2"] {
            actions.push(Action::ActivateServer {
                proxy: proxy(p),
                server: srv("b"),
            });
        }
        let writes = crate::persisting(&actions);
        assert_eq!(writes.len(), 2);
        actions.extend(writes);
        actions.push(Action::WaitInSync {
            server: server("c"),
            master: Addr::Of("b".into()),
            master_port: 9001,
            timeout_ms: 5_000,
        });
        plan_of(
            Event::MachineLost {
                machine: "a".into(),
            },
            actions,
        )
    }

    #[test]
    fn runtime_changes_not_yet_written_are_made_again_and_only_those_made_are_owed() {
        let p = failover();
        let done = |d: &[usize]| d.iter().copied().collect::<BTreeSet<usize>>();
        let rows: [(&[usize], &[usize]); 5] = [
            (&[], &[]),
            (&[1, 2], &[1, 2]),
            (&[1, 2, 3, 4, 5], &[1, 2, 4, 5]),
            // p1 written: only p2's changes are made again.
            (&[1, 2, 3, 4, 5, 6], &[2, 5]),
            (&[1, 2, 3, 4, 5, 6, 7], &[]),
        ];
        for (d, want) in rows {
            assert_eq!(p.redo_on_resume(&done(d)), done(want), "done {d:?}");
        }
        // Stopped after the fences: what is owed writes the old master disabled, and never
        // the new one (not promoted) enabled.
        let owed = p.unpersisted(&done(&[1, 2]));
        assert_eq!(owed.len(), 2);
        for w in &owed {
            let Action::PersistProxyConfig { servers, .. } = w else {
                panic!("{w:?}");
            };
            let lines: Vec<String> = servers.iter().map(ToString::to_string).collect();
            assert_eq!(lines, ["redis-r1/a disabled"]);
        }
        assert!(p.unpersisted(&done(&[1, 2, 3, 4, 5, 6, 7])).is_empty());
        assert_eq!(p.unpersisted(&done(&[1, 2, 3, 4, 5, 6])).len(), 1);
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
