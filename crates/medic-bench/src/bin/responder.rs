//! Many redis endpoints from one process, for the monitoring-at-scale benchmark: on hosts
//! `BASE.1 .. BASE.H` (loopback addresses) and ports `FIRST .. FIRST+S-1`, each listener
//! answers `INFO replication` as a master (odd host numbers) or as a replica of the same port
//! on the host before it (even host numbers), `PING` with `PONG`, anything else with `+OK`.
//! A master's `INFO` names its replica (`slave0:`), so Redis Sentinel finds the replicas as it
//! does on real servers; `SUBSCRIBE` and `PUBLISH` work as redis's do for one endpoint's
//! subscribers (Sentinel's hello channel), so Sentinel keeps its links as it would.
//! The first `--hang K` ports of host 1 accept connections and never answer (a hung process).
//! With `--die`, the first port of every even-numbered host (a replica) dies on SIGUSR1: its
//! listener and connections are closed at once (a killed process; the kernel refuses new
//! connections), and `died MS` (the Unix time in ms) is printed when they are.
//! With `--count FILE`, the number of health checks answered so far (`INFO` and `PING`
//! commands) is written to FILE every 100 ms, so a benchmark can tell any checker's rate.
//!
//!   responder --base 127.0.50 [--first-host 1] --hosts 20 --first-port 20000 --per-host 500
//!             [--hang 10] [--die yes] [--count FILE]
//!
//! (Several processes can share the hosts with `--first-host`, each within its descriptor limit.)
//!
//! Prints `ready N` once every listener is bound.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::Mutex;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

/// One endpoint's subscribers: where each subscribed connection's messages go, by channel.
type Subscribers = Arc<Mutex<Vec<(String, mpsc::UnboundedSender<Vec<u8>>)>>>;

struct Args {
    base: [u8; 3],
    first_host: u8,
    hosts: u8,
    first_port: u16,
    per_host: u16,
    hang: u16,
    die: bool,
    count: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        base: [127, 0, 50],
        first_host: 1,
        hosts: 2,
        first_port: 20000,
        per_host: 10,
        hang: 0,
        die: false,
        count: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        let num = |v: &str| v.parse::<u32>().map_err(|_| format!("{k}: a number"));
        match k.as_str() {
            "--base" => {
                let p: Vec<u8> = v.split('.').filter_map(|x| x.parse().ok()).collect();
                a.base = p
                    .try_into()
                    .map_err(|_| "--base: three octets, like 127.0.50")?;
            }
            "--hosts" => a.hosts = u8::try_from(num(&v)?).map_err(|_| "--hosts: up to 254")?,
            "--first-host" => {
                a.first_host = u8::try_from(num(&v)?).map_err(|_| "--first-host: up to 254")?
            }
            "--first-port" => a.first_port = u16::try_from(num(&v)?).map_err(|_| "--first-port")?,
            "--per-host" => a.per_host = u16::try_from(num(&v)?).map_err(|_| "--per-host")?,
            "--hang" => a.hang = u16::try_from(num(&v)?).map_err(|_| "--hang")?,
            "--die" => a.die = v == "yes",
            "--count" => a.count = Some(v),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(a)
}

fn info(host: u8, a: &Args, port: u16) -> String {
    let [x, y, z] = a.base;
    let body = if host % 2 == 1 {
        format!(
            "# Replication\r\nrole:master\r\nconnected_slaves:1\r\nslave0:ip={x}.{y}.{z}.{},port={port},state=online,offset=1000,lag=0\r\nmaster_repl_offset:1000\r\n",
            host + 1
        )
    } else {
        format!(
            "# Replication\r\nrole:slave\r\nmaster_host:{x}.{y}.{z}.{}\r\nmaster_port:{port}\r\nmaster_link_status:up\r\nmaster_last_io_seconds_ago:0\r\nmaster_sync_in_progress:0\r\nslave_repl_offset:1000\r\nmaster_repl_offset:1000\r\n",
            host - 1
        )
    };
    format!("${}\r\n{body}\r\n", body.len())
}

/// Reads one RESP command (an array of bulk strings, or an inline line); returns its words.
async fn command(r: &mut BufReader<TcpStream>) -> Option<Vec<String>> {
    let mut line = String::new();
    if r.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let line = line.trim_end();
    let Some(n) = line.strip_prefix('*') else {
        return Some(line.split_whitespace().map(str::to_owned).collect());
    };
    let n: usize = n.parse().ok()?;
    let mut words = Vec::with_capacity(n);
    for _ in 0..n {
        let mut len = String::new();
        r.read_line(&mut len).await.ok()?;
        let mut word = String::new();
        r.read_line(&mut word).await.ok()?;
        words.push(word.trim_end().to_owned());
    }
    Some(words)
}

fn bulk(s: &str) -> String {
    format!("${}\r\n{s}\r\n", s.len())
}

async fn serve(
    s: TcpStream,
    reply_info: String,
    hang: bool,
    answered: Arc<AtomicU64>,
    subscribers: Subscribers,
    death: Option<watch::Receiver<bool>>,
) {
    match death {
        // The connection is dropped (closed) the moment its endpoint dies.
        Some(mut d) => {
            tokio::select! {
                () = answer(s, reply_info, hang, answered, subscribers) => {}
                _ = d.wait_for(|dead| *dead) => {}
            }
        }
        None => answer(s, reply_info, hang, answered, subscribers).await,
    }
}

async fn answer(
    s: TcpStream,
    reply_info: String,
    hang: bool,
    answered: Arc<AtomicU64>,
    subscribers: Subscribers,
) {
    let mut r = BufReader::new(s);
    if hang {
        // Accepted, never answered: the kernel's backlog, a stopped process.
        std::future::pending::<()>().await;
    }
    while let Some(words) = command(&mut r).await {
        let verb = words
            .first()
            .map(|w| w.to_ascii_uppercase())
            .unwrap_or_default();
        let reply = match verb.as_str() {
            "INFO" => reply_info.clone(),
            "PING" => "+PONG\r\n".to_owned(),
            "SUBSCRIBE" if words.len() == 2 => {
                // From here on the connection only receives its channel's messages.
                let (tx, mut rx) = mpsc::unbounded_channel();
                if let Ok(mut subs) = subscribers.lock() {
                    subs.push((words[1].clone(), tx));
                }
                let ok = format!("*3\r\n{}{}:1\r\n", bulk("subscribe"), bulk(&words[1]));
                if r.get_mut().write_all(ok.as_bytes()).await.is_err() {
                    return;
                }
                while let Some(m) = rx.recv().await {
                    if r.get_mut().write_all(&m).await.is_err() {
                        return;
                    }
                }
                return;
            }
            "PUBLISH" if words.len() == 3 => {
                let m = format!(
                    "*3\r\n{}{}{}",
                    bulk("message"),
                    bulk(&words[1]),
                    bulk(&words[2])
                );
                let mut n = 0;
                if let Ok(mut subs) = subscribers.lock() {
                    subs.retain(|(ch, tx)| {
                        ch != &words[1] || {
                            n += 1;
                            tx.send(m.clone().into_bytes()).is_ok()
                        }
                    });
                }
                format!(":{n}\r\n")
            }
            _ => "+OK\r\n".to_owned(),
        };
        if matches!(verb.as_str(), "INFO" | "PING") {
            answered.fetch_add(1, Ordering::Relaxed);
        }
        if r.get_mut().write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("responder: {e}");
            return ExitCode::from(2);
        }
    };
    let answered = Arc::new(AtomicU64::new(0));
    if let Some(path) = a.count.clone() {
        let answered = answered.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
            loop {
                tick.tick().await;
                let n = answered.load(Ordering::Relaxed);
                let tmp = format!("{path}.tmp");
                if std::fs::write(&tmp, format!("{n}\n")).is_ok() {
                    let _ = std::fs::rename(&tmp, &path);
                }
            }
        });
    }
    // The endpoints that die on SIGUSR1.
    let (kill, death) = watch::channel(false);
    let mut n = 0usize;
    for host in a.first_host..a.first_host.saturating_add(a.hosts) {
        let [x, y, z] = a.base;
        let ip = Ipv4Addr::new(x, y, z, host);
        for i in 0..a.per_host {
            let port = a.first_port + i;
            let l = match TcpListener::bind(SocketAddr::from((ip, port))).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("responder: {ip}:{port}: {e}");
                    return ExitCode::from(1);
                }
            };
            let reply = info(host, &a, port);
            let hang = host == 1 && i < a.hang;
            let dies = (a.die && host % 2 == 0 && i == 0).then(|| death.clone());
            let answered = answered.clone();
            let subscribers = Subscribers::default();
            tokio::spawn(async move {
                let mut died = dies.clone();
                loop {
                    let accepted = match &mut died {
                        Some(d) => tokio::select! {
                            a = l.accept() => a,
                            // The listener is dropped: connections are refused from now on.
                            _ = d.wait_for(|dead| *dead) => return,
                        },
                        None => l.accept().await,
                    };
                    let Ok((s, _)) = accepted else { return };
                    tokio::spawn(serve(
                        s,
                        reply.clone(),
                        hang,
                        answered.clone(),
                        subscribers.clone(),
                        dies.clone(),
                    ));
                }
            });
            n += 1;
        }
    }
    println!("ready {n}");
    if !a.die {
        std::future::pending::<()>().await;
    }
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        eprintln!("responder: cannot catch SIGUSR1");
        return ExitCode::from(1);
    };
    usr1.recv().await;
    let _ = kill.send(true);
    // Every listener and connection of the dying endpoints has seen it once this returns.
    while kill.receiver_count() > 1 {
        tokio::task::yield_now().await;
    }
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    println!("died {ms}");
    std::future::pending::<()>().await;
    ExitCode::SUCCESS
}
