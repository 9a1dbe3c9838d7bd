//! A monit control file mapped onto a draft topology, with a report of each line's fate:
//! **mapped** (medic does the same), **assumed** (the file does not say; the draft guesses and
//! says so) or **not mapped** (medic does not do it, or the file does not say enough).
//!
//! What is mapped:
//! - `check host NAME with address A` → a machine; A, or its entry in the hosts file, is its
//!   address. Its role: `redis` if it is tested with `protocol redis`, `haproxy` if its name
//!   or its failover command says haproxy.
//! - each redis port → a shard `rPORT`; its master is the first host tested on that port (the
//!   roles change after any failover: medic reads the current ones at start), the others are
//!   replicas.
//! - an HAProxy's tested ports → frontends, paired with the shards in port order.
//! - `set daemon N` and `for K cycles` → the checks' interval and `fall`; `with timeout`.
//! - `then exec "failover ..."` → medic's own recovery plan.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::monitrc::{Action, Check, Condition, Monitrc, Test};

/// What the draft did with a part of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Mapped,
    Assumed,
    NotMapped,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub verdict: Verdict,
    /// The control file's line, if the note is about one.
    pub line: Option<usize>,
    pub text: String,
}

/// Choices the control file cannot make.
#[derive(Debug, Clone)]
pub struct Options {
    /// The control file's name, for the draft's header and the report.
    pub source: String,
    /// The deployment's name (else the hosts' common domain, else `imported`).
    pub name: Option<String>,
    /// The playbooks directory the draft names.
    pub playbooks: String,
}

/// The draft topology (YAML, its report in a comment at the top) and the report.
#[derive(Debug, Clone)]
pub struct Draft {
    pub yaml: String,
    pub notes: Vec<Note>,
}

/// `/etc/hosts` lines: each name (and alias) to its address; the first line naming it wins.
pub fn parse_hosts(text: &str) -> BTreeMap<String, IpAddr> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) else {
            continue;
        };
        for name in words {
            out.entry(name.to_owned()).or_insert(ip);
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Redis,
    Haproxy,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Redis => "redis",
            Role::Haproxy => "haproxy",
        }
    }
}

/// A `check host` the draft keeps.
pub(crate) struct Machine<'a> {
    pub(crate) check: &'a Check,
    /// Its name in the draft (monit's, made valid).
    pub(crate) name: String,
    pub(crate) role: Role,
    pub(crate) address: Result<IpAddr, String>,
    /// Ports tested (redis: those with `protocol redis`).
    ports: BTreeSet<u16>,
}

struct Notes(Vec<Note>);

impl Notes {
    fn add(&mut self, verdict: Verdict, line: Option<usize>, text: impl Into<String>) {
        self.0.push(Note {
            verdict,
            line,
            text: text.into(),
        });
    }
}

/// Maps a read control file onto a draft topology.
pub fn draft(rc: &Monitrc, hosts: &BTreeMap<String, IpAddr>, opts: &Options) -> Draft {
    let mut notes = Notes(Vec::new());
    settings(rc, &mut notes);
    let machines = machines(rc, hosts, &mut notes);
    let name = opts
        .name
        .clone()
        .or_else(|| common_domain(&machines))
        .unwrap_or_else(|| "imported".to_owned());
    let (interval_s, cycles, timeout_ms) = cadence(rc, &machines, &mut notes);
    // Shards: each redis port, the first host tested on it its master.
    let mut shards: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
    for m in machines.iter().filter(|m| m.role == Role::Redis) {
        for p in &m.ports {
            shards.entry(*p).or_default().push(&m.name);
        }
    }
    for (port, on) in &shards {
        let line = machines
            .iter()
            .find(|m| m.name == on[0])
            .map(|m| m.check.line);
        notes.add(
            Verdict::Assumed,
            line,
            format!(
                "shard r{port}: {} is its master (the first host tested on port {port}){}; medic reads the current roles at start and keeps them in its state",
                on[0],
                if on.len() > 1 {
                    format!(", replicas: {}", on[1..].join(", "))
                } else {
                    ", with no replica: a failover has nothing to promote".to_owned()
                }
            ),
        );
    }
    let proxies: Vec<&Machine> = machines
        .iter()
        .filter(|m| m.role == Role::Haproxy)
        .collect();
    let frontends = frontends(&proxies, &shards, &mut notes);
    notes.add(
        Verdict::NotMapped,
        None,
        "app-side proxies (seed 003's app machine) are not in monit's file: add app_proxies so medic repoints them",
    );
    notes.add(
        Verdict::NotMapped,
        None,
        "DNS records (the step done by hand after a failover): add dns so medic updates them",
    );
    notes.add(
        Verdict::Assumed,
        None,
        "managed: false: medic adopts the deployment as it runs, failing over through the HAProxies' runtime API and the redis servers alone; it writes no haproxy.cfg, restarts no redis and replaces no machine (docs/topology.md, \"Adopting a deployment\")",
    );
    notes.add(
        Verdict::Assumed,
        None,
        "provider static: medic fails over but launches no replacement; to replace machines from an AMI as a failover script does, use provider aws with amis (docs/topology.md)",
    );
    notes.add(
        Verdict::Assumed,
        None,
        "the monitor machine (where medic runs) at 127.0.0.1, ssh as medic with /etc/medic/id_ed25519, the controller on 127.0.0.1:7600 with its state in /var/lib/medic",
    );
    let yaml = crate::render::yaml(
        &name,
        opts,
        &machines,
        &shards,
        &frontends,
        (interval_s, cycles, timeout_ms),
    );
    let mut d = Draft {
        yaml: String::new(),
        notes: notes.0,
    };
    let mut head = format!(
        "# yaml-language-server: $schema=/usr/share/medic/schema/topology.schema.json\n# A draft topology, written by `medic import monit` from {}.\n# Read it through, and each assumption below, before `medic validate` and `medic run`.\n#\n",
        opts.source
    );
    for l in d.report(&opts.source).lines() {
        let _ = writeln!(head, "# {l}");
    }
    d.yaml = format!("{head}\n{yaml}");
    d
}

fn settings(rc: &Monitrc, notes: &mut Notes) {
    for (line, text) in &rc.settings {
        let word = text.split_whitespace().nth(1).unwrap_or_default();
        let why = match word.to_ascii_lowercase().as_str() {
            "logfile" => "medic logs to stderr (the journal, under systemd)",
            "alert" | "mailserver" | "mail-format" => {
                "medic sends no mail: it posts to webhooks (notifications)"
            }
            "httpd" => "medic's API and status page listen on controller.listen",
            "pidfile" | "idfile" | "statefile" | "eventqueue" | "init" | "limits" => {
                "medic keeps its own state (controller.state_dir)"
            }
            _ if text.to_ascii_lowercase().starts_with("include") => {
                "not followed: import each included file on its own"
            }
            _ => "medic has no such setting",
        };
        notes.add(Verdict::NotMapped, Some(*line), format!("{text}: {why}"));
    }
}

fn machines<'a>(
    rc: &'a Monitrc,
    hosts: &BTreeMap<String, IpAddr>,
    notes: &mut Notes,
) -> Vec<Machine<'a>> {
    let mut out: Vec<Machine<'a>> = Vec::new();
    for c in &rc.checks {
        if c.kind != "host" {
            let why = if c.kind == "process" {
                "medic checks a server through its port on its machine (a `check host`), and, in a deployment it manages, restarts a dead one itself (policy.remediation restart_process)"
            } else {
                "resource checks are not medic's job: keep monit (or a node exporter and Prometheus) for them"
            };
            notes.add(
                Verdict::NotMapped,
                Some(c.line),
                format!("check {} {}: {why}", c.kind, c.name),
            );
            continue;
        }
        let says_haproxy = c.name.to_ascii_lowercase().contains("haproxy")
            || c.tests.iter().any(|t| {
                matches!(&t.action, Action::Exec(cmd) if cmd.to_ascii_lowercase().contains("haproxy"))
            });
        let redis_port = |t: &Test| matches!(&t.condition, Condition::Port { protocol, .. } if protocol.as_deref() == Some("redis"));
        let role = if says_haproxy {
            notes.add(
                Verdict::Assumed,
                Some(c.line),
                format!(
                    "{} runs HAProxy in front of the redis servers (its name or its failover command says haproxy)",
                    c.name
                ),
            );
            Role::Haproxy
        } else if c.tests.iter().any(redis_port) {
            Role::Redis
        } else {
            notes.add(
                Verdict::NotMapped,
                Some(c.line),
                format!(
                    "check host {}: neither a redis server (protocol redis) nor an HAProxy (by its name or failover command); a primary/standby service is described under services (docs/topology.md)",
                    c.name
                ),
            );
            continue;
        };
        // The ports medic will check: those of the tests it maps.
        let ports = c
            .tests
            .iter()
            .filter(|t| judge(c, t, role).0 == Verdict::Mapped)
            .filter_map(|t| match &t.condition {
                Condition::Port { port, .. } => Some(*port),
                _ => None,
            })
            .collect();
        let name = machine_name(&c.name, out.iter().map(|m| m.name.as_str()));
        if name != c.name {
            notes.add(
                Verdict::Assumed,
                Some(c.line),
                format!(
                    "check host {} is machine {name} (a machine's name is 1 to 63 lowercase letters, digits and -)",
                    c.name
                ),
            );
        }
        let address = resolve(c, hosts);
        match &address {
            Ok(ip) => notes.add(
                Verdict::Mapped,
                Some(c.line),
                format!(
                    "check host {} → machine {name}, role {}, address {ip}{}",
                    c.name,
                    role.as_str(),
                    match c.address.as_deref() {
                        Some(a) if a.parse::<IpAddr>().is_err() => format!(" ({a} in the hosts file)"),
                        _ => String::new(),
                    }
                ),
            ),
            Err(a) => notes.add(
                Verdict::NotMapped,
                Some(c.line),
                format!(
                    "the address of {}: {a} is not an IP address and not in the hosts file (--hosts FILE); the draft says TODO",
                    c.name
                ),
            ),
        }
        tests(c, role, &name, notes);
        out.push(Machine {
            check: c,
            name,
            role,
            address,
            ports,
        });
    }
    out
}

/// A valid machine name for a monit check's name: its first label if it is a host name,
/// lowercase, `-` for anything else, `-2`, `-3`, ... if taken; never `monitor` (the draft's
/// own monitor machine).
fn machine_name<'a>(check: &str, taken: impl Iterator<Item = &'a str> + Clone) -> String {
    let first = if check.parse::<IpAddr>().is_ok() {
        check
    } else {
        check.split('.').next().unwrap_or(check)
    };
    let mut n: String = first
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    n = n.trim_matches('-').chars().take(56).collect();
    if n.is_empty() || n == "monitor" {
        n = format!("host-{n}").trim_end_matches('-').to_owned();
    }
    let mut name = n.clone();
    let mut k = 2;
    while taken.clone().any(|t| t == name) {
        name = format!("{n}-{k}");
        k += 1;
    }
    name
}

fn resolve(c: &Check, hosts: &BTreeMap<String, IpAddr>) -> Result<IpAddr, String> {
    let a = c.address.as_deref().unwrap_or(&c.name);
    a.parse::<IpAddr>()
        .ok()
        .or_else(|| hosts.get(a).copied())
        .or_else(|| hosts.get(&c.name).copied())
        .ok_or_else(|| a.to_owned())
}

/// What a test of a kept host becomes: mapped (and what medic does in its place) or not (and
/// why).
fn judge(c: &Check, t: &Test, role: Role) -> (Verdict, String) {
    let (verdict, what) = match (&t.condition, role) {
        (Condition::Port { host: Some(h), .. }, _)
            if *h != c.name && c.address.as_deref() != Some(h.as_str()) =>
        {
            (
                Verdict::NotMapped,
                format!("it tests another host ({h}): describe that host by a `check host` of its own"),
            )
        }
        (Condition::Port { protocol, .. }, Role::Redis) if protocol.as_deref() == Some("redis") => {
            (Verdict::Mapped, "medic's redis check (PING, then ROLE and replication)".to_owned())
        }
        (Condition::Port { protocol: Some(p), .. }, _) if p == "ssh" => (
            Verdict::NotMapped,
            "medic uses SSH itself (its steps, and telling a lost machine from a dead process): no test of its own".to_owned(),
        ),
        (Condition::Port { protocol: Some(p), .. }, Role::Haproxy) if p != "tcp" && p != "redis" => (
            Verdict::NotMapped,
            format!("medic does not check {p} here"),
        ),
        (Condition::Port { protocol: Some(p), .. }, Role::Redis) if p != "tcp" => (
            Verdict::NotMapped,
            format!("medic does not check {p} here"),
        ),
        (Condition::Port { .. }, Role::Haproxy) => (
            Verdict::Mapped,
            "medic's HAProxy checks (its frontends and its runtime API)".to_owned(),
        ),
        (Condition::Port { .. }, Role::Redis) => (
            Verdict::NotMapped,
            "a port without protocol redis on a redis machine: medic checks only its redis servers".to_owned(),
        ),
        (Condition::Ping, _) => (
            Verdict::Mapped,
            "medic tells a lost machine from a dead process itself (SSH, and witnesses that must agree)".to_owned(),
        ),
        (Condition::Other, _) => (
            Verdict::NotMapped,
            "not a test medic makes: keep monit for it".to_owned(),
        ),
    };
    (verdict, what)
}

/// A failover script's command, by its name.
fn is_failover(cmd: &str) -> bool {
    cmd.to_ascii_lowercase().contains("failover")
}

/// What each test of a kept host becomes, and its action, and what follows it.
fn tests(c: &Check, role: Role, name: &str, notes: &mut Notes) {
    let mut execs = BTreeSet::new();
    for t in &c.tests {
        let (verdict, what) = judge(c, t, role);
        let condition = t.text.split(" then ").next().unwrap_or(&t.text);
        notes.add(verdict, Some(t.line), format!("`{condition}` → {what}"));
        if verdict != Verdict::Mapped {
            continue;
        }
        match &t.action {
            Action::Exec(cmd) if is_failover(cmd) => {
                if execs.insert(cmd.clone()) {
                    notes.add(
                        Verdict::Mapped,
                        Some(t.line),
                        format!(
                            "`exec \"{cmd}\"` → medic's own recovery (`medic plan FILE --lose {name}` prints its steps)"
                        ),
                    );
                }
            }
            Action::Exec(cmd) => notes.add(
                Verdict::NotMapped,
                Some(t.line),
                format!("`exec \"{cmd}\"`: medic runs no script of yours on a failure; it posts to webhooks (notifications)"),
            ),
            Action::Alert => notes.add(
                Verdict::NotMapped,
                Some(t.line),
                "`then alert`: medic sends no mail; it posts to webhooks (notifications)",
            ),
            a => notes.add(
                Verdict::NotMapped,
                Some(t.line),
                format!("`then {}`: medic recovers by its own plan instead", action_word(a)),
            ),
        }
        for extra in [&t.otherwise, &t.rest].into_iter().flatten() {
            notes.add(
                Verdict::NotMapped,
                Some(t.line),
                format!("`{extra}`: medic has no use for it (a machine that passes again rejoins by itself)"),
            );
        }
    }
    if let Some(n) = c.every {
        notes.add(
            Verdict::Mapped,
            Some(c.line),
            format!(
                "`every {n} cycles` (check host {}) → counted in the checks' interval",
                c.name
            ),
        );
    }
    for (line, text) in &c.other {
        notes.add(
            Verdict::NotMapped,
            Some(*line),
            format!("`{text}` (check host {}): medic has no use for it", c.name),
        );
    }
}

fn action_word(a: &Action) -> &str {
    match a {
        Action::Alert => "alert",
        Action::Restart => "restart",
        Action::Start => "start",
        Action::Stop => "stop",
        Action::Unmonitor => "unmonitor",
        Action::Exec(_) => "exec",
        Action::Other(w) => w,
    }
}

/// The checks' cadence: monit's poll interval (times the longest `every N cycles` of a kept
/// check), the failures it waited for and its timeout, from the tests medic maps; the timeout
/// below the interval, as medic needs.
fn cadence(rc: &Monitrc, machines: &[Machine], notes: &mut Notes) -> (u64, u32, u64) {
    let poll_s = match rc.daemon {
        Some((n, line)) => {
            notes.add(
                Verdict::Mapped,
                Some(line),
                format!("set daemon {n} → the checks' interval (medic's default for redis is 250ms: consider it)"),
            );
            n.clamp(1, 86_400)
        }
        None => {
            notes.add(
                Verdict::Assumed,
                None,
                "no `set daemon`: checks every 30s, monit's usual cycle",
            );
            30
        }
    };
    let every = machines
        .iter()
        .filter_map(|m| m.check.every)
        .max()
        .unwrap_or(1)
        .min(1000);
    let interval_s = poll_s * u64::from(every);
    let kept: Vec<&Test> = machines
        .iter()
        .flat_map(|m| {
            m.check
                .tests
                .iter()
                .filter(move |t| judge(m.check, t, m.role).0 == Verdict::Mapped)
        })
        .collect();
    let cycles = kept.iter().map(|t| t.cycles).max().unwrap_or(1).min(1000);
    // The port tests' timeout (monit's default: 5 s).
    let timeout_s = kept
        .iter()
        .filter(|t| matches!(t.condition, Condition::Port { .. }))
        .filter_map(|t| t.timeout_s)
        .max()
        .unwrap_or(5);
    // Below the interval, or checks pile up.
    let timeout_ms = timeout_s.saturating_mul(1000).min(interval_s * 800);
    notes.add(
        Verdict::Mapped,
        None,
        format!(
            "interval {interval_s}s, fall {cycles} (the most failed cycles a mapped test waited for), timeout {timeout_ms}ms: a silent node is judged down after about {}s, as monit did",
            interval_s * u64::from(cycles)
        ),
    );
    (interval_s, cycles, timeout_ms)
}

/// An HAProxy's tested ports, paired with the shards in port order.
fn frontends(
    proxies: &[&Machine],
    shards: &BTreeMap<u16, Vec<&str>>,
    notes: &mut Notes,
) -> Vec<(u16, u16)> {
    let ports: BTreeSet<u16> = proxies
        .iter()
        .flat_map(|m| m.ports.iter().copied())
        .collect();
    if proxies.is_empty() {
        return Vec::new();
    }
    if ports.len() != shards.len() {
        notes.add(
            Verdict::NotMapped,
            proxies.first().map(|m| m.check.line),
            format!(
                "the HAProxies' frontends: {} port(s) tested for {} shard(s), so which serves which is unknown; fill proxies.frontends in",
                ports.len(),
                shards.len()
            ),
        );
        return Vec::new();
    }
    let pairs: Vec<(u16, u16)> = ports.iter().copied().zip(shards.keys().copied()).collect();
    notes.add(
        Verdict::Assumed,
        proxies.first().map(|m| m.check.line),
        format!(
            "the HAProxies' frontends serve the shards in port order ({}); each HAProxy's runtime API is a TCP socket on its address, port 9999 (`stats socket ipv4@ADDRESS:9999 level admin`, firewalled to the monitor host); its backends are named as medic names them (redis-rPORT, the servers after the hosts): set each shard's `backend` to the name in haproxy.cfg",
            pairs
                .iter()
                .map(|(f, s)| format!("{f} → r{s}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    pairs
}

/// `barton` from hosts all named `*.barton.internal`.
fn common_domain(machines: &[Machine]) -> Option<String> {
    let domains: BTreeSet<&str> = machines
        .iter()
        .map(|m| {
            m.check
                .address
                .as_deref()
                .filter(|a| a.parse::<IpAddr>().is_err())
                .and_then(|a| a.split_once('.'))
                .map(|(_, d)| d)
        })
        .collect::<Option<_>>()?;
    if domains.len() != 1 {
        return None;
    }
    let only = domains.into_iter().next()?;
    let label = only.split('.').next()?;
    (label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') && !label.is_empty())
        .then(|| label.to_owned())
}

#[cfg(test)]
#[path = "draft_tests.rs"]
mod tests;
