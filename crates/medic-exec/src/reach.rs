//! How medic reaches a HAProxy's admin runtime API: through its SSH session to the machine
//! (a socket forwarded to the machine's loopback, where the API listens: the default), or over
//! the network when the topology says `reach: network`.

use std::net::{IpAddr, SocketAddr};

use medic_haproxy::{Endpoint, HaproxyError, RuntimeApi};
use medic_ssh::Ssh;
use medic_topology::{Reach, Topology};

use crate::ssh_host;

/// The runtime API of the HAProxy on `machine` (at `ip`), listening on `port`. Not reaching
/// it over SSH is a [`HaproxyError::Connect`] like a refused connection: the API cannot be
/// asked either way (the SSH error is its cause).
pub async fn proxy_api(
    ssh: &Ssh,
    top: &Topology,
    machine: &str,
    ip: IpAddr,
    port: u16,
) -> Result<RuntimeApi, HaproxyError> {
    let reach = top.runtime_api_of(machine).map_or(Reach::Ssh, |r| r.reach);
    match reach {
        Reach::Network => Ok(RuntimeApi::tcp(SocketAddr::new(ip, port))),
        Reach::Ssh => {
            let loopback = SocketAddr::from(([127, 0, 0, 1], port));
            match ssh.forward(&ssh_host(top, machine, ip), loopback).await {
                Ok(path) => Ok(RuntimeApi::new(Endpoint::Unix(path))),
                Err(e) => Err(HaproxyError::Connect {
                    endpoint: Endpoint::Tcp(SocketAddr::new(ip, port)),
                    source: std::io::Error::other(format!("over SSH: {e}")),
                }),
            }
        }
    }
}
