//! `medic aws check`: does everything the topology names exist, and may these credentials see
//! it? Read-only: Describe* and Get* calls only.

use serde::Serialize;

use medic_topology::{DnsProvider, Provider, Topology};

use crate::{AwsSettings, classify, load_config};

/// One thing checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What it is: `AMI ami-0123...`.
    pub what: String,
    /// Where the topology names it.
    pub field: String,
    pub status: Status,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    Found,
    Missing {
        detail: String,
    },
    /// The check itself failed (permissions, network): what it said.
    Error {
        detail: String,
    },
}

fn finding(what: String, field: String, r: Result<bool, medic_cloud::CloudError>) -> Finding {
    let status = match r {
        Ok(true) => Status::Found,
        Ok(false) => Status::Missing {
            detail: "not found".into(),
        },
        Err(medic_cloud::CloudError::NotFound { message, .. }) => {
            Status::Missing { detail: message }
        }
        Err(e) => Status::Error {
            detail: e.to_string(),
        },
    };
    Finding {
        what,
        field,
        status,
    }
}

/// Any `*.NotFound` / `*.Malformed` / `NoSuch*` code means "it does not exist".
fn missing(code: &str) -> Option<(String, String)> {
    (code.ends_with(".NotFound") || code.ends_with(".Malformed") || code.starts_with("NoSuch"))
        .then(|| (String::new(), String::new()))
}

/// Checks every AMI, subnet, security group, the key pair, the services' Elastic IPs and the
/// hosted zone of `top`.
pub async fn check_topology(top: &Topology, settings: &AwsSettings) -> Vec<Finding> {
    let Provider::Aws(aws) = &top.provider.value else {
        return Vec::new();
    };
    let ec2 = aws_sdk_ec2::Client::new(&load_config(settings).await);
    let mut out = Vec::new();

    for ami in &top.amis {
        let ami = &ami.value;
        let Some(id) = ami.image_ids.get(&aws.region) else {
            continue;
        };
        let r = ec2
            .describe_images()
            .image_ids(&id.value)
            .send()
            .await
            .map(|o| !o.images().is_empty())
            .map_err(|e| classify("check AMI", "ec2:DescribeImages", missing, e));
        out.push(finding(
            format!("AMI {}", id.value),
            format!("amis[{}].image_ids.{}", ami.name.value, aws.region),
            r,
        ));
    }
    let mut subnets: Vec<(String, String)> = aws
        .subnets
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), format!("provider.aws.subnets[{i}]")))
        .collect();
    for m in &top.machines {
        if let Some(s) = &m.value.subnet {
            subnets.push((
                s.value.clone(),
                format!("machines[{}].subnet", m.value.name.value),
            ));
        }
    }
    for (id, field) in subnets {
        let r = ec2
            .describe_subnets()
            .subnet_ids(&id)
            .send()
            .await
            .map(|o| !o.subnets().is_empty())
            .map_err(|e| classify("check subnet", "ec2:DescribeSubnets", missing, e));
        out.push(finding(format!("subnet {id}"), field, r));
    }
    for (i, id) in aws.security_groups.iter().enumerate() {
        let r = ec2
            .describe_security_groups()
            .group_ids(id)
            .send()
            .await
            .map(|o| !o.security_groups().is_empty())
            .map_err(|e| {
                classify(
                    "check security group",
                    "ec2:DescribeSecurityGroups",
                    missing,
                    e,
                )
            });
        out.push(finding(
            format!("security group {id}"),
            format!("provider.aws.security_groups[{i}]"),
            r,
        ));
    }
    let r = ec2
        .describe_key_pairs()
        .key_names(&aws.key_pair)
        .send()
        .await
        .map(|o| !o.key_pairs().is_empty())
        .map_err(|e| classify("check key pair", "ec2:DescribeKeyPairs", missing, e));
    out.push(finding(
        format!("key pair {}", aws.key_pair),
        "provider.aws.key_pair".into(),
        r,
    ));

    for (i, s) in top.services.iter().enumerate() {
        let Some(allocation) = s
            .value
            .address
            .as_ref()
            .and_then(|a| a.value.elastic_ip.as_ref())
        else {
            continue;
        };
        let r = ec2
            .describe_addresses()
            .allocation_ids(allocation)
            .send()
            .await
            .map(|o| !o.addresses().is_empty())
            .map_err(|e| classify("check Elastic IP", "ec2:DescribeAddresses", missing, e));
        out.push(finding(
            format!("Elastic IP {allocation}"),
            format!("services[{i}].address.elastic_ip"),
            r,
        ));
    }

    if let Some(dns) = &top.dns
        && let DnsProvider::Route53(r53) = &dns.value.provider.value
    {
        let global = AwsSettings {
            region: "us-east-1".into(),
            ..settings.clone()
        };
        let client = aws_sdk_route53::Client::new(&load_config(&global).await);
        let r = client
            .get_hosted_zone()
            .id(&r53.zone_id)
            .send()
            .await
            .map(|o| o.hosted_zone().is_some())
            .map_err(|e| classify("check hosted zone", "route53:GetHostedZone", missing, e));
        out.push(finding(
            format!("hosted zone {}", r53.zone_id),
            "dns.provider.route53.zone_id".into(),
            r,
        ));
    }
    out
}
