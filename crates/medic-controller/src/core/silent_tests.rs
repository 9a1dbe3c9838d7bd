//! What the core tells the planner is not answering (`Hints::silent`): a failover steers
//! around those replicas when it can.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use medic_detect::Observation;
use medic_redis::Role;

use super::tests::{check, core, redis};

fn pair(shard: &str, machine: &str) -> (String, String) {
    (shard.to_owned(), machine.to_owned())
}

#[test]
fn servers_out_of_monitoring_or_failing_their_checks_are_silent() {
    let mut c = core();
    assert!(c.silent_servers().is_empty());
    // A replica answering is not.
    c.on_check(&check(
        &redis("r9001", "redis2"),
        1_000,
        Observation::Ok,
        Some(Role::Replica),
    ));
    assert!(c.silent_servers().is_empty());
    // One bad answer is not enough; `fall` of them are, for that server alone.
    let bad = |at| check(&redis("r9001", "redis2"), at, Observation::Unhealthy, None);
    c.on_check(&bad(1_100));
    assert!(c.silent_servers().is_empty());
    for i in 1..10 {
        c.on_check(&bad(1_100 + i * 100));
    }
    assert_eq!(c.silent_servers(), [pair("r9001", "redis2")].into());
    // Out of monitoring: a server alone, or every server of a machine.
    c.saved.unmonitored_servers.insert(pair("r9002", "redis1"));
    c.saved.unmonitored.insert("redis2".to_owned());
    assert_eq!(
        c.silent_servers(),
        [
            pair("r9001", "redis2"),
            pair("r9002", "redis1"),
            pair("r9002", "redis2")
        ]
        .into()
    );
    // Answering again (`rise` times) clears what its checks said.
    c.saved.unmonitored.clear();
    for i in 0..10 {
        let ok = check(
            &redis("r9001", "redis2"),
            3_000 + i * 100,
            Observation::Ok,
            Some(Role::Replica),
        );
        c.on_check(&ok);
    }
    assert_eq!(c.silent_servers(), [pair("r9002", "redis1")].into());
}
