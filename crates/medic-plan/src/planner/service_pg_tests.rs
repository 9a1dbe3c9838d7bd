//! A service's PostgreSQL in its plans: the most advanced standby promoted after the fence and
//! recorded at once, the other standbys made to follow it (examples/domino.yaml with a
//! PostgreSQL check).

use std::path::Path;

use medic_playbook::Playbooks;
use medic_topology::Topology;

use super::service_tests::{DOMINO, down, outline, promoted};
use super::*;
use crate::describe::describe;

/// examples/domino.yaml's service with a PostgreSQL check beside its own (`more_checks`),
/// `extra` added to it.
fn with_postgres(extra: &str) -> Topology {
    let text = DOMINO.replace(
        "    failback: manual",
        &format!(
            "    failback: manual\n    more_checks:\n      - {{kind: postgres, port: 5432, user: medic, database: app, password_file: /etc/medic/pg.pass}}\n{extra}"
        ),
    );
    medic_topology::load::parse_str(Path::new("t.yaml"), &text, "a topology")
        .into_result()
        .unwrap()
}

#[test]
fn a_postgres_standby_is_promoted_after_the_fence_and_recorded_at_once_before_its_hook() {
    let pg = with_postgres("");
    let mut state = ObservedState::assumed(&pg);
    // Both positions seen, the standby caught up.
    state.services.get_mut("www").unwrap().positions =
        [("web1".into(), 100), ("web2".into(), 100)].into();
    let lost = Event::MachineLost {
        machine: "web1".into(),
    };
    for event in [down("web1"), lost] {
        let plan = plan_recovery(&pg, &state, &event, "r1").unwrap();
        assert_eq!(
            outline(&plan),
            [
                "unmonitor web1",
                "hook www@web1",
                "pg-promote www@web2",
                "role www@web2",
                "hook www@web2",
                "dns www.domino.lab",
                "monitor web1",
            ],
            "{event}"
        );
        // Logged in as the check is, at the check's port.
        assert_eq!(
            plan.steps[2].action,
            Action::PromotePostgres {
                service: "www".into(),
                machine: "web2".into(),
                address: crate::vars::addr_of(&state, "web2"),
                port: 5432,
                user: "medic".into(),
                database: "app".into(),
                password_file: Some("/etc/medic/pg.pass".into()),
            }
        );
        // The dry run shows what is asked.
        let shown = describe(&plan.steps[2], &Playbooks::default());
        assert!(
            shown
                .commands
                .iter()
                .any(|c| c.contains("pg_promote(true, 60)")),
            "{shown:?}"
        );
    }
    // Resumed once the database is promoted: its fence is not made again (it came before,
    // and a promotion cannot be undone). Before: made again.
    let plan = plan_recovery(&pg, &state, &down("web1"), "r5").unwrap();
    let done = |n: usize| (1..=n).collect::<std::collections::BTreeSet<usize>>();
    assert_eq!(plan.redo_on_resume(&done(2)), [2].into());
    // (Begun and cut short, not journaled done: the fence is made again first — the
    // promotion may never have been asked for — and then the promotion, which leaves a
    // server already promoted alone.)
    assert!(plan.redo_on_resume(&done(3)).is_empty());
    // A planned switchover: the primary demoted first, then the standby promoted.
    let plan = plan_recovery(
        &pg,
        &state,
        &Event::Switchover {
            shard: "www".into(),
            to: Some("web2".into()),
        },
        "r2",
    )
    .unwrap();
    assert_eq!(
        outline(&plan),
        [
            "hook www@web1",
            "pg-promote www@web2",
            "role www@web2",
            "role www@web1",
            "hook www@web2",
            "dns www.domino.lab"
        ]
    );
    // Not to a standby further behind than the policy allows.
    let max = pg.policy.max_promotion_lag_bytes.value;
    let mut behind = state.clone();
    behind.services.get_mut("www").unwrap().positions =
        [("web1".into(), max + 200), ("web2".into(), 100)].into();
    let e = plan_recovery(
        &pg,
        &behind,
        &Event::Switchover {
            shard: "www".into(),
            to: Some("web2".into()),
        },
        "r4",
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("web2 is {} bytes behind web1", max + 100)),
        "{e}"
    );
    // Read-only standbys are never promoted: they serve what they have.
    let ro = with_postgres("    standbys_read_only: true\n");
    let state = ObservedState::assumed(&ro);
    let plan = plan_recovery(&ro, &state, &down("web1"), "r3").unwrap();
    assert_eq!(promoted(&plan), ["web2"]);
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s.action, Action::PromotePostgres { .. })),
        "{:?}",
        outline(&plan)
    );
}

#[test]
fn the_other_postgres_standbys_follow_the_new_primary_last_unless_they_fail_their_checks() {
    let text = DOMINO
        .replace(
            "  - {name: web2, role: service, ami: web}",
            "  - {name: web2, role: service, ami: web}\n  - {name: web3, role: service, ami: web}",
        )
        .replace("standbys: [web2]", "standbys: [web2, web3]")
        .replace(
            "    failback: manual",
            "    failback: manual\n    more_checks:\n      - {kind: postgres, port: 5432, user: medic, database: app}",
        );
    let top = medic_topology::load::parse_str(Path::new("t.yaml"), &text, "a topology")
        .into_result()
        .unwrap();
    let mut state = ObservedState::assumed(&top);
    let www = state.services.get_mut("www").unwrap();
    www.positions = [("web1".into(), 10), ("web2".into(), 10), ("web3".into(), 5)].into();
    let plan = plan_recovery(&top, &state, &down("web1"), "r1").unwrap();
    let out = outline(&plan);
    assert_eq!(
        out[out.len() - 3..],
        ["dns www.domino.lab", "monitor web1", "pg-follow www@web3"],
        "{out:?}"
    );
    let follow = plan
        .steps
        .iter()
        .find(|s| matches!(s.action, Action::FollowPostgres { .. }))
        .unwrap();
    assert_eq!(
        follow.action,
        Action::FollowPostgres {
            service: "www".into(),
            machine: "web3".into(),
            address: crate::vars::addr_of(&state, "web3"),
            port: 5432,
            user: "medic".into(),
            database: "app".into(),
            password_file: None,
            primary: "web2".into(),
            primary_address: crate::vars::addr_of(&state, "web2"),
        }
    );
    let shown = describe(follow, &Playbooks::default());
    assert!(
        shown
            .commands
            .iter()
            .any(|c| c.contains("ALTER SYSTEM SET primary_conninfo")),
        "{shown:?}"
    );
    // A planned switchover to web3: web2 (not the demoted web1) follows it.
    let switch = Event::Switchover {
        shard: "www".into(),
        to: Some("web3".into()),
    };
    let www = state.services.get_mut("www").unwrap();
    www.positions.insert("web3".into(), 10);
    let plan = plan_recovery(&top, &state, &switch, "r2").unwrap();
    let followers: Vec<_> = plan
        .steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::FollowPostgres {
                machine, primary, ..
            } => Some((machine.as_str(), primary.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(followers, [("web2", "web3")]);
    // web3 failing its checks: not asked (its step would fail the recovery), told instead.
    state
        .services
        .get_mut("www")
        .unwrap()
        .down
        .insert("web3".into());
    let plan = plan_recovery(&top, &state, &down("web1"), "r3").unwrap();
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s.action, Action::FollowPostgres { .. })),
        "{:?}",
        outline(&plan)
    );
    assert!(plan.steps.iter().any(|s| matches!(&s.action,
        Action::Alert { level: AlertLevel::Warning, message } if message.contains("web3's PostgreSQL standby fails its checks"))));
    // Writable (a second primary?): not made to follow; a critical alert.
    state
        .services
        .get_mut("www")
        .unwrap()
        .writable
        .insert("web3".into());
    let plan = plan_recovery(&top, &state, &down("web1"), "r4").unwrap();
    assert!(plan.steps.iter().any(|s| matches!(&s.action,
        Action::Alert { level: AlertLevel::Critical, message } if message.contains("web3's PostgreSQL is writable"))));
}
