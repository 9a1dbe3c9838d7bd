//! EC2 and Route 53 for medic, on the official AWS SDK for Rust.
//!
//! [`Ec2`] implements [`Cloud`] and [`Route53`] implements [`Dns`]. This is the only crate that
//! compiles the SDK (it is heavy: keep it out of every other crate's way).
//!
//! # Credentials and endpoints
//! Credentials and region come from the standard AWS chain (environment, profile, instance
//! role); nothing secret is in the topology or in logs. An endpoint override (an emulator, a
//! VPC endpoint) comes from the topology or `AWS_ENDPOINT_URL`.
//!
//! # Errors
//! Throttling is retried by the SDK (standard retry mode: exponential backoff with jitter,
//! [`MAX_ATTEMPTS`] attempts) and then reported. `UnauthorizedOperation` names the IAM action
//! the credentials lack; an unknown AMI, subnet, security group, key pair or hosted zone names
//! the topology field that holds it.

mod address;
pub mod check;
mod ec2;
mod failover;
mod lifecycle;
mod route53;

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls;

pub use ec2::{Ec2, parse_console_host_keys};
pub use medic_cloud::{Cloud, CloudError, Dns};
pub use route53::Route53;

/// Attempts per API call, throttling included, before the error is reported.
pub const MAX_ATTEMPTS: u32 = 5;

/// How to reach AWS.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    pub region: String,
    /// An endpoint override; without it `AWS_ENDPOINT_URL` or the public endpoints.
    pub endpoint: Option<String>,
    /// Static credentials, for emulators in tests only. `None`: the standard chain.
    pub static_credentials: Option<(String, String)>,
}

/// Loads the SDK configuration: one rustls (ring) HTTPS stack, standard retries.
pub async fn load_config(s: &AwsSettings) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let retry = RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(Duration::from_millis(200))
        .with_max_backoff(Duration::from_secs(5));
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(s.region.clone()))
        .http_client(http)
        .retry_config(retry);
    if let Some(url) = &s.endpoint {
        loader = loader.endpoint_url(url);
    }
    if let Some((id, secret)) = &s.static_credentials {
        loader = loader.credentials_provider(aws_credential_types::Credentials::new(
            id, secret, None, None, "static",
        ));
    }
    loader.load().await
}

/// Turns an SDK error into a `CloudError` a user can act on.
pub(crate) fn classify<E, R>(
    op: &'static str,
    action: &str,
    field_of: impl Fn(&str) -> Option<(String, String)>,
    err: aws_sdk_ec2::error::SdkError<E, R>,
) -> CloudError
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
    let code = err.code().unwrap_or_default().to_owned();
    let message = err
        .message()
        .map(str::to_owned)
        .unwrap_or_else(|| chain(&err));
    match &err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            return CloudError::Transport {
                op,
                message: chain(&err),
            };
        }
        SdkError::ConstructionFailure(_) => {
            return CloudError::Invalid {
                op,
                message: chain(&err),
            };
        }
        _ => {}
    }
    match code.as_str() {
        "RequestLimitExceeded"
        | "Throttling"
        | "ThrottlingException"
        | "PriorRequestNotComplete" => CloudError::Throttled {
            op,
            attempts: MAX_ATTEMPTS,
            message,
        },
        "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException" => {
            CloudError::Unauthorized {
                op,
                action: action.to_owned(),
                message,
            }
        }
        "InsufficientInstanceCapacity" => CloudError::NoCapacity {
            op,
            tried: Vec::new(),
            message,
        },
        c => match field_of(c) {
            Some((what, field)) => CloudError::NotFound {
                op,
                what,
                field,
                message,
            },
            None => CloudError::Api { op, code, message },
        },
    }
}

/// An error and its sources, each said once: `dispatch failure: io error: ... refused`.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = e.source();
    }
    parts.join(": ")
}
