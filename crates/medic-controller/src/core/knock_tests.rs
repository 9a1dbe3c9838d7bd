//! The knock's fast path in the core: a machine silent to the monitor's knock and to its
//! witnesses' is lost at its first miss; anything less decides nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use medic_detect::{Observation, Seen};
use medic_redis::Role;

use super::tests::{check, core, redis, witnesses};
use super::*;

/// redis1's servers answer at 1,000 ms; r9001's check at 1,250 finds its machine silent to a
/// knock (`knocked`), or only unanswered (`None`).
fn knock_redis1(c: &mut Core, knocked: Option<Duration>) -> Vec<Output> {
    for t in [redis("r9001", "redis1"), redis("r9002", "redis1")] {
        c.on_check(&check(&t, 1_000, Observation::Ok, Some(Role::Master)));
    }
    let mut r = check(&redis("r9001", "redis1"), 1_250, Observation::Silent, None);
    r.knocked = knocked;
    c.on_check(&r)
}

fn knocks(out: &[Output]) -> Vec<Duration> {
    out.iter()
        .filter_map(|o| match o {
            Output::Ask { knock, .. } => *knock,
            _ => None,
        })
        .collect()
}

#[test]
fn a_machine_silent_to_every_knock_is_lost_at_its_first_miss() {
    let mut c = core();
    let out = knock_redis1(&mut c, Some(Duration::from_millis(50)));
    assert_eq!(knocks(&out), [Duration::from_millis(50)], "{out:?}");
    let gone = witnesses(&[
        ("haproxy1", Seen::Gone),
        ("haproxy2", Seen::Gone),
        ("redis2", Seen::Gone),
    ]);
    let out = c.on_witnesses(&redis("r9001", "redis1"), true, true, gone, true, 1_400);
    assert!(
        out.iter().any(|o| matches!(o, Output::Detected { .. })),
        "one miss and every knock unanswered: lost, {out:?}"
    );
    assert!(c.is_busy("redis1"));
}

#[test]
fn a_knock_decides_nothing_unless_a_majority_finds_the_machine_silent() {
    let gone = || {
        witnesses(&[
            ("haproxy1", Seen::Gone),
            ("haproxy2", Seen::Gone),
            ("redis2", Seen::Gone),
        ])
    };
    // A witness's knock answered (its kernel is there), one unknown: no verdict, no alert.
    for seen in [
        vec![
            ("haproxy1", Seen::Up),
            ("haproxy2", Seen::Gone),
            ("redis2", Seen::Gone),
        ],
        vec![
            ("haproxy1", Seen::Unknown),
            ("haproxy2", Seen::Unknown),
            ("redis2", Seen::Gone),
        ],
    ] {
        let mut c = core();
        knock_redis1(&mut c, Some(Duration::from_millis(50)));
        let out = c.on_witnesses(
            &redis("r9001", "redis1"),
            true,
            true,
            witnesses(&seen),
            true,
            1_400,
        );
        assert!(out.is_empty(), "{seen:?}: {out:?}");
        assert!(!c.is_busy("redis1"));
    }
    // Another server of the machine answered after the knock: the machine is there.
    let mut c = core();
    knock_redis1(&mut c, Some(Duration::from_millis(50)));
    c.on_check(&check(
        &redis("r9002", "redis1"),
        1_300,
        Observation::Ok,
        Some(Role::Master),
    ));
    let out = c.on_witnesses(&redis("r9001", "redis1"), true, true, gone(), true, 1_400);
    assert!(out.is_empty() && !c.is_busy("redis1"), "{out:?}");
    // The target answered again before the knocks came back.
    let mut c = core();
    knock_redis1(&mut c, Some(Duration::from_millis(50)));
    c.on_check(&check(
        &redis("r9001", "redis1"),
        1_300,
        Observation::Ok,
        Some(Role::Master),
    ));
    let out = c.on_witnesses(&redis("r9001", "redis1"), true, true, gone(), true, 1_400);
    assert!(out.is_empty() && !c.is_busy("redis1"), "{out:?}");
    // A miss whose machine answered the monitor's knock (a busy process): nobody knocks.
    let mut c = core();
    let out = knock_redis1(&mut c, None);
    assert_eq!(knocks(&out), [], "{out:?}");
}
