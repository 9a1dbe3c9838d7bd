//! A web service medic did not set up, adopted with `managed: false`: two nginx servers and
//! the operator's HAProxy in front of them (its backend `bk_web`, its servers `w1` and `w2`,
//! HTTP mode), on loopback addresses with no sshd anywhere. The standby serves read-only
//! (`standbys_read_only`, seed 000's copy), so no hook is needed: medic moves the role through
//! the runtime API alone.
//!
//! The primary's nginx is killed under a client asking through the proxy which machine
//! answers: medic puts `w1` in maintenance and makes `w2` ready, and once the client has had
//! an answer from web2 it never gets one from web1. web1's nginx comes back: it rejoins as a
//! standby, still in maintenance. `medic switchover www --to web1` moves the proxy back.
//! HAProxy's runtime state is read back at each stage, its haproxy.cfg is the operator's byte
//! for byte at the end, and no step of any recovery needed SSH.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use medic_testkit::{Haproxy, Proc, program, unique_loopback, wait_port, wait_until};
use serde_json::Value;

/// nginx's port on each machine, and the proxy's frontend.
const WEB: u16 = 8081;
const FRONTEND: u16 = 8080;

/// nginx on `ip`, answering `/health` with `ok` and anything else with `name`.
fn nginx(ip: Ipv4Addr, name: &str, dir: &std::path::Path) -> Proc {
    let conf = dir.join(format!("{name}.conf"));
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off;\npid {d}/{name}.pid;\nerror_log {d}/{name}.error.log;\nevents {{}}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/{name}-body;\n  \
             server {{\n    listen {ip}:{WEB};\n    location = /health {{ return 200 \"ok\\n\"; }}\n    \
             location / {{ return 200 \"{name}\\n\"; }}\n  }}\n}}\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(program("nginx"));
    cmd.arg("-c").arg(&conf).arg("-p").arg(dir);
    let p = Proc::spawn("nginx", cmd, dir.join(format!("{name}.log")));
    assert!(
        wait_port(SocketAddr::from((ip, WEB)), Duration::from_secs(10)),
        "nginx on {ip} did not start:\n{}",
        p.log_text()
    );
    p
}

/// The operator's HAProxy configuration: web1's server `w1` ready, web2's `w2` disabled.
fn operators_haproxy(hp: Ipv4Addr, w1: Ipv4Addr, w2: Ipv4Addr) -> String {
    format!(
        "frontend fe_web\n    mode http\n    bind {hp}:{FRONTEND}\n    default_backend bk_web\n\n\
         backend bk_web\n    mode http\n    server w1 {w1}:{WEB} check inter 250ms\n    \
         server w2 {w2}:{WEB} check inter 250ms disabled\n"
    )
}

fn topology(
    w1: Ipv4Addr,
    w2: Ipv4Addr,
    hp: Ipv4Addr,
    port: u16,
    state: &std::path::Path,
) -> String {
    format!(
        "name: adopted-web
provider: static
managed: false
machines:
  - {{name: web1, role: service, address: {w1}, server: w1}}
  - {{name: web2, role: service, address: {w2}, server: w2}}
  - {{name: lb1, role: haproxy, address: {hp}}}
  - {{name: monitor, role: monitor, address: 127.0.0.1}}
proxies:
  machines: [lb1]
  runtime_api: {{port: 9999, reach: network}}
  frontends: []
services:
  - name: www
    mode: primary_standby
    primary: web1
    standbys: [web2]
    port: {WEB}
    check: {{kind: http, path: /health, status: 200, body: ok, interval: 250ms, timeout: 200ms, fall: 3, rise: 2}}
    proxy: {{listen: {FRONTEND}, mode: http, backend: bk_web}}
    standbys_read_only: true
    failback: manual
controller:
  listen: 127.0.0.1:{port}
  state_dir: {}
",
        state.display()
    )
}

/// A client asking through the proxy every 20 ms which machine answers: (when, the answer).
type Answers = Arc<Mutex<Vec<(Instant, Option<String>)>>>;

fn ask(hp: Ipv4Addr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(
        &SocketAddr::from((hp, FRONTEND)),
        Duration::from_millis(300),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    if !out.starts_with("HTTP/1.1 200") && !out.starts_with("HTTP/1.0 200") {
        return None;
    }
    out.rsplit("\r\n\r\n").next().map(|b| b.trim().to_owned())
}

fn client(hp: Ipv4Addr, stop: Arc<AtomicBool>) -> (Answers, std::thread::JoinHandle<()>) {
    let answers: Answers = Arc::default();
    let a = answers.clone();
    let h = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let got = ask(hp);
            a.lock().unwrap().push((Instant::now(), got));
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (answers, h)
}

/// From `since`: the answers in order, with how long the client got none.
fn after(answers: &Answers, since: Instant) -> Vec<(Instant, Option<String>)> {
    answers
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.0 >= since)
        .cloned()
        .collect()
}

/// Waits until the client has had 10 answers from `name` after `since`.
fn wait_answered(answers: &Answers, since: Instant, name: &str) {
    wait_until(
        &format!("the client answered by {name}"),
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let seen = after(answers, since);
            let n = seen.iter().filter(|a| a.1.as_deref() == Some(name)).count();
            if n >= 10 {
                Ok(())
            } else {
                Err(format!(
                    "{n} answers from {name}, the last: {:?}",
                    tail_of(&seen)
                ))
            }
        },
    );
}

/// Once the client has had an answer from `new`, it never has one from `old` again; and how
/// long it had no answer between its last from `old` and its first from `new`.
fn moved(answers: &[(Instant, Option<String>)], old: &str, new: &str) -> Duration {
    let first = answers
        .iter()
        .position(|a| a.1.as_deref() == Some(new))
        .unwrap_or_else(|| panic!("no answer from {new}: {:?}", tail_of(answers)));
    assert!(
        !answers[first..].iter().any(|a| a.1.as_deref() == Some(old)),
        "{old} answered after {new} had: {:?}",
        tail_of(answers)
    );
    let last_old = answers[..first]
        .iter()
        .rposition(|a| a.1.as_deref() == Some(old))
        .map_or(answers[0].0, |i| answers[i].0);
    answers[first].0 - last_old
}

fn tail_of(answers: &[(Instant, Option<String>)]) -> Vec<Option<String>> {
    answers.iter().rev().take(20).map(|a| a.1.clone()).collect()
}

struct Run {
    port: u16,
    log: PathBuf,
    child: Child,
}

impl Run {
    fn status(&self) -> Value {
        http_get(self.port, "/api/status").unwrap_or(Value::Null)
    }

    fn service(&self) -> Value {
        self.status()["services"]
            .get(0)
            .cloned()
            .unwrap_or_default()
    }

    fn role(&self, machine: &str) -> String {
        self.service()["machines"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["machine"] == machine)
            .and_then(|m| m["role"].as_str())
            .unwrap_or_default()
            .to_owned()
    }

    fn logs(&self) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 40)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `show servers state bk_web` as (server, in maintenance), sorted.
fn routing(h: &Haproxy) -> Vec<(String, bool)> {
    let mut r: Vec<(String, bool)> =
        medic_haproxy::parse_servers_state(&h.api("show servers state bk_web"))
            .unwrap()
            .iter()
            .map(|s| (s.server.clone(), s.in_maint()))
            .collect();
    r.sort();
    r
}

fn wait_routed(h: &Haproxy, run: &Run, what: &str, ready: &str) {
    let want = {
        let mut w = vec![
            ("w1".to_owned(), ready != "w1"),
            ("w2".to_owned(), ready != "w2"),
        ];
        w.sort();
        w
    };
    wait_until(
        what,
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let r = routing(h);
            if r == want {
                Ok(())
            } else {
                Err(format!("bk_web: {r:?}\n{}", run.logs()))
            }
        },
    );
}

#[test]
fn an_adopted_web_service_fails_over_and_back_through_the_runtime_api_alone() {
    if !medic_testkit::root_or_skip("adopt_service_lab") {
        return;
    }
    let (w1, w2, hp) = (unique_loopback(), unique_loopback(), unique_loopback());
    let dir = tempfile::tempdir().unwrap();
    let mut web1 = nginx(w1, "web1", dir.path());
    let _web2 = nginx(w2, "web2", dir.path());
    let haproxy = Haproxy::start(hp, &operators_haproxy(hp, w1, w2));
    let written = std::fs::read(&haproxy.config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let file = dir.path().join("adopted-web.yaml");
    std::fs::write(&file, topology(w1, w2, hp, port, &dir.path().join("state"))).unwrap();
    let f = file.to_str().unwrap().to_owned();
    let out = medic(&["validate", &f]);
    assert!(out.status.success(), "{}", text(&out));
    for (what, args) in [
        ("a failover", vec!["--process", "www@web1"]),
        ("a switchover", vec!["--switchover", "www"]),
    ] {
        let mut argv = vec!["plan", f.as_str()];
        argv.extend(args);
        let plan = text(&medic(&argv));
        assert!(
            plan.contains("set server bk_web/w1 state maint")
                && plan.contains("set server bk_web/w2 state ready")
                && !plan.contains("ssh"),
            "{what}'s plan:\n{plan}"
        );
    }
    let log = dir.path().join("run.log");
    let run = Run {
        port,
        log: log.clone(),
        child: Command::new(env!("CARGO_BIN_EXE_medic"))
            .args(["run", &f])
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    };
    wait_until(
        "medic watching the adopted service, web1 the primary, web2 a standby",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            if run.role("web1") == "primary" && run.role("web2") == "standby" {
                Ok(())
            } else {
                Err(format!("{}\n{}", run.service(), run.logs()))
            }
        },
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (answers, client) = client(hp, stop.clone());
    wait_until(
        "web1 answering through the proxy",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || match ask(hp) {
            Some(a) if a == "web1" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // web1's nginx dies; its address still answers (refused).
    let fault = Instant::now();
    web1.kill();
    wait_routed(&haproxy, &run, "the proxy routed to w2 alone", "w2");
    wait_until(
        "web2 the primary, answering through the proxy",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || match (run.service()["primary"].as_str(), ask(hp)) {
            (Some("web2"), Some(a)) if a == "web2" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    wait_answered(&answers, fault, "web2");
    let gap = moved(&after(&answers, fault), "web1", "web2");
    eprintln!(
        "the client had no answer for {:.2} s; web2 answered {:.2} s after web1's nginx was killed",
        gap.as_secs_f64(),
        fault.elapsed().as_secs_f64()
    );

    // web1's nginx back: it rejoins as a standby and stays in maintenance.
    let _web1 = nginx(w1, "web1", dir.path());
    wait_until(
        "web1 a standby again",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            if run.role("web1") == "standby" {
                Ok(())
            } else {
                Err(format!("{}\n{}", run.service(), run.logs()))
            }
        },
    );
    // And it stays so, and the client heard web2 alone since web2 first answered.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let r = routing(&haproxy);
        assert_eq!(
            r,
            [("w1".to_owned(), true), ("w2".to_owned(), false)],
            "{}",
            run.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Switched back by the operator.
    let asked = Instant::now();
    let out = medic(&["switchover", "www", "--to", "web1", "-t", &f]);
    assert!(out.status.success(), "{}", text(&out));
    wait_routed(&haproxy, &run, "the proxy routed to w1 alone", "w1");
    wait_until(
        "web1 the primary, answering through the proxy",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || match (run.service()["primary"].as_str(), ask(hp)) {
            (Some("web1"), Some(a)) if a == "web1" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let before: Vec<_> = after(&answers, fault)
        .into_iter()
        .filter(|a| a.0 < asked)
        .collect();
    moved(&before, "web1", "web2");
    wait_answered(&answers, asked, "web1");
    let gap = moved(&after(&answers, asked), "web2", "web1");
    eprintln!(
        "switched back: the client had no answer for {:.2} s",
        gap.as_secs_f64()
    );
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();

    // What medic did: the runtime API and its own records, nothing over SSH.
    let history: Vec<Value> = http_get(port, "/api/history")
        .and_then(|h| h.as_array().cloned())
        .unwrap_or_default();
    let kinds: Vec<String> = history
        .iter()
        .flat_map(|r| r["steps"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s["kind"].as_str().map(str::to_owned))
        .collect();
    for r in &history {
        eprintln!(
            "{} ({}): {}",
            r["event"],
            r["outcome"],
            r["steps"].as_array().map_or(0, Vec::len)
        );
    }
    assert!(kinds.iter().any(|k| k == "fence"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "activate"), "{kinds:?}");
    for k in &kinds {
        assert!(
            ["unmonitor", "monitor", "fence", "activate", "role"].contains(&k.as_str()),
            "a `{k}` step: {kinds:?}"
        );
    }
    assert_eq!(
        std::fs::read(&haproxy.config).unwrap(),
        written,
        "medic changed the operator's haproxy.cfg"
    );
    drop(run);
}
