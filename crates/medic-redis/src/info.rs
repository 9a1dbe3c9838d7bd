//! `INFO replication` and `ROLE`, parsed into a typed view.

use std::net::IpAddr;

use serde::Serialize;

/// What a redis server says of its replication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicationInfo {
    pub role: Role,
    /// For a replica: its master, as the replica knows it.
    pub master: Option<(String, u16)>,
    pub master_link_status: Option<LinkStatus>,
    /// For a replica: a full sync from the master is under way.
    pub sync_in_progress: bool,
    /// The replication offset this server has processed (`master_repl_offset`).
    pub offset: u64,
    /// For a replica: the offset it has received from its master (`slave_repl_offset`).
    pub replica_offset: Option<u64>,
    /// For a master: its connected replicas.
    pub replicas: Vec<ConnectedReplica>,
    /// For a replica: seconds since it last heard from its master (`master_last_io_seconds_ago`).
    /// A link that says `up` but has heard nothing for longer than the master's ping period is
    /// a link to a master that went silent: TCP has not noticed yet.
    pub master_last_io_secs: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Replica => "replica",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkStatus {
    Up,
    Down,
}

/// A replica as its master lists it (`slaveN:ip=...,port=...,state=online,offset=...,lag=...`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectedReplica {
    pub ip: String,
    pub port: u16,
    /// `online`, `wait_bgsave`, `send_bulk`...
    pub state: String,
    pub offset: u64,
    /// Seconds since the last ack.
    pub lag: u64,
}

impl ConnectedReplica {
    pub fn is_at(&self, ip: IpAddr, port: u16) -> bool {
        self.port == port && self.ip.parse::<IpAddr>().is_ok_and(|a| a == ip)
    }
}

/// The text did not look like `INFO replication`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unexpected INFO replication reply: {0}")]
pub struct InfoParseError(pub String);

/// Parses the reply of `INFO replication`.
pub fn parse_replication(text: &str) -> Result<ReplicationInfo, InfoParseError> {
    let mut role = None;
    let mut master_host = None;
    let mut master_port = None;
    let mut link = None;
    let mut sync = false;
    let mut offset = None;
    let mut replica_offset = None;
    let mut replicas = Vec::new();
    let mut last_io = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key {
            "role" => {
                role = Some(match value {
                    "master" => Role::Master,
                    "slave" | "replica" => Role::Replica,
                    other => return Err(InfoParseError(format!("role `{other}`"))),
                })
            }
            "master_host" => master_host = Some(value.to_owned()),
            "master_port" => master_port = value.parse().ok(),
            "master_link_status" => {
                link = Some(if value == "up" {
                    LinkStatus::Up
                } else {
                    LinkStatus::Down
                })
            }
            "master_sync_in_progress" => sync = value == "1",
            "master_repl_offset" => offset = value.parse().ok(),
            "slave_repl_offset" => replica_offset = value.parse().ok(),
            "master_last_io_seconds_ago" => last_io = value.parse().ok(),
            k if k.starts_with("slave") && k[5..].bytes().all(|b| b.is_ascii_digit()) => {
                replicas
                    .push(parse_connected(value).ok_or_else(|| InfoParseError(line.to_owned()))?);
            }
            _ => {}
        }
    }
    let role = role.ok_or_else(|| InfoParseError("no role".to_owned()))?;
    Ok(ReplicationInfo {
        role,
        master: master_host.zip(master_port),
        master_link_status: link,
        sync_in_progress: sync,
        offset: offset.ok_or_else(|| InfoParseError("no master_repl_offset".to_owned()))?,
        replica_offset,
        replicas,
        master_last_io_secs: last_io,
    })
}

fn parse_connected(value: &str) -> Option<ConnectedReplica> {
    let mut ip = None;
    let mut port = None;
    let mut state = None;
    let mut offset = None;
    let mut lag = 0;
    for field in value.split(',') {
        let (k, v) = field.split_once('=')?;
        match k {
            "ip" => ip = Some(v.to_owned()),
            "port" => port = v.parse().ok(),
            "state" => state = Some(v.to_owned()),
            "offset" => offset = v.parse().ok(),
            "lag" => lag = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    Some(ConnectedReplica {
        ip: ip?,
        port: port?,
        state: state?,
        offset: offset?,
        lag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_master_with_a_replica() {
        let text = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\nslave0:ip=127.0.20.2,port=9001,state=online,offset=4242,lag=0\r\nmaster_failover_state:no-failover\r\nmaster_replid:8c1e\r\nmaster_repl_offset:4256\r\nsecond_repl_offset:-1\r\n";
        let info = parse_replication(text).unwrap();
        assert_eq!(info.role, Role::Master);
        assert_eq!(info.offset, 4256);
        assert_eq!(info.master, None);
        assert_eq!(
            info.replicas,
            [ConnectedReplica {
                ip: "127.0.20.2".into(),
                port: 9001,
                state: "online".into(),
                offset: 4242,
                lag: 0
            }]
        );
        assert!(info.replicas[0].is_at("127.0.20.2".parse().unwrap(), 9001));
    }

    #[test]
    fn a_replica_syncing() {
        let text = "# Replication\nrole:slave\nmaster_host:127.0.20.1\nmaster_port:9001\nmaster_link_status:down\nmaster_last_io_seconds_ago:-1\nmaster_sync_in_progress:1\nslave_read_repl_offset:1\nslave_repl_offset:1\nslave_priority:100\nmaster_repl_offset:0\n";
        let info = parse_replication(text).unwrap();
        assert_eq!(info.role, Role::Replica);
        assert_eq!(info.master, Some(("127.0.20.1".into(), 9001)));
        assert_eq!(info.master_link_status, Some(LinkStatus::Down));
        assert!(info.sync_in_progress);
        assert_eq!(info.replica_offset, Some(1));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(parse_replication("").unwrap_err().0, "no role");
        assert_eq!(
            parse_replication("role:sentinel\n").unwrap_err().0,
            "role `sentinel`"
        );
        assert!(parse_replication("role:master\nslave0:ip=1\nmaster_repl_offset:1\n").is_err());
        assert_eq!(
            parse_replication("role:master\n").unwrap_err().0,
            "no master_repl_offset"
        );
    }
}

/// The reply of `ROLE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum RoleReply {
    Master {
        offset: u64,
        replicas: Vec<(String, u16, u64)>,
    },
    Replica {
        master_host: String,
        master_port: u16,
        state: String,
        offset: i64,
    },
}

/// Parses the reply of `ROLE` (an array; see redis's documentation of the command).
pub fn parse_role(v: &redis::Value) -> Result<RoleReply, InfoParseError> {
    use redis::Value;
    let bad = || InfoParseError(format!("ROLE reply {v:?}"));
    let text = |x: &Value| match x {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let int = |x: &Value| match x {
        Value::Int(i) => Some(*i),
        other => text(other).and_then(|s| s.parse().ok()),
    };
    let Value::Array(items) = v else {
        return Err(bad());
    };
    match items.first().and_then(text).as_deref() {
        Some("master") => {
            let offset = items
                .get(1)
                .and_then(int)
                .and_then(|o| u64::try_from(o).ok())
                .ok_or_else(bad)?;
            let mut replicas = Vec::new();
            if let Some(Value::Array(list)) = items.get(2) {
                for r in list {
                    let Value::Array(f) = r else {
                        return Err(bad());
                    };
                    let ip = f.first().and_then(text).ok_or_else(bad)?;
                    let port = f
                        .get(1)
                        .and_then(int)
                        .and_then(|p| u16::try_from(p).ok())
                        .ok_or_else(bad)?;
                    let off = f
                        .get(2)
                        .and_then(int)
                        .and_then(|o| u64::try_from(o).ok())
                        .ok_or_else(bad)?;
                    replicas.push((ip, port, off));
                }
            }
            Ok(RoleReply::Master { offset, replicas })
        }
        Some("slave") | Some("replica") => Ok(RoleReply::Replica {
            master_host: items.get(1).and_then(text).ok_or_else(bad)?,
            master_port: items
                .get(2)
                .and_then(int)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(bad)?,
            state: items.get(3).and_then(text).ok_or_else(bad)?,
            offset: items.get(4).and_then(int).ok_or_else(bad)?,
        }),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod role_tests {
    use redis::Value;

    use super::*;

    fn b(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn master_and_replica_replies() {
        let m = Value::Array(vec![
            b("master"),
            Value::Int(3129659),
            Value::Array(vec![Value::Array(vec![
                b("127.0.0.2"),
                b("9001"),
                b("3129242"),
            ])]),
        ]);
        assert_eq!(
            parse_role(&m).unwrap(),
            RoleReply::Master {
                offset: 3129659,
                replicas: vec![("127.0.0.2".into(), 9001, 3129242)]
            }
        );
        let r = Value::Array(vec![
            b("slave"),
            b("127.0.0.1"),
            Value::Int(9001),
            b("connected"),
            Value::Int(3167038),
        ]);
        assert_eq!(
            parse_role(&r).unwrap(),
            RoleReply::Replica {
                master_host: "127.0.0.1".into(),
                master_port: 9001,
                state: "connected".into(),
                offset: 3167038
            }
        );
        assert!(parse_role(&Value::Array(vec![b("sentinel")])).is_err());
        assert!(parse_role(&Value::Nil).is_err());
    }
}
