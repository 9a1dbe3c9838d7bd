//! etcd's v3 API through its JSON gateway: leases, an election by a create-if-absent
//! transaction, and writes guarded by the leader's fencing token.
//!
//! Keys and values are base64 in the gateway's JSON; 64-bit numbers are strings. Each request
//! goes to the endpoints in order until one answers (any member of a cluster serves it).
//!
//! # Errors
//! [`EtcdError::Unreachable`] when no endpoint answered in time (the caller must then assume it
//! may have lost its lease); [`EtcdError::Refused`] when etcd answered with an error;
//! [`EtcdError::LeaseGone`] when a keep-alive finds the lease expired or revoked.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd {op}: no endpoint answered within {within:?} ({tried})")]
    Unreachable {
        op: &'static str,
        within: Duration,
        tried: String,
    },
    #[error("etcd {op} at {endpoint}: HTTP {status}: {body}")]
    Refused {
        op: &'static str,
        endpoint: SocketAddr,
        status: u16,
        body: String,
    },
    #[error("etcd {op}: an answer medic cannot read: {what}")]
    BadAnswer { op: &'static str, what: String },
    #[error("etcd lease {id:x} is gone (expired or revoked)")]
    LeaseGone { id: i64 },
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    pub ttl: Duration,
}

/// Who leads, as etcd has it: the leader key's value and its fencing token (the key's
/// creation revision: every new leader's is higher).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub name: String,
    pub token: i64,
    /// The lease the leader key lives under: who holds it (a member restarted under the same
    /// name holds another lease, and does not inherit its predecessor's term).
    pub lease: i64,
}

/// An etcd client (cheap to clone).
#[derive(Debug, Clone)]
pub struct Etcd {
    endpoints: Vec<SocketAddr>,
    timeout: Duration,
    client: Client<HttpConnector, Full<Bytes>>,
}

fn b64(s: &str) -> String {
    B64.encode(s.as_bytes())
}

/// A 64-bit number as the gateway writes it (a string), or absent (0).
fn num(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

impl Etcd {
    /// A client of the cluster at `endpoints`; each request is bounded by `timeout` per
    /// endpoint.
    pub fn new(endpoints: Vec<SocketAddr>, timeout: Duration) -> Etcd {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeout));
        Etcd {
            endpoints,
            timeout,
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(http),
        }
    }

    async fn call(&self, op: &'static str, path: &str, body: Value) -> Result<Value, EtcdError> {
        let mut tried = Vec::new();
        for &endpoint in &self.endpoints {
            let req = hyper::Request::builder()
                .method("POST")
                .uri(format!("http://{endpoint}{path}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())));
            let Ok(req) = req else {
                return Err(EtcdError::BadAnswer {
                    op,
                    what: format!("cannot build a request to {endpoint}"),
                });
            };
            let work = async {
                let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                let bytes = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?
                    .to_bytes();
                Ok::<_, String>((status, bytes))
            };
            match tokio::time::timeout(self.timeout, work).await {
                Ok(Ok((200, bytes))) => {
                    return serde_json::from_slice(&bytes).map_err(|e| EtcdError::BadAnswer {
                        op,
                        what: e.to_string(),
                    });
                }
                Ok(Ok((status, bytes))) => {
                    return Err(EtcdError::Refused {
                        op,
                        endpoint,
                        status,
                        body: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
                    });
                }
                Ok(Err(e)) => tried.push(format!("{endpoint}: {e}")),
                Err(_) => tried.push(format!("{endpoint}: no answer")),
            }
        }
        Err(EtcdError::Unreachable {
            op,
            within: self.timeout,
            tried: tried.join("; "),
        })
    }

    /// Grants a lease of `ttl` (whole seconds, at least 1).
    pub async fn grant(&self, ttl: Duration) -> Result<Lease, EtcdError> {
        let secs = ttl.as_secs().max(1);
        let v = self
            .call("lease grant", "/v3/lease/grant", json!({ "TTL": secs }))
            .await?;
        let id = num(&v["ID"]);
        if id == 0 {
            return Err(EtcdError::BadAnswer {
                op: "lease grant",
                what: format!("no lease id in {v}"),
            });
        }
        Ok(Lease {
            id,
            ttl: Duration::from_secs(num(&v["TTL"]).max(0) as u64),
        })
    }

    /// Renews a lease; `LeaseGone` if etcd no longer has it.
    pub async fn keep_alive(&self, id: i64) -> Result<Duration, EtcdError> {
        let v = self
            .call(
                "lease keep-alive",
                "/v3/lease/keepalive",
                json!({ "ID": id.to_string() }),
            )
            .await?;
        let ttl = num(&v["result"]["TTL"]);
        if ttl <= 0 {
            return Err(EtcdError::LeaseGone { id });
        }
        Ok(Duration::from_secs(ttl as u64))
    }

    /// Gives a lease up at once (its keys go with it).
    pub async fn revoke(&self, id: i64) -> Result<(), EtcdError> {
        self.call(
            "lease revoke",
            "/v3/lease/revoke",
            json!({ "ID": id.to_string() }),
        )
        .await
        .map(|_| ())
    }

    /// Stands for election: creates `key` = `name` under `lease` if nobody holds it. Returns the
    /// leader afterwards — this candidate (with its fencing token) if it won or already led.
    pub async fn campaign(&self, key: &str, name: &str, lease: i64) -> Result<Leader, EtcdError> {
        let k = b64(key);
        let v = self
            .call(
                "campaign",
                "/v3/kv/txn",
                json!({
                    "compare": [{"key": k, "target": "CREATE", "create_revision": "0"}],
                    "success": [
                        {"request_put": {"key": k, "value": b64(name), "lease": lease.to_string()}},
                        {"request_range": {"key": k}}
                    ],
                    "failure": [{"request_range": {"key": k}}],
                }),
            )
            .await?;
        let responses = v["responses"].as_array().cloned().unwrap_or_default();
        let range = responses
            .iter()
            .find_map(|r| r.get("response_range"))
            .cloned()
            .unwrap_or(Value::Null);
        leader_of(&range).ok_or_else(|| EtcdError::BadAnswer {
            op: "campaign",
            what: format!("no leader key after the transaction: {v}"),
        })
    }

    /// Who leads now, if anyone.
    pub async fn leader(&self, key: &str) -> Result<Option<Leader>, EtcdError> {
        let v = self
            .call("read leader", "/v3/kv/range", json!({ "key": b64(key) }))
            .await?;
        Ok(leader_of(&v))
    }

    /// Writes `key` = `value` only while `leader_key` is still the one created at `token` (the
    /// leader that holds that token has not lost its lease): `false` if the guard failed — a
    /// deposed leader's write never lands.
    pub async fn put_if_leader(
        &self,
        leader_key: &str,
        token: i64,
        key: &str,
        value: &str,
    ) -> Result<bool, EtcdError> {
        let v = self
            .call(
                "guarded put",
                "/v3/kv/txn",
                json!({
                    "compare": [{"key": b64(leader_key), "target": "CREATE", "create_revision": token.to_string()}],
                    "success": [{"request_put": {"key": b64(key), "value": b64(value)}}],
                }),
            )
            .await?;
        Ok(v["succeeded"].as_bool().unwrap_or(false))
    }

    /// A key's value, if set.
    pub async fn get(&self, key: &str) -> Result<Option<String>, EtcdError> {
        let v = self
            .call("get", "/v3/kv/range", json!({ "key": b64(key) }))
            .await?;
        Ok(v["kvs"]
            .as_array()
            .and_then(|k| k.first())
            .and_then(|kv| kv["value"].as_str())
            .and_then(|s| B64.decode(s).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Writes `key` = `value` under `lease` (it goes when the lease does): what a member
    /// publishes of itself.
    pub async fn put_leased(&self, key: &str, value: &str, lease: i64) -> Result<(), EtcdError> {
        self.call(
            "put",
            "/v3/kv/put",
            json!({ "key": b64(key), "value": b64(value), "lease": lease.to_string() }),
        )
        .await
        .map(|_| ())
    }

    /// Every key under `prefix` with its value, in key order.
    pub async fn range_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, EtcdError> {
        let v = self
            .call(
                "range",
                "/v3/kv/range",
                json!({ "key": b64(prefix), "range_end": B64.encode(prefix_end(prefix.as_bytes())) }),
            )
            .await?;
        let text = |v: &Value| {
            B64.decode(v.as_str().unwrap_or(""))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        Ok(v["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| (text(&kv["key"]), text(&kv["value"])))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Deletes `key` only while `leader_key` is still the one created at `token`.
    pub async fn delete_if_leader(
        &self,
        leader_key: &str,
        token: i64,
        key: &str,
    ) -> Result<bool, EtcdError> {
        let v = self
            .call(
                "guarded delete",
                "/v3/kv/txn",
                json!({
                    "compare": [{"key": b64(leader_key), "target": "CREATE", "create_revision": token.to_string()}],
                    "success": [{"request_delete_range": {"key": b64(key)}}],
                }),
            )
            .await?;
        Ok(v["succeeded"].as_bool().unwrap_or(false))
    }
}

/// The end of the range of keys that start with `prefix` (the prefix with its last byte that
/// is not 0xff incremented; `\0` — every key — if there is none).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The leader from a range answer over the leader key.
fn leader_of(range: &Value) -> Option<Leader> {
    let kv = range["kvs"].as_array()?.first()?;
    let name = B64.decode(kv["value"].as_str().unwrap_or("")).ok()?;
    Some(Leader {
        name: String::from_utf8_lossy(&name).into_owned(),
        token: num(&kv["create_revision"]),
        lease: num(&kv["lease"]),
    })
}
