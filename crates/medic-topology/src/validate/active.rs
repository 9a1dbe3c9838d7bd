//! `services[i].mode: active_active`: every machine serves behind the proxies, so there is no
//! primary to promote, follow or fail back to — what only a primary/standby service has is an
//! error here, naming its field.

use serde_saphyr::Spanned;

use super::Ctx;
use crate::service::{Failback, Service};

impl Ctx<'_, '_> {
    pub(super) fn active_active(&mut self, p: &str, ss: &Spanned<Service>) {
        let s = &ss.value;
        if !s.active_active() {
            return;
        }
        let at = ss.referenced;
        if s.proxy.is_none() {
            self.d.error(
                at,
                format!("{p}.proxy"),
                "an active_active service is routed through the proxies, which medic takes a failing machine out of; expected `proxy: {listen: PORT}` (and `proxies.machines`)",
            );
        }
        let primary_only =
            "follows the primary; an active_active service has none (every machine serves)";
        if let Some(d) = &s.dns {
            self.d.error(d.referenced, format!("{p}.dns"), format!("the record {primary_only}; expected no dns here (point a record at the proxies instead)"));
        }
        if let Some(a) = &s.address {
            self.d.error(
                a.referenced,
                format!("{p}.address"),
                format!("the address {primary_only}; expected no address here"),
            );
        }
        if let Some(r) = &s.rejoin {
            self.d.error(r.referenced, format!("{p}.rejoin"), "rejoin makes an old PostgreSQL primary a standby; an active_active service promotes nothing; expected no rejoin here");
        }
        if s.has_postgres_check() {
            self.d.error(at, format!("{p}.check"), "a postgres check judges a primary and its standbys; expected a tcp, http, https or command check for an active_active service");
        }
        if s.standbys_read_only {
            self.d.error(
                at,
                format!("{p}.standbys_read_only"),
                "an active_active service has no standbys; expected no standbys_read_only here",
            );
        }
        if s.failback == Failback::Automatic {
            self.d.error(at, format!("{p}.failback"), "an active_active service has no role to fail back; expected `failback: manual` (a machine that passes its checks again is put back by itself)");
        }
        if let Some(h) = &s.hooks.on_demote {
            self.d.error(h.referenced, format!("{p}.hooks.on_demote"), "an active_active service demotes nothing; expected on_fenced (a machine taken out) and on_promote (a machine put back)");
        }
    }
}
