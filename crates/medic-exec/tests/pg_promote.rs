//! The `PromotePostgres` step's client against real PostgreSQL servers: a streaming standby
//! whose primary was killed is promoted and takes writes, with every row the primary had
//! acknowledged and the standby had replayed; a second promotion does nothing; a user the
//! server does not allow to promote is told beforehand, and leaves the standby as it was; a
//! stopped server is an error that says so. With a third server, the other standby is made to
//! follow the promoted one (`FollowPostgres`).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::SocketAddr;
use std::time::Duration;

use medic_exec::pg_follow::{follow, follow_rights_missing};
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

/// A third server: after the primary is lost and one standby promoted, the other standby is
/// made to follow the new primary (its `primary_conninfo` re-pointed, reloaded, no restart)
/// and streams from it — read back by a write on the new primary that reaches it. Asked
/// again, nothing changes; the promoted server is refused and left alone.
#[tokio::test(flavor = "multi_thread")]
async fn the_other_standby_follows_the_new_primary_and_replays_its_writes() {
    let mut primary = Postgres::start(unique_loopback(), 5432);
    primary.psql("CREATE TABLE acked (n int PRIMARY KEY)");
    primary.psql("CREATE ROLE watcher LOGIN");
    let chosen = Postgres::standby_of(&primary, unique_loopback(), 5432);
    let other = Postgres::standby_of(&primary, unique_loopback(), 5432);
    // A user that may not, told beforehand of each right it lacks; then given them (on the
    // primary: the standbys replay the grants).
    let (watcher, other_at) = as_user(&other, "watcher");
    let missing = follow_rights_missing(&watcher, other_at, WITHIN)
        .await
        .unwrap();
    assert_eq!(missing.len(), 4, "{missing:?}");
    assert!(
        missing
            .iter()
            .any(|g| g == "GRANT ALTER SYSTEM ON PARAMETER primary_conninfo TO watcher"),
        "{missing:?}"
    );
    for grant in &missing {
        primary.psql(grant);
    }
    primary.psql("INSERT INTO acked SELECT generate_series(1, 100)");
    for s in [&chosen, &other] {
        wait_until(
            "each standby to replay the primary's 100 rows",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || match s.psql("SELECT count(*) FROM acked").as_str() {
                "100" => Ok(()),
                n => Err(format!("{} has {n}", s.addr)),
            },
        );
    }
    primary.kill();
    let (superuser, at) = as_user(&chosen, "postgres");
    assert_eq!(promote(&superuser, at, WITHIN).await, Ok(Promoted::Now));

    assert_eq!(
        follow_rights_missing(&watcher, other_at, WITHIN).await,
        Ok(vec![])
    );
    // Made to follow as that user.
    let config = watcher;
    assert_eq!(
        follow(&config, other_at, chosen.addr, WITHIN).await,
        Ok(true)
    );
    let conninfo = other.psql("SHOW primary_conninfo");
    assert!(
        conninfo.contains(&format!("host={}", chosen.addr.ip())),
        "{conninfo}"
    );
    // It replays what the new primary takes.
    chosen.psql("INSERT INTO acked VALUES (101)");
    wait_until(
        "the other standby to replay the new primary's write",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || match other.psql("SELECT count(*) FROM acked").as_str() {
            "101" => Ok(()),
            n => Err(format!("it has {n}")),
        },
    );
    assert_eq!(other.psql("SELECT pg_is_in_recovery()"), "t");
    // Again: it follows already.
    assert_eq!(
        follow(&config, other_at, chosen.addr, WITHIN).await,
        Ok(false)
    );
    // Pointed at an address where nothing streams: not streaming in time, so its old
    // primary_conninfo is put back, and it still replays the new primary's writes.
    let nowhere = SocketAddr::new(unique_loopback().into(), 5432);
    let e = follow(&config, other_at, nowhere, Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(e.message.contains("was put back as it was"), "{e:?}");
    assert_eq!(other.psql("SHOW primary_conninfo"), conninfo);
    chosen.psql("INSERT INTO acked VALUES (102)");
    wait_until(
        "the other standby to replay the new primary's write after the put-back",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || match other.psql("SELECT count(*) FROM acked").as_str() {
            "102" => Ok(()),
            n => Err(format!("it has {n}")),
        },
    );
    // The new primary is not a standby: refused, and it stays writable.
    let e = follow(&superuser, at, other.addr, WITHIN)
        .await
        .unwrap_err();
    assert!(e.lasting && e.message.contains("not in recovery"), "{e:?}");
    assert_eq!(chosen.psql("SELECT pg_is_in_recovery()"), "f");
}
