//! `medic validate` and `medic plan`: a topology read and checked, and the plan the controller
//! would run for an event, printed as text or JSON.

use std::io::{self, Write};
use std::path::Path;

use anyhow::Context;
use std::process::ExitCode;

use medic_plan::describe::{StepView, describe_as};
use medic_plan::{Event, ObservedState, Plan, plan_recovery};

use super::{Format, load};

pub(super) fn validate(file: &Path, format: Format) -> anyhow::Result<ExitCode> {
    let Some(dep) = load(file, format)? else {
        return Ok(ExitCode::from(1));
    };
    let top = &dep.loaded.topology;
    match format {
        Format::Text => println!(
            "{}: valid: topology {}, provider {}, {} machines, {} shards, {} proxies, {} app proxies",
            file.display(),
            top.name.value,
            top.provider.value.kind(),
            top.machines.len(),
            top.shards.len(),
            top.proxies.value.machines.len(),
            top.app_proxies.len()
        ),
        Format::Json => println!(
            "{}",
            serde_json::json!({ "valid": true, "topology": top.name.value, "warnings": dep.loaded.warnings.len() })
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn plan(
    file: &Path,
    lose: Option<String>,
    process: Option<String>,
    switchover: Option<String>,
    files: bool,
    recovery: &str,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let event = match (lose, process) {
        (Some(machine), _) => Event::MachineLost { machine },
        (None, None) if switchover.is_some() => Event::Switchover {
            shard: switchover.unwrap_or_default(),
            to: None,
        },
        (None, Some(p)) => {
            let (shard, machine) = p.split_once('@').with_context(|| {
                format!("--process `{p}`: expected SHARD@MACHINE, like r9001@redis1")
            })?;
            Event::ProcessDied {
                shard: shard.to_owned(),
                machine: machine.to_owned(),
            }
        }
        (None, None) => anyhow::bail!("say what fails: --lose MACHINE or --process SHARD@MACHINE"),
    };
    let Some(dep) = load(file, format)? else {
        return Ok(ExitCode::from(1));
    };
    let top = &dep.loaded.topology;
    // SERVICE@MACHINE: a service's name (validation keeps them apart from shards').
    let event = match event {
        Event::ProcessDied { shard, machine } if top.service(&shard).is_some() => {
            Event::ServiceDown {
                service: shard,
                machine,
            }
        }
        other => other,
    };
    let state = ObservedState::assumed(top);
    let plan = match plan_recovery(top, &state, &event, recovery) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: cannot plan: {e}", file.display());
            return Ok(ExitCode::from(1));
        }
    };
    let aliases = medic_haproxy::Aliases::new(top.server_aliases());
    let views: Vec<StepView> = plan
        .steps
        .iter()
        .map(|s| describe_as(s, &dep.playbooks, &aliases))
        .collect();
    let mut out = io::stdout().lock();
    match format {
        Format::Json => {
            let json = serde_json::json!({ "plan": plan, "views": views });
            writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
        }
        Format::Text => print_plan(&mut out, &plan, &views, files)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn print_plan(
    out: &mut impl Write,
    plan: &Plan,
    views: &[StepView],
    files: bool,
) -> io::Result<()> {
    writeln!(
        out,
        "Recovery plan `{}` for topology {}: {}",
        plan.recovery, plan.topology, plan.event
    )?;
    writeln!(
        out,
        "Planned against the state the topology describes (roles as written, replicas in sync);\n\
         `medic run` plans against what it observes. {} steps, in order; each is idempotent.\n\
         ${{address:M}} is M's address when the step runs (a replacement's is known once launched).",
        plan.steps.len()
    )?;
    writeln!(out)?;
    let wk = views.iter().map(|v| v.kind.len()).max().unwrap_or(4).max(4);
    let wt = views
        .iter()
        .map(|v| v.target.chars().count())
        .max()
        .unwrap_or(6)
        .max(6);
    let wn = views.len().to_string().len().max(2);
    writeln!(
        out,
        "{:>wn$}  {:<wk$}  {:<wt$}  WHAT",
        "#", "STEP", "TARGET"
    )?;
    for v in views {
        writeln!(
            out,
            "{:>wn$}  {:<wk$}  {:<wt$}  {}",
            v.index, v.kind, v.target, v.summary
        )?;
        for c in &v.commands {
            writeln!(out, "{:wn$}  {:wk$}  {c}", "", "")?;
        }
        for f in v.files.iter().filter(|_| files) {
            writeln!(
                out,
                "{:wn$}  {:wk$}  --- {} (mode {:04o}) ---",
                "", "", f.path, f.mode
            )?;
            for line in f.content.lines() {
                writeln!(out, "{:wn$}  {:wk$}  | {line}", "", "")?;
            }
        }
    }
    Ok(())
}
