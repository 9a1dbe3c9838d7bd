//! `medic lab`: the local lab's machines.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

use medic_lab::{Fault, Lab, LabConfig};
use medic_plan::{Event, ObservedState, plan_recovery};
use medic_playbook::Playbooks;
use medic_topology::{LoadedTopology, Provider};

use super::{Deployment, FaultKind, Format, LabCommand, load};

pub(super) fn run(cmd: LabCommand) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cmd {
        LabCommand::Up { file } => {
            let Some(dep) = load(&file, Format::Text)? else {
                return Ok(ExitCode::from(1));
            };
            rt.block_on(up(&file, &dep))
        }
        LabCommand::Down { topology } => {
            let lab = Lab::new(config(topology.as_deref())?);
            let n = rt.block_on(lab.down())?;
            println!(
                "lab {}: removed {n} machines, the bridge and {}",
                lab.cfg.bridge,
                lab.cfg.state_dir.join("machines").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Status { topology, format } => {
            let roles = roles(topology.as_deref());
            status(&Lab::new(config(topology.as_deref())?), &roles, format)
        }
        LabCommand::Fault {
            machine,
            kind,
            from,
            topology,
        } => {
            let lab = Lab::new(config(topology.as_deref())?);
            let fault = match (kind, from.as_deref()) {
                (FaultKind::Partition, Some(peers)) => {
                    let peers: Vec<&str> = peers.split(',').map(str::trim).collect();
                    rt.block_on(lab.cut(&machine, &peers))?;
                    println!("{machine}: cut off from {}", peers.join(", "));
                    return Ok(ExitCode::SUCCESS);
                }
                (_, Some(_)) => bail!("--from goes with partition"),
                (FaultKind::Partition, None) => Fault::Partition {
                    monitor_only: false,
                },
                (FaultKind::Crash, None) => Fault::Crash,
                (FaultKind::Hang, None) => Fault::Hang,
                (FaultKind::Heal, None) => Fault::Heal,
            };
            rt.block_on(lab.fault(&machine, fault))?;
            println!("{machine}: {fault:?}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The lab's settings: from a `local` topology, or the provider's defaults.
fn config(topology: Option<&Path>) -> anyhow::Result<LabConfig> {
    match topology {
        Some(file) => {
            let loaded = medic_topology::load_topology(file).map_err(|e| {
                let lines: Vec<String> = e.diagnostics.iter().map(ToString::to_string).collect();
                anyhow::anyhow!("{e}:\n{}", lines.join("\n"))
            })?;
            from_topology(&loaded)
        }
        None => Ok(LabConfig {
            subnet: [10, 77, 0],
            bridge: "medic0".into(),
            state_dir: PathBuf::from("/var/lib/medic/lab"),
            prefix: "medic0-".into(),
            authorized_key: String::new(),
            amis: BTreeMap::new(),
        }),
    }
}

pub(super) fn from_topology(loaded: &LoadedTopology) -> anyhow::Result<LabConfig> {
    let top = &loaded.topology;
    let Provider::Local(local) = &top.provider.value else {
        bail!(
            "{}: the provider is {}, not local",
            loaded.path.display(),
            top.provider.value.kind()
        );
    };
    let subnet = medic_topology::validate::parse_lab_subnet(&local.subnet).with_context(|| {
        format!(
            "provider.local.subnet `{}` is not a private /24",
            local.subnet
        )
    })?;
    let key = top.ssh.key.clone().with_context(|| {
        format!("{}: the local provider needs ssh.key: the controller's key, which the lab authorizes on its machines", loaded.path.display())
    })?;
    let public = key.with_extension("pub");
    if !key.exists() {
        if let Some(dir) = key.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let st = std::process::Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "medic-controller",
                "-f",
            ])
            .arg(&key)
            .status()
            .context("running ssh-keygen")?;
        if !st.success() {
            bail!("ssh-keygen could not create {}", key.display());
        }
    }
    let authorized_key = std::fs::read_to_string(&public)
        .with_context(|| format!("reading {}", public.display()))?;
    let amis = loaded
        .amis
        .iter()
        .map(|(name, def)| (name.clone(), def.summary().binaries))
        .collect();
    Ok(LabConfig {
        subnet,
        bridge: local.bridge.clone(),
        state_dir: local.state_dir.clone(),
        // Derived from the bridge, so tearing one lab down never touches another's machines.
        prefix: format!("{}-", local.bridge),
        authorized_key,
        amis,
    })
}

async fn up(file: &Path, dep: &Deployment) -> anyhow::Result<ExitCode> {
    let top = &dep.loaded.topology;
    if !top.managed() {
        anyhow::bail!(
            "{}: `managed: false`: medic adopted this deployment and sets up nothing in it",
            file.display()
        );
    }
    let cfg = from_topology(&dep.loaded)?;
    let lab = Lab::new(cfg);
    let ssh = medic_ssh::Ssh::new(&lab.cfg.state_dir.join("known_hosts"))?;
    let plan = plan_recovery(top, &ObservedState::empty(top), &Event::Bootstrap, "lab-up")?;
    println!(
        "{}: setting up {} machines in {} steps (the same steps a replacement takes)",
        file.display(),
        top.machines.len(),
        plan.steps.len()
    );
    // The lab's own DNS server, primary for the topology's zone: records are upserted into it
    // and the app proxies resolve the proxies' names through it.
    let dns = match top.dns.as_ref().map(|d| &d.value.provider.value) {
        Some(medic_topology::DnsProvider::Rfc2136(r)) => {
            let at = lab
                .start_dns(&r.zone, &r.tsig_key, &r.tsig_secret_file)
                .await?;
            if at != r.server {
                bail!(
                    "the lab's DNS server listens on {at}, but dns.provider.rfc2136.server says {}: \
                     expected the lab subnet's .2 on port 53",
                    r.server
                );
            }
            println!("lab DNS: named at {at}, primary for {}", r.zone);
            let secret = medic_rfc2136::read_secret(&r.tsig_secret_file)?;
            Some(medic_rfc2136::Rfc2136::new(
                r.server,
                &r.zone,
                &r.tsig_key,
                &r.tsig_algorithm,
                secret,
            )?)
        }
        Some(medic_topology::DnsProvider::Route53(_)) => {
            println!("note: the lab has no Route 53: DNS steps are skipped and shown");
            None
        }
        None => None,
    };
    let secrets = super::read_secrets(&dep.loaded)?;
    let mut exec = medic_exec::Executor {
        topology: top,
        cloud: &lab,
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
        .run(&plan, |step, done| print_done(step, done, &dep.playbooks))
        .await;
    if let Err(e) = result {
        eprintln!("medic lab up: {:#}", anyhow::Error::from(e));
        eprintln!(
            "(run it again to continue: finished steps are found, not repeated; `medic lab down --topology {}` removes everything)",
            file.display()
        );
        return Ok(ExitCode::from(1));
    }
    status(&lab, &roles_of(top), Format::Text)
}

/// One finished step of a set-up, as `lab up` and `up` print it.
pub(super) fn print_done(step: &medic_plan::Step, done: &medic_exec::Done, playbooks: &Playbooks) {
    let v = medic_plan::describe::describe(step, playbooks);
    let _ = writeln!(
        std::io::stdout(),
        "{:>3}  {:<9} {:<9} {:>7.2}s  {}",
        step.index,
        v.kind,
        v.target,
        done.duration.as_secs_f64(),
        done.summary
    );
}

/// Whether a machine's sshd answers: `answers`, `silent`, `refused`.
fn answers(addr: SocketAddr) -> &'static str {
    match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => "refused",
        Err(_) => "silent",
        Ok(mut s) => {
            let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
            let mut b = [0u8; 4];
            if matches!(s.read(&mut b), Ok(4)) && &b == b"SSH-" {
                "answers"
            } else {
                "silent"
            }
        }
    }
}

/// Machine name to role, from the topology (the lab's records do not carry roles).
fn roles_of(top: &medic_topology::Topology) -> BTreeMap<String, String> {
    top.machines
        .iter()
        .map(|m| {
            (
                m.value.name.value.clone(),
                m.value.role.value.as_str().to_owned(),
            )
        })
        .collect()
}

fn roles(topology: Option<&Path>) -> BTreeMap<String, String> {
    topology
        .and_then(|f| medic_topology::load_topology(f).ok())
        .map(|l| roles_of(&l.topology))
        .unwrap_or_default()
}

fn status(lab: &Lab, roles: &BTreeMap<String, String>, format: Format) -> anyhow::Result<ExitCode> {
    let live: Vec<_> = lab
        .records()
        .into_iter()
        .filter(|r| r.state != "terminated")
        .collect();
    // No bridge, no traffic: a lab address would otherwise be routed off this machine.
    let bridge = lab.bridge_up();
    let rows: Vec<(String, String, String, String, String)> = live
        .iter()
        .map(|r| {
            let machine = r
                .tags
                .get(medic_cloud::TAG_MACHINE)
                .cloned()
                .unwrap_or_default();
            let role = roles.get(&machine).cloned().unwrap_or_else(|| "-".into());
            (
                machine,
                role,
                r.id.clone(),
                r.address.to_string(),
                if bridge {
                    answers(SocketAddr::from((r.address, 22))).to_owned()
                } else {
                    "no bridge".to_owned()
                },
            )
        })
        .collect();
    match format {
        Format::Json => {
            let v: Vec<serde_json::Value> = rows
                .iter()
                .map(|(m, role, id, a, s)| serde_json::json!({"machine": m, "role": role, "instance": id, "address": a, "ssh": s}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Text => {
            println!(
                "lab {} ({}.0/24): {} machines",
                lab.cfg.bridge,
                lab.bridge_address().to_string().trim_end_matches(".1"),
                rows.len()
            );
            if !rows.is_empty() {
                println!(
                    "{:<10} {:<8} {:<10} {:<14} SSH",
                    "MACHINE", "ROLE", "INSTANCE", "ADDRESS"
                );
            }
            for (m, role, id, a, s) in &rows {
                println!("{m:<10} {role:<8} {id:<10} {a:<14} {s}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
