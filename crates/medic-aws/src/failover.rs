//! Route 53 failover routing for a service's name: a PRIMARY and a SECONDARY record set, each
//! with a Route 53 health check of its address, so that Route 53 answers the secondary while
//! the primary fails even if no controller runs (seed 000's setup). medic keeps them in step
//! with its roles: after a failover or a switchover the sets are UPSERTed with the new
//! addresses, a check is created for an address that has none (found again by its caller
//! reference, so a step run twice creates nothing twice) and the checks of addresses no longer
//! used are deleted.

use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, HealthCheckConfig, HealthCheckType, ResourceRecord,
    ResourceRecordSet, ResourceRecordSetFailover, RrType,
};
use medic_cloud::{ChangeId, CloudError, FailoverSet};

use crate::classify;
use crate::route53::{Route53, build_err, fqdn, zone_field};

/// How often Route 53 checks, and how many failures in a row mark an address unhealthy.
const REQUEST_INTERVAL_SECS: i32 = 10;
const FAILURE_THRESHOLD: i32 = 2;

/// A check's caller reference: its owner, address and port, and `https` for an HTTPS check
/// (Route 53 allows 64 characters). A check's type cannot be updated: a service whose check
/// becomes HTTPS gets new checks, and the old ones are deleted as no longer used.
fn reference(set: &FailoverSet) -> String {
    let (owner, rest) = reference_parts(set);
    format!("{owner}{rest}")
}

/// A reference's owner part (cut so that the whole fits) and the rest: the address, the port
/// and the kind, which always stay whole.
fn reference_parts(set: &FailoverSet) -> (String, String) {
    let h = &set.health;
    let tls = if h.https { ":https" } else { "" };
    let rest = format!(":{}:{}{tls}", set.value, h.port);
    let owner = h
        .owner
        .chars()
        .take(64usize.saturating_sub(rest.len()))
        .collect();
    (owner, rest)
}

impl Route53 {
    /// Every health check: (id, caller reference).
    async fn health_checks(&self) -> Result<Vec<(String, String)>, CloudError> {
        let mut all = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .client
                .list_health_checks()
                .set_marker(marker.clone())
                .send()
                .await
                .map_err(|e| classify("health checks", "route53:ListHealthChecks", |_| None, e))?;
            all.extend(
                out.health_checks()
                    .iter()
                    .map(|h| (h.id().to_owned(), h.caller_reference().to_owned())),
            );
            match out.next_marker() {
                Some(m) if out.is_truncated() && Some(m) != marker.as_deref() => {
                    marker = Some(m.to_owned());
                }
                _ => return Ok(all),
            }
        }
    }

    async fn create_health_check(&self, set: &FailoverSet) -> Result<String, CloudError> {
        let h = &set.health;
        let config = HealthCheckConfig::builder()
            .r#type(match (&h.http_path, h.https) {
                (Some(_), true) => HealthCheckType::Https,
                (Some(_), false) => HealthCheckType::Http,
                (None, _) => HealthCheckType::Tcp,
            })
            // Route 53 connects to the address and sends the name as SNI and `Host`. (It does
            // not verify the certificate: medic's own check does.)
            .set_enable_sni(h.https.then_some(h.server_name.is_some()))
            .set_fully_qualified_domain_name(h.server_name.clone().filter(|_| h.https))
            .ip_address(set.value.to_string())
            .port(i32::from(h.port))
            .set_resource_path(h.http_path.clone())
            .request_interval(REQUEST_INTERVAL_SECS)
            .failure_threshold(FAILURE_THRESHOLD)
            .build()
            .map_err(|e| build_err("health check", e))?;
        let out = self
            .client
            .create_health_check()
            .caller_reference(reference(set))
            .health_check_config(config)
            .send()
            .await
            .map_err(|e| classify("health check", "route53:CreateHealthCheck", |_| None, e))?;
        let id = out
            .health_check()
            .map(|c| c.id().to_owned())
            .ok_or_else(|| CloudError::Invalid {
                op: "health check",
                message: "CreateHealthCheck answered without a health check".into(),
            })?;
        tracing::info!(address = %set.value, id = %id, "Route 53 health check created.");
        Ok(id)
    }

    pub(crate) async fn failover(
        &self,
        name: &str,
        ttl: u32,
        sets: &[FailoverSet],
    ) -> Result<ChangeId, CloudError> {
        let existing = self.health_checks().await?;
        let mut changes = Vec::new();
        let mut used = Vec::new();
        for set in sets {
            let want = reference(set);
            let id = match existing.iter().find(|(_, r)| *r == want) {
                Some((id, _)) => id.clone(),
                None => self.create_health_check(set).await?,
            };
            let (failover, role) = if set.primary {
                (ResourceRecordSetFailover::Primary, "primary")
            } else {
                (ResourceRecordSetFailover::Secondary, "secondary")
            };
            let record = ResourceRecordSet::builder()
                .name(fqdn(name))
                .r#type(RrType::A)
                .set_identifier(format!("{}:{role}", set.health.owner))
                .failover(failover)
                .ttl(i64::from(ttl))
                .health_check_id(&id)
                .resource_records(
                    ResourceRecord::builder()
                        .value(set.value.to_string())
                        .build()
                        .map_err(|e| build_err("upsert", e))?,
                )
                .build()
                .map_err(|e| build_err("upsert", e))?;
            changes.push(
                Change::builder()
                    .action(ChangeAction::Upsert)
                    .resource_record_set(record)
                    .build()
                    .map_err(|e| build_err("upsert", e))?,
            );
            used.push(id);
        }
        let batch = ChangeBatch::builder()
            .comment(format!("medic: {name} (failover)"))
            .set_changes(Some(changes))
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
        let change = out
            .change_info()
            .map(|c| c.id().to_owned())
            .unwrap_or_default();
        tracing::info!(record = %name, change = %change, "Failover record sets upserted.");
        // The checks of addresses this service no longer uses. Best effort: one still in use
        // while the change propagates is deleted by the next change.
        let owners: Vec<String> = sets
            .iter()
            .map(|s| format!("{}:", reference_parts(s).0))
            .collect();
        for (id, r) in &existing {
            if owners.iter().any(|o| r.starts_with(o.as_str())) && !used.contains(id) {
                match self
                    .client
                    .delete_health_check()
                    .health_check_id(id)
                    .send()
                    .await
                {
                    Ok(_) => tracing::info!(id = %id, "Route 53 health check deleted."),
                    Err(e) => {
                        tracing::warn!(id = %id, error = %e, "A health check no longer used could not be deleted yet.")
                    }
                }
            }
        }
        Ok(ChangeId(change))
    }
}
