//! `medic import monit`: the files read, the draft and its report written.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};

pub(super) fn monit(
    monitrc: &Path,
    hosts: Option<&Path>,
    name: Option<String>,
    playbooks: String,
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(monitrc)
        .with_context(|| format!("reading the monit control file {}", monitrc.display()))?;
    let rc = medic_import::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}:{}: {}", monitrc.display(), e.line, e.message))?;
    if rc.checks.is_empty() {
        let includes: Vec<&str> = rc
            .settings
            .iter()
            .map(|(_, t)| t.as_str())
            .filter(|t| t.starts_with("include"))
            .collect();
        if includes.is_empty() {
            bail!(
                "{}: no `check` statement: expected a monit control file (check host NAME with address A ...)",
                monitrc.display()
            );
        }
        bail!(
            "{}: no `check` statement here, and includes are not followed ({}): import the files with the checks",
            monitrc.display(),
            includes.join("; ")
        );
    }
    let hosts = match hosts {
        Some(h) => medic_import::parse_hosts(
            &std::fs::read_to_string(h)
                .with_context(|| format!("reading the hosts file {}", h.display()))?,
        ),
        None => Default::default(),
    };
    let source = monitrc.display().to_string();
    let draft = medic_import::draft(
        &rc,
        &hosts,
        &medic_import::Options {
            source: source.clone(),
            name,
            playbooks,
        },
    );
    match out {
        Some(path) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .with_context(|| {
                    format!("writing the draft {} (it must not exist)", path.display())
                })?;
            f.write_all(draft.yaml.as_bytes())
                .with_context(|| format!("writing the draft {}", path.display()))?;
        }
        None => print!("{}", draft.yaml),
    }
    eprint!("{}", draft.report(&source));
    Ok(ExitCode::SUCCESS)
}
