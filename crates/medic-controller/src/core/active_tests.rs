//! The core's decisions about an `active_active` service (examples/domino.yaml's web servers
//! behind a proxy, both serving): a machine failing its checks is taken out unless it is the
//! last one serving, and put back once it passes them; the last one kept in is taken out as
//! soon as another serves again.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use medic_detect::Observation;
use medic_plan::{AlertLevel, Event};

use super::service_tests::{check, core_with, queued, www};
use super::*;

fn active() -> Core {
    core_with(&[
        (
            "  - {name: monitor, role: monitor}\n",
            "  - {name: lb1, role: haproxy, ami: web}\n  - {name: monitor, role: monitor}\n\nproxies:\n  machines: [lb1]\n  runtime_api: {port: 9999}\n  frontends: []\n",
        ),
        ("    mode: primary_standby\n", "    mode: active_active\n"),
        (
            "    port: 80\n",
            "    port: 80\n    proxy: {listen: 8080}\n",
        ),
        ("    dns: {name: www.domino.lab, ttl: 5}\n", ""),
        ("      on_demote: standby-include\n", ""),
    ])
}

fn down(m: &str) -> Event {
    Event::ServiceDown {
        service: "www".into(),
        machine: m.into(),
    }
}

#[test]
fn a_failing_machine_is_taken_out_unless_it_is_the_last_one_serving() {
    let mut c = active();
    for at in [1_000, 1_500] {
        for m in ["web1", "web2"] {
            check(&mut c, &www(m), at, Observation::Ok);
        }
    }
    // web2 (a "standby" by its place in the list) fails `fall` (3) checks: taken out.
    for at in [2_000, 2_500, 3_000] {
        check(&mut c, &www("web2"), at, Observation::Unhealthy);
    }
    assert_eq!(queued(&c), [down("web2")]);
    let mut c = active();
    for at in [1_000, 1_500] {
        for m in ["web1", "web2"] {
            check(&mut c, &www(m), at, Observation::Ok);
        }
    }
    // Both fail: the first to reach `fall` is taken out; the other, the last one serving, is
    // kept with a critical alert, told once.
    let mut out = Vec::new();
    for at in [2_000, 2_500, 3_000] {
        check(&mut c, &www("web1"), at, Observation::Unhealthy);
        out.extend(check(&mut c, &www("web2"), at, Observation::Unhealthy));
    }
    assert_eq!(queued(&c), [down("web1")]);
    assert!(
        out.iter().any(|o| matches!(o, Output::Alert { level: AlertLevel::Critical, message } if message.contains("the last one"))),
        "{out:?}"
    );
    // web1 passes again, not taken out yet (its take-out is queued): web2 is not asked for
    // while web1's recovery is queued; it is once web1 serves.
    c.queue.clear();
    c.busy.clear();
    check(&mut c, &www("web1"), 3_500, Observation::Ok);
    check(&mut c, &www("web1"), 4_000, Observation::Ok);
    assert_eq!(queued(&c), [down("web2")]);
}

#[test]
fn the_last_one_kept_is_taken_out_once_another_serves_and_a_machine_out_is_put_back() {
    let mut c = active();
    for at in [1_000, 1_500] {
        for m in ["web1", "web2"] {
            check(&mut c, &www(m), at, Observation::Ok);
        }
    }
    // web1 is out (a recovery took it out); web2 fails and is kept as the last one.
    c.saved
        .observed
        .services
        .get_mut("www")
        .unwrap()
        .out
        .insert("web1".into());
    for at in [2_000, 2_500, 3_000] {
        check(&mut c, &www("web2"), at, Observation::Unhealthy);
    }
    assert!(queued(&c).is_empty(), "{:?}", queued(&c));
    // web1 answers again, failing: nothing (it is off the proxies already).
    check(&mut c, &www("web1"), 3_200, Observation::Unhealthy);
    assert!(queued(&c).is_empty(), "{:?}", queued(&c));
    // web1 passes `rise` checks: it is put back (rejoins).
    check(&mut c, &www("web1"), 3_500, Observation::Ok);
    check(&mut c, &www("web1"), 4_000, Observation::Ok);
    let rejoin = Event::ServiceRejoin {
        service: "www".into(),
        machine: "web1".into(),
    };
    assert_eq!(queued(&c), [rejoin]);
    // The rejoin done (web1 back in the proxies, its state applied step by step), web1's next
    // good check lets web2 be taken out, once.
    run_queued(&mut c, 4_100);
    assert!(c.saved.observed.services["www"].out.is_empty());
    check(&mut c, &www("web2"), 4_200, Observation::Unhealthy);
    check(&mut c, &www("web1"), 4_500, Observation::Ok);
    check(&mut c, &www("web1"), 5_000, Observation::Ok);
    assert_eq!(queued(&c), [down("web2")]);
}

/// Starts what is queued and runs each recovery to its end, every step done.
fn run_queued(c: &mut Core, at: u64) {
    c.schedule(at);
    let ids: Vec<String> = c.running.keys().cloned().collect();
    for id in ids {
        while let Next::Run(step) = c.next_step(&id, at) {
            c.step_done(&id, &step, &medic_plan::StepOutput::default(), at);
        }
        let Next::End(outcome) = c.next_step(&id, at) else {
            panic!("not ended");
        };
        c.finished(&id, &outcome, at);
    }
}
