//! `medic run` and the commands that talk to it: status, history, recover, (un)monitor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

use medic_controller::{Controller, Setup};
use medic_topology::Provider;

use super::providers::providers;
use super::{Format, LogFormat, load};

/// Libraries whose debug and trace lines carry what must not be logged (request URIs with a
/// webhook's token, signed AWS requests, TLS secrets): capped at `warn` unless `MEDIC_LOG`
/// names them itself.
const CAPPED: &[&str] = &[
    "hyper",
    "hyper_util",
    "h2",
    "rustls",
    "aws_config",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_sdk_ec2",
    "aws_sdk_route53",
    "aws_sigv4",
];

/// The log filter: `MEDIC_LOG` (default `info`) after the caps of [`CAPPED`], so a bare level
/// (`MEDIC_LOG=trace`) leaves them capped and a directive naming one (`hyper=debug`) lifts it.
pub(super) fn log_filter(user: Option<&str>) -> tracing_subscriber::EnvFilter {
    let user = user.filter(|u| !u.trim().is_empty()).unwrap_or("info");
    let caps: Vec<String> = CAPPED.iter().map(|t| format!("{t}=warn")).collect();
    let (level, named): (Vec<&str>, Vec<&str>) = user
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .partition(|d| !d.contains('='));
    let directives = level
        .into_iter()
        .map(str::to_owned)
        .chain(caps)
        .chain(named.into_iter().map(str::to_owned))
        .collect::<Vec<_>>()
        .join(",");
    tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "info,{}",
            CAPPED
                .iter()
                .map(|t| format!("{t}=warn"))
                .collect::<Vec<_>>()
                .join(",")
        ))
    })
}

pub(super) fn init_logging(format: LogFormat) {
    let user = std::env::var("MEDIC_LOG").ok();
    let filter = log_filter(user.as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(true).init(),
        LogFormat::Text => builder.with_ansi(colour(&std::io::stderr())).init(),
        LogFormat::Journald => {
            use tracing_subscriber::layer::SubscriberExt as _;
            use tracing_subscriber::util::SubscriberInitExt as _;
            match tracing_journald::layer() {
                Ok(layer) => tracing_subscriber::registry()
                    .with(log_filter(user.as_deref()))
                    .with(layer)
                    .init(),
                Err(e) => {
                    builder.init();
                    tracing::warn!("journald is not reachable ({e}): logging to stderr");
                }
            }
        }
    }
}

/// Colour only on a terminal, and never with NO_COLOR set.
pub(super) fn colour(stream: &impl std::io::IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// A state word, coloured on a terminal: green when well, yellow when degraded, red when down.
fn paint(word: &str, on: bool) -> String {
    if !on {
        return word.to_owned();
    }
    let code = match word.split(':').next().unwrap_or(word) {
        "ok" | "up" => "32",
        "degraded" | "suspect" | "recovering" | "unmonitored" => "33",
        "down" => "31",
        _ => return word.to_owned(),
    };
    format!("\x1b[{code}m{word}\x1b[0m")
}

pub(super) fn run(file: &Path, check_config: bool) -> anyhow::Result<ExitCode> {
    let Some(dep) = load(file, Format::Text)? else {
        return Ok(ExitCode::from(1));
    };
    if check_config {
        println!(
            "{}: valid; the controller would listen on {} with its state in {}",
            file.display(),
            dep.loaded.topology.controller.listen.value,
            dep.loaded.topology.controller.state_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    raise_open_files_limit(&dep.loaded.topology);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (cloud, dns) = providers(&dep.loaded).await?;
        let secrets = super::read_secrets(&dep.loaded)?;
        let path = file.to_owned();
        let reload: medic_controller::Reload = Box::new(move || {
            let dep = super::load_quiet(&path)?;
            Ok((dep.loaded, dep.playbooks))
        });
        let c = Controller::start(Setup {
            loaded: dep.loaded,
            playbooks: dep.playbooks,
            cloud,
            dns,
            reload,
            secrets,
        })
        .await?;
        let runner = {
            let c = c.clone();
            tokio::spawn(async move { c.run().await })
        };
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    if let Err(e) = c.reload() {
                        tracing::error!("SIGHUP: the topology was not reloaded, the running one stays: {e}");
                    }
                }
            }
        }
        tracing::info!("Stopping at a safe point.");
        c.stop();
        runner.await??;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Where the controller of `file` listens, and its token.
fn endpoint(file: &Path) -> anyhow::Result<(String, PathBuf)> {
    let loaded = medic_topology::load_topology(file).map_err(|e| {
        let lines: Vec<String> = e.diagnostics.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("{e}:\n{}", lines.join("\n"))
    })?;
    let c = &loaded.topology.controller;
    Ok((
        medic_controller::http::base_url(c.listen.value),
        c.state_dir.join("api-token"),
    ))
}

fn call(file: &Path, method: &str, path: &str) -> anyhow::Result<(u16, serde_json::Value)> {
    let (base, token_file) = endpoint(file)?;
    let token = if method == "POST" {
        Some(
            std::fs::read_to_string(&token_file)
                .with_context(|| {
                    format!(
                        "reading the API token {} (run this as the controller's user)",
                        token_file.display()
                    )
                })?
                .trim()
                .to_owned(),
        )
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let url = format!("{base}{path}");
    let auth = token.map(|t| format!("Bearer {t}"));
    let (status, body) = rt
        .block_on(medic_controller::http::send(
            method,
            &url,
            auth.as_deref(),
            "application/json",
            Vec::new(),
            Duration::from_secs(10),
        ))
        .with_context(|| format!("is `medic run {}` running?", file.display()))?;
    let v: serde_json::Value =
        serde_json::from_slice(&body).with_context(|| format!("{url}: the answer is not JSON"))?;
    Ok((status, v))
}

/// An operator's command (`recover`, `switchover`, `unmonitor`, `monitor`, `step-down`) sent
/// to the controller. With `--format json` it prints one object on stdout whatever happens —
/// `{"command", "name", "ok": true, "status", "message"}` or `{..., "ok": false, "status"
/// (absent if the controller was not reached), "error"}` — and exits 1 on a refusal.
pub(super) fn command(
    file: &Path,
    verb: &str,
    name: &str,
    to: Option<&str>,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let mut path = if name.is_empty() {
        format!("/api/{verb}")
    } else {
        format!("/api/{verb}/{name}")
    };
    if let Some(m) = to {
        path.push_str(&format!("?to={m}"));
    }
    let called = call(file, "POST", &path);
    if format == Format::Json {
        let mut out = serde_json::json!({"command": verb, "name": name});
        if let Some(m) = to {
            out["to"] = m.into();
        }
        let ok = match called {
            Ok((status, v)) if (200..300).contains(&status) => {
                out["status"] = status.into();
                out["message"] = v["ok"].clone();
                true
            }
            Ok((status, v)) => {
                out["status"] = status.into();
                out["error"] = v["error"].clone();
                false
            }
            Err(e) => {
                out["error"] = format!("{e:#}").into();
                false
            }
        };
        out["ok"] = ok.into();
        println!("{out}");
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let (status, v) = called?;
    if (200..300).contains(&status) {
        println!("{}", v["ok"].as_str().unwrap_or("done"));
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "medic {verb}{}{name}: {}",
            if name.is_empty() { "" } else { " " },
            v["error"].as_str().unwrap_or("refused")
        );
        Ok(ExitCode::from(1))
    }
}

/// `--since WHEN`: a duration back from `now_ms` (`90s`, `30m`, `2h`, `7d`) or a UTC time
/// (`2026-12-01T03:00:00Z`, `2026-12-01 03:00`), as milliseconds since the epoch.
pub(super) fn since_ms(when: &str, now_ms: u64) -> anyhow::Result<u64> {
    if let Ok(d) = humantime::parse_duration(when) {
        return Ok(now_ms.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
    }
    let t = humantime::parse_rfc3339_weak(when.trim_end_matches(['Z', 'z'])).or_else(|_| {
        humantime::parse_rfc3339_weak(&format!("{}:00", when.trim_end_matches(['Z', 'z'])))
    });
    match t
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
    {
        Some(d) => Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        None => bail!(
            "--since {when:?}: expected a duration back from now (90s, 30m, 2h, 7d) or a UTC time (2026-12-01T03:00:00Z)"
        ),
    }
}

fn since(now: u64, at: Option<u64>) -> String {
    match at {
        Some(a) => format!("{:.1}s ago", now.saturating_sub(a) as f64 / 1000.0),
        None => "-".into(),
    }
}

/// `medic up`: sets a deployment up from nothing on its provider, through the same launch and
/// playbook steps a replacement takes (the lab has `medic lab up`, which also starts its DNS).
pub(super) fn up(file: &Path) -> anyhow::Result<ExitCode> {
    let Some(dep) = load(file, Format::Text)? else {
        return Ok(ExitCode::from(1));
    };
    let top = &dep.loaded.topology;
    if !top.managed() {
        bail!(
            "{}: `managed: false`: medic adopted this deployment and sets up nothing in it",
            file.display()
        );
    }
    match &top.provider.value {
        Provider::Local(_) => bail!(
            "{}: a local topology is set up with `medic lab up {}`",
            file.display(),
            file.display()
        ),
        Provider::Static => bail!(
            "{}: the static provider launches nothing: its machines exist already",
            file.display()
        ),
        Provider::Aws(_) => {}
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (cloud, dns) = providers(&dep.loaded).await?;
        let state_dir = &top.controller.state_dir;
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let ssh = medic_ssh::Ssh::new(&state_dir.join("known_hosts"))?;
        let plan = medic_plan::plan_recovery(
            top,
            &medic_plan::ObservedState::empty(top),
            &medic_plan::Event::Bootstrap,
            "bootstrap",
        )?;
        println!(
            "{}: setting up {} machines in {} steps",
            file.display(),
            top.machines.len(),
            plan.steps.len()
        );
        let secrets = super::read_secrets(&dep.loaded)?;
        let mut exec = medic_exec::Executor {
            topology: top,
            cloud: &cloud,
            dns: dns.as_ref(),
            skip_dns: dns.is_none(),
            ssh: &ssh,
            playbooks: &dep.playbooks,
            secrets: &secrets,
            addresses: BTreeMap::new(),
            redis: super::redis_client(top, &secrets)?,
            unfenced: medic_exec::Unfenced::default(),
        };
        let result = exec
            .run(&plan, |step, done| {
                super::lab::print_done(step, done, &dep.playbooks)
            })
            .await;
        match result {
            Ok(()) => anyhow::Ok(ExitCode::SUCCESS),
            Err(e) => {
                eprintln!("medic up: {:#}", anyhow::Error::from(e));
                eprintln!(
                    "(run it again to continue: instances launched are found by their tags, not launched twice)"
                );
                Ok(ExitCode::from(1))
            }
        }
    })
}

/// The controller keeps a connection to every server it checks: raises the soft limit on open
/// files to the hard one (systemd's default soft limit is 1,024), and warns when even that is
/// too few for the topology.
fn raise_open_files_limit(top: &medic_topology::Topology) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (limit.current, limit.maximum)
        && cur < max
    {
        limit.current = Some(max);
        if setrlimit(Resource::Nofile, limit).is_err() {
            limit.current = Some(cur);
        }
    }
    // A connection per checked target, plus SSH sessions, the API and the journal.
    let targets = medic_controller::checks::targets(top).len() as u64;
    let needed = targets + top.machines.len() as u64 * 2 + 64;
    if let Some(cur) = limit.current
        && cur < needed
    {
        tracing::warn!(
            limit = cur,
            needed,
            "The limit on open files is below one per checked server: some checks will fail to connect. Raise it (LimitNOFILE= in the unit, ulimit -n)."
        );
    }
}

#[cfg(test)]
mod tests;
mod views;

pub(super) use views::{events, history, status};
