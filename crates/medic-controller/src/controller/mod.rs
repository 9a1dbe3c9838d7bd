//! The controller's adapters: the I/O around the [`Core`](crate::core::Core).
//!
//! - the **checks** (a thread of their own) hand each result to the core ([`drive`]);
//! - the **witnesses** of a silent machine are asked over SSH when the core asks ([`ask`]);
//! - each **recovery** the core starts runs in a task of its own ([`runner`]): each step's
//!   intent journaled, executed with retries through the executor, its outcome journaled and
//!   given to the core; a panic in it is reported and the controller keeps watching;
//! - the **reconcile** reads every proxy's routing and repairs drift ([`reconcile`]);
//! - start-up finds the machines and the roles ([`discover`]); the HTTP API's commands and the
//!   status are [`operator`] and [`status`].
//!
//! Every decision is the core's: these modules own the sockets, the clock, the files and the
//! tasks, and nothing else.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use medic_cloud::{Cloud, Dns};
use medic_plan::AlertLevel;
use medic_playbook::Playbooks;
use medic_redis::Redis;
use medic_ssh::Ssh;
use medic_topology::{LoadedTopology, Secrets, Topology};

mod ask;
mod checking;
mod discover;
mod drive;
mod event_log;
mod group;
mod history;
mod latency;
mod layout;
mod metrics;
mod operator;
mod probe;
mod reconcile;
mod reconcile_services;
mod runner;
mod service_status;
mod spares;
mod status;

use discover::replication_now;
pub use group::{GroupStatus, MachineView, View};
pub use history::DEFAULT_PAGE as HISTORY_PAGE;
pub use layout::missing as missing_servers;
pub use reconcile::{app_repairs, repairs};
pub use reconcile_services::{merged, service_repairs};
pub use status::history_entry;
use status::observation_label;

use crate::checks::{Book, SharedBook};
use crate::core::Core;
use crate::journal::{Journal, now_ms};
use crate::notify::Notifier;
use crate::store::{Saved, Store};

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
    /// This member no longer leads the group: the recovery stops before its next step.
    #[error("not leading any more: {0}")]
    Deposed(String),
    #[error("redis_tls: {0}")]
    RedisTls(#[from] medic_redis::TlsError),
    /// A redis server does not speak as the topology says (TLS or not): medic would take it
    /// for a silent one and fail it over.
    #[error("not started: {0}")]
    TlsMismatch(String),
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
    /// The passwords of `redis_auth`, read once at start.
    pub secrets: Secrets,
}

/// medic's own redis user and password, when the topology has `redis_auth`.
pub fn medic_credentials(top: &Topology, secrets: &Secrets) -> Option<medic_redis::Credentials> {
    let user = &top.redis_auth.as_ref()?.value.medic.value.user.value;
    let password = secrets.password(user)?;
    Some(medic_redis::Credentials::new(
        user.clone(),
        password.expose(),
    ))
}

/// medic's redis client: its own login (`redis_auth`) and TLS (`redis_tls`), as `top` says.
pub fn medic_redis_client(
    top: &Topology,
    secrets: &Secrets,
) -> Result<Redis, medic_redis::TlsError> {
    let tls = match secrets.tls() {
        Some(t) => {
            medic_redis::check_server_files(
                t.ca.as_bytes(),
                t.cert.as_bytes(),
                t.key.expose().as_bytes(),
                &t.name,
            )?;
            Some(medic_redis::Tls::new(t.ca.as_bytes(), &t.name)?)
        }
        None => None,
    };
    Ok(Redis {
        auth: medic_credentials(top, secrets),
        tls,
        ..Redis::default()
    })
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

#[derive(Debug, Clone, Serialize)]
pub struct AlertRecord {
    pub at_ms: u64,
    pub level: AlertLevel,
    pub message: String,
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
    /// The reconcile's repairs by proxy and result (`repaired`, `failed`).
    repairs: BTreeMap<(String, &'static str), u64>,
    /// The checks' latency per second, for the status page.
    latency: latency::LatencySeries,
}

/// A running recovery, for the status.
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

/// The core, and what only the status shows.
#[derive(Debug)]
struct St {
    core: Core,
    alerts: VecDeque<AlertRecord>,
    metrics: Metrics,
    /// What happened, numbered: `medic events` follows it.
    events: event_log::EventLog,
    /// Each proxy's routing as last read (the reconcile reads it every few seconds).
    routing: BTreeMap<String, reconcile::Routing>,
    /// The last write probe through each proxy to each shard: (proxy, shard).
    writes: BTreeMap<(String, String), probe::WriteProbe>,
    /// When this controller started (ms): a proxy never read since is "unknown" after a while.
    started_ms: u64,
    /// Per proxy machine, the servers whose haproxy.cfg line could not be written after a
    /// runtime change: the reconcile writes them from the runtime as it reads it.
    owed_writes: BTreeMap<String, std::collections::BTreeSet<medic_plan::ServerRef>>,
    /// Per proxy machine, the backends found unlike the topology's, as last told.
    layout_told: BTreeMap<String, std::collections::BTreeSet<String>>,
    /// The spare pool as last listed (`policy.spares`).
    spares: Vec<spares::SpareView>,
}

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

pub use event_log::EventRecord;

struct Inner<C, D> {
    loaded: RwLock<Arc<LoadedTopology>>,
    playbooks: RwLock<Arc<Playbooks>>,
    reload: Reload,
    cloud: C,
    dns: Option<D>,
    ssh: Ssh,
    redis: Redis,
    /// The passwords of `redis_auth`, for the playbooks.
    secrets: Secrets,
    /// `medic history`'s entries, each read again only when its journal changes.
    history: Mutex<history::HistoryCache>,
    journal: Journal,
    /// The state's writer thread (saves never wait on the checks' thread).
    saver: crate::saver::Saver,
    book: SharedBook,
    st: Mutex<St>,
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
    /// The runtime recoveries run on (the one `run` was called on).
    main_rt: Mutex<Option<tokio::runtime::Handle>>,
    /// Each running recovery's supervisor.
    runners: Mutex<Vec<JoinHandle<()>>>,
    listen: SocketAddr,
    failpoint: Option<(String, usize)>,
    /// This controller's group (`controller.cluster`), if it has one.
    group: Option<group::Group>,
    /// The status pages' event streams' shared producer.
    feed: crate::stream::Feed,
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
    /// The status pages' event streams' shared producer.
    pub(crate) fn stream_feed(&self) -> &crate::stream::Feed {
        &self.inner.feed
    }

    /// Opens the state directory, discovers where every machine is and who is master, and
    /// makes the controller ready to [`run`](Self::run).
    pub async fn start(setup: Setup<C, D>) -> Result<Self, ControllerError> {
        let loaded = Arc::new(setup.loaded);
        let top = &loaded.topology;
        let state_dir = top.controller.state_dir.clone();
        std::fs::create_dir_all(&state_dir).map_err(|source| ControllerError::Io {
            path: state_dir.clone(),
            source,
        })?;
        let token = api_token(&state_dir)?;
        let journal = Journal::open(state_dir.join("journal"))?;
        let store = Store::new(&state_dir);
        let saver = crate::saver::Saver::spawn(Store::new(&state_dir)).map_err(|source| {
            ControllerError::Io {
                path: state_dir.clone(),
                source,
            }
        })?;
        let ssh = Ssh::new(&state_dir.join("known_hosts"))?;
        let group = group::Group::from_topology(top);
        // In a group the state is etcd's (if it answers now); alone, or without etcd, the
        // local copy.
        let from_group = match &group {
            Some(g) => tokio::time::timeout(Duration::from_secs(3), g.load_state(&top.name.value))
                .await
                .ok()
                .flatten(),
            None => None,
        };
        let loaded_state = match from_group {
            Some(s) => Some(s),
            None => store.load()?.filter(|s| s.topology == top.name.value),
        };
        let had_state = loaded_state.is_some();
        let saved = match loaded_state {
            Some(s) => s,
            None => Saved::fresh(top),
        };
        let listen = top.controller.listen.value;
        let notifier = Notifier::from_topology(top);
        let mut core = Core::new(loaded.clone(), saved);
        // A member of a group starts as a follower: it leads once etcd says so.
        core.leading = group.is_none();
        let inner = Inner {
            loaded: RwLock::new(loaded.clone()),
            playbooks: RwLock::new(Arc::new(setup.playbooks)),
            reload: setup.reload,
            cloud: setup.cloud,
            dns: setup.dns,
            ssh,
            redis: medic_redis_client(top, &setup.secrets)?,
            secrets: setup.secrets,
            history: Mutex::new(history::HistoryCache::default()),
            journal,
            saver,
            book: Arc::new(RwLock::new(Book::default())),
            st: Mutex::new(St {
                core,
                alerts: VecDeque::new(),
                metrics: Metrics::default(),
                events: event_log::EventLog::default(),
                routing: BTreeMap::new(),
                writes: BTreeMap::new(),
                started_ms: now_ms(),
                owed_writes: BTreeMap::new(),
                layout_told: BTreeMap::new(),
                spares: Vec::new(),
            }),
            notifier: RwLock::new(notifier),
            token,
            stopping: AtomicBool::new(false),
            stop: Notify::new(),
            checks: Mutex::new(Vec::new()),
            checks_rt: Mutex::new(None),
            main_rt: Mutex::new(None),
            runners: Mutex::new(Vec::new()),
            listen,
            failpoint: failpoint_from_env(),
            feed: crate::stream::Feed::default(),
            group,
        };
        let c = Controller {
            inner: Arc::new(inner),
        };
        c.discover(had_state).await?;
        if c.inner.group.is_none() {
            // In a group, the leader resumes what is in flight, from etcd's journal.
            c.resume_open()?;
        }
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

    /// Updates what the checks read: addresses and who is not to be checked.
    fn sync_book(&self, st: &St) {
        let mut b = self
            .inner
            .book
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        b.addresses = st.core.saved.observed.addresses();
        b.paused = st.core.paused();
        b.version += 1;
    }

    /// Persists the state (handed to its writer thread: see [`crate::saver`]) and tells the
    /// checks.
    fn save(&self, st: &St) {
        self.sync_book(st);
        self.inner.saver.put(st.core.saved.clone());
        if let Some(g) = &self.inner.group
            && st.core.leading
        {
            g.save_state(&st.core.saved);
        }
    }

    /// Whether this controller may act now: alone, always; in a group, while it leads.
    fn may_act(&self) -> bool {
        self.inner
            .group
            .as_ref()
            .is_none_or(|g| g.acting_token().is_some())
    }

    /// In a group, whether another member leads now (this one does not act, and is quiet).
    fn follows_a_leader(&self) -> bool {
        self.inner
            .group
            .as_ref()
            .is_some_and(|g| g.follows_a_leader())
    }

    /// The group's view, if this controller is in one.
    pub fn group_status(&self) -> Option<GroupStatus> {
        self.inner.group.as_ref().map(group::Group::status)
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
        *lock(&self.inner.main_rt) = Some(tokio::runtime::Handle::current());
        let api = tokio::spawn(crate::api::serve(self.clone(), listener));
        let (checks_rt, checks_stop) = checks_thread().await?;
        *lock(&self.inner.checks_rt) = Some(checks_rt.clone());
        self.spawn_checks();
        // Recoveries resumed from the journal start now.
        self.kick();
        self.warm_up_ssh();
        let reconcile = {
            let c = self.clone();
            tokio::spawn(async move { c.reconcile_proxies().await })
        };
        let group = {
            let c = self.clone();
            tokio::spawn(async move { c.run_group().await })
        };
        let spares = {
            let c = self.clone();
            tokio::spawn(async move { c.tend_spares_forever().await })
        };
        tracing::info!(listen = %self.inner.listen, "medic is watching.");
        self.inner.stop.notified().await;
        reconcile.abort();
        spares.abort();
        // A safe point: each recovery finishes the step it is in, then stops.
        loop {
            let runners: Vec<JoinHandle<()>> = lock(&self.inner.runners).drain(..).collect();
            if runners.is_empty() {
                break;
            }
            for r in runners {
                let _ = r.await;
            }
        }
        for h in lock(&self.inner.checks).drain(..) {
            h.abort();
        }
        // Gives the lease up, so another member leads at once.
        let _ = tokio::time::timeout(Duration::from_secs(2), group).await;
        api.abort();
        let _ = checks_stop.send(());
        // Every state handed over is on disk before `run` returns.
        let saver = self.inner.saver.clone();
        let _ = tokio::task::spawn_blocking(move || saver.flush()).await;
        Ok(())
    }

    /// Asks [`run`](Self::run) to stop at the next safe point (between steps).
    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.stop.notify_one();
    }

    fn stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::SeqCst)
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
        // The passwords and TLS files were read at start, and the checks' client is built
        // from them: a reload cannot change them under a running controller.
        if redis_access(&loaded.topology) != redis_access(&self.top().topology) {
            return Err(
                "redis_auth or redis_tls changed: restart medic so that it reads the new passwords or files"
                    .to_owned(),
            );
        }
        *self
            .inner
            .notifier
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Notifier::from_topology(&loaded.topology);
        let loaded = Arc::new(loaded);
        {
            let mut st = lock(&self.inner.st);
            st.core.set_topology(loaded.clone());
            self.sync_book(&st);
        }
        *self
            .inner
            .loaded
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = loaded;
        *self
            .inner
            .playbooks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(playbooks);
        self.spawn_checks();
        tracing::info!("Topology reloaded.");
        Ok(())
    }
}

/// What `redis_auth` and `redis_tls` name (users, where each secret is, the certificate's
/// name and files), positions aside: whether a reload changed how medic talks to redis.
fn redis_access(top: &Topology) -> String {
    let mut out = String::new();
    for (field, (user, r)) in medic_topology::auth::users(top) {
        out += &format!(
            "{field} {user} {:?} {:?}\n",
            r.file.as_ref().map(|f| &f.value),
            r.env.as_ref().map(|e| &e.value)
        );
    }
    if let Some(t) = &top.redis_tls {
        let t = &t.value;
        out += &format!(
            "tls {} {:?} {:?} {:?}\n",
            t.name.value, t.ca.value, t.cert.value, t.key.value
        );
    }
    out
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
    crate::hygiene::printable(&out)
}
