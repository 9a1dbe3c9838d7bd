//! A switchover's standby catching up with the primary it replaces: after `pg-stop` the old
//! primary's WAL ends at its shutdown checkpoint (`pg_controldata`), and the standby is
//! promoted only once it has received WAL up to there. A primary that did not stop cleanly
//! (an immediate shutdown, a kill) has WAL past its last checkpoint that nothing can say the
//! end of: the switchover stops before any promotion.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use medic_plan::PgStandby;

use crate::postgres::{Failed, login, one_row, session, sql_failed};

/// How long a standby may take to receive the stopped primary's last WAL.
pub(crate) const CATCH_UP_WITHIN: Duration = Duration::from_secs(medic_plan::PG_CATCH_UP_SECS);

/// A WAL position, `HI/LO` in hexadecimal as PostgreSQL writes it.
pub(crate) fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let ok = |p: &str| !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_hexdigit());
    if !ok(hi) || !ok(lo) {
        return None;
    }
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Why where a stopped server's WAL ends is not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unknown {
    /// `pg_controldata` was not read, or named nothing: asking again may tell.
    Unread(String),
    /// What it said rules an end out (a stop that was not clean, a checkpoint that is not the
    /// recorded one): it reads the same on every retry.
    Lasting(String),
}

impl Unknown {
    pub(crate) fn lasting(&self) -> bool {
        matches!(self, Unknown::Lasting(_))
    }

    pub(crate) fn why(&self) -> &str {
        match self {
            Unknown::Unread(w) | Unknown::Lasting(w) => w,
        }
    }
}

/// Where the stopped server's WAL ends, from the `medic-wal: STATE|LSN|RECORDED` line
/// `pg-stop`'s script prints: the checkpoint's position after a clean shutdown. An old
/// primary medic fenced after a clean stop (the fence mark records where it ended) and that
/// something started since came back read-only; stopped again ("shut down in recovery", a
/// resumed switchover's second `pg-stop`), it still ends there only if its checkpoint is the
/// recorded one. Else why the end is unknown.
pub(crate) fn wal_end(stdout: &str) -> Result<(u64, String), Unknown> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("medic-wal: "))
        .ok_or_else(|| {
            Unknown::Unread("pg_controldata said nothing of the stopped server".to_owned())
        })?;
    let mut fields = line.split('|');
    let state = fields.next().unwrap_or_default();
    let lsn = fields.next().unwrap_or_default();
    let recorded = fields.next().unwrap_or_default();
    match state {
        "" => {
            return Err(Unknown::Unread(
                "pg_controldata could not be read: where its WAL ends is not known".to_owned(),
            ));
        }
        // (Whatever the state: a position not read is a read that failed, retried.)
        _ if lsn.is_empty() => {
            return Err(Unknown::Unread(
                "pg_controldata named no checkpoint: where its WAL ends is not known".to_owned(),
            ));
        }
        "shut down" => {}
        "shut down in recovery" if !recorded.is_empty() && recorded == lsn => {}
        "shut down in recovery" => {
            return Err(Unknown::Lasting(format!(
                "it stopped as a standby (cluster state {state:?}), and no clean stop of it as the primary medic fenced is recorded at its checkpoint {lsn:?}: where its WAL ends is not known"
            )));
        }
        _ => {
            return Err(Unknown::Lasting(format!(
                "the server did not stop cleanly (cluster state {state:?}): where its WAL ends is not known"
            )));
        }
    }
    parse_lsn(lsn)
        .map(|at| (at, lsn.to_owned()))
        .ok_or_else(|| {
            Unknown::Lasting(format!("its last checkpoint {lsn:?} is not a WAL position"))
        })
}

/// Waits (up to `within`) until the standby at `ip:port` has received (or replayed) WAL up to
/// `end`: what it reached, or `Err` with what it had last.
pub(crate) async fn caught_up(
    standby: &PgStandby,
    ip: std::net::IpAddr,
    port: u16,
    end: u64,
    within: Duration,
) -> Result<Result<String, String>, Failed> {
    let config = login(
        ip,
        port,
        &standby.user,
        &standby.database,
        standby.password_file.as_deref().map(Path::new),
    )
    .map_err(Failed::passing)?;
    let at = SocketAddr::new(ip, port);
    let ask = within + Duration::from_secs(5);
    session(&config, at, ask, |client| async move {
        let start = Instant::now();
        let mut last = String::from("nothing received");
        loop {
            let rows = client
                .simple_query(
                    "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text",
                )
                .await
                .map_err(|e| sql_failed(&e, at))?;
            let row = one_row(&rows).unwrap_or_default();
            let reached = row
                .iter()
                .flatten()
                .filter_map(|v| parse_lsn(v).map(|n| (n, v.clone())))
                .max();
            if let Some((n, text)) = reached {
                if n >= end {
                    return Ok(Ok(text));
                }
                last = text;
            }
            if start.elapsed() >= within {
                return Ok(Err(last));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_positions_and_the_end_of_a_cleanly_stopped_server() {
        assert_eq!(parse_lsn("0/3000028"), Some(0x3000028));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        for bad in ["", "3000028", "0/", "x/1", "0/1 ; DROP", "123456789/0"] {
            assert_eq!(parse_lsn(bad), None, "{bad:?}");
        }
        let out = "medic: stopped the server\nmedic-wal: shut down|0/5000060\n";
        assert_eq!(wal_end(out), Ok((0x5000060, "0/5000060".to_owned())));
        let crashed = wal_end("medic-wal: in production|0/5000060|\n").unwrap_err();
        assert!(
            crashed.why().contains("did not stop cleanly") && crashed.lasting(),
            "{crashed:?}"
        );
        // A resumed switchover: the old primary was fenced after a clean stop (its end
        // recorded), started read-only, stopped again at the same checkpoint.
        let again = "medic-wal: shut down in recovery|0/5000060|0/5000060\n";
        assert_eq!(wal_end(again), Ok((0x5000060, "0/5000060".to_owned())));
        // Fenced after a stop that was not clean (no end recorded), or gone further since
        // (streamed from somewhere), or never fenced: not known.
        for unknown in [
            "medic-wal: shut down in recovery|0/5000060|\n",
            "medic-wal: shut down in recovery|0/6000028|0/5000060\n",
        ] {
            let e = wal_end(unknown).unwrap_err();
            assert!(e.why().contains("no clean stop") && e.lasting(), "{e:?}");
        }
        assert_eq!(
            wal_end("medic-wal: shut down|0/5000060|\n"),
            Ok((0x5000060, "0/5000060".to_owned()))
        );
        // Unread, or a checkpoint it did not name: asking again may tell.
        for unread in [
            "medic-wal: ||\n",
            "medic-wal: shut down||\n",
            "medic-wal: shut down in recovery||0/5000060\n",
            "medic: the server was not running\n",
        ] {
            let e = wal_end(unread).unwrap_err();
            assert!(matches!(e, Unknown::Unread(_)), "{unread:?}: {e:?}");
        }
    }
}
