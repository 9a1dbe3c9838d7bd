//! `services`: names, machines and their roles, ports, checks, the record that follows the
//! primary, and the hooks' playbooks.

use std::collections::BTreeSet;

use super::{Ctx, MAX_TTL, check_name};
use crate::model::{Provider, Role};
use crate::service::CheckKind;

impl Ctx<'_, '_> {
    pub(super) fn services(&mut self) {
        let top = self.top;
        self.duplicates(
            top.services
                .iter()
                .enumerate()
                .map(|(i, s)| (&s.value.name, format!("services[{i}].name"))),
            "service",
        );
        let mut records = BTreeSet::new();
        let mut addresses = BTreeSet::new();
        for (i, ss) in top.services.iter().enumerate() {
            let s = &ss.value;
            let p = format!("services[{i}]");
            check_name(self.d, &s.name, &format!("{p}.name"));
            if top.shard(&s.name.value).is_some() {
                self.d.error(
                    s.name.referenced,
                    format!("{p}.name"),
                    format!("`{}` is also a shard's name; expected a name of its own (`medic switchover NAME` takes either)", s.name.value),
                );
            }
            if s.port.value == 0 {
                self.d.error(
                    s.port.referenced,
                    format!("{p}.port"),
                    "port 0; expected a port from 1 to 65535",
                );
            }
            self.machine_ref(&s.primary, &format!("{p}.primary"), Role::Service);
            if s.standbys.is_empty() {
                self.d.error(
                    ss.referenced,
                    format!("{p}.standbys"),
                    format!("service `{}` has no standby; expected at least one machine (a primary alone cannot fail over)", s.name.value),
                );
            }
            let mut seen = BTreeSet::new();
            for (j, m) in s.standbys.iter().enumerate() {
                let sp = format!("{p}.standbys[{j}]");
                self.machine_ref(m, &sp, Role::Service);
                if m.value == s.primary.value {
                    self.d.error(
                        m.referenced,
                        sp,
                        format!("machine `{}` is the primary of service `{}`; expected a standby on another machine", m.value, s.name.value),
                    );
                } else if !seen.insert(m.value.as_str()) {
                    self.d.error(
                        m.referenced,
                        sp,
                        format!(
                            "machine `{}` is listed twice; expected each standby once",
                            m.value
                        ),
                    );
                }
            }
            let check = &s.check.value;
            let cp = format!("{p}.check");
            self.cadence(s.check.referenced, &cp, &check.cadence());
            self.check_fields(s.check.referenced, &cp, check);
            for (j, more) in s.more_checks.iter().enumerate() {
                let mp = format!("{p}.more_checks[{j}]");
                self.check_fields(more.referenced, &mp, &more.value.as_check(check));
                if more.value.port == Some(0) {
                    self.d.error(
                        more.referenced,
                        format!("{mp}.port"),
                        "port 0; expected the port the check asks, 1 to 65535",
                    );
                }
                if more.value.kind == CheckKind::Postgres
                    && (check.kind == CheckKind::Postgres
                        || s.more_checks[..j]
                            .iter()
                            .any(|m| m.value.kind == CheckKind::Postgres))
                {
                    self.d.error(
                        more.referenced,
                        format!("{mp}.kind"),
                        "a second postgres check; expected one per service (its database's role and position are the service's)",
                    );
                }
            }
            if let Some(d) = &s.dns {
                let dp = format!("{p}.dns");
                match &top.dns {
                    None => self.d.error(
                        d.referenced,
                        dp.clone(),
                        "no `dns.provider` to change the record with; expected a top-level `dns` with a provider (its `records` may be empty)",
                    ),
                    Some(dns) => {
                        let zone = dns.value.provider.value.zone().trim_end_matches('.').to_ascii_lowercase();
                        let name = d.value.name.trim_end_matches('.').to_ascii_lowercase();
                        if !zone.is_empty() && name != zone && !name.ends_with(&format!(".{zone}")) {
                            self.d.error(
                                d.referenced,
                                format!("{dp}.name"),
                                format!("`{}` is outside the zone {zone}; expected a name ending in .{zone}", d.value.name),
                            );
                        }
                        if dns.value.records.iter().any(|r| r.value.name.value.trim_end_matches('.').eq_ignore_ascii_case(&name)) {
                            self.d.error(
                                d.referenced,
                                format!("{dp}.name"),
                                format!("`{}` is also in dns.records, which lists its machines; expected a record of its own that follows the primary", d.value.name),
                            );
                        }
                    }
                }
                if !records.insert(d.value.name.trim_end_matches('.').to_ascii_lowercase()) {
                    self.d.error(
                        d.referenced,
                        format!("{dp}.name"),
                        format!("`{}` follows another service's primary too; expected one service per record", d.value.name),
                    );
                }
                if d.value.routing == crate::service::DnsRouting::Failover {
                    if !matches!(
                        top.dns.as_ref().map(|d| &d.value.provider.value),
                        Some(crate::model::DnsProvider::Route53(_))
                    ) {
                        self.d.error(
                            d.referenced,
                            format!("{dp}.routing"),
                            "failover routing is Route 53's; expected the route53 dns provider, or `routing: simple`",
                        );
                    }
                    if check.kind == CheckKind::Command {
                        self.d.error(
                            d.referenced,
                            format!("{dp}.routing"),
                            "Route 53's health checks cannot run a command; expected a tcp, http, https or postgres check for failover routing (https and postgres are checked by a TCP connection)",
                        );
                    }
                }
                if let Some(ttl) = d.value.ttl
                    && !(0..=MAX_TTL).contains(&ttl)
                {
                    self.d.error(
                        d.referenced,
                        format!("{dp}.ttl"),
                        format!("TTL {ttl} is out of range; expected 0 to {MAX_TTL} seconds (low, like 5, so clients follow a failover soon)"),
                    );
                }
            }
            if let Some(x) = &s.proxy {
                let xp = format!("{p}.proxy");
                if top.proxies.value.machines.is_empty() {
                    self.d.error(
                        x.referenced,
                        xp.clone(),
                        "no proxy machine to route the service through; expected `proxies.machines` (with its `runtime_api`), its `frontends` may be empty",
                    );
                }
                if x.value.listen.value == 0 {
                    self.d.error(
                        x.value.listen.referenced,
                        format!("{xp}.listen"),
                        "port 0; expected the port clients connect to on the proxies, 1 to 65535",
                    );
                }
                if x.value.mode == crate::service::ProxyMode::Http
                    && matches!(check.kind, CheckKind::Https | CheckKind::Postgres)
                {
                    self.d.error(
                        x.referenced,
                        format!("{xp}.mode"),
                        format!("HTTP mode sends plain HTTP to the servers, but the service's check says they speak {}; expected `mode: tcp` (passed through as it is)", if check.kind == CheckKind::Https { "TLS" } else { "PostgreSQL" }),
                    );
                }
                let path = check.http_path();
                if check.kind == CheckKind::Http && !crate::service::haproxy_safe_path(path) {
                    self.d.warning(
                        s.check.referenced,
                        format!("{p}.check.path"),
                        format!("`{}` cannot be written into haproxy.cfg as it is, so HAProxy's own check of each server only connects; expected a path of printable characters without spaces, quotes, `#` or `\\`", path.escape_debug()),
                    );
                }
                // The proxies' frontends are `fe-SHARD` and `fe-service-NAME`.
                if top.shard(&format!("service-{}", s.name.value)).is_some() {
                    self.d.error(
                        s.name.referenced,
                        format!("{p}.name"),
                        format!("a shard is named `service-{}`, whose frontend on the proxies would be this service's; expected another name for one of them", s.name.value),
                    );
                }
            }
            if let Some(a) = &s.address {
                let ap = format!("{p}.address");
                if let Some((ip, _)) = a.value.parsed() {
                    if !addresses.insert(ip) {
                        self.d.error(
                            a.referenced,
                            format!("{ap}.ip"),
                            format!("{ip} is another service's address too; expected one address per service"),
                        );
                    }
                    if let Some(m) = top.machines.iter().find(|m| {
                        m.value.address.as_ref().map(|x| x.value) == Some(std::net::IpAddr::V4(ip))
                    }) {
                        self.d.error(
                            a.referenced,
                            format!("{ap}.ip"),
                            format!("{ip} is machine `{}`'s own address; expected an address of the service's own, which moves", m.value.name.value),
                        );
                    }
                }
                if a.value.parsed().is_none() {
                    self.d.error(
                        a.referenced,
                        format!("{ap}.ip"),
                        format!("`{}` is not an IPv4 address with a prefix length; expected e.g. 10.0.0.100/24", a.value.ip),
                    );
                }
                let i = &a.value.interface;
                if i.is_empty()
                    || i.len() > 15
                    || !i
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
                {
                    self.d.error(
                        a.referenced,
                        format!("{ap}.interface"),
                        format!("`{}` is not an interface name; expected 1 to 15 letters, digits, `-`, `_`, `.` or `:`, e.g. eth0", i.escape_debug()),
                    );
                }
                if let Provider::Aws(_) = top.provider.value {
                    // A secondary private IP belongs to one subnet: every machine it moves to
                    // must be in it (machines of a role are otherwise spread over the subnets).
                    let placed: Vec<(String, String)> = s
                        .machines()
                        .filter_map(|m| {
                            let machine = top.machine(m)?;
                            Some((m.to_owned(), top.subnet_for(machine).unwrap_or_default()))
                        })
                        .collect();
                    let subnets: BTreeSet<&str> = placed.iter().map(|(_, s)| s.as_str()).collect();
                    if subnets.len() > 1 {
                        let said: Vec<String> = placed
                            .iter()
                            .map(|(m, s)| {
                                format!("{m} in {}", if s.is_empty() { "none" } else { s })
                            })
                            .collect();
                        self.d.error(
                            a.referenced,
                            format!("{ap}.ip"),
                            format!("an address that moves between EC2 instances is a secondary private IP of one subnet, but the service's machines are in several ({}); expected `subnet:` on each of them, the same one", said.join(", ")),
                        );
                    }
                }
                match (&a.value.elastic_ip, &top.provider.value) {
                    (Some(e), Provider::Aws(_)) if !is_allocation_id(e) => self.d.error(
                        a.referenced,
                        format!("{ap}.elastic_ip"),
                        format!("`{}` is not an Elastic IP allocation id; expected eipalloc- and 8 or 17 hex digits, e.g. eipalloc-0123456789abcdef0", e.escape_debug()),
                    ),
                    (Some(_), Provider::Aws(_)) | (None, _) => {}
                    (Some(_), _) => self.d.error(
                        a.referenced,
                        format!("{ap}.elastic_ip"),
                        "an Elastic IP moves only on the aws provider; expected no elastic_ip here",
                    ),
                }
            }
            if s.failback == crate::service::Failback::Automatic {
                if s.hooks.on_demote.is_none()
                    && s.hooks.on_fenced.is_none()
                    && s.rejoin.is_none()
                    && !s.standbys_read_only
                {
                    self.d.error(
                        ss.referenced,
                        format!("{p}.failback"),
                        "automatic failback is a switchover, which demotes the primary first; expected an on_demote (or on_fenced) hook, `rejoin` (medic then stops its PostgreSQL), or `standbys_read_only: true`",
                    );
                }
                let rise_ms = cadence_rise_ms(&check.cadence());
                if (s.failback_after.as_millis() as u64) < rise_ms.max(1000) {
                    self.d.error(
                        ss.referenced,
                        format!("{p}.failback_after"),
                        format!("{} is too short; expected at least 1s and the time `rise` checks take ({} ms), or the role would flap", s.failback_after, rise_ms),
                    );
                }
            }
            if s.hooks.on_fenced.is_none()
                && s.rejoin.is_none()
                && !s.standbys_read_only
                && !s.active_active()
            {
                self.d.warning(
                    ss.referenced,
                    format!("{p}.hooks.on_fenced"),
                    format!("no on_fenced hook: a primary of `{}` that fails its checks while its machine answers is not failed over (medic could not stop it serving beside a second one); expected a playbook that stops it taking clients, `rejoin` (medic then stops its PostgreSQL itself), or `standbys_read_only: true` if they never take writes", s.name.value),
                );
            }
            self.rejoin(&p, s);
            self.active_active(&p, ss);
            for (hook, name) in [
                ("on_fenced", &s.hooks.on_fenced),
                ("on_promote", &s.hooks.on_promote),
                ("on_demote", &s.hooks.on_demote),
            ] {
                if let Some(n) = name {
                    check_name(self.d, n, &format!("{p}.hooks.{hook}"));
                }
            }
        }
        // A machine of role service that no service names is checked by nobody.
        for (i, m) in top.machines.iter().enumerate() {
            let m = &m.value;
            if m.role.value == Role::Service && top.services_on(&m.name.value).next().is_none() {
                self.d.warning(
                    m.name.referenced,
                    format!("machines[{i}].role"),
                    format!("machine `{}` has role service but no service names it; medic does not check it", m.name.value),
                );
            }
        }
    }
}

impl Ctx<'_, '_> {
    /// The fields of one check (`check`, or one of `more_checks` as a check): those of its
    /// kind only, each well formed.
    fn check_fields(
        &mut self,
        at: serde_saphyr::Location,
        cp: &str,
        check: &crate::service::ServiceCheck,
    ) {
        if !matches!(check.kind, CheckKind::Http | CheckKind::Https) {
            for (field, set) in [
                ("path", check.path.is_some()),
                ("status", check.status.is_some()),
                ("body", check.body.is_some()),
            ] {
                if set {
                    self.d.error(
                        at,
                        format!("{cp}.{field}"),
                        format!(
                            "`{field}` is for an http or https check; expected `kind: http` or `kind: https`, or no `{field}`"
                        ),
                    );
                }
            }
        }
        if check.kind != CheckKind::Https {
            for (field, set) in [
                ("ca_file", check.ca_file.is_some()),
                ("server_name", check.server_name.is_some()),
            ] {
                if set {
                    self.d.error(
                        at,
                        format!("{cp}.{field}"),
                        format!("`{field}` is for an https check; expected `kind: https`, or no `{field}`"),
                    );
                }
            }
        }
        if let Some(f) = &check.ca_file
            && !f.is_absolute()
        {
            self.d.error(
                at,
                format!("{cp}.ca_file"),
                format!(
                    "`{}`: expected an absolute path on the controller's host",
                    f.display()
                ),
            );
        }
        if let Some(n) = &check.server_name
            && (n.is_empty()
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':')))
        {
            self.d.error(
                at,
                format!("{cp}.server_name"),
                format!(
                    "`{}`: expected a DNS name or an address the certificate is issued for",
                    n.escape_debug()
                ),
            );
        }
        match (&check.command, check.kind) {
            (None, CheckKind::Command) => self.d.error(
                at,
                format!("{cp}.command"),
                "no command; expected the shell command a `kind: command` check runs on the machine (exit 0 is healthy)",
            ),
            (Some(c), CheckKind::Command)
                if c.trim().is_empty() || c.chars().any(|ch| ch.is_control()) =>
            {
                self.d.error(
                    at,
                    format!("{cp}.command"),
                    "expected a one-line shell command, not empty",
                )
            }
            (
                Some(_),
                CheckKind::Tcp | CheckKind::Http | CheckKind::Https | CheckKind::Postgres,
            ) => self.d.error(
                at,
                format!("{cp}.command"),
                "`command` is for a command check; expected `kind: command`, or no `command`",
            ),
            _ => {}
        }
        if check.kind != CheckKind::Postgres {
            for (field, set) in [
                ("user", check.user.is_some()),
                ("database", check.database.is_some()),
                ("password_file", check.password_file.is_some()),
            ] {
                if set {
                    self.d.error(
                        at,
                        format!("{cp}.{field}"),
                        format!("`{field}` is for a postgres check; expected `kind: postgres`, or no `{field}`"),
                    );
                }
            }
        }
        for (field, value) in [("user", &check.user), ("database", &check.database)] {
            if let Some(v) = value
                && (v.is_empty() || v.chars().any(|c| c.is_control() || c.is_whitespace()))
            {
                self.d.error(
                    at,
                    format!("{cp}.{field}"),
                    format!("`{}`: expected a PostgreSQL {field} name, without spaces or control characters", v.escape_debug()),
                );
            }
        }
        if let Some(f) = &check.password_file
            && !f.is_absolute()
        {
            self.d.error(
                at,
                format!("{cp}.password_file"),
                format!(
                    "`{}`: expected an absolute path on the controller's host",
                    f.display()
                ),
            );
        }
        if let Some(path) = &check.path
            && (!path.starts_with('/') || path.chars().any(|c| c.is_control() || c == ' '))
        {
            self.d.error(
                at,
                format!("{cp}.path"),
                format!("`{}`: expected an absolute path like /health, without spaces or control characters", path.escape_debug()),
            );
        }
        if let Some(status) = check.status
            && !(100..=599).contains(&status)
        {
            self.d.error(
                at,
                format!("{cp}.status"),
                format!("{status} is not an HTTP status; expected 100 to 599"),
            );
        }
        if let Some(body) = &check.body
            && (body.is_empty() || body.chars().any(|c| c.is_control()))
        {
            self.d.error(
                at,
                format!("{cp}.body"),
                "expected text the healthy answer contains, on one line and not empty",
            );
        }
    }
}

/// How long `rise` good checks in a row take.
fn cadence_rise_ms(c: &crate::model::Check) -> u64 {
    c.interval.as_millis() as u64 * u64::from(c.rise.max(1))
}

/// `eipalloc-` and 8 or 17 lowercase hex digits, as EC2 writes allocation ids.
fn is_allocation_id(s: &str) -> bool {
    s.strip_prefix("eipalloc-").is_some_and(|h| {
        matches!(h.len(), 8 | 17)
            && h.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}
