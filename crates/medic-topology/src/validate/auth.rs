//! `redis_auth`: user names and rules rendered into redis.conf, and where each password is;
//! `redis_tls`: the certificate's name and where its files are.

use std::collections::BTreeSet;

use super::Ctx;
use crate::auth::{SecretRef, is_user_name, rules_problem};
use serde_saphyr::Spanned;

impl Ctx<'_, '_> {
    pub(super) fn redis_auth(&mut self) {
        let Some(a) = &self.top.redis_auth else {
            return;
        };
        let a = &a.value;
        let mut seen = BTreeSet::new();
        let mut users = vec![
            (
                "redis_auth.medic".to_owned(),
                &a.medic.value.user,
                &a.medic.value.password,
            ),
            (
                "redis_auth.replication".to_owned(),
                &a.replication.value.user,
                &a.replication.value.password,
            ),
        ];
        for (i, c) in a.clients.iter().enumerate() {
            let p = format!("redis_auth.clients[{i}]");
            if let Some(problem) = rules_problem(&c.value.rules.value) {
                self.d.error(
                    c.value.rules.referenced,
                    format!("{p}.rules"),
                    format!(
                        "{problem}; expected redis ACL rules for keys (~), channels (&) and commands (+/-), e.g. \"~* &* +@all -@dangerous\" (the password comes from `password`)"
                    ),
                );
            }
            users.push((p, &c.value.user, &c.value.password));
        }
        for (p, user, password) in users {
            if !is_user_name(&user.value) || user.value == "default" {
                self.d.error(
                    user.referenced,
                    format!("{p}.user"),
                    format!(
                        "{:?} is not a user name medic can give; expected letters, digits, `_`, `-` or `.` (and not `default`, which medic turns off)",
                        user.value
                    ),
                );
            } else if !seen.insert(user.value.as_str()) {
                self.d.error(
                    user.referenced,
                    format!("{p}.user"),
                    format!(
                        "{:?} is named twice; expected one entry per user",
                        user.value
                    ),
                );
            }
            self.secret_ref(password, &format!("{p}.password"));
        }
    }

    pub(super) fn redis_tls(&mut self) {
        let Some(t) = &self.top.redis_tls else {
            return;
        };
        let t = &t.value;
        if !crate::tls::is_cert_name(&t.name.value) {
            self.d.error(
                t.name.referenced,
                "redis_tls.name",
                format!(
                    "{:?} is not a DNS name; expected the name the servers' certificate was issued for, e.g. redis.internal",
                    t.name.value
                ),
            );
        }
        for (field, path) in [("ca", &t.ca), ("cert", &t.cert), ("key", &t.key)] {
            if !path.value.is_absolute() {
                self.d.error(
                    path.referenced,
                    format!("redis_tls.{field}"),
                    format!(
                        "{} is not an absolute path; expected a PEM file on the controller's host, e.g. /etc/medic/tls/redis-{field}.pem",
                        path.value.display()
                    ),
                );
            }
        }
    }

    fn secret_ref(&mut self, r: &Spanned<SecretRef>, p: &str) {
        match (&r.value.file, &r.value.env) {
            (Some(_), Some(e)) => self.d.error(
                e.referenced,
                p.to_owned(),
                "both `file` and `env` are set; expected one",
            ),
            (None, None) => self.d.error(
                r.referenced,
                p.to_owned(),
                "no `file` or `env`; expected where the password is kept (never the password itself)",
            ),
            (Some(f), None) => {
                if !f.value.is_absolute() {
                    self.d.error(
                        f.referenced,
                        format!("{p}.file"),
                        format!(
                            "{} is not an absolute path; expected e.g. /etc/medic/secrets/redis-medic",
                            f.value.display()
                        ),
                    );
                }
            }
            (None, Some(e)) => {
                let ok = e.value.chars().next().is_some_and(|c| c.is_ascii_uppercase() || c == '_')
                    && e.value.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                if !ok {
                    self.d.error(
                        e.referenced,
                        format!("{p}.env"),
                        format!(
                            "{:?} is not an environment variable name; expected capitals, digits and `_`, e.g. MEDIC_REDIS_PASSWORD",
                            e.value
                        ),
                    );
                }
            }
        }
    }
}
