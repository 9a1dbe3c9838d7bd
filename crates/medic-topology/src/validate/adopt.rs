//! Backend names from the topology, and `managed: false`: names HAProxy accepts, one backend
//! per name on the proxies, and what an adopted deployment still needs SSH for.

use std::collections::BTreeMap;

use serde_saphyr::Location;

use super::Ctx;
use crate::adopt::is_backend_name;
use crate::model::Reach;

impl Ctx<'_, '_> {
    pub(super) fn adopt(&mut self) {
        let top = self.top;
        // Every backend on the proxies, with where it is named (or its shard or service).
        let mut backends: Vec<(String, Location, String)> = Vec::new();
        for (i, s) in top.shards.iter().enumerate() {
            let p = format!("shards[{i}].backend");
            match &s.value.backend {
                Some(b) => {
                    self.backend_name(&b.value, b.referenced, &p);
                    backends.push((b.value.clone(), b.referenced, p));
                }
                None => backends.push((
                    top.shard_backend(&s.value.name.value),
                    s.referenced,
                    format!("shards[{i}]"),
                )),
            }
        }
        for (i, s) in top.services.iter().enumerate() {
            let Some(x) = &s.value.proxy else { continue };
            let p = format!("services[{i}].proxy.backend");
            match &x.value.backend {
                Some(b) => {
                    self.backend_name(&b.value, b.referenced, &p);
                    backends.push((b.value.clone(), b.referenced, p));
                }
                None => backends.push((
                    top.service_backend(&s.value.name.value),
                    x.referenced,
                    format!("services[{i}].proxy"),
                )),
            }
        }
        let mut seen: BTreeMap<&str, (&Location, &str)> = BTreeMap::new();
        for (name, at, p) in &backends {
            // (Two of medic's own names are the same only for two shards of one name,
            // reported as such.)
            let named = |p: &str| p.ends_with(".backend");
            if let Some((first, fp)) = seen
                .get(name.as_str())
                .filter(|(_, fp)| named(p) || named(fp))
            {
                self.d.error(
                    *at,
                    p.clone(),
                    format!(
                        "backend `{name}` is also {fp}'s (line {}); expected one backend per shard or service on the proxies",
                        first.line()
                    ),
                );
            } else {
                seen.insert(name, (at, p));
            }
        }
        for (i, f) in top.proxies.value.frontends.iter().enumerate() {
            if let Some(b) = &f.value.backend {
                self.d.error(
                    b.referenced,
                    format!("proxies.frontends[{i}].backend"),
                    "the proxies' backend of a shard is named by the shard's `backend`; expected it there (a frontend's `backend` is an app proxy's)",
                );
            }
        }
        for (i, a) in top.app_proxies.iter().enumerate() {
            // A backend is looked up by shard: one frontend per shard once one is named.
            let mut shards: BTreeMap<&str, usize> = BTreeMap::new();
            for (j, f) in a.value.frontends.iter().enumerate() {
                if let Some(first) = shards.insert(&f.value.shard.value, j)
                    && a.value.frontends.iter().any(|f| f.value.backend.is_some())
                {
                    self.d.error(
                        f.value.shard.referenced,
                        format!("app_proxies[{i}].frontends[{j}].shard"),
                        format!("shard `{}` has a frontend already (app_proxies[{i}].frontends[{first}]); expected one frontend per shard on an app proxy whose frontends name their backends", f.value.shard.value),
                    );
                }
            }
            let mut seen: BTreeMap<String, String> = BTreeMap::new();
            for (j, f) in a.value.frontends.iter().enumerate() {
                let p = format!("app_proxies[{i}].frontends[{j}].backend");
                let name = match &f.value.backend {
                    Some(b) => {
                        self.backend_name(&b.value, b.referenced, &p);
                        b.value.clone()
                    }
                    None => crate::adopt::default_app_backend(&f.value.shard.value),
                };
                let at = f
                    .value
                    .backend
                    .as_ref()
                    .map_or(f.referenced, |b| b.referenced);
                if let Some(first) = seen.insert(name.clone(), p.clone()) {
                    self.d.error(
                        at,
                        p,
                        format!("backend `{name}` is also {first}'s; expected one backend per frontend on an app proxy"),
                    );
                }
            }
        }
        self.unmanaged();
        self.runtime_apis();
        self.server_names();
    }

    /// `machines[].server`: a HAProxy name, only in an adopted deployment, and one machine per
    /// name (so a name HAProxy reports stands for one machine).
    fn server_names(&mut self) {
        let top = self.top;
        let mut seen: BTreeMap<&str, (Location, &str)> = BTreeMap::new();
        for (i, m) in top.machines.iter().enumerate() {
            let Some(server) = &m.value.server else {
                continue;
            };
            let p = format!("machines[{i}].server");
            let name = server.value.as_str();
            if !is_backend_name(name) {
                self.d.error(
                    server.referenced,
                    &p,
                    format!(
                        "`{}` is not a HAProxy server name; expected 1 to 63 letters, digits, '-', '_', '.' or ':'",
                        name.escape_debug()
                    ),
                );
            }
            if top.managed() {
                self.d.error(
                    server.referenced,
                    &p,
                    "a server name of its own is only for a deployment medic adopted; expected `managed: false`, or no `server` (medic names the servers it configures after their machines)",
                );
            }
            let own = m.value.name.value.as_str();
            if let Some(other) = top
                .machines
                .iter()
                .find(|o| o.value.name.value == name && o.value.name.value != own)
            {
                self.d.error(
                    server.referenced,
                    &p,
                    format!(
                        "`{name}` is machine `{}`'s name (line {}); expected a server name that no other machine has",
                        other.value.name.value, other.referenced.line()
                    ),
                );
            }
            if let Some((at, first)) = seen.get(name) {
                self.d.error(
                    server.referenced,
                    &p,
                    format!(
                        "server `{name}` is also machine `{first}`'s (line {}); expected one machine per server name",
                        at.line()
                    ),
                );
            } else {
                seen.insert(name, (server.referenced, own));
            }
        }
    }

    fn backend_name(&mut self, name: &str, at: Location, p: &str) {
        if !is_backend_name(name) {
            self.d.error(
                at,
                p,
                format!(
                    "`{}` is not a HAProxy backend name; expected 1 to 63 letters, digits, '-', '_', '.' or ':'",
                    name.escape_debug()
                ),
            );
        }
    }

    /// `managed: false`: what still goes through SSH is said, once, where it is configured.
    fn unmanaged(&mut self) {
        let top = self.top;
        let Some(m) = top.managed.as_ref().filter(|m| !m.value) else {
            return;
        };
        let api = &top.proxies.value.runtime_api;
        if !top.proxies.value.machines.is_empty() && api.value.reach == Reach::Ssh {
            self.d.warning(
                api.referenced,
                "proxies.runtime_api.reach",
                "with `managed: false` medic still reaches each proxy's runtime API through SSH (`reach: ssh`, the default); expected `reach: network` for a failover that needs no SSH (the API then listens on the proxy's address: firewall it to the monitor hosts)",
            );
        }
        if top.services.iter().any(|s| s.value.has_postgres_check()) {
            self.d.warning(
                m.referenced,
                "managed",
                "with `managed: false` a PostgreSQL service's old primary is still stopped (pg-stop) and rejoined (pg_rewind) over SSH, and a service's hooks run there; expected SSH to its machines",
            );
        }
    }

    /// A runtime API over the network is a TCP port; without one, medic goes through SSH to
    /// the unix socket.
    fn runtime_apis(&mut self) {
        let top = self.top;
        let mut apis = vec![(&top.proxies.value.runtime_api, "proxies".to_owned())];
        for (i, a) in top.app_proxies.iter().enumerate() {
            apis.push((&a.value.runtime_api, format!("app_proxies[{i}]")));
        }
        for (api, owner) in apis {
            if api.value.reach == Reach::Network && api.value.port.is_none() {
                self.d.error(
                    api.referenced,
                    format!("{owner}.runtime_api.port"),
                    "`reach: network` needs the API's TCP port; expected `port: N` (HAProxy's `stats socket ipv4@ADDRESS:N level admin`), or `reach: ssh` without a port to reach the unix `socket` through SSH",
                );
            }
        }
    }
}
