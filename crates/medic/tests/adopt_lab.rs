//! A deployment medic did not set up, adopted with `managed: false`: a redis master and its
//! replica and an HAProxy whose haproxy.cfg the operator wrote (its backend `bk_cache`, not
//! medic's name), on loopback addresses with no sshd anywhere. medic reaches the runtime API
//! over the network and redis by its protocol, and nothing else.
//!
//! - The operator named the servers `cache1` and `cache2`, and the topology says which
//!   machine each is (`machines[].server`). The master's process is killed under a client
//!   writing through the proxy: medic fences
//!   it, promotes the replica, routes the proxy to it and tells that it restarts nothing.
//!   HAProxy is then restarted with the operator's file (the old master ready again there):
//!   the reconcile sets it right. The operator restarts the old master (empty, a master) and
//!   gives it back to medic's monitoring: medic keeps it fenced and makes it a replica. Every
//!   acknowledged write reads back through the proxy; haproxy.cfg is the operator's, byte for
//!   byte; no step of any recovery needed SSH.
//! - The replica's server named otherwise than its machine, and the topology not saying so:
//!   medic leaves that backend alone
//!   (no repair touches it) and says so, and when the master dies the read-back before the
//!   promotion finds no server for the replica: nothing is promoted.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use medic_testkit::{Haproxy, RedisServer, unique_loopback, wait_until};
use serde_json::Value;

/// The data store's port, the proxy's frontend (where [`assert_no_acknowledged_write_lost`]
/// reads back) and the runtime API's port ([`Haproxy::start`]'s).
const REDIS: u16 = 7379;
const FRONTEND: u16 = 7001;
const API: u16 = 9999;

/// The operator's own HAProxy configuration: the servers named `names`, the replica's in
/// maintenance.
fn operators_haproxy(hp: Ipv4Addr, r1: Ipv4Addr, r2: Ipv4Addr, names: [&str; 2]) -> String {
    format!(
        "frontend fe_cache\n    bind {hp}:{FRONTEND}\n    default_backend bk_cache\n\n\
         backend bk_cache\n    server {} {r1}:{REDIS} check inter 250ms\n    \
         server {} {r2}:{REDIS} check inter 250ms disabled\n",
        names[0], names[1]
    )
}

/// The topology; `servers`: the machines' server names where the operator named them
/// otherwise (`machines[].server`).
fn topology(
    (r1, r2, hp): (Ipv4Addr, Ipv4Addr, Ipv4Addr),
    servers: Option<[&str; 2]>,
    hook: u16,
    port: u16,
    state: &std::path::Path,
) -> String {
    let [s1, s2] = servers.map_or([String::new(), String::new()], |n| {
        n.map(|n| format!(", server: {n}"))
    });
    format!(
        "name: adopted
provider: static
managed: false
machines:
  - {{name: redis1, role: redis, address: {r1}{s1}}}
  - {{name: redis2, role: redis, address: {r2}{s2}}}
  - {{name: haproxy1, role: haproxy, address: {hp}}}
  - {{name: monitor, role: monitor, address: 127.0.0.1}}
shards:
  - {{name: cache, port: {REDIS}, master: redis1, replicas: [redis2], backend: bk_cache}}
proxies:
  machines: [haproxy1]
  runtime_api: {{port: {API}, reach: network}}
  frontends: [{{listen: {FRONTEND}, shard: cache}}]
checks:
  redis: {{interval: 250ms, timeout: 200ms, fall: 3, rise: 2}}
  haproxy: {{interval: 250ms, timeout: 200ms, fall: 3, rise: 2}}
notifications:
  - webhook: {{url: \"http://127.0.0.1:{hook}/hook\", format: json}}
controller:
  listen: 127.0.0.1:{port}
  state_dir: {}
",
        state.display()
    )
}

/// The adopted deployment and `medic run` watching it.
struct Adopted {
    r1: Ipv4Addr,
    r2: Ipv4Addr,
    hp: Ipv4Addr,
    /// The servers' names in the operator's haproxy.cfg, redis1's and redis2's, where the
    /// topology gives them (`machines[].server`).
    aliases: Option<[String; 2]>,
    master: RedisServer,
    replica: RedisServer,
    haproxy: Haproxy,
    hook: Hook,
    port: u16,
    file: PathBuf,
    log: PathBuf,
    run: Child,
    _dir: tempfile::TempDir,
}

impl Adopted {
    /// A master, its replica streaming, the operator's HAProxy with its servers named
    /// `names`, and `medic run` started on the topology (which gives those names as the
    /// machines' `server` when `aliased`).
    fn start(names: [&str; 2], aliased: bool) -> Adopted {
        let (r1, r2, hp) = (unique_loopback(), unique_loopback(), unique_loopback());
        let master = RedisServer::start(r1, REDIS);
        let replica = RedisServer::start_replica_of(r2, REDIS, master.addr);
        // A write that reaches the replica: after a full sync the master streams nothing
        // until the replica's first acknowledgement (up to a second later), and a write
        // acknowledged before that would be lost with the master, inside the replication
        // window medic reports.
        master.cli(&["SET", "streaming", "yes"]);
        wait_until(
            "the replica in sync and streaming",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || match replica.cli(&["GET", "streaming"]) {
                v if v == "yes" => Ok(()),
                v => Err(format!("GET streaming: {v:?}")),
            },
        );
        let haproxy = Haproxy::start(hp, &operators_haproxy(hp, r1, r2, names));
        let dir = tempfile::tempdir().unwrap();
        let hook = Hook::start();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let file = dir.path().join("adopted.yaml");
        let yaml = topology(
            (r1, r2, hp),
            aliased.then_some(names),
            hook.port,
            port,
            &dir.path().join("state"),
        );
        std::fs::write(&file, yaml).unwrap();
        let out = medic(&["validate", file.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out));
        let log = dir.path().join("run.log");
        let run = Command::new(env!("CARGO_BIN_EXE_medic"))
            .args(["run", file.to_str().unwrap()])
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let a = Adopted {
            r1,
            r2,
            hp,
            aliases: aliased.then(|| names.map(str::to_owned)),
            master,
            replica,
            haproxy,
            hook,
            port,
            file,
            log,
            run,
            _dir: dir,
        };
        wait_until(
            "medic watching the adopted shard",
            Duration::from_secs(20),
            Duration::from_millis(100),
            || match a.shard() {
                s if s["master"] == "redis1" => Ok(()),
                s => Err(format!("{s}\n{}", a.logs())),
            },
        );
        a
    }

    fn f(&self) -> &str {
        self.file.to_str().unwrap()
    }

    fn logs(&self) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 40)
    }

    fn status(&self) -> Value {
        http_get(self.port, "/api/status").unwrap_or(Value::Null)
    }

    fn shard(&self) -> Value {
        self.status()["shards"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == "cache").cloned())
            .unwrap_or(Value::Null)
    }

    fn history(&self) -> Vec<Value> {
        http_get(self.port, "/api/history")
            .and_then(|h| h.as_array().cloned())
            .unwrap_or_default()
    }

    /// `show servers state bk_cache` as (server, in maintenance): HAProxy's own answer,
    /// its server names read as the machines they stand for where the topology says so.
    fn routing(&self) -> Vec<(String, bool)> {
        let text = self.haproxy.api("show servers state bk_cache");
        let mut routes: Vec<(String, bool)> = medic_haproxy::parse_servers_state(&text)
            .unwrap()
            .iter()
            .map(|s| {
                let alias = self.aliases.iter().flatten().position(|n| *n == s.server);
                let machine = match alias {
                    Some(0) => "redis1".to_owned(),
                    Some(_) => "redis2".to_owned(),
                    None => s.server.clone(),
                };
                (machine, s.in_maint())
            })
            .collect();
        routes.sort();
        routes
    }

    /// Waits until the proxy routes to `ready` alone (the other server in maintenance).
    fn wait_routed_to(&self, what: &str, ready: &str, within: Duration) {
        let other = if ready == "redis1" {
            "redis2"
        } else {
            "redis1"
        };
        let want = {
            let mut w = vec![(ready.to_owned(), false), (other.to_owned(), true)];
            w.sort();
            w
        };
        wait_until(what, within, Duration::from_millis(50), || {
            let routes = self.routing();
            if routes == want {
                Ok(())
            } else {
                Err(format!("bk_cache: {routes:?}\n{}", self.logs()))
            }
        });
    }
}

impl Drop for Adopted {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.run.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.run.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.run.kill();
        let _ = self.run.wait();
    }
}

/// Every step kind of every recovery in `history`, planned (run or not).
fn step_kinds(history: &[Value]) -> Vec<String> {
    kinds_where(history, |_| true)
}

/// The kinds of the steps done in `history`'s recoveries.
fn done_kinds(history: &[Value]) -> Vec<String> {
    kinds_where(history, |s| s["status"] == "done")
}

fn kinds_where(history: &[Value], keep: impl Fn(&Value) -> bool) -> Vec<String> {
    history
        .iter()
        .flat_map(|r| r["steps"].as_array().cloned().unwrap_or_default())
        .filter(|s| keep(s))
        .filter_map(|s| s["kind"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn an_adopted_deployment_fails_over_through_the_runtime_api_and_redis_alone() {
    // The operator named the servers otherwise; the topology says which machine each is.
    let mut a = Adopted::start(["cache1", "cache2"], true);
    let written = std::fs::read(&a.haproxy.config).unwrap();
    let plan = text(&medic(&["plan", a.f(), "--process", "cache@redis1"]));
    assert!(
        plan.contains("set server bk_cache/cache1 state maint"),
        "{plan}"
    );
    assert!(!plan.contains("ssh"), "the plan goes through SSH:\n{plan}");

    let writer = Writer::start(SocketAddr::from((a.hp, FRONTEND)));
    writer.wait_acked("writes through the operator's proxy", Instant::now(), 50);

    // The master's process dies; its machine (its address) still answers.
    let fault = Instant::now();
    a.master.proc.kill();
    a.wait_routed_to(
        "the proxy routed to redis2 alone",
        "redis2",
        Duration::from_secs(30),
    );
    assert!(a.replica.cli(&["ROLE"]).starts_with("master"));
    writer.wait_acked("writes through the proxy to redis2", Instant::now(), 20);
    let settled = Instant::now();
    eprintln!(
        "writes flowed again {:.2} s after the master was killed",
        (settled - fault).as_secs_f64()
    );
    wait_until(
        "the recovery ended, saying it restarts nothing",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let told = a.hook.bodies_text();
            if told.contains("managed: false") && a.shard()["master"] == "redis2" {
                Ok(())
            } else {
                Err(format!("shard {}\nwebhooks: {told}", a.shard()))
            }
        },
    );
    let records = writer.finish();
    let read_back = std::panic::catch_unwind(|| {
        assert_no_acknowledged_write_lost(&a.hp.to_string(), &records, fault, settled);
    });
    if let Err(e) = read_back {
        eprintln!("medic's log:\n{}", a.logs());
        std::panic::resume_unwind(e);
    }

    // HAProxy restarted with the operator's file, which still has redis1 ready and redis2 in
    // maintenance: the reconcile (every 2 s between recoveries) sets it right.
    let restarted = Instant::now();
    a.haproxy.restart();
    a.wait_routed_to(
        "the restarted proxy routed to redis2 again",
        "redis2",
        Duration::from_secs(15),
    );
    eprintln!(
        "the restarted proxy was set right {:.2} s after its restart",
        restarted.elapsed().as_secs_f64()
    );

    // The operator restarts the old master as it was configured (empty, a master) and gives
    // it back to medic: a second master, which medic keeps fenced and makes a replica.
    a.master = RedisServer::start(a.r1, REDIS);
    let out = medic(&["monitor", "redis1", "-t", a.f()]);
    assert!(out.status.success(), "{}", text(&out));
    let key = format!("w:{}", records.iter().rev().find(|w| w.2).unwrap().1);
    wait_until(
        "redis1 a replica of redis2 with the last acknowledged write",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            let info = a.master.cli(&["INFO", "replication"]);
            let got = a.master.cli(&["GET", &key]);
            if info.contains(&format!("master_host:{}", a.r2))
                && info.contains("master_link_status:up")
                && !got.is_empty()
            {
                Ok(())
            } else {
                Err(format!("{info}\nGET {key}: {got:?}\n{}", a.logs()))
            }
        },
    );
    a.wait_routed_to(
        "redis1 still in maintenance",
        "redis2",
        Duration::from_secs(1),
    );

    // What medic did: no step that needs SSH, a config, a restart or a machine.
    let history = a.history();
    for r in &history {
        eprintln!("{}: {:?}", r["event"], step_kinds(std::slice::from_ref(r)));
    }
    let kinds = step_kinds(&history);
    assert!(kinds.iter().any(|k| k == "promote"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "replicaof"), "{kinds:?}");
    for never in [
        "playbook",
        "persist",
        "launch",
        "terminate",
        "wait-ssh",
        "fence-source",
    ] {
        assert!(
            !kinds.iter().any(|k| k == never),
            "a `{never}` step: {kinds:?}"
        );
    }
    assert_eq!(
        std::fs::read(&a.haproxy.config).unwrap(),
        written,
        "medic changed the operator's haproxy.cfg"
    );
    // The operator's backend matched the topology throughout: no alert said otherwise.
    let told = a.hook.bodies_text();
    assert!(
        !told.contains("has no backend") && !told.contains("has the servers"),
        "{told}"
    );
}

#[test]
fn a_server_named_otherwise_than_its_machine_is_left_alone_and_blocks_the_promotion() {
    // The replica's server is `cache2`, not `redis2`.
    let a = Adopted::start(["redis1", "cache2"], false);
    wait_until(
        "a critical alert naming the operator's servers",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || {
            let told = a.hook.bodies_text();
            if told.contains("has the servers cache2, redis1 for shard cache") {
                Ok(())
            } else {
                Err(format!("webhooks: {told}\n{}", a.logs()))
            }
        },
    );
    // The reconcile reads the proxy again (its reading time moves on) and leaves the backend
    // as it is: `cache2` is no machine it knows.
    let read_ms = |a: &Adopted| a.shard()["routes"][0]["read_ms"].as_u64();
    let first = read_ms(&a);
    wait_until(
        "two more readings of the proxy",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || match (first, read_ms(&a)) {
            (Some(f), Some(n)) if n >= f + 3000 => Ok(()),
            seen => Err(format!("{seen:?}: {}", a.shard())),
        },
    );
    assert_eq!(
        a.routing(),
        [("cache2".to_owned(), true), ("redis1".to_owned(), false)]
    );

    // The master dies. Its fence is made, but the read-back before the promotion finds no
    // server for redis2 on the proxy: nothing is promoted (a master no proxy could send
    // clients to, behind a backend medic does not know).
    a.master.proc.signal("KILL");
    wait_until(
        "the recovery stopped before the promotion",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let h = a.history();
            let stopped = h.iter().find(|r| {
                r["event"].as_str().is_some_and(|e| e.contains("died"))
                    && r["outcome"]["outcome"]
                        .as_str()
                        .is_some_and(|o| o != "completed")
            });
            match stopped {
                Some(r) if r.to_string().contains("has no server bk_cache/redis2") => Ok(()),
                _ => Err(format!("history: {h:?}\n{}", a.logs())),
            }
        },
    );
    let done = done_kinds(&a.history());
    assert!(done.iter().any(|k| k == "fence"), "{done:?}");
    assert!(!done.iter().any(|k| k == "promote"), "{done:?}");
    assert!(
        a.replica.cli(&["ROLE"]).starts_with("slave"),
        "the replica was promoted"
    );
}
