//! A lab deployment of examples/lab.yaml and its controller, for the end-to-end tests of
//! `medic run` (run_lab.rs, partitions.rs): real redis servers, HAProxies, sshd and named in
//! network namespaces, a client writing through the app proxy, a webhook receiver, and the
//! checks every recovery test makes — every acknowledged write read back through the clients'
//! path. Needs root.
//!
//! The tests of one binary run one at a time (a lock): each has a whole deployment to itself,
//! and the machine has two cores.

#![allow(
    clippy::unwrap_used,
    dead_code,
    reason = "a test that cannot set up should fail loudly; each test binary uses a part of this"
)]

pub mod client;
pub mod failover;
pub mod page;
pub mod pg;
pub mod pg_service;
pub mod prometheus;
pub mod web;

pub use client::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use medic_testkit::wait_until;
use serde_json::Value;

pub static SERIAL: Mutex<()> = Mutex::new(());

pub fn medic(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(args)
        .output()
        .unwrap()
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A webhook receiver: every body POSTed to it.
pub struct Hook {
    pub port: u16,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Hook {
    pub fn start() -> Hook {
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

    pub fn events(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| b["event"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    /// Every body received, as JSON text (to search).
    pub fn bodies_text(&self) -> String {
        serde_json::to_string(&*self.bodies.lock().unwrap()).unwrap()
    }

    /// Waits for a webhook of kind `event` (they are sent from a task of their own, after the
    /// event itself): fails with the ones received so far.
    pub fn wait_for(&self, event: &str) {
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

pub fn http_get(port: u16, path: &str) -> Option<Value> {
    let mut s = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (_, body) = text.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

pub fn http_text(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    buf
}

/// A POST without the API token: the status line.
pub fn post_without_token(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    buf.lines().next().unwrap_or_default().to_owned()
}

/// One lab deployment and its controller.
pub struct Env {
    pub _dir: tempfile::TempDir,
    pub file: PathBuf,
    pub net: u32,
    pub port: u16,
    pub hook: Hook,
    pub run: Option<Child>,
    pub log: PathBuf,
    pub _serial: std::sync::MutexGuard<'static, ()>,
}

impl Env {
    /// examples/lab.yaml on subnet 10.75.K.0/24, with `edit` applied to the text.
    pub fn new(k: u32, edit: impl Fn(String) -> String) -> Option<Env> {
        Env::of_example("lab.yaml", k, edit)
    }

    /// `examples/EXAMPLE` on subnet 10.75.K.0/24, with `edit` applied to the text; a relative
    /// `playbooks` directory is resolved against examples/.
    pub fn of_example(example: &str, k: u32, edit: impl Fn(String) -> String) -> Option<Env> {
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
        let text_in = std::fs::read_to_string(root.join("examples").join(example)).unwrap();
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
            // Whatever is left of the lab's subnet (a service's address).
            .replace("10.77.0.", &format!("10.75.{net}."))
            .replace(
                "listen: 127.0.0.1:7600",
                &format!("listen: 127.0.0.1:{port}"),
            )
            .replace(
                "http://127.0.0.1:7601/hook",
                &format!("http://127.0.0.1:{}/hook", hook.port),
            );
        // An example's own playbook directory (examples/NAME), relative to the example.
        let topo: String = topo
            .lines()
            .map(|l| match l.strip_prefix("playbooks: ") {
                Some(dir) if !dir.contains('/') => {
                    format!("playbooks: {}\n", root.join("examples").join(dir).display())
                }
                _ => format!("{l}\n"),
            })
            .collect();
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

    pub fn f(&self) -> &str {
        self.file.to_str().unwrap()
    }

    pub fn ip(&self, host: u8) -> String {
        format!("10.75.{}.{host}", self.net)
    }

    /// Starts `medic run` (with extra environment) and waits for its API.
    pub fn start(&mut self, envs: &[(&str, &str)]) {
        self.start_limited(envs, None);
    }

    /// [`Env::start`], `medic run` limited to `open_files` descriptors if given (util-linux
    /// `prlimit`, which execs it: the pid is medic's).
    pub fn start_limited(&mut self, envs: &[(&str, &str)], open_files: Option<u64>) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = match open_files {
            None => Command::new(env!("CARGO_BIN_EXE_medic")),
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(env!("CARGO_BIN_EXE_medic"));
                c
            }
        };
        let child = cmd
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
    pub fn wait_exit(&mut self, within: Duration) -> bool {
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

    pub fn stop(&mut self) {
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

    pub fn status(&self) -> Option<Value> {
        http_get(self.port, "/api/status")
    }

    /// `/api/history`, or what went wrong asking for it.
    pub fn try_history(&self) -> Result<Vec<Value>, String> {
        let v = http_get(self.port, "/api/history")
            .ok_or_else(|| "GET /api/history gave no JSON answer".to_owned())?;
        v.as_array()
            .cloned()
            .ok_or_else(|| format!("/api/history is not a list: {v}"))
    }

    /// `/api/history`; a controller that does not answer fails the test (it is never taken
    /// for an empty history).
    pub fn history(&self) -> Vec<Value> {
        self.try_history()
            .unwrap_or_else(|e| panic!("{e}\nlog (tail):\n{}", tail(&self.logs(), 40)))
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `cond` every 100 ms; on timeout fails with the controller's view and log.
    pub fn wait(&self, what: &str, within: Duration, cond: impl Fn(&Env) -> bool) {
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

    pub fn fault(&self, machine: &str, kind: &str, extra: &[&str]) {
        let mut args = vec!["lab", "fault", machine, kind];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--topology", self.f()]);
        let out = medic(&args);
        assert!(out.status.success(), "{}", text(&out));
    }

    /// The first recovery in history (newest first) whose event mentions `what`.
    pub fn recovery(&self, what: &str) -> Option<Value> {
        self.history()
            .into_iter()
            .find(|r| r["event"].as_str().is_some_and(|e| e.contains(what)))
    }

    /// Whether the recovery mentioning `what` ended with `outcome` (false while the API does
    /// not answer: a wait goes on and, at its deadline, shows why).
    pub fn ended(&self, what: &str, outcome: &str) -> bool {
        self.try_history().is_ok_and(|h| {
            h.iter()
                .find(|r| r["event"].as_str().is_some_and(|e| e.contains(what)))
                .is_some_and(|r| r["outcome"]["outcome"].as_str() == Some(outcome))
        })
    }

    pub fn shard(&self, name: &str) -> Value {
        self.status()
            .and_then(|s| {
                s["shards"]
                    .as_array()
                    .and_then(|a| a.iter().find(|x| x["name"] == name).cloned())
            })
            .unwrap_or(Value::Null)
    }

    pub fn machine(&self, name: &str) -> Value {
        self.status()
            .and_then(|s| {
                s["machines"]
                    .as_array()
                    .and_then(|a| a.iter().find(|x| x["name"] == name).cloned())
            })
            .unwrap_or(Value::Null)
    }

    /// Lab instances (records) of `machine`: (id, state).
    pub fn instances(&self, machine: &str) -> Vec<(String, String)> {
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

    /// The network namespace of `machine`'s running instance.
    pub fn netns(&self, machine: &str) -> String {
        lab_netns(&self._dir.path().join("lab"), machine)
    }

    /// The servers of `backend` (every backend's with `None`) as the HAProxy on `machine`
    /// says, asked of its admin API on the machine's loopback at `port` (where medic reaches
    /// it over SSH).
    pub fn haproxy_servers(
        &self,
        machine: &str,
        port: u16,
        backend: Option<&str>,
    ) -> Vec<medic_haproxy::ServerState> {
        haproxy_servers_in(&self.netns(machine), port, backend)
    }

    /// The haproxy.cfg of `machine`'s current instance (empty if there is none).
    pub fn haproxy_cfg(&self, machine: &str) -> String {
        let Some((id, _)) = self.instances(machine).into_iter().next() else {
            return String::new();
        };
        let path = self
            ._dir
            .path()
            .join(format!("lab/machines/{id}/etc-upper/haproxy/haproxy.cfg"));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// What `machine`'s HAProxy says of `backend`'s servers, asked on its admin unix socket
    /// (its instance's `/run`, as the lab mounts it).
    pub fn haproxy_socket_servers(
        &self,
        machine: &str,
        backend: Option<&str>,
    ) -> Vec<medic_haproxy::ServerState> {
        use medic_haproxy::ProxyApi;
        let (id, _) = self.instances(machine).into_iter().next().unwrap();
        let path = self
            ._dir
            .path()
            .join(format!("lab/machines/{id}/run/haproxy/admin.sock"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let api = medic_haproxy::RuntimeApi::new(medic_haproxy::Endpoint::Unix(path));
        rt.block_on(api.servers(backend)).unwrap()
    }

    /// The `server` line of `backend` in the haproxy.cfg of `machine`'s current instance
    /// (what a reload or a restart reads), trimmed; empty if there is none.
    pub fn haproxy_cfg_line(&self, machine: &str, backend: &str, server: &str) -> String {
        self.haproxy_cfg(machine)
            .split(&format!("\nbackend {backend}\n"))
            .nth(1)
            .and_then(|section| {
                section
                    .lines()
                    .find(|l| l.trim_start().starts_with(&format!("server {server} ")))
            })
            .unwrap_or("")
            .trim()
            .to_owned()
    }

    pub fn alerts(&self) -> Vec<String> {
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

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub const RECOVERY: Duration = Duration::from_secs(60);

/// The network namespace of the running lab machine `machine`, the lab's state being `lab`.
pub fn lab_netns(lab: &std::path::Path, machine: &str) -> String {
    for e in std::fs::read_dir(lab.join("machines")).unwrap().flatten() {
        let Ok(t) = std::fs::read_to_string(e.path().join("record.json")) else {
            continue;
        };
        let v: Value = serde_json::from_str(&t).unwrap();
        if v["tags"]["medic:machine"] == machine && v["state"] == "running" {
            return v["netns"].as_str().unwrap().to_owned();
        }
    }
    panic!("no running lab machine {machine}");
}

/// Runs `f` on a thread that joined the network namespace `netns`: what it connects to, it
/// connects to from inside that machine.
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            use std::os::fd::AsFd;
            let ns = std::fs::File::open(format!("/run/netns/{netns}")).unwrap();
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

/// [`Env::haproxy_servers`] by namespace: the HAProxy admin API at 127.0.0.1:`port` in `netns`.
pub fn haproxy_servers_in(
    netns: &str,
    port: u16,
    backend: Option<&str>,
) -> Vec<medic_haproxy::ServerState> {
    in_netns(netns, || {
        use medic_haproxy::ProxyApi;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let api =
            medic_haproxy::RuntimeApi::tcp(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        rt.block_on(api.servers(backend)).unwrap()
    })
}

/// Every file under `dir`, at any depth.
pub fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
