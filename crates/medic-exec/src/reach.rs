//! How medic reaches a HAProxy's admin runtime API: through its SSH session to the machine
//! (a socket forwarded to the machine's loopback, where the API listens: the default; or to
//! its admin unix socket when the topology gives no `port`), or over the network when the
//! topology says `reach: network`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use medic_haproxy::{Aliases, Endpoint, HaproxyError, RuntimeApi};
use medic_ssh::{ForwardTo, Ssh};
use medic_topology::{Reach, Topology};

use crate::ssh_host;

/// The runtime API of the HAProxy on `machine` (at `ip`), listening on `port` (none: on its
/// admin unix socket, reached over SSH). Not reaching it over SSH is a
/// [`HaproxyError::Connect`] like a refused connection: the API cannot be asked either way
/// (the SSH error is its cause). Servers the topology names otherwise than their machines
/// (`machines[].server`) are translated by the API returned.
pub async fn proxy_api(
    ssh: &Ssh,
    top: &Topology,
    machine: &str,
    ip: IpAddr,
    port: Option<u16>,
) -> Result<RuntimeApi, HaproxyError> {
    let mut found = reach_api(ssh, top, machine, ip, port).await?;
    let aliases = top.server_aliases();
    if !aliases.is_empty() {
        found.aliases = Arc::new(Aliases::new(aliases));
    }
    Ok(found)
}

async fn reach_api(
    ssh: &Ssh,
    top: &Topology,
    machine: &str,
    ip: IpAddr,
    port: Option<u16>,
) -> Result<RuntimeApi, HaproxyError> {
    let api = top.runtime_api_of(machine);
    // The topology as it is now says where the API is: a step journaled before a reload
    // carries the port of its time.
    let port = api.map_or(port, |a| a.tcp_port());
    let reach = api.map_or(Reach::Ssh, |r| r.reach);
    let (remote, endpoint) = match (reach, port, api) {
        (Reach::Network, Some(port), _) => {
            return Ok(RuntimeApi::tcp(SocketAddr::new(ip, port)));
        }
        (_, Some(port), _) => (
            ForwardTo::Tcp(SocketAddr::from(([127, 0, 0, 1], port))),
            Endpoint::Tcp(SocketAddr::new(ip, port)),
        ),
        (_, None, Some(api)) => (
            ForwardTo::Unix(api.socket.value.clone()),
            Endpoint::Unix(api.socket.value.clone()),
        ),
        (_, None, None) => {
            return Err(HaproxyError::Connect {
                endpoint: Endpoint::Tcp(SocketAddr::new(ip, 0)),
                source: std::io::Error::other(format!(
                    "{machine} runs no HAProxy in the topology: no runtime API to reach"
                )),
            });
        }
    };
    match ssh
        .forward(&ssh_host(top, machine, ip), remote.clone())
        .await
    {
        Ok(path) => Ok(RuntimeApi::new(Endpoint::Unix(path))),
        Err(e) => Err(HaproxyError::Connect {
            endpoint,
            source: std::io::Error::other(format!("over SSH to {remote} on {machine}: {e}")),
        }),
    }
}
