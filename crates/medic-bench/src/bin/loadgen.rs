//! A redis write client that hides nothing: it speaks RESP itself (no client library retries),
//! writes `SET PREFIX:N N` every `--every` with a `--budget` per operation, reconnects on any
//! error, and records every outcome.
//!
//!   loadgen --addr 10.77.0.14:7001 [--every 2ms] [--budget 200ms] [--duration 30s]
//!           [--report 1s] [--prefix w] [--wait-replicas 0] [--log FILE]
//!
//! `--report` prints a line per period (`ok`, `failed`, the longest write); at the end (the
//! duration, or SIGINT/SIGTERM) a summary: the unavailability window (first failed write →
//! first write after which all succeed) and failures by kind. `--log` writes every outcome as
//! CSV (`n,start_us,latency_us,outcome`) for the benchmarks to analyse. With
//! `--wait-replicas K`, each write is followed by `WAIT K 100` and counts as acknowledged only
//! if K replicas have it.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Ok,
    /// Connect refused or reset, EOF: the proxy had no server or cut the session.
    Connection,
    /// No answer within the budget.
    Timeout,
    /// An error reply (READONLY, LOADING, ...).
    ErrorReply,
    /// WAIT said fewer replicas than asked have it.
    NotReplicated,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Connection => "connection",
            Outcome::Timeout => "timeout",
            Outcome::ErrorReply => "error_reply",
            Outcome::NotReplicated => "not_replicated",
        }
    }
}

struct Args {
    addr: SocketAddr,
    every: Duration,
    budget: Duration,
    duration: Option<Duration>,
    report: Option<Duration>,
    prefix: String,
    wait_replicas: u32,
    log: Option<String>,
}

const USAGE: &str = "usage: loadgen --addr HOST:PORT [--every 2ms] [--budget 200ms] [--duration 30s] [--report 1s] [--prefix w] [--wait-replicas K] [--log FILE]";

fn duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "ms"), |i| s.split_at(i));
    let n: u64 = n.parse().map_err(|_| format!("`{s}` is not a duration"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "us" => Ok(Duration::from_micros(n)),
        _ => Err(format!("`{s}`: units are us, ms, s")),
    }
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 6379)),
        every: Duration::from_millis(2),
        budget: Duration::from_millis(200),
        duration: None,
        report: None,
        prefix: "w".into(),
        wait_replicas: 0,
        log: None,
    };
    let mut addr = None;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--addr" => addr = Some(v.parse().map_err(|_| "--addr: expected IP:PORT")?),
            "--every" => a.every = duration(&v)?,
            "--budget" => a.budget = duration(&v)?,
            "--duration" => a.duration = Some(duration(&v)?),
            "--report" => a.report = Some(duration(&v)?),
            "--prefix" => a.prefix = v,
            "--wait-replicas" => {
                a.wait_replicas = v.parse().map_err(|_| "--wait-replicas: a number")?
            }
            "--log" => a.log = Some(v),
            other => return Err(format!("unknown option {other}")),
        }
    }
    a.addr = addr.ok_or("--addr is required")?;
    Ok(a)
}

type Conn = BufReader<TcpStream>;

async fn write_one(conn: &mut Option<Conn>, a: &Args, n: u64) -> Outcome {
    let work = async {
        if conn.is_none() {
            let s = TcpStream::connect(a.addr)
                .await
                .map_err(|_| Outcome::Connection)?;
            let _ = s.set_nodelay(true);
            *conn = Some(BufReader::new(s));
        }
        let Some(c) = conn.as_mut() else {
            return Err(Outcome::Connection);
        };
        let k = format!("{}:{n}", a.prefix);
        let v = n.to_string();
        let mut cmd = format!(
            "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
            k.len(),
            v.len()
        );
        if a.wait_replicas > 0 {
            let r = a.wait_replicas.to_string();
            cmd.push_str(&format!(
                "*3\r\n$4\r\nWAIT\r\n${}\r\n{r}\r\n$3\r\n100\r\n",
                r.len()
            ));
        }
        c.get_mut()
            .write_all(cmd.as_bytes())
            .await
            .map_err(|_| Outcome::Connection)?;
        let mut line = String::new();
        if c.read_line(&mut line)
            .await
            .map_err(|_| Outcome::Connection)?
            == 0
        {
            return Err(Outcome::Connection);
        }
        if line.starts_with('-') {
            return Err(Outcome::ErrorReply);
        }
        if a.wait_replicas > 0 {
            let mut w = String::new();
            if c.read_line(&mut w).await.map_err(|_| Outcome::Connection)? == 0 {
                return Err(Outcome::Connection);
            }
            let got: u32 = w.trim_start_matches(':').trim().parse().unwrap_or(0);
            if got < a.wait_replicas {
                return Err(Outcome::NotReplicated);
            }
        }
        if line == "+OK\r\n" {
            Ok(())
        } else {
            Err(Outcome::ErrorReply)
        }
    };
    match tokio::time::timeout(a.budget, work).await {
        Ok(Ok(())) => Outcome::Ok,
        Ok(Err(o)) => {
            *conn = None;
            o
        }
        Err(_) => {
            *conn = None;
            Outcome::Timeout
        }
    }
}

/// Unavailability windows: from a failed write to the first success after which a second
/// passes without failure (failures closer than that are one window).
fn windows(outcomes: &[(Duration, Outcome)]) -> Vec<(Duration, Duration)> {
    let quiet = Duration::from_secs(1);
    let mut out: Vec<(Duration, Duration)> = Vec::new();
    let mut open: Option<(Duration, Option<Duration>)> = None;
    for (at, o) in outcomes {
        match (o, &mut open) {
            (Outcome::Ok, Some((_, first_ok @ None))) => *first_ok = Some(*at),
            (Outcome::Ok, Some((from, Some(ok)))) if *at - *ok >= quiet => {
                out.push((*from, *ok));
                open = None;
            }
            (Outcome::Ok, _) => {}
            (_, None) => open = Some((*at, None)),
            (_, Some((_, first_ok))) => *first_ok = None,
        }
    }
    if let Some((from, ok)) = open {
        out.push((
            from,
            ok.unwrap_or_else(|| outcomes.last().map_or(from, |l| l.0)),
        ));
    }
    out
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loadgen: {e}\n{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            stop.store(true, Ordering::SeqCst);
        });
    }
    let mut log = match a.log.as_ref().map(std::fs::File::create).transpose() {
        Ok(f) => f.map(std::io::BufWriter::new),
        Err(e) => {
            eprintln!("loadgen: --log: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(l) = log.as_mut() {
        let _ = writeln!(l, "n,start_us,latency_us,outcome");
    }
    let t0 = Instant::now();
    let mut conn = None;
    let mut n = 0u64;
    let mut next = tokio::time::Instant::now();
    let mut outcomes: Vec<(Duration, Outcome)> = Vec::new();
    let (mut period_ok, mut period_failed, mut period_max) = (0u64, 0u64, Duration::ZERO);
    let mut last_report = t0;
    while !stop.load(Ordering::SeqCst) && a.duration.is_none_or(|d| t0.elapsed() < d) {
        tokio::time::sleep_until(next).await;
        next += a.every;
        if next < tokio::time::Instant::now() {
            next = tokio::time::Instant::now() + a.every;
        }
        n += 1;
        let started = Instant::now();
        let o = write_one(&mut conn, &a, n).await;
        let took = started.elapsed();
        let at = started - t0;
        outcomes.push((at, o));
        if let Some(l) = log.as_mut() {
            let _ = writeln!(
                l,
                "{n},{},{},{}",
                at.as_micros(),
                took.as_micros(),
                o.label()
            );
        }
        if o == Outcome::Ok {
            period_ok += 1;
        } else {
            period_failed += 1;
        }
        period_max = period_max.max(took);
        if let Some(every) = a.report
            && last_report.elapsed() >= every
        {
            println!(
                "{:>6.1}s  ok {:>5}  failed {:>4}  slowest {:>4} ms",
                t0.elapsed().as_secs_f64(),
                period_ok,
                period_failed,
                period_max.as_millis()
            );
            (period_ok, period_failed, period_max) = (0, 0, Duration::ZERO);
            last_report = Instant::now();
        }
    }
    if let Some(l) = log.as_mut() {
        let _ = l.flush();
    }
    let failed: Vec<&(Duration, Outcome)> =
        outcomes.iter().filter(|(_, o)| *o != Outcome::Ok).collect();
    let ok = outcomes.len() - failed.len();
    print!("writes {} ok {ok} failed {}", outcomes.len(), failed.len());
    let mut kinds = std::collections::BTreeMap::new();
    for (_, o) in &failed {
        *kinds.entry(o.label()).or_insert(0u64) += 1;
    }
    for (k, v) in kinds {
        print!(" {k} {v}");
    }
    println!();
    for (from, to) in windows(&outcomes) {
        println!(
            "unavailable {} ms: from {:.3}s (first failed write) to {:.3}s (first write of a run of successes)",
            (to - from).as_millis(),
            from.as_secs_f64(),
            to.as_secs_f64()
        );
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn failures_closer_than_a_second_are_one_window_and_a_window_ends_at_a_lasting_success() {
        use Outcome::*;
        let mut o = Vec::new();
        for t in (0..1000).step_by(100) {
            o.push((ms(t), Ok));
        }
        // 1.0 s - 1.5 s down, one success at 1.6 s, down again at 1.7 s, back at 2.0 s for good.
        for t in (1000..1600).step_by(100) {
            o.push((ms(t), Timeout));
        }
        o.push((ms(1600), Ok));
        o.push((ms(1700), Connection));
        for t in (2000..4000).step_by(100) {
            o.push((ms(t), Ok));
        }
        // A second outage, still open at the end.
        o.push((ms(4000), ErrorReply));
        assert_eq!(
            windows(&o),
            vec![(ms(1000), ms(2000)), (ms(4000), ms(4000))]
        );
        assert!(windows(&o[..10]).is_empty());
    }
}
