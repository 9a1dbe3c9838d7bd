//! Runs a playbook on a machine: its rendered steps in order, each skipped when it has nothing
//! to do, so a second run changes nothing.

use std::time::{Duration, Instant};

use medic_playbook::{Playbook, RenderError, RenderedAction};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{Host, Remote, SshError, shell_quote};

/// What a step did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum StepOutcome {
    /// The command ran and exited 0.
    Ran,
    /// The command's guard held (`creates` exists, `unless` succeeded): not run.
    Skipped { because: String },
    /// The file was written: it was missing or differed.
    Changed,
    /// The file already had this content and mode.
    Unchanged,
    /// The port accepted a connection.
    PortOpen,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepResult {
    pub name: String,
    #[serde(flatten)]
    pub outcome: StepOutcome,
    pub duration_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PlaybookError {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("{machine}: playbook {playbook}, step `{step}`")]
    Ssh {
        machine: String,
        playbook: String,
        step: String,
        #[source]
        source: SshError,
    },
    #[error("{machine}: playbook {playbook}, step `{step}` failed with exit {}: {stderr_tail}", exit.map_or("signal".to_owned(), |c| c.to_string()))]
    StepFailed {
        machine: String,
        playbook: String,
        step: String,
        exit: Option<i32>,
        stderr_tail: String,
    },
    #[error(
        "{machine}: playbook {playbook}, step `{step}`: {addr} did not accept connections within {after:?}"
    )]
    PortClosed {
        machine: String,
        playbook: String,
        step: String,
        addr: String,
        after: Duration,
    },
}

/// How long a guard (`creates`, `unless`, a file's digest) may take.
const GUARD_TIMEOUT: Duration = Duration::from_secs(30);

/// Renders `playbook` with `vars` and runs it on `host`. Stops at the first failing step.
///
/// `wait_for_port` steps connect from here (the controller), which also proves the controller
/// can reach the service.
pub async fn run_playbook<R: Remote>(
    remote: &R,
    host: &Host,
    playbook: &Playbook,
    vars: &serde_json::Value,
) -> Result<Vec<StepResult>, PlaybookError> {
    let steps = playbook.render(vars)?;
    let mut results = Vec::with_capacity(steps.len());
    for step in steps {
        let started = Instant::now();
        let ssh_err = |source| PlaybookError::Ssh {
            machine: host.name.clone(),
            playbook: playbook.name().to_owned(),
            step: step.name.clone(),
            source,
        };
        let outcome = match &step.action {
            RenderedAction::Command {
                command,
                creates,
                unless,
                timeout_ms,
            } => {
                let guard = match (creates, unless) {
                    (Some(path), _) => Some((
                        format!("test -e {}", shell_quote(path)),
                        format!("{path} exists"),
                    )),
                    (None, Some(u)) => Some((u.clone(), format!("`{u}` succeeded"))),
                    (None, None) => None,
                };
                let mut skipped = None;
                if let Some((check, because)) = guard
                    && remote
                        .run(host, &check, GUARD_TIMEOUT)
                        .await
                        .map_err(ssh_err)?
                        .success()
                {
                    skipped = Some(because);
                }
                match skipped {
                    Some(because) => StepOutcome::Skipped { because },
                    None => {
                        let out = remote
                            .run(host, command, Duration::from_millis(*timeout_ms))
                            .await
                            .map_err(ssh_err)?;
                        if !out.success() {
                            return Err(PlaybookError::StepFailed {
                                machine: host.name.clone(),
                                playbook: playbook.name().to_owned(),
                                step: step.name.clone(),
                                exit: out.status,
                                stderr_tail: out.stderr_tail(),
                            });
                        }
                        StepOutcome::Ran
                    }
                }
            }
            RenderedAction::File {
                path,
                mode,
                content,
            } => {
                let want = format!("{:x} {:o}", Sha256::digest(content.as_bytes()), mode);
                let probe = format!(
                    "if [ -f {p} ]; then printf '%s %s' \"$(sha256sum < {p} | cut -d' ' -f1)\" \"$(stat -c %a {p})\"; fi",
                    p = shell_quote(path)
                );
                let have = remote
                    .run(host, &probe, GUARD_TIMEOUT)
                    .await
                    .map_err(ssh_err)?;
                if have.success() && have.stdout.trim() == want {
                    StepOutcome::Unchanged
                } else {
                    remote
                        .upload(host, path, content.as_bytes(), *mode, GUARD_TIMEOUT)
                        .await
                        .map_err(ssh_err)?;
                    StepOutcome::Changed
                }
            }
            RenderedAction::WaitForPort {
                host: target,
                port,
                timeout_ms,
            } => {
                let addr = format!("{target}:{port}");
                let within = Duration::from_millis(*timeout_ms);
                let deadline = tokio::time::Instant::now() + within;
                loop {
                    let attempt = tokio::time::timeout(
                        Duration::from_millis(500),
                        tokio::net::TcpStream::connect(&addr),
                    )
                    .await;
                    if matches!(attempt, Ok(Ok(_))) {
                        break StepOutcome::PortOpen;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(PlaybookError::PortClosed {
                            machine: host.name.clone(),
                            playbook: playbook.name().to_owned(),
                            step: step.name.clone(),
                            addr,
                            after: within,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        tracing::debug!(machine = %host.name, playbook = playbook.name(), step = %step.name, ?outcome, "Playbook step done.");
        results.push(StepResult {
            name: step.name,
            outcome,
            duration_ms: started.elapsed().as_millis() as u64,
        });
    }
    Ok(results)
}
