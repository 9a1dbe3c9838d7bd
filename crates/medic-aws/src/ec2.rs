//! EC2 as a medic cloud.

use std::collections::BTreeMap;
use std::net::IpAddr;

use aws_sdk_ec2::types::{
    Filter, HttpTokensState, IamInstanceProfileSpecification, InstanceMetadataOptionsRequest,
    InstanceType, ResourceType, Tag, TagSpecification,
};
use medic_cloud::{
    Cloud, CloudError, Instance, InstanceState, LaunchSpec, Launched, TAG_RECOVERY, TAG_STEP,
    TAG_TOPOLOGY, TerminateOutcome,
};

use crate::{AwsSettings, classify, load_config};

/// EC2 in one region.
#[derive(Debug, Clone)]
pub struct Ec2 {
    pub(crate) client: aws_sdk_ec2::Client,
    /// cloud-init user data for launched instances (sent base64-encoded).
    pub user_data: Option<String>,
}

/// Instance states that still count as a machine.
const ALIVE: [&str; 4] = ["pending", "running", "stopping", "stopped"];

impl Ec2 {
    pub async fn new(settings: &AwsSettings) -> Self {
        Ec2 {
            client: aws_sdk_ec2::Client::new(&load_config(settings).await),
            user_data: None,
        }
    }

    async fn describe_filtered(
        &self,
        op: &'static str,
        filters: Vec<Filter>,
        ids: Vec<String>,
    ) -> Result<Vec<Instance>, CloudError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .describe_instances()
            .set_filters(if filters.is_empty() {
                None
            } else {
                Some(filters)
            })
            .set_instance_ids(if ids.is_empty() { None } else { Some(ids) })
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify(op, "ec2:DescribeInstances", |_| None, e))?;
            for r in page.reservations() {
                out.extend(r.instances().iter().map(instance));
            }
        }
        Ok(out)
    }
}

fn instance(i: &aws_sdk_ec2::types::Instance) -> Instance {
    Instance {
        id: i.instance_id().unwrap_or_default().to_owned(),
        state: InstanceState::parse(
            i.state()
                .and_then(|s| s.name())
                .map(|n| n.as_str())
                .unwrap_or("unknown"),
        ),
        address: i
            .private_ip_address()
            .and_then(|a| a.parse::<IpAddr>().ok()),
        instance_type: i.instance_type().map(|t| t.as_str().to_owned()),
        tags: i
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
            .collect(),
    }
}

fn tag_filter(key: &str, value: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{key}"))
        .values(value)
        .build()
}

fn alive_filter() -> Filter {
    Filter::builder()
        .name("instance-state-name")
        .set_values(Some(ALIVE.iter().map(|s| (*s).to_owned()).collect()))
        .build()
}

/// The host keys cloud-init prints to the console between its markers.
pub fn parse_console_host_keys(console: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut inside = false;
    for line in console.lines() {
        let line = line.trim();
        if line.contains("BEGIN SSH HOST KEY KEYS") {
            inside = true;
        } else if line.contains("END SSH HOST KEY KEYS") {
            inside = false;
        } else if inside {
            let mut parts = line.split_whitespace();
            if let (Some(kind), Some(b64)) = (parts.next(), parts.next())
                && (kind.starts_with("ssh-") || kind.starts_with("ecdsa-"))
            {
                keys.push(format!("{kind} {b64}"));
            }
        }
    }
    keys
}

/// Where in the topology a resource RunInstances refused comes from.
fn launch_field(spec: &LaunchSpec) -> impl Fn(&str) -> Option<(String, String)> + '_ {
    move |code: &str| {
        let id = |o: &Option<String>| o.clone().unwrap_or_default();
        match code {
            "InvalidAMIID.NotFound" | "InvalidAMIID.Malformed" | "InvalidAMIID.Unavailable" => {
                Some((
                    format!("AMI {}", id(&spec.image_id)),
                    format!("amis[name = {}].image_ids", spec.ami),
                ))
            }
            "InvalidSubnetID.NotFound" | "InvalidSubnetID.Malformed" | "InvalidSubnet" => Some((
                format!("subnet {}", id(&spec.subnet)),
                format!(
                    "machines[name = {}].subnet or provider.aws.subnets",
                    spec.machine
                ),
            )),
            "InvalidGroup.NotFound" | "InvalidGroupId.Malformed" => Some((
                format!("security group among {:?}", spec.security_groups),
                "provider.aws.security_groups".into(),
            )),
            "InvalidKeyPair.NotFound" => Some((
                format!("key pair {}", id(&spec.key_pair)),
                "provider.aws.key_pair".into(),
            )),
            "InvalidParameterValue" if spec.instance_profile.is_some() => None,
            _ => None,
        }
    }
}

impl Cloud for Ec2 {
    async fn launch(&self, spec: &LaunchSpec) -> Result<Launched, CloudError> {
        // A controller that crashed after RunInstances finds its instance here.
        let recovery = spec.tags.get(TAG_RECOVERY).cloned().unwrap_or_default();
        let step = spec.tags.get(TAG_STEP).cloned().unwrap_or_default();
        let topology = spec.tags.get(TAG_TOPOLOGY).cloned().unwrap_or_default();
        let mine = vec![
            tag_filter(TAG_TOPOLOGY, &topology),
            tag_filter(TAG_RECOVERY, &recovery),
            tag_filter(TAG_STEP, &step),
            alive_filter(),
        ];
        if let Some(found) = self
            .describe_filtered("launch", mine, Vec::new())
            .await?
            .into_iter()
            .next()
        {
            tracing::info!(machine = %spec.machine, instance = %found.id, recovery = %recovery, step = %step, "Found the instance this step already launched.");
            return Ok(Launched {
                instance: found,
                reused: true,
                spare: false,
            });
        }
        let image = spec.image_id.clone().ok_or_else(|| CloudError::Invalid {
            op: "launch",
            message: format!(
                "AMI `{}` has no image id for this region (amis[].image_ids)",
                spec.ami
            ),
        })?;
        if spec.instance_types.is_empty() {
            return Err(CloudError::Invalid {
                op: "launch",
                message: format!("machine {} has no instance_type", spec.machine),
            });
        }
        let tags: Vec<Tag> = spec
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let mut last_capacity = String::new();
        for (i, itype) in spec.instance_types.iter().enumerate() {
            // A fallback is another request: it gets its own token, or EC2 would answer
            // IdempotentParameterMismatch for the same token with another instance type.
            let token = if i == 0 {
                spec.client_token.clone()
            } else {
                let mut t = spec.client_token.clone();
                t.truncate(60);
                format!("{t}-f{i}")
            };
            let mut req = self
                .client
                .run_instances()
                .image_id(&image)
                .instance_type(InstanceType::from(itype.as_str()))
                .min_count(1)
                .max_count(1)
                .set_subnet_id(spec.subnet.clone())
                .set_security_group_ids(if spec.security_groups.is_empty() {
                    None
                } else {
                    Some(spec.security_groups.clone())
                })
                .set_key_name(spec.key_pair.clone())
                .metadata_options(
                    InstanceMetadataOptionsRequest::builder()
                        .http_tokens(HttpTokensState::Required)
                        .build(),
                )
                .client_token(token)
                .tag_specifications(
                    TagSpecification::builder()
                        .resource_type(ResourceType::Instance)
                        .set_tags(Some(tags.clone()))
                        .build(),
                );
            if let Some(p) = &spec.instance_profile {
                req = req.iam_instance_profile(
                    IamInstanceProfileSpecification::builder().name(p).build(),
                );
            }
            if let Some(ud) = &self.user_data {
                req = req.user_data(aws_smithy_types::base64::encode(ud.as_bytes()));
            }
            match req.send().await {
                Ok(out) => {
                    let first =
                        out.instances()
                            .first()
                            .map(instance)
                            .ok_or_else(|| CloudError::Api {
                                op: "launch",
                                code: "NoInstance".into(),
                                message: "RunInstances returned no instance".into(),
                            })?;
                    tracing::info!(machine = %spec.machine, instance = %first.id, instance_type = %itype, "Launched.");
                    return Ok(Launched {
                        instance: first,
                        reused: false,
                        spare: false,
                    });
                }
                Err(e) => match classify("launch", "ec2:RunInstances", launch_field(spec), e) {
                    CloudError::NoCapacity { message, .. } => {
                        tracing::warn!(machine = %spec.machine, instance_type = %itype, "No capacity; trying the next instance type.");
                        last_capacity = message;
                    }
                    other => return Err(other),
                },
            }
        }
        Err(CloudError::NoCapacity {
            op: "launch",
            tried: spec.instance_types.clone(),
            message: last_capacity,
        })
    }

    async fn describe(&self, id: &str) -> Result<Option<Instance>, CloudError> {
        match self
            .describe_filtered("describe", Vec::new(), vec![id.to_owned()])
            .await
        {
            Ok(v) => Ok(v.into_iter().next()),
            Err(CloudError::Api { code, .. }) if code.starts_with("InvalidInstanceID") => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn find(&self, tags: &BTreeMap<String, String>) -> Result<Vec<Instance>, CloudError> {
        let mut filters: Vec<Filter> = tags.iter().map(|(k, v)| tag_filter(k, v)).collect();
        filters.push(alive_filter());
        self.describe_filtered("find", filters, Vec::new()).await
    }

    async fn terminate(&self, id: &str) -> Result<TerminateOutcome, CloudError> {
        match self.describe(id).await? {
            None => return Ok(TerminateOutcome::AlreadyGone),
            Some(i) if i.state == InstanceState::Terminated => {
                return Ok(TerminateOutcome::AlreadyGone);
            }
            Some(_) => {}
        }
        match self
            .client
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await
        {
            Ok(_) => Ok(TerminateOutcome::Terminated),
            Err(e) => match classify("terminate", "ec2:TerminateInstances", |_| None, e) {
                CloudError::Api { code, .. } if code.starts_with("InvalidInstanceID") => {
                    Ok(TerminateOutcome::AlreadyGone)
                }
                other => Err(other),
            },
        }
    }

    async fn host_keys(&self, id: &str) -> Result<Vec<String>, CloudError> {
        let out = self
            .client
            .get_console_output()
            .instance_id(id)
            .send()
            .await
            .map_err(|e| classify("host keys", "ec2:GetConsoleOutput", |_| None, e))?;
        let text = out
            .output()
            .and_then(|b| aws_smithy_types::base64::decode(b).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Ok(parse_console_host_keys(&text))
    }

    async fn retag(
        &self,
        id: &str,
        set: &BTreeMap<String, String>,
        remove: &[&str],
    ) -> Result<(), CloudError> {
        self.retag_instance(id, set, remove).await
    }

    async fn stop(&self, id: &str) -> Result<(), CloudError> {
        self.stop_instance(id).await
    }

    async fn start(&self, id: &str) -> Result<(), CloudError> {
        self.start_instance(id).await
    }

    async fn move_address(
        &self,
        id: &str,
        ip: std::net::Ipv4Addr,
        elastic: Option<&str>,
    ) -> Result<String, CloudError> {
        self.move_address_to(id, ip, elastic).await
    }

    async fn release_address(
        &self,
        id: &str,
        ip: std::net::Ipv4Addr,
        elastic: Option<&str>,
    ) -> Result<String, CloudError> {
        self.release_address_from(id, ip, elastic).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_from_cloud_init_console_output() {
        let console = "[  5.1] cloud-init[612]: ci-info: ...\n-----BEGIN SSH HOST KEY KEYS-----\necdsa-sha2-nistp256 AAAAE2Vj root@ip-10-0-1-5\nssh-ed25519 AAAAC3Nz root@ip-10-0-1-5\n-----END SSH HOST KEY KEYS-----\nlogin:";
        assert_eq!(
            parse_console_host_keys(console),
            ["ecdsa-sha2-nistp256 AAAAE2Vj", "ssh-ed25519 AAAAC3Nz"]
        );
        assert!(parse_console_host_keys("nothing here").is_empty());
    }
}
