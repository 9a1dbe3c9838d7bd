//! Crash loops: beyond `policy.max_recoveries_per_hour` automatic recoveries in an hour, no
//! more start. A machine lost again and again is held whole (out of monitoring until `medic
//! recover`). A redis process that keeps dying is not restarted any more, but its recovery
//! still runs without the restart: a dead master is still failed over, and the server alone is
//! left out of monitoring, so the rest of its machine — other shards' masters — stays watched.
//! A stale master is never held: fencing it is what keeps two masters from taking writes.

use medic_plan::{AlertLevel, Event};

use super::{Claims, Core, Output, Request};

/// What the crash-loop limit makes of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Held {
    /// It runs as planned (and is counted).
    No,
    /// Nothing starts: the machine stays out of monitoring.
    Whole,
    /// It runs without restarting the process (why, for the plan's alert).
    RestartOnly(String),
}

impl Core {
    /// What the crash-loop limit makes of `req` (told when held); a request that runs whole
    /// is counted. An operator's and a resumed request are never held.
    pub(super) fn crash_loop_held(
        &mut self,
        req: &Request,
        claims: &Claims,
        now_ms: u64,
        out: &mut Vec<Output>,
    ) -> Held {
        // What is counted: a process death as its server (and, with the machine's other
        // process deaths, as its machine); a machine's loss as the machine; a stale master
        // not at all (it is always fenced), nor a replica re-pointed at its master.
        let looping = match &req.event {
            Event::StaleMaster { .. } | Event::FollowMaster { .. } => None,
            Event::ProcessDied { shard, machine } => Some((
                format!("{shard}@{machine}"),
                machine.clone(),
                Some(shard.clone()),
            )),
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
                let told = format!(
                    "recoveries of {what} held: {recent} started in the last hour (policy.max_recoveries_per_hour is {max}) and it fails again ({}): something keeps breaking it",
                    req.event
                );
                if shard.is_some() {
                    out.push(Output::Alert {
                        level: AlertLevel::Critical,
                        message: format!("{told}. It is not restarted; a master is still failed over, and {what} stays out of monitoring (the rest of {machine} is watched); `medic monitor {machine}` watches it again (and starts the count afresh)"),
                    });
                    return Held::RestartOnly(format!(
                        "its crash loop is held (policy.max_recoveries_per_hour is {max})"
                    ));
                }
                self.saved.unmonitored.insert(machine.clone());
                out.push(Output::Alert {
                    level: AlertLevel::Critical,
                    message: format!("{told}. {machine} stays out of monitoring; `medic recover {machine}` when you decide"),
                });
                out.push(Output::Save);
                return Held::Whole;
            }
            self.saved.recoveries.push((what, now_ms));
        }
        Held::No
    }
}
