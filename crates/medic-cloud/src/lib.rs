//! What medic needs from a cloud and from DNS, whoever provides them.
//!
//! [`Cloud`] launches, describes, finds and terminates machines; [`Dns`] upserts and reads A
//! record sets. EC2 and Route 53 (`medic-aws`) and the local lab implement them, and the
//! controller cannot tell them apart. What is built from the primitives — waiting until an
//! instance runs, until its SSH port answers, until a DNS change is in sync; finding orphans —
//! is here, once, as functions over the traits.
//!
//! # Idempotency
//! [`Cloud::launch`] first looks for an instance tagged with the spec's recovery and step and
//! returns it if there is one: a controller that crashed after launching finds its instance
//! instead of launching a second. [`Cloud::terminate`] of an instance already gone succeeds and
//! says so. [`Dns::upsert`] is an UPSERT.

pub mod adopt;
pub mod faults;
pub mod spares;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;
use tokio::time::{Instant, sleep, timeout};

pub use medic_plan::LaunchSpec;

pub const TAG_TOPOLOGY: &str = "medic:topology";
pub const TAG_MACHINE: &str = "medic:machine";
pub const TAG_RECOVERY: &str = "medic:recovery";
pub const TAG_STEP: &str = "medic:step";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    Pending,
    Running,
    ShuttingDown,
    Terminated,
    Stopping,
    Stopped,
    Other(String),
}

impl InstanceState {
    pub fn parse(s: &str) -> Self {
        match s {
            "pending" => InstanceState::Pending,
            "running" => InstanceState::Running,
            "shutting-down" => InstanceState::ShuttingDown,
            "terminated" => InstanceState::Terminated,
            "stopping" => InstanceState::Stopping,
            "stopped" => InstanceState::Stopped,
            other => InstanceState::Other(other.to_owned()),
        }
    }

    /// Gone or on its way out: never counted as a machine.
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            InstanceState::ShuttingDown | InstanceState::Terminated
        )
    }
}

/// One machine as the cloud knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    pub id: String,
    pub state: InstanceState,
    /// The private address (what medic and the proxies use).
    pub address: Option<IpAddr>,
    pub instance_type: Option<String>,
    pub tags: BTreeMap<String, String>,
}

impl Instance {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }

    pub fn machine(&self) -> Option<&str> {
        self.tag(TAG_MACHINE)
    }
}

/// What `launch` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Launched {
    pub instance: Instance,
    /// `true` when the instance was found (launched by this recovery step before a crash).
    pub reused: bool,
    /// `true` when it is a spare this step took ([`spares::claim`]), not a launch.
    pub spare: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminateOutcome {
    Terminated,
    /// Already terminated, or unknown to the cloud: nothing to do.
    AlreadyGone,
}

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("{op}: throttled by the API after {attempts} attempts: {message}")]
    Throttled {
        op: &'static str,
        attempts: u32,
        message: String,
    },
    #[error("{op}: not authorized: the credentials need the IAM action {action} ({message})")]
    Unauthorized {
        op: &'static str,
        action: String,
        message: String,
    },
    #[error("{op}: {what} does not exist; check {field} in the topology ({message})")]
    NotFound {
        op: &'static str,
        what: String,
        field: String,
        message: String,
    },
    #[error("{op}: no capacity for any of the instance types {tried:?} ({message})")]
    NoCapacity {
        op: &'static str,
        tried: Vec<String>,
        message: String,
    },
    #[error("{op}: {message}")]
    Api {
        op: &'static str,
        code: String,
        message: String,
    },
    #[error("{op}: cannot reach the API: {message}")]
    Transport { op: &'static str, message: String },
    #[error("{op}: not done after {after:?}: {state}")]
    Timeout {
        op: &'static str,
        after: Duration,
        state: String,
    },
    #[error("{op}: {message}")]
    Invalid { op: &'static str, message: String },
}

/// A machine provider.
pub trait Cloud: Send + Sync {
    /// Launches the machine `spec` describes — or returns the instance this recovery step
    /// already launched (tags `medic:recovery` and `medic:step`), so it is never launched twice.
    fn launch(
        &self,
        spec: &LaunchSpec,
    ) -> impl Future<Output = Result<Launched, CloudError>> + Send;
    /// The instance, or `None` if the cloud does not know it.
    fn describe(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<Instance>, CloudError>> + Send;
    /// Every instance not yet terminated that carries all of `tags`.
    fn find(
        &self,
        tags: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<Vec<Instance>, CloudError>> + Send;
    /// Terminates the instance; one already gone or unknown is success.
    fn terminate(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<TerminateOutcome, CloudError>> + Send;
    /// The instance's SSH host keys (`ssh-ed25519 AAAA...`) from a source other than an SSH
    /// connection (console output, the lab's record); empty if not available yet.
    fn host_keys(&self, id: &str) -> impl Future<Output = Result<Vec<String>, CloudError>> + Send;
    /// Sets the tags `set` on the instance and removes the tags named in `remove`; read
    /// back by the caller. How a spare is taken ([`spares::claim`]) and marked ready.
    fn retag(
        &self,
        id: &str,
        set: &BTreeMap<String, String>,
        remove: &[&str],
    ) -> impl Future<Output = Result<(), CloudError>> + Send;
    /// Stops the instance (a spare kept stopped); one stopped already is success.
    fn stop(&self, id: &str) -> impl Future<Output = Result<(), CloudError>> + Send;
    /// Starts a stopped instance (a stopped spare taken); one running already is success.
    fn start(&self, id: &str) -> impl Future<Output = Result<(), CloudError>> + Send;
    /// Moves a service's own address to the instance: `ip`, a secondary private IPv4 address,
    /// assigned to its primary network interface and taken from any other interface holding it;
    /// with `elastic` (an allocation id), that Elastic IP associated with it. Read back; says
    /// what it did. Providers whose addresses do not move through their API refuse it.
    fn move_address(
        &self,
        id: &str,
        ip: std::net::Ipv4Addr,
        elastic: Option<&str>,
    ) -> impl Future<Output = Result<String, CloudError>> + Send {
        let _ = (ip, elastic);
        let id = id.to_owned();
        async move {
            Err(CloudError::Invalid {
                op: "move address",
                message: format!(
                    "{id}: this provider moves no address through its API; expected the aws provider"
                ),
            })
        }
    }
    /// Takes the secondary private address `ip` from the instance's primary network interface
    /// (the old primary's, before another is promoted), and the Elastic IP `elastic` off it;
    /// read back; an instance gone, or not holding them, is success. Providers whose addresses
    /// do not move through their API refuse.
    fn release_address(
        &self,
        id: &str,
        ip: std::net::Ipv4Addr,
        elastic: Option<&str>,
    ) -> impl Future<Output = Result<String, CloudError>> + Send {
        let _ = (ip, elastic);
        let id = id.to_owned();
        async move {
            Err(CloudError::Invalid {
                op: "release address",
                message: format!(
                    "{id}: this provider moves no address through its API; expected the aws provider"
                ),
            })
        }
    }
}

/// An A record set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordSet {
    pub name: String,
    pub ttl: u32,
    pub values: Vec<IpAddr>,
}

/// The id of a submitted DNS change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangeId(pub String);

impl fmt::Display for ChangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One of a name's two failover record sets (Route 53 failover routing): its value, and the
/// health check the DNS provider itself runs on it, so that it answers the secondary while
/// the primary fails even if no controller is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailoverSet {
    /// `true`: the PRIMARY set; `false`: the SECONDARY.
    pub primary: bool,
    pub value: IpAddr,
    pub health: HealthSpec,
}

/// A provider-side health check of one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthSpec {
    /// `Some(path)`: an HTTP (or HTTPS) check of `path`; `None`: a TCP connection.
    pub http_path: Option<String>,
    /// The HTTP check over TLS (HTTPS).
    pub https: bool,
    /// The name sent (as SNI and `Host`) by an HTTPS check; else the address.
    pub server_name: Option<String>,
    pub port: u16,
    /// What names the checks a service owns (`medic:TOPOLOGY:SERVICE`): those whose address is
    /// no longer one of its sets are deleted.
    pub owner: String,
}

/// A DNS provider.
pub trait Dns: Send + Sync {
    /// UPSERTs `name`'s PRIMARY and SECONDARY failover record sets, each with a health check
    /// of its address (created if there is none, those of addresses no longer used deleted).
    /// Providers without failover routing refuse it.
    fn upsert_failover(
        &self,
        name: &str,
        ttl: u32,
        sets: &[FailoverSet],
    ) -> impl Future<Output = Result<ChangeId, CloudError>> + Send {
        let _ = (ttl, sets);
        let name = name.to_owned();
        async move {
            Err(CloudError::Invalid {
                op: "upsert",
                message: format!(
                    "{name}: this DNS provider has no failover routing; expected the route53 provider"
                ),
            })
        }
    }
    /// UPSERTs the A record set `name` with `values` (at least one).
    fn upsert(
        &self,
        name: &str,
        ttl: u32,
        values: &[IpAddr],
    ) -> impl Future<Output = Result<ChangeId, CloudError>> + Send;
    /// Whether the change is in sync on every authoritative server.
    fn in_sync(&self, change: &ChangeId) -> impl Future<Output = Result<bool, CloudError>> + Send;
    /// The A record set `name`, if there is one.
    fn read(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<RecordSet>, CloudError>> + Send;
}

/// Refuses a change that would leave a record with no value.
pub fn check_values(name: &str, values: &[IpAddr]) -> Result<(), CloudError> {
    if values.is_empty() {
        return Err(CloudError::Invalid {
            op: "upsert",
            message: format!(
                "refusing to leave {name} with no A value; a record needs at least one address"
            ),
        });
    }
    Ok(())
}

/// Waits until instance `id` is terminated or stopped (or no longer known): only then is a
/// machine fenced at its source — a `shutting-down` EC2 instance may still serve.
pub async fn wait_gone<C: Cloud>(
    cloud: &C,
    id: &str,
    within: Duration,
    poll: Duration,
) -> Result<(), CloudError> {
    let deadline = Instant::now() + within;
    loop {
        let state = match cloud.describe(id).await? {
            None => return Ok(()),
            Some(i) if matches!(i.state, InstanceState::Terminated | InstanceState::Stopped) => {
                return Ok(());
            }
            Some(i) => format!("{id} is {:?}", i.state),
        };
        if Instant::now() + poll > deadline {
            return Err(CloudError::Timeout {
                op: "wait gone",
                after: within,
                state,
            });
        }
        sleep(poll).await;
    }
}

/// Polls `describe` until the instance runs and has an address.
pub async fn wait_running<C: Cloud>(
    cloud: &C,
    id: &str,
    within: Duration,
    poll: Duration,
) -> Result<Instance, CloudError> {
    let deadline = Instant::now() + within;
    loop {
        let state = match cloud.describe(id).await? {
            Some(i) if i.state == InstanceState::Running && i.address.is_some() => return Ok(i),
            Some(i) if i.state.is_gone() => {
                return Err(CloudError::Api {
                    op: "wait running",
                    code: "Gone".into(),
                    message: format!("{id} is {:?}", i.state),
                });
            }
            Some(i) => format!("{id} is {:?}", i.state),
            None => format!("{id} is not known yet"),
        };
        if Instant::now() + poll > deadline {
            return Err(CloudError::Timeout {
                op: "wait running",
                after: within,
                state,
            });
        }
        sleep(poll).await;
    }
}

/// Polls until `addr` accepts TCP connections (sshd is up).
pub async fn wait_port(addr: SocketAddr, within: Duration) -> Result<(), CloudError> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Ok(_)) = timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CloudError::Timeout {
                op: "wait for ssh",
                after: within,
                state: format!("{addr} refuses or is silent"),
            });
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// Upserts and waits until the change is in sync.
pub async fn upsert_and_wait<D: Dns>(
    dns: &D,
    name: &str,
    ttl: u32,
    values: &[IpAddr],
    within: Duration,
    poll: Duration,
) -> Result<ChangeId, CloudError> {
    check_values(name, values)?;
    let change = dns.upsert(name, ttl, values).await?;
    let deadline = Instant::now() + within;
    loop {
        if dns.in_sync(&change).await? {
            return Ok(change);
        }
        if Instant::now() + poll > deadline {
            return Err(CloudError::Timeout {
                op: "dns change",
                after: within,
                state: format!("change {change} still pending"),
            });
        }
        sleep(poll).await;
    }
}

/// Every instance medic owns for a topology.
pub async fn list_owned<C: Cloud>(cloud: &C, topology: &str) -> Result<Vec<Instance>, CloudError> {
    cloud
        .find(&BTreeMap::from([(
            TAG_TOPOLOGY.to_owned(),
            topology.to_owned(),
        )]))
        .await
}

/// Orphans: owned instances that are alive but are no machine's current instance, belong to
/// no recovery still in flight and are no spare (the pool's, tended by the controller).
/// `current` holds each machine's current instance id.
pub fn orphans<'a>(
    owned: &'a [Instance],
    current: &BTreeMap<String, String>,
    in_flight: &BTreeSet<String>,
) -> Vec<&'a Instance> {
    let current_ids: BTreeSet<&str> = current.values().map(String::as_str).collect();
    owned
        .iter()
        .filter(|i| !i.state.is_gone())
        .filter(|i| !current_ids.contains(i.id.as_str()))
        .filter(|i| !spares::is_spare(i))
        .filter(|i| i.tag(TAG_RECOVERY).is_none_or(|r| !in_flight.contains(r)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, machine: &str, state: InstanceState, recovery: Option<&str>) -> Instance {
        let mut tags = BTreeMap::from([(TAG_MACHINE.to_owned(), machine.to_owned())]);
        if let Some(r) = recovery {
            tags.insert(TAG_RECOVERY.to_owned(), r.to_owned());
        }
        Instance {
            id: id.into(),
            state,
            address: None,
            instance_type: None,
            tags,
        }
    }

    #[test]
    fn orphans_are_alive_not_current_and_not_in_flight() {
        let owned = vec![
            inst("i-1", "redis1", InstanceState::Running, None), // current
            inst("i-2", "redis1", InstanceState::Running, Some("rec-old")), // a double launch
            inst("i-3", "redis9", InstanceState::Running, None), // not in the topology
            inst("i-4", "redis2", InstanceState::Pending, Some("rec-now")), // being launched now
            inst("i-5", "redis2", InstanceState::Terminated, None), // gone
            {
                let mut spare = inst("i-6", "", InstanceState::Stopped, Some("rec-spare"));
                spare.tags.remove(TAG_MACHINE);
                spare.tags.insert(spares::TAG_SPARE.into(), "redis".into());
                spare // the pool's
            },
        ];
        let current = BTreeMap::from([("redis1".to_owned(), "i-1".to_owned())]);
        let in_flight = BTreeSet::from(["rec-now".to_owned()]);
        let ids: Vec<&str> = orphans(&owned, &current, &in_flight)
            .iter()
            .map(|i| i.id.as_str())
            .collect();
        assert_eq!(ids, ["i-2", "i-3"]);
    }

    #[test]
    fn a_record_with_no_value_is_refused() {
        let e = check_values("haproxy1.example.com", &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "upsert: refusing to leave haproxy1.example.com with no A value; a record needs at least one address"
        );
    }
}
