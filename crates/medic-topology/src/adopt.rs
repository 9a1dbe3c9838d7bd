//! Adopting a deployment medic did not set up (`managed: false`), and the HAProxy backend
//! names that let medic drive a haproxy.cfg it did not write.
//!
//! The names here are the contract between the config a playbook renders (or the operator
//! wrote) and the runtime API commands a plan sends: both come from these functions.

use crate::model::Topology;

/// medic's own name for the backend on the proxies that serves `shard`.
pub fn default_shard_backend(shard: &str) -> String {
    format!("redis-{shard}")
}

/// medic's own name for the backend on the proxies that serves `service`.
pub fn default_service_backend(service: &str) -> String {
    format!("service-{service}")
}

/// medic's own name for the backend on an app proxy that serves `shard`.
pub fn default_app_backend(shard: &str) -> String {
    format!("app-{shard}")
}

/// Whether `name` can be a HAProxy backend's name as it is: letters, digits, `-`, `_`, `.`
/// and `:` (HAProxy's identifier characters), at most 63 of them.
pub fn is_backend_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

impl Topology {
    /// (machine, server name) for each machine whose server the proxies name otherwise
    /// (`machines[].server`, an adopted deployment's).
    pub fn server_aliases(&self) -> Vec<(String, String)> {
        self.machines
            .iter()
            .filter_map(|m| {
                let s = m.value.server.as_ref()?;
                (s.value != m.value.name.value)
                    .then(|| (m.value.name.value.clone(), s.value.clone()))
            })
            .collect()
    }

    /// Whether medic set up this deployment and may configure, restart and replace its
    /// machines (`managed`, default true).
    pub fn managed(&self) -> bool {
        self.managed.as_ref().is_none_or(|m| m.value)
    }

    /// The backend on the proxies that serves `shard`: its `backend`, else medic's name.
    pub fn shard_backend(&self, shard: &str) -> String {
        self.shard(shard)
            .and_then(|s| s.backend.as_ref())
            .map_or_else(|| default_shard_backend(shard), |b| b.value.clone())
    }

    /// The backend on the proxies that serves `service`: its `proxy.backend`, else medic's
    /// name.
    pub fn service_backend(&self, service: &str) -> String {
        self.service(service)
            .and_then(|s| s.proxy.as_ref())
            .and_then(|p| p.value.backend.as_ref())
            .map_or_else(|| default_service_backend(service), |b| b.value.clone())
    }

    /// The backend on the app proxy on `machine` that serves `shard`: its frontend's
    /// `backend`, else medic's name.
    pub fn app_backend(&self, machine: &str, shard: &str) -> String {
        self.app_proxies
            .iter()
            .find(|a| a.value.machine.value == machine)
            .and_then(|a| {
                a.value
                    .frontends
                    .iter()
                    .find(|f| f.value.shard.value == shard)
            })
            .and_then(|f| f.value.backend.as_ref())
            .map_or_else(|| default_app_backend(shard), |b| b.value.clone())
    }

    /// The service whose backend on the proxies is `backend`, if any.
    pub fn service_of_backend(&self, backend: &str) -> Option<&str> {
        self.services
            .iter()
            .map(|s| s.value.name.value.as_str())
            .find(|s| self.services_backend_is(s, backend))
    }

    fn services_backend_is(&self, service: &str, backend: &str) -> bool {
        self.service(service).is_some_and(|s| s.proxy.is_some())
            && self.service_backend(service) == backend
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names() {
        assert!(is_backend_name("bk_redis.main:1"));
        assert!(is_backend_name("redis-r9001"));
        assert!(!is_backend_name(""));
        assert!(!is_backend_name("two words"));
        assert!(!is_backend_name("quote\""));
        assert!(!is_backend_name(&"x".repeat(64)));
    }
}
