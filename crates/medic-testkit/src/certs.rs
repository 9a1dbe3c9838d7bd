//! Certificates for the TLS tests, made by `openssl`.

use super::*;

/// A CA and a server certificate for one DNS name, made by `openssl` in a temporary directory:
/// what an operator gives `redis_tls`.
#[derive(Debug)]
pub struct Certs {
    pub dir: tempfile::TempDir,
    pub name: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certs {
    /// A fresh CA, and a certificate it signed for `name` (its subjectAltName).
    pub fn issue(name: &str) -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let run = |args: &[&str]| {
            let out = Command::new(program("openssl"))
                .args(args)
                .current_dir(d)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509", "-days", "30", "-subj", "/CN=medic test CA"];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        run(&ca);
        let subject = format!("/CN={name}");
        let mut req = vec!["req", "-subj", &subject];
        req.extend(ec);
        req.extend(["-keyout", "redis.key", "-out", "redis.csr"]);
        run(&req);
        std::fs::write(d.join("san.ext"), format!("subjectAltName=DNS:{name}\n")).unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "redis.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            "san.ext",
            "-out",
            "redis.pem",
        ]);
        Certs {
            name: name.to_owned(),
            ca: d.join("ca.pem"),
            cert: d.join("redis.pem"),
            key: d.join("redis.key"),
            dir,
        }
    }

    /// The redis.conf lines of a server speaking only TLS on `port` with this certificate
    /// (replicating over TLS too), as medic's playbook renders them.
    pub fn redis_conf(&self, port: u16) -> String {
        format!(
            "port 0\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
             tls-auth-clients no\ntls-replication yes\n",
            self.cert.display(),
            self.key.display(),
            self.ca.display()
        )
    }
}
