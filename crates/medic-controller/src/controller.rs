//! The controller: checks in, verdicts out, recoveries planned by the planner and run step by
//! step through the executor with a journal.
//!
//! - **Detection** (`on_result`): each target's [`Detector`]. A refusal from a live host is
//!   certain (`ProcessDied` at once); silence needs `fall` misses and then the witnesses —
//!   each proxy's own view of the server and the replica's link — before a machine is declared
//!   lost. If they still see it after they have had time to notice, the monitor is the one cut
//!   off: alert, do nothing.
//! - **Recoveries** run one at a time, each planned when its turn comes (so a second failure is
//!   planned against the state the first one left). Each step: intent journaled, executed with
//!   retries and backoff, outcome journaled, state saved. A step that still fails stops the
//!   recovery: the machine stays out of monitoring and an alert says where it stopped.
//! - **Flap damping**: a replacement beyond `policy.cooldown` or
//!   `policy.max_replacements_per_hour` is held — the plan runs up to its terminate step
//!   (failover included) and alerts instead of replacing.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use serde::Serialize;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use medic_cloud::{Cloud, Dns};
use medic_detect::{Decision, Detector, Health, Observation, Verdict, Witnesses, judge_silence};

mod reconcile;
mod witness;
use medic_exec::{ExecError, Executor};
use medic_plan::{
    Action, AlertLevel, Event, MonitorTarget, ObservedState, Plan, ReplicaState, ShardState, Step,
    StepOutput, plan_recovery,
};
use medic_playbook::Playbooks;
use medic_redis::{LinkStatus, Redis, RedisAddr, RedisAdmin as _, Role};
use medic_ssh::Ssh;
use medic_topology::{LoadedTopology, Topology};

use crate::checks::{self, Book, CheckResult, SharedBook, Target};
use crate::journal::{Journal, Outcome, Record, RecoveryLog, Writer, now_ms};
use crate::notify::Notifier;
use crate::store::{Saved, Store, hold_reason};

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Ssh(#[from] medic_ssh::SshError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the controller cannot listen on {addr}: {source} (is another `medic run` running?)")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the health checks' thread: {0}")]
    ChecksThread(#[source] std::io::Error),
}

/// Reloads the topology and playbooks from disk (validated), for SIGHUP.
pub type Reload =
    Box<dyn Fn() -> Result<(LoadedTopology, Playbooks), String> + Send + Sync + 'static>;

/// What `medic run` starts with.
pub struct Setup<C, D> {
    pub loaded: LoadedTopology,
    pub playbooks: Playbooks,
    pub cloud: C,
    pub dns: Option<D>,
    pub reload: Reload,
}

impl<C, D> std::fmt::Debug for Setup<C, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("topology", &self.loaded.path)
            .finish_non_exhaustive()
    }
}

/// How many times a failing step is tried, and the first pause between tries (doubling).
const ATTEMPTS: u32 = 3;
const BACKOFF: Duration = Duration::from_millis(500);
/// How long a witness may take to answer.
const WITNESS_WITHIN: Duration = Duration::from_millis(500);
/// A replica that heard nothing from its master for longer than this sees it as gone (the
/// redis playbook sets `repl-ping-replica-period 1`).
const LINK_SILENT_SECS: u64 = 2;
/// Alerts kept for the status page.
const ALERTS_KEPT: usize = 50;

/// One target's health, for status and decisions.
#[derive(Debug, Clone)]
struct TargetHealth {
    detector: Detector,
    last: Observation,
    detail: String,
    last_ok_ms: Option<u64>,
    /// The first failed check of the current run of failures.
    first_fail_ms: Option<u64>,
    role: Option<Role>,
    offset: Option<u64>,
    checks: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertRecord {
    pub at_ms: u64,
    pub level: AlertLevel,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct InFlight {
    pub recovery: String,
    pub event: String,
    pub trigger: String,
    pub started_ms: u64,
    pub step: usize,
    pub steps: usize,
    pub kind: String,
    pub target: String,
    pub step_started_ms: u64,
}

/// A recovery asked for, waiting its turn.
#[derive(Debug, Clone)]
struct Request {
    event: Event,
    trigger: String,
    first_failure_ms: Option<u64>,
    master_last_ok_ms: Option<u64>,
    /// Set when resuming a journaled recovery.
    resume: Option<RecoveryLog>,
}

impl Request {
    fn machine(&self) -> Option<&str> {
        match &self.event {
            Event::MachineLost { machine }
            | Event::ProcessDied { machine, .. }
            | Event::StaleMaster { machine, .. } => Some(machine),
            // One switchover per shard at a time.
            Event::Switchover { shard, .. } => Some(shard),
            Event::Bootstrap => None,
        }
    }
}

#[derive(Debug, Default)]
struct Metrics {
    checks: BTreeMap<(&'static str, &'static str), u64>,
    check_seconds: BTreeMap<&'static str, (f64, u64)>,
    recoveries: BTreeMap<&'static str, u64>,
    steps: BTreeMap<String, (f64, u64)>,
    step_failures: BTreeMap<String, u64>,
    detection_seconds: Option<f64>,
    alerts: BTreeMap<&'static str, u64>,
}

#[derive(Debug)]
struct St {
    saved: Saved,
    /// Hashed, not ordered: it is looked up for every check result (thousands a second), and
    /// only listings (status, metrics) need an order, which they sort for.
    health: FxHashMap<Target, TargetHealth>,
    in_flight: Option<InFlight>,
    /// Machines with a recovery queued or running.
    busy: BTreeSet<String>,
    alerts: VecDeque<AlertRecord>,
    /// Machines whose "monitor cut off" alert was raised (once per episode).
    cut_off: BTreeSet<String>,
    /// Machines whose witnesses are being asked now, and when they were last asked.
    judging: BTreeSet<String>,
    judged_at: BTreeMap<String, Instant>,
    /// Witness answers asked ahead, at a machine's first missed check, so that the verdict at
    /// the `fall`-th miss need not wait for them: `None` while they are being asked.
    early: BTreeMap<String, watch::Receiver<Option<EarlyAnswer>>>,
    /// Warnings raised once per episode (hung process, bad answers).
    warned: BTreeSet<Target>,
    metrics: Metrics,
    /// What happened, newest last, numbered: `medic events` follows it.
    events: VecDeque<EventRecord>,
    next_event: u64,
    /// Each proxy's routing as last read (the reconcile reads it every few seconds).
    routing: BTreeMap<String, reconcile::Routing>,
    /// When this controller started (ms): a proxy never read since is "unknown" after a while.
    started_ms: u64,
}

/// How many of a silent machine's servers each witness probes.
const WITNESS_SHARDS: usize = 3;

/// Starts the checks' thread with its single-threaded runtime; it runs until the sender it
/// returns is used or dropped.
async fn checks_thread()
-> Result<(tokio::runtime::Handle, tokio::sync::oneshot::Sender<()>), ControllerError> {
    let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("medic-checks".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => {
                    let _ = handle_tx.send(Ok(rt.handle().clone()));
                    rt.block_on(async {
                        let _ = stop_rx.await;
                    });
                }
                Err(e) => {
                    let _ = handle_tx.send(Err(e));
                }
            }
        })
        .map_err(ControllerError::ChecksThread)?;
    match handle_rx.await {
        Ok(Ok(handle)) => Ok((handle, stop_tx)),
        Ok(Err(e)) => Err(ControllerError::ChecksThread(e)),
        Err(_) => Err(ControllerError::ChecksThread(std::io::Error::other(
            "the checks' thread ended before its runtime started",
        ))),
    }
}

/// What the witnesses said when asked ahead of a verdict.
#[derive(Debug, Clone)]
struct EarlyAnswer {
    /// When they were asked (the controller's clock, ms).
    asked_ms: u64,
    answer: (Witnesses, bool),
}

/// One line of `medic events`.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub seq: u64,
    pub at_ms: u64,
    /// detection, recovery_start, step, step_failed, recovery_done, recovery_failed, held,
    /// alert, recovered.
    pub kind: String,
    pub message: String,
}

/// Events kept for `medic events`.
const EVENTS_KEPT: usize = 1000;

struct Inner<C, D> {
    loaded: RwLock<Arc<LoadedTopology>>,
    playbooks: RwLock<Arc<Playbooks>>,
    reload: Reload,
    cloud: C,
    dns: Option<D>,
    ssh: Ssh,
    redis: Redis,
    journal: Journal,
    store: Store,
    book: SharedBook,
    st: Mutex<St>,
    requests: mpsc::UnboundedSender<Request>,
    requests_rx: Mutex<Option<mpsc::UnboundedReceiver<Request>>>,
    notifier: RwLock<Notifier>,
    token: String,
    stopping: AtomicBool,
    stop: Notify,
    checks: Mutex<Vec<JoinHandle<()>>>,
    /// The runtime of the health checks and of the detection that reads their results: a
    /// thread of its own, so no recovery step, journal fsync or API request ever delays a
    /// check, and thousands of checks a second cost no wake-ups across threads. `None` until
    /// `run` starts it (checks then run on the caller's runtime).
    checks_rt: Mutex<Option<tokio::runtime::Handle>>,
    listen: SocketAddr,
    failpoint: Option<(String, usize)>,
}

/// `MEDIC_FAILPOINT=after-intent:N`, `after-exec:N` or `after-done:N`: the process aborts (as a
/// SIGKILL would stop it) right after journaling step N's intent, after step N did its work but
/// before its outcome is journaled, or after the outcome — so tests can prove the roll-forward
/// at every point. Unset in production; read once at start.
fn failpoint_from_env() -> Option<(String, usize)> {
    let v = std::env::var("MEDIC_FAILPOINT").ok()?;
    let (point, step) = v.split_once(':')?;
    Some((point.to_owned(), step.parse().ok()?))
}

/// The controller. Cheap to clone; every clone is the same controller.
pub struct Controller<C, D> {
    inner: Arc<Inner<C, D>>,
}

impl<C, D> Clone for Controller<C, D> {
    fn clone(&self) -> Self {
        Controller {
            inner: self.inner.clone(),
        }
    }
}

impl<C, D> std::fmt::Debug for Controller<C, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("listen", &self.inner.listen)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads the API token, creating it (random, mode 0600) on first start.
pub fn api_token(state_dir: &std::path::Path) -> Result<String, ControllerError> {
    let path = state_dir.join("api-token");
    let io = |source| ControllerError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut bytes = [0u8; 24];
    {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(io)?;
    }
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        f.write_all(token.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    Ok(token)
}

impl<C: Cloud + 'static, D: Dns + 'static> Controller<C, D> {
    /// Opens the state directory, discovers where every machine is and who is master, and
    /// makes the controller ready to [`run`](Self::run).
    pub async fn start(setup: Setup<C, D>) -> Result<Self, ControllerError> {
        let top = &setup.loaded.topology;
        let state_dir = top.controller.state_dir.clone();
        std::fs::create_dir_all(&state_dir).map_err(|source| ControllerError::Io {
            path: state_dir.clone(),
            source,
        })?;
        let token = api_token(&state_dir)?;
        let journal = Journal::open(state_dir.join("journal"))?;
        let store = Store::new(&state_dir);
        let ssh = Ssh::new(&state_dir.join("known_hosts"))?;
        let saved = match store.load()? {
            Some(s) if s.topology == top.name.value => s,
            _ => Saved {
                topology: top.name.value.clone(),
                observed: ObservedState::assumed(top),
                maintenance: BTreeSet::new(),
                unmonitored: BTreeSet::new(),
                replacements: Vec::new(),
            },
        };
        let (requests, rx) = mpsc::unbounded_channel();
        let listen = top.controller.listen.value;
        let notifier = Notifier::from_topology(top);
        let inner = Inner {
            loaded: RwLock::new(Arc::new(setup.loaded)),
            playbooks: RwLock::new(Arc::new(setup.playbooks)),
            reload: setup.reload,
            cloud: setup.cloud,
            dns: setup.dns,
            ssh,
            redis: Redis {
                timeout: Duration::from_secs(2),
            },
            journal,
            store,
            book: Arc::new(RwLock::new(Book::default())),
            st: Mutex::new(St {
                saved,
                health: FxHashMap::default(),
                in_flight: None,
                busy: BTreeSet::new(),
                alerts: VecDeque::new(),
                cut_off: BTreeSet::new(),
                judging: BTreeSet::new(),
                judged_at: BTreeMap::new(),
                early: BTreeMap::new(),
                warned: BTreeSet::new(),
                metrics: Metrics::default(),
                events: VecDeque::new(),
                next_event: 1,
                routing: BTreeMap::new(),
                started_ms: now_ms(),
            }),
            requests,
            requests_rx: Mutex::new(Some(rx)),
            notifier: RwLock::new(notifier),
            token,
            stopping: AtomicBool::new(false),
            stop: Notify::new(),
            checks: Mutex::new(Vec::new()),
            checks_rt: Mutex::new(None),
            listen,
            failpoint: failpoint_from_env(),
        };
        let c = Controller {
            inner: Arc::new(inner),
        };
        c.discover().await;
        c.resume_open()?;
        Ok(c)
    }

    fn top(&self) -> Arc<LoadedTopology> {
        read(&self.inner.loaded).clone()
    }

    pub fn listen(&self) -> SocketAddr {
        self.inner.listen
    }

    pub fn token(&self) -> &str {
        &self.inner.token
    }

    /// Where machines are (the cloud's instances by tag, or the topology's addresses) and who
    /// is master of each shard (each server asked; the saved state where they do not answer).
    async fn discover(&self) {
        let loaded = self.top();
        let top = &loaded.topology;
        let mut observed = lock(&self.inner.st).saved.observed.clone();
        add_new(&mut observed, top);
        if top.provider.value.can_launch() {
            for m in top.machines.iter().map(|m| &m.value) {
                if m.role.value == medic_topology::Role::Monitor {
                    continue;
                }
                let tags = BTreeMap::from([
                    (medic_cloud::TAG_TOPOLOGY.to_owned(), top.name.value.clone()),
                    (medic_cloud::TAG_MACHINE.to_owned(), m.name.value.clone()),
                ]);
                match self.inner.cloud.find(&tags).await {
                    Ok(found) => {
                        // The newest running one (a replacement that finished).
                        let Some(i) = found.into_iter().rfind(|i| !i.state.is_gone()) else {
                            tracing::warn!(machine = %m.name.value, "No instance found for the machine.");
                            continue;
                        };
                        let st = observed.machines.entry(m.name.value.clone()).or_insert(
                            medic_plan::MachineState {
                                address: None,
                                instance_id: None,
                            },
                        );
                        st.address = i.address.or(st.address);
                        st.instance_id = Some(i.id.clone());
                        self.learn_host_keys(top, &m.name.value, i.address, &i.id)
                            .await;
                    }
                    Err(e) => {
                        tracing::warn!(machine = %m.name.value, error = %e, "Cannot look the machine up.")
                    }
                }
            }
        }
        // Roles: ask every server; where exactly one says master, that is the truth.
        for s in top.shards.iter().map(|s| &s.value) {
            let mut masters = Vec::new();
            let mut offsets = BTreeMap::new();
            for m in Topology::shard_machines(s) {
                let Some(ip) = observed.address(m) else {
                    continue;
                };
                if let Some(info) = replication_now(SocketAddr::new(ip, s.port.value)).await {
                    if info.role == Role::Master {
                        masters.push(m.to_owned());
                    }
                    offsets.insert(m.to_owned(), info.replica_offset.unwrap_or(info.offset));
                }
            }
            if let [master] = masters.as_slice() {
                let replicas = Topology::shard_machines(s)
                    .filter(|m| m != master)
                    .map(|m| ReplicaState {
                        machine: m.to_owned(),
                        offset: offsets.get(m).copied(),
                    })
                    .collect();
                observed.shards.insert(
                    s.name.value.clone(),
                    ShardState {
                        master: master.clone(),
                        master_offset: offsets.get(master).copied(),
                        replicas,
                    },
                );
            } else if masters.len() > 1 {
                self.alert(
                    AlertLevel::Critical,
                    format!(
                        "shard {} has {} masters ({}): medic keeps {} as recorded and demotes the others",
                        s.name.value,
                        masters.len(),
                        masters.join(", "),
                        observed
                            .shards
                            .get(&s.name.value)
                            .map_or("?", |x| x.master.as_str())
                    ),
                );
            }
        }
        {
            let mut st = lock(&self.inner.st);
            st.saved.observed = observed;
            self.sync_book(&st);
            if let Err(e) = self.inner.store.save(&st.saved) {
                tracing::error!(error = %e, "Cannot save the state.");
            }
        }
    }

    async fn learn_host_keys(&self, top: &Topology, machine: &str, ip: Option<IpAddr>, id: &str) {
        let Some(ip) = ip else {
            return;
        };
        let Ok(keys) = self.inner.cloud.host_keys(id).await else {
            return;
        };
        let host = medic_exec::ssh_host(top, machine, ip);
        for k in keys {
            if let Err(e) = self.inner.ssh.learn_host_key(&host, &k) {
                tracing::warn!(machine, error = %e, "Cannot record the host key.");
            }
        }
    }

    /// Queues every recovery the journal says is unfinished, oldest first.
    fn resume_open(&self) -> Result<(), ControllerError> {
        let open = self.inner.journal.open_recoveries()?;
        open.alert_damaged(|level, text| self.alert(level, text));
        for log in open {
            tracing::warn!(recovery = %log.id, next = ?log.next_step(), "Resuming an unfinished recovery.");
            {
                let mut st = lock(&self.inner.st);
                // Replay what the finished steps did (idempotent if the state has it already).
                for step in &log.plan.steps {
                    if let Some(d) = log.done.get(&step.index) {
                        st.saved.observed.apply(&step.action, &d.output);
                    }
                }
                self.sync_book(&st);
            }
            let req = Request {
                event: log.plan.event.clone(),
                trigger: log.trigger.clone(),
                first_failure_ms: log.first_failure_ms,
                master_last_ok_ms: log.master_last_ok_ms,
                resume: Some(log),
            };
            self.enqueue(req);
        }
        Ok(())
    }

    /// Updates what the check tasks read: addresses and who is not to be checked.
    fn sync_book(&self, st: &St) {
        let mut b = self
            .inner
            .book
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        b.addresses = st
            .saved
            .observed
            .machines
            .iter()
            .filter_map(|(m, s)| s.address.map(|a| (m.clone(), a)))
            .collect();
        b.paused = st
            .saved
            .maintenance
            .iter()
            .chain(st.saved.unmonitored.iter())
            .cloned()
            .collect();
        b.version += 1;
    }

    fn enqueue(&self, req: Request) -> bool {
        if let Some(m) = req.machine() {
            let mut st = lock(&self.inner.st);
            if !st.busy.insert(m.to_owned()) {
                return false;
            }
        }
        self.inner.requests.send(req).is_ok()
    }

    // ---- running ------------------------------------------------------------------------

    /// Runs until [`stop`](Self::stop): checks, detection, recoveries and the HTTP API.
    pub async fn run(&self) -> Result<(), ControllerError> {
        let listener = tokio::net::TcpListener::bind(self.inner.listen)
            .await
            .map_err(|source| ControllerError::Listen {
                addr: self.inner.listen,
                source,
            })?;
        let api = tokio::spawn(crate::api::serve(self.clone(), listener));
        let (checks_rt, checks_stop) = checks_thread().await?;
        *lock(&self.inner.checks_rt) = Some(checks_rt.clone());
        self.spawn_checks();
        let worker = {
            let c = self.clone();
            let rx = lock(&self.inner.requests_rx).take();
            tokio::spawn(async move {
                if let Some(rx) = rx {
                    c.work(rx).await;
                }
            })
        };
        self.warm_up_ssh();
        let reconcile = {
            let c = self.clone();
            tokio::spawn(async move { c.reconcile_proxies().await })
        };
        tracing::info!(listen = %self.inner.listen, "medic is watching.");
        self.inner.stop.notified().await;
        reconcile.abort();
        // A safe point: the worker finishes the step it is in, then stops.
        let _ = worker.await;
        for h in lock(&self.inner.checks).drain(..) {
            h.abort();
        }
        api.abort();
        let _ = checks_stop.send(());
        Ok(())
    }

    /// Opens the SSH sessions a failover uses before they are needed (opening one costs
    /// ~200 ms): to every proxy, whose haproxy.cfg each runtime change is written into, and to
    /// every machine that may be asked as a witness.
    fn warm_up_ssh(&self) {
        let c = self.clone();
        tokio::spawn(async move {
            let loaded = c.top();
            let top = &loaded.topology;
            let observed = lock(&c.inner.st).saved.observed.clone();
            let mut set = tokio::task::JoinSet::new();
            for m in top.machines.iter().map(|m| &m.value) {
                if m.role.value == medic_topology::Role::Monitor {
                    continue;
                }
                let name = m.name.value.clone();
                let Some(host) = observed
                    .address(&name)
                    .map(|ip| medic_exec::ssh_host(top, &name, ip))
                else {
                    continue;
                };
                let c = c.clone();
                set.spawn(async move {
                    use medic_ssh::Remote as _;
                    if let Err(e) = c.inner.ssh.run(&host, "true", Duration::from_secs(10)).await {
                        tracing::warn!(machine = %name, error = %e, "No SSH session: this machine cannot be a first-hand witness, and runtime changes on it cannot be made permanent.");
                    }
                });
            }
            while set.join_next().await.is_some() {}
        });
    }

    /// Asks [`run`](Self::run) to stop at the next safe point (between steps).
    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.stop.notify_one();
        // Wakes the worker if it waits for a request.
        let _ = self.inner.requests.send(Request {
            event: Event::Bootstrap,
            trigger: "stop".into(),
            first_failure_ms: None,
            master_last_ok_ms: None,
            resume: None,
        });
    }

    fn spawn_checks(&self) {
        let loaded = self.top();
        let rt = lock(&self.inner.checks_rt)
            .clone()
            .unwrap_or_else(tokio::runtime::Handle::current);
        let handles = checks::spawn(&rt, &loaded.topology, self.inner.book.clone(), {
            let c = self.clone();
            Arc::new(move |r| c.on_result(r))
        });
        let mut old = lock(&self.inner.checks);
        for h in old.drain(..) {
            h.abort();
        }
        *old = handles;
    }

    /// SIGHUP: re-reads the topology; on any error the running one stays.
    pub fn reload(&self) -> Result<(), String> {
        let (loaded, playbooks) = (self.inner.reload)()?;
        if loaded.topology.name.value != self.top().topology.name.value {
            return Err(format!(
                "the topology's name changed from {} to {}: restart medic for another deployment",
                self.top().topology.name.value,
                loaded.topology.name.value
            ));
        }
        *self
            .inner
            .notifier
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Notifier::from_topology(&loaded.topology);
        {
            let mut st = lock(&self.inner.st);
            add_new(&mut st.saved.observed, &loaded.topology);
            self.sync_book(&st);
        }
        *self
            .inner
            .loaded
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
        *self
            .inner
            .playbooks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(playbooks);
        self.spawn_checks();
        tracing::info!("Topology reloaded.");
        Ok(())
    }

    // ---- detection ----------------------------------------------------------------------

    fn on_result(&self, r: CheckResult) {
        let loaded = self.top();
        let top = &loaded.topology;
        let machine = r.target.machine();
        let mut st = lock(&self.inner.st);
        let m = &mut st.metrics;
        *m.checks
            .entry((r.target.kind(), observation_label(r.observation)))
            .or_default() += 1;
        let e = m.check_seconds.entry(r.target.kind()).or_default();
        e.0 += r.took.as_secs_f64();
        e.1 += 1;
        if st.busy.contains(machine)
            || st.saved.maintenance.contains(machine)
            || st.saved.unmonitored.contains(machine)
        {
            return;
        }
        let check = match &*r.target {
            Target::Redis { .. } => top.checks.redis.value,
            Target::Proxy { .. } => top.checks.haproxy.value,
            Target::App { .. } => top.checks.app_proxy.value,
        };
        // Thousands of results a second: one lookup and no allocation on the steady path (the
        // target is cloned only the first time, the detail only when it changes).
        let Some(h) = st.health.get_mut(&*r.target) else {
            st.health.insert(
                Target::clone(&r.target),
                TargetHealth {
                    detector: Detector::new(check.fall, check.rise),
                    last: Observation::Ok,
                    detail: String::new(),
                    last_ok_ms: None,
                    first_fail_ms: None,
                    role: None,
                    offset: None,
                    checks: 0,
                },
            );
            drop(st);
            return self.on_result(r);
        };
        h.checks += 1;
        // (An answer's detail is always the same: compared only when something is wrong.)
        let steady = r.observation == Observation::Ok && h.last == Observation::Ok;
        if !steady && h.detail != r.detail {
            h.detail = r.detail.to_string();
        }
        h.last = r.observation;
        if r.observation == Observation::Ok {
            h.last_ok_ms = Some(r.at_ms);
            h.first_fail_ms = None;
        } else if h.first_fail_ms.is_none() {
            h.first_fail_ms = Some(r.at_ms);
        }
        if let Some(info) = &r.info {
            h.role = Some(info.role);
            h.offset = Some(info.replica_offset.unwrap_or(info.offset));
        }
        // A refusal is certain of a redis process. Not of a proxy's machine: HAProxy's runtime
        // API or a frontend refuses while it restarts or reloads, and there is no process
        // restart for it, only a replacement — so it is judged like silence: `fall` of them,
        // then the machine's observers.
        let observation = match (&*r.target, r.observation) {
            (Target::Proxy { .. } | Target::App { .. }, Observation::Refused) => {
                Observation::Silent
            }
            (_, o) => o,
        };
        let was_up = h.detector.health == Health::Up;
        let verdict = h.detector.observe(observation);
        let health = h.detector.health;
        let first_fail = h.first_fail_ms;
        let first_miss = was_up && verdict.is_none() && observation == Observation::Silent;
        // Offsets and roles as the servers report them.
        if let (Target::Redis { shard, machine }, Some(info)) = (&*r.target, &r.info)
            && let Some(s) = st.saved.observed.shards.get_mut(shard)
        {
            let recorded_master = s.master == *machine;
            match (info.role, recorded_master) {
                (Role::Master, true) => s.master_offset = Some(info.offset),
                (Role::Replica, false) => {
                    let linked =
                        info.master_link_status == Some(LinkStatus::Up) && !info.sync_in_progress;
                    if let Some(rep) = s.replicas.iter_mut().find(|x| x.machine == *machine) {
                        // A replica counts as in sync only while its link is up.
                        rep.offset = if linked {
                            info.replica_offset.or(rep.offset)
                        } else {
                            rep.offset
                        };
                    }
                }
                (Role::Master, false) => {
                    let (shard, machine) = (shard.clone(), machine.clone());
                    drop(st);
                    self.alert(
                        AlertLevel::Critical,
                        format!("{shard}@{machine} answers as master, but {} is the shard's master: fencing it and making it a replica", self.master_of(&shard).unwrap_or_default()),
                    );
                    self.enqueue(Request {
                        event: Event::StaleMaster { shard, machine },
                        trigger: format!("redis {}: answers as master", r.target),
                        first_failure_ms: Some(r.at_ms),
                        master_last_ok_ms: None,
                        resume: None,
                    });
                    return;
                }
                (Role::Replica, true) => {
                    if st.warned.insert(Target::clone(&r.target)) {
                        let t = Target::clone(&r.target);
                        drop(st);
                        self.alert(
                            AlertLevel::Critical,
                            format!("{t} answers as a replica but is recorded as its shard's master: clients cannot write; check who demoted it"),
                        );
                        return;
                    }
                }
            }
        }
        let Some(verdict) = verdict else {
            if first_miss {
                drop(st);
                self.ask_ahead(&r.target);
                return;
            }
            // Silence that has not been acted on is judged again as it goes on.
            if matches!(health, Health::Down { certain: false, .. })
                && observation == Observation::Silent
            {
                drop(st);
                self.judge(&r.target, first_fail);
            }
            return;
        };
        drop(st);
        tracing::info!(target = %r.target, ?verdict, detail = %r.detail, "Health changed.");
        match verdict {
            Verdict::Recovered => {
                let mut st = lock(&self.inner.st);
                st.cut_off.remove(machine);
                st.warned.remove(&r.target);
                drop(st);
                self.notify("recovered", &format!("{} answers again", r.target), None);
            }
            Verdict::Dead => {
                // Only a redis target is ever dead: a proxy's refusal is judged as silence.
                if let Target::Redis { shard, machine } = &*r.target {
                    self.detected(&r, first_fail);
                    self.enqueue(Request {
                        event: Event::ProcessDied {
                            shard: shard.clone(),
                            machine: machine.clone(),
                        },
                        trigger: format!("{}: {}", r.target, r.detail),
                        first_failure_ms: first_fail,
                        master_last_ok_ms: self.last_ok_if_master(&r.target),
                        resume: None,
                    });
                }
            }
            Verdict::Silent => self.judge(&r.target, first_fail),
            Verdict::Failing => {
                let mut st = lock(&self.inner.st);
                if st.warned.insert(Target::clone(&r.target)) {
                    drop(st);
                    self.alert(
                        AlertLevel::Warning,
                        format!("{} answers but is unusable: {}", r.target, r.detail),
                    );
                }
            }
        }
    }

    fn master_of(&self, shard: &str) -> Option<String> {
        lock(&self.inner.st)
            .saved
            .observed
            .shards
            .get(shard)
            .map(|s| s.master.clone())
    }

    fn last_ok_if_master(&self, t: &Target) -> Option<u64> {
        let st = lock(&self.inner.st);
        let mut last = None;
        for (target, h) in &st.health {
            if let Target::Redis { shard, machine } = target
                && machine == t.machine()
                && st
                    .saved
                    .observed
                    .shards
                    .get(shard)
                    .is_some_and(|s| s.master == *machine)
            {
                last = last.max(h.last_ok_ms);
            }
        }
        last
    }

    fn detected(&self, r: &CheckResult, first_fail: Option<u64>) {
        let secs = first_fail.map(|f| r.at_ms.saturating_sub(f) as f64 / 1000.0);
        lock(&self.inner.st).metrics.detection_seconds = secs;
        self.notify(
            "detection",
            &format!("{}: {}", r.target, r.detail),
            Some(serde_json::json!({ "target": &*r.target, "detail": r.detail })),
        );
    }

    /// Silence: ask the witnesses (in a task of its own) whether the machine is really gone.
    fn judge(&self, target: &Target, first_fail: Option<u64>) {
        let machine = target.machine().to_owned();
        let loaded = self.top();
        let interval = match target {
            Target::Redis { .. } => loaded.topology.checks.redis.value.interval,
            Target::Proxy { .. } => loaded.topology.checks.haproxy.value.interval,
            Target::App { .. } => loaded.topology.checks.app_proxy.value.interval,
        }
        .as_duration();
        {
            let mut st = lock(&self.inner.st);
            if st.busy.contains(&machine) || st.judging.contains(&machine) {
                return;
            }
            if st
                .judged_at
                .get(&machine)
                .is_some_and(|at| at.elapsed() < interval)
            {
                return;
            }
            // Every redis server of the machine must be failing: one silent server next to
            // answering ones is a hung process, not a lost machine.
            // (This runs for every result of a silent target: the scan stops at the first
            // answering server, and the names are gathered only for the one warning.)
            if answering_beside(&st, target).next().is_some() {
                if st.warned.insert(target.clone()) {
                    let mut answering: Vec<String> = answering_beside(&st, target)
                        .map(Target::to_string)
                        .collect();
                    answering.sort();
                    let more = answering.len().saturating_sub(3);
                    answering.truncate(3);
                    if more > 0 {
                        answering.push(format!("{more} more"));
                    }
                    drop(st);
                    self.alert(
                        AlertLevel::Warning,
                        format!("{target} is silent while {} on the same machine answer: a hung process? medic does not act on it", answering.join(", ")),
                    );
                }
                return;
            }
            st.judging.insert(machine.clone());
            st.judged_at.insert(machine.clone(), Instant::now());
        }
        let c = self.clone();
        let target = target.clone();
        tokio::spawn(async move {
            let (w, first_hand) = c.witnesses_now_or_ahead(&target, first_fail).await;
            let mut decision = judge_silence(&w);
            let silent_for = first_fail.map_or(Duration::ZERO, |f| {
                Duration::from_millis(now_ms().saturating_sub(f))
            });
            let early = silent_for < c.witness_grace();
            if (decision == Decision::MonitorCutOff && !first_hand && early)
                || (decision == Decision::Unconfirmed && early)
            {
                // Some witnesses spoke from their own checks, which may not have noticed yet,
                // or could not be asked this time: the next checks ask again.
                decision = Decision::Wait;
            }
            tracing::info!(%target, ?w, ?decision, silent_ms = silent_for.as_millis() as u64, "Witnesses asked.");
            lock(&c.inner.st).judging.remove(&machine);
            match decision {
                Decision::FailOver => {
                    let r = CheckResult {
                        target: Arc::new(target.clone()),
                        at_ms: now_ms(),
                        observation: Observation::Silent,
                        detail: format!(
                            "silent for {} ms; {}",
                            silent_for.as_millis(),
                            witness::describe(&w)
                        )
                        .into(),
                        info: None,
                        took: Duration::ZERO,
                    };
                    c.detected(&r, first_fail);
                    let last_ok = c.last_ok_if_master(&target);
                    c.enqueue(Request {
                        event: Event::MachineLost {
                            machine: machine.clone(),
                        },
                        trigger: format!("{}: {}", target, r.detail),
                        first_failure_ms: first_fail,
                        master_last_ok_ms: last_ok,
                        resume: None,
                    });
                }
                Decision::MonitorCutOff => {
                    let first = lock(&c.inner.st).cut_off.insert(machine.clone());
                    if first {
                        c.alert(
                            AlertLevel::Critical,
                            format!("the monitor host cannot reach {machine}, but other observers still see it — {}: medic does not fail over; check the monitor host's network", witness::describe(&w)),
                        );
                    }
                }
                Decision::Unconfirmed => {
                    let first = lock(&c.inner.st).cut_off.insert(machine.clone());
                    if first {
                        c.alert(
                            AlertLevel::Critical,
                            format!("{machine} is silent to the monitor host, but only {}: no majority of its observers confirms it is gone, so medic does not fail over (the monitor host may be on the minority side of a partition); check the network, or `medic recover {machine}` if it is really lost", witness::describe(&w)),
                        );
                    }
                }
                Decision::Wait => {}
            }
        });
    }

    /// A machine's first missed check: asks its witnesses now, in the background, so that if
    /// the silence lasts the `fall` checks the verdict has their answer at once (a first-hand
    /// probe of a silent server takes its whole bound). Nothing is decided here.
    fn ask_ahead(&self, target: &Target) {
        let machine = target.machine().to_owned();
        let (tx, rx) = watch::channel(None);
        {
            let mut st = lock(&self.inner.st);
            if st.busy.contains(&machine)
                || st.judging.contains(&machine)
                || st.early.get(&machine).is_some_and(|e| e.borrow().is_none())
            {
                return;
            }
            // Another server of the machine answering: not a lost machine (the verdict will
            // say hung process), nothing to ask.
            if answering_beside(&st, target).next().is_some() {
                return;
            }
            st.early.insert(machine, rx);
        }
        let c = self.clone();
        let target = target.clone();
        tokio::spawn(async move {
            let asked_ms = now_ms();
            let answer = c.witnesses(&target).await;
            let _ = tx.send(Some(EarlyAnswer { asked_ms, answer }));
        });
    }

    /// The witnesses' answer for a verdict: the one asked ahead if it was asked during this
    /// silence and says the machine is gone (waiting for it if it is still coming); otherwise
    /// they are asked now. Only a failover is sped up: an answer that the machine is still seen
    /// may be stale by now, so it is asked again.
    async fn witnesses_now_or_ahead(
        &self,
        target: &Target,
        first_fail: Option<u64>,
    ) -> (Witnesses, bool) {
        let early = lock(&self.inner.st).early.remove(target.machine());
        if let Some(mut rx) = early {
            let got = rx
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|a| a.clone());
            if let Some(EarlyAnswer { asked_ms, answer }) = got
                && first_fail.is_some_and(|f| asked_ms >= f)
                && judge_silence(&answer.0) == Decision::FailOver
            {
                return answer;
            }
        }
        self.witnesses(target).await
    }

    /// How long the witnesses may take to notice a silent server: a HAProxy's checks, or a
    /// replica's silent-link threshold, whichever is slower.
    fn witness_grace(&self) -> Duration {
        let loaded = self.top();
        let h = &loaded.topology.proxies.value.haproxy;
        let haproxy =
            h.check_interval.as_duration() * (h.check_fall + 1) + h.timeout_check.as_duration();
        haproxy.max(Duration::from_secs(LINK_SILENT_SECS + 2))
    }

    // ---- recoveries ---------------------------------------------------------------------

    async fn work(&self, mut rx: mpsc::UnboundedReceiver<Request>) {
        while let Some(req) = rx.recv().await {
            if self.inner.stopping.load(Ordering::SeqCst) {
                return;
            }
            let machine = req.machine().map(str::to_owned);
            let span = tracing::info_span!("recovery", event = %req.event);
            let outcome = self.recover(req).instrument(span).await;
            let follow_up = outcome.as_ref().ok().cloned().flatten();
            if let Err(e) = outcome {
                tracing::error!(error = %e, "The recovery could not be journaled.");
                self.alert(
                    AlertLevel::Critical,
                    format!("a recovery stopped: its journal cannot be written: {e}"),
                );
            }
            if self.inner.stopping.load(Ordering::SeqCst) {
                return;
            }
            if let Some(m) = machine {
                let mut st = lock(&self.inner.st);
                st.busy.remove(&m);
                // Fresh detectors: what is still wrong is detected (and acted on) again.
                st.health.retain(|t, _| t.machine() != m);
                st.cut_off.remove(&m);
                st.warned.retain(|t| t.machine() != m);
            }
            if let Some(next) = follow_up {
                self.enqueue(next);
            }
        }
    }

    /// Plans (or resumes) and runs one recovery.
    async fn recover(&self, mut req: Request) -> Result<Option<Request>, ControllerError> {
        let loaded = self.top();
        let top = &loaded.topology;
        let playbooks = read(&self.inner.playbooks).clone();
        let (plan, mut writer, log) = match req.resume.take() {
            Some(log) => {
                let mut w = self.inner.journal.reopen(&log.id)?;
                w.append(&Record::Resumed {
                    at_ms: now_ms(),
                    from_step: log.next_step().unwrap_or(0),
                })?;
                (log.plan.clone(), w, Some(log))
            }
            None => {
                let observed = lock(&self.inner.st).saved.observed.clone();
                let id = recovery_id(req.machine().unwrap_or("all"));
                let plan = match plan_recovery(top, &observed, &req.event, &id) {
                    Ok(p) => p,
                    Err(e) => {
                        self.alert(
                            AlertLevel::Critical,
                            format!("{}: cannot plan a recovery: {e}", req.event),
                        );
                        return Ok(None);
                    }
                };
                let plan = self.apply_flap_limits(top, plan);
                let w = self.inner.journal.begin(&Record::Begin {
                    at_ms: now_ms(),
                    trigger: req.trigger.clone(),
                    first_failure_ms: req.first_failure_ms,
                    master_last_ok_ms: req.master_last_ok_ms,
                    plan: plan.clone(),
                })?;
                (plan, w, None)
            }
        };
        let started = now_ms();
        tracing::info!(recovery = %plan.recovery, steps = plan.steps.len(), trigger = %req.trigger, "Recovery starts.");
        self.notify(
            "recovery_start",
            &format!(
                "{}: recovery {} starts ({} steps) after {}",
                plan.event,
                plan.recovery,
                plan.steps.len(),
                req.trigger
            ),
            Some(serde_json::json!({"recovery": plan.recovery, "event": plan.event, "steps": plan.steps.len()})),
        );
        let addresses = lock(&self.inner.st)
            .saved
            .observed
            .machines
            .iter()
            .filter_map(|(m, s)| s.address.map(|a| (m.clone(), a)))
            .collect();
        let mut exec = Executor {
            topology: top,
            cloud: &self.inner.cloud,
            dns: self.inner.dns.as_ref(),
            skip_dns: self.inner.dns.is_none(),
            ssh: &self.inner.ssh,
            playbooks: &playbooks,
            addresses,
            redis: self.inner.redis.clone(),
            unfenced: medic_exec::Unfenced::default(),
        };
        // Proxies the checks see down are not waited for, step after step.
        exec.unfenced.unreachable = lock(&self.inner.st)
            .health
            .iter()
            .filter(|(t, h)| {
                matches!(t, Target::Proxy { .. } | Target::App { .. })
                    && matches!(h.detector.health, Health::Down { .. })
            })
            .map(|(t, _)| t.machine().to_owned())
            .collect();
        // A resumed recovery: the fences its done steps skipped, and what it fenced at the
        // source, still count.
        let mut skipped: Vec<String> = Vec::new();
        for s in &plan.steps {
            let Some(d) = log.as_ref().and_then(|l| l.done.get(&s.index)) else {
                continue;
            };
            note_skips(&mut exec.unfenced, &mut skipped, &s.action, &d.output);
        }
        let mut alerted = false;
        let mut held = None;
        // Done steps whose effect expires (a switchover's bounded pause) are run again.
        let redo = log.as_ref().map_or_else(Default::default, |l| {
            plan.redo_on_resume(&l.done.keys().copied().collect())
        });
        if !redo.is_empty() {
            tracing::info!(recovery = %plan.recovery, steps = ?redo, "Resumed: steps whose effect expires run again.");
        }
        for step in &plan.steps {
            if log
                .as_ref()
                .is_some_and(|l| l.done.contains_key(&step.index))
                && !redo.contains(&step.index)
            {
                continue;
            }
            if self.inner.stopping.load(Ordering::SeqCst) {
                tracing::warn!(recovery = %plan.recovery, step = step.index, "Stopping between steps; the next start goes on from here.");
                lock(&self.inner.st).in_flight = None;
                return Ok(None);
            }
            let view = medic_plan::describe::describe(step, &playbooks);
            {
                let mut st = lock(&self.inner.st);
                st.in_flight = Some(InFlight {
                    recovery: plan.recovery.clone(),
                    event: plan.event.to_string(),
                    trigger: req.trigger.clone(),
                    started_ms: started,
                    step: step.index,
                    steps: plan.steps.len(),
                    kind: step.action.kind().to_owned(),
                    target: view.target.clone(),
                    step_started_ms: now_ms(),
                });
            }
            let span = tracing::info_span!("step", index = step.index, kind = step.action.kind(), target = %view.target);
            let result = self
                .run_step(&mut exec, &mut writer, step)
                .instrument(span)
                .await?;
            match result {
                Ok((summary, output)) => {
                    // (The executor keeps its own ledger of this run's skipped fences.)
                    skipped.extend(output.skipped.clone());
                    if let Action::Alert { message, .. } = &step.action {
                        alerted = true;
                        if message.starts_with("replacement held") {
                            held = Some(message.clone());
                        }
                    }
                    let mut st = lock(&self.inner.st);
                    st.saved.observed.apply(&step.action, &output);
                    if let Action::LaunchInstance { spec } = &step.action {
                        st.saved.replacements.push((spec.machine.clone(), now_ms()));
                    }
                    self.sync_book(&st);
                    if let Err(e) = self.inner.store.save(&st.saved) {
                        tracing::error!(error = %e, "Cannot save the state.");
                    }
                    drop(st);
                    tracing::info!(step = step.index, kind = step.action.kind(), "{summary}");
                    let took = lock(&self.inner.st)
                        .in_flight
                        .as_ref()
                        .map_or(0, |f| now_ms().saturating_sub(f.step_started_ms));
                    self.record_event(
                        "step",
                        &format!(
                            "{:>2}/{} {:<11} {:>6.2}s  {summary}",
                            step.index,
                            plan.steps.len(),
                            step.action.kind(),
                            took as f64 / 1000.0
                        ),
                    );
                }
                Err(e) => {
                    let outcome = Outcome::Failed {
                        step: step.index,
                        error: e.clone(),
                    };
                    writer.append(&Record::End {
                        at_ms: now_ms(),
                        outcome: outcome.clone(),
                    })?;
                    self.finish(&plan, &outcome, started);
                    // The ladder: a process that cannot be restarted on its machine means the
                    // machine is not usable (it may be going down): recover the machine.
                    if let Event::ProcessDied { machine, .. } = &plan.event {
                        self.alert(
                            AlertLevel::Warning,
                            format!("restarting the process on {machine} failed at step {} ({e}); recovering the whole machine", step.index),
                        );
                        return Ok(Some(Request {
                            event: Event::MachineLost {
                                machine: machine.clone(),
                            },
                            trigger: format!("escalated from {}: {e}", plan.event),
                            first_failure_ms: req.first_failure_ms,
                            master_last_ok_ms: None,
                            resume: None,
                        }));
                    }
                    self.alert(
                        AlertLevel::Critical,
                        format!(
                            "recovery {} stopped at step {} of {} ({} {}): {e}. The machine stays out of monitoring; `medic history` shows what was done; `medic recover {}` tries again",
                            plan.recovery,
                            step.index,
                            plan.steps.len(),
                            step.action.kind(),
                            view.target,
                            req.machine().unwrap_or("MACHINE"),
                        ),
                    );
                    return Ok(None);
                }
            }
        }
        let outcome = match (held, alerted) {
            (Some(reason), _) => Outcome::Held { reason },
            (None, true) => Outcome::Alerted,
            (None, false) if !skipped.is_empty() => Outcome::Incomplete { skipped },
            (None, false) => Outcome::Completed,
        };
        writer.append(&Record::End {
            at_ms: now_ms(),
            outcome: outcome.clone(),
        })?;
        self.finish(&plan, &outcome, started);
        Ok(None)
    }

    fn finish(&self, plan: &Plan, outcome: &Outcome, started: u64) {
        let took = now_ms().saturating_sub(started);
        {
            let mut st = lock(&self.inner.st);
            st.in_flight = None;
            *st.metrics.recoveries.entry(outcome.label()).or_default() += 1;
        }
        tracing::info!(recovery = %plan.recovery, outcome = outcome.label(), took_ms = took, "Recovery ends.");
        self.notify(
            match outcome {
                Outcome::Held { .. } => "held",
                Outcome::Failed { .. } => "recovery_failed",
                _ => "recovery_done",
            },
            &format!(
                "{}: recovery {} {} in {:.1}s",
                plan.event,
                plan.recovery,
                outcome.label(),
                took as f64 / 1000.0
            ),
            Some(
                serde_json::json!({"recovery": plan.recovery, "outcome": outcome, "took_ms": took}),
            ),
        );
    }

    /// Cuts the plan before its terminate step when a replacement would break the flap limits.
    fn apply_flap_limits(&self, top: &Topology, mut plan: Plan) -> Plan {
        let Some(pos) = plan
            .steps
            .iter()
            .position(|s| matches!(s.action, Action::TerminateInstance { .. }))
        else {
            return plan;
        };
        let Action::TerminateInstance { machine, .. } = &plan.steps[pos].action else {
            return plan;
        };
        let reason = {
            let st = lock(&self.inner.st);
            hold_reason(
                &st.saved.replacements,
                machine,
                now_ms(),
                top.policy.cooldown.value.as_duration().as_millis() as u64,
                top.policy.max_replacements_per_hour.value,
            )
        };
        let Some(reason) = reason else {
            return plan;
        };
        let machine = machine.clone();
        plan.steps.truncate(pos);
        plan.steps.push(Step {
            index: pos + 1,
            action: Action::Alert {
                level: AlertLevel::Critical,
                message: format!(
                    "replacement held: {reason}. {machine} stays out of monitoring and is not replaced; `medic recover {machine}` replaces it when you decide"
                ),
            },
        });
        plan
    }

    /// One step with its journal records and retries. The outer `Result` is the journal's;
    /// the inner one the step's.
    async fn run_step(
        &self,
        exec: &mut Executor<'_, C, D>,
        w: &mut Writer,
        step: &Step,
    ) -> Result<Result<(String, StepOutput), String>, ControllerError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            w.append(&Record::Intent {
                step: step.index,
                at_ms: now_ms(),
                attempt,
            })?;
            self.failpoint("after-intent", step.index);
            let started = Instant::now();
            // Steps that may take a while say that they started, so a follower is not left
            // looking at silence while a machine boots or a replica syncs.
            if attempt == 1
                && matches!(
                    step.action,
                    Action::LaunchInstance { .. }
                        | Action::WaitReachable { .. }
                        | Action::RunPlaybook { .. }
                        | Action::WaitInSync { .. }
                        | Action::UpsertDns { .. }
                )
            {
                self.record_event(
                    "step_start",
                    &format!("{:>2} {} started", step.index, step.action.kind()),
                );
            }
            let result: Result<(String, StepOutput), ExecError> = match &step.action {
                Action::Unmonitor { target } => {
                    let machine = monitor_machine(target);
                    let mut st = lock(&self.inner.st);
                    st.saved.unmonitored.insert(machine.clone());
                    self.sync_book(&st);
                    let _ = self.inner.store.save(&st.saved);
                    Ok((
                        format!("{target}: no longer watched"),
                        StepOutput::default(),
                    ))
                }
                Action::Monitor { target } => {
                    let machine = monitor_machine(target);
                    let mut st = lock(&self.inner.st);
                    st.saved.unmonitored.remove(&machine);
                    st.health.retain(|t, _| t.machine() != machine);
                    self.sync_book(&st);
                    let _ = self.inner.store.save(&st.saved);
                    Ok((format!("{target}: watched again"), StepOutput::default()))
                }
                Action::Alert { level, message } => {
                    self.alert(*level, message.clone());
                    Ok((message.clone(), StepOutput::default()))
                }
                _ => exec.execute(step).await.map(|d| (d.summary, d.output)),
            };
            let took = started.elapsed();
            if result.is_ok() {
                // Done, but not yet journaled: the case where only idempotence saves us.
                self.failpoint("after-exec", step.index);
            }
            {
                let mut st = lock(&self.inner.st);
                let e = st
                    .metrics
                    .steps
                    .entry(step.action.kind().to_owned())
                    .or_default();
                e.0 += took.as_secs_f64();
                e.1 += 1;
            }
            match result {
                Ok((summary, output)) => {
                    w.append(&Record::Done {
                        step: step.index,
                        at_ms: now_ms(),
                        duration_ms: took.as_millis() as u64,
                        summary: summary.clone(),
                        output: output.clone(),
                    })?;
                    self.failpoint("after-done", step.index);
                    return Ok(Ok((summary, output)));
                }
                Err(e) => {
                    let message = error_chain(&e);
                    w.append(&Record::Failed {
                        step: step.index,
                        at_ms: now_ms(),
                        attempt,
                        error: message.clone(),
                    })?;
                    *lock(&self.inner.st)
                        .metrics
                        .step_failures
                        .entry(step.action.kind().to_owned())
                        .or_default() += 1;
                    tracing::warn!(step = step.index, attempt, error = %message, "Step failed.");
                    self.notify(
                        "step_failed",
                        &format!("step {} ({}) failed, attempt {attempt}: {message}", step.index, step.action.kind()),
                        Some(serde_json::json!({"step": step.index, "kind": step.action.kind(), "attempt": attempt, "error": message})),
                    );
                    if !e.is_retryable() || attempt >= ATTEMPTS {
                        return Ok(Err(message));
                    }
                    tokio::time::sleep(BACKOFF * 2u32.pow(attempt - 1)).await;
                }
            }
        }
    }

    fn failpoint(&self, point: &str, step: usize) {
        if self
            .inner
            .failpoint
            .as_ref()
            .is_some_and(|(p, n)| p == point && *n == step)
        {
            tracing::error!(point, step, "MEDIC_FAILPOINT: aborting now.");
            std::process::abort();
        }
    }

    // ---- alerts and notifications -----------------------------------------------------

    pub(crate) fn alert(&self, level: AlertLevel, message: String) {
        match level {
            AlertLevel::Critical => tracing::error!(alert = "critical", "{message}"),
            AlertLevel::Warning => tracing::warn!(alert = "warning", "{message}"),
        }
        {
            let mut st = lock(&self.inner.st);
            st.alerts.push_back(AlertRecord {
                at_ms: now_ms(),
                level,
                message: message.clone(),
            });
            while st.alerts.len() > ALERTS_KEPT {
                st.alerts.pop_front();
            }
            *st.metrics
                .alerts
                .entry(match level {
                    AlertLevel::Critical => "critical",
                    AlertLevel::Warning => "warning",
                })
                .or_default() += 1;
        }
        self.notify(
            "alert",
            &message,
            Some(serde_json::json!({ "level": level })),
        );
    }

    fn record_event(&self, kind: &str, message: &str) {
        let mut st = lock(&self.inner.st);
        let seq = st.next_event;
        st.next_event += 1;
        st.events.push_back(EventRecord {
            seq,
            at_ms: now_ms(),
            kind: kind.to_owned(),
            message: message.to_owned(),
        });
        while st.events.len() > EVENTS_KEPT {
            st.events.pop_front();
        }
    }

    /// Events after `after` (a sequence number), oldest first.
    pub fn events(&self, after: u64) -> serde_json::Value {
        let st = lock(&self.inner.st);
        serde_json::json!({
            "next": st.next_event,
            "events": st.events.iter().filter(|e| e.seq > after).collect::<Vec<_>>(),
        })
    }

    fn notify(&self, event: &str, message: &str, details: Option<serde_json::Value>) {
        self.record_event(event, message);
        let n = read(&self.inner.notifier).clone();
        let topology = self.top().topology.name.value.clone();
        n.send(event, &topology, message, details);
    }

    // ---- operator commands (the HTTP API calls these) ----------------------------------

    pub(crate) fn check_token(&self, authorization: Option<&str>) -> bool {
        authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), self.inner.token.as_bytes()))
    }

    /// `medic recover MACHINE`: the seed's emergency procedure, planned and journaled.
    pub(crate) fn recover_machine(&self, machine: &str) -> Result<String, (u16, String)> {
        let loaded = self.top();
        if loaded.topology.machine(machine).is_none() {
            return Err((404, format!("no machine `{machine}` in the topology")));
        }
        {
            let mut st = lock(&self.inner.st);
            if st.busy.contains(machine) {
                return Err((
                    409,
                    format!("a recovery of {machine} is already queued or running"),
                ));
            }
            // The operator decides: the flap limits and a previous stop do not apply.
            st.saved.replacements.retain(|(m, _)| m != machine);
            st.saved.unmonitored.remove(machine);
            self.sync_book(&st);
        }
        if self.enqueue(Request {
            event: Event::MachineLost {
                machine: machine.to_owned(),
            },
            trigger: format!("manual: medic recover {machine}"),
            first_failure_ms: None,
            master_last_ok_ms: None,
            resume: None,
        }) {
            Ok(format!("recovery of {machine} queued"))
        } else {
            Err((
                409,
                format!("a recovery of {machine} is already queued or running"),
            ))
        }
    }

    /// `medic switchover SHARD [--to MACHINE]`: planned, zero loss. Checked against the current
    /// state now, so a refusal is the operator's answer rather than a failed recovery.
    pub(crate) fn switchover(
        &self,
        shard: &str,
        to: Option<&str>,
    ) -> Result<String, (u16, String)> {
        let loaded = self.top();
        let event = Event::Switchover {
            shard: shard.to_owned(),
            to: to.map(str::to_owned),
        };
        let observed = lock(&self.inner.st).saved.observed.clone();
        let plan = plan_recovery(&loaded.topology, &observed, &event, "check")
            .map_err(|e| (409, e.to_string()))?;
        if self.enqueue(Request {
            event,
            trigger: format!("manual: medic switchover {shard}"),
            first_failure_ms: None,
            master_last_ok_ms: None,
            resume: None,
        }) {
            Ok(format!(
                "switchover of {shard} queued ({} steps); `medic history` shows it",
                plan.steps.len()
            ))
        } else {
            Err((
                409,
                format!("a switchover of {shard} is already queued or running"),
            ))
        }
    }

    /// `medic unmonitor|monitor MACHINE`: maintenance, persisted.
    pub(crate) fn set_maintenance(&self, machine: &str, on: bool) -> Result<String, (u16, String)> {
        if self.top().topology.machine(machine).is_none() {
            return Err((404, format!("no machine `{machine}` in the topology")));
        }
        let mut st = lock(&self.inner.st);
        if on {
            st.saved.maintenance.insert(machine.to_owned());
        } else {
            st.saved.maintenance.remove(machine);
            st.saved.unmonitored.remove(machine);
            st.health.retain(|t, _| t.machine() != machine);
        }
        self.sync_book(&st);
        self.inner
            .store
            .save(&st.saved)
            .map_err(|e| (500, e.to_string()))?;
        Ok(if on {
            format!(
                "{machine} is in maintenance: not checked, never recovered, until `medic monitor {machine}`"
            )
        } else {
            format!("{machine} is monitored")
        })
    }

    /// Everything `medic status` and the status page show.
    pub fn status(&self) -> serde_json::Value {
        let loaded = self.top();
        let top = &loaded.topology;
        let st = lock(&self.inner.st);
        let obs = &st.saved.observed;
        let health_of = |t: &Target| -> serde_json::Value {
            match st.health.get(t) {
                None => serde_json::json!({"state": "unknown"}),
                Some(h) => serde_json::json!({
                    "state": health_label(h.detector.health),
                    "last": observation_label(h.last),
                    "detail": h.detail,
                    "last_ok_ms": h.last_ok_ms,
                    "role": h.role.map(Role::as_str),
                    "offset": h.offset,
                    "checks": h.checks,
                }),
            }
        };
        let machines: Vec<serde_json::Value> = top
            .machines
            .iter()
            .map(|m| {
                let name = &m.value.name.value;
                let ms = obs.machines.get(name);
                let mut of_machine: Vec<&Target> =
                    st.health.keys().filter(|t| t.machine() == name).collect();
                of_machine.sort();
                let targets: Vec<serde_json::Value> = of_machine
                    .into_iter()
                    .map(|t| serde_json::json!({"target": t.to_string(), "health": health_of(t)}))
                    .collect();
                let state = if st.saved.maintenance.contains(name) {
                    "maintenance"
                } else if st.busy.contains(name) {
                    "recovering"
                } else if st.saved.unmonitored.contains(name) {
                    "unmonitored"
                } else if m.value.role.value == medic_topology::Role::Monitor {
                    "this host"
                } else if targets.is_empty() {
                    "unknown"
                } else if st.health.iter().any(|(t, h)| {
                    t.machine() == name && matches!(h.detector.health, Health::Down { .. })
                }) {
                    "down"
                } else if st.health.iter().any(|(t, h)| {
                    t.machine() == name && matches!(h.detector.health, Health::Suspect { .. })
                }) {
                    "suspect"
                } else {
                    "up"
                };
                serde_json::json!({
                    "name": name,
                    "role": m.value.role.value.as_str(),
                    "address": ms.and_then(|s| s.address),
                    "instance": ms.and_then(|s| s.instance_id.clone()),
                    "state": state,
                    "targets": targets,
                })
            })
            .collect();
        let shards: Vec<serde_json::Value> = top
            .shards
            .iter()
            .map(|s| {
                let name = &s.value.name.value;
                let Some(ss) = obs.shards.get(name) else {
                    return serde_json::json!({"name": name});
                };
                let master_t = Target::Redis {
                    shard: name.clone(),
                    machine: ss.master.clone(),
                };
                let master_up = st
                    .health
                    .get(&master_t)
                    .is_some_and(|h| h.detector.health == Health::Up);
                let replicas: Vec<serde_json::Value> = ss
                    .replicas
                    .iter()
                    .map(|r| {
                        let t = Target::Redis {
                            shard: name.clone(),
                            machine: r.machine.clone(),
                        };
                        let up = st
                            .health
                            .get(&t)
                            .is_some_and(|h| h.detector.health == Health::Up);
                        serde_json::json!({
                            "machine": r.machine,
                            "in_sync": r.offset.is_some() && up,
                            "offset": r.offset,
                            "health": health_of(&t),
                        })
                    })
                    .collect();
                let synced = replicas
                    .iter()
                    .filter(|r| r["in_sync"].as_bool() == Some(true))
                    .count();
                // What clients get: the server each proxy sends the shard's writes to.
                let backend = medic_plan::vars::proxy_backend(name);
                let routes: Vec<serde_json::Value> = top
                    .proxy_machines()
                    .map(|p| reconcile::route_of(&st, p, &backend, now_ms()))
                    .collect();
                // (Before the first readings after start, a proxy counts as neither.)
                let read = || routes.iter().filter(|r| r["pending"] != true);
                let misrouted = read().any(|r| {
                    r["to"]
                        .as_array()
                        .is_some_and(|to| to.len() != 1 || to[0] != ss.master.as_str())
                });
                let unknown = read().any(|r| r["to"].is_null());
                let state = if !master_up {
                    "down"
                } else if misrouted {
                    "misrouted"
                } else if unknown {
                    "routing unknown"
                } else if synced == 0 {
                    "degraded"
                } else {
                    "ok"
                };
                serde_json::json!({
                    "name": name,
                    "port": s.value.port.value,
                    "master": ss.master,
                    "master_offset": ss.master_offset,
                    "master_health": health_of(&master_t),
                    "replicas": replicas,
                    "routes": routes,
                    "state": state,
                })
            })
            .collect();
        let dns: Vec<serde_json::Value> = top
            .dns
            .iter()
            .flat_map(|d| d.value.records.iter())
            .map(|r| {
                let values: Vec<Option<IpAddr>> = r
                    .value
                    .machines
                    .iter()
                    .map(|m| obs.address(&m.value))
                    .collect();
                serde_json::json!({"name": r.value.name.value, "machines": r.value.machines.iter().map(|m| &m.value).collect::<Vec<_>>(), "values": values})
            })
            .collect();
        let apps: Vec<serde_json::Value> = top
            .app_proxies
            .iter()
            .map(|a| serde_json::json!({"machine": a.value.machine.value, "primary": a.value.primary.value, "backup": a.value.backup.value}))
            .collect();
        serde_json::json!({
            "topology": top.name.value,
            "provider": top.provider.value.kind(),
            "now_ms": now_ms(),
            "machines": machines,
            "shards": shards,
            "proxies": top.proxy_machines().collect::<Vec<_>>(),
            "app_proxies": apps,
            "dns": dns,
            "in_flight": st.in_flight,
            "queued": st.busy.iter().filter(|m| st.in_flight.as_ref().is_none_or(|f| !f.event.contains(m.as_str()))).collect::<Vec<_>>(),
            "maintenance": st.saved.maintenance,
            "alerts": st.alerts.iter().rev().collect::<Vec<_>>(),
        })
    }

    /// Every recovery in the journal, newest first, with step durations and the estimated
    /// window of writes that may have been lost.
    pub fn history(&self) -> Result<serde_json::Value, ControllerError> {
        let logs = self.inner.journal.all()?;
        Ok(serde_json::Value::Array(
            logs.iter().rev().map(history_entry).collect(),
        ))
    }

    pub(crate) fn metrics(&self) -> String {
        let st = lock(&self.inner.st);
        let m = &st.metrics;
        let mut out = String::new();
        out.push_str("# HELP medic_checks_total Health checks by target kind and result.\n# TYPE medic_checks_total counter\n");
        for ((kind, result), n) in &m.checks {
            out.push_str(&format!(
                "medic_checks_total{{kind=\"{kind}\",result=\"{result}\"}} {n}\n"
            ));
        }
        out.push_str("# HELP medic_check_duration_seconds Time the checks took.\n# TYPE medic_check_duration_seconds summary\n");
        for (kind, (sum, count)) in &m.check_seconds {
            out.push_str(&format!(
                "medic_check_duration_seconds_sum{{kind=\"{kind}\"}} {sum}\nmedic_check_duration_seconds_count{{kind=\"{kind}\"}} {count}\n"
            ));
        }
        out.push_str("# HELP medic_target_up Whether each target is up (1), suspect (0.5) or down (0).\n# TYPE medic_target_up gauge\n");
        let mut listed: Vec<(&Target, &TargetHealth)> = st.health.iter().collect();
        listed.sort_by(|a, b| a.0.cmp(b.0));
        for (t, h) in listed {
            let v = match h.detector.health {
                Health::Up => 1.0,
                Health::Suspect { .. } => 0.5,
                Health::Down { .. } => 0.0,
            };
            out.push_str(&format!(
                "medic_target_up{{target=\"{}\",machine=\"{}\"}} {v}\n",
                t.to_string().replace('"', "'"),
                t.machine()
            ));
        }
        out.push_str("# HELP medic_detection_seconds From the first failed check to the verdict, last detection.\n# TYPE medic_detection_seconds gauge\n");
        if let Some(d) = m.detection_seconds {
            out.push_str(&format!("medic_detection_seconds {d}\n"));
        }
        out.push_str("# HELP medic_recoveries_total Recoveries by outcome.\n# TYPE medic_recoveries_total counter\n");
        for (o, n) in &m.recoveries {
            out.push_str(&format!("medic_recoveries_total{{outcome=\"{o}\"}} {n}\n"));
        }
        out.push_str("# HELP medic_step_duration_seconds Recovery steps by kind.\n# TYPE medic_step_duration_seconds summary\n");
        for (k, (sum, count)) in &m.steps {
            out.push_str(&format!(
                "medic_step_duration_seconds_sum{{kind=\"{k}\"}} {sum}\nmedic_step_duration_seconds_count{{kind=\"{k}\"}} {count}\n"
            ));
        }
        out.push_str("# HELP medic_step_failures_total Failed step attempts by kind.\n# TYPE medic_step_failures_total counter\n");
        for (k, n) in &m.step_failures {
            out.push_str(&format!("medic_step_failures_total{{kind=\"{k}\"}} {n}\n"));
        }
        out.push_str("# HELP medic_alerts_total Alerts raised by level.\n# TYPE medic_alerts_total counter\n");
        for (l, n) in &m.alerts {
            out.push_str(&format!("medic_alerts_total{{level=\"{l}\"}} {n}\n"));
        }
        out.push_str(&format!(
            "# HELP medic_recovery_in_flight Whether a recovery is running.\n# TYPE medic_recovery_in_flight gauge\nmedic_recovery_in_flight {}\n",
            u8::from(st.in_flight.is_some())
        ));
        out
    }
}

/// For a silent redis server: the other redis servers of its machine that answer. Any one of
/// them makes the silence a hung process, not a lost machine. (Nothing for other targets.)
fn answering_beside<'a>(st: &'a St, target: &'a Target) -> impl Iterator<Item = &'a Target> + 'a {
    let redis = matches!(target, Target::Redis { .. });
    st.health
        .iter()
        .filter(move |(t, h)| {
            redis
                && *t != target
                && t.machine() == target.machine()
                && matches!(t, Target::Redis { .. })
                && h.detector.health == Health::Up
        })
        .map(|(t, _)| t)
}

/// A server's `INFO replication` within the witnesses' bound (the admin client bounds each
/// call itself); `None` if it does not answer in time.
async fn replication_now(at: SocketAddr) -> Option<medic_redis::ReplicationInfo> {
    Redis {
        timeout: WITNESS_WITHIN,
    }
    .replication(RedisAddr::new(at.ip(), at.port()))
    .await
    .ok()
}

/// Adds the machines and shards the topology has and the state does not (saved before they
/// were added), as the topology describes them; what the state knows stays.
fn add_new(observed: &mut ObservedState, top: &Topology) {
    let assumed = ObservedState::assumed(top);
    for (m, s) in assumed.machines {
        observed.machines.entry(m).or_insert(s);
    }
    for (n, s) in assumed.shards {
        observed.shards.entry(n).or_insert(s);
    }
}

/// An error with its causes: "step 7 (playbook): ...: exit 1: No space left on device".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn monitor_machine(t: &MonitorTarget) -> String {
    match t {
        MonitorTarget::Machine { machine } | MonitorTarget::Server { machine, .. } => {
            machine.clone()
        }
    }
}

fn recovery_id(machine: &str) -> String {
    let m: String = machine
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(24)
        .collect();
    format!("r{}-{m}", now_ms())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn observation_label(o: Observation) -> &'static str {
    match o {
        Observation::Ok => "ok",
        Observation::Refused => "refused",
        Observation::Silent => "silent",
        Observation::Unhealthy => "unhealthy",
    }
}

fn health_label(h: Health) -> &'static str {
    match h {
        Health::Up => "up",
        Health::Suspect { .. } => "suspect",
        Health::Down { .. } => "down",
    }
}

/// What a done step skipped: into the executor's ledger (a resumed recovery's) and the list
/// that makes the recovery `incomplete`.
fn note_skips(
    unfenced: &mut medic_exec::Unfenced,
    skipped: &mut Vec<String>,
    action: &Action,
    output: &StepOutput,
) {
    if let Some(why) = &output.skipped {
        skipped.push(why.clone());
        if let Action::FenceServer { proxy, server, .. } = action {
            unfenced.fences.push((proxy.clone(), server.clone()));
        }
    }
    if let (Action::FenceAtSource { machine, .. }, true) = (action, output.terminated) {
        unfenced.at_source.insert(machine.clone());
    }
}

/// One recovery for `medic history`.
pub fn history_entry(l: &RecoveryLog) -> serde_json::Value {
    let steps: Vec<serde_json::Value> = l
        .plan
        .steps
        .iter()
        .map(|s| {
            let d = l.done.get(&s.index);
            let failed: Vec<&String> = l
                .failures
                .iter()
                .filter(|(i, _)| *i == s.index)
                .map(|(_, e)| e)
                .collect();
            serde_json::json!({
                "index": s.index,
                "kind": s.action.kind(),
                "status": if d.is_some() { "done" } else if !failed.is_empty() { "failed" } else { "not run" },
                "duration_ms": d.map(|d| d.duration_ms),
                "summary": d.map(|d| d.summary.clone()),
                "errors": failed,
            })
        })
        .collect();
    // Writes acknowledged by the old master after its last good check may not have reached
    // the replica: the window closes when the promoted replica takes over.
    let promoted_at = l
        .plan
        .steps
        .iter()
        .filter(|s| matches!(s.action, Action::PromoteReplica { .. }))
        .filter_map(|s| l.done.get(&s.index).map(|d| d.at_ms))
        .max();
    let window = match (l.master_last_ok_ms, promoted_at) {
        (Some(ok), Some(p)) => Some(p.saturating_sub(ok)),
        _ => None,
    };
    serde_json::json!({
        "id": l.id,
        "event": l.plan.event.to_string(),
        "trigger": l.trigger,
        "started_ms": l.begun_ms,
        "ended_ms": l.end.as_ref().map(|e| e.0),
        "outcome": l.end.as_ref().map(|e| e.1.clone()),
        "resumed": l.resumed.len(),
        "detection_ms": l.first_failure_ms.map(|f| l.begun_ms.saturating_sub(f)),
        "write_loss_window_ms": window,
        "steps": steps,
    })
}
