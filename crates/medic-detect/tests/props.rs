//! Property tests of the detector and of the witnesses' judgement, over random check sequences.
//!
//! The table tests in the crate pin a handful of sequences; these check, for any sequence of
//! check results and any `fall` / `rise`, the promises the crate's documentation and the design
//! make, because the controller fails a master over on the strength of them:
//! - a target is never down before `fall` misses in a row, unless a refusal said so (a refusal
//!   from a live host is certain at once);
//! - a down target is up again after exactly `rise` successes in a row, and not before;
//! - a verdict comes with a change between down and not down, and only then; its kind says why
//!   (a refusal: dead; `fall` misses: silent or failing as the last miss was);
//! - the counters stay within their bounds, and no sequence panics;
//! - silence is a failover only when a majority of the configured witnesses say the target is
//!   gone, never when one of them still sees it, and never on the say of a minority whose
//!   peers could not be asked.

use medic_detect::{
    Decision, Detector, Health, Observation, Seen, Verdict, Witnesses, judge_silence,
};
use proptest::prelude::*;

fn observation() -> impl Strategy<Value = Observation> {
    prop_oneof![
        3 => Just(Observation::Ok),
        1 => Just(Observation::Refused),
        3 => Just(Observation::Silent),
        2 => Just(Observation::Unhealthy),
    ]
}

/// Small values, where the interesting transitions happen, and now and then extreme ones.
fn threshold() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 0u32..=6, 1 => Just(u32::MAX)]
}

/// Runs of the same observation make long streaks (fall, rise) likely.
fn sequence() -> impl Strategy<Value = Vec<Observation>> {
    prop::collection::vec((observation(), 1usize..=5), 0..60).prop_map(|runs| {
        runs.into_iter()
            .flat_map(|(o, n)| std::iter::repeat_n(o, n))
            .collect()
    })
}

fn is_down(h: Health) -> bool {
    matches!(h, Health::Down { .. })
}

fn is_miss(o: Observation) -> bool {
    matches!(o, Observation::Silent | Observation::Unhealthy)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Step by step, each transition is one the design describes, and nothing else happens.
    #[test]
    fn every_transition_is_one_the_design_describes(
        fall in threshold(),
        rise in threshold(),
        seq in sequence(),
    ) {
        let mut d = Detector::new(fall, rise);
        prop_assert_eq!(d.health, Health::Up);
        let (fall, rise) = (d.fall, d.rise);
        prop_assert!(fall >= 1 && rise >= 1);
        // Misses in a row (silence or bad answers) and successes in a row, so far.
        let mut misses = 0u32;
        let mut successes = 0u32;
        for (i, &o) in seq.iter().enumerate() {
            let before = d.health;
            let verdict = d.observe(o);
            let after = d.health;
            if is_miss(o) { misses += 1 } else { misses = 0 }
            if o == Observation::Ok { successes += 1 } else { successes = 0 }
            let at = format!("check {i} ({o:?}) of {seq:?}, fall {fall} rise {rise}");

            // A verdict exactly when down / not down changes — or when a silent target starts
            // refusing (the host is back, the process is not).
            let uncertain_to_certain = before == Health::Down { certain: false, successes: before_successes(before) }
                && after == Health::Down { certain: true, successes: 0 };
            prop_assert_eq!(
                verdict.is_some(),
                is_down(before) != is_down(after) || uncertain_to_certain,
                "{}",
                at
            );
            match verdict {
                Some(Verdict::Dead) => {
                    prop_assert_eq!(o, Observation::Refused, "{}", at);
                    prop_assert_eq!(after, Health::Down { certain: true, successes: 0 }, "{}", at);
                }
                Some(v @ (Verdict::Silent | Verdict::Failing)) => {
                    // Never down before `fall` misses in a row.
                    prop_assert!(misses >= fall, "{}: down after {} misses", at, misses);
                    prop_assert_eq!(v == Verdict::Silent, o == Observation::Silent, "{}", at);
                    prop_assert_eq!(after, Health::Down { certain: false, successes: 0 }, "{}", at);
                }
                Some(Verdict::Recovered) => {
                    prop_assert_eq!(o, Observation::Ok, "{}", at);
                    prop_assert_eq!(after, Health::Up, "{}", at);
                }
                None => {}
            }

            // What each observation does, by the state it finds.
            match (before, o) {
                // A refusal is certain at once, and stays down.
                (_, Observation::Refused) => {
                    prop_assert_eq!(after, Health::Down { certain: true, successes: 0 }, "{}", at);
                }
                // Not down: one success is enough.
                (Health::Up | Health::Suspect { .. }, Observation::Ok) => {
                    prop_assert_eq!(after, Health::Up, "{}", at);
                    prop_assert_eq!(verdict, None, "{}", at);
                }
                // Not down: a miss is suspect until the `fall`-th in a row.
                (Health::Up | Health::Suspect { .. }, _) => {
                    if misses < fall {
                        prop_assert_eq!(after, Health::Suspect { misses }, "{}", at);
                    } else {
                        prop_assert!(is_down(after), "{}", at);
                    }
                }
                // Down: up again on the `rise`-th success in a row, and not before.
                (Health::Down { certain, .. }, Observation::Ok) => {
                    if successes >= rise {
                        prop_assert_eq!(after, Health::Up, "{}", at);
                        prop_assert_eq!(verdict, Some(Verdict::Recovered), "{}", at);
                    } else {
                        prop_assert_eq!(after, Health::Down { certain, successes }, "{}", at);
                    }
                }
                // Down: a miss starts the successes over and keeps what was certain.
                (Health::Down { certain, .. }, _) => {
                    prop_assert_eq!(after, Health::Down { certain, successes: 0 }, "{}", at);
                }
            }

            // The counters stay within their bounds.
            match after {
                Health::Up => {}
                Health::Suspect { misses: m } => prop_assert!(m >= 1 && m < fall, "{}", at),
                Health::Down { successes: s, .. } => prop_assert!(s < rise, "{}", at),
            }
        }
    }

    /// Over the whole sequence: down only through a refusal or `fall` misses in a row, and up
    /// again only through `rise` successes in a row.
    #[test]
    fn down_needs_a_refusal_or_fall_misses_and_up_needs_rise_successes(
        fall in threshold(),
        rise in threshold(),
        seq in sequence(),
    ) {
        let mut d = Detector::new(fall, rise);
        let (fall, rise) = (d.fall, d.rise);
        for end in 0..seq.len() {
            let before = d.health;
            d.observe(seq[end]);
            let seen = &seq[..=end];
            if !is_down(before) && is_down(d.health) {
                let refused = seq[end] == Observation::Refused;
                let tail = seen.iter().rev().take_while(|o| is_miss(**o)).count();
                prop_assert!(
                    refused || tail as u64 >= u64::from(fall),
                    "down at check {} of {:?} with fall {}", end, seq, fall
                );
            }
            if is_down(before) && !is_down(d.health) {
                let tail = seen.iter().rev().take_while(|o| **o == Observation::Ok).count();
                prop_assert!(
                    tail as u64 >= u64::from(rise),
                    "up at check {} of {:?} with rise {}", end, seq, rise
                );
            }
        }
        // One timeout alone is never enough (unless fall is 1).
        let mut d = Detector::new(fall, rise);
        prop_assert_eq!(d.observe(Observation::Silent), (fall == 1).then_some(Verdict::Silent));
    }

    /// The judgement of silence: a failover needs a majority of the configured witnesses to
    /// say gone and none to see the target; whoever could not be asked counts against.
    #[test]
    fn silence_is_a_failover_only_on_a_majority_of_the_configured_witnesses(
        says in prop::collection::vec(
            prop_oneof![Just(Seen::Up), Just(Seen::Gone), Just(Seen::Unknown)],
            0..8,
        ),
        rotate in 0usize..8,
    ) {
        let named = |v: &[Seen]| Witnesses {
            answers: v.iter().enumerate().map(|(i, s)| (format!("o{i}"), *s)).collect(),
        };
        let w = named(&says);
        let decision = judge_silence(&w);
        let up = says.iter().filter(|s| **s == Seen::Up).count();
        let gone = says.iter().filter(|s| **s == Seen::Gone).count();
        let want = if up == 0 && gone * 2 > says.len() {
            Decision::FailOver
        } else if up == 0 {
            Decision::Unconfirmed
        } else if gone == 0 {
            Decision::MonitorCutOff
        } else {
            Decision::Wait
        };
        prop_assert_eq!(decision, want, "{:?}", w);
        // Never a failover while a witness still sees the target, nor without a majority.
        if decision == Decision::FailOver {
            prop_assert!(up == 0 && gone > says.len() / 2, "{:?}", w);
        }
        // Adding an observer that cannot be asked never turns a wait into a failover.
        let mut more = says.clone();
        more.push(Seen::Unknown);
        if decision != Decision::FailOver {
            prop_assert_ne!(judge_silence(&named(&more)), Decision::FailOver);
        }
        // The order the observers answered in does not matter.
        let mut turned = says;
        if !turned.is_empty() {
            let n = rotate % turned.len();
            turned.rotate_left(n);
        }
        prop_assert_eq!(judge_silence(&named(&turned)), decision);
    }
}

/// The successes a `Down` state counts (0 for the others).
fn before_successes(h: Health) -> u32 {
    match h {
        Health::Down { successes, .. } => successes,
        _ => 0,
    }
}
