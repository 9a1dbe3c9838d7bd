//! A service's PostgreSQL server, as a plan's steps reach it: medic logs in as the service's
//! `postgres` check does (its user, database and password file), on a fresh connection.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tokio_postgres::SimpleQueryMessage;

/// How long `pg_promote()` may wait for the server to leave recovery, in seconds.
pub const PROMOTE_WAIT_SECS: u64 = 60;

/// How medic logs in to `ip:port`: `user` on `database`, with the password in
/// `password_file` (its first line) if there is one. The file is read each time, so a
/// rotated password is used at once.
pub fn login(
    ip: IpAddr,
    port: u16,
    user: &str,
    database: &str,
    password_file: Option<&Path>,
) -> Result<tokio_postgres::Config, String> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(ip.to_string())
        .port(port)
        .user(user)
        .dbname(database)
        .application_name("medic");
    if let Some(file) = password_file {
        let p = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read password_file {}: {e}", file.display()))?;
        config.password(p.trim_end_matches(['\r', '\n']));
    }
    Ok(config)
}

/// What a promotion found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Promoted {
    /// It was in recovery and is out of it now: a primary, taking writes.
    Now,
    /// It was not in recovery when asked (a step run again, or promoted by hand): nothing
    /// was done.
    Already,
}

/// Makes the server at `ip:port` a primary: asks whether it is in recovery and, if so, calls
/// `pg_promote(true, 60)` and asks again. Fails with what the server said (a refused login,
/// a user not allowed to promote, a promotion not finished in time) or with no answer
/// within `within`.
pub async fn promote(
    config: &tokio_postgres::Config,
    at: SocketAddr,
    within: Duration,
) -> Result<Promoted, String> {
    let work = async {
        let stream = tokio::net::TcpStream::connect(at)
            .await
            .map_err(|e| format!("{at}: {e}"))?;
        let (client, connection) = config
            .connect_raw(stream, tokio_postgres::NoTls)
            .await
            .map_err(|e| said(&e, at))?;
        let driver = tokio::spawn(connection);
        let result = async {
            if !in_recovery(&client, at).await? {
                return Ok(Promoted::Already);
            }
            let done = one_value(
                &client
                    .simple_query(&format!("SELECT pg_promote(true, {PROMOTE_WAIT_SECS})"))
                    .await
                    .map_err(|e| said(&e, at))?,
            );
            if done.as_deref() != Some("t") {
                return Err(format!(
                    "{at}: pg_promote() did not see the server leave recovery within {PROMOTE_WAIT_SECS} s (it answered {done:?}); its log says why"
                ));
            }
            if in_recovery(&client, at).await? {
                return Err(format!(
                    "{at}: still in recovery after pg_promote() said it had finished"
                ));
            }
            Ok(Promoted::Now)
        }
        .await;
        drop(client);
        let _ = driver.await;
        result
    };
    tokio::time::timeout(within, work)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "{at}: no answer within {}",
                medic_playbook::human_ms(u64::try_from(within.as_millis()).unwrap_or(u64::MAX))
            ))
        })
}

async fn in_recovery(client: &tokio_postgres::Client, at: SocketAddr) -> Result<bool, String> {
    let rows = client
        .simple_query("SELECT pg_is_in_recovery()")
        .await
        .map_err(|e| said(&e, at))?;
    match one_value(&rows).as_deref() {
        Some("t") => Ok(true),
        Some("f") => Ok(false),
        other => Err(format!(
            "{at}: pg_is_in_recovery() answered {other:?}, not t or f"
        )),
    }
}

/// The first column of the first row.
fn one_value(messages: &[SimpleQueryMessage]) -> Option<String> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    })
}

/// What the server said (its message and SQLSTATE), or the client's error.
pub fn said(e: &tokio_postgres::Error, at: SocketAddr) -> String {
    match e.as_db_error() {
        Some(db) => format!("{at}: {} ({})", db.message(), db.code().code()),
        None => format!("{at}: {e}"),
    }
}
