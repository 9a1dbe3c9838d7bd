//! `redis_auth`: who may talk to the redis servers, and where each password is kept.
//!
//! The topology names users and where their passwords are (a file or an environment variable
//! of the controller); it never holds a password. [`Secrets::read`] reads them when medic
//! runs; nothing that prints a plan, a journal line or a status ever sees one.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::model::Topology;

/// `redis_auth`: with it every redis server refuses clients that do not log in.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisAuth {
    /// medic's own user: only the commands medic sends, only its probe key.
    #[schemars(with = "RedisUser")]
    pub medic: Spanned<RedisUser>,
    /// The user replicas log in to their master with (`masteruser`/`masterauth`).
    #[schemars(with = "RedisUser")]
    pub replication: Spanned<RedisUser>,
    /// The applications' users.
    #[serde(default)]
    #[schemars(with = "Vec<ClientUser>")]
    pub clients: Vec<Spanned<ClientUser>>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisUser {
    #[schemars(with = "String")]
    pub user: Spanned<String>,
    #[schemars(with = "SecretRef")]
    pub password: Spanned<SecretRef>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientUser {
    #[schemars(with = "String")]
    pub user: Spanned<String>,
    #[schemars(with = "SecretRef")]
    pub password: Spanned<SecretRef>,
    /// redis ACL rules (keys, channels, commands); never a password.
    #[serde(default = "default_client_rules")]
    #[schemars(with = "String")]
    pub rules: Spanned<String>,
}

fn default_client_rules() -> Spanned<String> {
    crate::model::unspanned("~* &* +@all -@dangerous".to_owned())
}

/// Where a secret is kept: exactly one of the two.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// A file only the controller's user can read; one line, its trailing newline ignored.
    #[serde(default)]
    #[schemars(with = "Option<PathBuf>")]
    pub file: Option<Spanned<PathBuf>>,
    /// An environment variable of the controller.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub env: Option<Spanned<String>>,
}

/// The ACL rules of medic's own user: the commands medic sends and its probe key, nothing else.
pub const MEDIC_RULES: &str = "resetkeys ~medic:* resetchannels -@all +ping +info +role +replicaof +config|rewrite +client|pause +client|unpause +set";
/// The ACL rules of the replication user: what a replica sends its master.
pub const REPLICATION_RULES: &str = "resetkeys resetchannels -@all +psync +replconf +ping";

/// A password, read when medic runs. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub(crate) fn new(s: String) -> Password {
        Password(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(********)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{field}: cannot read {}: {source}", path.display())]
    File {
        field: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{field}: the environment variable {name} is not set")]
    Env { field: String, name: String },
    #[error("{field}: {what}; expected at least 16 printable characters without spaces")]
    Weak { field: String, what: &'static str },
    #[error("{field}: neither `file` nor `env`")]
    Nowhere { field: String },
    #[error("{field}: {} is mode {mode:04o}: others may read it; expected only its owner (chmod 600)", path.display())]
    Exposed {
        field: String,
        path: PathBuf,
        mode: u32,
    },
    #[error("{field}: {} holds no PEM block of a {kind}; expected a file starting `-----BEGIN {kind}-----`", path.display())]
    NotPem {
        field: String,
        path: PathBuf,
        kind: String,
    },
}

/// Every password of a topology's `redis_auth`, by user name.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    by_user: BTreeMap<String, Password>,
    /// The files of `redis_tls`.
    tls: Option<crate::tls::TlsFiles>,
}

/// The shortest password medic accepts.
pub const MIN_PASSWORD: usize = 16;

impl Secrets {
    /// Reads every password `top` names (none without `redis_auth`).
    pub fn read(top: &Topology) -> Result<Secrets, SecretError> {
        Secrets::read_with(top, |name| std::env::var(name).ok())
    }

    /// As [`Secrets::read`], the environment given (for tests).
    pub fn read_with(
        top: &Topology,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Secrets, SecretError> {
        let mut by_user = BTreeMap::new();
        for (field, u) in users(top) {
            let p = read_one(&field, u.1, &env)?;
            by_user.insert(u.0.to_owned(), p);
        }
        Ok(Secrets {
            by_user,
            tls: crate::tls::TlsFiles::read(top)?,
        })
    }

    /// For tests and tools: secrets given directly.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Secrets {
        Secrets {
            by_user: pairs
                .into_iter()
                .map(|(u, p)| (u.to_owned(), Password(p.to_owned())))
                .collect(),
            tls: None,
        }
    }

    /// The same, with the files of `redis_tls`.
    pub fn with_tls(mut self, tls: Option<crate::tls::TlsFiles>) -> Secrets {
        self.tls = tls;
        self
    }

    /// The files of `redis_tls`, if the topology has it.
    pub fn tls(&self) -> Option<&crate::tls::TlsFiles> {
        self.tls.as_ref()
    }

    pub fn password(&self, user: &str) -> Option<&Password> {
        self.by_user.get(user)
    }

    pub fn is_empty(&self) -> bool {
        self.by_user.is_empty() && self.tls.is_none()
    }

    /// Every password (and each line of the TLS key, as text that quotes part of it would
    /// hold it, its line breaks perhaps made spaces), to scrub from text that might have picked
    /// one up.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        let key_lines = self.tls.iter().flat_map(|t| {
            t.key
                .0
                .lines()
                .map(str::trim)
                .filter(|l| !l.starts_with("-----") && l.len() >= MIN_PASSWORD)
        });
        self.by_user.values().map(|p| p.0.as_str()).chain(key_lines)
    }
}

/// Every user of `redis_auth` with the field that names it: medic, replication, clients.
pub fn users(top: &Topology) -> Vec<(String, (&str, &SecretRef))> {
    let Some(a) = &top.redis_auth else {
        return Vec::new();
    };
    let a = &a.value;
    let mut out = vec![
        (
            "redis_auth.medic.password".to_owned(),
            (
                a.medic.value.user.value.as_str(),
                &a.medic.value.password.value,
            ),
        ),
        (
            "redis_auth.replication.password".to_owned(),
            (
                a.replication.value.user.value.as_str(),
                &a.replication.value.password.value,
            ),
        ),
    ];
    for (i, c) in a.clients.iter().enumerate() {
        out.push((
            format!("redis_auth.clients[{i}].password"),
            (c.value.user.value.as_str(), &c.value.password.value),
        ));
    }
    out
}

fn read_one(
    field: &str,
    r: &SecretRef,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Password, SecretError> {
    let text = match (&r.file, &r.env) {
        (Some(f), _) => std::fs::read_to_string(&f.value).map_err(|source| SecretError::File {
            field: field.to_owned(),
            path: f.value.clone(),
            source,
        })?,
        (None, Some(e)) => env(&e.value).ok_or_else(|| SecretError::Env {
            field: field.to_owned(),
            name: e.value.clone(),
        })?,
        (None, None) => {
            return Err(SecretError::Nowhere {
                field: field.to_owned(),
            });
        }
    };
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let weak = |what| SecretError::Weak {
        field: field.to_owned(),
        what,
    };
    if !text.chars().all(|c| c.is_ascii_graphic()) {
        return Err(weak(
            "it holds a space, a line break or a character that is not printable ASCII",
        ));
    }
    // redis reads a quote or a backslash anywhere in a config value as quoting: `masterauth`
    // would silently become another password, or stop redis with the line in its error.
    if text.contains(['"', '\'', '\\']) {
        return Err(weak(
            "it holds a quote or a backslash, which redis's config file would read as quoting",
        ));
    }
    if text.len() < MIN_PASSWORD {
        return Err(weak("it is too short"));
    }
    Ok(Password(text.to_owned()))
}

/// Whether `s` is a redis user name medic renders: letters, digits, `_`, `-`, `.`.
pub fn is_user_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

/// Why `rules` is not a list of ACL rules medic renders as they are, if it is not: each word
/// must grant or take away keys, channels or commands; passwords and on/off are medic's.
pub fn rules_problem(rules: &str) -> Option<String> {
    if rules.trim().is_empty() {
        return Some("no rules".to_owned());
    }
    for w in rules.split(' ').filter(|w| !w.is_empty()) {
        let plain = w.chars().all(|c| c.is_ascii_graphic());
        let allowed = matches!(w.as_bytes().first(), Some(b'~' | b'%' | b'&' | b'+' | b'-'))
            || [
                "allkeys",
                "allchannels",
                "allcommands",
                "nocommands",
                "resetkeys",
                "resetchannels",
            ]
            .contains(&w);
        if !plain || !allowed {
            return Some(format!("{w:?} is not a key, channel or command rule"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_grant_keys_and_commands_and_nothing_else() {
        assert_eq!(rules_problem("~* &* +@all -@dangerous"), None);
        assert_eq!(rules_problem("~app:* +get +set"), None);
        for bad in [
            "",
            ">secret",
            "nopass",
            "on",
            "#0123abcd",
            "~* +@all\nuser default on nopass",
            "~*\t+@all",
        ] {
            assert!(rules_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn a_password_is_never_printed() {
        let s = Secrets::from_pairs([("medic", "correct-horse-battery-staple")]);
        let shown = format!("{s:?}");
        assert!(!shown.contains("horse"), "{shown}");
    }

    #[test]
    fn a_password_is_one_line_of_printable_characters() {
        let env = |v: &'static str| move |_: &str| Some(v.to_owned());
        let r = SecretRef {
            file: None,
            env: Some(crate::model::unspanned("P".to_owned())),
        };
        assert!(read_one("f", &r, &env("0123456789abcdef\n")).is_ok());
        for bad in [
            "tiny-pw",
            "0123456789 abcdef",
            "0123456789abcdef\nmore",
            "0123456789\"abcdef",
            "0123456789'abcdef",
            "0123456789\\abcdef",
        ] {
            let e = read_one("f", &r, &env(bad)).expect_err(bad).to_string();
            assert!(e.starts_with("f: "), "{e}");
            assert!(!e.contains(bad), "the error shows the password: {e}");
        }
    }
}
