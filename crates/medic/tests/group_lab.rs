//! Controllers in a group on the lab: a real 3-member etcd cluster, two `medic run` members
//! (`a` and `b`) of one deployment, each with its own API and state directory. Needs root.
//!
//! - the leader is killed after every step of a redis machine's recovery in turn; the other
//!   member takes over each time from the journal in etcd: one recovery, exactly one
//!   replacement, every acknowledged write read back;
//! - a leader frozen mid-recovery (SIGSTOP) is replaced, and when it wakes it does nothing: the
//!   journal's fencing tokens show no step run under the old term after the new one began;
//! - with etcd's quorum lost nobody recovers (and says why); when it returns, the leader does.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use medic_testkit::EtcdCluster;
use serde_json::Value;

/// One member of the group: its topology file (the deployment's, with its own name, API
/// and state directory), its process and log.
struct Member {
    name: &'static str,
    file: PathBuf,
    port: u16,
    state: PathBuf,
    log: PathBuf,
    run: Option<Child>,
}

impl Member {
    fn start(&mut self, failpoint: Option<&str>) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_medic"));
        cmd.args(["run", self.file.to_str().unwrap()])
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(p) = failpoint {
            cmd.env("MEDIC_FAILPOINT", p);
        }
        self.run = Some(cmd.spawn().unwrap());
    }

    fn status(&self) -> Option<Value> {
        http_get(self.port, "/api/status")
    }

    fn leads(&self) -> bool {
        self.status()
            .is_some_and(|s| s["group"]["leading"].as_bool() == Some(true))
    }

    fn alive(&mut self) -> bool {
        self.run
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.run {
            let ok = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .unwrap();
            assert!(ok.success(), "kill {sig} {}", self.name);
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.run.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The lab deployment with a group of two members over `etcd`; member `a` is `env`'s file.
fn group(k: u32, etcd: &EtcdCluster, lease: &str) -> Option<(Env, [Member; 2])> {
    group_with(k, etcd, lease, None)
}

/// The same, with member b given only the etcd endpoints `b_etcd` (to cut it off from etcd
/// alone by killing those members).
fn group_with(
    k: u32,
    etcd: &EtcdCluster,
    lease: &str,
    b_etcd: Option<String>,
) -> Option<(Env, [Member; 2])> {
    let cluster = format!(
        "  cluster:\n    etcd: [{}]\n    lease: {lease}\n    member: MEMBER\n",
        etcd.endpoints_arg()
    );
    let env = Env::new(k, |t| {
        let at = t.find("controller:\n").unwrap();
        let end = t[at..].find("state_dir:").unwrap() + at;
        let end = t[end..].find('\n').unwrap() + end + 1;
        format!("{}{cluster}{}", &t[..end], &t[end..]).replace("MEMBER", "a")
    })?;
    let text = std::fs::read_to_string(&env.file).unwrap();
    let dir = env._dir.path();
    let state_a = dir.join("lab/controller");
    let state_b = dir.join("lab/controller-b");
    let port_b = env.port + 2000;
    let mut text_b = text.replace("member: a", "member: b");
    if let Some(e) = b_etcd {
        text_b = text_b.replace(&etcd.endpoints_arg(), &e);
    }
    let text_b = text_b
        .replace(
            &format!("listen: 127.0.0.1:{}", env.port),
            &format!("listen: 127.0.0.1:{port_b}"),
        )
        .replace(
            &state_a.display().to_string(),
            &state_b.display().to_string(),
        );
    assert_ne!(text, text_b);
    let file_b = dir.join("lab-b.yaml");
    std::fs::write(&file_b, text_b).unwrap();
    let a = Member {
        name: "a",
        file: env.file.clone(),
        port: env.port,
        state: state_a,
        log: dir.join("run-a.log"),
        run: None,
    };
    let b = Member {
        name: "b",
        file: file_b,
        port: port_b,
        state: state_b,
        log: dir.join("run-b.log"),
        run: None,
    };
    Some((env, [a, b]))
}

/// Polls `cond` every 100 ms; on timeout fails with both members' views and logs.
fn wait(members: &[Member; 2], what: &str, within: Duration, cond: impl Fn(&[Member; 2]) -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond(members) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut seen = String::new();
    for m in members {
        seen += &format!(
            "\n--- member {} status: {}\nlog (tail):\n{}",
            m.name,
            m.status()
                .map_or("no answer".to_owned(), |s| serde_json::to_string_pretty(
                    &s["group"]
                )
                .unwrap()),
            tail(&m.logs(), 30)
        );
        // What led there: who led and ran what, and every warning (a skipped step says why).
        let log = m.logs();
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains("skipped"))
            .collect();
        seen += &format!(
            "\nkey lines:\n{}\nwarnings (last 40):\n{}",
            key_lines(&log),
            warnings[warnings.len().saturating_sub(40)..].join("\n")
        );
    }
    panic!("waited {within:?} for {what}{seen}");
}

/// The recovery's journal as the member has it (a leader's copy is etcd's): its records.
fn journal(m: &Member) -> Vec<Value> {
    let dir = m.state.join("journal");
    let Some(file) = std::fs::read_dir(&dir).ok().and_then(|d| {
        d.flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
    }) else {
        return Vec::new();
    };
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn history_of(m: &Member) -> Vec<Value> {
    http_get(m.port, "/api/history")
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn completed(m: &Member, what: &str) -> bool {
    history_of(m).iter().any(|r| {
        r["event"].as_str().is_some_and(|e| e.contains(what))
            && r["outcome"]["outcome"] == "completed"
    })
}

/// Whether the member's recovery of `what` has ended with every step done: completed, or
/// incomplete only because a proxy's runtime API did not answer when its change came (on a
/// loaded machine a member's checks can see a proxy's API down for a moment). The reconcile
/// repairs such a proxy; [`wait_routed`] reads both proxies back.
fn finished(m: &Member, what: &str) -> bool {
    history_of(m).iter().any(|r| {
        let skipped_proxy_changes_only = || {
            r["outcome"]["skipped"].as_array().is_some_and(|s| {
                s.iter()
                    .all(|x| x.as_str().is_some_and(|x| x.contains("runtime API")))
            })
        };
        r["event"].as_str().is_some_and(|e| e.contains(what))
            && (r["outcome"]["outcome"] == "completed"
                || (r["outcome"]["outcome"] == "incomplete" && skipped_proxy_changes_only()))
    })
}

/// Waits until both proxies route each shard to `master` alone (its server ready, every other
/// one in maintenance), as read from each proxy's runtime API.
fn wait_routed(env: &Env, master: &str) {
    medic_testkit::wait_until(
        &format!("both proxies route every shard to {master} alone"),
        RECOVERY,
        Duration::from_millis(200),
        || {
            for proxy in ["haproxy1", "haproxy2"] {
                let servers = env.haproxy_servers(proxy, 9999, None);
                let wrong: Vec<String> = servers
                    .iter()
                    .filter(|s| s.is_ready() != (s.server == master))
                    .map(|s| format!("{}/{} ready={}", s.backend, s.server, s.is_ready()))
                    .collect();
                if servers.is_empty() || !wrong.is_empty() {
                    return Err(format!("{proxy}: {wrong:?} of {} servers", servers.len()));
                }
            }
            Ok(())
        },
    );
}

/// The lines of a member's log that tell who led and what it ran.
fn key_lines(log: &str) -> String {
    log.lines()
        .filter(|l| {
            [
                "lead",
                "Resum",
                "FAILPOINT",
                "Recovery",
                "stood",
                "step=1 ",
                "step=2 ",
                "step=3 ",
                "queued",
                "Witnesses",
            ]
            .iter()
            .any(|k| l.contains(k))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether the member's recovery has launched its replacement (the launch step is done).
fn launched(m: &Member) -> bool {
    let records = journal(m);
    let Some(begin) = records.first() else {
        return false;
    };
    let launch = begin["plan"]["steps"]
        .as_array()
        .and_then(|s| s.iter().position(|s| s["action"] == "launch_instance"))
        .map(|i| i + 1);
    records
        .iter()
        .any(|r| r["record"] == "done" && r["step"].as_u64().map(|s| s as usize) == launch)
}

/// The recoveries' journals as etcd holds them (records of each).
fn etcd_journals(etcd: &EtcdCluster) -> Vec<Vec<Value>> {
    let client = medic_coord::etcd::Etcd::new(etcd.endpoints(), Duration::from_secs(2));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(client.range_prefix("/medic/barton/journal/"))
        .unwrap()
        .into_iter()
        .map(|(_, text)| {
            text.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .collect()
}

/// Whether, once a higher term wrote to the journal, no record of a lower term follows.
fn terms_never_go_back(records: &[Value]) -> Result<(), String> {
    let mut highest = 0;
    for r in records {
        if let Some(t) = r["token"].as_i64() {
            if t < highest {
                return Err(format!(
                    "a step started under term {t} after term {highest} had begun: {r}"
                ));
            }
            highest = t;
        }
    }
    Ok(())
}

#[test]
fn the_leader_killed_after_every_step_is_replaced_and_one_recovery_completes() {
    let etcd = EtcdCluster::start(3);
    let Some((env, mut m)) = group(12, &etcd, "2s") else {
        return;
    };
    m[0].start(Some("after-done:1"));
    wait(&m, "member a leads", Duration::from_secs(20), |m| {
        m[0].leads()
    });
    let app = env.ip(14);
    let writer = Writer::start(format!("{app}:7001").parse().unwrap());
    writer.wait_acked("the client's first writes", Instant::now(), 50);
    let crashed_at = Instant::now();
    env.fault("redis1", "crash", &[]);
    let died = |m: &mut [Member; 2], i: usize, what: &str| {
        let deadline = Instant::now() + RECOVERY;
        while m[i].alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            !m[i].alive(),
            "member {} did not reach its failpoint ({what})\n{}",
            m[i].name,
            key_lines(&m[i].logs())
        );
    };
    died(&mut m, 0, "step 1");
    let begin = journal(&m[0]).into_iter().next().unwrap();
    let steps: Vec<String> = begin["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["action"].as_str().unwrap().to_owned())
        .collect();
    assert!(steps.len() > 10, "{steps:?}");
    // The members take turns: each starts as a follower, takes over once its predecessor's
    // lease ran out, goes on from the journal in etcd (its own copy is stale) and dies after
    // one more step. At the launch step it dies after launching, before the journal knows.
    for n in 2..=steps.len() {
        let next = (n - 1) % 2;
        let point = if steps[n - 1] == "launch_instance" {
            format!("after-exec:{n}")
        } else {
            format!("after-done:{n}")
        };
        m[next].start(Some(&point));
        died(&mut m, next, &format!("step {n}, {}", steps[n - 1]));
    }
    let last = steps.len() % 2;
    m[last].start(None);
    m[1 - last].start(None);
    wait(&m, "the recovery completes", RECOVERY, |m| {
        m.iter().any(|x| completed(x, "machine redis1 lost"))
    });
    let leader = if m[0].leads() { 0 } else { 1 };
    wait(&m, "both shards ok", RECOVERY, |m| {
        m[leader].status().is_some_and(|s| {
            s["shards"]
                .as_array()
                .is_some_and(|a| a.iter().all(|x| x["state"] == "ok"))
        })
    });
    let settled = Instant::now();
    writer.wait_acked("writes go on", settled, 20);
    let log = writer.finish();
    // Writes fail from the crash until the promotion, several takeovers later (a lease each):
    // none outside that window, none acknowledged and lost.
    assert_no_acknowledged_write_lost_within(&app, &log, crashed_at, settled, usize::MAX);
    let history = history_of(&m[leader]);
    assert_eq!(
        history.len(),
        1,
        "one recovery, resumed, not restarted: {history:#?}"
    );
    assert_eq!(history[0]["resumed"], steps.len(), "{}", history[0]);
    let inst = env.instances("redis1");
    assert_eq!(inst.len(), 2, "exactly one replacement: {inst:?}");
    assert_eq!(inst.iter().filter(|(_, s)| s == "running").count(), 1);
    let records = journal(&m[leader]);
    terms_never_go_back(&records).unwrap();
    let terms: std::collections::BTreeSet<i64> =
        records.iter().filter_map(|r| r["token"].as_i64()).collect();
    // A term for each process that led: a, one per step after it, and the one that closed
    // the recovery (it redid the last step: a step's outcome reaches etcd with the next
    // intent, which its predecessor never wrote).
    assert_eq!(
        terms.len(),
        steps.len() + 1,
        "a new term for each takeover: {terms:?}"
    );
}

#[test]
fn a_frozen_leader_is_replaced_and_does_nothing_when_it_wakes() {
    let etcd = EtcdCluster::start(3);
    let Some((env, mut m)) = group(13, &etcd, "2s") else {
        return;
    };
    m[0].start(None);
    wait(&m, "member a leads", Duration::from_secs(20), |m| {
        m[0].leads()
    });
    m[1].start(None);
    wait(&m, "member b follows", Duration::from_secs(20), |m| {
        m[1].status().is_some_and(|s| s["group"]["leader"] == "a")
    });
    let app = env.ip(14);
    let writer = Writer::start(format!("{app}:7001").parse().unwrap());
    writer.wait_acked("the client's first writes", Instant::now(), 50);
    let crashed_at = Instant::now();
    env.fault("redis1", "crash", &[]);
    // Frozen once its replacement is launched (the steps after it take a while).
    wait(&m, "a launches the replacement", RECOVERY, |m| {
        launched(&m[0])
    });
    m[0].signal("-STOP");
    wait(&m, "b completes the recovery", RECOVERY, |m| {
        finished(&m[1], "machine redis1 lost")
    });
    wait_routed(&env, "redis2");
    m[0].signal("-CONT");
    wait(
        &m,
        "a knows it does not lead",
        Duration::from_secs(20),
        |m| {
            m[0].status()
                .is_some_and(|s| s["group"]["leading"] == false && s["group"]["leader"] == "b")
        },
    );
    let settled = Instant::now();
    writer.wait_acked("writes go on", settled, 20);
    let log = writer.finish();
    assert_no_acknowledged_write_lost(&app, &log, crashed_at, settled);
    let records = journal(&m[1]);
    terms_never_go_back(&records).unwrap();
    let terms: std::collections::BTreeSet<i64> =
        records.iter().filter_map(|r| r["token"].as_i64()).collect();
    assert_eq!(terms.len(), 2, "a's term, then b's: {terms:?}");
    // Both members detected the crash; only the leader told the webhook.
    let events = env.hook.events();
    assert_eq!(
        events.iter().filter(|e| *e == "detection").count(),
        1,
        "{events:?}"
    );
    // etcd's copy is b's: nothing a did after it woke landed there.
    let in_etcd = etcd_journals(&etcd);
    assert_eq!(in_etcd.len(), 1, "{in_etcd:?}");
    assert_eq!(in_etcd[0], records, "etcd's journal is the one b wrote");
    assert!(
        m[0].logs().contains("does not lead the group any more"),
        "a noticed it was deposed\n{}",
        key_lines(&m[0].logs())
    );
    // a's own copy of the journal: nothing after its freeze landed in etcd, and b's is etcd's.
    let inst = env.instances("redis1");
    assert_eq!(
        inst.iter().filter(|(_, s)| s == "running").count(),
        1,
        "{inst:?}"
    );
    assert_eq!(history_of(&m[1]).len(), 1);
}

#[test]
fn without_etcd_quorum_nobody_recovers_and_says_why_then_the_leader_does() {
    let mut etcd = EtcdCluster::start(3);
    let Some((env, mut m)) = group(14, &etcd, "2s") else {
        return;
    };
    m[0].start(None);
    m[1].start(None);
    wait(&m, "one member leads", Duration::from_secs(20), |m| {
        m[0].leads() || m[1].leads()
    });
    // Started together, they never both lead (sampled for a few seconds).
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert!(!(m[0].leads() && m[1].leads()), "two leaders at once");
        std::thread::sleep(Duration::from_millis(50));
    }
    // One etcd member lost: nothing changes.
    etcd.kill(0);
    wait(
        &m,
        "both members still reach etcd",
        Duration::from_secs(20),
        |m| {
            m.iter().all(|x| {
                x.status()
                    .is_some_and(|s| s["group"]["etcd"] == "reachable")
            })
        },
    );
    etcd.kill(1);
    wait(
        &m,
        "both members alert that etcd is lost",
        Duration::from_secs(30),
        |m| {
            m.iter().all(|x| {
                x.status().is_some_and(|s| {
                    s["group"]["leading"] == false
                        && s["alerts"].as_array().is_some_and(|a| {
                            a.iter().any(|al| {
                                al["message"]
                                    .as_str()
                                    .is_some_and(|t| t.contains("etcd cannot be reached"))
                            })
                        })
                })
            })
        },
    );
    env.fault("redis1", "crash", &[]);
    // Both detect it; neither acts while etcd is lost.
    wait(&m, "both members see redis1 down", RECOVERY, |m| {
        m.iter().all(|x| {
            x.status().is_some_and(|s| {
                s["machines"].as_array().is_some_and(|ms| {
                    ms.iter().any(|mm| {
                        mm["name"] == "redis1"
                            && (mm["state"] == "down" || mm["state"] == "recovering")
                    })
                })
            })
        })
    });
    let quiet = Instant::now() + Duration::from_secs(6);
    while Instant::now() < quiet {
        for x in m.iter() {
            assert!(
                history_of(x).is_empty(),
                "member {} acted without etcd",
                x.name
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    etcd.restart(0);
    etcd.restart(1);
    wait(&m, "the recovery completes", RECOVERY, |m| {
        m.iter().any(|x| completed(x, "machine redis1 lost"))
    });
    let inst = env.instances("redis1");
    assert_eq!(inst.len(), 2, "exactly one replacement: {inst:?}");
}

#[test]
fn a_leader_cut_off_from_etcd_mid_recovery_stops_and_the_other_finishes() {
    let mut etcd = EtcdCluster::start(3);
    // b reaches etcd only through member 0: killing it cuts b off, the cluster keeps quorum.
    let only = etcd.endpoints()[0].to_string();
    let Some((env, mut m)) = group_with(15, &etcd, "2s", Some(only)) else {
        return;
    };
    m[0].start(None);
    wait(&m, "member a leads", Duration::from_secs(20), |m| {
        m[0].leads()
    });
    m[1].start(None);
    wait(&m, "member b follows", Duration::from_secs(20), |m| {
        m[1].status().is_some_and(|s| s["group"]["leader"] == "a")
    });
    // `medic step-down` on a: b takes over at once (a does not stand again for two leases).
    let out = medic(&["step-down", "-t", m[0].file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    wait(
        &m,
        "b leads after a stepped down",
        Duration::from_secs(10),
        |m| m[1].leads() && !m[0].leads(),
    );
    let app = env.ip(14);
    let writer = Writer::start(format!("{app}:7001").parse().unwrap());
    writer.wait_acked("the client's first writes", Instant::now(), 50);
    let crashed_at = Instant::now();
    env.fault("redis1", "crash", &[]);
    wait(&m, "b launches the replacement", RECOVERY, |m| {
        launched(&m[1])
    });
    etcd.kill(0);
    wait(&m, "a completes the recovery", RECOVERY, |m| {
        finished(&m[0], "machine redis1 lost")
    });
    wait_routed(&env, "redis2");
    wait(
        &m,
        "b knows it does not lead",
        Duration::from_secs(20),
        |m| {
            m[1].status()
                .is_some_and(|s| s["group"]["leading"] == false)
        },
    );
    let settled = Instant::now();
    writer.wait_acked("writes go on", settled, 20);
    let log = writer.finish();
    assert_no_acknowledged_write_lost(&app, &log, crashed_at, settled);
    let inst = env.instances("redis1");
    assert_eq!(inst.len(), 2, "exactly one replacement: {inst:?}");
    assert_eq!(inst.iter().filter(|(_, s)| s == "running").count(), 1);
    // What each started, by its intents: b's (its own copy) and a's (etcd's, which is a's).
    let in_etcd = etcd_journals(&etcd);
    assert_eq!(in_etcd.len(), 1, "{in_etcd:?}");
    terms_never_go_back(&in_etcd[0]).unwrap();
    let started =
        |records: &[Value], by: &dyn Fn(i64) -> bool| -> std::collections::BTreeSet<u64> {
            records
                .iter()
                .filter(|r| r["record"] == "intent" && r["token"].as_i64().is_some_and(by))
                .filter_map(|r| r["step"].as_u64())
                .collect()
        };
    let b_terms: std::collections::BTreeSet<i64> = journal(&m[1])
        .iter()
        .filter_map(|r| r["token"].as_i64())
        .collect();
    let by_b = started(&journal(&m[1]), &|t| b_terms.contains(&t));
    let by_a = started(&in_etcd[0], &|t| !b_terms.contains(&t));
    let both: Vec<u64> = by_a.intersection(&by_b).copied().collect();
    // At most the step b had in flight when it was cut off (idempotent: a redid it).
    let brief = |records: &[Value]| -> Vec<String> {
        records
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {}",
                    r["record"], r["step"], r["token"], r["at_ms"]
                )
            })
            .collect()
    };
    assert!(
        both.len() <= 1,
        "steps started by both: {both:?} (b {by_b:?}, a {by_a:?})\nb: {:?}\netcd: {:?}\nb's log:\n{}",
        brief(&journal(&m[1])),
        brief(&in_etcd[0]),
        key_lines(&m[1].logs())
    );
    assert!(
        m[1].logs().contains("does not lead the group any more"),
        "b noticed\n{}",
        key_lines(&m[1].logs())
    );
}
