//! A service's own address on EC2: a secondary private IPv4 address that moves to the
//! primary's instance (seed 001's "bring that IP up as eth0:1"), optionally with the Elastic
//! IP associated with it. The address on the instance's interface inside the machine is the
//! service address step's, over SSH; this is the VPC's side, without which the VPC delivers
//! nothing for the address to the new primary.

use std::net::Ipv4Addr;

use aws_sdk_ec2::types::{Filter, NetworkInterface};
use medic_cloud::CloudError;

use crate::Ec2;
use crate::classify;

const OP: &str = "move address";

fn api(message: String) -> CloudError {
    CloudError::Api {
        op: OP,
        code: "AddressNotMoved".into(),
        message,
    }
}

impl Ec2 {
    /// See [`medic_cloud::Cloud::move_address`].
    pub(crate) async fn move_address_to(
        &self,
        id: &str,
        ip: Ipv4Addr,
        elastic: Option<&str>,
    ) -> Result<String, CloudError> {
        let (eni, vpc) = self.primary_interface(id).await?;
        let ip_s = ip.to_string();
        // AllowReassignment: EC2 takes it from the interface holding it, in one call.
        self.client
            .assign_private_ip_addresses()
            .network_interface_id(&eni)
            .private_ip_addresses(&ip_s)
            .allow_reassignment(true)
            .send()
            .await
            .map_err(|e| classify(OP, "ec2:AssignPrivateIpAddresses", |_| None, e))?;
        // Any other interface still listing it gives it up (an API that reassigned it
        // already has none): never two instances answering for the address.
        let mut taken = Vec::new();
        for other in self.holders(&vpc, &ip_s).await? {
            if other == eni {
                continue;
            }
            self.client
                .unassign_private_ip_addresses()
                .network_interface_id(&other)
                .private_ip_addresses(&ip_s)
                .send()
                .await
                .map_err(|e| classify(OP, "ec2:UnassignPrivateIpAddresses", |_| None, e))?;
            taken.push(other);
        }
        if let Some(allocation) = elastic {
            self.client
                .associate_address()
                .allocation_id(allocation)
                .network_interface_id(&eni)
                .private_ip_address(&ip_s)
                .allow_reassociation(true)
                .send()
                .await
                .map_err(|e| {
                    classify(
                        OP,
                        "ec2:AssociateAddress",
                        |code| {
                            code.starts_with("InvalidAllocationID").then(|| {
                                (
                                    format!("Elastic IP {allocation}"),
                                    "services[].address.elastic_ip".to_owned(),
                                )
                            })
                        },
                        e,
                    )
                })?;
        }
        // Read back: the instance's interface alone holds the address, the Elastic IP on it.
        let holders = self.holders(&vpc, &ip_s).await?;
        if holders != [eni.clone()] {
            return Err(api(format!(
                "{ip} assigned to {eni} ({id}), but read back on {}",
                if holders.is_empty() {
                    "no interface".to_owned()
                } else {
                    holders.join(", ")
                }
            )));
        }
        let mut said = format!("{ip} on {eni} of {id}");
        if !taken.is_empty() {
            said.push_str(&format!(" (taken from {})", taken.join(", ")));
        }
        if let Some(allocation) = elastic {
            let public = self.elastic_on(allocation, &eni, &ip_s).await?;
            said.push_str(&format!(", Elastic IP {public} ({allocation}) with it"));
        }
        Ok(said)
    }

    /// The instance's primary network interface (device 0) and its VPC.
    async fn primary_interface(&self, id: &str) -> Result<(String, String), CloudError> {
        let out = self
            .client
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| classify(OP, "ec2:DescribeInstances", |_| None, e))?;
        let instance = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .next()
            .ok_or_else(|| api(format!("instance {id} not found")))?;
        let eni = instance
            .network_interfaces()
            .iter()
            .find(|n| n.attachment().and_then(|a| a.device_index()) == Some(0))
            .and_then(|n| n.network_interface_id())
            .ok_or_else(|| api(format!("instance {id} has no primary network interface")))?;
        let vpc = instance
            .vpc_id()
            .ok_or_else(|| api(format!("instance {id} is in no VPC")))?;
        Ok((eni.to_owned(), vpc.to_owned()))
    }

    /// The interfaces of the VPC that hold `ip` (as a primary or secondary private address).
    async fn holders(&self, vpc: &str, ip: &str) -> Result<Vec<String>, CloudError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .describe_network_interfaces()
            .filters(Filter::builder().name("vpc-id").values(vpc).build())
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| classify(OP, "ec2:DescribeNetworkInterfaces", |_| None, e))?;
            out.extend(
                page.network_interfaces()
                    .iter()
                    .filter(|n| holds(n, ip))
                    .filter_map(|n| n.network_interface_id().map(str::to_owned)),
            );
        }
        out.sort();
        Ok(out)
    }

    /// The Elastic IP's public address, once read back on `eni` (what it maps to there when
    /// that is not `ip`: EC2 may keep it on the interface's primary address, which reaches the
    /// same instance).
    async fn elastic_on(
        &self,
        allocation: &str,
        eni: &str,
        ip: &str,
    ) -> Result<String, CloudError> {
        let out = self
            .client
            .describe_addresses()
            .allocation_ids(allocation)
            .send()
            .await
            .map_err(|e| classify(OP, "ec2:DescribeAddresses", |_| None, e))?;
        let a = out
            .addresses()
            .first()
            .ok_or_else(|| api(format!("Elastic IP {allocation} not found")))?;
        if a.network_interface_id() != Some(eni) {
            return Err(api(format!(
                "Elastic IP {allocation} associated with {eni}, but read back on {}",
                a.network_interface_id().unwrap_or("no interface"),
            )));
        }
        let public = a.public_ip().unwrap_or("?");
        Ok(match a.private_ip_address() {
            Some(at) if at != ip => format!("{public}, mapped to {at}"),
            _ => public.to_owned(),
        })
    }
}

fn holds(n: &NetworkInterface, ip: &str) -> bool {
    n.private_ip_addresses()
        .iter()
        .any(|a| a.private_ip_address() == Some(ip))
}
