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

pub(super) fn status(file: &Path, format: Format) -> anyhow::Result<ExitCode> {
    let (code, v) = call(file, "GET", "/api/status")?;
    if code != 200 {
        bail!("the controller answered {code}: {v}");
    }
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let s = |x: &serde_json::Value| x.as_str().unwrap_or("-").to_owned();
    let on = colour(&std::io::stdout());
    let now = v["now_ms"].as_u64().unwrap_or(0);
    println!("{} ({})", s(&v["topology"]), s(&v["provider"]));
    println!();
    println!(
        "{:<8} {:<6} {:<10} {:<26} STATE",
        "SHARD", "PORT", "MASTER", "REPLICAS"
    );
    for sh in v["shards"].as_array().into_iter().flatten() {
        let reps: Vec<String> = sh["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                format!(
                    "{} ({})",
                    s(&r["machine"]),
                    if r["in_sync"].as_bool() == Some(true) {
                        "in sync"
                    } else {
                        "not in sync"
                    }
                )
            })
            .collect();
        let state = match sh["state"].as_str() {
            Some("degraded") => "degraded: master without replica",
            Some(x) => x,
            None => "-",
        };
        println!(
            "{:<8} {:<6} {:<10} {:<26} {}",
            s(&sh["name"]),
            sh["port"].to_string(),
            s(&sh["master"]),
            if reps.is_empty() {
                "none".to_owned()
            } else {
                reps.join(", ")
            },
            paint(state, on)
        );
    }
    if let Some(services) = v["services"].as_array().filter(|a| !a.is_empty()) {
        println!();
        println!(
            "{:<10} {:<10} {:<8} {:<8} STATE",
            "SERVICE", "MACHINE", "NOMINAL", "ROLE"
        );
        for sv in services {
            for m in sv["machines"].as_array().into_iter().flatten() {
                // A database's WAL position, when its check reports one.
                let wal = m["wal"]
                    .as_str()
                    .map_or(String::new(), |w| format!(" (WAL {w})"));
                println!(
                    "{:<10} {:<10} {:<8} {:<8} {}{wal}",
                    s(&sv["name"]),
                    s(&m["machine"]),
                    s(&m["nominal"]),
                    s(&m["role"]),
                    paint(m["state"].as_str().unwrap_or("-"), on)
                );
            }
        }
    }
    println!();
    println!(
        "{:<10} {:<8} {:<12} {:<15} {:<10}",
        "MACHINE", "ROLE", "STATE", "ADDRESS", "INSTANCE"
    );
    for m in v["machines"].as_array().into_iter().flatten() {
        // Padded before painting: escape codes have no width.
        let state = format!("{:<12}", s(&m["state"]));
        println!(
            "{:<10} {:<8} {} {:<15} {}",
            s(&m["name"]),
            s(&m["role"]),
            paint(state.trim_end(), on) + &" ".repeat(state.len() - state.trim_end().len()),
            s(&m["address"]),
            s(&m["instance"])
        );
    }
    for m in v["machines"].as_array().into_iter().flatten() {
        for shard in m["unmonitored_servers"].as_array().into_iter().flatten() {
            println!(
                "{}@{} is not watched: a recovery left it out (its process was not restarted); `medic monitor {}` watches it again",
                s(shard),
                s(&m["name"]),
                s(&m["name"])
            );
        }
    }
    let spares = v["spares"].as_array().cloned().unwrap_or_default();
    if !spares.is_empty() {
        println!();
        println!("spares (policy.spares):");
        for sp in &spares {
            println!(
                "  {:<10} {:<20} {:<9} {:<9} {}",
                s(&sp["role"]),
                s(&sp["id"]),
                s(&sp["state"]),
                s(&sp["instance"]),
                s(&sp["address"])
            );
        }
    }
    // Every recovery running (recoveries of disjoint machines run at once); an older
    // controller reports only `in_flight`.
    let running = v["running"].as_array().cloned().unwrap_or_else(|| {
        v["in_flight"]
            .as_object()
            .map(|f| vec![serde_json::Value::Object(f.clone())])
            .unwrap_or_default()
    });
    if !running.is_empty() {
        println!();
    }
    for f in running.iter().filter_map(|f| f.as_object()) {
        println!(
            "recovery in flight: {} ({}), step {} of {}: {} {} for {:.1}s",
            s(&f["recovery"]),
            s(&f["event"]),
            f["step"],
            f["steps"],
            s(&f["kind"]),
            s(&f["target"]),
            now.saturating_sub(f["step_started_ms"].as_u64().unwrap_or(now)) as f64 / 1000.0
        );
    }
    super::group::print(&v, now);
    let alerts = v["alerts"].as_array().cloned().unwrap_or_default();
    if !alerts.is_empty() {
        println!();
        println!("recent alerts:");
        for a in alerts.iter().take(5) {
            println!(
                "  {:<9} {:<8} {}",
                since(now, a["at_ms"].as_u64()),
                s(&a["level"]),
                s(&a["message"])
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn history(
    file: &Path,
    since: Option<&str>,
    limit: u16,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let since = since
        .map(|w| since_ms(w, medic_controller::journal::now_ms()))
        .transpose()?;
    let mut path = format!("/api/history?limit={limit}");
    if let Some(ms) = since {
        path.push_str(&format!("&since={ms}"));
    }
    let (code, v) = call(file, "GET", &path)?;
    if code != 200 {
        bail!("the controller answered {code}: {v}");
    }
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let list = v.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        match since {
            Some(ms) => println!(
                "no recoveries since {}",
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + Duration::from_millis(ms)
                )
            ),
            None => println!("no recoveries yet"),
        }
    }
    for r in &list {
        let s = |x: &serde_json::Value| x.as_str().unwrap_or("-").to_owned();
        let took = match (r["started_ms"].as_u64(), r["ended_ms"].as_u64()) {
            (Some(a), Some(b)) => format!("{:.2}s", b.saturating_sub(a) as f64 / 1000.0),
            _ => "in flight".into(),
        };
        println!(
            "{}  {}  {}  {}",
            s(&r["id"]),
            s(&r["event"]),
            r["outcome"]["outcome"].as_str().unwrap_or("unfinished"),
            took
        );
        println!("  trigger: {}", s(&r["trigger"]));
        if let Some(d) = r["detection_ms"].as_u64() {
            println!("  detected {d} ms after the first failed check");
        }
        if let Some(w) = r["write_loss_window_ms"].as_u64() {
            println!(
                "  writes acknowledged in the last {w} ms before the promotion may be lost (if the replica lagged)"
            );
        }
        for st in r["steps"].as_array().into_iter().flatten() {
            let d = st["duration_ms"].as_u64().map_or_else(
                || s(&st["status"]),
                |d| format!("{:.2}s", d as f64 / 1000.0),
            );
            println!(
                "  {:>3}  {:<11} {:>9}  {}",
                st["index"],
                s(&st["kind"]),
                d,
                st["summary"].as_str().map_or_else(
                    || st["errors"]
                        .as_array()
                        .and_then(|e| e.last())
                        .and_then(|e| e.as_str())
                        .unwrap_or("")
                        .to_owned(),
                    str::to_owned
                )
            );
        }
    }
    Ok(ExitCode::SUCCESS)
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

/// `medic events [--follow]`: what the controller did, as it happens.
pub(super) fn events(file: &Path, follow: bool, format: Format) -> anyhow::Result<ExitCode> {
    let mut after = 0u64;
    let mut last_progress = std::time::Instant::now();
    loop {
        let (code, v) = call(file, "GET", &format!("/api/events?after={after}"))?;
        if code != 200 {
            bail!("the controller answered {code}: {v}");
        }
        for e in v["events"].as_array().into_iter().flatten() {
            after = after.max(e["seq"].as_u64().unwrap_or(0));
            match format {
                Format::Json => println!("{e}"),
                Format::Text => {
                    let at = e["at_ms"].as_u64().unwrap_or(0);
                    let secs = at / 1000;
                    println!(
                        "{:02}:{:02}:{:02}.{:03}  {:<15} {}",
                        (secs / 3600) % 24,
                        (secs / 60) % 60,
                        secs % 60,
                        at % 1000,
                        e["kind"].as_str().unwrap_or("-"),
                        e["message"].as_str().unwrap_or("")
                    );
                }
            }
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        // A long step (a machine booting, a replica syncing) gets a line every 5 s.
        if format == Format::Text && last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = std::time::Instant::now();
            if let Ok((200, s)) = call(file, "GET", "/api/status")
                && let Some(f) = s["in_flight"].as_object()
            {
                let now = s["now_ms"].as_u64().unwrap_or(0);
                let running = now.saturating_sub(f["step_started_ms"].as_u64().unwrap_or(now));
                if running >= 3000 {
                    println!(
                        "{:>12}  {:<15} {:>2}/{} {} {}: running for {:.0}s",
                        "",
                        "progress",
                        f["step"],
                        f["steps"],
                        f["kind"].as_str().unwrap_or("-"),
                        f["target"].as_str().unwrap_or("-"),
                        running as f64 / 1000.0
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
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
