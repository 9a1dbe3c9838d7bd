//! The `postgres` service check against real PostgreSQL servers: a primary and its streaming
//! standby answer their roles and WAL positions; a wrong database is an unhealthy answer; a
//! stopped server is refused; a port that accepts and never answers is a hung database
//! (unhealthy); no connection at all in time is silence.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::IpAddr;
use std::time::Duration;

use medic_controller::pg_check::{PgSeen, check};
use medic_detect::Observation;
use medic_testkit::{Postgres, full_listener, unique_loopback, wait_until};
use medic_topology::{CheckKind, ServiceCheck};

fn postgres_check() -> ServiceCheck {
    ServiceCheck {
        kind: CheckKind::Postgres,
        ..ServiceCheck::default()
    }
}

const WITHIN: Duration = Duration::from_secs(2);

async fn ask(pg: &Postgres, how: &ServiceCheck) -> (Observation, String, Option<PgSeen>) {
    check(pg.addr.ip(), pg.addr.port(), how, WITHIN).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_primary_and_its_standby_answer_their_roles_and_positions() {
    let mut primary = Postgres::start(unique_loopback(), 5432);
    let how = postgres_check();
    let (o, detail, seen) = ask(&primary, &how).await;
    assert_eq!(o, Observation::Ok, "{detail}");
    let seen = seen.expect("its role and position");
    assert!(!seen.in_recovery, "{detail}");
    assert!(detail.contains("primary, WAL at "), "{detail}");
    assert!(seen.wal_bytes > 0, "{detail}");

    let standby = Postgres::standby_of(&primary, unique_loopback(), 5432);
    primary.psql("CREATE TABLE t AS SELECT generate_series(1, 10000) AS n");
    let written: u64 = primary
        .psql("SELECT (pg_current_wal_lsn() - '0/0')::bigint")
        .parse()
        .expect("a position");
    // The standby replays up to the primary's position: waited on, with what it said last.
    let (sb_detail, sb_seen) = {
        let standby_addr = standby.addr;
        let how = how.clone();
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            wait_until(
                "the standby to replay the primary's writes, streaming",
                Duration::from_secs(30),
                Duration::from_millis(100),
                || {
                    let (o, d, s) =
                        rt.block_on(check(standby_addr.ip(), standby_addr.port(), &how, WITHIN));
                    match s {
                        Some(s)
                            if o == Observation::Ok
                                && s.wal_bytes >= written
                                && s.upstream.is_some() =>
                        {
                            Ok((d, s))
                        }
                        _ => Err(format!("{o:?}: {d}")),
                    }
                },
            )
        })
        .await
        .expect("the wait ends")
    };
    assert!(sb_seen.in_recovery, "{sb_detail}");
    // Its upstream, as the check's user (a superuser) may read it.
    assert_eq!(
        sb_seen.upstream,
        Some((primary.addr.ip(), primary.addr.port())),
        "{sb_detail}"
    );
    assert!(
        sb_detail.contains(&format!(
            "standby (in recovery, streaming from {})",
            primary.addr
        )),
        "{sb_detail}"
    );

    // A database that does not exist: the server answers, with an error.
    let wrong = ServiceCheck {
        database: Some("nowhere".into()),
        ..postgres_check()
    };
    let (o, detail, seen) = ask(&primary, &wrong).await;
    assert_eq!(o, Observation::Unhealthy, "{detail}");
    assert!(detail.contains("does not exist"), "{detail}");
    assert!(seen.is_none());

    // Stopped: its port refuses (once the server's processes are gone).
    primary.kill();
    let addr = primary.addr;
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        wait_until(
            "the stopped primary's port to refuse",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || match rt.block_on(check(addr.ip(), addr.port(), &how, WITHIN)) {
                (Observation::Refused, _, _) => Ok(()),
                (o, d, _) => Err(format!("{o:?}: {d}")),
            },
        )
    })
    .await
    .expect("the wait ends");
}

#[tokio::test]
async fn a_server_that_accepts_and_never_answers_is_a_hung_database() {
    let ip = unique_loopback();
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts, and never says a word.
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            open.push(s);
        }
    });
    let within = Duration::from_millis(300);
    let (o, detail, seen) = check(IpAddr::V4(ip), port, &postgres_check(), within).await;
    assert_eq!(o, Observation::Unhealthy, "{detail}");
    assert!(
        detail.contains("connected, but it did not log medic in"),
        "{detail}"
    );
    assert!(seen.is_none());
    held.abort();
}

#[tokio::test]
async fn no_connection_in_time_is_silence() {
    // A listener whose accept queue is full drops new connections' SYNs, as a machine that is
    // gone would.
    let (l, _held) = full_listener(unique_loopback().into());
    let at = l.local_addr().unwrap();
    let within = Duration::from_millis(300);
    let (o, detail, seen) = check(at.ip(), at.port(), &postgres_check(), within).await;
    assert_eq!(o, Observation::Silent, "{detail}");
    assert!(detail.contains("no answer within"), "{detail}");
    assert!(seen.is_none());
}
