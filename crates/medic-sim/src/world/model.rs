//! The parts of the world: instances, redis servers, HAProxies, and what clients and the
//! cloud leave behind.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

/// How an instance is, apart from the cloud's view of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Up,
    /// Accepts TCP but answers nothing: silent to every probe, no replication, no writes.
    Hung,
    /// Gone until replaced (the cloud still shows it running until it is terminated).
    Crashed,
}

/// The cloud's view of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceState {
    Running,
    Terminated,
}

/// A redis server's role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisRole {
    Master,
    /// Replicates the server of its shard at `addr` (`of`: the machine that was, for reading).
    Replica {
        of: String,
        addr: IpAddr,
    },
}

/// One redis process: one shard's server on one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redis {
    pub alive: bool,
    pub role: RedisRole,
    /// The values written, in order; a replica's is a copy of its master's.
    pub log: Vec<u64>,
    /// `CLIENT PAUSE ... WRITE` holds writes until then.
    pub paused_until_ms: u64,
    /// When this replica last copied its master's log.
    pub last_sync_ms: u64,
}

impl Redis {
    /// A process just started: empty (no persistence), in `role`.
    pub fn fresh(role: RedisRole) -> Self {
        Redis {
            alive: true,
            role,
            log: Vec::new(),
            paused_until_ms: 0,
            last_sync_ms: 0,
        }
    }
}

/// A HAProxy server line's administrative state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    Ready,
    Maint,
}

/// One `server` line of a HAProxy backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLine {
    /// The server's name: the machine it stands for.
    pub name: String,
    pub addr: IpAddr,
    pub port: u16,
    pub admin: Admin,
    /// An app proxy's backup proxy: used only while no other server is up.
    pub backup: bool,
    /// An app proxy follows this DNS record for the server's address.
    pub fqdn: Option<String>,
}

/// A running HAProxy: a proxy machine's or an app machine's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// The runtime API refuses connections while HAProxy still routes.
    pub api_down: bool,
    /// Server lines by backend name, in configuration order.
    pub backends: BTreeMap<String, Vec<ServerLine>>,
}

impl Proxy {
    /// A HAProxy configured by the haproxy or app-proxy playbook from its variables, each
    /// address (an IP or `${address:M}`) resolved by `resolve`.
    pub fn from_vars(
        vars: &Value,
        resolve: impl Fn(&str) -> Option<IpAddr>,
    ) -> Result<Proxy, String> {
        let resolver = vars.get("resolver").is_some_and(|r| !r.is_null());
        let mut backends = BTreeMap::new();
        for f in vars["frontends"]
            .as_array()
            .ok_or("vars: no `frontends` list")?
        {
            let backend = f["backend"]
                .as_str()
                .ok_or("vars: a frontend has no backend")?;
            let mut lines = Vec::new();
            for s in f["servers"]
                .as_array()
                .ok_or("vars: a frontend has no servers")?
            {
                let name = s["name"].as_str().ok_or("vars: a server has no name")?;
                let address = s["address"].as_str().unwrap_or_default();
                let addr = resolve(address).ok_or(format!("vars: `{address}` is not known"))?;
                let fqdn = s["fqdn"].as_str().filter(|_| resolver);
                lines.push(ServerLine {
                    name: name.to_owned(),
                    addr,
                    port: s["port"]
                        .as_u64()
                        .and_then(|p| u16::try_from(p).ok())
                        .unwrap_or(0),
                    // The app proxy's servers are all enabled; the proxies' only the master.
                    admin: match s["active"].as_bool() {
                        Some(false) => Admin::Maint,
                        _ => Admin::Ready,
                    },
                    backup: s["backup"].as_bool().unwrap_or(false),
                    fqdn: fqdn.map(|f| f.trim_end_matches('.').to_owned()),
                });
            }
            backends.insert(backend.to_owned(), lines);
        }
        Ok(Proxy {
            api_down: false,
            backends,
        })
    }

    /// The line `server` of `backend`.
    pub fn line_mut(&mut self, backend: &str, server: &str) -> Option<&mut ServerLine> {
        self.backends
            .get_mut(backend)?
            .iter_mut()
            .find(|l| l.name == server)
    }
}

/// One cloud instance: an incarnation of a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub machine: String,
    pub address: IpAddr,
    pub state: InstanceState,
    pub status: Status,
    /// Its redis servers by shard (none until the redis playbook ran on a launched one).
    pub redis: BTreeMap<String, Redis>,
    /// Its HAProxy (none until the playbook ran on a launched one).
    pub proxy: Option<Proxy>,
}

impl Instance {
    /// Running in the cloud and answering.
    pub fn is_up(&self) -> bool {
        self.state == InstanceState::Running && self.status == Status::Up
    }
}

/// A write a client had acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub client: String,
    pub shard: String,
    pub value: u64,
    pub server_machine: String,
    pub instance: String,
    pub at_ms: u64,
}

/// What became of one client write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Acked(Ack),
    Failed {
        client: String,
        shard: String,
        reason: String,
    },
}

/// An instance terminated, and whether its machine was healthy then (invariant I3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    pub machine: String,
    pub instance: String,
    pub at_ms: u64,
    pub was_healthy: bool,
}

/// A shard as the topology lays it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLayout {
    pub port: u16,
    /// Its backend on the proxies (the topology's name for it).
    pub backend: String,
    /// The machines with a server of it, the topology's master first.
    pub machines: Vec<String>,
}
