//! The recovery journal after a crash at any byte, and after damage anywhere.
//!
//! The journal is what a restarted `medic run` rolls forward from, so reading one back must
//! never panic and never guess. A journal written by the module's own writer (begin, intents,
//! done steps, failed attempts, a resume, the end; text with multi-byte characters, as error
//! messages and rendered playbooks have) is:
//! - cut at every byte offset, as a crash in the middle of a write leaves it: it reads back as
//!   exactly the records whose line is whole (the torn last line ignored and flagged), or, when
//!   not even the begin record is whole, is refused with an error naming the file and line 1;
//! - cut at every byte offset and then rolled forward (reopened and appended to, as the
//!   controller does after a restart): it reads back with the records appended;
//! - damaged at random offsets: it reads back, or is refused with an error naming the file and
//!   one of the damaged lines; damage confined to the last line never makes it unreadable.

#![allow(
    clippy::unwrap_used,
    reason = "a test: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::path::Path;

use medic_controller::journal::{DoneStep, Journal, JournalError, Outcome, Record, RecoveryLog};
use medic_plan::{Action, AlertLevel, Event, MonitorTarget, Plan, RedisServer, Step, StepOutput};
use proptest::prelude::*;

const ID: &str = "rec-torn";

fn plan() -> Plan {
    let target = MonitorTarget::Machine {
        machine: "redis1".into(),
    };
    let server = RedisServer {
        shard: "r9001".into(),
        machine: "redis2".into(),
        address: medic_plan::Addr::Of("redis2".into()),
        port: 9001,
    };
    let actions = vec![
        Action::Unmonitor {
            target: target.clone(),
        },
        Action::PromoteReplica {
            server,
            offset: 1_234_567,
            lag_bytes: 89,
        },
        Action::Alert {
            level: AlertLevel::Warning,
            message: "redis1 n’est pas remplacé — « static » ✓".into(),
        },
        Action::Monitor { target },
    ];
    Plan {
        recovery: ID.into(),
        topology: "barton".into(),
        event: Event::MachineLost {
            machine: "redis1".into(),
        },
        steps: actions
            .into_iter()
            .enumerate()
            .map(|(i, action)| Step {
                index: i + 1,
                action,
            })
            .collect(),
    }
}

/// Every kind of record, in the order a recovery with a retry and a restart writes them.
fn records() -> Vec<Record> {
    let intent = |step, attempt| Record::Intent {
        step,
        at_ms: 1_000 + step as u64,
        attempt,
        token: None,
    };
    let done = |step: usize, summary: &str| Record::Done {
        step,
        at_ms: 2_000 + step as u64,
        duration_ms: 7,
        summary: summary.into(),
        output: StepOutput {
            offset: (step == 2).then_some(1_234_600),
            ..StepOutput::default()
        },
    };
    vec![
        Record::Begin {
            at_ms: 1_000,
            trigger: "redis r9001@redis1: silent; witnesses agree — gone".into(),
            first_failure_ms: Some(900),
            master_last_ok_ms: Some(850),
            plan: plan(),
        },
        intent(1, 1),
        done(1, "stopped health checks"),
        intent(2, 1),
        Record::Failed {
            step: 2,
            at_ms: 2_500,
            attempt: 1,
            error: "ssh: `redis-cli` said « ERR » … retrying".into(),
        },
        Record::Resumed {
            at_ms: 3_000,
            from_step: 2,
        },
        intent(2, 2),
        done(2, "promoted → master at 1234600"),
        intent(3, 1),
        done(3, "alerted ✓"),
        intent(4, 1),
        done(4, "resumed health checks"),
        Record::End {
            at_ms: 4_000,
            outcome: Outcome::Alerted,
        },
    ]
}

/// What reading back exactly `records` must give (`records` starts with the begin record).
fn expected(records: &[Record], torn_tail: bool) -> RecoveryLog {
    let Some(Record::Begin {
        at_ms,
        trigger,
        first_failure_ms,
        master_last_ok_ms,
        plan,
    }) = records.first().cloned()
    else {
        panic!("no begin record");
    };
    let mut log = RecoveryLog {
        id: ID.into(),
        begun_ms: at_ms,
        trigger,
        first_failure_ms,
        master_last_ok_ms,
        plan,
        done: BTreeMap::new(),
        begun: Default::default(),
        failures: Vec::new(),
        resumed: Vec::new(),
        end: None,
        torn_tail,
    };
    for r in &records[1..] {
        match r.clone() {
            Record::Done {
                step,
                at_ms,
                duration_ms,
                summary,
                output,
            } => {
                log.done.insert(
                    step,
                    DoneStep {
                        at_ms,
                        duration_ms,
                        summary,
                        output,
                    },
                );
            }
            Record::Failed { step, error, .. } => log.failures.push((step, error)),
            Record::Resumed { at_ms, .. } => log.resumed.push(at_ms),
            Record::End { at_ms, outcome } => log.end = Some((at_ms, outcome)),
            Record::Intent { step, .. } => {
                log.begun.insert(step);
            }
            Record::Begin { .. } => {}
        }
    }
    log
}

/// Writes `records` with the journal's own writer; returns the file's bytes.
fn write_journal(dir: &Path, records: &[Record]) -> Vec<u8> {
    let j = Journal::open(dir).unwrap();
    let mut w = j.begin(&records[0]).unwrap();
    for r in &records[1..] {
        w.append(r).unwrap();
    }
    std::fs::read(w.path()).unwrap()
}

fn file(dir: &Path) -> std::path::PathBuf {
    dir.join(format!("{ID}.jsonl"))
}

/// The error must name the file and `line`, in its message too.
fn assert_names(err: &JournalError, dir: &Path, lines: &[usize]) {
    let JournalError::Corrupt { path, line, .. } = err else {
        panic!("expected a corrupt-journal error, got {err:?}");
    };
    assert_eq!(path, &file(dir), "{err}");
    assert!(
        lines.contains(line),
        "{err}: expected one of lines {lines:?}"
    );
    let shown = err.to_string();
    assert!(
        shown.contains(&format!("{}:{line}: ", file(dir).display())),
        "{shown}"
    );
}

#[test]
fn a_journal_cut_at_any_byte_reads_back_as_its_whole_records() {
    let all = records();
    let src = tempfile::tempdir().unwrap();
    let bytes = write_journal(src.path(), &all);
    let whole = Journal::open(src.path()).unwrap().read(ID).unwrap();
    assert_eq!(whole, expected(&all, false));
    assert!(bytes.iter().any(|b| !b.is_ascii()), "no multi-byte text");

    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    for cut in 0..=bytes.len() {
        let kept = &bytes[..cut];
        std::fs::write(file(dir.path()), kept).unwrap();
        let whole_lines = kept.iter().filter(|b| **b == b'\n').count();
        let tail = &kept[kept.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)..];
        // A cut just before a newline leaves a whole record without its newline.
        let tail_whole = !tail.is_empty() && serde_json::from_slice::<Record>(tail).is_ok();
        let n = whole_lines + usize::from(tail_whole);
        let torn = !tail.is_empty() && !tail_whole;
        match j.read(ID) {
            Ok(log) => {
                assert!(n >= 1, "cut at {cut}: read back without a begin record");
                assert_eq!(log, expected(&all[..n], torn), "cut at {cut}");
            }
            Err(e) => {
                assert_eq!(n, 0, "cut at {cut}: {e}");
                assert_names(&e, dir.path(), &[1]);
            }
        }
    }
}

#[test]
fn a_journal_cut_at_any_byte_can_be_rolled_forward() {
    let all = records();
    let src = tempfile::tempdir().unwrap();
    let bytes = write_journal(src.path(), &all);
    // The first line ends where the begin record does: cut before it, there is nothing to
    // resume.
    let begin_end = bytes.iter().position(|b| *b == b'\n').unwrap();
    let more = [
        Record::Resumed {
            at_ms: 9_000,
            from_step: 1,
        },
        Record::Intent {
            step: 4,
            at_ms: 9_001,
            attempt: 1,
            token: None,
        },
        Record::End {
            at_ms: 9_002,
            outcome: Outcome::Completed,
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    for cut in begin_end..=bytes.len() {
        std::fs::write(file(dir.path()), &bytes[..cut]).unwrap();
        let before = j.read(ID).unwrap();
        let mut w = j.reopen(ID).unwrap();
        for r in &more {
            w.append(r).unwrap();
        }
        drop(w);
        let after = j
            .read(ID)
            .unwrap_or_else(|e| panic!("cut at {cut}, then rolled forward: {e}"));
        assert!(!after.torn_tail, "cut at {cut}");
        assert_eq!(after.done, before.done, "cut at {cut}");
        assert_eq!(after.failures, before.failures, "cut at {cut}");
        assert_eq!(after.resumed.last(), Some(&9_000), "cut at {cut}");
        assert_eq!(after.end, Some((9_002, Outcome::Completed)), "cut at {cut}");
    }
}

/// The journal of [`records`] as the writer wrote it, once: fsyncs are slow.
fn written() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        write_journal(dir.path(), &records())
    })
}

/// 1-based line of each byte offset in `bytes`.
fn line_of(bytes: &[u8], offset: usize) -> usize {
    1 + bytes[..offset].iter().filter(|b| **b == b'\n').count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Bytes overwritten anywhere: read back, or refused at a damaged line; never a panic.
    #[test]
    fn a_damaged_journal_is_read_or_refused_at_a_damaged_line(
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..4),
        in_last_line in prop::bool::weighted(0.3),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = written().to_vec();
        let last_start = bytes[..bytes.len() - 1].iter().rposition(|b| *b == b'\n').unwrap() + 1;
        let mut changed = Vec::new();
        for (at, byte, how) in damage {
            let at = if in_last_line {
                last_start + at.index(bytes.len() - last_start)
            } else {
                at.index(bytes.len())
            };
            // Flip a bit, or write a byte JSON cares about, or any byte.
            bytes[at] = match how {
                0 => bytes[at] ^ (1 << (byte % 8)),
                1 => b"{}\":,\n 0"[usize::from(byte) % 8],
                _ => byte,
            };
            changed.push(at);
        }
        std::fs::write(file(dir.path()), &bytes).unwrap();
        let read = Journal::open(dir.path()).unwrap().read(ID);
        let mut damaged: Vec<usize> = Vec::new();
        for &at in &changed {
            damaged.push(line_of(&bytes, at));
            if bytes[at] == b'\n' {
                damaged.push(line_of(&bytes, at) + 1);
            }
        }
        let new_lines = changed.iter().any(|&at| bytes[at] == b'\n');
        match read {
            Ok(log) => prop_assert_eq!(log.id, ID),
            Err(e) => {
                prop_assert!(!in_last_line || new_lines, "damage in the last line only: {}", e);
                assert_names(&e, dir.path(), &damaged);
            }
        }
    }
}
