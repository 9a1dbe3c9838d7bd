//! A `postgres` service check: a real client logs in and asks the server its role and WAL
//! position, on a fresh connection each time (a server that accepts no more connections is
//! not healthy, whatever its open ones say).
//!
//! What each outcome means for detection, as for the other service checks: an answer is `Ok`
//! with the role and position (the core judges the role against the machine's); refused is
//! `Refused`; no connection in time is `Silent`; a server that answers with an error (a login
//! refused, a database that does not exist, "the database system is starting up"), that
//! closes the connection, or that accepts it and then says nothing in time (a hung database on
//! a machine that answers) is `Unhealthy`.

use std::net::IpAddr;
use std::time::Duration;

use medic_detect::Observation;
use medic_redis::{ReplicationInfo, Role};
use medic_topology::ServiceCheck;
use tokio_postgres::SimpleQueryMessage;

/// Its role, and the WAL position as bytes from 0/0: written on a primary, replayed on a
/// standby (0 if it has replayed nothing yet); and a standby's upstream while it streams
/// (NULL unless the user may read it: a superuser, or `pg_read_all_stats`).
const ASK: &str = "SELECT pg_is_in_recovery(), \
    (COALESCE(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
    ELSE pg_current_wal_lsn() END, '0/0') - '0/0')::bigint, \
    (SELECT sender_host FROM pg_stat_wal_receiver WHERE status = 'streaming'), \
    (SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming')";

/// What a PostgreSQL server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgSeen {
    pub in_recovery: bool,
    pub wal_bytes: u64,
    /// A standby's upstream (an address) while it streams, if the user may see it.
    pub upstream: Option<(std::net::IpAddr, u16)>,
}

impl PgSeen {
    /// As the core keeps every data store's replication state: a primary is a master, a
    /// standby a replica, the WAL position its offset.
    pub fn info(self) -> ReplicationInfo {
        let role = if self.in_recovery {
            Role::Replica
        } else {
            Role::Master
        };
        ReplicationInfo {
            role,
            master: self.upstream.map(|(ip, port)| (ip.to_string(), port)),
            master_link_status: None,
            sync_in_progress: false,
            offset: self.wal_bytes,
            replica_offset: self.in_recovery.then_some(self.wal_bytes),
            replicas: Vec::new(),
            master_last_io_secs: None,
        }
    }
}

/// Checks the PostgreSQL server at `ip:port` within `within`.
pub async fn check(
    ip: IpAddr,
    port: u16,
    how: &ServiceCheck,
    within: Duration,
) -> (Observation, String, Option<PgSeen>) {
    let at = std::net::SocketAddr::new(ip, port);
    let config = match medic_exec::postgres::login(
        ip,
        port,
        how.pg_user(),
        how.pg_database(),
        how.password_file.as_deref(),
    ) {
        Ok(c) => c,
        // Nothing is known of the server: not silent (its machine is not in doubt).
        Err(e) => {
            return (
                Observation::Unhealthy,
                format!("{at}: not asked: {e}"),
                None,
            );
        }
    };
    let deadline = tokio::time::Instant::now() + within;
    let no_answer = || {
        format!(
            "{at}: no answer within {}",
            medic_playbook::human_ms(within.as_millis() as u64)
        )
    };
    // The connection first, on its own: no connection in time is silence (for the machine's
    // observers to judge); a refusal is a refusal.
    let stream = match tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(at)).await {
        Err(_) => return (Observation::Silent, no_answer(), None),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return (
                Observation::Refused,
                format!("{at}: connection refused"),
                None,
            );
        }
        Ok(Err(e)) => return (Observation::Silent, format!("{at}: {e}"), None),
        Ok(Ok(s)) => s,
    };
    // Connected: a server that then says nothing in time is a hung database on a machine
    // that answers (its disk, its backends), which is a bad answer, not silence — its
    // observers would find the port open and take the monitor host for cut off.
    let asked = async {
        let (client, connection) = config.connect_raw(stream, tokio_postgres::NoTls).await?;
        // The connection ends when the client is dropped, below.
        let driver = tokio::spawn(connection);
        let rows = client.simple_query(ASK).await;
        drop(client);
        let _ = driver.await;
        rows
    };
    match tokio::time::timeout_at(deadline, asked).await {
        Err(_) => (
            Observation::Unhealthy,
            format!(
                "{} (connected, but it did not log medic in and answer)",
                no_answer()
            ),
            None,
        ),
        Ok(Err(e)) => judge_error(&e, at),
        Ok(Ok(messages)) => match seen(&messages) {
            Some(s) => {
                let role = match (s.in_recovery, s.upstream) {
                    (true, Some((ip, port))) => {
                        format!("standby (in recovery, streaming from {ip}:{port})")
                    }
                    (true, None) => "standby (in recovery)".to_owned(),
                    (false, _) => "primary".to_owned(),
                };
                (
                    Observation::Ok,
                    format!("{at}: {role}, WAL at {}", lsn(s.wal_bytes)),
                    Some(s),
                )
            }
            None => (
                Observation::Unhealthy,
                format!("{at}: an answer medic cannot read: {messages:?}"),
                None,
            ),
        },
    }
}

/// A client error once connected: whatever the server said, or its closing the connection,
/// is an unhealthy answer.
fn judge_error(
    e: &tokio_postgres::Error,
    at: std::net::SocketAddr,
) -> (Observation, String, Option<PgSeen>) {
    (
        Observation::Unhealthy,
        medic_exec::postgres::said(e, at),
        None,
    )
}

/// The one row of [`ASK`] (text: `t`/`f`, and a number).
fn seen(messages: &[SimpleQueryMessage]) -> Option<PgSeen> {
    let row = messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some(r),
        _ => None,
    })?;
    let in_recovery = match row.get(0)? {
        "t" => true,
        "f" => false,
        _ => return None,
    };
    let wal_bytes = row.get(1)?.parse().ok()?;
    // (A name rather than an address, or a column this user may not read: unknown.)
    let upstream = row
        .get(2)
        .and_then(|h| h.parse().ok())
        .zip(row.get(3).and_then(|p| p.parse().ok()));
    Some(PgSeen {
        in_recovery,
        wal_bytes,
        upstream,
    })
}

/// A WAL position as PostgreSQL writes it (`0/3000148`).
pub fn lsn(bytes: u64) -> String {
    format!("{:X}/{:X}", bytes >> 32, bytes & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_written_as_postgresql_does() {
        assert_eq!(lsn(0x3000148), "0/3000148");
        assert_eq!(lsn((1 << 32) + 0xA0), "1/A0");
    }
}
