//! DNS by RFC 2136 dynamic update, signed with TSIG (RFC 8945): [`Rfc2136`] implements
//! [`Dns`] for teams that run their own BIND or Knot (seed 002), and for the lab.
//!
//! An UPSERT is one UPDATE message: delete the name's A RRset, add the new values — applied
//! atomically by the primary. The message is TSIG-signed with the topology's key; a server that
//! does not know the key, or finds the signature wrong, answers NOTAUTH, which is reported as
//! such. The primary applies an update before it answers, so a successful answer means the
//! change is in (secondaries follow by NOTIFY/IXFR on their own).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hickory_proto::op::update_message::{self, UpdateMessage};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{Name, RData, Record, RecordType, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use medic_cloud::{ChangeId, CloudError, Dns, RecordSet, check_values};

/// The primary server of one zone, and the key to update it with.
#[derive(Clone)]
pub struct Rfc2136 {
    pub server: SocketAddr,
    zone: Name,
    signer: TSigner,
    key_name: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for Rfc2136 {
    /// Without the signer: the secret never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc2136")
            .field("server", &self.server)
            .field("zone", &self.zone)
            .field("key", &self.key_name)
            .finish()
    }
}

fn invalid(message: impl Into<String>) -> CloudError {
    CloudError::Invalid {
        op: "dns",
        message: message.into(),
    }
}

fn fqdn(name: &str) -> Result<Name, CloudError> {
    let mut n =
        Name::from_ascii(name).map_err(|e| invalid(format!("`{name}` is not a DNS name: {e}")))?;
    n.set_fqdn(true);
    Ok(n)
}

/// Reads a TSIG secret: a BIND key file (`key "x" { algorithm ...; secret "..."; };`) or the
/// bare base64 secret.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, CloudError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("TSIG secret {}: {e}", path.display())))?;
    let b64 = match text.find("secret") {
        Some(i) => text[i..].split('"').nth(1).unwrap_or_default().to_owned(),
        None => text.trim().to_owned(),
    };
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| invalid(format!("TSIG secret {}: not base64: {e}", path.display())))
}

fn algorithm(name: &str) -> Result<TsigAlgorithm, CloudError> {
    match name.to_ascii_lowercase().as_str() {
        "hmac-sha256" => Ok(TsigAlgorithm::HmacSha256),
        "hmac-sha384" => Ok(TsigAlgorithm::HmacSha384),
        "hmac-sha512" => Ok(TsigAlgorithm::HmacSha512),
        other => Err(invalid(format!(
            "TSIG algorithm `{other}` is not supported; expected hmac-sha256, hmac-sha384 or hmac-sha512"
        ))),
    }
}

impl Rfc2136 {
    pub fn new(
        server: SocketAddr,
        zone: &str,
        key_name: &str,
        algorithm_name: &str,
        secret: Vec<u8>,
    ) -> Result<Self, CloudError> {
        let signer = TSigner::new(secret, algorithm(algorithm_name)?, fqdn(key_name)?, 300)
            .map_err(|e| invalid(format!("TSIG key `{key_name}`: {e}")))?;
        Ok(Rfc2136 {
            server,
            zone: fqdn(zone)?,
            signer,
            key_name: key_name.to_owned(),
            timeout: Duration::from_secs(5),
        })
    }

    /// Sends one message over TCP (length-prefixed) and returns the answer.
    async fn exchange(&self, op: &'static str, message: &Message) -> Result<Message, CloudError> {
        let bytes = message
            .to_vec()
            .map_err(|e| invalid(format!("encoding the {op}: {e}")))?;
        let work = async {
            let mut s = TcpStream::connect(self.server).await?;
            let len = u16::try_from(bytes.len())
                .map_err(|_| std::io::Error::other("message too long"))?;
            s.write_all(&len.to_be_bytes()).await?;
            s.write_all(&bytes).await?;
            let mut lb = [0u8; 2];
            s.read_exact(&mut lb).await?;
            let mut reply = vec![0u8; usize::from(u16::from_be_bytes(lb))];
            s.read_exact(&mut reply).await?;
            Ok::<_, std::io::Error>(reply)
        };
        let reply = match timeout(self.timeout, work).await {
            Err(_) => {
                return Err(CloudError::Timeout {
                    op,
                    after: self.timeout,
                    state: format!("no answer from {}", self.server),
                });
            }
            Ok(Err(e)) => {
                return Err(CloudError::Transport {
                    op,
                    message: format!("{}: {e}", self.server),
                });
            }
            Ok(Ok(r)) => r,
        };
        Message::from_vec(&reply).map_err(|e| CloudError::Api {
            op,
            code: "FORMERR".into(),
            message: format!("unreadable answer from {}: {e}", self.server),
        })
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Dns for Rfc2136 {
    async fn upsert(
        &self,
        name: &str,
        ttl: u32,
        values: &[IpAddr],
    ) -> Result<ChangeId, CloudError> {
        check_values(name, values)?;
        let owner = fqdn(name)?;
        if !self.zone.zone_of(&owner) {
            return Err(invalid(format!("{name} is outside the zone {}", self.zone)));
        }
        let v4: Vec<Ipv4Addr> = values
            .iter()
            .map(|v| match v {
                IpAddr::V4(a) => Ok(*a),
                IpAddr::V6(a) => Err(invalid(format!("{a} is IPv6; medic manages A records"))),
            })
            .collect::<Result<_, _>>()?;
        // Delete the RRset and add the new one, in one UPDATE: the primary applies it whole.
        let placeholder = Record::from_rdata(owner.clone(), 0, RData::A(A(v4[0])));
        let mut message = update_message::delete_rrset(placeholder, self.zone.clone(), false);
        for a in &v4 {
            message.add_update(Record::from_rdata(owner.clone(), ttl, RData::A(A(*a))));
        }
        let id: u16 = std::process::id() as u16 ^ (now() as u16).rotate_left(7);
        message.metadata.id = id;
        message
            .finalize(&self.signer, now())
            .map_err(|e| invalid(format!("signing with TSIG key `{}`: {e}", self.key_name)))?;
        let answer = self.exchange("upsert", &message).await?;
        match answer.metadata.response_code {
            ResponseCode::NoError => {
                tracing::info!(record = %name, values = ?values, server = %self.server, "DNS record updated.");
                Ok(ChangeId(format!("rfc2136-{id}")))
            }
            ResponseCode::NotAuth => Err(CloudError::Unauthorized {
                op: "upsert",
                action: format!(
                    "a TSIG key the server accepts for zone {} (it refused `{}`)",
                    self.zone, self.key_name
                ),
                message: "NOTAUTH: the key is unknown to the server or its secret differs".into(),
            }),
            ResponseCode::Refused => Err(CloudError::Unauthorized {
                op: "upsert",
                action: format!(
                    "`allow-update {{ key {}; }}` on zone {}",
                    self.key_name, self.zone
                ),
                message: "REFUSED".into(),
            }),
            ResponseCode::NotZone | ResponseCode::NXDomain => Err(CloudError::NotFound {
                op: "upsert",
                what: format!("zone {}", self.zone),
                field: "dns.provider.rfc2136.zone".into(),
                message: format!("{:?}", answer.metadata.response_code),
            }),
            other => Err(CloudError::Api {
                op: "upsert",
                code: format!("{other:?}"),
                message: format!("the server answered {other}"),
            }),
        }
    }

    async fn in_sync(&self, _change: &ChangeId) -> Result<bool, CloudError> {
        // The primary answered only after applying the update.
        Ok(true)
    }

    async fn read(&self, name: &str) -> Result<Option<RecordSet>, CloudError> {
        let owner = fqdn(name)?;
        let mut q = Message::new(now() as u16, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(owner.clone(), RecordType::A));
        let answer = self.exchange("read", &q).await?;
        if answer.metadata.response_code == ResponseCode::NXDomain {
            return Ok(None);
        }
        let mut ttl = 0;
        let values: Vec<IpAddr> = answer
            .answers
            .iter()
            .filter(|r| r.name == owner)
            .filter_map(|r| match &r.data {
                RData::A(a) => {
                    ttl = r.ttl;
                    Some(IpAddr::V4(a.0))
                }
                _ => None,
            })
            .collect();
        Ok((!values.is_empty()).then(|| RecordSet {
            name: name.trim_end_matches('.').to_owned(),
            ttl,
            values,
        }))
    }
}
