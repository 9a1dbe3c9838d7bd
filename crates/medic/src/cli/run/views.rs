//! What the running controller shows an operator: `medic status`, `medic history` and
//! `medic events`, each read from its HTTP API, as text or JSON.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;

use super::super::Format;
use super::{call, colour, paint, since, since_ms};

pub(in crate::cli) fn status(file: &Path, format: Format) -> anyhow::Result<ExitCode> {
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
    super::super::group::print(&v, now);
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

pub(in crate::cli) fn history(
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

/// `medic events [--follow]`: what the controller did, as it happens.
pub(in crate::cli) fn events(
    file: &Path,
    follow: bool,
    format: Format,
) -> anyhow::Result<ExitCode> {
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
