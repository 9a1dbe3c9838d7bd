//! `medic aws check`: every AWS resource the topology names, looked up (with cargo's `aws`
//! feature; without it, a clear refusal).

use std::path::Path;
use std::process::ExitCode;

#[cfg(feature = "aws")]
use std::io::{self, Write};

use super::Format;
#[cfg(feature = "aws")]
use super::load;

#[cfg(not(feature = "aws"))]
pub(super) fn aws_check(_: &Path, _: Option<String>, _: Format) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "`medic aws check` needs the AWS SDK, and this medic was built without it (cargo's `aws` feature, on by default)"
    )
}

#[cfg(feature = "aws")]
pub(super) fn aws_check(
    file: &Path,
    endpoint: Option<String>,
    format: Format,
) -> anyhow::Result<ExitCode> {
    use medic_aws::check::{Status, check_topology};
    let Some(dep) = load(file, format)? else {
        return Ok(ExitCode::from(1));
    };
    let top = &dep.loaded.topology;
    let medic_topology::Provider::Aws(aws) = &top.provider.value else {
        anyhow::bail!(
            "{}: the provider is {}, not aws: nothing to check",
            file.display(),
            top.provider.value.kind()
        );
    };
    let settings = medic_aws::AwsSettings {
        region: aws.region.clone(),
        endpoint: endpoint.or_else(|| aws.endpoint.clone()),
        static_credentials: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let findings = rt.block_on(check_topology(top, &settings));
    let bad = findings
        .iter()
        .filter(|f| f.status != Status::Found)
        .count();
    let unchecked = findings
        .iter()
        .filter(|f| matches!(f.status, Status::Error { .. }))
        .count();
    let mut out = io::stdout().lock();
    match format {
        Format::Json => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "findings": findings }))?
        )?,
        Format::Text => {
            let w = findings.iter().map(|f| f.what.len()).max().unwrap_or(0);
            for f in &findings {
                let (label, detail) = match &f.status {
                    Status::Found => ("ok", String::new()),
                    Status::Missing { detail } => ("MISSING", format!(": {detail}")),
                    Status::Error { detail } => ("ERROR", format!(": {detail}")),
                };
                writeln!(out, "{label:<8} {:<w$}  {}{detail}", f.what, f.field)?;
            }
            writeln!(
                out,
                "{}: {} checked, {}",
                file.display(),
                findings.len(),
                match (bad, unchecked) {
                    (0, _) => "all found".to_owned(),
                    (b, 0) => format!("{b} missing or not visible"),
                    (b, u) if b == u => format!("{u} could not be checked"),
                    (b, u) => format!("{} missing or not visible, {u} could not be checked", b - u),
                }
            )?;
        }
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
