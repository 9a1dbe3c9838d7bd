//! A failover around replicas that do not answer now (`Hints::silent`): an answering one is
//! promoted when one may be; a silent one only when it alone holds the shard's data, and an
//! alert says the recovery waits for it.

use super::replica_tests::three_replicas;
use super::tests::lost;
use super::*;

fn silent(servers: &[(&str, &str)]) -> Hints {
    Hints {
        silent: servers
            .iter()
            .map(|(s, m)| ((*s).to_owned(), (*m).to_owned()))
            .collect(),
        ..Hints::default()
    }
}

/// (machines promoted in r9001, alerts) of the plan of redis1 lost.
fn failover(state: &ObservedState, top: &Topology, hints: &Hints) -> (Vec<String>, Vec<String>) {
    let p = plan_with(top, state, &lost("redis1"), "rec-1", hints).unwrap();
    let promoted = p
        .steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::PromoteReplica { server, .. } if server.shard == "r9001" => {
                Some(server.machine.clone())
            }
            _ => None,
        })
        .collect();
    let alerts = p
        .steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::Alert { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect();
    (promoted, alerts)
}

#[test]
fn an_answering_replica_within_the_lag_limit_is_promoted_before_a_silent_one() {
    // redis2 at 9,000, redis3 at 9,900 (the most advanced), redis4 never seen in sync.
    let (top, state) = three_replicas();
    let (promoted, alerts) = failover(&state, &top, &silent(&[("r9001", "redis3")]));
    assert_eq!(promoted, ["redis2"]);
    assert_eq!(
        alerts,
        [
            "shard r9001: redis2 is promoted (1000 bytes behind the newest data seen) rather than the more advanced redis3, which does not answer"
        ]
    );
    // A silent server of another shard on the same machine changes nothing here.
    let (promoted, alerts) = failover(&state, &top, &silent(&[("r9002", "redis3")]));
    assert_eq!(promoted, ["redis3"]);
    assert!(alerts.is_empty(), "{alerts:?}");
    // Nothing known silent (`medic plan`): as before.
    assert_eq!(failover(&state, &top, &Hints::default()).0, ["redis3"]);
}

#[test]
fn a_silent_replica_that_alone_holds_the_data_is_waited_for_and_said_so() {
    let (top, state) = three_replicas();
    // The answering redis4 was never seen in sync: promoting it would lose every write.
    let hints = silent(&[("r9001", "redis2"), ("r9001", "redis3")]);
    let (promoted, alerts) = failover(&state, &top, &hints);
    assert_eq!(promoted, ["redis3"]);
    assert_eq!(
        alerts,
        [
            "shard r9001 lost its master redis1, and redis3, the replica to promote, does not answer either (its machine lost too, out of monitoring, or failing its checks): its promotion is tried, and the recovery retried until it answers; no replica that answers is in sync within policy.max_promotion_lag_bytes"
        ]
    );
    // An answering replica too far behind is no better: the silent one with the data.
    let mut far = state.clone();
    let s = far.shards.get_mut("r9001").unwrap();
    s.master_offset = Some(5_000_000);
    s.replicas[1].offset = Some(4_999_000);
    let (promoted, alerts) = failover(&far, &top, &silent(&[("r9001", "redis3")]));
    assert_eq!(promoted, ["redis3"]);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    // Every replica silent and none in sync: nothing promoted, the machine kept, as before.
    let mut none = state.clone();
    for r in &mut none.shards.get_mut("r9001").unwrap().replicas {
        r.offset = None;
    }
    let hints = silent(&[
        ("r9001", "redis2"),
        ("r9001", "redis3"),
        ("r9001", "redis4"),
    ]);
    let (promoted, alerts) = failover(&none, &top, &hints);
    assert!(promoted.is_empty());
    assert!(
        alerts[0].ends_with("was never seen in sync, so it is not promoted automatically"),
        "{alerts:?}"
    );
}

/// With proxies lacking replicas too: an answering replica a proxy lacks comes before a
/// silent one (its promotion works, and only that proxy cannot route to it), and every
/// replica passed over that is ahead of the one promoted is named.
#[test]
fn a_replica_a_proxy_lacks_but_that_answers_comes_before_a_silent_one() {
    let (top, mut state) = three_replicas();
    let lacks = |state: &mut ObservedState, machine: &str| {
        let s = state.shards.get_mut("r9001").unwrap();
        s.missing_on
            .insert("haproxy2".into(), [machine.to_owned()].into());
    };
    // redis3 (9,900) silent; redis2 (9,000) answers but haproxy2 lacks it; redis4 never in
    // sync.
    let mut one = state.clone();
    lacks(&mut one, "redis2");
    let (promoted, alerts) = failover(&one, &top, &silent(&[("r9001", "redis3")]));
    assert_eq!(promoted, ["redis2"]);
    assert_eq!(
        alerts,
        [
            "shard r9001: redis2 is promoted (1000 bytes behind the newest data seen) rather than the more advanced redis3, which does not answer",
            "shard r9001: redis2 is promoted though haproxy2 had no server for it when last read (no other replica that answers may be promoted); until `medic recover PROXY` configures them, they cannot route to it",
        ]
    );
    // redis4 (8,500) answers and every proxy has it; redis2 (9,000) is silent; redis3 (9,900)
    // answers but haproxy2 lacks it: redis4, and both passed over are named.
    state.shards.get_mut("r9001").unwrap().replicas[2].offset = Some(8_500);
    lacks(&mut state, "redis3");
    let (promoted, alerts) = failover(&state, &top, &silent(&[("r9001", "redis2")]));
    assert_eq!(promoted, ["redis4"]);
    assert_eq!(
        alerts,
        [
            "shard r9001: redis4 is promoted (1500 bytes behind the newest data seen) rather than the more advanced redis2, which does not answer",
            "shard r9001: redis4 is promoted (1500 bytes behind the newest data seen) rather than the more advanced redis3, which haproxy2 had no server for when last read",
        ]
    );
}

/// Of several silent replicas ahead of the one promoted, the warning names the most advanced,
/// and on a tie the one listed first (the planner's rule everywhere).
#[test]
fn the_most_advanced_silent_replica_passed_over_is_named() {
    let (top, mut state) = three_replicas();
    // redis4 (8,500) answers; redis2 (9,000) and redis3 (9,900) are silent.
    state.shards.get_mut("r9001").unwrap().replicas[2].offset = Some(8_500);
    let hints = silent(&[("r9001", "redis2"), ("r9001", "redis3")]);
    let (promoted, alerts) = failover(&state, &top, &hints);
    assert_eq!(promoted, ["redis4"]);
    assert_eq!(
        alerts,
        [
            "shard r9001: redis4 is promoted (1500 bytes behind the newest data seen) rather than the more advanced redis3, which does not answer"
        ]
    );
    // redis2 and redis3 both at 9,900: redis2, listed first.
    state.shards.get_mut("r9001").unwrap().replicas[0].offset = Some(9_900);
    let (promoted, alerts) = failover(&state, &top, &hints);
    assert_eq!(promoted, ["redis4"]);
    assert_eq!(
        alerts,
        [
            "shard r9001: redis4 is promoted (1500 bytes behind the newest data seen) rather than the more advanced redis2, which does not answer"
        ]
    );
}
