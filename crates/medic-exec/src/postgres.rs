//! A service's PostgreSQL server, as a plan's steps reach it: medic logs in as the service's
//! `postgres` check does (its user, database and password file), on a fresh connection.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use medic_cloud::{Cloud, Dns};
use medic_plan::Action;
use tokio_postgres::SimpleQueryMessage;

use crate::{ExecError, Executor};

use medic_plan::PG_PROMOTE_WAIT_SECS as PROMOTE_WAIT_SECS;

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

impl<C: Cloud, D: Dns> Executor<'_, C, D> {
    /// A `PromotePostgres` step: its summary.
    pub(crate) async fn promote_postgres(
        &self,
        index: usize,
        kind: &'static str,
        action: &Action,
    ) -> Result<String, ExecError> {
        let Action::PromotePostgres {
            service,
            machine,
            address,
            port,
            user,
            database,
            password_file,
        } = action
        else {
            return Err(ExecError::Unsupported { index, kind });
        };
        let ip = self.resolve(index, kind, address)?;
        let failed = |f: Failed| ExecError::Postgres {
            index,
            kind,
            service: service.clone(),
            machine: machine.clone(),
            message: f.message,
            lasting: f.lasting,
        };
        let config = login(
            ip,
            *port,
            user,
            database,
            password_file.as_deref().map(Path::new),
        )
        .map_err(|message| failed(Failed::passing(message)))?;
        let within = Duration::from_secs(PROMOTE_WAIT_SECS + 15);
        Ok(
            match promote(&config, SocketAddr::new(ip, *port), within)
                .await
                .map_err(failed)?
            {
                Promoted::Now => format!("{service}@{machine}: PostgreSQL promoted, taking writes"),
                Promoted::Already => format!(
                    "{service}@{machine}: PostgreSQL already out of recovery (a primary): nothing done"
                ),
            },
        )
    }
}

/// Why a promotion did not happen (or was not seen to finish).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub message: String,
    /// Asking again cannot help: the login or the right to promote was refused, or the
    /// database does not exist (SQLSTATE classes 28 and 3D, and 42501).
    pub lasting: bool,
}

impl Failed {
    pub(crate) fn passing(message: String) -> Failed {
        Failed {
            message,
            lasting: false,
        }
    }
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
) -> Result<Promoted, Failed> {
    session(config, at, within, |client| async move {
        if !in_recovery(&client, at).await? {
            return Ok(Promoted::Already);
        }
        let done = one_value(
            &client
                .simple_query(&format!("SELECT pg_promote(true, {PROMOTE_WAIT_SECS})"))
                .await
                .map_err(|e| sql_failed(&e, at))?,
        );
        if done.as_deref() != Some("t") {
            return Err(Failed::passing(format!(
                "{at}: pg_promote() did not see the server leave recovery within {PROMOTE_WAIT_SECS} s (it answered {done:?}); the promotion may still finish, and cannot be undone: its log says why"
            )));
        }
        if in_recovery(&client, at).await? {
            return Err(Failed::passing(format!(
                "{at}: still in recovery after pg_promote() said it had finished"
            )));
        }
        Ok(Promoted::Now)
    })
    .await
}

/// Whether the user medic logs in as may call `pg_promote()` on the server at `at` (a
/// superuser, or granted `EXECUTE` on it): asked at the start, so that a failover does not
/// find out.
pub async fn may_promote(
    config: &tokio_postgres::Config,
    at: SocketAddr,
    within: Duration,
) -> Result<bool, Failed> {
    session(config, at, within, |client| async move {
        let rows = client
            .simple_query(
                "SELECT has_function_privilege('pg_promote(boolean, integer)', 'EXECUTE')",
            )
            .await
            .map_err(|e| sql_failed(&e, at))?;
        Ok(one_value(&rows).as_deref() == Some("t"))
    })
    .await
}

/// `work` on a fresh connection to `at`, all within `within`; the connection closed after.
pub(crate) async fn session<T, F, W>(
    config: &tokio_postgres::Config,
    at: SocketAddr,
    within: Duration,
    work: W,
) -> Result<T, Failed>
where
    W: FnOnce(std::sync::Arc<tokio_postgres::Client>) -> F,
    F: std::future::Future<Output = Result<T, Failed>>,
{
    let all = async {
        let stream = tokio::net::TcpStream::connect(at)
            .await
            .map_err(|e| Failed::passing(format!("{at}: {e}")))?;
        let (client, connection) = config
            .connect_raw(stream, tokio_postgres::NoTls)
            .await
            .map_err(|e| sql_failed(&e, at))?;
        let driver = tokio::spawn(connection);
        let client = std::sync::Arc::new(client);
        let result = work(std::sync::Arc::clone(&client)).await;
        // The connection ends when the client is dropped.
        drop(client);
        let _ = driver.await;
        result
    };
    tokio::time::timeout(within, all).await.unwrap_or_else(|_| {
        Err(Failed::passing(format!(
            "{at}: no answer within {}",
            medic_playbook::human_ms(u64::try_from(within.as_millis()).unwrap_or(u64::MAX))
        )))
    })
}

pub(crate) async fn in_recovery(
    client: &tokio_postgres::Client,
    at: SocketAddr,
) -> Result<bool, Failed> {
    let rows = client
        .simple_query("SELECT pg_is_in_recovery()")
        .await
        .map_err(|e| sql_failed(&e, at))?;
    match one_value(&rows).as_deref() {
        Some("t") => Ok(true),
        Some("f") => Ok(false),
        other => Err(Failed::passing(format!(
            "{at}: pg_is_in_recovery() answered {other:?}, not t or f"
        ))),
    }
}

/// A client error, lasting if the server refused who medic is or what it may do.
pub(crate) fn sql_failed(e: &tokio_postgres::Error, at: SocketAddr) -> Failed {
    let lasting = e.as_db_error().is_some_and(|db| {
        let code = db.code().code();
        code.starts_with("28") || code.starts_with("3D") || code == "42501"
    });
    Failed {
        message: said(e, at),
        lasting,
    }
}

/// The first column of the first row.
fn one_value(messages: &[SimpleQueryMessage]) -> Option<String> {
    one_row(messages)?.into_iter().next().flatten()
}

/// The first row's columns (`None` for a NULL).
pub(crate) fn one_row(messages: &[SimpleQueryMessage]) -> Option<Vec<Option<String>>> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => {
            Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
        }
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
