//! Crash loops: beyond `policy.max_recoveries_per_hour` automatic recoveries in an hour, no
//! more start. A machine lost again and again is held whole (out of monitoring until `medic
//! recover`); a redis process that keeps dying (or coming back as a stale master) is held as
//! its server alone, so the rest of its machine — other shards' masters — stays watched and is
//! still failed over if the machine is lost.

use medic_plan::{AlertLevel, Event};

use super::{Claims, Core, Output, Request};
use crate::checks::Target;

impl Core {
    /// Whether `req` is held as a crash loop (told, and what it concerns taken out of
    /// monitoring); if not, it is counted. An operator's and a resumed request are never held.
    pub(super) fn crash_loop_held(
        &mut self,
        req: &Request,
        claims: &Claims,
        now_ms: u64,
        out: &mut Vec<Output>,
    ) -> bool {
        // A crash loop: beyond `policy.max_recoveries_per_hour` automatic recoveries of one
        // machine, no more start (an operator's and a resumed one always do). A process that
        // keeps dying (or coming back as a stale master) is counted and held as its server
        // alone: the rest of its machine, other shards' masters among them, stays watched.
        let looping = match &req.event {
            Event::ProcessDied { shard, machine } | Event::StaleMaster { shard, machine } => {
                Some((
                    format!("{shard}@{machine}"),
                    machine.clone(),
                    Some(shard.clone()),
                ))
            }
            _ => claims
                .machines
                .first()
                .filter(|_| claims.machines.len() == 1)
                .map(|m| (m.clone(), m.clone(), None)),
        };
        if req.detected
            && let Some((what, machine, shard)) = looping
        {
            let hour_ago = now_ms.saturating_sub(3_600_000);
            let max = self.loaded.topology.policy.max_recoveries_per_hour.value;
            self.saved
                .recoveries
                .retain(|(_, at)| *at > now_ms.saturating_sub(2 * 3_600_000));
            let recent = self
                .saved
                .recoveries
                .iter()
                .filter(|(m, at)| *m == what && *at > hour_ago)
                .count();
            // A sick machine whose servers die in turn is held too: its process events
            // together count against the same limit (each held as its own server; a loss of
            // the machine itself is counted apart, so it is still failed over).
            let of_machine = format!("@{machine}");
            let recent = if shard.is_some() {
                recent.max(
                    self.saved
                        .recoveries
                        .iter()
                        .filter(|(m, at)| m.ends_with(&of_machine) && *at > hour_ago)
                        .count(),
                )
            } else {
                recent
            };
            if recent >= max as usize {
                let (stays, then) = match shard {
                    Some(shard) => {
                        // Its last health goes with it (a stale `up` would make a lost machine
                        // look like a hung process beside an answering server).
                        self.health.remove(&Target::Redis {
                            shard: shard.clone(),
                            machine: machine.clone(),
                        });
                        self.saved
                            .unmonitored_servers
                            .insert((shard, machine.clone()));
                        (
                            format!(
                                "{what} stays out of monitoring (the rest of {machine} is watched)"
                            ),
                            format!(
                                "`medic monitor {machine}` watches it again (and starts the count afresh)"
                            ),
                        )
                    }
                    None => {
                        self.saved.unmonitored.insert(machine.clone());
                        (
                            format!("{machine} stays out of monitoring"),
                            format!("`medic recover {machine}` when you decide"),
                        )
                    }
                };
                out.push(Output::Alert {
                    level: AlertLevel::Critical,
                    message: format!("recoveries of {what} held: {recent} started in the last hour (policy.max_recoveries_per_hour is {max}) and it fails again ({}): something keeps breaking it. {stays}; {then}", req.event),
                });
                out.push(Output::Save);
                return true;
            }
            self.saved.recoveries.push((what, now_ms));
        }
        false
    }
}
