//! The service plans' guarantees (see `planner/service.rs`), on examples/domino.yaml.

use std::path::Path;

use medic_playbook::Playbooks;
use medic_topology::Topology;

use super::*;
use crate::describe::describe;
use crate::state::StepOutput;

pub(super) const DOMINO: &str = include_str!("../../../../examples/domino.yaml");

fn topology() -> Topology {
    medic_topology::load::parse_str(Path::new("t.yaml"), DOMINO, "a topology")
        .into_result()
        .unwrap()
}

pub(super) fn outline(plan: &Plan) -> Vec<String> {
    let pb = Playbooks::default();
    plan.steps
        .iter()
        .map(|s| {
            let v = describe(s, &pb);
            format!("{} {}", v.kind, v.target)
        })
        .collect()
}

pub(super) fn down(m: &str) -> Event {
    Event::ServiceDown {
        service: "www".into(),
        machine: m.into(),
    }
}

#[test]
fn the_old_primary_is_fenced_before_the_standby_is_promoted_and_the_record_moves_last() {
    let top = topology();
    let state = ObservedState::assumed(&top);
    let plan = plan_recovery(&top, &state, &down("web1"), "r1").unwrap();
    assert_eq!(
        outline(&plan),
        [
            "unmonitor web1",
            "hook www@web1",
            "hook www@web2",
            "role www@web2",
            "dns www.domino.lab",
            "monitor web1",
        ]
    );
    // The machine answered: a fence that fails there stops the plan (not skipped).
    assert!(matches!(
        &plan.steps[1].action,
        Action::RunHook { hook, skip_unreachable: false, .. } if hook == "on_fenced"
    ));
    let mut after = state.clone();
    for s in &plan.steps {
        after.apply(&s.action, &StepOutput::default());
    }
    let www = &after.services["www"];
    assert_eq!((www.primary.as_str(), www.generation), ("web2", 1));
    assert!(www.out.contains("web1"), "out until it rejoins: {www:?}");
}

#[test]
fn a_silent_primary_s_hook_may_be_skipped_and_the_machine_stays_watched_out_of_the_service() {
    let top = topology();
    let state = ObservedState::assumed(&top);
    let plan = plan_recovery(
        &top,
        &state,
        &Event::MachineLost {
            machine: "web1".into(),
        },
        "r1",
    )
    .unwrap();
    assert_eq!(
        outline(&plan),
        [
            "unmonitor web1",
            "hook www@web1",
            "hook www@web2",
            "role www@web2",
            "dns www.domino.lab",
            "monitor web1",
        ]
    );
    assert!(matches!(
        &plan.steps[1].action,
        Action::RunHook { hook, skip_unreachable: true, .. } if hook == "on_fenced"
    ));
    // A lost standby: out until it rejoins, and told.
    let plan = plan_recovery(
        &top,
        &state,
        &Event::MachineLost {
            machine: "web2".into(),
        },
        "r2",
    )
    .unwrap();
    assert_eq!(
        outline(&plan),
        [
            "unmonitor web2",
            "role www@web2",
            "alert warning",
            "monitor web2"
        ]
    );
}

#[test]
fn no_standby_that_fails_its_checks_or_has_not_rejoined_is_promoted() {
    let top = topology();
    for (down_set, out_set) in [(vec!["web2"], vec![]), (vec![], vec!["web2"])] {
        let mut state = ObservedState::assumed(&top);
        let st = state.services.get_mut("www").unwrap();
        st.down.extend(down_set.into_iter().map(String::from));
        st.out.extend(out_set.into_iter().map(String::from));
        let plan = plan_recovery(&top, &state, &down("web1"), "r1").unwrap();
        // Nothing is done to the primary either: it stays watched, and is failed over as
        // soon as a standby passes its checks.
        assert_eq!(outline(&plan), ["alert CRITICAL"]);
        let lost = Event::MachineLost {
            machine: "web1".into(),
        };
        let plan = plan_recovery(&top, &state, &lost, "r2").unwrap();
        assert_eq!(
            outline(&plan),
            [
                "unmonitor web1",
                "role www@web1",
                "alert CRITICAL",
                "monitor web1"
            ]
        );
    }
}

#[test]
fn a_primary_that_cannot_be_fenced_while_its_machine_answers_is_not_failed_over() {
    let text = DOMINO.replace("      on_fenced: standby-include\n", "");
    let top = medic_topology::load::parse_str(Path::new("t.yaml"), &text, "a topology")
        .into_result()
        .unwrap();
    let state = ObservedState::assumed(&top);
    let plan = plan_recovery(&top, &state, &down("web1"), "r1").unwrap();
    assert_eq!(outline(&plan), ["alert CRITICAL"]);
    // Silent, confirmed by its observers: failed over (demoted when it answers again).
    let lost = Event::MachineLost {
        machine: "web1".into(),
    };
    let plan = plan_recovery(&top, &state, &lost, "r2").unwrap();
    assert!(outline(&plan).contains(&"role www@web2".to_owned()));
}

#[test]
fn a_switchover_demotes_the_primary_before_it_promotes_and_only_to_a_usable_standby() {
    let top = topology();
    let mut state = ObservedState::assumed(&top);
    let to = |m: &str| Event::Switchover {
        shard: "www".into(),
        to: Some(m.into()),
    };
    let plan = plan_recovery(&top, &state, &to("web2"), "r1").unwrap();
    assert_eq!(
        outline(&plan),
        [
            "hook www@web1",
            "hook www@web2",
            "role www@web2",
            "role www@web1",
            "dns www.domino.lab",
        ]
    );
    assert!(matches!(
        &plan.steps[0].action,
        Action::RunHook { hook, .. } if hook == "on_demote"
    ));
    let mut after = state.clone();
    for s in &plan.steps {
        after.apply(&s.action, &StepOutput::default());
    }
    let www = &after.services["www"];
    assert_eq!(www.primary, "web2");
    assert!(
        www.out.is_empty(),
        "the old primary, demoted, is a standby: {www:?}"
    );
    // To itself: what follows the record is done again (its hook, the record), nothing
    // demoted or recorded.
    let again = plan_recovery(&top, &state, &to("web1"), "r2").unwrap();
    assert_eq!(outline(&again), ["hook www@web1", "dns www.domino.lab"]);
    assert!(matches!(
        &again.steps[0].action,
        Action::RunHook { hook, .. } if hook == "on_promote"
    ));
    // Not to a standby failing its checks.
    state
        .services
        .get_mut("www")
        .unwrap()
        .down
        .insert("web2".into());
    let e = plan_recovery(&top, &state, &to("web2"), "r3").unwrap_err();
    assert!(e.to_string().contains("has not passed its checks"), "{e}");
}

#[test]
fn a_standby_failing_is_an_alert_and_a_rejoin_demotes_before_it_counts() {
    let top = topology();
    let mut state = ObservedState::assumed(&top);
    let plan = plan_recovery(&top, &state, &down("web2"), "r1").unwrap();
    assert_eq!(outline(&plan), ["alert warning"]);
    state.services.get_mut("www").unwrap().primary = "web2".into();
    state
        .services
        .get_mut("www")
        .unwrap()
        .out
        .insert("web1".into());
    let rejoin = Event::ServiceRejoin {
        service: "www".into(),
        machine: "web1".into(),
    };
    let plan = plan_recovery(&top, &state, &rejoin, "r2").unwrap();
    assert_eq!(
        outline(&plan),
        [
            "unmonitor web1",
            "hook www@web1",
            "role www@web1",
            "monitor web1"
        ]
    );
    assert!(matches!(
        &plan.steps[1].action,
        Action::RunHook { hook, .. } if hook == "on_demote"
    ));
}

#[test]
fn a_resumed_failover_fences_again_until_the_new_primary_is_recorded() {
    let top = topology();
    let state = ObservedState::assumed(&top);
    let plan = plan_recovery(&top, &state, &down("web1"), "r1").unwrap();
    // unmonitor(1) fence(2) promote-hook(3) role(4) dns(5) monitor(6)
    let done = |n: usize| (1..=n).collect::<std::collections::BTreeSet<usize>>();
    assert_eq!(plan.redo_on_resume(&done(2)), [2].into());
    assert_eq!(plan.redo_on_resume(&done(3)), [2].into());
    assert!(plan.redo_on_resume(&done(4)).is_empty());
}

#[test]
fn with_failover_routing_both_record_sets_follow_the_roles() {
    let text = DOMINO
        .replace(
            "dns: {name: www.domino.lab, ttl: 5}",
            "dns: {name: www.domino.lab, ttl: 5, routing: failover}",
        )
        .replace(
            "    rfc2136:\n      server: 10.77.0.2:53\n      zone: domino.lab\n      tsig_key: medic\n      tsig_secret_file: /var/lib/medic/lab/tsig.key\n",
            "    route53: {zone_id: Z0123456789ABC, zone: domino.lab}\n",
        );
    assert!(text.contains("route53:"), "{text}");
    let top = medic_topology::load::parse_str(Path::new("t.yaml"), &text, "a topology")
        .into_result()
        .unwrap();
    let state = ObservedState::assumed(&top);
    let plan = plan_recovery(&top, &state, &down("web1"), "r1").unwrap();
    let dns: Vec<&Action> = plan
        .steps
        .iter()
        .map(|s| &s.action)
        .filter(|a| matches!(a, Action::FailoverDns { .. } | Action::UpsertDns { .. }))
        .collect();
    assert_eq!(dns.len(), 1, "{:?}", outline(&plan));
    let Action::FailoverDns {
        primary,
        secondary,
        http_path,
        port,
        owner,
        ..
    } = dns[0]
    else {
        panic!("{:?}", dns[0]);
    };
    assert_eq!(
        (primary, secondary),
        (&addr_of(&state, "web2"), &addr_of(&state, "web1")),
        "the new primary, and the old one as secondary (the only other machine)"
    );
    assert_eq!((http_path.as_deref(), *port), (Some("/health"), 80));
    assert_eq!(owner, "medic:domino:www");
    // An https check: Route 53's checks are HTTPS, with the check's name sent as SNI.
    let text = text.replace(
        "{kind: http, path: /health,",
        "{kind: https, server_name: www.domino.lab, path: /health,",
    );
    let top = medic_topology::load::parse_str(Path::new("t.yaml"), &text, "a topology")
        .into_result()
        .unwrap();
    let plan = plan_recovery(&top, &state, &down("web1"), "r2").unwrap();
    let https = plan.steps.iter().find_map(|s| match &s.action {
        Action::FailoverDns {
            http_path,
            https,
            server_name,
            ..
        } => Some((http_path.clone(), *https, server_name.clone())),
        _ => None,
    });
    assert_eq!(
        https,
        Some((Some("/health".into()), true, Some("www.domino.lab".into())))
    );
    let shown = plan
        .steps
        .iter()
        .map(|s| describe(s, &Playbooks::default()))
        .find(|v| v.kind == "dns")
        .unwrap();
    assert!(
        shown.commands[0].contains("HTTPS /health port 80, SNI www.domino.lab"),
        "{shown:?}"
    );
}

#[test]
fn a_machine_that_answers_but_still_fails_is_demoted_and_stays_out() {
    let top = topology();
    let mut state = ObservedState::assumed(&top);
    {
        let st = state.services.get_mut("www").unwrap();
        st.primary = "web2".into();
        st.out.insert("web1".into());
        st.down.insert("web1".into());
    }
    let rejoin = Event::ServiceRejoin {
        service: "www".into(),
        machine: "web1".into(),
    };
    let plan = plan_recovery(&top, &state, &rejoin, "r1").unwrap();
    assert_eq!(
        outline(&plan),
        ["unmonitor web1", "hook www@web1", "monitor web1"]
    );
    let Action::RunHook { hook, vars, .. } = &plan.steps[1].action else {
        panic!("{:?}", plan.steps[1]);
    };
    assert_eq!(
        (hook.as_str(), &vars["state"]),
        ("on_demote", &serde_json::json!("down"))
    );
    let mut after = state.clone();
    for s in &plan.steps {
        after.apply(&s.action, &StepOutput::default());
    }
    assert!(after.services["www"].out.contains("web1"), "still out");
}

/// examples/domino.yaml with a third machine, web3, as the second standby.
fn three() -> Topology {
    let text = DOMINO
        .replace(
            "  - {name: web2, role: service, ami: web}",
            "  - {name: web2, role: service, ami: web}\n  - {name: web3, role: service, ami: web}",
        )
        .replace("standbys: [web2]", "standbys: [web2, web3]");
    medic_topology::load::parse_str(Path::new("t.yaml"), &text, "a topology")
        .into_result()
        .unwrap()
}

pub(super) fn promoted(plan: &Plan) -> Vec<&str> {
    plan.steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::ServiceRole {
                machine,
                role: ServiceRole::Primary,
                ..
            } => Some(machine.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_standby_medic_promoted_late_is_the_one_a_failover_records() {
    // web3 answers writable after medic's pg-promote of it failed (pg_promote() finished
    // after its wait). Failing its checks for being writable, it is still the one: promoting
    // web2 would make two primaries.
    let top = three();
    let mut state = ObservedState::assumed(&top);
    let www = state.services.get_mut("www").unwrap();
    www.positions = [
        ("web1".into(), 5_000),
        ("web2".into(), 5_000),
        ("web3".into(), 5_000),
    ]
    .into();
    www.down.insert("web3".into());
    www.writable.insert("web3".into());
    // Writable for another reason (promoted by hand, a fork of long ago): not chosen.
    let plan = plan_recovery(&top, &state, &down("web1"), "r0").unwrap();
    assert_eq!(promoted(&plan), ["web2"]);
    let www = state.services.get_mut("www").unwrap();
    www.promoting = Some("web3".into());
    let lost = Event::MachineLost {
        machine: "web1".into(),
    };
    for event in [down("web1"), lost] {
        let plan = plan_recovery(&top, &state, &event, "r1").unwrap();
        assert_eq!(promoted(&plan), ["web3"], "{event}");
        let mut after = state.clone();
        for s in &plan.steps {
            after.apply(&s.action, &StepOutput::default());
        }
        assert_eq!(after.services["www"].primary, "web3");
        assert!(after.services["www"].writable.is_empty());
        assert_eq!(after.services["www"].promoting, None);
    }
    // Not answering writable at its last check (silent, or in recovery): not chosen.
    let mut quiet = state.clone();
    quiet.services.get_mut("www").unwrap().writable.clear();
    let plan = plan_recovery(&top, &quiet, &down("web1"), "r3").unwrap();
    assert_eq!(promoted(&plan), ["web2"]);
    // One failed away from (out: an old primary back writable) is never chosen for that.
    let www = state.services.get_mut("www").unwrap();
    www.out.insert("web3".into());
    let plan = plan_recovery(&top, &state, &down("web1"), "r2").unwrap();
    assert_eq!(promoted(&plan), ["web2"]);
}

#[test]
fn the_most_advanced_standby_is_promoted_and_none_too_far_behind() {
    let top = three();
    let max = top.policy.max_promotion_lag_bytes.value;
    let mut state = ObservedState::assumed(&top);
    // No positions seen (a check that reports none): the topology's order.
    let plan = plan_recovery(&top, &state, &down("web1"), "r1").unwrap();
    assert_eq!(promoted(&plan), ["web2"]);
    // web3 further along than web2: web3, whether the primary is failing or lost.
    let www = state.services.get_mut("www").unwrap();
    www.positions = [
        ("web1".into(), 5_000),
        ("web2".into(), 3_000),
        ("web3".into(), 4_000),
    ]
    .into();
    let plan = plan_recovery(&top, &state, &down("web1"), "r2").unwrap();
    assert_eq!(promoted(&plan), ["web3"]);
    let lost = Event::MachineLost {
        machine: "web1".into(),
    };
    let plan = plan_recovery(&top, &state, &lost, "r3").unwrap();
    assert_eq!(promoted(&plan), ["web3"]);
    // Equal: the order again.
    let www = state.services.get_mut("www").unwrap();
    www.positions.insert("web2".into(), 4_000);
    let plan = plan_recovery(&top, &state, &down("web1"), "r4").unwrap();
    assert_eq!(promoted(&plan), ["web2"]);
    // Every standby more than the limit behind: nothing promoted, nothing changed, told why.
    let www = state.services.get_mut("www").unwrap();
    www.positions.insert("web1".into(), 4_000 + max + 1);
    for (event, id) in [(down("web1"), "r5"), (lost, "r6")] {
        let plan = plan_recovery(&top, &state, &event, id).unwrap();
        assert!(promoted(&plan).is_empty(), "{:?}", outline(&plan));
        assert!(
            !plan.steps.iter().any(|s| matches!(
                &s.action,
                Action::ServiceRole { .. } | Action::RunHook { .. } | Action::UpsertDns { .. }
            )),
            "{:?}",
            outline(&plan)
        );
        let told = plan.steps.iter().any(|s| matches!(
            &s.action,
            Action::Alert { message, .. } if message.contains(&format!("is {} bytes behind", max + 1))
        ));
        assert!(told, "{:?}", outline(&plan));
    }
    // A database's check, and the lost primary's position never seen (it died before its
    // first check since medic started): promoted, with a warning that says so.
    let text_pg = DOMINO.replace(
        "{kind: http, path: /health, status: 200, body: ok,",
        "{kind: postgres,",
    );
    let pg = medic_topology::load::parse_str(Path::new("t.yaml"), &text_pg, "a topology")
        .into_result()
        .unwrap();
    let mut state = ObservedState::assumed(&pg);
    let www = state.services.get_mut("www").unwrap();
    www.positions = [("web2".into(), 10)].into();
    let plan = plan_recovery(&pg, &state, &down("web1"), "r8").unwrap();
    assert_eq!(promoted(&plan), ["web2"]);
    let warned = plan.steps.iter().any(|s| {
        matches!(
            &s.action,
            Action::Alert { level: AlertLevel::Warning, message }
                if message.contains("the WAL position of web1 was not seen since medic started")
        )
    });
    assert!(warned, "{:?}", outline(&plan));
    // Read-only standbys lose nothing: served from whatever they have.
    let text_ro = DOMINO.replace(
        "failback: manual",
        "failback: manual\n    standbys_read_only: true",
    );
    let ro = medic_topology::load::parse_str(Path::new("t.yaml"), &text_ro, "a topology")
        .into_result()
        .unwrap();
    let mut state = ObservedState::assumed(&ro);
    let www = state.services.get_mut("www").unwrap();
    www.positions = [("web1".into(), 10 * max), ("web2".into(), 0)].into();
    let plan = plan_recovery(&ro, &state, &down("web1"), "r7").unwrap();
    assert_eq!(promoted(&plan), ["web2"]);
}
