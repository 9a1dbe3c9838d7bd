//! The validation pass: every problem in a parsed topology, each located, none stopping the rest.

use std::collections::{BTreeMap, BTreeSet};

use serde_saphyr::{Location, Spanned};

use crate::diag::Diagnostics;
use crate::model::*;

/// Route 53 accepts TTLs from 0 to 2^31-1 seconds (RFC 2181's range for any DNS server too).
pub const MAX_TTL: i64 = 2_147_483_647;

/// A name medic uses in tags, HAProxy backends and file names.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub(super) fn check_name(d: &mut Diagnostics, name: &Spanned<String>, path: &str) {
    if !is_name(&name.value) {
        d.error(
            name.referenced,
            path,
            format!(
                "`{}` is not a valid name; expected 1 to 63 lowercase letters, digits and '-', \
                 not starting or ending with '-'",
                name.value
            ),
        );
    }
}

fn one_of<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut v: Vec<&str> = Vec::new();
    for n in names {
        if !v.contains(&n) {
            v.push(n);
        }
    }
    if v.is_empty() {
        "none is defined".to_owned()
    } else {
        format!("expected one of {}", v.join(", "))
    }
}

/// Checks the whole topology; the caller decides what errors mean.
mod active;
mod adopt;
mod auth;
mod dns;
mod ports;
mod provider;
mod proxies;
mod rejoin;
mod rendered;
mod service;
mod spares;

pub fn validate(top: &Topology, d: &mut Diagnostics) {
    check_name(d, &top.name, "name");
    let roles: BTreeMap<&str, Role> = top
        .machines
        .iter()
        .map(|m| (m.value.name.value.as_str(), m.value.role.value))
        .collect();
    let mut ctx = Ctx { top, roles, d };
    ctx.provider();
    ctx.amis();
    ctx.machines();
    ctx.shards();
    ctx.proxies();
    ctx.app_proxies();
    ctx.services();
    ctx.adopt();
    ctx.dns();
    ctx.checks();
    ctx.policy();
    ctx.spares();
    ctx.notifications();
    ctx.controller();
    ctx.ports();
    ctx.rendered();
    ctx.redis_auth();
    ctx.redis_tls();
}

struct Ctx<'a, 'd> {
    top: &'a Topology,
    roles: BTreeMap<&'a str, Role>,
    d: &'d mut Diagnostics,
}

impl<'a> Ctx<'a, '_> {
    /// Checks that `name` is a machine with `role`.
    fn machine_ref(&mut self, name: &Spanned<String>, path: &str, role: Role) {
        match self.roles.get(name.value.as_str()) {
            None => {
                let expected = one_of(
                    self.top
                        .machines
                        .iter()
                        .filter(|m| m.value.role.value == role)
                        .map(|m| m.value.name.value.as_str()),
                );
                self.d.error(
                    name.referenced,
                    path,
                    format!(
                        "unknown machine `{}`; {} (machines with role {})",
                        name.value,
                        expected,
                        role.as_str()
                    ),
                );
            }
            Some(r) if *r != role => self.d.error(
                name.referenced,
                path,
                format!(
                    "machine `{}` has role {}; expected a machine with role {}",
                    name.value,
                    r.as_str(),
                    role.as_str()
                ),
            ),
            Some(_) => {}
        }
    }

    fn shard_ref(&mut self, name: &Spanned<String>, path: &str) {
        if self.top.shard(&name.value).is_none() {
            let expected = one_of(self.top.shards.iter().map(|s| s.value.name.value.as_str()));
            self.d.error(
                name.referenced,
                path,
                format!("unknown shard `{}`; {}", name.value, expected),
            );
        }
    }

    fn duplicates<'s>(
        &mut self,
        items: impl Iterator<Item = (&'s Spanned<String>, String)>,
        what: &str,
    ) {
        let mut seen: BTreeMap<&str, Location> = BTreeMap::new();
        for (name, path) in items {
            if let Some(first) = seen.get(name.value.as_str()) {
                self.d.error(
                    name.referenced,
                    path,
                    format!(
                        "duplicate {what} `{}` (first defined at line {}); expected unique names",
                        name.value,
                        first.line()
                    ),
                );
            } else {
                seen.insert(&name.value, name.referenced);
            }
        }
    }

    fn machines(&mut self) {
        let top = self.top;
        self.duplicates(
            top.machines
                .iter()
                .enumerate()
                .map(|(i, m)| (&m.value.name, format!("machines[{i}].name"))),
            "machine",
        );
        let mut addresses: BTreeMap<std::net::IpAddr, &str> = BTreeMap::new();
        let provider = &top.provider.value;
        for (i, sm) in top.machines.iter().enumerate() {
            let m = &sm.value;
            let p = format!("machines[{i}]");
            check_name(self.d, &m.name, &format!("{p}.name"));
            // (A service's machines are the operator's: medic moves their roles, never replaces them.)
            let replaceable = !matches!(m.role.value, Role::Monitor | Role::Service);
            match &m.ami {
                Some(ami) => match top.ami(&ami.value) {
                    None => {
                        let expected = one_of(top.amis.iter().map(|a| a.value.name.value.as_str()));
                        self.d.error(ami.referenced, format!("{p}.ami"), format!("unknown AMI `{}`; {}", ami.value, expected));
                    }
                    Some(def) => {
                        if let Provider::Aws(aws) = provider
                            && !def.image_ids.contains_key(&aws.region) {
                                self.d.error(
                                    ami.referenced,
                                    format!("{p}.ami"),
                                    format!(
                                        "AMI `{}` has no image id for region {}; expected amis[].image_ids.{} to be set",
                                        ami.value, aws.region, aws.region
                                    ),
                                );
                            }
                    }
                },
                None if replaceable && provider.can_launch() => self.d.error(
                    sm.referenced,
                    format!("{p}.ami"),
                    format!(
                        "machine `{}` has no `ami`; expected the name of an entry in `amis`, so a lost {} machine can be replaced",
                        m.name.value,
                        m.role.value.as_str()
                    ),
                ),
                None => {}
            }
            if matches!(provider, Provider::Aws(_)) && replaceable && m.instance_type.is_none() {
                self.d.error(
                    sm.referenced,
                    format!("{p}.instance_type"),
                    format!("machine `{}` has no `instance_type`; expected an EC2 instance type like m6i.large", m.name.value),
                );
            }
            if !matches!(provider, Provider::Aws(_))
                && let Some(t) = &m.instance_type
            {
                self.d.warning(
                    t.referenced,
                    format!("{p}.instance_type"),
                    format!(
                        "ignored: the {} provider has no instance types",
                        provider.kind()
                    ),
                );
            }
            if let (Some(subnet), Provider::Aws(aws)) = (&m.subnet, provider)
                && !aws.subnets.contains(&subnet.value)
            {
                self.d.warning(
                    subnet.referenced,
                    format!("{p}.subnet"),
                    format!("`{}` is not listed in provider.aws.subnets", subnet.value),
                );
            }
            match (&m.address, &m.discover) {
                (Some(a), Some(_)) => self.d.error(
                    a.referenced,
                    format!("{p}.address"),
                    "both `address` and `discover` are set; expected one of them",
                ),
                (None, _) if matches!(provider, Provider::Static) => self.d.error(
                    sm.referenced,
                    format!("{p}.address"),
                    format!("machine `{}` has no `address`; expected a fixed address with the static provider", m.name.value),
                ),
                _ => {}
            }
            if let Some(a) = &m.address
                && let Some(other) = addresses.insert(a.value, &m.name.value)
            {
                self.d.error(
                        a.referenced,
                        format!("{p}.address"),
                        format!("address {} is also the address of machine `{}`; expected one address per machine", a.value, other),
                    );
            }
            if let Some(tags) = &m.discover
                && tags.value.is_empty()
            {
                self.d.error(
                    tags.referenced,
                    format!("{p}.discover"),
                    "no tags; expected at least one `key: value` that finds the instance",
                );
            }
        }
    }

    fn shards(&mut self) {
        let top = self.top;
        if top.shards.is_empty() && top.services.is_empty() {
            // (Located at the topology's name: neither field is there to point at.)
            self.d.error(
                top.name.referenced,
                "shards",
                "no shards and no services; expected at least one of either",
            );
        }
        self.duplicates(
            top.shards
                .iter()
                .enumerate()
                .map(|(i, s)| (&s.value.name, format!("shards[{i}].name"))),
            "shard",
        );
        for (i, ss) in top.shards.iter().enumerate() {
            let s = &ss.value;
            let p = format!("shards[{i}]");
            check_name(self.d, &s.name, &format!("{p}.name"));
            if s.port.value == 0 {
                self.d.error(
                    s.port.referenced,
                    format!("{p}.port"),
                    "port 0; expected a port from 1 to 65535",
                );
            }
            self.machine_ref(&s.master, &format!("{p}.master"), Role::Redis);
            if s.replicas.is_empty() {
                self.d.error(
                    ss.referenced,
                    format!("{p}.replicas"),
                    format!("shard `{}` has no replica; expected at least one machine (a master alone cannot fail over)", s.name.value),
                );
            }
            let mut seen = BTreeSet::new();
            for (j, r) in s.replicas.iter().enumerate() {
                let rp = format!("{p}.replicas[{j}]");
                self.machine_ref(r, &rp, Role::Redis);
                if r.value == s.master.value {
                    self.d.error(
                        r.referenced,
                        rp,
                        format!(
                            "replica and master of shard `{}` are both on machine `{}`; expected a replica on another machine",
                            s.name.value, r.value
                        ),
                    );
                } else if !seen.insert(r.value.as_str()) {
                    self.d.error(
                        r.referenced,
                        rp,
                        format!(
                            "machine `{}` is listed twice; expected each replica once",
                            r.value
                        ),
                    );
                }
            }
        }
    }

    fn checks(&mut self) {
        let c = &self.top.checks;
        for (kind, check) in [
            ("redis", &c.redis),
            ("haproxy", &c.haproxy),
            ("app_proxy", &c.app_proxy),
        ] {
            self.cadence(check.referenced, &format!("checks.{kind}"), &check.value);
        }
    }

    /// A check's cadence: interval, timeout, fall, rise and jitter that can work.
    pub(super) fn cadence(&mut self, at: Location, p: &str, v: &Check) {
        if v.interval.0.is_zero() {
            self.d.error(
                at,
                format!("{p}.interval"),
                "interval 0; expected a positive duration like 500ms",
            );
        } else if v.timeout >= v.interval {
            self.d.error(
                at,
                format!("{p}.timeout"),
                format!(
                    "timeout {} is not shorter than interval {}; expected a timeout below the interval, or checks pile up",
                    v.timeout, v.interval
                ),
            );
        }
        if v.timeout.0.is_zero() {
            self.d.error(
                at,
                format!("{p}.timeout"),
                "timeout 0; expected a positive duration",
            );
        }
        if v.fall == 0 {
            self.d.error(
                at,
                format!("{p}.fall"),
                "fall 0 can never mark a node down; expected 1 or more",
            );
        }
        if v.rise == 0 {
            self.d.error(
                at,
                format!("{p}.rise"),
                "rise 0 can never mark a node up; expected 1 or more",
            );
        }
        if !v.interval.0.is_zero() && v.jitter >= v.interval {
            self.d.error(
                at,
                format!("{p}.jitter"),
                format!(
                    "jitter {} is not shorter than interval {}; expected less",
                    v.jitter, v.interval
                ),
            );
        }
    }

    fn policy(&mut self) {
        let pol = &self.top.policy;
        let mut seen = BTreeSet::new();
        for (i, r) in pol.remediation.iter().enumerate() {
            if !seen.insert(r.value) {
                self.d.error(
                    r.referenced,
                    format!("policy.remediation[{i}]"),
                    "listed twice; expected each remedy once",
                );
            }
            // Only when written in the file: the default ladder applies to every provider.
            if r.value == Remedy::ReplaceMachine
                && r.referenced.line() > 0
                && !self.top.provider.value.can_launch()
            {
                self.d.warning(
                    r.referenced,
                    format!("policy.remediation[{i}]"),
                    "the static provider cannot launch machines; a lost machine raises an alert instead",
                );
            }
        }
        if pol.sync_timeout.value.0.is_zero() {
            self.d.error(
                pol.sync_timeout.referenced,
                "policy.sync_timeout",
                "0; expected a positive duration",
            );
        }
        if pol.boot_timeout.value.0.is_zero() {
            self.d.error(
                pol.boot_timeout.referenced,
                "policy.boot_timeout",
                "0; expected a positive duration",
            );
        }
    }

    fn notifications(&mut self) {
        for (i, n) in self.top.notifications.iter().enumerate() {
            let Notification::Webhook(w) = &n.value;
            let p = format!("notifications[{i}].webhook");
            match (&w.url, &w.url_env) {
                (Some(_), Some(e)) => self.d.error(
                    e.referenced,
                    p,
                    "both `url` and `url_env` are set; expected one",
                ),
                (None, None) => {
                    self.d
                        .error(n.referenced, p, "no `url` or `url_env`; expected one")
                }
                (Some(u), None) => {
                    if !(u.value.starts_with("https://") || u.value.starts_with("http://")) {
                        self.d.error(
                            u.referenced,
                            format!("{p}.url"),
                            format!("`{}` is not an http(s) URL", u.value),
                        );
                    }
                }
                (None, Some(_)) => {}
            }
        }
    }

    fn controller(&mut self) {
        let l = &self.top.controller.listen;
        if !l.value.ip().is_loopback() {
            self.d.warning(
                l.referenced,
                "controller.listen",
                format!("{} is not a loopback address: the API is reachable from other machines; expected 127.0.0.1 unless a TLS proxy fronts it", l.value),
            );
        }
        if let Some(c) = &self.top.controller.cluster {
            let c = &c.value;
            if c.etcd.value.is_empty() {
                self.d.error(
                    c.etcd.referenced,
                    "controller.cluster.etcd",
                    "no etcd endpoint: expected a list of etcd members' client addresses, e.g. [10.0.0.5:2379, 10.0.0.6:2379, 10.0.0.7:2379]",
                );
            }
            let lease = c.lease.value.as_duration();
            if lease < std::time::Duration::from_secs(2)
                || lease > std::time::Duration::from_secs(60)
            {
                self.d.error(
                    c.lease.referenced,
                    "controller.cluster.lease",
                    format!("{} is out of range: expected whole seconds from 2s to 60s (the leader stops acting 1 s before its lease could expire)", c.lease.value),
                );
            } else if lease.subsec_millis() != 0 {
                self.d.error(
                    c.lease.referenced,
                    "controller.cluster.lease",
                    format!(
                        "{}: expected whole seconds (etcd's leases are counted in seconds)",
                        c.lease.value
                    ),
                );
            }
            if let Some(m) = &c.member
                && (m.value.is_empty()
                    || !m
                        .value
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch)))
            {
                self.d.error(
                    m.referenced,
                    "controller.cluster.member",
                    format!(
                        "`{}`: expected a name of letters, digits, `-`, `_` or `.`",
                        m.value
                    ),
                );
            }
        }
    }
}

fn is_ami_id(s: &str) -> bool {
    s.strip_prefix("ami-").is_some_and(|h| {
        (h.len() == 8 || h.len() == 17) && h.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// Parses a lab subnet: a /24 inside a private range. Returns its first three octets.
pub fn parse_lab_subnet(s: &str) -> Option<[u8; 3]> {
    let (net, len) = s.split_once('/')?;
    if len != "24" {
        return None;
    }
    let ip: std::net::Ipv4Addr = net.parse().ok()?;
    let o = ip.octets();
    if o[3] != 0 || !ip.is_private() {
        return None;
    }
    Some([o[0], o[1], o[2]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_name("redis1"));
        assert!(is_name("r-9001"));
        assert!(!is_name("Redis1"));
        assert!(!is_name("-a"));
        assert!(!is_name(""));
        assert!(!is_name("a_b"));
    }

    #[test]
    fn ami_ids() {
        assert!(is_ami_id("ami-0123abcd"));
        assert!(is_ami_id("ami-0123456789abcdef0"));
        assert!(!is_ami_id("ami-xyz"));
        assert!(!is_ami_id("0123abcd"));
    }

    #[test]
    fn lab_subnets() {
        assert_eq!(parse_lab_subnet("10.77.0.0/24"), Some([10, 77, 0]));
        assert_eq!(parse_lab_subnet("8.8.8.0/24"), None);
        assert_eq!(parse_lab_subnet("10.77.0.0/16"), None);
        assert_eq!(parse_lab_subnet("10.77.0.1/24"), None);
    }
}
