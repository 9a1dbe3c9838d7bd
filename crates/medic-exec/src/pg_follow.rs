//! A PostgreSQL standby made to follow a new primary (`FollowPostgres`): the `host` and
//! `port` of its `primary_conninfo` changed, everything else in it kept (the replication
//! user, its password file, SSL settings), the configuration reloaded — PostgreSQL 13 and
//! later restart the WAL receiver for it, without a restart of the server — and then a wait
//! until it streams from the new primary, which is what the step claims.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use medic_cloud::{Cloud, Dns};
use medic_plan::Action;

use crate::postgres::{Failed, in_recovery, login, one_row, session, sql_failed};
use crate::{ExecError, Executor};

/// How long the standby may take to stream from its new primary once reloaded.
const STREAM_WITHIN: Duration = Duration::from_secs(20);

impl<C: Cloud, D: Dns> Executor<'_, C, D> {
    /// A `FollowPostgres` step: its summary.
    pub(crate) async fn follow_postgres(
        &self,
        index: usize,
        kind: &'static str,
        action: &Action,
    ) -> Result<String, ExecError> {
        let Action::FollowPostgres {
            service,
            machine,
            address,
            port,
            user,
            database,
            password_file,
            primary,
            primary_address,
        } = action
        else {
            return Err(ExecError::Unsupported { index, kind });
        };
        let ip = self.resolve(index, kind, address)?;
        let to = SocketAddr::new(self.resolve(index, kind, primary_address)?, *port);
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
        let at = SocketAddr::new(ip, *port);
        let changed = follow(&config, at, to, STREAM_WITHIN)
            .await
            .map_err(failed)?;
        Ok(format!(
            "{service}@{machine}: PostgreSQL streams from {primary} ({to}){}",
            if changed {
                ""
            } else {
                " (it already followed it)"
            }
        ))
    }
}

/// Makes the standby at `at` follow the primary at `to` and waits (up to `within`) until it
/// streams from it. Whether its `primary_conninfo` had to be changed. A server not in
/// recovery (a primary) is refused and left alone.
pub async fn follow(
    config: &tokio_postgres::Config,
    at: SocketAddr,
    to: SocketAddr,
    within: Duration,
) -> Result<bool, Failed> {
    session(config, at, within + Duration::from_secs(10), |client| async move {
        if !in_recovery(&client, at).await? {
            return Err(Failed {
                message: format!(
                    "{at}: not in recovery (a primary), so not made to follow {to}"
                ),
                lasting: true,
            });
        }
        let rows = client
            .simple_query("SHOW primary_conninfo")
            .await
            .map_err(|e| sql_failed(&e, at))?;
        let now = one_row(&rows)
            .and_then(|r| r.into_iter().next().flatten())
            .unwrap_or_default();
        let want = repoint(&now, to.ip(), to.port()).map_err(|why| Failed {
            message: format!("{at}: its primary_conninfo {why}"),
            lasting: true,
        })?;
        let changed = want != now;
        if changed {
            set_conninfo(&client, at, &want).await?;
        }
        // Read back: streaming from the new primary.
        let last = match streams_from(&client, at, to, within).await? {
            Ok(()) => return Ok(changed),
            Err(last) => last,
        };
        // Left as it was: a standby that streamed from somewhere still does.
        let put_back = if changed {
            match set_conninfo(&client, at, &now).await {
                Ok(()) => "; its primary_conninfo was put back as it was",
                Err(_) => "; its primary_conninfo could not be put back as it was",
            }
        } else {
            ""
        };
        Err(Failed::passing(format!(
            "{at}: not streaming from {to} within {} s (last seen: {last}){put_back}; if it replayed past the new primary's promotion it must be rebuilt from it (pg_rewind or pg_basebackup); its log says why",
            within.as_secs()
        )))
    })
    .await
}

/// Waits (up to `within`) until the standby `client` is connected to (at `at`) streams from
/// `to`: `Ok(Err(last))` with what it last did if it does not.
pub(crate) async fn streams_from(
    client: &tokio_postgres::Client,
    at: SocketAddr,
    to: SocketAddr,
    within: Duration,
) -> Result<Result<(), String>, Failed> {
    let start = Instant::now();
    let mut last = String::from("no WAL receiver");
    while start.elapsed() < within {
        let rows = client
            .simple_query("SELECT status, sender_host, sender_port::text FROM pg_stat_wal_receiver")
            .await
            .map_err(|e| sql_failed(&e, at))?;
        if let Some(row) = one_row(&rows) {
            let [status, host, port] = [0, 1, 2].map(|i| row.get(i).cloned().flatten());
            if status.as_deref() == Some("streaming")
                && host.as_deref() == Some(to.ip().to_string().as_str())
                && port.as_deref() == Some(to.port().to_string().as_str())
            {
                return Ok(Ok(()));
            }
            last = format!(
                "{} from {}:{}",
                status.as_deref().unwrap_or("?"),
                host.as_deref().unwrap_or("?"),
                port.as_deref().unwrap_or("?")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(Err(last))
}

/// `ALTER SYSTEM SET primary_conninfo` to `conninfo`, and the configuration reloaded.
async fn set_conninfo(
    client: &tokio_postgres::Client,
    at: SocketAddr,
    conninfo: &str,
) -> Result<(), Failed> {
    // A standard string literal: quotes doubled, backslashes as they are — which needs
    // standard_conforming_strings on (a role or database may turn it off).
    let literal = conninfo.replace('\'', "''");
    for q in [
        "SET standard_conforming_strings = on".to_owned(),
        format!("ALTER SYSTEM SET primary_conninfo = '{literal}'"),
        "SELECT pg_reload_conf()".to_owned(),
    ] {
        client
            .simple_query(&q)
            .await
            .map_err(|e| sql_failed(&e, at))?;
    }
    Ok(())
}

/// What the user medic logs in as lacks on the server at `at` to make it follow another
/// primary (nothing for a superuser): asked at the start, so that a failover does not find
/// out. Each is named as the `GRANT` that gives it.
pub async fn follow_rights_missing(
    config: &tokio_postgres::Config,
    at: SocketAddr,
    within: Duration,
) -> Result<Vec<String>, Failed> {
    let user = config.get_user().unwrap_or("postgres").to_owned();
    session(config, at, within, |client| async move {
        let ask = |q: &'static str| {
            let client = std::sync::Arc::clone(&client);
            async move {
                let rows = client
                    .simple_query(q)
                    .await
                    .map_err(|e| sql_failed(&e, at))?;
                Ok::<bool, Failed>(
                    one_row(&rows)
                        .and_then(|r| r.into_iter().next().flatten())
                        .as_deref()
                        == Some("t"),
                )
            }
        };
        if ask("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").await? {
            return Ok(Vec::new());
        }
        let mut missing = Vec::new();
        for (q, grant) in [
            (
                "SELECT pg_has_role(current_user, 'pg_read_all_settings', 'USAGE')",
                format!("GRANT pg_read_all_settings TO {user}"),
            ),
            (
                "SELECT pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')",
                format!("GRANT pg_read_all_stats TO {user}"),
            ),
            (
                "SELECT has_function_privilege('pg_reload_conf()', 'EXECUTE')",
                format!("GRANT EXECUTE ON FUNCTION pg_reload_conf TO {user}"),
            ),
        ] {
            if !ask(q).await? {
                missing.push(grant);
            }
        }
        // A right of PostgreSQL 15 and later; before, only a superuser may ALTER SYSTEM.
        if !ask("SELECT current_setting('server_version_num')::int >= 150000").await? {
            return Ok(vec![format!(
                "ALTER ROLE {user} SUPERUSER (before PostgreSQL 15 no other role may ALTER SYSTEM)"
            )]);
        }
        if !ask("SELECT has_parameter_privilege('primary_conninfo', 'ALTER SYSTEM')").await? {
            missing.push(format!(
                "GRANT ALTER SYSTEM ON PARAMETER primary_conninfo TO {user}"
            ));
        }
        Ok(missing)
    })
    .await
}

/// `conninfo` (libpq's `keyword=value` form) with its `host` and `port` set to `ip` and
/// `port`, its `hostaddr` dropped (it would win over `host`), everything else kept in order.
pub fn repoint(conninfo: &str, ip: IpAddr, port: u16) -> Result<String, String> {
    let conninfo = conninfo.trim_matches(is_space);
    if conninfo.is_empty() {
        return Err("is empty: it is not a streaming standby".to_owned());
    }
    if conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://") {
        return Err(
            "is a URI; medic changes only the keyword=value form (as pg_basebackup -R writes it)"
                .to_owned(),
        );
    }
    let mut pairs = parse(conninfo)?;
    // The server's certificate is checked for the name in `host`: an address there would
    // fail the check (or pass it for the wrong reason).
    if pairs
        .iter()
        .any(|(k, v)| k == "sslmode" && v == "verify-full")
    {
        return Err("has sslmode=verify-full, which checks the server's name in host: medic does not replace that name by an address; point it at the new primary by hand (or by a name that follows the primary)".to_owned());
    }
    // The first of each in place (libpq takes the last of a repeated key: the others go).
    for (key, value) in [("host", ip.to_string()), ("port", port.to_string())] {
        let mut seen = false;
        pairs.retain_mut(|(k, v)| {
            if k != key {
                return true;
            }
            if seen {
                return false;
            }
            seen = true;
            *v = value.clone();
            true
        });
        if !seen {
            pairs.push((key.to_owned(), value));
        }
    }
    pairs.retain(|(k, _)| k != "hostaddr");
    Ok(pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect::<Vec<_>>()
        .join(" "))
}

/// A value as libpq reads it back: bare if it is plain, else single-quoted with `\` escapes.
fn quote(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:,@".contains(c));
    if plain {
        v.to_owned()
    } else {
        format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// Whitespace as libpq's `isspace` knows it (ASCII only).
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0B' | '\x0C')
}

/// libpq's `keyword = value` pairs: a value bare (up to whitespace) or single-quoted, `\`
/// escaping the next character in either.
fn parse(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| is_space(*c)).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !is_space(*c) && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| is_space(*c)).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("has no '=' after {key:?}"));
        }
        while chars.next_if(|c| is_space(*c)).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("has an unterminated quote in {key}")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !is_space(*c)) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_host_and_port_change_and_the_rest_is_kept() {
        // As pg_basebackup -R writes it.
        let now = "user=postgres passfile='/var/lib/postgresql/.pgpass' channel_binding=prefer host=10.77.0.21 port=5432 sslmode=prefer application_name='my app'";
        let want = repoint(now, ip("10.77.0.22"), 5433).unwrap();
        assert_eq!(
            want,
            "user=postgres passfile=/var/lib/postgresql/.pgpass channel_binding=prefer host=10.77.0.22 port=5433 sslmode=prefer application_name='my app'"
        );
        // Read back as the same pairs, and changed no further when asked again.
        assert_eq!(repoint(&want, ip("10.77.0.22"), 5433).unwrap(), want);
        // A password with a quote and a backslash survives.
        let tricky = r"host = a  password='it\'s \\ x' port=1";
        let out = repoint(tricky, ip("10.0.0.1"), 5432).unwrap();
        assert_eq!(out, r"host=10.0.0.1 password='it\'s \\ x' port=5432");
        assert_eq!(
            parse(&out).unwrap()[1],
            ("password".to_owned(), r"it's \ x".to_owned())
        );
    }

    #[test]
    fn hostaddr_is_dropped_and_missing_keys_added() {
        assert_eq!(
            repoint("hostaddr=10.0.0.9 user=rep", ip("10.0.0.1"), 5432).unwrap(),
            "user=rep host=10.0.0.1 port=5432"
        );
    }

    #[test]
    fn a_repeated_host_or_port_is_set_once() {
        assert_eq!(
            repoint(
                "host=a port=1 user=rep host=b port=2 ",
                ip("10.0.0.1"),
                5432
            )
            .unwrap(),
            "host=10.0.0.1 port=5432 user=rep"
        );
    }

    #[test]
    fn what_cannot_be_changed_is_said() {
        for (bad, says) in [
            ("  \t", "not a streaming standby"),
            (" postgresql://rep@10.0.0.9/x", "URI"),
            ("host=db.example sslmode=verify-full", "verify-full"),
            ("postgresql://rep@10.0.0.9/x", "URI"),
            ("host 10.0.0.9", "no '='"),
            ("password='open", "unterminated"),
        ] {
            let e = repoint(bad, ip("10.0.0.1"), 5432).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
