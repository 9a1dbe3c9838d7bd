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
    (promoted, alerts_in(&p))
}

/// The alerts a plan says, in order.
fn alerts_in(p: &Plan) -> Vec<String> {
    p.steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::Alert { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
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

/// (kinds of the steps, alerts) of the plan of `machine` lost.
fn plan_of(
    state: &ObservedState,
    top: &Topology,
    machine: &str,
    hints: &Hints,
) -> (Vec<&'static str>, Vec<String>) {
    let p = plan_with(top, state, &lost(machine), "rec-2", hints).unwrap();
    let kinds = p.steps.iter().map(|s| s.action.kind()).collect();
    (kinds, alerts_in(&p))
}

/// A lost machine whose replica may hold the only copy of a shard whose master does not
/// answer either is neither replaced nor fenced at its source: the shard's failover waits
/// for that copy.
#[test]
fn a_machine_holding_the_only_copy_of_a_shard_whose_master_is_silent_is_kept() {
    // redis1 (r9001's master, 10,000) is lost; redis3 (9,900) is lost too; redis2 (9,000).
    let (top, state) = three_replicas();
    let kept = "redis3 is left as it is (not terminated): the master of shard r9001 does not answer either and no replica that answers may be promoted, so redis3's disk may hold the only copy of their latest writes; once redis3 answers again (the failover then promotes it), `medic monitor redis3`";
    // redis2 answers and is within the lag limit: redis3 is replaced as usual.
    let hints = silent(&[("r9001", "redis1"), ("r9001", "redis3")]);
    let (kinds, alerts) = plan_of(&state, &top, "redis3", &hints);
    assert!(kinds.contains(&"terminate"), "{kinds:?}");
    assert!(alerts.is_empty(), "{alerts:?}");
    // redis2 silent too: redis3 is kept, and redis2 likewise (redis3 is as far or further).
    let hints = silent(&[
        ("r9001", "redis1"),
        ("r9001", "redis2"),
        ("r9001", "redis3"),
    ]);
    let (kinds, alerts) = plan_of(&state, &top, "redis3", &hints);
    assert!(
        !kinds.contains(&"terminate") && !kinds.contains(&"launch"),
        "{kinds:?}"
    );
    assert_eq!(alerts, [kept]);
    let (kinds, _) = plan_of(&state, &top, "redis2", &hints);
    assert!(!kinds.contains(&"terminate"), "{kinds:?}");
    // The master answers: nothing waits for redis3's copy.
    let (kinds, _) = plan_of(&state, &top, "redis3", &silent(&[("r9001", "redis3")]));
    assert!(kinds.contains(&"terminate"), "{kinds:?}");
    // An answering replica too far behind to be promoted, and behind redis3: kept.
    let mut far = state.clone();
    let s = far.shards.get_mut("r9001").unwrap();
    s.master_offset = Some(5_000_000);
    s.replicas[1].offset = Some(4_999_000);
    let hints = silent(&[("r9001", "redis1"), ("r9001", "redis3")]);
    let (kinds, alerts) = plan_of(&far, &top, "redis3", &hints);
    assert!(!kinds.contains(&"terminate"), "{kinds:?}");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    // A replica never seen in sync holds nothing to keep: redis4 is replaced.
    let hints = silent(&[("r9001", "redis1"), ("r9001", "redis4")]);
    let (kinds, alerts) = plan_of(&state, &top, "redis4", &hints);
    assert!(kinds.contains(&"terminate"), "{kinds:?}");
    assert!(alerts.is_empty(), "{alerts:?}");
}

/// A kept machine that masters another shard: that shard is failed over, but the machine is
/// not fenced at its source (which terminates it) — a proxy that could not be fenced blocks
/// the promotion instead, until it answers.
#[test]
fn a_kept_machine_is_not_fenced_at_its_source() {
    let (top, mut state) = three_replicas();
    // redis3 masters r9002 (redis1, redis2 and redis4 its replicas, all in sync).
    let s = state.shards.get_mut("r9002").unwrap();
    s.master = "redis3".into();
    s.master_offset = Some(500);
    for (r, m) in s.replicas.iter_mut().zip(["redis1", "redis2", "redis4"]) {
        r.machine = m.into();
        r.offset = Some(500);
    }
    let hints = silent(&[("r9001", "redis1"), ("r9001", "redis3")]);
    let (kinds, _) = plan_of(&state, &top, "redis3", &hints);
    assert!(kinds.contains(&"fence-source"), "{kinds:?}");
    let hints = silent(&[
        ("r9001", "redis1"),
        ("r9001", "redis2"),
        ("r9001", "redis3"),
    ]);
    let (kinds, alerts) = plan_of(&state, &top, "redis3", &hints);
    assert!(kinds.contains(&"promote"), "{kinds:?}");
    assert!(
        !kinds.contains(&"fence-source") && !kinds.contains(&"terminate"),
        "{kinds:?}"
    );
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    // Said before any promotion: a promotion that fails stops the plan.
    let at = |k: &str| kinds.iter().position(|x| *x == k).unwrap();
    assert!(at("alert") < at("promote"), "{kinds:?}");
}

/// Every failover alert of a lost machine's shards comes before its first promotion, so a
/// promotion that fails (and stops the plan) hides none of them.
#[test]
fn every_shard_s_alert_comes_before_the_first_promotion() {
    let (top, mut state) = three_replicas();
    // Both shards mastered by redis1; each one's most advanced replica is silent (r9001's
    // redis3, r9002's redis2): each failover says so.
    let s = state.shards.get_mut("r9002").unwrap();
    s.master_offset = Some(1_000);
    for (r, o) in s.replicas.iter_mut().zip([1_000, 900, 900]) {
        r.offset = Some(o);
    }
    let hints = silent(&[("r9001", "redis3"), ("r9002", "redis2")]);
    let p = plan_with(&top, &state, &lost("redis1"), "rec-3", &hints).unwrap();
    let kinds: Vec<&str> = p.steps.iter().map(|s| s.action.kind()).collect();
    let first_promote = kinds.iter().position(|k| *k == "promote").unwrap();
    let last_alert = kinds.iter().rposition(|k| *k == "alert").unwrap();
    assert!(last_alert < first_promote, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "promote").count(), 2);
    assert_eq!(
        kinds.iter().filter(|k| **k == "alert").count(),
        2,
        "{kinds:?}"
    );
}
