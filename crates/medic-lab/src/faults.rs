//! Faults the lab injects into its machines: a crash, a killed or hung process, a partition.

use std::net::Ipv4Addr;

use medic_cloud::CloudError;

use crate::{Fault, Lab, err, run, run_quiet};

impl Lab {
    /// Injects a fault into a machine (by its topology name or instance id).
    pub async fn fault(&self, machine: &str, fault: Fault) -> Result<(), CloudError> {
        let r = self
            .live(machine)
            .ok_or_else(|| err("fault", format!("no running lab machine {machine}")))?;
        let bridge_ip = format!("{}/32", self.bridge_address());
        match fault {
            Fault::Crash => {
                // The link first: a crashed machine is silent, it never refuses a connection
                // (killing the processes first would let a check see "refused" in between).
                run("fault", "ip", &["link", "set", &r.veth, "down"]).await?;
                self.kill_all(&r.netns).await;
            }
            Fault::Hang => self.signal_all(&r.netns, "STOP").await,
            Fault::Partition {
                monitor_only: false,
            } => run("fault", "ip", &["link", "set", &r.veth, "down"])
                .await
                .map(drop)?,
            Fault::Partition { monitor_only: true } => {
                run(
                    "fault",
                    "ip",
                    &[
                        "netns",
                        "exec",
                        &r.netns,
                        "ip",
                        "route",
                        "replace",
                        "blackhole",
                        &bridge_ip,
                    ],
                )
                .await
                .map(drop)?;
            }
            Fault::Heal => {
                self.signal_all(&r.netns, "CONT").await;
                // Every cut of this machine, both ways: its own blackhole routes, and those
                // of other machines towards it.
                run_quiet(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        &r.netns,
                        "ip",
                        "route",
                        "flush",
                        "type",
                        "blackhole",
                    ],
                )
                .await;
                let own = format!("{}/32", r.address);
                for peer in self.records().into_iter().filter(|p| p.id != r.id) {
                    run_quiet(
                        "ip",
                        &[
                            "netns",
                            "exec",
                            &peer.netns,
                            "ip",
                            "route",
                            "del",
                            "blackhole",
                            &own,
                        ],
                    )
                    .await;
                }
                run("fault", "ip", &["link", "set", &r.veth, "up"]).await?;
            }
        }
        tracing::info!(machine = %machine, fault = ?fault, "Fault injected.");
        Ok(())
    }

    /// A partial partition: `machine` and each of `peers` (machine names, or `monitor` for
    /// this host) stop reaching each other, both ways (blackhole routes in both namespaces);
    /// every other path stays. `Fault::Heal` of `machine` undoes it.
    pub async fn cut(&self, machine: &str, peers: &[&str]) -> Result<(), CloudError> {
        let r = self
            .live(machine)
            .ok_or_else(|| err("fault", format!("no running lab machine {machine}")))?;
        for peer in peers {
            let (peer_ip, peer_ns) = if *peer == "monitor" {
                (self.bridge_address(), None)
            } else {
                let p = self
                    .live(peer)
                    .ok_or_else(|| err("fault", format!("no running lab machine {peer}")))?;
                (p.address, Some(p.netns))
            };
            blackhole(&r.netns, peer_ip).await?;
            if let Some(ns) = peer_ns {
                blackhole(&ns, r.address).await?;
            }
        }
        tracing::info!(machine = %machine, peers = ?peers, "Partition injected.");
        Ok(())
    }
}

/// Inside `netns`, traffic to `to` is dropped.
async fn blackhole(netns: &str, to: Ipv4Addr) -> Result<(), CloudError> {
    let to = format!("{to}/32");
    run(
        "fault",
        "ip",
        &[
            "netns",
            "exec",
            netns,
            "ip",
            "route",
            "replace",
            "blackhole",
            &to,
        ],
    )
    .await
    .map(drop)
}
