//! TLS to redis servers: the CA that signed their certificate and the name it was issued for.
//! (The services' `https` checks use the same client, with the host's roots if no CA is given.)
//!
//! The servers share one certificate for a name (not an address: a replacement comes up at a
//! new address), and every connection of medic's — its checks, its admin calls — verifies the
//! chain against the CA and the certificate against that name.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How medic speaks TLS to redis servers.
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tls({:?})", self.name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the CA certificate holds no PEM certificate ({0})")]
    NoCertificate(String),
    #[error("the CA certificate is not usable: {0}")]
    BadCertificate(String),
    #[error("this host trusts no root certificate ({0})")]
    NoRoots(String),
    #[error("`{0}` is not a name a certificate can be issued for")]
    BadName(String),
    #[error("the servers' certificate (cert): {0}")]
    ServerCert(String),
    #[error("the key (key): {0}")]
    Key(String),
}

/// The CA certificates of `ca_pem` as trust anchors.
fn roots(ca_pem: &[u8]) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| TlsError::NoCertificate(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCertificate("none found".to_owned()));
    }
    Ok(roots)
}

/// What the servers will present, checked before any machine gets it: `cert_pem` (the
/// certificate, then its chain) verifies against `ca_pem` for `name` now, and `key_pem` is the
/// private key of that certificate. A mistake here would otherwise show only as servers that
/// do not start, or that nobody can talk to.
pub fn check_server_files(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
    name: &str,
) -> Result<(), TlsError> {
    use rustls::client::danger::ServerCertVerifier as _;
    use rustls::pki_types::{PrivateKeyDer, UnixTime};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::ServerCert(e.to_string()))?;
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return Err(TlsError::ServerCert("no PEM certificate in it".to_owned()));
    };
    let server =
        ServerName::try_from(name.to_owned()).map_err(|_| TlsError::BadName(name.to_owned()))?;
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots(ca_pem)?),
        provider.clone(),
    )
    .build()
    .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    verifier
        .verify_server_cert(end_entity, intermediates, &server, &[], UnixTime::now())
        .map_err(|e| TlsError::ServerCert(format!("not valid for {name} under the CA: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        TlsError::Key(format!(
            "no unencrypted PEM private key ({e}); redis cannot read an encrypted one"
        ))
    })?;
    rustls::sign::CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| TlsError::Key(format!("not the certificate's key: {e}")))?;
    Ok(())
}

impl Tls {
    /// Servers whose certificate `ca_pem` (one or more PEM certificates) signed for `name`.
    pub fn new(ca_pem: &[u8], name: &str) -> Result<Tls, TlsError> {
        Self::with_roots(roots(ca_pem)?, name)
    }

    fn with_roots(roots: rustls::RootCertStore, name: &str) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::BadCertificate(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(name.to_owned())
            .map_err(|_| TlsError::BadName(name.to_owned()))?;
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// Servers whose certificate chains to a root this host trusts (its system store, read
    /// once) for `name` (a DNS name or an address).
    pub fn system(name: &str) -> Result<Tls, TlsError> {
        static ROOTS: std::sync::OnceLock<Result<rustls::RootCertStore, String>> =
            std::sync::OnceLock::new();
        let roots = ROOTS
            .get_or_init(|| {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = rustls::RootCertStore::empty();
                let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(format!(
                        "{} errors reading its store; give the check a ca_file",
                        found.errors.len()
                    ));
                }
                Ok(roots)
            })
            .clone()
            .map_err(TlsError::NoRoots)?;
        Self::with_roots(roots, name)
    }

    /// Completes the handshake on `s`, the certificate verified. A failed one is
    /// [`io::ErrorKind::InvalidData`], saying why.
    pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        s: S,
    ) -> io::Result<tokio_rustls::client::TlsStream<S>> {
        self.connector
            .connect(self.name.clone(), s)
            .await
            .map_err(|e| {
                if e.kind() == io::ErrorKind::InvalidData {
                    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
                } else {
                    e
                }
            })
    }

    /// The name servers' certificates are checked against.
    pub fn name(&self) -> String {
        self.name.to_str().into_owned()
    }
}

/// What the server at `addr` does with a clear-text `PING` within `within`: `Some(false)` if
/// it replies (it speaks in the clear), `Some(true)` if it closes the connection without a word
/// (a TLS server rejecting what is not a TLS hello), `None` if it cannot be reached or says
/// nothing in time. How medic tells, at start, servers that do not speak as the topology says.
pub async fn speaks_tls(addr: SocketAddr, within: std::time::Duration) -> Option<bool> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let ask = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 64];
        match s.read(&mut buf).await {
            Ok(0) => Some(true),
            Ok(_) => Some(!matches!(buf[0], b'+' | b'-')),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Some(true),
            Err(_) => None,
        }
    };
    tokio::time::timeout(within, ask).await.ok().flatten()
}

/// A connection to a redis server, in the clear or under TLS.
pub trait Conn: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Conn for T {}

/// Connects to `addr` and, with `tls`, completes the handshake (the certificate verified). A
/// refused connection keeps its kind ([`io::ErrorKind::ConnectionRefused`]); a failed
/// handshake is [`io::ErrorKind::InvalidData`].
pub(crate) async fn open(addr: SocketAddr, tls: Option<&Tls>) -> io::Result<Box<dyn Conn>> {
    let s = TcpStream::connect(addr).await?;
    let _ = s.set_nodelay(true);
    match tls {
        None => Ok(Box::new(s)),
        Some(t) => Ok(Box::new(t.handshake(s).await?)),
    }
}
