//! `redis_tls`: redis servers that speak only TLS, all with one certificate for one name.
//!
//! A name, not an address: a replacement comes up at a new address with the same certificate.
//! medic, HAProxy's checks and the clients verify the certificate against the CA and the name;
//! replicas verify their master's against the CA. The files are on the controller's host and
//! read when medic starts; they reach the machines only inside the playbooks' files (the key
//! 0600, owned by redis), never in a plan or a journal.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::auth::{Password, SecretError};
use crate::model::Topology;

/// `redis_tls`: the certificate's name and where its files are.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisTls {
    /// The DNS name the servers' certificate was issued for.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// The CA certificate (PEM) that signed it.
    #[schemars(with = "PathBuf")]
    pub ca: Spanned<PathBuf>,
    /// The servers' certificate (PEM, its chain after it).
    #[schemars(with = "PathBuf")]
    pub cert: Spanned<PathBuf>,
    /// Its private key (PEM): a file only the controller's user can read.
    #[schemars(with = "PathBuf")]
    pub key: Spanned<PathBuf>,
}

/// The TLS files, read when medic runs. The key is never printed.
#[derive(Clone)]
pub struct TlsFiles {
    pub name: String,
    pub ca: String,
    pub cert: String,
    pub key: Password,
}

impl fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TlsFiles({}, key ********)", self.name)
    }
}

/// Whether `s` is a DNS name a certificate can be issued for (and rendered into a config line).
pub fn is_cert_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        && !s.chars().all(|c| c.is_ascii_digit() || c == '.')
}

impl TlsFiles {
    /// Reads the files `top`'s `redis_tls` names (`None` without it).
    pub fn read(top: &Topology) -> Result<Option<TlsFiles>, SecretError> {
        let Some(t) = &top.redis_tls else {
            return Ok(None);
        };
        let t = &t.value;
        let ca = pem(&t.ca.value, "redis_tls.ca", "CERTIFICATE")?;
        let cert = pem(&t.cert.value, "redis_tls.cert", "CERTIFICATE")?;
        let key = pem(&t.key.value, "redis_tls.key", "PRIVATE KEY")?;
        private(&t.key.value, "redis_tls.key")?;
        Ok(Some(TlsFiles {
            name: t.name.value.clone(),
            ca,
            cert,
            key: Password::new(key),
        }))
    }
}

/// An error unless only its owner may read `path` (as ssh asks of a private key).
fn private(path: &Path, field: &str) -> Result<(), SecretError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|source| SecretError::File {
        field: field.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretError::Exposed {
            field: field.to_owned(),
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// The text of a PEM file holding a `-----BEGIN ...{kind}-----` block.
fn pem(path: &Path, field: &str, kind: &str) -> Result<String, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::File {
        field: field.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    let begins = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{kind}-----")));
    if !begins || text.contains("${") {
        return Err(SecretError::NotPem {
            field: field.to_owned(),
            path: path.to_owned(),
            kind: kind.to_owned(),
        });
    }
    Ok(if text.ends_with('\n') {
        text
    } else {
        text + "\n"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_of_the_key_is_a_secret_to_scrub() {
        let key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\nshort\n-----END PRIVATE KEY-----\n";
        let secrets = crate::auth::Secrets::from_pairs([("medic", "medic-0123456789abcdef")])
            .with_tls(Some(TlsFiles {
                name: "redis.internal".to_owned(),
                ca: String::new(),
                cert: String::new(),
                key: Password::new(key.to_owned()),
            }));
        let values: Vec<&str> = secrets.values().collect();
        assert_eq!(
            values,
            [
                "medic-0123456789abcdef",
                "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg"
            ]
        );
        assert!(!format!("{secrets:?}").contains("MIGH"), "{secrets:?}");
    }

    #[test]
    fn a_key_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("redis.key");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = private(&key, "redis_tls.key").unwrap_err();
        assert!(e.to_string().contains("mode 0644"), "{e}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        private(&key, "redis_tls.key").unwrap();
    }

    #[test]
    fn certificate_names_are_dns_names() {
        for ok in ["redis.internal", "r-1.example.com", "localhost"] {
            assert!(is_cert_name(ok), "{ok}");
        }
        for bad in ["", "10.0.0.1", "a..b", "-a.b", "a b", "a\nb", "*.x", "x_y"] {
            assert!(!is_cert_name(bad), "{bad:?}");
        }
    }
}
