//! One damaged recovery journal must not keep `medic run` from starting.
//!
//! At start-up the good journals are read back (the unfinished ones resumed) and each damaged
//! one is reported (file, line, error, whether its recovery may have been in flight) and moved
//! into `journal/damaged/` under its own name, never deleted, so the next start is clean.
//! `medic history` skips a damaged journal without moving it.

#![allow(
    clippy::unwrap_used,
    reason = "a test: a failed unwrap is a failed test"
)]

use std::path::Path;

use medic_controller::journal::{Damaged, DamagedRecovery, Journal, Outcome, Record};
use medic_plan::{Action, AlertLevel, Event, MonitorTarget, Plan, Step, StepOutput};
use proptest::prelude::*;

fn plan(id: &str, machine: &str) -> Plan {
    let target = MonitorTarget::Machine {
        machine: machine.into(),
    };
    Plan {
        recovery: id.into(),
        topology: "t".into(),
        event: Event::MachineLost {
            machine: machine.into(),
        },
        steps: vec![
            Step {
                index: 1,
                action: Action::Unmonitor {
                    target: target.clone(),
                },
            },
            Step {
                index: 2,
                action: Action::Monitor { target },
            },
        ],
    }
}

fn begin(id: &str, machine: &str, at_ms: u64) -> Record {
    Record::Begin {
        at_ms,
        trigger: format!("machine {machine}: silent"),
        first_failure_ms: None,
        master_last_ok_ms: None,
        plan: plan(id, machine),
    }
}

fn done(step: usize) -> Record {
    Record::Done {
        step,
        at_ms: 2,
        duration_ms: 3,
        summary: "ok".into(),
        output: StepOutput::default(),
    }
}

fn end() -> Record {
    Record::End {
        at_ms: 9,
        outcome: Outcome::Completed,
    }
}

/// A journal dir with one good ended recovery ("ended"), one good unfinished one ("open").
fn good(dir: &Path) -> Journal {
    let j = Journal::open(dir).unwrap();
    let mut w = j.begin(&begin("ended", "redis1", 1)).unwrap();
    w.append(&done(1)).unwrap();
    w.append(&done(2)).unwrap();
    w.append(&end()).unwrap();
    let mut w = j.begin(&begin("open", "redis2", 2)).unwrap();
    w.append(&done(1)).unwrap();
    j
}

/// Writes a recovery's journal with these bytes, damage and all.
fn write_raw(dir: &Path, id: &str, bytes: &[u8]) {
    std::fs::write(dir.join(format!("{id}.jsonl")), bytes).unwrap();
}

fn line(r: &Record) -> String {
    serde_json::to_string(r).unwrap() + "\n"
}

/// The journal of a recovery "mid" (ended or not), with garbage at line 3 or without.
fn mid(ended: bool, garbage: bool) -> Vec<u8> {
    let mut text = line(&begin("mid", "redis3", 3)) + &line(&done(1));
    if garbage {
        text += "#garbage#\n";
    }
    text += &line(&Record::Intent {
        step: 2,
        at_ms: 4,
        attempt: 1,
        token: None,
    });
    if ended {
        text += &line(&end());
    }
    text.into_bytes()
}

/// Writes "mid" with garbage at line 3; returns its bytes.
fn garbage_in_the_middle(dir: &Path, ended: bool) -> Vec<u8> {
    let bytes = mid(ended, true);
    write_raw(dir, "mid", &bytes);
    bytes
}

fn ids<'a>(
    logs: impl IntoIterator<Item = &'a medic_controller::journal::RecoveryLog>,
) -> Vec<&'a str> {
    logs.into_iter().map(|l| l.id.as_str()).collect()
}

/// The damaged file was moved, whole and under its own name, and is gone from the journal.
fn assert_moved(dir: &Path, d: &Damaged, name: &str, bytes: &[u8]) {
    let to = dir.join("damaged").join(name);
    assert_eq!(d.moved_to.as_deref(), Some(to.as_path()), "{d}");
    assert_eq!(std::fs::read(&to).unwrap(), bytes);
    assert!(!d.path.exists(), "{d}");
    assert!(
        d.to_string()
            .contains(&format!("moved to {}", to.display())),
        "{d}"
    );
}

#[test]
fn garbage_in_the_middle_of_an_ended_recovery_is_set_aside_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let j = good(dir.path());
    let bytes = garbage_in_the_middle(dir.path(), true);
    let open = j.open_recoveries().unwrap();
    assert_eq!(ids(&open.recoveries), ["open"]);
    let [d] = &open.damaged[..] else {
        panic!("{:?}", open.damaged);
    };
    assert_eq!(d.id, "mid");
    assert_eq!(d.path, dir.path().join("mid.jsonl"));
    assert_eq!(d.line, Some(3));
    assert!(d.error.to_string().contains("mid.jsonl:3: "), "{}", d.error);
    assert_eq!(d.recovery, DamagedRecovery::Ended);
    assert!(!d.may_be_in_flight());
    assert_eq!(d.level(), AlertLevel::Warning);
    assert_moved(dir.path(), d, "mid.jsonl", &bytes);
    let text = d.to_string();
    assert!(text.contains("mid.jsonl is damaged at line 3 ("), "{text}");
    assert!(
        text.contains("the recovery (machine redis3 lost) had ended"),
        "{text}"
    );

    // The next start is clean, and history shows the good ones.
    let again = j.open_recoveries().unwrap();
    assert_eq!(ids(&again.recoveries), ["open"]);
    assert!(again.damaged.is_empty(), "{:?}", again.damaged);
    assert_eq!(ids(&j.all().unwrap()), ["ended", "open"]);
}

#[test]
fn garbage_in_the_middle_of_an_unfinished_recovery_is_critical() {
    let dir = tempfile::tempdir().unwrap();
    let j = good(dir.path());
    let bytes = garbage_in_the_middle(dir.path(), false);
    let open = j.open_recoveries().unwrap();
    assert_eq!(ids(&open.recoveries), ["open"]);
    let [d] = &open.damaged[..] else {
        panic!("{:?}", open.damaged);
    };
    assert_eq!(d.line, Some(3));
    assert_eq!(d.recovery, DamagedRecovery::MaybeInFlight);
    assert!(d.may_be_in_flight());
    assert_eq!(d.level(), AlertLevel::Critical);
    assert_eq!(d.event.as_deref(), Some("machine redis3 lost"));
    assert_eq!(d.machines, ["redis3"]);
    assert_moved(dir.path(), d, "mid.jsonl", &bytes);
    let text = d.to_string();
    for part in [
        "mid.jsonl is damaged at line 3 (",
        "if a recovery was in flight (machine redis3 lost), check the machines it names: redis3.",
        "`medic history` no longer shows it",
    ] {
        assert!(text.contains(part), "{text}\nlacks: {part}");
    }

    // What the controller does with it: alert, then resume what it iterates over.
    let mut alerts = Vec::new();
    open.alert_damaged(|level, text| alerts.push((level, text)));
    assert_eq!(alerts, [(AlertLevel::Critical, text)]);
    let resumed: Vec<String> = open.into_iter().map(|l| l.id).collect();
    assert_eq!(resumed, ["open"]);
}

#[test]
fn a_torn_or_empty_begin_is_set_aside_as_never_started() {
    let torn = line(&begin("torn", "redis4", 4));
    for bytes in [&b""[..], &torn.as_bytes()[..30], b"\0\0\0\0"] {
        let dir = tempfile::tempdir().unwrap();
        let j = good(dir.path());
        write_raw(dir.path(), "torn", bytes);
        let open = j.open_recoveries().unwrap();
        assert_eq!(ids(&open.recoveries), ["open"]);
        let [d] = &open.damaged[..] else {
            panic!("{:?}", open.damaged);
        };
        assert_eq!(d.line, Some(1), "{d}");
        assert_eq!(d.recovery, DamagedRecovery::NotStarted, "{d}");
        assert_eq!(d.level(), AlertLevel::Warning);
        assert_moved(dir.path(), d, "torn.jsonl", bytes);
        assert!(d.to_string().contains("no step ran"), "{d}");
        assert!(j.open_recoveries().unwrap().damaged.is_empty());
    }
}

#[test]
fn a_damaged_begin_record_is_critical_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let j = good(dir.path());
    let text = "{\"record\":\"beg#n\n".to_owned() + &line(&done(1));
    write_raw(dir.path(), "nobegin", text.as_bytes());
    let open = j.open_recoveries().unwrap();
    assert_eq!(ids(&open.recoveries), ["open"]);
    let [d] = &open.damaged[..] else {
        panic!("{:?}", open.damaged);
    };
    assert_eq!(d.line, Some(1));
    assert_eq!(d.level(), AlertLevel::Critical);
    assert!(d.to_string().contains("begin record is unreadable"), "{d}");
}

#[test]
fn a_damaged_journal_set_aside_never_replaces_one_set_aside_before() {
    let dir = tempfile::tempdir().unwrap();
    let j = good(dir.path());
    let first = garbage_in_the_middle(dir.path(), true);
    j.open_recoveries().unwrap();
    let second = garbage_in_the_middle(dir.path(), false);
    let open = j.open_recoveries().unwrap();
    assert_moved(dir.path(), &open.damaged[0], "mid.jsonl.1", &second);
    let before = dir.path().join("damaged").join("mid.jsonl");
    assert_eq!(std::fs::read(before).unwrap(), first);
}

#[test]
fn history_skips_a_damaged_journal_without_moving_it() {
    let dir = tempfile::tempdir().unwrap();
    let j = good(dir.path());
    garbage_in_the_middle(dir.path(), false);
    write_raw(dir.path(), "empty", b"");
    assert_eq!(ids(&j.all().unwrap()), ["ended", "open"]);
    let scan = j.scan().unwrap();
    assert_eq!(ids(&scan.recoveries), ["ended", "open"]);
    let damaged: Vec<_> = scan
        .damaged
        .iter()
        .map(|d| (d.id.as_str(), d.line))
        .collect();
    assert_eq!(damaged, [("empty", Some(1)), ("mid", Some(3))]);
    assert!(
        scan.damaged
            .iter()
            .all(|d| d.path.exists() && d.moved_to.is_none())
    );
    assert!(!dir.path().join("damaged").exists());
}

#[test]
fn a_journal_that_cannot_be_read_is_reported_and_left_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let j = good(dir.path());
    // Reading a directory fails whoever runs the test (root reads any file).
    std::fs::create_dir(dir.path().join("odd.jsonl")).unwrap();
    for _ in 0..2 {
        let open = j.open_recoveries().unwrap();
        assert_eq!(ids(&open.recoveries), ["open"]);
        let [d] = &open.damaged[..] else {
            panic!("{:?}", open.damaged);
        };
        assert_eq!(d.line, None);
        assert_eq!(d.level(), AlertLevel::Critical);
        assert!(d.path.exists() && d.moved_to.is_none());
        let text = d.to_string();
        assert!(text.contains("odd.jsonl cannot be read ("), "{text}");
        assert!(text.contains("reported again at the next start"), "{text}");
    }
}

/// A crash at any byte of a recovery's journal, with good journals beside it: start-up resumes
/// the good one and this one once its begin is whole; before that, this one is set aside as
/// never started.
#[test]
fn a_journal_cut_at_any_byte_never_stops_start_up() {
    let src = tempfile::tempdir().unwrap();
    let js = Journal::open(src.path()).unwrap();
    let mut w = js.begin(&begin("cut", "redis5", 5)).unwrap();
    w.append(&done(1)).unwrap();
    w.append(&done(2)).unwrap();
    w.append(&end()).unwrap();
    let bytes = std::fs::read(w.path()).unwrap();
    let begin_len = bytes.iter().position(|b| *b == b'\n').unwrap();
    for cut in 0..=bytes.len() {
        let dir = tempfile::tempdir().unwrap();
        let j = good(dir.path());
        write_raw(dir.path(), "cut", &bytes[..cut]);
        let open = j.open_recoveries().unwrap();
        let resumed = ids(&open.recoveries);
        if cut < begin_len {
            assert_eq!(resumed, ["open"], "cut at {cut}");
            let [d] = &open.damaged[..] else {
                panic!("cut at {cut}: {:?}", open.damaged);
            };
            assert_eq!(d.recovery, DamagedRecovery::NotStarted, "cut at {cut}");
            assert_moved(dir.path(), d, "cut.jsonl", &bytes[..cut]);
        } else {
            assert!(open.damaged.is_empty(), "cut at {cut}: {:?}", open.damaged);
            assert!(resumed.contains(&"open"), "cut at {cut}");
            let ended = j.read("cut").unwrap().end.is_some();
            assert_eq!(resumed.contains(&"cut"), !ended, "cut at {cut}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Bytes overwritten anywhere in one journal, good ones beside it: start-up never fails,
    /// resumes the good unfinished one, and the damaged one is either read back or set aside
    /// whole, reported at a damaged line.
    #[test]
    fn damage_anywhere_in_one_journal_never_stops_start_up(
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let j = good(dir.path());
        let mut bytes = mid(true, false);
        let mut lines = Vec::new();
        for (at, byte) in damage {
            let at = at.index(bytes.len());
            bytes[at] = byte;
            let line = 1 + bytes[..at].iter().filter(|b| **b == b'\n').count();
            lines.extend([line, line + 1]);
        }
        write_raw(dir.path(), "mid", &bytes);
        let open = j.open_recoveries().unwrap();
        let resumed = ids(&open.recoveries);
        prop_assert!(resumed.contains(&"open"));
        prop_assert!(resumed.len() <= 2 && !resumed.contains(&"ended"), "{:?}", resumed);
        match &open.damaged[..] {
            [] => {}
            [d] => {
                prop_assert!(lines.contains(&d.line.unwrap()), "{} not in {:?}", d, lines);
                prop_assert!(!resumed.contains(&"mid"));
                assert_moved(dir.path(), d, "mid.jsonl", &bytes);
            }
            more => prop_assert!(false, "{:?}", more),
        }
        prop_assert_eq!(ids(&j.all().unwrap()).len(), 2 + usize::from(open.damaged.is_empty()));
    }
}
