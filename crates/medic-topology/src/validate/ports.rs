//! Every port claimed on each machine (data stores, services, runtime APIs, frontends, sshd),
//! each claimed once.

use std::collections::{BTreeMap, BTreeSet};

use serde_saphyr::Spanned;

use super::*;

impl Ctx<'_, '_> {
    /// Two services on one port of one machine.
    pub(super) fn ports(&mut self) {
        let top = self.top;
        // machine -> port -> (what, where)
        let mut used: BTreeMap<String, BTreeMap<u16, String>> = BTreeMap::new();
        let mut claim = |d: &mut Diagnostics,
                         machine: &str,
                         port: &Spanned<u16>,
                         what: String,
                         path: String| {
            let ports = used.entry(machine.to_owned()).or_default();
            if let Some(other) = ports.get(&port.value) {
                d.error(
                    port.referenced,
                    path,
                    format!(
                        "port {} on machine `{}` is already used by {}; expected a free port for {}",
                        port.value, machine, other, what
                    ),
                );
            } else {
                ports.insert(port.value, what);
            }
        };
        let mut seen = BTreeSet::new();
        for m in &top.machines {
            if !seen.insert(m.value.name.value.as_str()) {
                continue; // a duplicate name, reported as such
            }
            let ssh = top.ssh_for(&m.value);
            let port = unspanned(ssh.port);
            claim(
                self.d,
                &m.value.name.value,
                &port,
                "sshd".to_owned(),
                String::new(),
            );
        }
        for (i, s) in top.shards.iter().enumerate() {
            let s = &s.value;
            let mut machines: Vec<&str> = Topology::shard_machines(s).collect();
            machines.dedup(); // master listed as its own replica: reported as such
            machines.sort_unstable();
            machines.dedup();
            for m in machines {
                claim(
                    self.d,
                    m,
                    &s.port,
                    format!("shard `{}`", s.name.value),
                    format!("shards[{i}].port"),
                );
            }
        }
        for (i, s) in top.services.iter().enumerate() {
            let s = &s.value;
            let mut machines: Vec<&str> = s.machines().collect();
            machines.sort_unstable();
            machines.dedup(); // a machine listed twice is reported as such
            for m in machines {
                claim(
                    self.d,
                    m,
                    &s.port,
                    format!("service `{}`", s.name.value),
                    format!("services[{i}].port"),
                );
            }
        }
        let px = &top.proxies.value;
        for m in &px.machines {
            if let Some(port) = &px.runtime_api.value.port {
                claim(
                    self.d,
                    &m.value,
                    port,
                    "the runtime API".to_owned(),
                    "proxies.runtime_api.port".to_owned(),
                );
            }
            for (i, f) in px.frontends.iter().enumerate() {
                claim(
                    self.d,
                    &m.value,
                    &f.value.listen,
                    format!("the frontend of shard `{}`", f.value.shard.value),
                    format!("proxies.frontends[{i}].listen"),
                );
            }
            for (i, sv) in top.services.iter().enumerate() {
                if let Some(x) = &sv.value.proxy {
                    claim(
                        self.d,
                        &m.value,
                        &x.value.listen,
                        format!("the frontend of service `{}`", sv.value.name.value),
                        format!("services[{i}].proxy.listen"),
                    );
                }
            }
        }
        for (i, a) in top.app_proxies.iter().enumerate() {
            let a = &a.value;
            if let Some(port) = &a.runtime_api.value.port {
                claim(
                    self.d,
                    &a.machine.value,
                    port,
                    "the runtime API".to_owned(),
                    format!("app_proxies[{i}].runtime_api.port"),
                );
            }
            for (j, f) in a.frontends.iter().enumerate() {
                claim(
                    self.d,
                    &a.machine.value,
                    &f.value.listen,
                    format!("the app frontend of shard `{}`", f.value.shard.value),
                    format!("app_proxies[{i}].frontends[{j}].listen"),
                );
            }
        }
    }
}
