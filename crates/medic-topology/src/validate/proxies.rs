//! The proxies and the app proxies: their machines, frontends, runtime APIs and backups.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

impl Ctx<'_, '_> {
    pub(super) fn proxies(&mut self) {
        let top = self.top;
        let px = &top.proxies.value;
        if px.machines.is_empty() && top.shards.is_empty() {
            // A topology of services alone has no proxies.
        } else if px.machines.is_empty() {
            self.d.error(
                top.proxies.referenced,
                "proxies.machines",
                "no proxy machine; expected at least one (two for redundancy)",
            );
        } else if px.machines.len() < 2 {
            self.d.warning(
                px.machines[0].referenced,
                "proxies.machines",
                "only one proxy machine: clients lose everything routed through the proxies while it is replaced; expected two",
            );
        }
        let mut seen = BTreeSet::new();
        for (i, m) in px.machines.iter().enumerate() {
            let p = format!("proxies.machines[{i}]");
            self.machine_ref(m, &p, Role::Haproxy);
            if !seen.insert(m.value.as_str()) {
                self.d.error(
                    m.referenced,
                    p,
                    format!(
                        "machine `{}` is listed twice; expected each proxy once",
                        m.value
                    ),
                );
            }
        }
        let mut served = BTreeSet::new();
        for (i, f) in px.frontends.iter().enumerate() {
            let p = format!("proxies.frontends[{i}]");
            self.shard_ref(&f.value.shard, &format!("{p}.shard"));
            if f.value.listen.value == 0 {
                self.d.error(
                    f.value.listen.referenced,
                    format!("{p}.listen"),
                    "port 0; expected a port from 1 to 65535",
                );
            }
            if !served.insert(f.value.shard.value.as_str()) {
                self.d.error(
                    f.value.shard.referenced,
                    format!("{p}.shard"),
                    format!(
                        "shard `{}` already has a frontend; expected one frontend per shard",
                        f.value.shard.value
                    ),
                );
            }
        }
        for (i, s) in top.shards.iter().enumerate() {
            if !served.contains(s.value.name.value.as_str()) {
                self.d.error(
                    s.value.name.referenced,
                    format!("shards[{i}].name"),
                    format!(
                        "shard `{}` has no frontend on the proxies; expected an entry `{{listen: PORT, shard: {}}}` in proxies.frontends",
                        s.value.name.value, s.value.name.value
                    ),
                );
            }
        }
        let h = &px.haproxy;
        if h.check_fall == 0 || h.check_rise == 0 {
            self.d.error(
                top.proxies.referenced,
                "proxies.haproxy",
                "check_fall and check_rise must be at least 1",
            );
        }
        if h.timeout_check.0.is_zero() || h.timeout_connect.0.is_zero() {
            self.d.error(
                top.proxies.referenced,
                "proxies.haproxy",
                "timeouts must be longer than 0",
            );
        }
    }

    pub(super) fn app_proxies(&mut self) {
        let top = self.top;
        let mut seen = BTreeMap::new();
        for (i, sa) in top.app_proxies.iter().enumerate() {
            let a = &sa.value;
            let p = format!("app_proxies[{i}]");
            self.machine_ref(&a.machine, &format!("{p}.machine"), Role::App);
            if let Some(first) = seen.insert(a.machine.value.as_str(), i) {
                self.d.error(
                    a.machine.referenced,
                    format!("{p}.machine"),
                    format!("machine `{}` already has an app proxy (app_proxies[{first}]); expected one per machine", a.machine.value),
                );
            }
            for (field, r) in [("primary", &a.primary), ("backup", &a.backup)] {
                if !top.proxy_machines().any(|m| m == r.value) {
                    let expected = one_of(top.proxy_machines());
                    self.d.error(
                        r.referenced,
                        format!("{p}.{field}"),
                        format!("`{}` is not a proxy machine; {}", r.value, expected),
                    );
                }
            }
            if a.primary.value == a.backup.value {
                self.d.error(
                    a.backup.referenced,
                    format!("{p}.backup"),
                    format!(
                        "primary and backup are both `{}`; expected two different proxy machines",
                        a.backup.value
                    ),
                );
            }
            for (j, f) in a.frontends.iter().enumerate() {
                self.shard_ref(&f.value.shard, &format!("{p}.frontends[{j}].shard"));
                if f.value.listen.value == 0 {
                    self.d.error(
                        f.value.listen.referenced,
                        format!("{p}.frontends[{j}].listen"),
                        "port 0; expected a port from 1 to 65535",
                    );
                }
            }
        }
    }
}
