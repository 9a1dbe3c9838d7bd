//! A service's own address on EC2: a secondary private IPv4 address that moves to the
//! primary's instance (seed 001's "bring that IP up as eth0:1"), optionally with the Elastic
//! IP associated with it. The address on the instance's interface inside the machine is the
//! service address step's, over SSH; this is the VPC's side, without which the VPC delivers
//! nothing for the address to the new primary.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::time::Instant;

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

/// How long a change is read back before it is called not done (EC2's API is eventually
/// consistent: a describe right after a change may not show it yet).
const READ_BACK: Duration = Duration::from_secs(10);

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
        let before = self.holders(&vpc, &ip_s).await?;
        let mut taken = Vec::new();
        let mut said_already = false;
        if before != [eni.clone()] {
            // AllowReassignment: EC2 takes it from the interface holding it, in one call.
            self.client
                .assign_private_ip_addresses()
                .network_interface_id(&eni)
                .private_ip_addresses(&ip_s)
                .allow_reassignment(true)
                .send()
                .await
                .map_err(|e| classify(OP, "ec2:AssignPrivateIpAddresses", |_| None, e))?;
            // Any other interface still holding it gives it up (read again: EC2 has moved it
            // already, an emulator may not have): never two instances answering for it.
            taken = before.into_iter().filter(|o| *o != eni).collect();
            for other in self.holders(&vpc, &ip_s).await? {
                if other != eni {
                    self.unassign(&other, &ip_s).await?;
                }
            }
        } else {
            said_already = true;
        }
        if let Some(allocation) = elastic {
            // On the service's address: clients from outside reach what it reaches inside.
            self.client
                .associate_address()
                .allocation_id(allocation)
                .network_interface_id(&eni)
                .private_ip_address(&ip_s)
                .allow_reassociation(true)
                .send()
                .await
                .map_err(|e| classify(OP, "ec2:AssociateAddress", elastic_field(allocation), e))?;
        }
        // Read back: the instance's interface alone holds the address, the Elastic IP on it.
        let deadline = Instant::now() + READ_BACK;
        let mut holders = self.holders(&vpc, &ip_s).await?;
        while holders != [eni.clone()] && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            holders = self.holders(&vpc, &ip_s).await?;
        }
        if holders != [eni.clone()] {
            return Err(api(format!(
                "{ip} assigned to {eni} ({id}), but read back on {} after {}s",
                if holders.is_empty() {
                    "no interface".to_owned()
                } else {
                    holders.join(", ")
                },
                READ_BACK.as_secs()
            )));
        }
        let mut said = format!("{ip} on {eni} of {id}");
        if said_already {
            said.push_str(" already");
        }
        if !taken.is_empty() {
            said.push_str(&format!(" (taken from {})", taken.join(", ")));
        }
        if let Some(allocation) = elastic {
            let public = self.elastic_on(allocation, &eni, &ip_s, deadline).await?;
            said.push_str(&format!(", Elastic IP {public} ({allocation}) on it"));
        }
        Ok(said)
    }

    /// See [`medic_cloud::Cloud::release_address`].
    pub(crate) async fn release_address_from(
        &self,
        id: &str,
        ip: Ipv4Addr,
        elastic: Option<&str>,
    ) -> Result<String, CloudError> {
        use medic_cloud::Cloud;
        match self.describe(id).await? {
            Some(i) if !i.state.is_gone() => {}
            _ => return Ok(format!("{id} is gone: it holds no address")),
        }
        let (eni, vpc) = self.primary_interface(id).await?;
        // The Elastic IP first: clients from outside stop reaching the old primary too.
        let mut said = Vec::new();
        if let Some(allocation) = elastic {
            said.push(self.disassociate_from(allocation, &eni).await?);
        }
        let ip_s = ip.to_string();
        if !self.holders(&vpc, &ip_s).await?.contains(&eni) {
            said.push(format!("{ip} not on {eni} of {id}"));
            return Ok(said.join("; "));
        }
        self.unassign(&eni, &ip_s).await?;
        let deadline = Instant::now() + READ_BACK;
        while self.holders(&vpc, &ip_s).await?.contains(&eni) {
            if Instant::now() >= deadline {
                return Err(api(format!(
                    "{ip} unassigned from {eni} ({id}), but still read back on it after {}s",
                    READ_BACK.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        said.push(format!("{ip} taken from {eni} of {id}"));
        Ok(said.join("; "))
    }

    /// The Elastic IP taken off `eni` if it is there, read back.
    async fn disassociate_from(&self, allocation: &str, eni: &str) -> Result<String, CloudError> {
        let deadline = Instant::now() + READ_BACK;
        let mut asked = false;
        loop {
            let out = self
                .client
                .describe_addresses()
                .allocation_ids(allocation)
                .send()
                .await
                .map_err(|e| classify(OP, "ec2:DescribeAddresses", elastic_field(allocation), e))?;
            let a = out
                .addresses()
                .first()
                .ok_or_else(|| api(format!("Elastic IP {allocation} not found")))?;
            if a.network_interface_id() != Some(eni) {
                return Ok(if asked {
                    format!("Elastic IP {allocation} taken off {eni}")
                } else {
                    format!("Elastic IP {allocation} not on {eni}")
                });
            }
            if Instant::now() >= deadline {
                return Err(api(format!(
                    "Elastic IP {allocation} disassociated from {eni}, but still read back on it after {}s",
                    READ_BACK.as_secs()
                )));
            }
            if !asked {
                let association = a.association_id().ok_or_else(|| {
                    api(format!(
                        "Elastic IP {allocation} on {eni} without an association id"
                    ))
                })?;
                self.client
                    .disassociate_address()
                    .association_id(association)
                    .send()
                    .await
                    .map_err(|e| classify(OP, "ec2:DisassociateAddress", |_| None, e))?;
                asked = true;
                continue;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// `ip` unassigned from `eni`; one no longer assigned there (EC2 moved it meanwhile) is
    /// done.
    async fn unassign(&self, eni: &str, ip: &str) -> Result<(), CloudError> {
        match self
            .client
            .unassign_private_ip_addresses()
            .network_interface_id(eni)
            .private_ip_addresses(ip)
            .send()
            .await
            .map_err(|e| classify(OP, "ec2:UnassignPrivateIpAddresses", |_| None, e))
        {
            Err(CloudError::Api { code, message, .. })
                if code == "InvalidParameterValue" && message.contains("not assigned") =>
            {
                Ok(())
            }
            other => other.map(|_| ()),
        }
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

    /// The Elastic IP's public address, once read back on `eni` (until `deadline`), and the
    /// private address it maps to there if that is not `ip`.
    async fn elastic_on(
        &self,
        allocation: &str,
        eni: &str,
        ip: &str,
        deadline: Instant,
    ) -> Result<String, CloudError> {
        loop {
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
            if a.network_interface_id() == Some(eni) {
                let public = a.public_ip().unwrap_or("?");
                // (An emulator may map it to the interface's primary address instead: said.)
                return Ok(match a.private_ip_address() {
                    Some(at) if at != ip => format!("{public}, mapped to {at}"),
                    _ => public.to_owned(),
                });
            }
            if Instant::now() >= deadline {
                return Err(api(format!(
                    "Elastic IP {allocation} associated with {eni}, but read back on {}",
                    a.network_interface_id().unwrap_or("no interface"),
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn holds(n: &NetworkInterface, ip: &str) -> bool {
    n.private_ip_addresses()
        .iter()
        .any(|a| a.private_ip_address() == Some(ip))
}

/// An unknown allocation, named with its topology field.
fn elastic_field(allocation: &str) -> impl Fn(&str) -> Option<(String, String)> + '_ {
    move |code: &str| {
        code.starts_with("InvalidAllocationID").then(|| {
            (
                format!("Elastic IP {allocation}"),
                "services[].address.elastic_ip".to_owned(),
            )
        })
    }
}
