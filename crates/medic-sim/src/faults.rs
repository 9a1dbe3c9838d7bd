//! The faults a seed injects, and when.
//!
//! Each seed draws one to three faults at random times in the first 30 s: a machine crash, a
//! hang (that ends), a redis process killed, a partition between any two parties (one way or
//! both, healed later), a proxy's runtime API refusing (then answering again), the controller
//! killed and restarted — and possibly the controller killed right after a step ran, before
//! its outcome was journaled. In one seed in four, besides, a proxy lacks a replica's server
//! line for a while (a replica its configuration does not have yet), drawn apart from the
//! rest so that the other faults of every seed stay what they were. Two faults may overlap, and a fault may hit during a recovery.
//! A machine crashes at most once per seed: a second replacement within the hour is held by
//! the flap limits, by design, and would never converge without a human.

use std::collections::BTreeSet;

use crate::rng::Rng;
use crate::world::World;

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Crash(String),
    Hang(String),
    KillRedis {
        shard: String,
        machine: String,
    },
    /// `from` cannot reach `to` (and `to` cannot reach `from` if `both`).
    Cut {
        from: String,
        to: String,
        both: bool,
    },
    ApiDown(String),
    /// The controller process is killed and started again.
    Controller,
    /// `proxy` has no server line for `machine` in `shard`'s backend.
    LineLost {
        proxy: String,
        shard: String,
        machine: String,
    },
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Crash(m) => write!(f, "{m} crashes"),
            Fault::Hang(m) => write!(f, "{m} hangs"),
            Fault::KillRedis { shard, machine } => write!(f, "redis {shard}@{machine} killed"),
            Fault::Cut {
                from,
                to,
                both: true,
            } => write!(f, "{from} <-/-> {to}"),
            Fault::Cut {
                from,
                to,
                both: false,
            } => write!(f, "{from} -/-> {to}"),
            Fault::ApiDown(p) => write!(f, "{p}'s runtime API refuses"),
            Fault::Controller => write!(f, "the controller is killed and restarted"),
            Fault::LineLost {
                proxy,
                shard,
                machine,
            } => write!(
                f,
                "{proxy} has no server for {machine} in {shard}'s backend"
            ),
        }
    }
}

impl Fault {
    /// Makes it happen.
    pub fn start(&self, w: &mut World) {
        match self {
            Fault::Crash(m) => w.crash(m),
            Fault::Hang(m) => w.hang(m),
            Fault::KillRedis { shard, machine } => w.kill_redis(shard, machine),
            Fault::Cut { from, to, both } => {
                if *both {
                    w.cut_both(from, to)
                } else {
                    w.cut(from, to)
                }
            }
            Fault::ApiDown(p) => w.proxy_api_down(p, true),
            Fault::Controller => {}
            Fault::LineLost {
                proxy,
                shard,
                machine,
            } => w.lose_line(proxy, shard, machine),
        }
    }

    /// Ends it, for the faults that end.
    pub fn end(&self, w: &mut World) {
        match self {
            Fault::Hang(m) => w.unhang(m),
            Fault::Cut { .. } => w.heal_network(),
            Fault::ApiDown(p) => w.proxy_api_down(p, false),
            Fault::LineLost {
                proxy,
                shard,
                machine,
            } => w.restore_line(proxy, shard, machine),
            _ => {}
        }
    }
}

/// A fault, when it starts and (for those that end) when it ends.
#[derive(Debug, Clone)]
pub struct Planned {
    pub fault: Fault,
    pub at_ms: u64,
    pub heal_ms: Option<u64>,
}

/// The faults of one seed, and after which executed step (if any) the controller is killed
/// before journaling it.
pub fn draw(seed: u64, w: &World) -> (Vec<Planned>, Option<usize>) {
    let mut rng = Rng::new(seed);
    let machines = w.machines();
    let mut parties = machines.clone();
    parties.push(w.monitor.clone());
    let servers: Vec<(String, String)> = w
        .shards
        .iter()
        .flat_map(|(s, l)| l.machines.iter().map(move |m| (s.clone(), m.clone())))
        .collect();
    let proxies = w.proxies();
    let mut crashed = BTreeSet::new();
    let n = 1 + rng.below(3);
    let mut out = Vec::new();
    for _ in 0..n {
        let at_ms = 1_000 + rng.below(29_000) / 50 * 50;
        let heal_ms = Some(at_ms + 1_000 + rng.below(20_000) / 50 * 50);
        let pick = |rng: &mut Rng, from: &[String]| rng.pick(from).cloned().unwrap_or_default();
        let (fault, heal) = match rng.below(7) {
            0 => {
                let m = pick(&mut rng, &machines);
                if !crashed.insert(m.clone()) {
                    continue;
                }
                (Fault::Crash(m), None)
            }
            1 => (Fault::Hang(pick(&mut rng, &machines)), heal_ms),
            2 => {
                let Some((shard, machine)) = rng.pick(&servers).cloned() else {
                    continue;
                };
                (Fault::KillRedis { shard, machine }, None)
            }
            3 | 4 => {
                let from = pick(&mut rng, &parties);
                let to = pick(&mut rng, &parties);
                if from == to {
                    continue;
                }
                let both = rng.below(2) == 0;
                (Fault::Cut { from, to, both }, heal_ms)
            }
            5 => match rng.pick(&proxies) {
                Some(p) => (Fault::ApiDown(p.clone()), heal_ms),
                None => continue,
            },
            _ => (Fault::Controller, None),
        };
        out.push(Planned {
            fault,
            at_ms,
            heal_ms: heal,
        });
    }
    let crash_after_exec = (rng.below(4) == 0).then(|| 1 + rng.below(12) as usize);
    out.extend(line_lost(seed, w));
    (out, crash_after_exec)
}

/// In one seed in four: a proxy without the server line of one of a shard's replicas (as the
/// topology first lays it out), from a random time in the first 21 s for 5 to 35 s.
fn line_lost(seed: u64, w: &World) -> Option<Planned> {
    let mut rng = Rng::new(seed ^ 0x6c69_6e65_6c6f_7374);
    if rng.below(4) != 0 {
        return None;
    }
    let replicas: Vec<(String, String)> = w
        .shards
        .iter()
        .flat_map(|(s, l)| {
            l.machines
                .iter()
                .skip(1)
                .map(move |m| (s.clone(), m.clone()))
        })
        .collect();
    let (shard, machine) = rng.pick(&replicas).cloned()?;
    let proxy = rng.pick(&w.proxies()).cloned()?;
    let at_ms = 1_000 + rng.below(20_000) / 50 * 50;
    Some(Planned {
        fault: Fault::LineLost {
            proxy,
            shard,
            machine,
        },
        at_ms,
        heal_ms: Some(at_ms + 5_000 + rng.below(30_000) / 50 * 50),
    })
}
