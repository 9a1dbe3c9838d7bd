//! The witnesses of a silent machine: who the topology says can see it, and how their answers
//! add up (pure; the controller asks them, the simulator answers for them).
//!
//! # Who observes whom
//! - a **redis** machine: every proxy, and the other redis machines of its shards (its replicas
//!   or its master), each asked to PING a few of its servers (the silent one first);
//! - a **proxy** machine: the app proxies that use it (primary or backup), asked to reach its
//!   runtime API (`reach: network`) or, where the API listens on its loopback only (`reach:
//!   ssh`, the default), to connect to its first frontend;
//! - an **app proxy** machine: the proxies it uses, asked the same of it;
//! - a **service**'s machine: the service's other machines, asked to connect to its port (an
//!   `http` check: to send a request and get any reply line).
//!
//! Each observer is asked first-hand, over its SSH session; one that cannot be asked falls back
//! to its own view where it has one (a proxy's health check of a routed server, a replica's
//! link, a master's list of replicas), else it is `Unknown`. [`medic_detect::judge_silence`]
//! then needs a majority of these *configured* observers — so a monitor host cut off together
//! with a minority can never fail over, and a machine nobody else can see is never replaced on
//! the monitor host's word alone.

use std::net::{IpAddr, SocketAddr};

use medic_detect::{Seen, Witnesses};
use medic_plan::ObservedState;
use medic_topology::{Reach, Topology};

use crate::checks::Target;

/// How many of a silent machine's servers each witness probes.
pub const WITNESS_SHARDS: usize = 3;

/// What a witness is asked to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `PING` a redis server: any reply is an answer (a hung process gives none).
    Ping,
    /// A HAProxy's runtime API: `show info`.
    RuntimeApi,
    /// A TCP connection to a HAProxy frontend or a service: accepted is an answer, refused is
    /// none.
    Connect,
    /// An HTTP request to a service: any reply line is an answer (a hung server gives none).
    Http,
    /// A TCP connection within this long: the machine's kernel accepting or refusing it is an
    /// answer, whatever its processes do ([`crate::knock`]).
    Knock(std::time::Duration),
}

/// An observer's own, passive view of the silent machine, asked when it cannot probe first-hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Passive {
    /// A proxy's health check of `backend/server` through its runtime API: the proxy machine,
    /// its address and its API's port (as the topology gives it; none: its admin socket),
    /// the backend.
    Proxy(String, IpAddr, Option<u16>, String),
    /// A replica's link to its master (`INFO replication` of the replica).
    ReplicaLink(SocketAddr),
    /// The master's list of connected replicas: is `at` there and recent?
    MasterSees(SocketAddr, SocketAddr),
}

/// One question to one observer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub observer: String,
    pub probe: SocketAddr,
    pub how: Probe,
    pub passive: Option<Passive>,
}

/// How an observer probes a silent HAProxy at `silent_ip`: its runtime API where that is on
/// the network, else (`reach: ssh`, the API on its loopback) a connection to its first
/// frontend.
fn haproxy_probe(
    api: &medic_topology::RuntimeApi,
    first_frontend: Option<u16>,
    silent_ip: IpAddr,
) -> Option<(SocketAddr, Probe)> {
    match (api.reach, first_frontend, api.tcp_port()) {
        (Reach::Network, _, Some(port)) | (_, None, Some(port)) => {
            Some((SocketAddr::new(silent_ip, port), Probe::RuntimeApi))
        }
        (_, Some(port), _) => Some((SocketAddr::new(silent_ip, port), Probe::Connect)),
        // Neither a frontend nor an API on the network: nothing an observer can knock at.
        (_, None, None) => None,
    }
}

/// The configured observers of `target`'s machine and what each is asked (pure). An observer
/// may be asked several questions (one per shard probed); an empty list means no other machine
/// can see this one.
pub fn observers(
    top: &Topology,
    observed: &ObservedState,
    target: &Target,
    silent_ip: IpAddr,
) -> Vec<Ask> {
    let machine = target.machine();
    let mut asks: Vec<Ask> = Vec::new();
    match target {
        Target::Redis { shard: own, .. } => {
            let api_port = top.proxies.value.runtime_api.value.tcp_port();
            // The machine is asked about through a few of its servers (the silent one first),
            // not all: that tells a lost machine from a reachable one, and a machine with
            // hundreds of shards would otherwise cost hundreds of probes.
            let mut involved: Vec<_> = top
                .shards
                .iter()
                .map(|s| &s.value)
                .filter_map(|s| Some((s, observed.shards.get(&s.name.value)?)))
                .filter(|(_, o)| {
                    o.master == machine || o.replicas.iter().any(|r| r.machine == machine)
                })
                .collect();
            involved.sort_by_key(|(s, _)| s.name.value != *own);
            involved.truncate(WITNESS_SHARDS);
            for (s, shard) in involved {
                let port = s.port.value;
                let probe = SocketAddr::new(silent_ip, port);
                let is_master = shard.master == machine;
                for p in top.proxy_machines() {
                    asks.push(Ask {
                        observer: p.to_owned(),
                        probe,
                        how: Probe::Ping,
                        // A proxy's own check says something only of a server it routes to.
                        passive: is_master.then(|| observed.address(p)).flatten().map(|ip| {
                            Passive::Proxy(
                                p.to_owned(),
                                ip,
                                api_port,
                                medic_plan::vars::proxy_backend(top, &s.name.value),
                            )
                        }),
                    });
                }
                let peers = std::iter::once(shard.master.as_str())
                    .chain(shard.replicas.iter().map(|r| r.machine.as_str()))
                    .filter(|m| *m != machine);
                for peer in peers {
                    let at = observed.address(peer).map(|ip| SocketAddr::new(ip, port));
                    asks.push(Ask {
                        observer: peer.to_owned(),
                        probe,
                        how: Probe::Ping,
                        passive: match (is_master, peer == shard.master) {
                            (true, _) => at.map(Passive::ReplicaLink),
                            (false, true) => at.map(|at| Passive::MasterSees(at, probe)),
                            (false, false) => None,
                        },
                    });
                }
            }
        }
        Target::Proxy { .. } => {
            let px = &top.proxies.value;
            let Some((probe, how)) = haproxy_probe(
                &px.runtime_api.value,
                top.proxy_listens().first().copied(),
                silent_ip,
            ) else {
                return asks;
            };
            for a in top.app_proxies.iter().map(|a| &a.value) {
                if a.primary.value != machine && a.backup.value != machine {
                    continue;
                }
                asks.push(Ask {
                    observer: a.machine.value.clone(),
                    probe,
                    how,
                    passive: match (observed.address(&a.machine.value), a.frontends.first()) {
                        (Some(ip), Some(f)) => Some(Passive::Proxy(
                            a.machine.value.clone(),
                            ip,
                            a.runtime_api.value.tcp_port(),
                            medic_plan::vars::app_backend(
                                top,
                                &a.machine.value,
                                &f.value.shard.value,
                            ),
                        )),
                        _ => None,
                    },
                });
            }
        }
        Target::Service { service, .. } => {
            if let Some(s) = top.service(service) {
                let how = match s.check.value.kind {
                    medic_topology::CheckKind::Http => Probe::Http,
                    // Its observers have no TLS client: they connect.
                    medic_topology::CheckKind::Https
                    | medic_topology::CheckKind::Tcp
                    | medic_topology::CheckKind::Command
                    | medic_topology::CheckKind::Postgres => Probe::Connect,
                };
                // The service's other machines: they are where it moves to, and often on
                // another site than the monitor host.
                for other in s.machines().filter(|m| *m != machine) {
                    asks.push(Ask {
                        observer: other.to_owned(),
                        probe: SocketAddr::new(silent_ip, s.port.value),
                        how,
                        passive: None,
                    });
                }
            }
        }
        Target::App { .. } => {
            for a in top.app_proxies.iter().map(|a| &a.value) {
                if a.machine.value != machine {
                    continue;
                }
                let Some((probe, how)) = haproxy_probe(
                    &a.runtime_api.value,
                    a.frontends.first().map(|f| f.value.listen.value),
                    silent_ip,
                ) else {
                    continue;
                };
                for p in [&a.primary.value, &a.backup.value] {
                    asks.push(Ask {
                        observer: p.clone(),
                        probe,
                        how,
                        passive: None,
                    });
                }
            }
        }
    }
    asks.retain(|a| a.observer != machine);
    asks
}

/// One answer per configured observer, from the answers to its questions: it sees the machine
/// if any of its probes got an answer, it does not if every one it could make failed, and it is
/// unknown if it could make none.
pub fn merge(asks: &[Ask], seen: &[Option<bool>]) -> Witnesses {
    let mut answers: Vec<(String, Seen)> = Vec::new();
    for (a, s) in asks.iter().zip(seen) {
        let s = match s {
            Some(true) => Seen::Up,
            Some(false) => Seen::Gone,
            None => Seen::Unknown,
        };
        match answers.iter_mut().find(|(o, _)| *o == a.observer) {
            None => answers.push((a.observer.clone(), s)),
            Some((_, prev)) => {
                *prev = match (*prev, s) {
                    (Seen::Up, _) | (_, Seen::Up) => Seen::Up,
                    (Seen::Gone, _) | (_, Seen::Gone) => Seen::Gone,
                    _ => Seen::Unknown,
                }
            }
        }
    }
    Witnesses { answers }
}

/// The last look's rule, for the monitor host and the simulator alike: whether the observers'
/// first-hand answers (`w`, asked without hearsay) hold back a step on a machine judged lost.
/// A **terminate** is held back by any one of them reaching the machine: the traffic has moved
/// already, and a machine that anybody can reach is not destroyed on the word of those who
/// cannot. A **fence at the source**, which a failover waits for, needs a majority: one
/// observer alone, on the machine's side of a partition, does not keep a shard without a
/// master.
pub fn holds_back(w: &Witnesses, terminate: bool) -> bool {
    let up = w.count(Seen::Up);
    if terminate {
        up > 0
    } else {
        up * 2 > w.answers.len()
    }
}

/// "haproxy1 gone, haproxy2 unknown, redis2 gone" (or that no other observer is configured).
pub fn describe(w: &Witnesses) -> String {
    if w.answers.is_empty() {
        return "no other observer (none is configured)".to_owned();
    }
    let words: Vec<String> = w
        .answers
        .iter()
        .map(|(o, s)| {
            let s = match s {
                Seen::Up => "sees it",
                Seen::Gone => "gone",
                Seen::Unknown => "could not be asked",
            };
            format!("{o} {s}")
        })
        .collect();
    format!(
        "{} of {} observers say it is gone ({})",
        w.count(Seen::Gone),
        w.answers.len(),
        words.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// examples/lab.yaml: redis1 masters both shards, redis2 replicates, two proxies, one app
    /// proxy using both.
    fn lab() -> (Topology, ObservedState) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lab.yaml");
        let loaded = medic_topology::load_topology(&path).expect("examples/lab.yaml loads");
        let observed = ObservedState::assumed(&loaded.topology);
        (loaded.topology, observed)
    }

    fn who(asks: &[Ask]) -> Vec<&str> {
        let mut o: Vec<&str> = asks.iter().map(|a| a.observer.as_str()).collect();
        o.dedup();
        o.sort_unstable();
        o.dedup();
        o
    }

    #[test]
    fn each_machine_has_the_observers_the_topology_gives_it() {
        let (top, obs) = lab();
        let ip = IpAddr::from([10, 77, 0, 99]);
        let redis = |shard: &str, machine: &str| Target::Redis {
            shard: shard.to_owned(),
            machine: machine.to_owned(),
        };
        // A master: both proxies and its replica, PINGing its servers.
        let m = observers(&top, &obs, &redis("r9001", "redis1"), ip);
        assert_eq!(who(&m), ["haproxy1", "haproxy2", "redis2"]);
        assert!(m.iter().all(|a| a.how == Probe::Ping && a.probe.ip() == ip));
        assert_eq!(m[0].probe.port(), 9001, "the silent server first");
        // A replica: both proxies (first-hand only: they do not route to it) and its master.
        let r = observers(&top, &obs, &redis("r9001", "redis2"), ip);
        assert_eq!(who(&r), ["haproxy1", "haproxy2", "redis1"]);
        assert!(
            r.iter()
                .filter(|a| a.observer.starts_with("haproxy"))
                .all(|a| a.passive.is_none())
        );
        // A proxy: the app proxy that uses it; the app proxy: the proxies it uses.
        let p = observers(
            &top,
            &obs,
            &Target::Proxy {
                machine: "haproxy1".into(),
            },
            ip,
        );
        assert_eq!(who(&p), ["app"]);
        // Its admin API listens on its loopback (reach: ssh): the app proxy connects to its
        // first frontend.
        assert!(
            p.iter()
                .all(|a| a.how == Probe::Connect && a.probe.port() == 8001)
        );
        let a = observers(
            &top,
            &obs,
            &Target::App {
                machine: "app".into(),
            },
            ip,
        );
        assert_eq!(who(&a), ["haproxy1", "haproxy2"]);
        assert!(
            a.iter()
                .all(|a| a.how == Probe::Connect && a.probe.port() == 7001)
        );
        // With `reach: network`, the observers reach the API itself.
        let mut top = top;
        top.proxies.value.runtime_api.value.reach = Reach::Network;
        let p = observers(
            &top,
            &obs,
            &Target::Proxy {
                machine: "haproxy1".into(),
            },
            ip,
        );
        assert!(
            p.iter()
                .all(|a| a.how == Probe::RuntimeApi && a.probe.port() == 9999)
        );
    }

    /// The partition of the issue: {monitor, redis2} | {redis1, haproxy1, haproxy2, app}. Only
    /// redis2 can be asked about redis1, and says gone: no majority, no failover. The app host
    /// and the proxies have no observer the monitor can ask: no replacement either.
    #[test]
    fn the_minority_side_of_a_partition_confirms_nothing() {
        use medic_detect::{Decision, judge_silence};
        let (top, obs) = lab();
        let ip = IpAddr::from([10, 77, 0, 10]);
        let target = Target::Redis {
            shard: "r9001".into(),
            machine: "redis1".into(),
        };
        let asks = observers(&top, &obs, &target, ip);
        let seen: Vec<Option<bool>> = asks
            .iter()
            .map(|a| (a.observer == "redis2").then_some(false))
            .collect();
        assert_eq!(judge_silence(&merge(&asks, &seen)), Decision::Unconfirmed);
        for t in [
            Target::App {
                machine: "app".into(),
            },
            Target::Proxy {
                machine: "haproxy1".into(),
            },
        ] {
            let asks = observers(&top, &obs, &t, ip);
            let w = merge(&asks, &vec![None; asks.len()]);
            assert_eq!(judge_silence(&w), Decision::Unconfirmed, "{t}");
        }
        // The same crash seen from the majority side: every observer says gone.
        let all_gone = vec![Some(false); asks.len()];
        assert_eq!(judge_silence(&merge(&asks, &all_gone)), Decision::FailOver);
    }

    #[test]
    fn answers_merge_per_observer() {
        let ask = |o: &str| Ask {
            observer: o.to_owned(),
            probe: SocketAddr::from(([10, 0, 0, 1], 1)),
            how: Probe::Ping,
            passive: None,
        };
        let asks = [
            ask("h1"),
            ask("h1"),
            ask("h2"),
            ask("h2"),
            ask("r2"),
            ask("h3"),
        ];
        let w = merge(
            &asks,
            &[
                Some(false),
                Some(true),
                Some(false),
                None,
                None,
                Some(false),
            ],
        );
        assert_eq!(
            w.answers,
            [
                ("h1".to_owned(), Seen::Up),
                ("h2".to_owned(), Seen::Gone),
                ("r2".to_owned(), Seen::Unknown),
                ("h3".to_owned(), Seen::Gone),
            ]
        );
        assert_eq!(
            describe(&w),
            "2 of 4 observers say it is gone (h1 sees it, h2 gone, r2 could not be asked, h3 gone)"
        );
    }

    #[test]
    fn one_observer_holds_back_a_terminate_a_majority_a_fence_at_the_source() {
        let w = |seen: &[Seen]| Witnesses {
            answers: seen
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("o{i}"), *s))
                .collect(),
        };
        let one_of_three = w(&[Seen::Up, Seen::Gone, Seen::Unknown]);
        assert!(holds_back(&one_of_three, true));
        assert!(!holds_back(&one_of_three, false));
        let two_of_three = w(&[Seen::Up, Seen::Up, Seen::Gone]);
        assert!(holds_back(&two_of_three, true) && holds_back(&two_of_three, false));
        // Half is no majority; nobody reaching it holds nothing back.
        let half = w(&[Seen::Up, Seen::Gone]);
        assert!(!holds_back(&half, false));
        let none = w(&[Seen::Gone, Seen::Unknown, Seen::Gone]);
        assert!(!holds_back(&none, true) && !holds_back(&none, false));
        assert!(!holds_back(&w(&[]), true));
    }
}
