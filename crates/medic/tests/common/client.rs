//! The clients of the lab's redis shards, for the recovery tests: a writer through the app
//! proxy that records every write and whether it was acknowledged, `redis-cli`, a pipelined
//! read-back, and the check every recovery test makes — every acknowledged write read back
//! through the clients' path, no write failed outside the recovery. They log in and speak TLS
//! as the lab's topology asks ([`CLIENT_AUTH`], [`CLIENT_TLS`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use medic_testkit::wait_until;

/// The clients' redis login, for a lab whose topology has `redis_auth` (a test sets it once):
/// the writer, the read-back and [`cli`] log in with it.
pub static CLIENT_AUTH: OnceLock<(String, String)> = OnceLock::new();

/// The CA and the certificate's name, for a lab whose topology has `redis_tls` (a test sets it
/// once): the writer, the read-back and [`cli`] speak TLS and verify the servers' certificate.
pub static CLIENT_TLS: OnceLock<(PathBuf, String)> = OnceLock::new();

/// A stream a client reads and writes, in the clear or under TLS.
pub trait Rw: Read + Write + Send {}
impl<T: Read + Write + Send> Rw for T {}

/// A client's connection to `addr` (with TLS when [`CLIENT_TLS`] is set), its reads and writes
/// bounded by `io`.
pub fn redis_stream(
    addr: &SocketAddr,
    connect: Duration,
    io: Duration,
) -> std::io::Result<Box<dyn Rw>> {
    let s = TcpStream::connect_timeout(addr, connect)?;
    s.set_read_timeout(Some(io))?;
    s.set_write_timeout(Some(io))?;
    let Some((ca, name)) = CLIENT_TLS.get() else {
        return Ok(Box::new(s));
    };
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca)?;
    use rustls::pki_types::pem::PemObject as _;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(c.map_err(std::io::Error::other)?)
            .map_err(std::io::Error::other)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let server =
        rustls::pki_types::ServerName::try_from(name.clone()).map_err(std::io::Error::other)?;
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), server)
        .map_err(std::io::Error::other)?;
    Ok(Box::new(rustls::StreamOwned::new(conn, s)))
}

/// `AUTH user password` in RESP, when [`CLIENT_AUTH`] is set.
fn auth_command() -> Option<String> {
    CLIENT_AUTH.get().map(|(u, p)| {
        format!(
            "*3\r\n$4\r\nAUTH\r\n${}\r\n{u}\r\n${}\r\n{p}\r\n",
            u.len(),
            p.len()
        )
    })
}

/// A client writing `SET w:N N` through the app proxy every 5 ms, speaking RESP itself.
pub struct Writer {
    pub stop: Arc<AtomicBool>,
    pub log: Arc<Mutex<Vec<(Instant, u64, bool)>>>,
    pub handle: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub fn start(addr: SocketAddr) -> Writer {
        Writer::start_in(None, addr)
    }

    /// A client on a lab machine: its thread joins the machine's network namespace first, so
    /// it reaches what that machine reaches (and is cut off with it).
    pub fn start_in(netns: Option<String>, addr: SocketAddr) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s2, l2) = (stop.clone(), log.clone());
        let handle = std::thread::spawn(move || {
            if let Some(ns) = netns {
                use std::os::fd::AsFd;
                let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
                rustix::thread::move_into_link_name_space(
                    f.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .unwrap();
            }
            let mut conn: Option<BufReader<Box<dyn Rw>>> = None;
            let mut n = 0u64;
            // Failures in a row: the first one's reason is said, and how many when writes
            // succeed again, so a failing test shows why its client failed.
            let mut failing = 0u64;
            while !s2.load(Ordering::Relaxed) {
                n += 1;
                let started = Instant::now();
                let outcome = (|| -> std::io::Result<Result<(), String>> {
                    if conn.is_none() {
                        let s = redis_stream(
                            &addr,
                            Duration::from_millis(200),
                            Duration::from_millis(300),
                        )?;
                        let mut c = BufReader::new(s);
                        if let Some(auth) = auth_command() {
                            c.get_mut().write_all(auth.as_bytes())?;
                            let mut line = String::new();
                            c.read_line(&mut line)?;
                            if line != "+OK\r\n" {
                                return Ok(Err(format!("AUTH answered {line:?}")));
                            }
                        }
                        conn = Some(c);
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
                        return Ok(Err("the connection was closed".into()));
                    }
                    if line == "+OK\r\n" {
                        Ok(Ok(()))
                    } else {
                        Ok(Err(format!("SET answered {line:?}")))
                    }
                })()
                .unwrap_or_else(|e| Err(e.to_string()));
                let ok = outcome.is_ok();
                match outcome {
                    Err(why) => {
                        conn = None;
                        if failing == 0 {
                            eprintln!("client: w:{n} failed after {:?}: {why}", started.elapsed());
                        }
                        failing += 1;
                    }
                    Ok(()) if failing > 0 => {
                        eprintln!("client: w:{n} acknowledged after {failing} failed writes");
                        failing = 0;
                    }
                    Ok(()) => {}
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
    pub fn wait_acked(&self, what: &str, t: Instant, n: usize) {
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
    pub fn ok_after(&self, t: Instant) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _, ok)| *at > t && *ok)
            .count()
    }

    pub fn finish(mut self) -> Vec<(Instant, u64, bool)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

pub fn cli(host: &str, port: u16, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", host, "-p", &port.to_string()]);
    if let Some((u, p)) = CLIENT_AUTH.get() {
        cmd.args(["--user", u, "--no-auth-warning"])
            .env("REDISCLI_AUTH", p);
    }
    if let Some((ca, name)) = CLIENT_TLS.get() {
        cmd.args(["--tls", "--sni", name]).arg("--cacert").arg(ca);
    }
    let out = cmd.args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The most writes a client may see fail during one recovery. It tries every 5 ms, and a failed
/// attempt is answered at once (no server in the backend) or after its 300 ms timeout (a silent
/// one): 1,000 is five seconds of failing at the fastest, several times what the lab's
/// recoveries cost (5 to 160 failed writes seen), so only a recovery that leaves clients
/// failing trips it. The window check beside it is the exact one: no write fails before the
/// fault or after the recovery.
pub const MAX_FAILED_WRITES: usize = 1000;

/// The client's record after a fault at `fault`, with writes flowing again by `settled`:
/// every acknowledged write reads back, with its value, through the clients' path (the app
/// proxy); the failed ones all fall between the fault and `settled`, and are few.
pub fn assert_no_acknowledged_write_lost(
    app: &str,
    log: &[(Instant, u64, bool)],
    fault: Instant,
    settled: Instant,
) {
    assert_no_acknowledged_write_lost_within(app, log, fault, settled, MAX_FAILED_WRITES);
}

/// The same, for a recovery interrupted on purpose (its controller killed again and again):
/// the writes may fail for longer, never outside the window and never with a loss.
pub fn assert_no_acknowledged_write_lost_within(
    app: &str,
    log: &[(Instant, u64, bool)],
    fault: Instant,
    settled: Instant,
    max_failed: usize,
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
        failed.len() <= max_failed,
        "{} writes failed during the recovery",
        failed.len()
    );
}

/// Waits until `GET key` on `host:port` (a replica) answers `value`.
pub fn wait_replicated(host: &str, port: u16, key: &str, value: &str) {
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

/// Reads many keys in one pipeline: `GET` each, replies in order (`None` for a nil).
pub fn get_many(addr: &str, keys: &[String]) -> Vec<Option<String>> {
    let s = redis_stream(
        &addr.parse().unwrap(),
        Duration::from_secs(2),
        Duration::from_secs(10),
    )
    .unwrap();
    let mut r = BufReader::new(s);
    if let Some(auth) = auth_command() {
        r.get_mut().write_all(auth.as_bytes()).unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "+OK\r\n", "the clients' login through {addr}");
    }
    let mut out = Vec::new();
    for chunk in keys.chunks(500) {
        let mut cmds = String::new();
        for k in chunk {
            cmds.push_str(&format!("*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len()));
        }
        r.get_mut().write_all(cmds.as_bytes()).unwrap();
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
