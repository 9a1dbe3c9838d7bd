//! Bounded fuzzing of the recovery journal reader, through its public API: `Journal::scan`,
//! `Journal::read`, `Journal::open_recoveries` (what a restarted `medic run` does) and
//! `Journal::reopen` (rolling a recovery forward) on mutated journal files in a journal
//! directory.
//!
//! The seeds are journals written by the journal's own writer in this test, of real plans
//! (examples/barton.yaml planned for a machine lost, a process death, a switchover): completed,
//! in flight, failed after retries, resumed, held, incomplete, torn; and the ones kept in
//! `tests/fuzz-corpus/journal/` (`MEDIC_FUZZ_SAVE_CORPUS=1` writes this test's there again).
//! Each case writes one to three mutated files (byte-level mutations: damage, truncation,
//! splices of two journals, control characters, invalid UTF-8, long lines, numbers at their
//! limits; or whole lines deleted, duplicated, moved).
//!
//! The property: nothing panics, and the reader is consistent: every file is either a
//! recovery or damaged (with its line), `read` agrees with `scan`, a recovery's plan can be
//! resumed and described, start-up moves exactly the damaged files aside and keeps the open
//! recoveries, and an open recovery rolled forward (reopened, appended to) reads back with
//! what was appended.
//!
//! Run: `cargo test -p medic-controller --test fuzz -- --nocapture` (prints the inputs
//! executed and the time); `PROPTEST_CASES=N` runs more.

#![allow(
    clippy::unwrap_used,
    reason = "a test: a failed unwrap is a failed test"
)]

#[path = "../../../tests/fuzz-support/mutate.rs"]
mod mutate;

use std::collections::BTreeSet;
use std::path::Path;

use proptest::prelude::*;

use medic_controller::journal::{Journal, Outcome, Record, RecoveryLog};
use medic_plan::describe::describe;
use medic_plan::{Event, ObservedState, Plan, StepOutput, plan_recovery};
use medic_playbook::Playbooks;
use medic_topology::load_topology;

use mutate::{Run, Seed, apply, case, corpus, corpus_dir, guard, line_case, repo};

/// A journal directory on tmpfs if there is one: every record and every move is fsynced.
fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().unwrap()
}

fn plans() -> Vec<Plan> {
    let loaded = load_topology(&repo().join("examples/barton.yaml")).unwrap();
    let top = &loaded.topology;
    let state = ObservedState::assumed(top);
    [
        Event::MachineLost {
            machine: "redis1".into(),
        },
        Event::MachineLost {
            machine: "haproxy1".into(),
        },
        Event::ProcessDied {
            shard: "r9001".into(),
            machine: "redis2".into(),
        },
        Event::Switchover {
            shard: "r9002".into(),
            to: None,
        },
    ]
    .iter()
    .enumerate()
    .map(|(i, e)| plan_recovery(top, &state, e, &format!("rec-{i}")).unwrap())
    .collect()
}

/// The records of a recovery of `plan`: `done` steps done, then how it went on.
fn records(plan: &Plan, done: usize, how: usize) -> Vec<Record> {
    let mut r = vec![Record::Begin {
        at_ms: 1_700_000_000_000,
        trigger: "redis r9001@redis1: connection refused — « silent » ✓".into(),
        first_failure_ms: Some(1_699_999_999_000),
        master_last_ok_ms: how.is_multiple_of(2).then_some(1_699_999_998_500),
        plan: plan.clone(),
    }];
    for s in plan.steps.iter().take(done) {
        r.push(Record::Intent {
            step: s.index,
            at_ms: 1_700_000_000_100 + s.index as u64,
            attempt: 1,
            token: (how == 3).then_some(7),
        });
        if how == 2 && s.index == 2 {
            r.push(Record::Failed {
                step: s.index,
                at_ms: 1_700_000_000_150,
                attempt: 1,
                error: "ssh: `redis-cli` said « ERR » … retrying".into(),
            });
            r.push(Record::Resumed {
                at_ms: 1_700_000_000_160,
                from_step: s.index,
            });
        }
        r.push(Record::Done {
            step: s.index,
            at_ms: 1_700_000_000_200 + s.index as u64,
            duration_ms: 17,
            summary: format!("step {} done", s.index),
            output: StepOutput {
                offset: s.index.is_multiple_of(2).then_some(1_234_567),
                ..StepOutput::default()
            },
        });
    }
    let outcome = match how {
        0 => Some(Outcome::Completed),
        1 => Some(Outcome::Alerted),
        2 => Some(Outcome::Failed {
            step: done + 1,
            error: "timed out".into(),
        }),
        3 => Some(Outcome::Held {
            reason: "3 replacements in the last hour".into(),
        }),
        4 => Some(Outcome::Incomplete {
            skipped: vec!["haproxy2: connection refused".into()],
        }),
        _ => None,
    };
    if let Some(outcome) = outcome {
        r.push(Record::End {
            at_ms: 1_700_000_001_000,
            outcome,
        });
    }
    r
}

/// Journals written by the journal's own writer: each plan completed, in flight, failed,
/// held...; and one torn in the middle of its last write.
fn written() -> Vec<Seed> {
    let dir = tempdir();
    let j = Journal::open(dir.path()).unwrap();
    let mut seeds = Vec::new();
    for (i, plan) in plans().iter().enumerate() {
        for how in 0..6 {
            let done = if how < 2 {
                plan.steps.len()
            } else {
                plan.steps.len() / 2
            };
            let rs = records(plan, done, how);
            let mut w = j.begin(&rs[0]).unwrap();
            for r in &rs[1..] {
                w.append(r).unwrap();
            }
            let mut bytes = std::fs::read(w.path()).unwrap();
            std::fs::remove_file(w.path()).unwrap();
            if how == 5 {
                // A crash in the middle of the next record.
                let next = serde_json::to_vec(&Record::Intent {
                    step: done + 1,
                    at_ms: 1_700_000_000_900,
                    attempt: 1,
                    token: None,
                })
                .unwrap();
                bytes.extend_from_slice(&next[..next.len() / 2]);
            }
            seeds.push(Seed {
                name: format!("written-{i}-{how}.jsonl"),
                bytes,
            });
        }
    }
    seeds
}

/// What a caller does with a recovery read back: resume it, describe it, show it.
fn use_log(log: &RecoveryLog) -> Result<(), String> {
    let next = log.next_step();
    if log.is_open() && next.is_some_and(|n| !log.plan.steps.iter().any(|s| s.index == n)) {
        return Err(format!("next step {next:?} is not a step of the plan"));
    }
    let done: BTreeSet<usize> = log.done.keys().copied().collect();
    let _ = log.plan.redo_on_resume(&done);
    let playbooks = Playbooks::default();
    for s in &log.plan.steps {
        let _ = describe(s, &playbooks);
    }
    let _ = log.plan.event.to_string();
    if let Some((_, o)) = &log.end {
        let _ = o.label();
    }
    serde_json::to_string(log).map_err(|e| e.to_string())?;
    Ok(())
}

/// Writes `files` into a fresh journal directory and reads them every way `medic` does.
fn check(run: &Run, files: &[Vec<u8>]) -> Result<(), String> {
    let dir = tempdir();
    let j = Journal::open(dir.path()).map_err(|e| e.to_string())?;
    let ids: Vec<String> = (0..files.len()).map(|i| format!("rec-f{i}")).collect();
    for (id, bytes) in ids.iter().zip(files) {
        std::fs::write(dir.path().join(format!("{id}.jsonl")), bytes).unwrap();
    }

    let scan = j.scan().map_err(|e| format!("scan: {e}"))?;
    if scan.recoveries.len() + scan.damaged.len() != files.len() {
        return Err(format!(
            "{} files, {} recoveries and {} damaged",
            files.len(),
            scan.recoveries.len(),
            scan.damaged.len()
        ));
    }
    for d in &scan.damaged {
        if d.line.is_none() {
            return Err(format!("a readable file without a damaged line: {d}"));
        }
        let _ = (d.to_string(), d.level(), d.may_be_in_flight());
        if j.read(&d.id).is_ok() {
            return Err(format!("scan says {} is damaged, read reads it", d.id));
        }
    }
    for log in &scan.recoveries {
        run.outcome(if log.is_open() {
            "open recovery"
        } else {
            "ended recovery"
        });
        use_log(log)?;
        match j.read(&log.id) {
            Ok(l) if l == *log => {}
            other => return Err(format!("scan and read differ on {}: {other:?}", log.id)),
        }
    }
    for _ in &scan.damaged {
        run.outcome("damaged");
    }

    // Start-up: the damaged files are moved aside, the open recoveries kept.
    let open = j
        .open_recoveries()
        .map_err(|e| format!("open_recoveries: {e}"))?;
    let mut alerts = 0;
    open.alert_damaged(|_, _| alerts += 1);
    if alerts != scan.damaged.len() || open.damaged.iter().any(|d| d.moved_to.is_none()) {
        return Err(format!(
            "damaged files not all moved aside: {:?}",
            open.damaged
        ));
    }
    let expected: Vec<&RecoveryLog> = scan.recoveries.iter().filter(|l| l.is_open()).collect();
    if open.recoveries.iter().collect::<Vec<_>>() != expected {
        return Err("open_recoveries differs from the open recoveries scan read".into());
    }
    let again = j.scan().map_err(|e| format!("scan after start-up: {e}"))?;
    if !again.damaged.is_empty() || again.recoveries.len() != scan.recoveries.len() {
        return Err("a second start finds other files".into());
    }

    // Rolling forward: reopened and appended to, a recovery reads back with what was added.
    for before in &open.recoveries {
        let mut w = j
            .reopen(&before.id)
            .map_err(|e| format!("reopen {}: {e}", before.id))?;
        w.append(&Record::Resumed {
            at_ms: 1_800_000_000_000,
            from_step: before.next_step().unwrap_or(1),
        })
        .map_err(|e| e.to_string())?;
        drop(w);
        let text = String::from_utf8_lossy(
            &std::fs::read(j.dir().join(format!("{}.jsonl", before.id))).unwrap(),
        )
        .into_owned();
        let after = j.read(&before.id).map_err(|e| {
            format!(
                "rolled forward, {} no longer reads back: {e}\n{text}",
                before.id
            )
        })?;
        if after.resumed.last() != Some(&1_800_000_000_000)
            || after.done != before.done
            || after.torn_tail
        {
            return Err(format!(
                "rolled forward, {} reads back otherwise:\n{text}",
                before.id
            ));
        }
        run.outcome("rolled forward");
    }
    Ok(())
}

#[test]
fn journals_read_back_or_are_set_aside() {
    let generated = written();
    if std::env::var_os("MEDIC_FUZZ_SAVE_CORPUS").is_some() {
        let dir = corpus_dir("journal");
        std::fs::create_dir_all(&dir).unwrap();
        for s in generated.iter().filter(|s| {
            [
                "written-0-0.jsonl",
                "written-3-2.jsonl",
                "written-3-5.jsonl",
            ]
            .contains(&s.name.as_str())
        }) {
            std::fs::write(dir.join(&s.name), &s.bytes).unwrap();
        }
    }
    let mut seeds = corpus("journal");
    seeds.extend(generated);
    let run = Run::new("journal");
    run.seeds(&seeds, |input| check(&run, &[input.to_vec()]));
    // Every seed reads back.
    assert_eq!(
        run.outcomes("damaged"),
        0,
        "a journal of the corpus is damaged"
    );

    let file = prop_oneof![2 => case(false), 1 => line_case()];
    let strategy = prop::collection::vec(file, 1..=3);
    run.cases(file!(), 10_000, strategy, |cases| {
        let files: Vec<Vec<u8>> = cases.iter().map(|c| apply(&seeds, c)).collect();
        let shown: Vec<u8> = files.join(&b"\n=== next file ===\n"[..]);
        guard("journal", &shown, || check(&run, &files))
    });
    run.report();
    assert!(run.outcomes("damaged") > 0 && run.outcomes("rolled forward") > 0);
}
