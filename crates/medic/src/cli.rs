//! Commands and their output. Exit codes: 0 success, 1 the input is invalid or a plan cannot
//! be made (the messages say why), 2 wrong usage.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use medic_playbook::Playbooks;
use medic_topology::{Diagnostic, LoadedTopology, load_topology};

#[derive(Debug, Parser)]
#[command(
    name = "medic",
    version,
    about = "Self-healing orchestrator for redis behind HAProxy",
    long_about = "medic watches redis masters and replicas, the HAProxy nodes in front of them and \
                  the app-side proxies, and on a confirmed failure runs a recovery plan: fence, \
                  promote, replace, reconfigure, re-register, update DNS.",
    after_help = "Examples:\n  medic validate examples/barton.yaml\n  medic plan examples/barton.yaml --lose redis1\n  medic run examples/lab.yaml\n  medic status -t examples/lab.yaml\n\nExit status: 0 success; 1 invalid input, no plan possible, or the controller refused or could not be reached; 2 wrong usage."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
    /// Native journald fields (step, kind, recovery, target...) for `journalctl -o verbose`.
    Journald,
}

/// Where the operator commands find the controller: its topology file.
#[derive(Debug, clap::Args)]
struct TopologyArg {
    /// The topology `medic run` watches (its controller.listen and state_dir).
    #[arg(
        short,
        long,
        env = "MEDIC_TOPOLOGY",
        default_value = "/etc/medic/topology.yaml"
    )]
    topology: PathBuf,
}

/// The files `medic schema` describes.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum SchemaKind {
    Topology,
    Playbook,
    Ami,
}

#[derive(Debug, Subcommand)]
enum ImportCommand {
    /// Draft a topology from a monit control file: each `check host` a machine, its redis
    /// ports shards, its HAProxies' ports frontends, monit's cycle the checks' cadence.
    #[command(
        after_help = "The draft goes to stdout (or --out); the report — what was mapped, what was assumed, \
what could not be — to stderr and, as comments, to the draft's head. Read both; then medic validate.\n\n\
Example:\n  medic import monit /etc/monit/monitrc --hosts /etc/hosts --out topology.yaml"
    )]
    Monit {
        monitrc: PathBuf,
        /// A hosts file (`/etc/hosts` format) for the addresses monit names by host name.
        #[arg(long, value_name = "FILE")]
        hosts: Option<PathBuf>,
        /// The deployment's name (default: the hosts' common domain, else `imported`).
        #[arg(long)]
        name: Option<String>,
        /// The playbooks directory the draft names.
        #[arg(long, value_name = "DIR", default_value = "/usr/share/medic/playbooks")]
        playbooks: String,
        /// Write the draft here instead of stdout (refused if the file exists).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum AwsCommand {
    /// Check, read-only, that every AMI, subnet, security group, the key pair and the hosted
    /// zone the topology names exist and that these credentials can see them.
    #[command(
        after_help = "Credentials and region come from the standard AWS chain (environment, profile, \
instance role); the region is the topology's. The first command a new AWS user runs.\n\n\
Exit status: 0 everything found, 1 something missing or not visible.\n\n\
Example:\n  medic aws check examples/barton.yaml"
    )]
    Check {
        file: PathBuf,
        /// An endpoint override (an emulator); `AWS_ENDPOINT_URL` works too.
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum FaultKind {
    Crash,
    Hang,
    Partition,
    Heal,
}

#[derive(Debug, Subcommand)]
enum LabCommand {
    /// Create every machine of a `local` topology and configure it, through the same launch
    /// and playbook steps a recovery uses. Running it again changes nothing.
    #[command(
        after_help = "Needs root (network namespaces). Example:\n  medic lab up examples/lab.yaml"
    )]
    Up { file: PathBuf },
    /// Remove every lab machine, namespace and the bridge, also what a crashed lab left.
    #[command(after_help = "Example:\n  medic lab down --topology examples/lab.yaml")]
    Down {
        /// The lab's topology (its bridge, subnet, state directory); the defaults without it.
        #[arg(long)]
        topology: Option<PathBuf>,
    },
    /// List the lab's machines, addresses, and whether each answers.
    Status {
        #[arg(long)]
        topology: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Break a machine: crash (processes killed, silent), hang (SIGSTOP), partition (cut off,
    /// alive), heal (undo hang and every partition of the machine).
    #[command(
        after_help = "Examples:\n  medic lab fault redis1 crash\n  medic lab fault redis1 partition --from monitor\n  medic lab fault redis1 partition --from monitor,redis2\n  medic lab fault redis1 heal"
    )]
    Fault {
        machine: String,
        kind: FaultKind,
        /// With partition: cut the machine off only from these, both ways (comma-separated
        /// machine names; `monitor` is this host). Without it, from everyone.
        #[arg(long, value_name = "PEERS")]
        from: Option<String>,
        #[arg(long)]
        topology: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The controller: check every node, detect failures, run recoveries, serve the API.
    #[command(
        after_help = "Runs until SIGTERM or SIGINT (it stops between two steps; the next start goes on from \
the journal). SIGHUP reloads the topology (the running one stays if the new one is invalid).\n\n\
Logs go to stderr; MEDIC_LOG sets the filter (e.g. MEDIC_LOG=debug).\n\n\
Examples:\n  medic run examples/lab.yaml\n  medic run --check-config /etc/medic/topology.yaml\n  medic run --log-format json /etc/medic/topology.yaml"
    )]
    Run {
        file: PathBuf,
        /// Validate the topology and playbooks, print where the controller would listen, exit.
        #[arg(long)]
        check_config: bool,
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Set a deployment up from nothing on AWS: launch every machine, run its playbook,
    /// publish DNS — the steps a replacement takes. Again: finds what exists, launches the rest.
    #[command(after_help = "Example:\n  medic up examples/barton.yaml")]
    Up { file: PathBuf },
    /// Every machine and shard as the running controller sees them, and any recovery in flight.
    #[command(after_help = "Example:\n  medic status -t examples/lab.yaml")]
    Status {
        #[command(flatten)]
        t: TopologyArg,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Every recovery: trigger, steps with durations, outcome, the window of writes at risk.
    /// Newest first.
    #[command(
        after_help = "Examples:\n  medic history -t examples/lab.yaml\n  medic history --since 2h --limit 5 -t examples/lab.yaml\n  medic history --since 2026-12-01T03:00:00Z --format json -t examples/lab.yaml"
    )]
    History {
        #[command(flatten)]
        t: TopologyArg,
        /// Only the recoveries begun since: a duration back from now (90s, 30m, 2h, 7d) or a
        /// UTC time (2026-12-01T03:00:00Z).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// At most this many recoveries (1 to 1000), the newest.
        #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: u16,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// What the controller saw and did — detections, each recovery step with its duration,
    /// alerts — oldest first (times in UTC); `--follow` keeps printing as it happens.
    #[command(after_help = "Example:\n  medic events --follow -t examples/lab.yaml")]
    Events {
        #[command(flatten)]
        t: TopologyArg,
        #[arg(short, long)]
        follow: bool,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Recover a machine now, as if it were lost (the seed's emergency procedure).
    #[command(after_help = "Example:\n  medic recover redis1 -t examples/lab.yaml")]
    Recover {
        machine: String,
        #[command(flatten)]
        t: TopologyArg,
        /// `json`: one JSON object on stdout, success or not (`ok`, `status`, `message` or `error`).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Change a shard's master on purpose, losing no write: writes are held on the master
    /// until the replica has them all, the proxies switch, the old master becomes a replica.
    /// Or a service's primary: the primary demoted first, then the other promoted, the record
    /// moved.
    #[command(
        after_help = "Example:\n  medic switchover r9001 -t examples/lab.yaml\n  medic switchover r9001 --to redis2 -t examples/lab.yaml\n  medic switchover www --to web1 -t examples/domino.yaml"
    )]
    Switchover {
        shard: String,
        /// The replica to promote (default: the most advanced one).
        #[arg(long, value_name = "MACHINE")]
        to: Option<String>,
        #[command(flatten)]
        t: TopologyArg,
        /// `json`: one JSON object on stdout, success or not (`ok`, `status`, `message` or `error`).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Put a machine in maintenance: not checked, never recovered (persisted).
    #[command(after_help = "Example:\n  medic unmonitor redis2 -t examples/lab.yaml")]
    Unmonitor {
        machine: String,
        #[command(flatten)]
        t: TopologyArg,
        /// `json`: one JSON object on stdout, success or not (`ok`, `status`, `message` or `error`).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// End a machine's maintenance.
    #[command(after_help = "Example:\n  medic monitor redis2 -t examples/lab.yaml")]
    Monitor {
        machine: String,
        #[command(flatten)]
        t: TopologyArg,
        /// `json`: one JSON object on stdout, success or not (`ok`, `status`, `message` or `error`).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// In a group of controllers: the leader gives its lease up and does not stand again for
    /// two leases, so another member takes over (before maintenance of the leader's host).
    #[command(after_help = "Example:\n  medic step-down -t /etc/medic/topology.yaml")]
    StepDown {
        #[command(flatten)]
        t: TopologyArg,
        /// `json`: one JSON object on stdout, success or not (`ok`, `status`, `message` or `error`).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  medic completions bash > /etc/bash_completion.d/medic\n  medic completions zsh > \"${fpath[1]}/_medic\"\n  medic completions fish > ~/.config/fish/completions/medic.fish"
    )]
    Completions { shell: clap_complete::Shell },
    /// The local lab: machines on this host, for demos and end-to-end tests.
    #[command(subcommand)]
    Lab(LabCommand),
    /// AWS: check the resources a topology names.
    #[command(subcommand)]
    Aws(AwsCommand),
    /// Print the JSON Schema of a topology, playbook or AMI file (for an editor's completion
    /// and checks; docs/schema/ has them).
    #[command(
        after_help = "Example:\n  medic schema topology > topology.schema.json\n\nIn a YAML file, a first line\n  # yaml-language-server: $schema=topology.schema.json\npoints editors using the YAML language server at it."
    )]
    Schema {
        #[arg(value_enum)]
        kind: SchemaKind,
    },
    /// Draft a topology from another tool's configuration (monit).
    #[command(subcommand)]
    Import(ImportCommand),
    /// Check a topology file, its AMI definitions and playbooks; print every problem.
    #[command(
        after_help = "Exit status: 0 valid (warnings may be printed), 1 invalid.\n\nExample:\n  medic validate examples/barton.yaml"
    )]
    Validate {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print the recovery plan a failure would trigger, without doing anything.
    #[command(
        after_help = "The plan is computed by the same planner `medic run` executes, against the state the \
topology describes (roles as written, replicas in sync).\n\nExamples:\n  medic plan examples/barton.yaml --lose redis1\n  medic plan examples/barton.yaml --lose haproxy1 --format json\n  medic plan examples/barton.yaml --process r9001@redis1"
    )]
    Plan {
        file: PathBuf,
        /// A machine that is lost.
        #[arg(
            long,
            value_name = "MACHINE",
            conflicts_with_all = ["process", "switchover"],
            required_unless_present_any = ["process", "switchover"]
        )]
        lose: Option<String>,
        /// A redis process that died on a live machine, as SHARD@MACHINE; or a service that
        /// fails its checks on a machine that answers, as SERVICE@MACHINE.
        #[arg(long, value_name = "SHARD@MACHINE", conflicts_with = "switchover")]
        process: Option<String>,
        /// A planned switchover of SHARD or SERVICE (what `medic switchover NAME` would do).
        #[arg(long, value_name = "SHARD|SERVICE")]
        switchover: Option<String>,
        /// Also print the full content of every file a playbook step writes.
        #[arg(long)]
        files: bool,
        /// The recovery id used in tags and launch tokens.
        #[arg(long, default_value = "dry-run")]
        recovery: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

mod aws_check;
mod group;
mod import;
mod lab;
mod plan;
mod providers;
mod run;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // Into a buffer first: clap_complete panics when it cannot write (`| head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "medic", &mut script);
            match io::stdout().lock().write_all(&script) {
                Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(ExitCode::SUCCESS),
            }
        }
        Command::Run {
            file,
            check_config,
            log_format,
        } => {
            run::init_logging(log_format);
            run::run(&file, check_config)
        }
        Command::Up { file } => {
            run::init_logging(LogFormat::Text);
            run::up(&file)
        }
        Command::Status { t, format } => run::status(&t.topology, format),
        Command::History {
            t,
            since,
            limit,
            format,
        } => run::history(&t.topology, since.as_deref(), limit, format),
        Command::Events { t, follow, format } => run::events(&t.topology, follow, format),
        Command::Recover { machine, t, format } => {
            run::command(&t.topology, "recover", &machine, None, format)
        }
        Command::Switchover {
            shard,
            to,
            t,
            format,
        } => run::command(&t.topology, "switchover", &shard, to.as_deref(), format),
        Command::Unmonitor { machine, t, format } => {
            run::command(&t.topology, "unmonitor", &machine, None, format)
        }
        Command::Monitor { machine, t, format } => {
            run::command(&t.topology, "monitor", &machine, None, format)
        }
        Command::StepDown { t, format } => group::step_down(&t.topology, format),
        Command::Validate { file, format } => plan::validate(&file, format),
        Command::Lab(cmd) => lab::run(cmd),
        Command::Schema { kind } => {
            let schema = match kind {
                SchemaKind::Topology => medic_topology::schema::topology(),
                SchemaKind::Playbook => medic_playbook::schema(),
                SchemaKind::Ami => medic_topology::schema::ami(),
            };
            serde_json::to_string_pretty(&schema)
                .map_err(anyhow::Error::from)
                .and_then(|s| Ok(writeln!(io::stdout(), "{s}")?))
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Import(ImportCommand::Monit {
            monitrc,
            hosts,
            name,
            playbooks,
            out,
        }) => import::monit(&monitrc, hosts.as_deref(), name, playbooks, out.as_deref()),
        Command::Aws(AwsCommand::Check {
            file,
            endpoint,
            format,
        }) => aws_check::aws_check(&file, endpoint, format),
        Command::Plan {
            file,
            lose,
            process,
            switchover,
            files,
            recovery,
            format,
        } => plan::plan(&file, lose, process, switchover, files, &recovery, format),
    };
    match result {
        Ok(code) => code,
        // The reader of our output went away (`| head`): the normal end of it.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<io::Error>()
                    .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::from(141)
        }
        Err(e) => {
            eprintln!("medic: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// A topology with the playbooks it uses.
struct Deployment {
    loaded: LoadedTopology,
    playbooks: Playbooks,
}

/// The playbooks the topology's machines use and its services' hooks, each once. A deployment
/// medic adopted (`managed: false`) is never configured by medic: only its hooks'.
fn playbook_names(l: &LoadedTopology) -> Vec<&str> {
    let managed = l.topology.managed();
    let mut names: Vec<&str> = l
        .topology
        .machines
        .iter()
        .filter(|_| managed)
        .filter_map(|m| m.value.role.value.playbook())
        .chain(
            l.topology
                .services
                .iter()
                .flat_map(|s| s.value.hook_playbooks()),
        )
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The playbooks the topology's machines use, from its `playbooks` directory. A directory
/// that is not there is one error at the topology's `playbooks` field, as a missing AMI
/// definition is at its `amis[i].definition`, not one "cannot open" per playbook.
fn load_playbooks(l: &LoadedTopology) -> Result<Playbooks, Vec<Diagnostic>> {
    let names = playbook_names(l);
    let dir = l.playbook_dir();
    if !names.is_empty() {
        let problem = match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => None,
            Ok(_) => Some(format!("{} is not a directory", dir.display())),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                Some(format!("no directory {}", dir.display()))
            }
            Err(e) => Some(format!("cannot read the directory {}: {e}", dir.display())),
        };
        if let Some(problem) = problem {
            let field = &l.topology.playbooks;
            let pos = medic_topology::diag::Pos::from(field.referenced);
            let default = if pos.known() {
                ""
            } else {
                " (the default: `playbooks` is not set)"
            };
            let files: Vec<String> = names.iter().map(|n| format!("{n}.yaml")).collect();
            return Err(vec![Diagnostic {
                severity: medic_topology::Severity::Error,
                file: l.path.clone(),
                pos,
                path: "playbooks".into(),
                message: format!(
                    "{problem}{default}; expected a directory with the playbooks the machines' \
                     roles and the services' hooks use: {}",
                    files.join(", ")
                ),
            }]);
        }
    }
    Playbooks::load(&dir, names.iter().copied())
}

/// The passwords the topology's `redis_auth` names, read now (from their files or this
/// process's environment).
fn read_secrets(
    loaded: &medic_topology::LoadedTopology,
) -> anyhow::Result<medic_topology::Secrets> {
    let secrets = medic_topology::Secrets::read(&loaded.topology)
        .with_context(|| loaded.path.display().to_string())?;
    redis_client(&loaded.topology, &secrets).with_context(|| loaded.path.display().to_string())?;
    Ok(secrets)
}

/// medic's redis client (its login and TLS) for `top`.
fn redis_client(
    top: &medic_topology::Topology,
    secrets: &medic_topology::Secrets,
) -> anyhow::Result<medic_redis::Redis> {
    Ok(medic_controller::medic_redis_client(top, secrets)?)
}

/// Loads everything without printing; every problem in the error (for SIGHUP).
fn load_quiet(file: &Path) -> Result<Deployment, String> {
    let loaded = load_topology(file).map_err(|e| {
        let lines: Vec<String> = e.diagnostics.iter().map(ToString::to_string).collect();
        format!("{e}:\n{}", lines.join("\n"))
    })?;
    let playbooks = load_playbooks(&loaded).map_err(|d| {
        d.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    Ok(Deployment { loaded, playbooks })
}

/// Loads everything; on failure prints every diagnostic and returns `None`.
fn load(file: &Path, format: Format) -> anyhow::Result<Option<Deployment>> {
    let (loaded, mut diags) = match load_topology(file) {
        Ok(l) => {
            let w = l.warnings.clone();
            (Some(l), w)
        }
        Err(e) => (None, e.diagnostics),
    };
    let mut playbooks = None;
    if let Some(l) = &loaded {
        match load_playbooks(l) {
            Ok(p) => playbooks = Some(p),
            Err(d) => diags.extend(d),
        }
    }
    report(&diags, format)?;
    Ok(match (loaded, playbooks) {
        (Some(loaded), Some(playbooks)) => Some(Deployment { loaded, playbooks }),
        _ => None,
    })
}

fn report(diags: &[Diagnostic], format: Format) -> anyhow::Result<()> {
    match format {
        Format::Text => {
            let mut err = io::stderr().lock();
            for d in diags {
                writeln!(err, "{d}")?;
            }
        }
        Format::Json => {
            if !diags.is_empty() {
                eprintln!(
                    "{}",
                    serde_json::to_string(&serde_json::json!({ "diagnostics": diags }))?
                );
            }
        }
    }
    Ok(())
}
