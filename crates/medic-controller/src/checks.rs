//! The health checks: every target on its own schedule (interval ± jitter) and each check
//! bounded by its timeout, so a hung target never delays another check. The redis servers,
//! the thousands, are driven by one task ([`crate::redis_checks`]); every other target (a
//! HAProxy, an app proxy, a service on a machine) has a task of its own. Each result is handed
//! to the controller's detection (a plain call: both live on the checks' thread); the checks
//! decide nothing.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinHandle;

use medic_detect::Observation;
use medic_haproxy::{HaproxyError, ProxyApi as _, RuntimeApi};
use medic_redis::{ProbeResult, Redis, ReplicationInfo};
use medic_topology::{Check, Reach, Topology};

use crate::journal::now_ms;

/// Something medic checks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// One shard's redis server on a machine.
    Redis { shard: String, machine: String },
    /// A proxy machine's HAProxy (its runtime API).
    Proxy { machine: String },
    /// An app machine's HAProxy (its runtime API).
    App { machine: String },
    /// One service on one of its machines (`services` in the topology).
    Service { service: String, machine: String },
}

impl Target {
    pub fn machine(&self) -> &str {
        match self {
            Target::Redis { machine, .. }
            | Target::Proxy { machine }
            | Target::App { machine }
            | Target::Service { machine, .. } => machine,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Target::Redis { .. } => "redis",
            Target::Proxy { .. } => "haproxy",
            Target::App { .. } => "app_proxy",
            Target::Service { .. } => "service",
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Redis { shard, machine } => write!(f, "redis {shard}@{machine}"),
            Target::Proxy { machine } => write!(f, "haproxy {machine}"),
            Target::App { machine } => write!(f, "app proxy {machine}"),
            Target::Service { service, machine } => write!(f, "service {service}@{machine}"),
        }
    }
}

/// The target that stands for `machine` in its witnesses' questions: its first check.
pub fn target_of(top: &Topology, machine: &str) -> Option<Target> {
    targets(top)
        .into_iter()
        .map(|(t, ..)| t)
        .find(|t| t.machine() == machine)
}

/// Every target of a topology with its check settings, its port (a redis's or a service's; a
/// HAProxy's runtime API's, none where medic reaches its admin socket over SSH) and (for a
/// HAProxy) the ports its frontends listen on.
pub fn targets(top: &Topology) -> Vec<(Target, Check, Option<u16>, Vec<u16>)> {
    let mut out = Vec::new();
    for s in top.shards.iter().map(|s| &s.value) {
        for m in Topology::shard_machines(s) {
            out.push((
                Target::Redis {
                    shard: s.name.value.clone(),
                    machine: m.to_owned(),
                },
                top.checks.redis.value,
                Some(s.port.value),
                Vec::new(),
            ));
        }
    }
    let api = top.proxies.value.runtime_api.value.tcp_port();
    let listens = top.proxy_listens();
    for m in top.proxy_machines() {
        out.push((
            Target::Proxy {
                machine: m.to_owned(),
            },
            top.checks.haproxy.value,
            api,
            listens.clone(),
        ));
    }
    for a in top.app_proxies.iter().map(|a| &a.value) {
        out.push((
            Target::App {
                machine: a.machine.value.clone(),
            },
            top.checks.app_proxy.value,
            a.runtime_api.value.tcp_port(),
            a.frontends.iter().map(|f| f.value.listen.value).collect(),
        ));
    }
    for s in top.services.iter().map(|s| &s.value) {
        for m in s.machines() {
            out.push((
                Target::Service {
                    service: s.name.value.clone(),
                    machine: m.to_owned(),
                },
                s.check.value.cadence(),
                Some(s.port.value),
                Vec::new(),
            ));
        }
    }
    out
}

/// One check's result.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// Shared with the check's task: results are thousands a second.
    pub target: Arc<Target>,
    pub at_ms: u64,
    pub observation: Observation,
    /// What was seen, in words ("connection refused", "no answer within 200ms", "LOADING ...").
    pub detail: Cow<'static, str>,
    /// A redis server's replication as it answered.
    pub info: Option<ReplicationInfo>,
    pub took: Duration,
    /// Silence of the machine itself: the check went unanswered and neither did a fresh TCP
    /// connection to its port, each within this long ([`crate::knock`]).
    pub knocked: Option<Duration>,
}

/// Where each machine is and which are not to be checked: shared with the checks, which read
/// it before every check (a replaced machine is checked at its new address at once).
#[derive(Debug, Default)]
pub struct Book {
    pub addresses: BTreeMap<String, IpAddr>,
    pub paused: BTreeSet<String>,
    /// Bumped by every change, so a task looks its machine up again only after one.
    pub version: u64,
}

pub type SharedBook = Arc<RwLock<Book>>;

/// Where to check `machine` now (`None`: nowhere, or not now); `seen` caches the answer for
/// the book's version it was read at.
pub(crate) fn address(
    book: &SharedBook,
    machine: &str,
    seen: &mut Option<(u64, Option<IpAddr>)>,
) -> Option<IpAddr> {
    let b = book.read().ok()?;
    if let Some((version, ip)) = *seen
        && version == b.version
    {
        return ip;
    }
    let ip = if b.paused.contains(machine) {
        None
    } else {
        b.addresses.get(machine).copied()
    };
    *seen = Some((b.version, ip));
    ip
}

/// A small per-task generator for jitter (no need for a shared or cryptographic one).
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new(seed: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ now_ms();
        for b in seed.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Jitter(h | 1)
    }

    /// A duration uniformly in `[base - j, base + j]`.
    pub(crate) fn around(&mut self, base: Duration, j: Duration) -> Duration {
        if j.is_zero() {
            return base;
        }
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let span = j.as_micros() as u64 * 2 + 1;
        let off = self.0 % span;
        (base + Duration::from_micros(off)).saturating_sub(j)
    }
}

/// When a target is next due: every interval ± jitter, its first check spread over one
/// interval (a thousand targets do not start together).
pub(crate) struct Schedule {
    jitter: Jitter,
    /// When it is next due (before rounding to its tick).
    pub(crate) next: tokio::time::Instant,
}

impl Schedule {
    pub(crate) fn new(target: &Target, interval: Duration) -> Schedule {
        let mut jitter = Jitter::new(&target.to_string());
        let next = tokio::time::Instant::now() + jitter.around(interval / 2, interval / 2);
        Schedule { jitter, next }
    }

    /// A check due now starts: the next is one interval ± jitter on, never in the past (the
    /// schedule moves on from now rather than catching up in a burst).
    pub(crate) fn advance(&mut self, check: &Check, now: tokio::time::Instant) {
        let interval = check.interval.as_duration();
        self.next += self.jitter.around(interval, check.jitter.as_duration());
        if self.next < now {
            self.next = now + interval;
        }
    }
}

/// The granularity of check times: a fiftieth of the interval, at most 10 ms. Checks due
/// within the same tick wake the thread once, together, instead of one wake-up (an
/// `epoll_wait` return and a context switch) per check: at 10,000 endpoints that is 100
/// wake-ups a second instead of thousands. A check is late by less than a tick.
pub(crate) fn tick_for(interval: Duration) -> Duration {
    (interval / 50).clamp(Duration::from_millis(1), Duration::from_millis(10))
}

/// `at`, rounded up to the next tick counted from `epoch`.
pub(crate) fn on_tick(
    at: tokio::time::Instant,
    epoch: tokio::time::Instant,
    tick: Duration,
) -> tokio::time::Instant {
    let since = at.saturating_duration_since(epoch).as_micros();
    let tick_us = tick.as_micros().max(1);
    let ticks = since.div_ceil(tick_us);
    epoch + Duration::from_micros(u64::try_from(ticks * tick_us).unwrap_or(u64::MAX / 2))
}

/// Where the results go: the controller's detection, called on the checks' thread.
pub type Sink = Arc<dyn Fn(CheckResult) + Send + Sync>;

/// How a check reaches the runtime API of the HAProxy on a machine (name, address, port; none:
/// its admin socket): the controller's, through its SSH session where the API is on the
/// machine's loopback or its admin socket.
pub type ApiFor = Arc<
    dyn Fn(
            String,
            IpAddr,
            Option<u16>,
        ) -> Pin<Box<dyn Future<Output = Result<RuntimeApi, HaproxyError>> + Send>>
        + Send
        + Sync,
>;

/// How a `command` check runs its command on a machine (name, address, command, within):
/// the controller's SSH session. `Ok(None)`: it exited 0; `Ok(Some(why))`: it failed (its exit
/// and what it said); `Err`: the machine could not be asked (no session, no answer in time).
pub type RunFor = Arc<
    dyn Fn(
            String,
            IpAddr,
            String,
            Duration,
        ) -> Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send>>
        + Send
        + Sync,
>;

/// Starts the checks of every target on `rt`: one task for all redis servers, one per other
/// target. Aborting the handles stops them.
pub fn spawn(
    rt: &tokio::runtime::Handle,
    top: &Topology,
    redis: Redis,
    api: ApiFor,
    run: RunFor,
    book: SharedBook,
    sink: Sink,
) -> Vec<JoinHandle<()>> {
    let epoch = tokio::time::Instant::now();
    let mut servers = Vec::new();
    let mut handles = Vec::new();
    for (target, check, port, listens) in targets(top) {
        let ssh_port = top
            .machine(target.machine())
            .map_or(22, |m| top.ssh_for(m).port);
        if let Target::Redis { .. } = &target {
            // A redis target always has its shard's port ([`targets`]).
            if let Some(port) = port {
                servers.push(crate::redis_checks::Endpoint::new(
                    target, check, port, ssh_port,
                ));
            }
            continue;
        }
        let reach = top
            .runtime_api_of(target.machine())
            .map_or(Reach::Network, |r| r.reach);
        let shared = Shared {
            api: api.clone(),
            run: run.clone(),
            book: book.clone(),
            sink: sink.clone(),
            epoch,
        };
        let service = match &target {
            Target::Service { service, .. } => {
                top.service(service).map(|s| Arc::from(s.all_checks()))
            }
            _ => None,
        };
        let how = How {
            port,
            ssh_port,
            listens,
            reach,
            service,
        };
        handles.push(rt.spawn(async move { run_target(target, check, how, shared).await }));
    }
    if !servers.is_empty() {
        handles.push(rt.spawn(crate::redis_checks::drive(
            servers, redis, book, sink, epoch,
        )));
    }
    handles
}

/// Where one target is checked: its port, a HAProxy's frontends, how its API is reached.
struct How {
    port: Option<u16>,
    /// Its machine's SSH port, where a late check knocks.
    ssh_port: u16,
    listens: Vec<u16>,
    reach: Reach,
    /// A service's checks, each with the port it asks: its `check` first, then its
    /// `more_checks`.
    service: Option<Arc<[(u16, medic_topology::ServiceCheck)]>>,
}

/// What every check task is given alike.
struct Shared {
    api: ApiFor,
    run: RunFor,
    book: SharedBook,
    sink: Sink,
    /// The checks' common clock origin (ticks are multiples from it).
    epoch: tokio::time::Instant,
}

async fn run_target(target: Target, check: Check, how: How, shared: Shared) {
    let Shared {
        api: api_for,
        run,
        book,
        sink,
        epoch,
    } = shared;
    let How {
        port,
        ssh_port,
        listens,
        reach,
        service,
    } = how;
    let target = Arc::new(target);
    let interval = check.interval.as_duration();
    let within = check.timeout.as_duration();
    let mut schedule = Schedule::new(&target, interval);
    let mut seen = None;
    let mut suspicion = crate::knock::Suspicion::default();
    let tick = tick_for(interval);
    loop {
        tokio::time::sleep_until(on_tick(schedule.next, epoch, tick)).await;
        schedule.advance(&check, tokio::time::Instant::now());
        let Some(ip) = address(&book, target.machine(), &mut seen) else {
            continue;
        };
        let started = Instant::now();
        let door = knock_at(&target, ip, ssh_port, suspicion.after(within));
        let mut knocked = None;
        let (observation, detail, info) = match &*target {
            // Checked by [`crate::redis_checks`], never here.
            Target::Redis { .. } => continue,
            // The other checks' futures are boxed: a task's future is as large as the largest
            // it awaits, and the redis probe's tasks are the thousands.
            Target::Proxy { machine } | Target::App { machine } => {
                let mut check = Box::pin(proxy_check(
                    &api_for, machine, ip, port, &listens, reach, within,
                ));
                match crate::knock::or_knock(check.as_mut(), door).await {
                    Ok((o, d)) => (o, d.into(), None),
                    Err(why) => {
                        knocked = door.map(|(_, after)| after);
                        (Observation::Silent, why.into(), None)
                    }
                }
            }
            Target::Service { machine, .. } => match &service {
                Some(checks) => {
                    let (o, d, info) = Box::pin(crate::service_check::of_machine(
                        &run, machine, ip, checks, within,
                    ))
                    .await;
                    (o, d.into(), info)
                }
                None => continue,
            },
        };
        let took = started.elapsed();
        if observation == Observation::Ok {
            suspicion.answered(took);
        }
        let result = CheckResult {
            target: Arc::clone(&target),
            at_ms: now_ms(),
            observation,
            detail,
            info,
            took,
            knocked,
        };
        sink(result);
    }
}

/// Where a late check of `target` knocks ([`crate::knock`]), and for how long: its machine's
/// SSH port, which medic always reaches and whose accept queue no busy service can fill (a
/// full queue drops connections silently). A service's check is not joined by a knock: its
/// machine is judged by `fall` misses.
pub(crate) fn knock_at(
    target: &Target,
    ip: IpAddr,
    ssh_port: u16,
    after: Option<Duration>,
) -> Option<(std::net::SocketAddr, Duration)> {
    match target {
        Target::Service { .. } => None,
        _ => Some((std::net::SocketAddr::new(ip, ssh_port), after?)),
    }
}

pub(crate) fn redis_result(
    r: ProbeResult,
    within: Duration,
) -> (Observation, Cow<'static, str>, Option<ReplicationInfo>) {
    match r {
        ProbeResult::Up { info } => (Observation::Ok, Cow::Borrowed("answers"), Some(info)),
        ProbeResult::Refused => (
            Observation::Refused,
            Cow::Borrowed("connection refused"),
            None,
        ),
        ProbeResult::Timeout => (
            Observation::Silent,
            format!(
                "no answer within {}",
                medic_playbook::human_ms(within.as_millis() as u64)
            )
            .into(),
            None,
        ),
        // It answers, so it runs; medic cannot see its replication until its credentials are
        // put right, which `medic status` shows in this detail.
        ProbeResult::ErrorReply { code, message } if medic_redis::is_auth_refusal(&code) => (
            Observation::Ok,
            format!("answers, but refuses medic's login: {code} {message}").into(),
            None,
        ),
        // The same for a certificate medic refuses: a configuration to put right, never a
        // reason to fail a running server over.
        ProbeResult::ErrorReply { code, message } if code == medic_redis::TLS_REFUSED => (
            Observation::Ok,
            format!("answers, but its TLS handshake fails: {message}").into(),
            None,
        ),
        ProbeResult::ErrorReply { code, message } => (
            Observation::Unhealthy,
            format!("replied {code} {message}").into(),
            None,
        ),
        ProbeResult::WrongRole { expected, actual } => (
            Observation::Unhealthy,
            format!("is {} (expected {})", actual.as_str(), expected.as_str()).into(),
            None,
        ),
        // A reset or an unreachable host: nothing certain, so it counts as silence.
        ProbeResult::Failed { reason } => (Observation::Silent, reason.into(), None),
    }
}

/// One check of the HAProxy on `machine`: its runtime API answers, then its frontends accept.
/// Over SSH (`reach`), reaching the API (the session, its forward) is judged apart from asking
/// it: an API that cannot be reached, or whose forwarded connection the machine refused, says
/// nothing of HAProxy itself, and the frontends decide. An API reached that does not answer in
/// time is silence, as on the network (a hung HAProxy).
async fn proxy_check(
    api_for: &ApiFor,
    machine: &str,
    ip: IpAddr,
    port: Option<u16>,
    listens: &[u16],
    reach: Reach,
    within: Duration,
) -> (Observation, String) {
    let started = Instant::now();
    let over_ssh = reach == Reach::Ssh || port.is_none();
    let mut api = match tokio::time::timeout(within, api_for(machine.to_owned(), ip, port)).await {
        Ok(Ok(api)) => api,
        Ok(Err(e)) if over_ssh => return frontends_say(ip, listens, within, &e).await,
        Err(_) if over_ssh => {
            let e = HaproxyError::Connect {
                endpoint: port.map_or_else(
                    || medic_haproxy::Endpoint::Unix("its admin socket".into()),
                    |p| medic_haproxy::Endpoint::Tcp(std::net::SocketAddr::new(ip, p)),
                ),
                source: std::io::Error::other(format!(
                    "over SSH: no session within {}",
                    medic_playbook::human_ms(within.as_millis() as u64)
                )),
            };
            return frontends_say(ip, listens, within, &e).await;
        }
        other => return proxy_result(other, within),
    };
    let left = within.saturating_sub(started.elapsed());
    api.timeout = left;
    let work = async {
        api.servers(None).await?;
        // The runtime API answering is not enough: clients come in through the frontends.
        for p in listens {
            if let Err(e) = tokio::net::TcpStream::connect((ip, *p)).await {
                return Ok(Some(format!("frontend {ip}:{p} does not accept: {e}")));
            }
        }
        Ok(None)
    };
    match tokio::time::timeout(left, work).await {
        Ok(Ok(Some(closed))) => (Observation::Unhealthy, closed),
        // Over SSH, a forwarded connection the machine refused (HAProxy down, forwarding
        // disabled) comes back as a closed or broken reply: the frontends say which.
        Ok(Err(e)) if over_ssh && !matches!(e, HaproxyError::Timeout { .. }) => {
            frontends_say(ip, listens, within, &e).await
        }
        other => proxy_result(other, within),
    }
}

/// What a HAProxy's frontends say when its API could not be asked over SSH (`why`): one that
/// refuses is HAProxy not running; one silent is silence; all accepting is a running HAProxy
/// medic cannot control (unhealthy: it cannot be fenced).
async fn frontends_say(
    ip: IpAddr,
    listens: &[u16],
    within: Duration,
    why: &HaproxyError,
) -> (Observation, String) {
    for p in listens {
        match tokio::time::timeout(within, tokio::net::TcpStream::connect((ip, *p))).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return (
                    Observation::Refused,
                    format!("frontend {ip}:{p}: connection refused (and {why})"),
                );
            }
            Ok(Err(e)) => return (Observation::Silent, format!("frontend {ip}:{p}: {e}")),
            Err(_) => {
                return (
                    Observation::Silent,
                    format!("frontend {ip}:{p}: no answer in time"),
                );
            }
        }
    }
    (
        Observation::Unhealthy,
        format!("its frontends accept, but {why}"),
    )
}

fn proxy_result<T>(
    r: Result<Result<T, HaproxyError>, tokio::time::error::Elapsed>,
    within: Duration,
) -> (Observation, String) {
    match r {
        Ok(Ok(_)) => (Observation::Ok, "runtime API answers".into()),
        Ok(Err(HaproxyError::Connect { source, .. }))
            if source.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            (
                Observation::Refused,
                "runtime API: connection refused".into(),
            )
        }
        Ok(Err(HaproxyError::Connect { source, .. })) => {
            (Observation::Silent, format!("runtime API: {source}"))
        }
        Ok(Err(HaproxyError::Timeout { .. })) | Err(_) => (
            Observation::Silent,
            format!(
                "runtime API: no answer within {}",
                medic_playbook::human_ms(within.as_millis() as u64)
            ),
        ),
        Ok(Err(e)) => (Observation::Unhealthy, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_times_are_rounded_up_to_their_tick() {
        assert_eq!(tick_for(Duration::from_secs(1)), Duration::from_millis(10));
        assert_eq!(
            tick_for(Duration::from_millis(250)),
            Duration::from_millis(5)
        );
        assert_eq!(
            tick_for(Duration::from_millis(20)),
            Duration::from_millis(1)
        );
        let epoch = tokio::time::Instant::now();
        let tick = Duration::from_millis(10);
        let at = |ms: u64| epoch + Duration::from_millis(ms);
        assert_eq!(on_tick(at(0), epoch, tick), at(0));
        assert_eq!(on_tick(at(1), epoch, tick), at(10));
        assert_eq!(on_tick(at(10), epoch, tick), at(10));
        assert_eq!(on_tick(at(1234), epoch, tick), at(1240));
        // Never earlier than asked, and late by less than a tick.
        for us in (0..50_000).step_by(7) {
            let want = epoch + Duration::from_micros(us);
            let got = on_tick(want, epoch, tick);
            assert!(got >= want && got - want < tick, "{us}");
        }
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let mut j = Jitter::new("x");
        let base = Duration::from_millis(250);
        let d = Duration::from_millis(20);
        for _ in 0..10_000 {
            let v = j.around(base, d);
            assert!(v >= base - d && v <= base + d, "{v:?}");
        }
        assert_eq!(j.around(base, Duration::ZERO), base);
    }
}
