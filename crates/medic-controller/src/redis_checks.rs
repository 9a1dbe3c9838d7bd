//! The redis servers' checks: one task drives all of them from a wheel of ticks, instead of a
//! task per server.
//!
//! A deployment's redis servers are its thousands of targets. A task each cost ≈ 1.9 KB that
//! lived as long as the target (tokio's task cell around a future holding every local of the
//! check loop), and a timer each for the next tick. Here a server is an [`Endpoint`] — its
//! schedule, its probe (the kept connection and its one buffer) and its recent reply times —
//! and the one task keeps them in a wheel keyed by the tick each is next due at: one timer in
//! all, for the wheel's earliest tick. A due check becomes a future of its own (boxed, for the
//! time of the check only) in a set polled by the same task, so each check still has its own
//! timeout and knock and a hung server still delays no other check: a server whose check is
//! still out when it is due again is checked next once that check has ended, as before.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;

use medic_detect::Observation;
use medic_redis::{Probe, ProbeResult, Redis, RedisAddr};
use medic_topology::Check;

use crate::checks::{CheckResult, Schedule, SharedBook, Sink, Target};
use crate::journal::now_ms;
use crate::knock::Suspicion;

/// One redis server medic checks.
pub(crate) struct Endpoint {
    target: Arc<Target>,
    port: u16,
    /// Its machine's SSH port, where a late check knocks.
    ssh_port: u16,
    check: Check,
    schedule: Schedule,
    /// Its kept connection; `None` while a check has it, or after a failure.
    probe: Option<Probe>,
    /// Its machine's address as last read, with the book's version it was read at.
    seen: Option<(u64, Option<IpAddr>)>,
    suspicion: Suspicion,
}

impl Endpoint {
    pub(crate) fn new(target: Target, check: Check, port: u16, ssh_port: u16) -> Endpoint {
        let schedule = Schedule::new(&target, check.interval.as_duration());
        Endpoint {
            target: Arc::new(target),
            port,
            ssh_port,
            check,
            schedule,
            probe: None,
            seen: None,
            suspicion: Suspicion::default(),
        }
    }

    fn tick(&self) -> Duration {
        crate::checks::tick_for(self.check.interval.as_duration())
    }
}

/// What one check of endpoint `.0` came to: its probe back, and the probe's result or why it
/// was abandoned (its machine silent to the knock).
struct Done {
    at: usize,
    probe: Probe,
    result: Result<ProbeResult, String>,
    took: Duration,
    knocked: Option<Duration>,
}

type Checking = Pin<Box<dyn std::future::Future<Output = Done> + Send>>;

/// Checks `endpoints` for ever, handing each result to `sink`. Check times are rounded up to
/// ticks counted from `epoch`, shared with the other checks.
pub(crate) async fn drive(
    mut endpoints: Vec<Endpoint>,
    redis: Redis,
    book: SharedBook,
    sink: Sink,
    epoch: tokio::time::Instant,
) {
    // Endpoints by the tick they are next due at; one in a check is in none.
    let mut wheel: BTreeMap<tokio::time::Instant, Vec<usize>> = BTreeMap::new();
    for (i, e) in endpoints.iter().enumerate() {
        let at = crate::checks::on_tick(e.schedule.next, epoch, e.tick());
        wheel.entry(at).or_default().push(i);
    }
    let mut checking: FuturesUnordered<Checking> = FuturesUnordered::new();
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    let timer = tokio::time::sleep_until(far);
    tokio::pin!(timer);
    loop {
        let due = wheel.first_key_value().map_or(far, |(at, _)| *at);
        if timer.deadline() != due {
            timer.as_mut().reset(due);
        }
        tokio::select! {
            biased;
            () = &mut timer, if !wheel.is_empty() => {
                let now = tokio::time::Instant::now();
                while let Some(entry) = wheel.first_entry()
                    && *entry.key() <= now
                {
                    for at in entry.remove() {
                        match start(at, &mut endpoints[at], &redis, &book, now) {
                            Some(check) => checking.push(check),
                            // Not to be checked now: its next tick.
                            None => reschedule(&mut wheel, at, &endpoints[at], epoch),
                        }
                    }
                }
            }
            Some(done) = checking.next(), if !checking.is_empty() => {
                let at = done.at;
                let result = finish(&mut endpoints[at], done);
                sink(result);
                reschedule(&mut wheel, at, &endpoints[at], epoch);
            }
        }
    }
}

fn reschedule(
    wheel: &mut BTreeMap<tokio::time::Instant, Vec<usize>>,
    at: usize,
    e: &Endpoint,
    epoch: tokio::time::Instant,
) {
    let when = crate::checks::on_tick(e.schedule.next, epoch, e.tick());
    wheel.entry(when).or_default().push(at);
}

/// Starts a check of `e` (number `at`), due now: `None` where its machine is not to be checked
/// now (paused, or without an address).
fn start(
    at: usize,
    e: &mut Endpoint,
    redis: &Redis,
    book: &SharedBook,
    now: tokio::time::Instant,
) -> Option<Checking> {
    e.schedule.advance(&e.check, now);
    let Some(ip) = crate::checks::address(book, e.target.machine(), &mut e.seen) else {
        e.probe = None;
        return None;
    };
    let within = e.check.timeout.as_duration();
    let addr = RedisAddr::new(ip, e.port);
    let mut probe = match e.probe.take() {
        Some(p) if p.addr == addr => p,
        _ => redis.probe(addr, None, within),
    };
    let door = crate::checks::knock_at(&e.target, ip, e.ssh_port, e.suspicion.after(within));
    Some(Box::pin(async move {
        let started = Instant::now();
        // The check goes on while the knock is made: its request is never abandoned for a late
        // reply (asking again would cost a connection each time replies run late, at the worst
        // moment).
        let result = {
            let check = std::pin::pin!(probe.check());
            crate::knock::or_knock(check, door).await
        };
        let knocked = match result {
            Ok(_) => None,
            Err(_) => door.map(|(_, after)| after),
        };
        Done {
            at,
            probe,
            result,
            took: started.elapsed(),
            knocked,
        }
    }))
}

/// Takes a check's end into `e` (its probe back, its reply time) and says what it found.
fn finish(e: &mut Endpoint, done: Done) -> CheckResult {
    let within = e.check.timeout.as_duration();
    let (observation, detail, info) = match done.result {
        Ok(r) => {
            e.probe = Some(done.probe);
            crate::checks::redis_result(r, within)
        }
        // Its request abandoned: the next check connects afresh.
        Err(why) => (Observation::Silent, why.into(), None),
    };
    if observation == Observation::Ok {
        e.suspicion.answered(done.took);
    }
    CheckResult {
        target: Arc::clone(&e.target),
        at_ms: now_ms(),
        observation,
        detail,
        info,
        took: done.took,
        knocked: done.knocked,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use std::collections::BTreeMap;
    use std::sync::{Mutex, RwLock};

    use medic_testkit::{RedisServer, unique_loopback};
    use medic_topology::duration::Dur;

    use super::*;
    use crate::checks::Book;

    /// What the checks found, per machine, in order.
    type Seen = BTreeMap<String, Vec<Observation>>;

    fn count(s: &Seen, machine: &str) -> usize {
        s.get(machine).map_or(0, Vec::len)
    }

    /// Waits (at most 10 s) until `done` holds of what the checks found; what they found.
    async fn wait(seen: &Mutex<Seen>, what: &str, done: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = seen.lock().unwrap().clone();
            if done(&now) {
                return now;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within 10 s; the checks found last: {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_hung_server_delays_no_other_check_and_a_paused_machine_waits_for_its_unpause() {
        let fast = RedisServer::start(unique_loopback(), 6379);
        let paused = RedisServer::start(unique_loopback(), 6379);
        // Listening, never accepting: the kernel completes the handshake and nothing answers.
        let hung_ip = unique_loopback();
        let _hung = std::net::TcpListener::bind((hung_ip, 6379)).unwrap();
        let mut book = Book::default();
        book.addresses.insert("fast".into(), fast.addr.ip());
        book.addresses.insert("paused".into(), paused.addr.ip());
        book.addresses.insert("hung".into(), IpAddr::V4(hung_ip));
        book.paused.insert("paused".into());
        let book: SharedBook = Arc::new(RwLock::new(book));
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let sink: Sink = {
            let seen = seen.clone();
            Arc::new(move |r: CheckResult| {
                seen.lock()
                    .unwrap()
                    .entry(r.target.machine().to_owned())
                    .or_default()
                    .push(r.observation);
            })
        };
        // A check every 50 ms; the hung server's first check waits 2 s for its reply (its
        // machine's kernel answers the knock: nothing listens on port 1, so it refuses).
        let check = Check {
            interval: Dur::from_millis(50),
            timeout: Dur::from_millis(2_000),
            fall: 3,
            rise: 2,
            jitter: Dur::from_millis(0),
        };
        let endpoints = ["fast", "paused", "hung"]
            .map(|m| {
                let target = Target::Redis {
                    shard: "s".into(),
                    machine: m.into(),
                };
                Endpoint::new(target, check, 6379, 1)
            })
            .into();
        let task = tokio::spawn(drive(
            endpoints,
            Redis::default(),
            book.clone(),
            sink,
            tokio::time::Instant::now(),
        ));

        let got = wait(&seen, "fast answering 10 checks", |s| {
            count(s, "fast") >= 10
        })
        .await;
        assert_eq!(
            count(&got, "hung"),
            0,
            "the hung server's first check is still out while the other is checked again and again: {got:?}"
        );
        assert!(got["fast"].iter().all(|o| *o == Observation::Ok), "{got:?}");
        assert_eq!(
            count(&got, "paused"),
            0,
            "a paused machine was checked: {got:?}"
        );

        {
            let mut b = book.write().unwrap();
            b.paused.clear();
            b.version += 1;
        }
        let got = wait(&seen, "paused checked, hung timed out", |s| {
            count(s, "paused") >= 3 && count(s, "hung") >= 1
        })
        .await;
        assert!(
            got["paused"].iter().all(|o| *o == Observation::Ok),
            "{got:?}"
        );
        assert!(
            got["hung"].iter().all(|o| *o == Observation::Silent),
            "{got:?}"
        );
        assert!(got["fast"].iter().all(|o| *o == Observation::Ok), "{got:?}");
        task.abort();
    }
}
