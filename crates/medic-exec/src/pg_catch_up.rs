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

/// Where the stopped server's WAL ends, from the `medic-wal: STATE|LSN|FENCED` line
/// `pg-stop`'s script prints: the checkpoint's position after a clean shutdown, else why it
/// is unknown. An old primary medic fenced on its timeline (`fenced`) and that something
/// restarted since came back read-only and wrote nothing: stopped again ("shut down in
/// recovery", a resumed switchover's second `pg-stop`), its WAL still ends where it did.
pub(crate) fn wal_end(stdout: &str) -> Result<(u64, String), String> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("medic-wal: "))
        .ok_or("pg_controldata said nothing of the stopped server")?;
    let mut fields = line.split('|');
    let state = fields.next().unwrap_or_default();
    let lsn = fields.next().unwrap_or_default();
    let fenced = fields.next() == Some("fenced");
    if state == "shut down in recovery" && !fenced {
        return Err(
            "it stopped as a standby that medic did not fence: it is not the primary whose WAL the switchover waits for"
                .to_owned(),
        );
    }
    if state != "shut down" && state != "shut down in recovery" {
        return Err(format!(
            "the server did not stop cleanly (cluster state {state:?}): where its WAL ends is not known"
        ));
    }
    parse_lsn(lsn)
        .map(|at| (at, lsn.to_owned()))
        .ok_or_else(|| format!("its last checkpoint {lsn:?} is not a WAL position"))
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
        let crashed = wal_end("medic-wal: in production|0/5000060\n").unwrap_err();
        assert!(crashed.contains("did not stop cleanly"), "{crashed}");
        // A resumed switchover: the old primary was fenced, restarted read-only, stopped again.
        let again = "medic-wal: shut down in recovery|0/5000060|fenced\n";
        assert_eq!(wal_end(again), Ok((0x5000060, "0/5000060".to_owned())));
        let standby = wal_end("medic-wal: shut down in recovery|0/5000060|\n").unwrap_err();
        assert!(standby.contains("did not fence"), "{standby}");
        assert_eq!(
            wal_end("medic-wal: shut down|0/5000060|\n"),
            Ok((0x5000060, "0/5000060".to_owned()))
        );
        assert!(wal_end("medic: the server was not running\n").is_err());
    }
}
