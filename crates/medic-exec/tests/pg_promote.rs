//! The `PromotePostgres` step's client against real PostgreSQL servers: a streaming standby
//! whose primary was killed is promoted and takes writes, with every row the primary had
//! acknowledged and the standby had replayed; a second promotion does nothing; a user the
//! server does not allow to promote is told beforehand, and leaves the standby as it was; a stopped server is an
//! error that says so.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::SocketAddr;
use std::time::Duration;

use medic_exec::postgres::{Promoted, login, may_promote, promote};
use medic_testkit::{Postgres, unique_loopback, wait_until};

const WITHIN: Duration = Duration::from_secs(30);

fn as_user(pg: &Postgres, user: &str) -> (tokio_postgres::Config, SocketAddr) {
    let config = login(pg.addr.ip(), pg.addr.port(), user, "postgres", None).unwrap();
    (config, pg.addr)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_is_promoted_once_with_what_it_replayed_and_only_by_a_user_allowed_to() {
    let mut primary = Postgres::start(unique_loopback(), 5432);
    // A user that may log in and look, not promote (pg_promote is the superuser's unless
    // granted).
    primary.psql("CREATE ROLE watcher LOGIN");
    primary.psql("CREATE TABLE acked (n int PRIMARY KEY)");
    let standby = Postgres::standby_of(&primary, unique_loopback(), 5432);
    primary.psql("INSERT INTO acked SELECT generate_series(1, 1000)");
    wait_until(
        "the standby to replay the primary's 1000 rows",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || match standby.psql("SELECT count(*) FROM acked").as_str() {
            "1000" => Ok(()),
            other => Err(format!("it has {other}")),
        },
    );
    primary.kill();

    // Asked beforehand (as medic does at its start), each says whether it may.
    let (watcher, at) = as_user(&standby, "watcher");
    assert_eq!(may_promote(&watcher, at, WITHIN).await, Ok(false));
    let (superuser, _) = as_user(&standby, "postgres");
    assert_eq!(may_promote(&superuser, at, WITHIN).await, Ok(true));
    // Not allowed: refused, and the standby still in recovery.
    let e = promote(&watcher, at, WITHIN).await.unwrap_err();
    assert!(e.message.contains("permission denied"), "{e:?}");
    assert!(e.lasting, "asking again cannot help: {e:?}");
    assert_eq!(standby.psql("SELECT pg_is_in_recovery()"), "t");

    assert_eq!(promote(&superuser, at, WITHIN).await, Ok(Promoted::Now));
    // Read back: out of recovery, every replayed row there, and a write taken.
    assert_eq!(standby.psql("SELECT pg_is_in_recovery()"), "f");
    standby.psql("INSERT INTO acked VALUES (1001)");
    assert_eq!(standby.psql("SELECT count(*) FROM acked"), "1001");
    // Run again (a resumed recovery): nothing more is done.
    assert_eq!(promote(&superuser, at, WITHIN).await, Ok(Promoted::Already));

    // The stopped primary: refused, named.
    let (config, at) = as_user(&primary, "postgres");
    let e = promote(&config, at, WITHIN).await.unwrap_err();
    assert!(
        e.message.contains(&at.to_string()) && e.message.contains("refused"),
        "{e:?}"
    );
    assert!(!e.lasting, "it may come back: {e:?}");
}

#[test]
fn an_unreadable_password_file_is_named() {
    let e = login(
        "127.0.0.1".parse().unwrap(),
        5432,
        "medic",
        "app",
        Some(std::path::Path::new("/nonexistent/medic-pg.pass")),
    )
    .unwrap_err();
    assert!(
        e.contains("cannot read password_file /nonexistent/medic-pg.pass"),
        "{e}"
    );
}
