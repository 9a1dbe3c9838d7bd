//! Route 53 as a medic DNS.

use std::net::IpAddr;

use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord, ResourceRecordSet, RrType,
};
use medic_cloud::{ChangeId, CloudError, Dns, RecordSet, check_values};

use crate::{AwsSettings, classify, load_config};

/// One hosted zone.
#[derive(Debug, Clone)]
pub struct Route53 {
    pub(crate) client: aws_sdk_route53::Client,
    pub zone_id: String,
}

pub(crate) fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

pub(crate) fn zone_field(code: &str) -> Option<(String, String)> {
    (code == "NoSuchHostedZone").then(|| {
        (
            "hosted zone".to_owned(),
            "dns.provider.route53.zone_id".to_owned(),
        )
    })
}

pub(crate) fn build_err(op: &'static str, e: impl std::fmt::Display) -> CloudError {
    CloudError::Invalid {
        op,
        message: e.to_string(),
    }
}

impl Route53 {
    pub async fn new(settings: &AwsSettings, zone_id: &str) -> Self {
        // Route 53 is a global service: its API lives in us-east-1 whatever the region.
        let global = AwsSettings {
            region: "us-east-1".into(),
            ..settings.clone()
        };
        Route53 {
            client: aws_sdk_route53::Client::new(&load_config(&global).await),
            zone_id: zone_id.to_owned(),
        }
    }
}

impl Dns for Route53 {
    async fn upsert_failover(
        &self,
        name: &str,
        ttl: u32,
        sets: &[medic_cloud::FailoverSet],
    ) -> Result<ChangeId, CloudError> {
        self.failover(name, ttl, sets).await
    }

    async fn upsert(
        &self,
        name: &str,
        ttl: u32,
        values: &[IpAddr],
    ) -> Result<ChangeId, CloudError> {
        check_values(name, values)?;
        let records = values
            .iter()
            .map(|v| {
                ResourceRecord::builder()
                    .value(v.to_string())
                    .build()
                    .map_err(|e| build_err("upsert", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let set = ResourceRecordSet::builder()
            .name(fqdn(name))
            .r#type(RrType::A)
            .ttl(i64::from(ttl))
            .set_resource_records(Some(records))
            .build()
            .map_err(|e| build_err("upsert", e))?;
        let change = Change::builder()
            .action(ChangeAction::Upsert)
            .resource_record_set(set)
            .build()
            .map_err(|e| build_err("upsert", e))?;
        let batch = ChangeBatch::builder()
            .comment(format!("medic: {name}"))
            .changes(change)
            .build()
            .map_err(|e| build_err("upsert", e))?;
        let out = self
            .client
            .change_resource_record_sets()
            .hosted_zone_id(&self.zone_id)
            .change_batch(batch)
            .send()
            .await
            .map_err(|e| classify("upsert", "route53:ChangeResourceRecordSets", zone_field, e))?;
        let id = out
            .change_info()
            .map(|c| c.id().to_owned())
            .unwrap_or_default();
        tracing::info!(record = %name, change = %id, "DNS record upserted.");
        Ok(ChangeId(id))
    }

    async fn in_sync(&self, change: &ChangeId) -> Result<bool, CloudError> {
        let out = self
            .client
            .get_change()
            .id(change.0.trim_start_matches("/change/"))
            .send()
            .await
            .map_err(|e| classify("dns change", "route53:GetChange", |_| None, e))?;
        Ok(out
            .change_info()
            .is_some_and(|c| *c.status() == ChangeStatus::Insync))
    }

    async fn read(&self, name: &str) -> Result<Option<RecordSet>, CloudError> {
        let want = fqdn(name);
        let out = self
            .client
            .list_resource_record_sets()
            .hosted_zone_id(&self.zone_id)
            .start_record_name(&want)
            .start_record_type(RrType::A)
            .max_items(1)
            .send()
            .await
            .map_err(|e| classify("read", "route53:ListResourceRecordSets", zone_field, e))?;
        Ok(out
            .resource_record_sets()
            .iter()
            .find(|r| r.name().eq_ignore_ascii_case(&want) && *r.r#type() == RrType::A)
            .map(|r| RecordSet {
                name: name.trim_end_matches('.').to_owned(),
                ttl: r.ttl().and_then(|t| u32::try_from(t).ok()).unwrap_or(0),
                values: r
                    .resource_records()
                    .iter()
                    .filter_map(|v| v.value().parse().ok())
                    .collect(),
            }))
    }
}
