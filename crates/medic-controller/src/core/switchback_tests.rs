//! A service's switchover that fails before its promotion is switched back: its primary made
//! the primary again at once (`pg-start` first), before the failover its stopped server
//! queued, which then no longer starts (examples/domino.yaml with PostgreSQL and `rejoin`).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use medic_detect::Observation;
use medic_plan::{Action, Event, StepOutput};
use medic_redis::Role::{Master, Replica};

use super::service_tests::{check, core_with, pg_at, queued, www};
use super::tests::{alerts, request};
use super::*;

/// domino's service checked by PostgreSQL, with `rejoin`; both machines seen passing, at the
/// same WAL position.
fn core() -> Core {
    let mut c = core_with(&[
        (
            "failback: manual",
            "failback: manual\n    rejoin: {data_dir: /var/lib/pg, bin_dir: /usr/lib/postgresql/15/bin}",
        ),
        (
            "{kind: http, path: /health, status: 200, body: ok,",
            "{kind: postgres, user: medic, database: www,",
        ),
    ]);
    for at in [1_000, 1_500] {
        pg_at(&mut c, &www("web1"), at, Master, 100);
        pg_at(&mut c, &www("web2"), at, Replica, 100);
    }
    c
}

fn to(machine: &str) -> Event {
    Event::Switchover {
        shard: "www".into(),
        to: Some(machine.into()),
    }
}

/// Starts the switchover to web2 and runs it until the step of `kind`, which fails; web1's
/// checks fail meanwhile (its server stopped). The outputs of its end.
fn fail_switchover_at(c: &mut Core, kind: &str) -> Vec<Output> {
    fail_at(c, request(to("web2"), 2_000, false), kind, true)
}

/// As [`fail_switchover_at`], for the switchover `req`; web1's checks fail meanwhile only if
/// `refused`.
fn fail_at(c: &mut Core, req: Request, kind: &str, refused: bool) -> Vec<Output> {
    assert!(c.request(req));
    c.schedule(2_000);
    let id = c
        .running
        .keys()
        .next()
        .cloned()
        .expect("the switchover runs");
    let step = loop {
        let Next::Run(step) = c.next_step(&id, 2_100) else {
            panic!("no {kind} step");
        };
        if step.action.kind() == kind {
            break step;
        }
        c.step_done(&id, &step, &StepOutput::default(), 2_100);
    };
    for at in [2_500, 3_000, 3_500].into_iter().filter(|_| refused) {
        check(c, &www("web1"), at, Observation::Refused);
    }
    c.step_failed(&id, step.index, "it went wrong".into());
    let Next::End(outcome) = c.next_step(&id, 4_000) else {
        panic!("not ended");
    };
    c.finished(&id, &outcome, 4_000)
}

/// Runs the recovery that `schedule` starts to its end: the outputs of its end.
fn run_next(c: &mut Core, at: u64) -> (Event, Vec<Output>) {
    c.schedule(at);
    let (id, event) = c
        .running
        .iter()
        .next()
        .map(|(id, r)| (id.clone(), r.plan.event.clone()))
        .expect("a recovery runs");
    loop {
        match c.next_step(&id, at) {
            Next::Run(step) => {
                c.step_done(&id, &step, &StepOutput::default(), at);
            }
            Next::End(outcome) => return (event, c.finished(&id, &outcome, at)),
            Next::Unknown => panic!("lost"),
        }
    }
}

#[test]
fn a_switchover_failing_at_its_pg_stop_switches_back_before_the_failover_it_caused() {
    let mut c = core();
    let out = fail_switchover_at(&mut c, "pg-stop");
    let said = alerts(&out);
    assert!(
        said.iter()
            .any(|a| a.contains("web1 is made its primary again") && a.contains("step")),
        "{said:?}"
    );
    // The switchback first, then the failover web1's failing checks queued.
    let q = queued(&c);
    assert_eq!(q.first(), Some(&to("web1")), "{q:?}");
    assert!(
        q.contains(&Event::ServiceDown {
            service: "www".into(),
            machine: "web1".into()
        }),
        "{q:?}"
    );
    // Nothing was promoted: no promotion is remembered as maybe under way.
    assert_eq!(c.saved.observed.services["www"].promoting, None);
    assert_eq!(c.saved.observed.services["www"].primary, "web1");
    let (event, _) = run_next(&mut c, 5_000);
    assert_eq!(event, to("web1"));
    assert_eq!(c.saved.observed.services["www"].primary, "web1");
    // The failover queued on the stopped server's checks no longer starts.
    let out = c.schedule(5_100);
    assert!(
        c.running.is_empty() && c.queued().next().is_none(),
        "{:?}",
        queued(&c)
    );
    assert!(
        alerts(&out).iter().any(|a| a.contains("switchback")),
        "{out:?}"
    );
}

#[test]
fn the_switchback_plan_starts_the_stopped_server_first() {
    let mut c = core();
    fail_switchover_at(&mut c, "pg-stop");
    let plan = medic_plan::plan_recovery(&c.loaded.topology, &c.saved.observed, &to("web1"), "r2")
        .unwrap();
    assert!(
        matches!(&plan.steps[0].action, Action::StartPostgres { machine, .. } if machine == "web1"),
        "{:?}",
        plan.steps
    );
}

#[test]
fn no_switchback_once_the_promotion_was_asked_for_nor_after_a_failed_switchback() {
    // At the promotion: it may finish; remembered, not undone.
    let mut c = core();
    let out = fail_switchover_at(&mut c, "pg-promote");
    assert!(
        !alerts(&out).iter().any(|a| a.contains("primary again")),
        "{out:?}"
    );
    assert!(!queued(&c).contains(&to("web1")), "{:?}", queued(&c));
    assert_eq!(
        c.saved.observed.services["www"].promoting.as_deref(),
        Some("web2")
    );
    // A switchback that fails is not switched back again: the failover follows.
    let mut c = core();
    fail_switchover_at(&mut c, "pg-stop");
    c.schedule(5_000);
    let id = c.running.keys().next().cloned().unwrap();
    let Next::Run(step) = c.next_step(&id, 5_000) else {
        panic!("no step");
    };
    assert_eq!(step.action.kind(), "pg-start");
    c.step_failed(&id, step.index, "its server would not start".into());
    let Next::End(outcome) = c.next_step(&id, 5_100) else {
        panic!("not ended");
    };
    let out = c.finished(&id, &outcome, 5_100);
    assert!(
        !alerts(&out).iter().any(|a| a.contains("primary again")),
        "{out:?}"
    );
    let (event, _) = run_next(&mut c, 5_200);
    assert_eq!(
        event,
        Event::ServiceDown {
            service: "www".into(),
            machine: "web1".into()
        }
    );
}

#[test]
fn no_switchback_while_an_earlier_promotion_may_be_under_way() {
    let mut c = core();
    c.saved.observed.services.get_mut("www").unwrap().promoting = Some("web2".into());
    let out = fail_switchover_at(&mut c, "pg-stop");
    assert!(
        !alerts(&out).iter().any(|a| a.contains("primary again")),
        "{out:?}"
    );
    assert!(!queued(&c).contains(&to("web1")), "{:?}", queued(&c));
}

#[test]
fn a_failed_failback_switched_back_is_not_tried_again() {
    let mut c = core();
    let mut failback = request(to("web2"), 2_000, false);
    failback.trigger = "failback: web2 passed its checks".into();
    let out = fail_at(&mut c, failback, "pg-stop", true);
    let said = alerts(&out);
    assert!(
        said.iter().any(|a| a.contains("automatic failback"))
            && said.iter().any(|a| a.contains("primary again")),
        "{said:?}"
    );
    let (event, _) = run_next(&mut c, 5_000);
    assert_eq!(event, to("web1"));
    assert!(
        c.failback_stopped.contains("www"),
        "the switchback is not an operator's switchover"
    );
}

#[test]
fn a_switchback_queued_under_an_old_primary_no_longer_starts() {
    let mut c = core();
    fail_switchover_at(&mut c, "pg-stop");
    assert_eq!(queued(&c).first(), Some(&to("web1")));
    // Meanwhile (another leader of a group, say) the service was failed over to web2.
    c.saved.observed.services.get_mut("www").unwrap().primary = "web2".into();
    let out = c.schedule(5_000);
    assert!(
        alerts(&out)
            .iter()
            .any(|a| a.contains("no longer stands") && a.contains("web2 is its primary now")),
        "{out:?}"
    );
    assert!(
        !c.running.values().any(|r| r.plan.event == to("web1")),
        "the switchback started"
    );
}

#[test]
fn a_switchback_queued_before_the_primary_moved_away_and_back_no_longer_starts() {
    let mut c = core();
    fail_switchover_at(&mut c, "pg-stop");
    assert_eq!(queued(&c).first(), Some(&to("web1")));
    // Meanwhile (another leader of a group, say) the service was failed over to web2 and
    // switched back to web1: the same primary, two changes later.
    let st = c.saved.observed.services.get_mut("www").unwrap();
    st.generation += 2;
    let out = c.schedule(5_000);
    assert!(
        alerts(&out).iter().any(|a| a.contains("no longer stands")
            && a.contains("web1 is its primary again, after 2 change(s)")),
        "{out:?}"
    );
    assert!(
        !c.running.values().any(|r| r.plan.event == to("web1")),
        "the switchback started"
    );
    assert!(
        c.saved.switchbacks.is_empty(),
        "a dropped switchback is no longer saved: {:?}",
        c.saved.switchbacks
    );
}

#[test]
fn a_switchback_asked_for_before_a_restart_is_queued_again_and_forgotten_once_it_ends() {
    let mut c = core();
    let out = fail_switchover_at(&mut c, "pg-stop");
    assert!(out.iter().any(|o| matches!(o, Output::Save)), "{out:?}");
    let saved = c
        .saved
        .switchbacks
        .get("www")
        .expect("the switchback is saved");
    assert_eq!(saved.to, "web1");
    // The controller restarts before the switchback starts: a new core over the saved state.
    let mut again = Core::new(c.loaded.clone(), c.saved.clone());
    assert!(queued(&again).is_empty());
    // A failover of the stopped primary its checks queued meanwhile comes after it.
    for at in [4_500, 5_000, 5_500] {
        check(&mut again, &www("web1"), at, Observation::Refused);
    }
    again.requeue_switchbacks(5_600);
    again.requeue_switchbacks(5_700);
    let q = queued(&again);
    assert_eq!(q.first(), Some(&to("web1")), "{q:?}");
    assert_eq!(q.iter().filter(|e| **e == to("web1")).count(), 1, "{q:?}");
    let (event, _) = run_next(&mut again, 6_000);
    assert_eq!(event, to("web1"));
    assert!(
        again.saved.switchbacks.is_empty(),
        "a started switchback is the journal's, no longer saved: {:?}",
        again.saved.switchbacks
    );
    // Nothing to queue again after the next restart.
    again.requeue_switchbacks(7_000);
    assert!(
        !queued(&again).contains(&to("web1")),
        "{:?}",
        queued(&again)
    );
}

#[test]
fn a_switchback_another_leader_ran_or_dropped_no_longer_starts() {
    let mut c = core();
    fail_switchover_at(&mut c, "pg-stop");
    assert_eq!(queued(&c).first(), Some(&to("web1")));
    // Another leader of the group ran it meanwhile: this one adopts its state, where the
    // switchback is no longer saved.
    let mut theirs = c.saved.clone();
    theirs.switchbacks.clear();
    c.adopt(theirs);
    let out = c.schedule(5_000);
    assert!(
        alerts(&out)
            .iter()
            .any(|a| a.contains("was run or dropped since it was asked for")),
        "{out:?}"
    );
    assert!(
        !c.running.values().any(|r| r.plan.event == to("web1")),
        "the switchback ran twice"
    );
}

#[test]
fn a_pg_stop_that_fails_before_any_check_saw_the_server_stopped_still_starts_it_again() {
    let mut c = core();
    fail_at(&mut c, request(to("web2"), 2_000, false), "pg-stop", false);
    let st = &c.saved.observed.services["www"];
    assert!(!st.down.contains("web1"), "no check saw it down");
    assert!(
        st.fenced.contains("web1"),
        "its pg-stop ran: recorded fenced"
    );
    let plan = medic_plan::plan_recovery(&c.loaded.topology, &c.saved.observed, &to("web1"), "r2")
        .unwrap();
    assert!(
        matches!(&plan.steps[0].action, Action::StartPostgres { machine, .. } if machine == "web1"),
        "{:?}",
        plan.steps
    );
}

#[test]
fn no_switchback_once_another_server_was_seen_writable() {
    let mut c = core();
    c.saved
        .observed
        .services
        .get_mut("www")
        .unwrap()
        .writable
        .insert("web2".into());
    let out = fail_switchover_at(&mut c, "pg-stop");
    assert!(
        !alerts(&out).iter().any(|a| a.contains("primary again")),
        "{out:?}"
    );
}

/// The switchover to web2 as a controller restarted mid-way resumes it: every step before its
/// `pg-stop` done, and the steps in `begun` (by kind) with an intent journaled before the
/// restart.
fn resumed_switchover(c: &Core, begun: &[&str]) -> Request {
    let plan = medic_plan::plan_recovery(&c.loaded.topology, &c.saved.observed, &to("web2"), "r1")
        .unwrap();
    let stop = plan
        .steps
        .iter()
        .find(|s| s.action.kind() == "pg-stop")
        .expect("a pg-stop")
        .index;
    let done = plan
        .steps
        .iter()
        .filter(|s| s.index < stop)
        .map(|s| (s.index, StepOutput::default()))
        .collect();
    let begun = plan
        .steps
        .iter()
        .filter(|s| s.index <= stop || begun.contains(&s.action.kind()))
        .map(|s| s.index)
        .collect();
    Request {
        resume: Some(Resume {
            id: "r1".into(),
            plan,
            done,
            launched_ms: Default::default(),
            begun,
        }),
        ..request(to("web2"), 2_000, false)
    }
}

#[test]
fn a_resumed_switchover_is_switched_back_unless_its_promotion_was_begun_before_the_restart() {
    // Cut off by the restart in its pg-stop (its wait for the standby), which fails again:
    // nothing of web2's promotion was begun, so web1 is made the primary again.
    let mut c = core();
    let req = resumed_switchover(&c, &[]);
    let out = fail_at(&mut c, req, "pg-stop", true);
    assert!(
        alerts(&out)
            .iter()
            .any(|a| a.contains("web1 is made its primary again")),
        "{out:?}"
    );
    assert_eq!(queued(&c).first(), Some(&to("web1")), "{:?}", queued(&c));
    // The journal says its promotion (web2's PostgreSQL promoted, or its role recorded) was
    // begun before the restart: it may have been asked for, so nothing is switched back; the
    // failover follows.
    for begun in ["pg-promote", "role"] {
        let mut c = core();
        let req = resumed_switchover(&c, &[begun]);
        let out = fail_at(&mut c, req, "pg-stop", true);
        assert!(
            !alerts(&out).iter().any(|a| a.contains("primary again")),
            "{begun}: {out:?}"
        );
        assert!(
            !queued(&c).contains(&to("web1")),
            "{begun}: {:?}",
            queued(&c)
        );
    }
}
