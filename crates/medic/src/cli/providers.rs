//! The machine and DNS providers `medic run` (and `medic replace`) drive, chosen by the
//! topology: the lab, EC2 (with cargo's `aws` feature), static machines; RFC 2136 or Route 53.

use std::collections::BTreeMap;

#[cfg(not(feature = "aws"))]
use anyhow::bail;

use medic_cloud::{
    ChangeId, Cloud, CloudError, Dns, Instance, LaunchSpec, Launched, RecordSet, TerminateOutcome,
};
use medic_topology::{DnsProvider, LoadedTopology, Provider};

/// The machine providers `medic run` drives.
#[derive(Debug)]
pub(super) enum AnyCloud {
    Lab(Box<medic_lab::Lab>),
    #[cfg(feature = "aws")]
    Aws(Box<medic_aws::Ec2>),
    /// Machines that exist on their own: nothing is launched or terminated.
    Static,
}

fn static_refuses(op: &'static str) -> CloudError {
    CloudError::Invalid {
        op,
        message: "the static provider launches and terminates nothing".into(),
    }
}

impl Cloud for AnyCloud {
    async fn launch(&self, spec: &LaunchSpec) -> Result<Launched, CloudError> {
        match self {
            AnyCloud::Lab(c) => c.launch(spec).await,
            #[cfg(feature = "aws")]
            AnyCloud::Aws(c) => c.launch(spec).await,
            AnyCloud::Static => Err(static_refuses("launch")),
        }
    }
    async fn describe(&self, id: &str) -> Result<Option<Instance>, CloudError> {
        match self {
            AnyCloud::Lab(c) => c.describe(id).await,
            #[cfg(feature = "aws")]
            AnyCloud::Aws(c) => c.describe(id).await,
            AnyCloud::Static => Ok(None),
        }
    }
    async fn find(&self, tags: &BTreeMap<String, String>) -> Result<Vec<Instance>, CloudError> {
        match self {
            AnyCloud::Lab(c) => c.find(tags).await,
            #[cfg(feature = "aws")]
            AnyCloud::Aws(c) => c.find(tags).await,
            AnyCloud::Static => Ok(Vec::new()),
        }
    }
    async fn retag(
        &self,
        id: &str,
        set: &BTreeMap<String, String>,
        remove: &[&str],
    ) -> Result<(), CloudError> {
        match self {
            AnyCloud::Lab(c) => c.retag(id, set, remove).await,
            #[cfg(feature = "aws")]
            AnyCloud::Aws(c) => c.retag(id, set, remove).await,
            AnyCloud::Static => Err(static_refuses("retag")),
        }
    }
    async fn stop(&self, id: &str) -> Result<(), CloudError> {
        match self {
            AnyCloud::Lab(c) => c.stop(id).await,
            #[cfg(feature = "aws")]
            AnyCloud::Aws(c) => c.stop(id).await,
            AnyCloud::Static => Err(static_refuses("stop")),
        }
    }
    async fn start(&self, id: &str) -> Result<(), CloudError> {
        match self {
            AnyCloud::Lab(c) => c.start(id).await,
            #[cfg(feature = "aws")]
            AnyCloud::Aws(c) => c.start(id).await,
            AnyCloud::Static => Err(static_refuses("start")),
        }
    }
    async fn terminate(&self, id: &str) -> Result<TerminateOutcome, CloudError> {
        match self {
            AnyCloud::Lab(c) => c.terminate(id).await,
            #[cfg(feature = "aws")]
            AnyCloud::Aws(c) => c.terminate(id).await,
            AnyCloud::Static => Err(static_refuses("terminate")),
        }
    }
    async fn host_keys(&self, id: &str) -> Result<Vec<String>, CloudError> {
        match self {
            AnyCloud::Lab(c) => c.host_keys(id).await,
            #[cfg(feature = "aws")]
            AnyCloud::Aws(c) => c.host_keys(id).await,
            AnyCloud::Static => Ok(Vec::new()),
        }
    }
    async fn move_address(
        &self,
        id: &str,
        ip: std::net::Ipv4Addr,
        elastic: Option<&str>,
    ) -> Result<String, CloudError> {
        match self {
            AnyCloud::Lab(c) => c.move_address(id, ip, elastic).await,
            #[cfg(feature = "aws")]
            AnyCloud::Aws(c) => c.move_address(id, ip, elastic).await,
            AnyCloud::Static => Err(static_refuses("move address")),
        }
    }
    async fn release_address(
        &self,
        id: &str,
        ip: std::net::Ipv4Addr,
        elastic: Option<&str>,
    ) -> Result<String, CloudError> {
        match self {
            AnyCloud::Lab(c) => c.release_address(id, ip, elastic).await,
            #[cfg(feature = "aws")]
            AnyCloud::Aws(c) => c.release_address(id, ip, elastic).await,
            AnyCloud::Static => Err(static_refuses("release address")),
        }
    }
}

/// The DNS providers `medic run` drives.
#[derive(Debug)]
pub(super) enum AnyDns {
    #[cfg(feature = "aws")]
    Route53(Box<medic_aws::Route53>),
    Rfc2136(Box<medic_rfc2136::Rfc2136>),
}

impl Dns for AnyDns {
    async fn upsert_failover(
        &self,
        name: &str,
        ttl: u32,
        sets: &[medic_cloud::FailoverSet],
    ) -> Result<ChangeId, CloudError> {
        match self {
            #[cfg(feature = "aws")]
            AnyDns::Route53(d) => d.upsert_failover(name, ttl, sets).await,
            AnyDns::Rfc2136(d) => d.upsert_failover(name, ttl, sets).await,
        }
    }
    async fn upsert(
        &self,
        name: &str,
        ttl: u32,
        values: &[std::net::IpAddr],
    ) -> Result<ChangeId, CloudError> {
        match self {
            #[cfg(feature = "aws")]
            AnyDns::Route53(d) => d.upsert(name, ttl, values).await,
            AnyDns::Rfc2136(d) => d.upsert(name, ttl, values).await,
        }
    }
    async fn in_sync(&self, change: &ChangeId) -> Result<bool, CloudError> {
        match self {
            #[cfg(feature = "aws")]
            AnyDns::Route53(d) => d.in_sync(change).await,
            AnyDns::Rfc2136(d) => d.in_sync(change).await,
        }
    }
    async fn read(&self, name: &str) -> Result<Option<RecordSet>, CloudError> {
        match self {
            #[cfg(feature = "aws")]
            AnyDns::Route53(d) => d.read(name).await,
            AnyDns::Rfc2136(d) => d.read(name).await,
        }
    }
}

pub(super) async fn providers(
    loaded: &LoadedTopology,
) -> anyhow::Result<(AnyCloud, Option<AnyDns>)> {
    let top = &loaded.topology;
    let cloud = match &top.provider.value {
        Provider::Local(_) => AnyCloud::Lab(Box::new(medic_lab::Lab::new(
            super::lab::from_topology(loaded)?,
        ))),
        #[cfg(not(feature = "aws"))]
        Provider::Aws(_) => bail!(without_aws(loaded, "provider: aws")),
        #[cfg(feature = "aws")]
        Provider::Aws(aws) => AnyCloud::Aws(Box::new(
            medic_aws::Ec2::new(&medic_aws::AwsSettings {
                region: aws.region.clone(),
                endpoint: aws.endpoint.clone(),
                static_credentials: None,
            })
            .await,
        )),
        Provider::Static => AnyCloud::Static,
    };
    let dns = match top.dns.as_ref().map(|d| &d.value.provider.value) {
        None => None,
        Some(DnsProvider::Rfc2136(r)) => {
            let secret = medic_rfc2136::read_secret(&r.tsig_secret_file)?;
            Some(AnyDns::Rfc2136(Box::new(medic_rfc2136::Rfc2136::new(
                r.server,
                &r.zone,
                &r.tsig_key,
                &r.tsig_algorithm,
                secret,
            )?)))
        }
        #[cfg(not(feature = "aws"))]
        Some(DnsProvider::Route53(_)) => bail!(without_aws(loaded, "dns.provider: route53")),
        #[cfg(feature = "aws")]
        Some(DnsProvider::Route53(r)) => {
            let (region, endpoint) = match &top.provider.value {
                Provider::Aws(a) => (a.region.clone(), a.endpoint.clone()),
                _ => ("us-east-1".to_owned(), None),
            };
            Some(AnyDns::Route53(Box::new(
                medic_aws::Route53::new(
                    &medic_aws::AwsSettings {
                        region,
                        endpoint,
                        static_credentials: None,
                    },
                    &r.zone_id,
                )
                .await,
            )))
        }
    };
    Ok((cloud, dns))
}

/// What a medic built without the `aws` feature says of a topology that needs it.
#[cfg(not(feature = "aws"))]
fn without_aws(loaded: &LoadedTopology, what: &str) -> String {
    format!(
        "{}: `{what}` needs the AWS SDK, and this medic was built without it \
         (cargo's `aws` feature, on by default)",
        loaded.path.display()
    )
}
