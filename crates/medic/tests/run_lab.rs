//! `medic run` end to end on the lab of examples/lab.yaml (each test on a subnet and bridge of
//! its own): real redis servers, HAProxies, sshd and named in network namespaces, a client
//! writing through the app proxy, faults injected with `medic lab fault`. Needs root.
//!
//! The tests run one at a time (a lock): each has a whole deployment to itself, and the
//! machine has two cores.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use medic_testkit::wait_until;
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

fn medic(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A webhook receiver: every body POSTed to it.
struct Hook {
    port: u16,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Hook {
    fn start() -> Hook {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let b = bodies.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let l = line.to_ascii_lowercase();
                    if let Some(v) = l.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                if r.read_exact(&mut body).is_ok()
                    && let Ok(v) = serde_json::from_slice(&body)
                {
                    b.lock().unwrap().push(v);
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            }
        });
        Hook { port, bodies }
    }

    fn events(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| b["event"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    /// Waits for a webhook of kind `event` (they are sent from a task of their own, after the
    /// event itself): fails with the ones received so far.
    fn wait_for(&self, event: &str) {
        wait_until(
            &format!("the webhook {event:?}"),
            Duration::from_secs(10),
            Duration::from_millis(50),
            || {
                let seen = self.events();
                if seen.iter().any(|e| e == event) {
                    Ok(())
                } else {
                    Err(format!("{seen:?}"))
                }
            },
        );
    }
}

/// A client writing `SET w:N N` through the app proxy every 5 ms, speaking RESP itself.
struct Writer {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<(Instant, u64, bool)>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(addr: SocketAddr) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s2, l2) = (stop.clone(), log.clone());
        let handle = std::thread::spawn(move || {
            let mut conn: Option<BufReader<TcpStream>> = None;
            let mut n = 0u64;
            while !s2.load(Ordering::Relaxed) {
                n += 1;
                let ok = (|| -> std::io::Result<bool> {
                    if conn.is_none() {
                        let s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
                        s.set_read_timeout(Some(Duration::from_millis(300)))?;
                        s.set_write_timeout(Some(Duration::from_millis(300)))?;
                        conn = Some(BufReader::new(s));
                    }
                    let c = conn.as_mut().unwrap();
                    let k = format!("w:{n}");
                    let v = n.to_string();
                    let cmd = format!(
                        "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
                        k.len(),
                        v.len()
                    );
                    c.get_mut().write_all(cmd.as_bytes())?;
                    let mut line = String::new();
                    if c.read_line(&mut line)? == 0 {
                        return Ok(false);
                    }
                    Ok(line == "+OK\r\n")
                })()
                .unwrap_or(false);
                if !ok {
                    conn = None;
                }
                l2.lock().unwrap().push((Instant::now(), n, ok));
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Writer {
            stop,
            log,
            handle: Some(handle),
        }
    }

    /// Waits until the client has had `n` writes acknowledged after `t`.
    fn wait_acked(&self, what: &str, t: Instant, n: usize) {
        wait_until(
            what,
            Duration::from_secs(15),
            Duration::from_millis(20),
            || {
                let ok = self.ok_after(t);
                if ok >= n {
                    Ok(())
                } else {
                    let last = self.log.lock().unwrap().last().copied();
                    Err(format!(
                        "{ok} acknowledged writes, the last attempt {last:?}"
                    ))
                }
            },
        );
    }

    /// Successful writes after `t`.
    fn ok_after(&self, t: Instant) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _, ok)| *at > t && *ok)
            .count()
    }

    fn finish(mut self) -> Vec<(Instant, u64, bool)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

fn http_get(port: u16, path: &str) -> Option<Value> {
    let mut s = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (_, body) = text.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

fn http_text(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    buf
}

/// A POST without the API token: the status line.
fn post_without_token(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    buf.lines().next().unwrap_or_default().to_owned()
}

fn cli(host: &str, port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", host, "-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// One lab deployment and its controller.
struct Env {
    _dir: tempfile::TempDir,
    file: PathBuf,
    net: u32,
    port: u16,
    hook: Hook,
    run: Option<Child>,
    log: PathBuf,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Env {
    /// examples/lab.yaml on subnet 10.75.K.0/24, with `edit` applied to the text.
    fn new(k: u32, edit: impl Fn(String) -> String) -> Option<Env> {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        if !medic_testkit::root_or_skip("run_lab") {
            return None;
        }
        let root = std::path::PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../..")
        .canonicalize()
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let net = (std::process::id() % 20) * 10 + k;
        let port = 21000 + net as u16;
        let hook = Hook::start();
        let text_in = std::fs::read_to_string(root.join("examples/lab.yaml")).unwrap();
        let topo = text_in
            .replace("subnet: 10.77.0.0/24", &format!("subnet: 10.75.{net}.0/24"))
            .replace("bridge: medic0", &format!("bridge: mrun{net}"))
            .replace("server: 10.77.0.2:53", &format!("server: 10.75.{net}.2:53"))
            .replace(
                "/var/lib/medic/lab",
                &dir.path().join("lab").display().to_string(),
            )
            .replace(
                "../playbooks",
                &root.join("playbooks").display().to_string(),
            )
            .replace("../amis", &root.join("amis").display().to_string())
            .replace(
                "listen: 127.0.0.1:7600",
                &format!("listen: 127.0.0.1:{port}"),
            )
            .replace(
                "http://127.0.0.1:7601/hook",
                &format!("http://127.0.0.1:{}/hook", hook.port),
            );
        let topo = edit(topo);
        let file = dir.path().join("lab.yaml");
        std::fs::write(&file, topo).unwrap();
        let log = dir.path().join("run.log");
        let env = Env {
            _dir: dir,
            file,
            net,
            port,
            hook,
            run: None,
            log,
            _serial: serial,
        };
        let out = medic(&["lab", "up", env.f()]);
        assert!(out.status.success(), "{}", text(&out));
        Some(env)
    }

    fn f(&self) -> &str {
        self.file.to_str().unwrap()
    }

    fn ip(&self, host: u8) -> String {
        format!("10.75.{}.{host}", self.net)
    }

    /// Starts `medic run` (with extra environment) and waits for its API.
    fn start(&mut self, envs: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_medic"))
            .args(["run", self.f()])
            .envs(envs.iter().copied())
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.run = Some(child);
        if envs.iter().any(|(k, _)| *k == "MEDIC_FAILPOINT") {
            // It may reach its failpoint before its API answers.
            return;
        }
        self.wait("the controller's API", Duration::from_secs(20), |e| {
            e.status().is_some()
        });
    }

    /// Waits for the controller to exit on its own (a failpoint), within `within`.
    fn wait_exit(&mut self, within: Duration) -> bool {
        let Some(c) = self.run.as_mut() else {
            return true;
        };
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if c.try_wait().unwrap().is_some() {
                self.run = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.run.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if c.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn status(&self) -> Option<Value> {
        http_get(self.port, "/api/status")
    }

    /// `/api/history`, or what went wrong asking for it.
    fn try_history(&self) -> Result<Vec<Value>, String> {
        let v = http_get(self.port, "/api/history")
            .ok_or_else(|| "GET /api/history gave no JSON answer".to_owned())?;
        v.as_array()
            .cloned()
            .ok_or_else(|| format!("/api/history is not a list: {v}"))
    }

    /// `/api/history`; a controller that does not answer fails the test (it is never taken
    /// for an empty history).
    fn history(&self) -> Vec<Value> {
        self.try_history()
            .unwrap_or_else(|e| panic!("{e}\nlog (tail):\n{}", tail(&self.logs(), 40)))
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `cond` every 100 ms; on timeout fails with the controller's view and log.
    fn wait(&self, what: &str, within: Duration, cond: impl Fn(&Env) -> bool) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if cond(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "waited {within:?} for {what}\nstatus: {}\nhistory: {}\nlog (tail):\n{}",
            serde_json::to_string_pretty(&self.status()).unwrap(),
            self.try_history()
                .map_or_else(|e| e, |h| serde_json::to_string_pretty(&h).unwrap()),
            tail(&self.logs(), 40)
        );
    }

    fn fault(&self, machine: &str, kind: &str, extra: &[&str]) {
        let mut args = vec!["lab", "fault", machine, kind];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--topology", self.f()]);
        let out = medic(&args);
        assert!(out.status.success(), "{}", text(&out));
    }

    /// The first recovery in history (newest first) whose event mentions `what`.
    fn recovery(&self, what: &str) -> Option<Value> {
        self.history()
            .into_iter()
            .find(|r| r["event"].as_str().is_some_and(|e| e.contains(what)))
    }

    /// Whether the recovery mentioning `what` ended with `outcome` (false while the API does
    /// not answer: a wait goes on and, at its deadline, shows why).
    fn ended(&self, what: &str, outcome: &str) -> bool {
        self.try_history().is_ok_and(|h| {
            h.iter()
                .find(|r| r["event"].as_str().is_some_and(|e| e.contains(what)))
                .is_some_and(|r| r["outcome"]["outcome"].as_str() == Some(outcome))
        })
    }

    fn shard(&self, name: &str) -> Value {
        self.status()
            .and_then(|s| {
                s["shards"]
                    .as_array()
                    .and_then(|a| a.iter().find(|x| x["name"] == name).cloned())
            })
            .unwrap_or(Value::Null)
    }

    fn machine(&self, name: &str) -> Value {
        self.status()
            .and_then(|s| {
                s["machines"]
                    .as_array()
                    .and_then(|a| a.iter().find(|x| x["name"] == name).cloned())
            })
            .unwrap_or(Value::Null)
    }

    /// Lab instances (records) of `machine`: (id, state).
    fn instances(&self, machine: &str) -> Vec<(String, String)> {
        let dir = self._dir.path().join("lab/machines");
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let Ok(t) = std::fs::read_to_string(e.path().join("record.json")) else {
                continue;
            };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["tags"]["medic:machine"] == machine {
                out.push((
                    v["id"].as_str().unwrap().to_owned(),
                    v["state"].as_str().unwrap().to_owned(),
                ));
            }
        }
        out.sort();
        out
    }

    fn alerts(&self) -> Vec<String> {
        self.status()
            .and_then(|s| s["alerts"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|a| a["message"].as_str().unwrap_or("").to_owned())
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop();
        let _ = medic(&["lab", "down", "--topology", self.f()]);
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

const RECOVERY: Duration = Duration::from_secs(60);

/// The most writes a client may see fail during one recovery. It tries every 5 ms, and a failed
/// attempt is answered at once (no server in the backend) or after its 300 ms timeout (a silent
/// one): 1,000 is five seconds of failing at the fastest, several times what the lab's
/// recoveries cost (5 to 160 failed writes seen), so only a recovery that leaves clients
/// failing trips it. The window check beside it is the exact one: no write fails before the
/// fault or after the recovery.
const MAX_FAILED_WRITES: usize = 1000;

/// The client's record after a fault at `fault`, with writes flowing again by `settled`:
/// every acknowledged write reads back, with its value, through the clients' path (the app
/// proxy); the failed ones all fall between the fault and `settled`, and are few.
fn assert_no_acknowledged_write_lost(
    app: &str,
    log: &[(Instant, u64, bool)],
    fault: Instant,
    settled: Instant,
) {
    let acked: Vec<u64> = log.iter().filter(|w| w.2).map(|w| w.1).collect();
    // The test waited for 50 before the fault and 20 after the recovery.
    assert!(acked.len() >= 70, "{} writes acknowledged", acked.len());
    let keys: Vec<String> = acked.iter().map(|n| format!("w:{n}")).collect();
    let values = get_many(&format!("{app}:7001"), &keys);
    let lost: Vec<String> = acked
        .iter()
        .zip(&values)
        .filter(|(n, v)| v.as_deref() != Some(n.to_string().as_str()))
        .map(|(n, v)| format!("w:{n}={v:?}"))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes not read back through the app proxy: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
    let failed: Vec<&(Instant, u64, bool)> = log.iter().filter(|w| !w.2).collect();
    let outside: Vec<String> = failed
        .iter()
        .filter(|w| w.0 < fault || w.0 > settled)
        .map(|w| {
            let at = if w.0 < fault {
                format!("{:?} before the fault", fault - w.0)
            } else {
                format!("{:?} after writes flowed again", w.0 - settled)
            };
            format!("w:{} {at}", w.1)
        })
        .collect();
    assert!(
        outside.is_empty(),
        "writes failed outside the recovery: {outside:?}"
    );
    eprintln!(
        "{} writes acknowledged and read back, {} failed during the recovery",
        acked.len(),
        failed.len()
    );
    assert!(
        failed.len() <= MAX_FAILED_WRITES,
        "{} writes failed during the recovery",
        failed.len()
    );
}

/// Waits until `GET key` on `host:port` (a replica) answers `value`.
fn wait_replicated(host: &str, port: u16, key: &str, value: &str) {
    wait_until(
        &format!("{key}={value} on {host}:{port}"),
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let got = cli(host, port, &["GET", key]);
            if got == value {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        },
    );
}

/// Machines in file order: redis1 .10, redis2 .11, haproxy1 .12, haproxy2 .13, app .14; the
/// first replacement gets .15.
#[test]
fn a_crashed_redis_machine_is_failed_over_and_replaced_while_a_client_writes() {
    let Some(mut env) = Env::new(1, |t| t) else {
        return;
    };
    env.start(&[]);
    let app = env.ip(14);
    let writer = Writer::start(format!("{app}:7001").parse().unwrap());
    writer.wait_acked("the client's first writes", Instant::now(), 50);
    let crashed_at = Instant::now();
    env.fault("redis1", "crash", &[]);
    env.wait("the recovery of redis1", RECOVERY, |e| {
        e.ended("machine redis1 lost", "completed")
    });
    env.wait("both shards ok again", RECOVERY, |e| {
        ["r9001", "r9002"].iter().all(|s| {
            let sh = e.shard(s);
            sh["state"] == "ok"
                && sh["master"] == "redis2"
                && sh["replicas"][0]["machine"] == "redis1"
        })
    });
    // Writes resumed through the app proxy, and none acknowledged was lost.
    let settled = Instant::now();
    writer.wait_acked("writes through the app proxy", settled, 20);
    let log = writer.finish();
    assert_no_acknowledged_write_lost(&app, &log, crashed_at, settled);
    // The replacement is a replica of redis2, synced, at its new address.
    let new = env.machine("redis1");
    assert_eq!(new["address"], env.ip(15), "{new}");
    assert_eq!(new["state"], "up", "monitored again: {new}");
    let last_ok = log.iter().rev().find(|(_, _, ok)| *ok).unwrap().1;
    wait_replicated(
        &env.ip(15),
        9001,
        &format!("w:{last_ok}"),
        &last_ok.to_string(),
    );
    assert!(cli(&env.ip(15), 9001, &["ROLE"]).starts_with("slave"));
    // Registered on both proxies at the new address, and the proxies' files say so too.
    for proxy in [12u8, 13] {
        let api =
            medic_haproxy::RuntimeApi::tcp(format!("{}:9999", env.ip(proxy)).parse().unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        use medic_haproxy::ProxyApi;
        let servers = rt.block_on(api.servers(Some("redis-r9001"))).unwrap();
        let r1 = servers.iter().find(|s| s.server == "redis1").unwrap();
        let r2 = servers.iter().find(|s| s.server == "redis2").unwrap();
        assert_eq!(r1.addr, env.ip(15));
        assert!(r1.in_maint(), "a replica stays out of rotation");
        assert!(r2.is_ready());
    }
    // ... and so does each proxy's haproxy.cfg, which a reload or restart reads.
    for proxy in ["haproxy1", "haproxy2"] {
        let (id, _) = env.instances(proxy).remove(0);
        let cfg = std::fs::read_to_string(
            env._dir
                .path()
                .join(format!("lab/machines/{id}/etc-upper/haproxy/haproxy.cfg")),
        )
        .unwrap();
        let line = |backend: &str, server: &str| {
            let section = cfg.split(&format!("\nbackend {backend}\n")).nth(1).unwrap();
            section
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("server {server} ")))
                .unwrap()
                .trim()
                .to_owned()
        };
        let r1 = line("redis-r9001", "redis1");
        assert!(
            r1.contains(&format!("{}:9001", env.ip(15))) && r1.ends_with("disabled"),
            "{proxy}: {r1}"
        );
        assert!(
            !line("redis-r9001", "redis2").contains("disabled"),
            "{proxy}"
        );
    }
    // Exactly one replacement; the old instance is terminated.
    let inst = env.instances("redis1");
    assert_eq!(inst.len(), 2, "{inst:?}");
    assert_eq!(inst.iter().filter(|(_, s)| s == "running").count(), 1);
    // Prometheus sees it; `medic status` and `medic history` tell it.
    wait_until(
        "the completed recovery in /metrics",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let metrics = http_text(env.port, "/metrics");
            if metrics.contains("medic_recoveries_total{outcome=\"completed\"} 1") {
                Ok(())
            } else {
                Err(metrics)
            }
        },
    );
    let status = text(&medic(&["status", "-t", env.f()]));
    let r9001 = status
        .lines()
        .find(|l| l.starts_with("r9001"))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(r9001, "r9001 9001 redis2 redis1 (in sync) ok", "{status}");
    let history = text(&medic(&["history", "-t", env.f()]));
    assert!(
        history.contains("machine redis1 lost  completed"),
        "{history}"
    );
    assert!(history.contains("launch"), "{history}");
    wait_until(
        "every kind of event in `medic events`",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let events = text(&medic(&["events", "-t", env.f()]));
            let all = ["detection", "recovery_start", "step_start", "recovery_done"]
                .iter()
                .all(|kind| events.contains(kind));
            if all && events.contains("13/24 launch") {
                Ok(())
            } else {
                Err(events)
            }
        },
    );
    // The webhook heard about it.
    for e in ["detection", "recovery_start", "recovery_done"] {
        env.hook.wait_for(e);
    }
}

#[test]
fn a_dead_master_process_is_failed_over_and_comes_back_as_a_replica() {
    let Some(mut env) = Env::new(2, |t| t) else {
        return;
    };
    env.start(&[]);
    let app = env.ip(14);
    let writer = Writer::start(format!("{app}:7001").parse().unwrap());
    writer.wait_acked("the client's first writes", Instant::now(), 50);
    // The process exits; the machine stays: connections are refused.
    let killed_at = Instant::now();
    let _ = cli(&env.ip(10), 9001, &["SHUTDOWN", "NOSAVE"]);
    env.wait("the restart of r9001@redis1", RECOVERY, |e| {
        e.ended("r9001@redis1 died", "completed")
    });
    env.wait("r9001 ok with redis1 as replica", RECOVERY, |e| {
        let sh = e.shard("r9001");
        sh["state"] == "ok" && sh["master"] == "redis2"
    });
    let settled = Instant::now();
    writer.wait_acked("writes through the app proxy", settled, 20);
    let log = writer.finish();
    assert_no_acknowledged_write_lost(&app, &log, killed_at, settled);
    assert!(cli(&env.ip(10), 9001, &["ROLE"]).starts_with("slave"));
    assert_eq!(cli(&app, 7001, &["SET", "after", "2"]), "OK");
    wait_replicated(&env.ip(10), 9001, "after", "2");
    // The other shard on the machine was not touched, and nothing was replaced.
    assert_eq!(env.shard("r9002")["master"], "redis1");
    assert_eq!(env.instances("redis1").len(), 1);
}

#[test]
fn a_crashed_haproxy_is_replaced_its_dns_record_updated_and_app_proxies_repointed() {
    let Some(mut env) = Env::new(3, |t| t) else {
        return;
    };
    env.start(&[]);
    let app = env.ip(14);
    let writer = Writer::start(format!("{app}:7001").parse().unwrap());
    writer.wait_acked("the client's first writes", Instant::now(), 50);
    let crashed_at = Instant::now();
    env.fault("haproxy1", "crash", &[]);
    env.wait("the recovery of haproxy1", RECOVERY, |e| {
        e.ended("machine haproxy1 lost", "completed")
    });
    let settled = Instant::now();
    writer.wait_acked("writes go on", settled, 20);
    let log = writer.finish();
    assert_no_acknowledged_write_lost(&app, &log, crashed_at, settled);
    let new = env.ip(15);
    // The lab's DNS server answers with the replacement's address.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let secret = medic_rfc2136::read_secret(&env._dir.path().join("lab/tsig.key")).unwrap();
    let dns = medic_rfc2136::Rfc2136::new(
        format!("{}:53", env.ip(2)).parse().unwrap(),
        "barton.lab",
        "medic",
        "hmac-sha256",
        secret,
    )
    .unwrap();
    use medic_cloud::Dns;
    let rs = rt
        .block_on(dns.read("haproxy1.barton.lab"))
        .unwrap()
        .unwrap();
    assert_eq!(rs.values, vec![new.parse::<std::net::IpAddr>().unwrap()]);
    // The app proxy points at it and takes it as its primary again.
    use medic_haproxy::ProxyApi;
    let api = medic_haproxy::RuntimeApi::tcp(format!("{app}:9998").parse().unwrap());
    let servers = rt.block_on(api.servers(Some("app-r9001"))).unwrap();
    let h1 = servers.iter().find(|s| s.server == "haproxy1").unwrap();
    assert_eq!(h1.addr, new);
    assert!(h1.is_ready());
    // The new proxy routes to the current master.
    assert_eq!(cli(&new, 8001, &["SET", "via", "new"]), "OK");
}

#[test]
fn a_monitor_cut_off_from_a_healthy_master_alerts_and_does_not_fail_over() {
    let Some(mut env) = Env::new(4, |t| t) else {
        return;
    };
    env.start(&[]);
    env.fault("redis1", "partition", &["--from", "monitor"]);
    env.wait("the cut-off alert", Duration::from_secs(30), |e| {
        e.alerts()
            .iter()
            .any(|a| a.contains("monitor host cannot reach redis1"))
    });
    assert!(env.history().is_empty(), "{:?}", env.history());
    assert_eq!(env.shard("r9001")["master"], "redis1");
    // Clients never noticed.
    assert_eq!(cli(&env.ip(14), 7001, &["SET", "k", "v"]), "OK");
    env.fault("redis1", "heal", &[]);
    env.wait("redis1 up again", Duration::from_secs(20), |e| {
        e.machine("redis1")["state"] == "up"
    });
    assert!(env.history().is_empty());
}

#[test]
fn a_hung_master_is_failed_over_and_never_takes_writes_again() {
    let Some(mut env) = Env::new(5, |t| t) else {
        return;
    };
    env.start(&[]);
    let app = env.ip(14);
    let old = env.instances("redis1")[0].0.clone();
    let writer = Writer::start(format!("{app}:7001").parse().unwrap());
    writer.wait_acked("the client's first writes", Instant::now(), 50);
    let hung_at = Instant::now();
    env.fault("redis1", "hang", &[]);
    env.wait("the recovery of redis1", RECOVERY, |e| {
        e.ended("machine redis1 lost", "completed")
    });
    let settled = Instant::now();
    writer.wait_acked("writes through the app proxy", settled, 20);
    let log = writer.finish();
    assert_no_acknowledged_write_lost(&app, &log, hung_at, settled);
    env.fault("redis1", "heal", &[]);
    // The hung instance was terminated, not resumed: it can never take a write again.
    let inst = env.instances("redis1");
    assert!(inst.contains(&(old, "terminated".to_owned())), "{inst:?}");
    assert!(
        TcpStream::connect_timeout(
            &format!("{}:9001", env.ip(10)).parse().unwrap(),
            Duration::from_millis(300)
        )
        .is_err()
    );
    assert_eq!(cli(&env.ip(14), 7001, &["SET", "k", "v"]), "OK");
    assert_eq!(env.shard("r9001")["master"], "redis2");
}

/// SIGKILL-equivalent aborts after every step of a redis machine's recovery in turn; each
/// restart rolls forward from the journal. At the launch step the abort comes after the
/// instance was launched but before the journal heard of it.
#[test]
fn a_controller_killed_after_every_step_resumes_and_launches_exactly_one_replacement() {
    let Some(mut env) = Env::new(6, |t| t) else {
        return;
    };
    env.start(&[("MEDIC_FAILPOINT", "after-done:1")]);
    env.fault("redis1", "crash", &[]);
    assert!(env.wait_exit(RECOVERY), "{}", tail(&env.logs(), 30));
    let journal_dir = env._dir.path().join("lab/controller/journal");
    let plan_steps = || -> Vec<String> {
        let f = std::fs::read_dir(&journal_dir)
            .unwrap()
            .flatten()
            .next()
            .unwrap()
            .path();
        let first = std::fs::read_to_string(f).unwrap();
        let begin: Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
        begin["plan"]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["action"].as_str().unwrap().to_owned())
            .collect()
    };
    let steps = plan_steps();
    assert!(steps.len() > 10, "{steps:?}");
    for n in 2..=steps.len() {
        let point = if steps[n - 1] == "launch_instance" {
            format!("after-exec:{n}")
        } else {
            format!("after-done:{n}")
        };
        env.start(&[("MEDIC_FAILPOINT", &point)]);
        assert!(
            env.wait_exit(RECOVERY),
            "{point}: did not reach the failpoint\n{}",
            tail(&env.logs(), 30)
        );
    }
    env.start(&[]);
    env.wait("the recovery's end", RECOVERY, |e| {
        e.ended("machine redis1 lost", "completed")
    });
    let r = env.recovery("machine redis1 lost").unwrap();
    // One restart per step: the last one only finds every step done and closes the recovery.
    assert_eq!(r["resumed"], steps.len(), "{r}");
    assert_eq!(
        env.history().len(),
        1,
        "one recovery, resumed, not restarted"
    );
    let inst = env.instances("redis1");
    assert_eq!(inst.len(), 2, "exactly one replacement: {inst:?}");
    assert_eq!(inst.iter().filter(|(_, s)| s == "running").count(), 1);
    env.wait("both shards ok", RECOVERY, |e| {
        ["r9001", "r9002"]
            .iter()
            .all(|s| e.shard(s)["state"] == "ok")
    });
    assert_eq!(cli(&env.ip(14), 7001, &["SET", "k", "v"]), "OK");
}

#[test]
fn a_crash_beyond_the_replacement_limit_fails_over_and_holds_the_replacement() {
    let Some(mut env) = Env::new(7, |t| {
        t.replace(
            "max_replacements_per_hour: 3",
            "max_replacements_per_hour: 1",
        )
    }) else {
        return;
    };
    env.start(&[]);
    env.fault("redis1", "crash", &[]);
    env.wait("the first recovery", RECOVERY, |e| {
        e.ended("machine redis1 lost", "completed")
    });
    env.wait("redis1 in sync", RECOVERY, |e| {
        e.shard("r9001")["state"] == "ok" && e.shard("r9002")["state"] == "ok"
    });
    env.fault("redis2", "crash", &[]);
    env.wait("the second recovery, held", RECOVERY, |e| {
        e.ended("machine redis2 lost", "held")
    });
    // Failover happened: the replacement redis1 is master of both; redis2 is not replaced.
    env.wait(
        "redis1 master of both, redis2 unmonitored, the alert",
        RECOVERY,
        |e| {
            e.shard("r9001")["master"] == "redis1"
                && e.shard("r9002")["master"] == "redis1"
                && e.machine("redis2")["state"] == "unmonitored"
                && e.alerts().iter().any(|a| a.contains("replacement held"))
        },
    );
    assert_eq!(env.instances("redis2").len(), 1);
    env.hook.wait_for("held");
    assert_eq!(cli(&env.ip(14), 7001, &["SET", "k", "v"]), "OK");
}

/// Reads many keys in one pipeline: `GET` each, replies in order (`None` for a nil).
fn get_many(addr: &str, keys: &[String]) -> Vec<Option<String>> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut out = Vec::new();
    for chunk in keys.chunks(500) {
        let mut cmds = String::new();
        for k in chunk {
            cmds.push_str(&format!("*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len()));
        }
        w.write_all(cmds.as_bytes()).unwrap();
        for _ in chunk {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if line.starts_with("$-1") {
                out.push(None);
            } else {
                let mut v = String::new();
                r.read_line(&mut v).unwrap();
                out.push(Some(v.trim_end().to_owned()));
            }
        }
    }
    out
}

#[test]
fn a_switchover_under_load_loses_no_acknowledged_write() {
    let Some(mut env) = Env::new(8, |t| t) else {
        return;
    };
    env.start(&[]);
    let app = env.ip(14);
    let writer = Writer::start(format!("{app}:7001").parse().unwrap());
    writer.wait_acked("the client's first writes", Instant::now(), 50);
    let asked_at = Instant::now();
    let out = medic(&["switchover", "r9001", "-t", env.f()]);
    assert!(out.status.success(), "{}", text(&out));
    env.wait("the switchover", RECOVERY, |e| {
        e.ended("switchover of r9001", "completed")
    });
    let settled = Instant::now();
    writer.wait_acked("writes go on", settled, 20);
    let log = writer.finish();
    assert_no_acknowledged_write_lost(&app, &log, asked_at, settled);
    // ... and every one of them is on the new master itself.
    let acked: Vec<String> = log
        .iter()
        .filter(|w| w.2)
        .map(|w| format!("w:{}", w.1))
        .collect();
    let on_redis2 = get_many(&format!("{}:9001", env.ip(11)), &acked);
    let missing = on_redis2.iter().filter(|v| v.is_none()).count();
    assert_eq!(missing, 0, "acknowledged writes missing on redis2");
    let sh = env.shard("r9001");
    assert_eq!(sh["master"], "redis2", "{sh}");
    env.wait("redis1 a replica in sync", RECOVERY, |e| {
        e.shard("r9001")["state"] == "ok"
    });
    assert!(cli(&env.ip(10), 9001, &["ROLE"]).starts_with("slave"));
    // The pause, as the journal measured it: from holding writes to routing to redis2.
    let r = env.recovery("switchover of r9001").unwrap();
    eprintln!("switchover steps: {}", r["steps"]);
}

#[test]
fn sighup_reloads_a_valid_topology_keeps_the_running_one_on_error_and_mutations_need_the_token() {
    let Some(mut env) = Env::new(9, |t| t) else {
        return;
    };
    env.start(&[]);
    assert_eq!(
        post_without_token(env.port, "/api/unmonitor/redis2"),
        "HTTP/1.1 401 Unauthorized"
    );
    let pid = env.run.as_ref().unwrap().id().to_string();
    let good = std::fs::read_to_string(&env.file).unwrap();
    std::fs::write(
        &env.file,
        good.replace("fall: 3, rise: 2", "fall: zero, rise: 2"),
    )
    .unwrap();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    env.wait("the refusal", Duration::from_secs(10), |e| {
        e.logs().contains("the topology was not reloaded")
    });
    assert!(env.status().is_some(), "still running on the old topology");
    assert_eq!(
        env.status().unwrap()["dns"].as_array().map(Vec::len),
        Some(2),
        "the running topology is unchanged"
    );
    // A valid topology that differs: one more DNS record, and webhooks to another receiver.
    let hook2 = Hook::start();
    let changed = good
        .replace(
            &format!("http://127.0.0.1:{}/hook", env.hook.port),
            &format!("http://127.0.0.1:{}/hook", hook2.port),
        )
        .replace(
            "    - {name: haproxy2.barton.lab, machines: [haproxy2]}\n",
            "    - {name: haproxy2.barton.lab, machines: [haproxy2]}\n    - {name: redis2.barton.lab, machines: [redis2]}\n",
        );
    assert_ne!(changed, good);
    std::fs::write(&env.file, &changed).unwrap();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    env.wait("the reload", Duration::from_secs(10), |e| {
        e.logs().contains("Topology reloaded")
    });
    // Applied: the status lists the new record, and the next notification goes to the new
    // receiver, not the old one.
    let dns = env.status().unwrap()["dns"].clone();
    assert!(
        dns.as_array().is_some_and(|d| d
            .iter()
            .any(|r| r["name"] == "redis2.barton.lab" && r["values"][0] == env.ip(11))),
        "{dns}"
    );
    let before = env.hook.events().len();
    env.fault("redis1", "partition", &["--from", "monitor"]);
    hook2.wait_for("alert");
    env.fault("redis1", "heal", &[]);
    env.wait("redis1 up again", Duration::from_secs(20), |e| {
        e.machine("redis1")["state"] == "up"
    });
    assert_eq!(
        env.hook.events()[before..],
        [] as [String; 0],
        "the old receiver heard nothing after the reload"
    );
    // Maintenance through the CLI (with the token from the state directory) is persisted.
    let out = medic(&["unmonitor", "redis2", "-t", env.f()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.machine("redis2")["state"], "maintenance");
    env.stop();
    env.start(&[]);
    assert_eq!(env.machine("redis2")["state"], "maintenance");
    let out = medic(&["monitor", "redis2", "-t", env.f()]);
    assert!(out.status.success(), "{}", text(&out));
    env.wait("redis2 watched again", Duration::from_secs(10), |e| {
        e.machine("redis2")["state"] == "up"
    });
}

/// The status page as headless Chromium renders it (its script fetches the API), as text.
fn page_text(port: u16) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .expect("chromium (scripts/deps installs it)");
    let html = String::from_utf8_lossy(&out.stdout);
    // Tags out, whitespace folded: what a reader sees, in order.
    let mut text = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn the_status_page_shows_the_failure_then_the_recovered_state() {
    let Some(mut env) = Env::new(10, |t| t) else {
        return;
    };
    env.start(&[]);
    let before = page_text(env.port);
    assert!(
        before.contains("r9001 9001 ok redis1 redis2 in sync"),
        "{before}"
    );
    env.fault("redis1", "crash", &[]);
    // The failure: redis1 down (before or while it is recovered).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    while Instant::now() < deadline {
        seen = page_text(env.port);
        if seen.contains("redis1 redis down") || seen.contains("Recovery in flight") {
            break;
        }
    }
    assert!(
        seen.contains("redis1 redis down") || seen.contains("Recovery in flight"),
        "{seen}"
    );
    env.wait("the recovery", RECOVERY, |e| {
        e.ended("machine redis1 lost", "completed")
    });
    env.wait("both shards ok", RECOVERY, |e| {
        e.shard("r9001")["state"] == "ok" && e.shard("r9002")["state"] == "ok"
    });
    let after = page_text(env.port);
    assert!(
        after.contains("r9001 9001 ok redis2 redis1 in sync"),
        "{after}"
    );
    assert!(after.contains("machine redis1 lost"), "{after}");
    assert!(after.contains("completed"), "{after}");
    assert!(
        after.contains(&format!("redis1 redis up {}", env.ip(15))),
        "{after}"
    );
}
