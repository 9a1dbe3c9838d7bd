//! The election and the fencing token against a real etcd (`etcd` from Debian's etcd-server,
//! started per test on loopback addresses of its own by [`EtcdCluster`]): one member for the
//! API, three for losing a member and then the quorum.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::time::{Duration, Instant};

use medic_coord::etcd::{Etcd, EtcdError};
use medic_testkit::{EtcdCluster, wait_until};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const KEY: &str = "/medic/test/leader";

#[test]
fn one_leader_at_a_time_and_a_deposed_leader_cannot_write() {
    let cluster = EtcdCluster::start(1);
    let rt = rt();
    let c = Etcd::new(cluster.endpoints(), Duration::from_secs(2));
    let (a, b) = rt.block_on(async {
        (
            c.grant(Duration::from_secs(3)).await.unwrap(),
            c.grant(Duration::from_secs(30)).await.unwrap(),
        )
    });
    // a stands first and wins; b stands and finds a.
    let first = rt.block_on(c.campaign(KEY, "monitor-a", a.id)).unwrap();
    assert_eq!(first.name, "monitor-a");
    let seen_by_b = rt.block_on(c.campaign(KEY, "monitor-b", b.id)).unwrap();
    assert_eq!(seen_by_b, first, "b does not take over a live leader");
    assert!(
        rt.block_on(c.put_if_leader(KEY, first.token, "/medic/test/step", "1 by a"))
            .unwrap()
    );
    // a stops renewing (a leader host that froze): its lease expires, b takes over with a
    // higher token.
    let second = wait_until(
        "b leads after a's lease expired",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let l = rt.block_on(c.campaign(KEY, "monitor-b", b.id)).unwrap();
            if l.name == "monitor-b" {
                Ok(l)
            } else {
                Err(format!("{l:?}"))
            }
        },
    );
    assert!(second.token > first.token, "{second:?} after {first:?}");
    // a wakes up and writes with its old token: refused; b's write lands.
    assert!(
        !rt.block_on(c.put_if_leader(KEY, first.token, "/medic/test/step", "2 by a"))
            .unwrap()
    );
    assert!(
        rt.block_on(c.put_if_leader(KEY, second.token, "/medic/test/step", "2 by b"))
            .unwrap()
    );
    assert_eq!(
        rt.block_on(c.get("/medic/test/step")).unwrap().as_deref(),
        Some("2 by b")
    );
    // a's lease is gone for good.
    assert!(matches!(
        rt.block_on(c.keep_alive(a.id)),
        Err(EtcdError::LeaseGone { .. })
    ));
}

#[test]
fn a_leader_that_steps_down_hands_over_at_once() {
    let cluster = EtcdCluster::start(1);
    let rt = rt();
    let c = Etcd::new(cluster.endpoints(), Duration::from_secs(2));
    let a = rt.block_on(c.grant(Duration::from_secs(30))).unwrap();
    let b = rt.block_on(c.grant(Duration::from_secs(30))).unwrap();
    assert_eq!(rt.block_on(c.campaign(KEY, "a", a.id)).unwrap().name, "a");
    assert!(rt.block_on(c.keep_alive(a.id)).unwrap() > Duration::ZERO);
    rt.block_on(c.revoke(a.id)).unwrap();
    assert_eq!(rt.block_on(c.leader(KEY)).unwrap(), None);
    assert_eq!(rt.block_on(c.campaign(KEY, "b", b.id)).unwrap().name, "b");
}

#[test]
fn an_unreachable_etcd_is_an_error_within_the_bound() {
    let mut cluster = EtcdCluster::start(1);
    let rt = rt();
    let c = Etcd::new(cluster.endpoints(), Duration::from_millis(500));
    let a = rt.block_on(c.grant(Duration::from_secs(5))).unwrap();
    cluster.kill(0);
    let started = Instant::now();
    let e = rt.block_on(c.keep_alive(a.id)).unwrap_err();
    assert!(matches!(e, EtcdError::Unreachable { .. }), "{e}");
    // Bounded: the leader learns within its timeout that it cannot renew (and stops acting by
    // its tenure's deadline).
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// A lease of 30 s: long enough that no test here sees it run out unless it means to.
const LONG: Duration = Duration::from_secs(30);

#[test]
fn range_prefix_lists_the_keys_under_the_prefix_in_key_order() {
    let cluster = EtcdCluster::start(1);
    let rt = rt();
    let c = Etcd::new(cluster.endpoints(), Duration::from_secs(2));
    let lease = rt.block_on(c.grant(LONG)).unwrap();
    // Written out of order; some keys only look like they are under the prefix.
    for (k, v) in [
        ("/medic/test/members/c", "3"),
        ("/medic/test/members0", "the range's end: outside"),
        ("/medic/test/members/a", "1"),
        ("/medic/test/members", "the prefix less its slash: outside"),
        ("/medic/test/members/b/x", "2"),
        ("/medic/test/other/a", "outside"),
        ("/medic/test/memberz", "outside"),
    ] {
        rt.block_on(c.put_leased(k, v, lease.id)).unwrap();
    }
    assert_eq!(
        rt.block_on(c.range_prefix("/medic/test/members/")).unwrap(),
        [
            ("/medic/test/members/a", "1"),
            ("/medic/test/members/b/x", "2"),
            ("/medic/test/members/c", "3"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    assert_eq!(
        rt.block_on(c.range_prefix("/medic/test/nothing/")).unwrap(),
        []
    );
}

#[test]
fn a_leased_key_goes_when_its_lease_is_revoked() {
    let cluster = EtcdCluster::start(1);
    let rt = rt();
    let c = Etcd::new(cluster.endpoints(), Duration::from_secs(2));
    let (a, b) =
        rt.block_on(async { (c.grant(LONG).await.unwrap(), c.grant(LONG).await.unwrap()) });
    rt.block_on(c.put_leased("/medic/test/members/a", "at 10.0.0.1", a.id))
        .unwrap();
    rt.block_on(c.put_leased("/medic/test/members/b", "at 10.0.0.2", b.id))
        .unwrap();
    assert_eq!(
        rt.block_on(c.get("/medic/test/members/a"))
            .unwrap()
            .as_deref(),
        Some("at 10.0.0.1")
    );
    rt.block_on(c.revoke(a.id)).unwrap();
    assert_eq!(rt.block_on(c.get("/medic/test/members/a")).unwrap(), None);
    // The other lease's key stays.
    assert_eq!(
        rt.block_on(c.range_prefix("/medic/test/members/")).unwrap(),
        [("/medic/test/members/b".to_owned(), "at 10.0.0.2".to_owned())]
    );
}

#[test]
fn delete_if_leader_deletes_only_with_the_current_token() {
    let cluster = EtcdCluster::start(1);
    let rt = rt();
    let c = Etcd::new(cluster.endpoints(), Duration::from_secs(2));
    let a = rt.block_on(c.grant(LONG)).unwrap();
    let first = rt.block_on(c.campaign(KEY, "a", a.id)).unwrap();
    assert_eq!(first.name, "a");
    assert!(
        rt.block_on(c.put_if_leader(KEY, first.token, "/medic/test/recovery", "by a"))
            .unwrap()
    );
    // a steps down, b leads: a's token is stale.
    rt.block_on(c.revoke(a.id)).unwrap();
    let b = rt.block_on(c.grant(LONG)).unwrap();
    let second = rt.block_on(c.campaign(KEY, "b", b.id)).unwrap();
    assert_eq!(second.name, "b");
    assert!(second.token > first.token, "{second:?} after {first:?}");
    assert!(
        !rt.block_on(c.delete_if_leader(KEY, first.token, "/medic/test/recovery"))
            .unwrap(),
        "a deposed leader's delete must not land"
    );
    assert_eq!(
        rt.block_on(c.get("/medic/test/recovery"))
            .unwrap()
            .as_deref(),
        Some("by a"),
        "the stale token deleted nothing"
    );
    assert!(
        rt.block_on(c.delete_if_leader(KEY, second.token, "/medic/test/recovery"))
            .unwrap()
    );
    assert_eq!(rt.block_on(c.get("/medic/test/recovery")).unwrap(), None);
}

/// How long one call took, and what it returned.
fn timed<T>(
    rt: &tokio::runtime::Runtime,
    f: impl std::future::Future<Output = T>,
) -> (T, Duration) {
    let started = Instant::now();
    let out = rt.block_on(f);
    (out, started.elapsed())
}

fn lost_quorum(e: &EtcdError) -> bool {
    matches!(e, EtcdError::Unreachable { .. } | EtcdError::Refused { .. })
}

#[test]
fn three_members_lose_one_and_go_on_lose_two_and_write_nothing_then_recover() {
    let mut cluster = EtcdCluster::start(3);
    let rt = rt();
    let timeout = Duration::from_secs(1);
    let bound = 3 * timeout;
    let c = Etcd::new(cluster.endpoints(), timeout);
    let lease = rt.block_on(c.grant(LONG)).unwrap();
    let leader = rt.block_on(c.campaign(KEY, "monitor-a", lease.id)).unwrap();
    assert_eq!(leader.name, "monitor-a");
    assert!(
        rt.block_on(c.put_if_leader(KEY, leader.token, "/medic/test/step", "1 with three"))
            .unwrap()
    );

    // The first endpoint the client tries goes: it must fail over to the next. The two left
    // may have to elect a new raft leader first, so wait for it.
    cluster.kill(0);
    wait_until(
        "keep-alive, read and guarded write through the two members left",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let ttl = rt
                .block_on(c.keep_alive(lease.id))
                .map_err(|e| e.to_string())?;
            let now = rt.block_on(c.leader(KEY)).map_err(|e| e.to_string())?;
            assert_eq!(
                now.as_ref(),
                Some(&leader),
                "one member lost, the leader stays"
            );
            let wrote = rt
                .block_on(c.put_if_leader(KEY, leader.token, "/medic/test/step", "2 with two"))
                .map_err(|e| e.to_string())?;
            assert!(
                wrote,
                "the leader's token still guards writes with two members"
            );
            Ok(ttl)
        },
    );
    assert_eq!(
        rt.block_on(c.get("/medic/test/step")).unwrap().as_deref(),
        Some("2 with two")
    );

    // No quorum: every call is an error within the bound, and no guarded write ever lands.
    // Not at once: if the member left was etcd's raft leader it goes on leading until it
    // notices, an election timeout later, and until then renews leases on its own (seen here:
    // keep-alive Ok right after the second kill) — so wait for every call to fail.
    cluster.kill(1);
    let round = || {
        let (kept, t1) = timed(&rt, c.keep_alive(lease.id));
        let (read, t2) = timed(&rt, c.leader(KEY));
        let (wrote, t3) = timed(
            &rt,
            c.put_if_leader(KEY, leader.token, "/medic/test/step", "3 without quorum"),
        );
        for (op, t) in [("keep-alive", t1), ("leader", t2), ("guarded put", t3)] {
            assert!(
                t < bound,
                "{op} took {t:?} without quorum (bound {bound:?})"
            );
        }
        assert!(
            !matches!(wrote, Ok(true)),
            "a guarded write landed without quorum"
        );
        let seen = format!("keep-alive {kept:?}; leader {read:?}; guarded put {wrote:?}");
        let all_failed = matches!(&kept, Err(e) if lost_quorum(e))
            && matches!(&read, Err(e) if lost_quorum(e))
            && matches!(&wrote, Err(e) if lost_quorum(e));
        if all_failed { Ok(seen) } else { Err(seen) }
    };
    wait_until(
        "every call fails once the quorum is lost",
        Duration::from_secs(15),
        Duration::from_millis(100),
        round,
    );
    // And it stays so.
    if let Err(seen) = round() {
        panic!("a call succeeded without quorum: {seen}");
    }

    // Both back: the lease (30 s, not run out) renews again, the leader is the same and its
    // token still guards writes.
    cluster.restart(0);
    cluster.restart(1);
    let ttl = wait_until(
        "the lease renews after the quorum is back",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            rt.block_on(c.keep_alive(lease.id))
                .map_err(|e| e.to_string())
        },
    );
    assert!(ttl > Duration::ZERO);
    assert_eq!(rt.block_on(c.leader(KEY)).unwrap(), Some(leader.clone()));
    assert!(
        rt.block_on(c.put_if_leader(KEY, leader.token, "/medic/test/step", "4 with three again"))
            .unwrap()
    );
    assert_eq!(
        rt.block_on(c.get("/medic/test/step")).unwrap().as_deref(),
        Some("4 with three again")
    );
}
