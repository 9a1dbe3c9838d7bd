//! A real etcd cluster of 1 or 3 members (`etcd` from Debian's etcd-server), each member a
//! process on a loopback address of its own (client port 2379, peer port 2380), its data in a
//! directory this handle owns. Dropping it kills every member.
//!
//! Readiness is asked over etcd's JSON gateway with a hand-written HTTP/1.1 request, so this
//! crate needs no etcd client: a member is ready when `POST /v3/kv/range` answers 200 with a
//! JSON body (a linearizable read: it needs a leader and a quorum).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::{Proc, program, unique_loopback, wait_until};

/// How long a start or a restart may take before the test fails.
const READY_WITHIN: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Member {
    name: String,
    ip: Ipv4Addr,
    data: PathBuf,
    /// `None` while killed.
    proc: Option<Proc>,
    /// Every log this member wrote, one per start, oldest first.
    logs: Vec<PathBuf>,
}

impl Member {
    fn client(&self) -> SocketAddr {
        SocketAddr::from((self.ip, 2379))
    }

    fn peer_url(&self) -> String {
        format!("http://{}:2380", self.ip)
    }
}

/// N etcd members (N = 1 or 3) forming one cluster.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `n` members (1 or 3) and waits until every one of them serves a read.
    pub fn start(n: usize) -> EtcdCluster {
        assert!(
            n == 1 || n == 3,
            "an etcd cluster of 1 or 3 members, not {n}"
        );
        static CLUSTERS: AtomicU32 = AtomicU32::new(0);
        let dir = tempfile::tempdir().unwrap();
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                ip: unique_loopback(),
                data: dir.path().join(format!("m{i}.data")),
                proc: None,
                logs: Vec::new(),
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!(
            "medic-test-{}-{}-{}",
            std::process::id(),
            members[0].ip,
            CLUSTERS.fetch_add(1, Ordering::Relaxed)
        );
        let mut cluster = EtcdCluster {
            members,
            initial_cluster,
            token,
            dir,
        };
        // All at once: a member of a new cluster waits for its peers before it elects.
        for i in 0..n {
            cluster.spawn(i, "new");
        }
        for i in 0..n {
            cluster.wait_serving(i, "etcd cluster start");
        }
        cluster
    }

    /// The members' client addresses, member 0 first.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.members.iter().map(Member::client).collect()
    }

    /// The endpoints as `ip:port,ip:port,...`.
    pub fn endpoints_arg(&self) -> String {
        self.endpoints()
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILLs member `i` and waits until it has exited.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].proc.take() {
            p.kill();
        }
    }

    /// Starts member `i` again on its data directory (`--initial-cluster-state existing`) and
    /// waits until it answers: until it serves a read when a majority of the members is then
    /// running, else (no quorum, nothing can be read) until it answers HTTP at all.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i, "existing");
        let running = self.members.iter().filter(|m| m.proc.is_some()).count();
        if running > self.members.len() / 2 {
            self.wait_serving(i, "etcd member restart");
        } else {
            let addr = self.members[i].client();
            wait_until(
                &format!("etcd member {i} ({addr}) answers HTTP after its restart"),
                READY_WITHIN,
                Duration::from_millis(100),
                || match http(addr, "GET", "/version", "") {
                    Ok((200, body)) => Ok(body),
                    Ok((status, body)) => Err(format!("HTTP {status}: {body}")),
                    Err(e) => Err(e),
                },
            );
        }
    }

    /// What member `i` logged, every start of it in order.
    pub fn log_text(&self, i: usize) -> String {
        let mut out = String::new();
        for (n, log) in self.members[i].logs.iter().enumerate() {
            out.push_str(&format!(
                "--- {} start {n} ({})\n",
                self.members[i].name,
                log.display()
            ));
            out.push_str(&std::fs::read_to_string(log).unwrap_or_default());
        }
        out
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let m = &self.members[i];
        let client = format!("http://{}", m.client());
        let peer = m.peer_url();
        let mut cmd = Command::new(program("etcd"));
        cmd.args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"]);
        let log = self
            .dir
            .path()
            .join(format!("{}.{}.log", m.name, m.logs.len()));
        let proc = Proc::spawn(&format!("etcd {}", m.name), cmd, log.clone());
        let m = &mut self.members[i];
        m.logs.push(log);
        m.proc = Some(proc);
    }

    /// Waits until member `i` serves a linearizable read; panics with what it saw last and
    /// the member's log.
    fn wait_serving(&mut self, i: usize, what: &str) {
        let addr = self.members[i].client();
        let deadline = std::time::Instant::now() + READY_WITHIN;
        let mut seen = String::new();
        while std::time::Instant::now() < deadline {
            if !self.members[i].proc.as_mut().is_some_and(Proc::is_running) {
                seen = "the process exited".to_owned();
                break;
            }
            match http(addr, "POST", "/v3/kv/range", r#"{"key":"AA=="}"#) {
                Ok((200, body)) if looks_like_json(&body) => return,
                Ok((status, body)) => seen = format!("HTTP {status}: {body}"),
                Err(e) => seen = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{what}: member {i} ({addr}) did not serve a read within {READY_WITHIN:?}; last seen: \
             {seen}\n{}",
            self.log_text(i)
        );
    }
}

fn looks_like_json(body: &str) -> bool {
    let b = body.trim();
    b.starts_with('{') && b.ends_with('}')
}

/// One HTTP/1.1 request with `Connection: close`: the status and the (de-chunked) body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .and_then(|()| s.set_write_timeout(Some(Duration::from_secs(3))))
        .map_err(|e| e.to_string())?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            format!(
                "no HTTP answer from {addr}: {:?}",
                String::from_utf8_lossy(&raw)
            )
        })?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let rest = &raw[split + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP status from {addr}: {head:?}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The body of a `Transfer-Encoding: chunked` answer (as much of it as is well formed).
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let line = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16);
        let after = &rest[eol + 2..];
        match size {
            Ok(n) if n > 0 && after.len() >= n => {
                out.extend_from_slice(&after[..n]);
                rest = after[n..].strip_prefix(b"\r\n").unwrap_or(&after[n..]);
            }
            _ => break,
        }
    }
    out
}
