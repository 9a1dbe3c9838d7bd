//! Real servers for tests.
//!
//! Each server gets its own loopback address (Linux routes all of 127.0.0.0/8 to `lo`), its own
//! directory with its config and pid files, and is killed — its whole process group — when the
//! handle is dropped, so a failing test leaves nothing running. Nothing here is a fake.
//!
//! Setup failures panic with what failed: this crate is only for tests.

#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    reason = "test support: a failed setup must stop the test loudly"
)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

mod certs;
mod etcd;
mod net;
mod postgres;
mod sshd;
pub use certs::Certs;
pub use etcd::EtcdCluster;
pub use net::full_listener;
pub use postgres::{PG_BIN, Postgres};
pub use sshd::{PLAIN_USER, SUDO_USER, Sshd, TEST_HOME, TEST_USER, keygen};

/// A loopback address no other test of this process uses: `127.A.B.C`, `A` from the process
/// id so concurrently running test binaries do not meet either.
pub fn unique_loopback() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let a = 40 + (std::process::id() % 200) as u8;
    Ipv4Addr::new(127, a, (n / 250) as u8, (n % 250 + 2) as u8)
}

/// Finds a program in the usual places (tests run without /usr/sbin on PATH sometimes).
pub fn program(name: &str) -> PathBuf {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/bin",
        "/usr/local/sbin",
    ] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed: .ci/run installs it (see scripts/test)");
}

/// A child process in its own process group, killed with the group on drop.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal to the whole process group.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-s", sig, "--"])
                .arg(format!("-{}", c.id()))
                .status();
        }
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(&mut self) {
        self.signal("KILL");
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `addr` accepts TCP connections.
pub fn wait_port(addr: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A redis-server of its own.
#[derive(Debug)]
pub struct RedisServer {
    pub addr: SocketAddr,
    pub proc: Proc,
    pub dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start(ip: Ipv4Addr, port: u16) -> RedisServer {
        Self::start_with(ip, port, &[])
    }

    pub fn start_replica_of(ip: Ipv4Addr, port: u16, master: SocketAddr) -> RedisServer {
        Self::start_with(
            ip,
            port,
            &[
                "--replicaof",
                &master.ip().to_string(),
                &master.port().to_string(),
            ],
        )
    }

    pub fn start_with(ip: Ipv4Addr, port: u16, extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let addr = SocketAddr::from((ip, port));
        let mut cmd = Command::new(program("redis-server"));
        let ip_s = ip.to_string();
        cmd.args([
            "--bind",
            &ip_s,
            "--port",
            &port.to_string(),
            "--protected-mode",
            "no",
        ])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--bind-source-addr", &ip_s, "--replica-announce-ip", &ip_s])
        .args([
            "--repl-diskless-sync",
            "yes",
            "--repl-diskless-sync-delay",
            "0",
        ])
        .arg("--dir")
        .arg(dir.path())
        .arg("--pidfile")
        .arg(dir.path().join("redis.pid"))
        .args(extra);
        let proc = Proc::spawn("redis-server", cmd, dir.path().join("redis.log"));
        let s = RedisServer { addr, proc, dir };
        assert!(
            wait_port(addr, Duration::from_secs(10)),
            "redis {addr} did not start:\n{}",
            s.proc.log_text()
        );
        s
    }

    /// One command through redis-cli, its reply as text.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.addr, args)
    }
}

pub fn redis_cli(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new(program("redis-cli"))
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// An haproxy of its own, with an admin runtime API on a unix socket and on TCP.
#[derive(Debug)]
pub struct Haproxy {
    pub ip: Ipv4Addr,
    pub api_tcp: SocketAddr,
    pub api_socket: PathBuf,
    pub config: PathBuf,
    pub pidfile: PathBuf,
    pub proc: Proc,
    pub dir: tempfile::TempDir,
}

impl Haproxy {
    /// Starts haproxy in the foreground (`-db`) with `body` (frontends, backends) after a global
    /// section that enables the runtime API. `{dir}` in `body` is replaced with its directory.
    pub fn start(ip: Ipv4Addr, body: &str) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let api_tcp = SocketAddr::from((ip, 9999));
        let api_socket = dir.path().join("admin.sock");
        let pidfile = dir.path().join("haproxy.pid");
        let config = dir.path().join("haproxy.cfg");
        let text = format!(
            "global\n    stats socket {} mode 600 level admin\n    stats socket ipv4@{} level admin\n    \
             pidfile {}\n    server-state-file {}\n\ndefaults\n    mode tcp\n    timeout connect 200ms\n    \
             timeout client 30s\n    timeout server 30s\n    load-server-state-from-file global\n\n{}\n",
            api_socket.display(),
            api_tcp,
            pidfile.display(),
            dir.path().join("server-state").display(),
            body.replace("{dir}", &dir.path().display().to_string()),
        );
        std::fs::write(&config, text).unwrap();
        let mut cmd = Command::new(program("haproxy"));
        cmd.arg("-db").arg("-f").arg(&config);
        let proc = Proc::spawn("haproxy", cmd, dir.path().join("haproxy.log"));
        let h = Haproxy {
            ip,
            api_tcp,
            api_socket,
            config,
            pidfile,
            proc,
            dir,
        };
        assert!(
            wait_port(api_tcp, Duration::from_secs(10)),
            "haproxy did not start:\n{}",
            h.proc.log_text()
        );
        h
    }

    /// One runtime API command over TCP, the reply as text.
    pub fn api(&self, command: &str) -> String {
        let mut s = TcpStream::connect_timeout(&self.api_tcp, Duration::from_secs(2)).unwrap();
        s.write_all(format!("{command}\n").as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// Restarts haproxy with the same configuration (a new process, as a reload would).
    pub fn restart(&mut self) {
        self.proc.kill();
        let mut cmd = Command::new(program("haproxy"));
        cmd.arg("-db").arg("-f").arg(&self.config);
        self.proc = Proc::spawn("haproxy", cmd, self.dir.path().join("haproxy-2.log"));
        assert!(
            wait_port(self.api_tcp, Duration::from_secs(10)),
            "haproxy did not restart:\n{}",
            self.proc.log_text()
        );
    }
}

/// The AWS API emulator (moto server), from the venv scripts/deps creates.
pub fn moto_server() -> PathBuf {
    let p = std::env::var_os("MEDIC_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/medic/venv-moto/bin/moto_server"));
    assert!(
        p.exists(),
        "{} is missing: scripts/deps installs moto[server] into a venv there",
        p.display()
    );
    p
}

/// A moto server of its own (its state is this test's alone), AMI ids validated, no default
/// AMIs loaded.
#[derive(Debug)]
pub struct Moto {
    pub addr: SocketAddr,
    pub url: String,
    pub proc: Proc,
    pub dir: tempfile::TempDir,
}

impl Moto {
    pub fn start() -> Moto {
        let dir = tempfile::tempdir().unwrap();
        let addr = SocketAddr::from((unique_loopback(), 5000));
        let mut cmd = Command::new(moto_server());
        cmd.args(["-H", &addr.ip().to_string(), "-p", "5000"])
            .env("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
            .env("MOTO_ENABLE_AMI_VALIDATION", "true");
        let proc = Proc::spawn("moto_server", cmd, dir.path().join("moto.log"));
        let m = Moto {
            addr,
            url: format!("http://{addr}"),
            proc,
            dir,
        };
        assert!(
            wait_port(addr, Duration::from_secs(30)),
            "moto did not start:\n{}",
            m.proc.log_text()
        );
        m
    }
}

/// Whether this process is root. Tests that need it (network namespaces, sshd, test users)
/// call this first. Without root:
/// - under `CI=true` or `MEDIC_REQUIRE_ROOT=1` the test **fails**, naming what it lacked: in CI
///   a skip must never count as a pass;
/// - otherwise it says so on stderr, appends the test's name to the file named by
///   `MEDIC_SKIP_LOG` (so `scripts/test` counts it as skipped, not passed) and returns `false`.
pub fn root_or_skip(test: &str) -> bool {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    if uid == "0" {
        return true;
    }
    // The test binary (its file name less cargo's hash) and the test (libtest names the
    // thread after it): `lab::faults_do_what_they_say`.
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| s.rsplit_once('-').map_or(s.clone(), |(b, _)| b.to_owned()));
    let name = match (binary, std::thread::current().name()) {
        (Some(b), Some(t)) if t != "main" => format!("{b}::{t}"),
        _ => test.to_owned(),
    };
    let lacks = "root (network namespaces, sshd, test users)";
    if skipping_forbidden() {
        panic!(
            "{name} needs {lacks} and cannot run as uid {uid}: CI=true or MEDIC_REQUIRE_ROOT=1 \
             forbids skipping it; run the tests as root"
        );
    }
    eprintln!("SKIPPED {name}: needs {lacks}; CI runs as root");
    if let Some(log) = std::env::var_os("MEDIC_SKIP_LOG") {
        // One short write per line with O_APPEND: lines of concurrent test binaries do not mix.
        let line = format!("{name}\n");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            panic!("cannot record the skip of {name} in MEDIC_SKIP_LOG: {e}");
        }
    }
    false
}

/// Whether a test that cannot run must fail rather than skip: under CI, or when asked.
pub fn skipping_forbidden() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("MEDIC_REQUIRE_ROOT").is_ok_and(|v| v == "1")
}

/// Polls `probe` every `every` until it returns `Ok`, within `within`; then returns its value.
/// On the deadline it panics with `what`, how long it waited and the last thing `probe` saw
/// (its `Err`): a test waits on the condition itself, never on a fixed sleep.
pub fn wait_until<T>(
    what: &str,
    within: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(seen) if Instant::now() >= deadline => {
                panic!("waited {within:?} for {what}; last seen: {seen}")
            }
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// A BIND 9 `named` of its own: primary for one zone, accepting updates signed with a TSIG key
/// made by BIND's own `tsig-keygen`.
#[derive(Debug)]
pub struct Named {
    pub addr: SocketAddr,
    pub zone: String,
    pub key_name: String,
    /// The key file (`key "..." { algorithm ...; secret "..."; };`).
    pub key_file: PathBuf,
    pub proc: Proc,
    pub dir: tempfile::TempDir,
}

impl Named {
    /// named binds only addresses its interfaces have (loopback has 127.0.0.1 alone), so it
    /// listens on 127.0.0.1 with a port of its own; `ip` is the name server's address in the
    /// zone's records.
    pub fn start(ip: Ipv4Addr, zone: &str, key_name: &str) -> Named {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let key = Command::new(program("tsig-keygen"))
            .args(["-a", "hmac-sha256", key_name])
            .output()
            .unwrap();
        assert!(key.status.success(), "tsig-keygen failed");
        let key_file = d.join("tsig.key");
        std::fs::write(&key_file, &key.stdout).unwrap();
        std::fs::write(
            d.join("zone.db"),
            format!("$TTL 60\n@ IN SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 60\n@ IN NS ns.{zone}.\nns IN A {ip}\n"),
        )
        .unwrap();
        let conf = d.join("named.conf");
        std::fs::write(
            &conf,
            format!(
                "controls {{ }};\noptions {{\n  directory \"{d}\";\n  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  \
                 pid-file \"{d}/named.pid\";\n  recursion no;\n  dnssec-validation no;\n  allow-query {{ any; }};\n}};\n\
                 include \"{k}\";\n\
                 zone \"{zone}\" {{ type primary; file \"{d}/zone.db\"; allow-update {{ key \"{key_name}\"; }}; }};\n",
                d = d.display(),
                k = key_file.display(),
            ),
        )
        .unwrap();
        let mut cmd = Command::new(program("named"));
        cmd.arg("-g").arg("-c").arg(&conf);
        let proc = Proc::spawn("named", cmd, d.join("named.log"));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let n = Named {
            addr,
            zone: zone.to_owned(),
            key_name: key_name.to_owned(),
            key_file,
            proc,
            dir,
        };
        assert!(
            wait_port(addr, Duration::from_secs(15)),
            "named did not start:\n{}",
            n.proc.log_text()
        );
        n
    }
}

impl RedisServer {
    /// A redis-server started from a config file, `redis-server DIR/redis.conf`, as medic's
    /// playbook starts them (so `CONFIG REWRITE` has a file to write, and the server can be
    /// restarted from it: kill `proc`, spawn `redis-server` with that file again). The file
    /// has the settings [`RedisServer::start`] passes on the command line, then `extra` (whole
    /// lines, e.g. `"replicaof 127.40.0.2 9001\n"`).
    pub fn start_with_config(ip: Ipv4Addr, port: u16, extra: &str) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let addr = SocketAddr::from((ip, port));
        let conf = d.join("redis.conf");
        std::fs::write(
            &conf,
            format!(
                "bind {ip}\nport {port}\nprotected-mode no\ndaemonize no\nsave \"\"\nappendonly no\n\
                 dir \"{d}\"\npidfile \"{d}/redis.pid\"\nbind-source-addr {ip}\nreplica-announce-ip {ip}\n\
                 repl-diskless-sync yes\nrepl-diskless-sync-delay 0\n{extra}",
                d = d.display(),
            ),
        )
        .unwrap();
        let mut cmd = Command::new(program("redis-server"));
        cmd.arg(&conf);
        let proc = Proc::spawn("redis-server", cmd, d.join("redis.log"));
        let s = RedisServer { addr, proc, dir };
        assert!(
            wait_port(addr, Duration::from_secs(10)),
            "redis {addr} did not start from {}:\n{}",
            conf.display(),
            s.proc.log_text()
        );
        s
    }
}
