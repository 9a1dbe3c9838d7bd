//! The recovery journal: one append-only file per recovery, one JSON record per line, each
//! written and fsynced before the controller moves on.
//!
//! A step's *intent* is on disk before the step starts and its *outcome* after it ends, so after
//! a crash or SIGKILL at any point the next `medic run` knows which steps are confirmed done
//! and rolls forward from the first one that is not. Every action is idempotent (a launch finds
//! the instance its step already launched), so re-running the step that was in flight is safe.
//! A torn last line (the crash came in the middle of a write) is ignored: its step is redone.
//!
//! Damage anywhere else makes that one file unreadable, never the others: at start-up
//! ([`Journal::open_recoveries`]) the good journals are resumed and each damaged one is reported
//! with its file and line, and whether its recovery may have been in flight, and is moved into
//! `journal/damaged/` under its own name (never deleted) so the next start is clean. A file
//! with no whole line (empty, or a torn begin record: a crash while it was being created) is
//! set aside the same way; no step of its recovery ran. `medic history` skips damaged files.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use medic_plan::{Plan, StepOutput};

mod damaged;
pub use damaged::*;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {path}:{line}: not a journal record: {message}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How a recovery ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Every step done.
    Completed,
    /// Every step done, and at least one was an alert: a human must act.
    Alerted,
    /// Every step ran, but some proxy changes were skipped (the proxy's runtime API did not
    /// answer): that proxy may still route as before until it is repaired.
    Incomplete { skipped: Vec<String> },
    /// The replacement was held back by the flap limits; failover (if any) was done.
    Held { reason: String },
    /// A step failed after its retries; the steps after it did not run.
    Failed { step: usize, error: String },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Alerted => "alerted",
            Outcome::Incomplete { .. } => "incomplete",
            Outcome::Held { .. } => "held",
            Outcome::Failed { .. } => "failed",
        }
    }
}

/// One line of a journal file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// The plan, before its first step.
    Begin {
        at_ms: u64,
        /// What was seen: "redis r9001@redis1: connection refused", "manual: medic recover".
        trigger: String,
        /// When the failure was first seen (the first failed check), if it was detected.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        first_failure_ms: Option<u64>,
        /// When the lost master last answered a check, if a master was lost.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        master_last_ok_ms: Option<u64>,
        plan: Plan,
    },
    /// A step is about to start (attempt counts from 1).
    Intent {
        step: usize,
        at_ms: u64,
        attempt: u32,
        /// In a group: the fencing token of the leader that ran the step (checked in etcd
        /// before the step started).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<i64>,
    },
    /// A step is confirmed done.
    Done {
        step: usize,
        at_ms: u64,
        duration_ms: u64,
        summary: String,
        #[serde(default)]
        output: StepOutput,
    },
    /// One attempt of a step failed.
    Failed {
        step: usize,
        at_ms: u64,
        attempt: u32,
        error: String,
    },
    /// The recovery is over.
    End {
        at_ms: u64,
        #[serde(flatten)]
        outcome: Outcome,
    },
    /// `medic run` picked the recovery up again after a restart.
    Resumed { at_ms: u64, from_step: usize },
}

/// A journal file being written.
#[derive(Debug)]
pub struct Writer {
    path: PathBuf,
    file: File,
}

impl Writer {
    /// Appends one record and makes it durable before returning.
    pub fn append(&mut self, r: &Record) -> Result<(), JournalError> {
        let io = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(r).map_err(|e| JournalError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(io)?;
        self.file.sync_data().map_err(io)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the file end with a newline after its last whole record, durably.
    fn end_last_line(&mut self) -> Result<(), JournalError> {
        let io = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        let bytes = std::fs::read(&self.path).map_err(io)?;
        // The last line as the reader takes it: what follows the last newline or, when the file
        // ends with one, the line that newline ends (a torn line can be followed by its newline
        // when the pages of a write reach the disk out of order).
        let ended = bytes.ends_with(b"\n");
        let body = &bytes[..bytes.len() - usize::from(ended)];
        let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let tail = &body[start..];
        if tail.is_empty() {
            return Ok(());
        }
        if serde_json::from_slice::<Record>(tail).is_ok() {
            if ended {
                return Ok(());
            }
            self.file.write_all(b"\n").map_err(io)?;
        } else if ended && tail.iter().all(u8::is_ascii_whitespace) {
            // A blank last line: the reader skips it.
            return Ok(());
        } else {
            self.file.set_len(start as u64).map_err(io)?;
        }
        self.file.sync_data().map_err(io)
    }
}

/// A recovery as its journal tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecoveryLog {
    pub id: String,
    pub begun_ms: u64,
    pub trigger: String,
    pub first_failure_ms: Option<u64>,
    pub master_last_ok_ms: Option<u64>,
    pub plan: Plan,
    /// Per step index: (duration_ms, summary, output, at_ms) once done.
    pub done: std::collections::BTreeMap<usize, DoneStep>,
    /// The steps with an intent on record: begun at least once (perhaps done, perhaps cut
    /// short by a crash). A step not among them never started.
    pub begun: std::collections::BTreeSet<usize>,
    /// Failed attempts, in order.
    pub failures: Vec<(usize, String)>,
    pub resumed: Vec<u64>,
    pub end: Option<(u64, Outcome)>,
    /// A last line that did not parse (a write cut short by a crash).
    pub torn_tail: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoneStep {
    pub at_ms: u64,
    pub duration_ms: u64,
    pub summary: String,
    pub output: StepOutput,
}

impl RecoveryLog {
    /// The first step not confirmed done: where a restarted controller goes on.
    pub fn next_step(&self) -> Option<usize> {
        self.plan
            .steps
            .iter()
            .map(|s| s.index)
            .find(|i| !self.done.contains_key(i))
    }

    pub fn is_open(&self) -> bool {
        self.end.is_none()
    }
}

/// The journal directory: `<state_dir>/journal`, one `<recovery>.jsonl` per recovery.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Journal, JournalError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| JournalError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Journal { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.jsonl"))
    }

    /// Starts a recovery's file with its `Begin` record; the directory entry is made durable too.
    pub fn begin(&self, begin: &Record) -> Result<Writer, JournalError> {
        let Record::Begin { plan, .. } = begin else {
            return Err(JournalError::Io {
                path: self.dir.clone(),
                source: std::io::Error::other("a journal starts with a begin record"),
            });
        };
        let mut w = self.create(&plan.recovery)?;
        w.append(begin)?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(w)
    }

    fn create(&self, id: &str) -> Result<Writer, JournalError> {
        let path = self.path_of(id);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| JournalError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(Writer { path, file })
    }

    /// Reopens a recovery's file to append to it (roll forward). Its last line is ended first
    /// as the reader took it: a torn one is cut off (appended to, it would become damage in the
    /// middle of the file), a whole record that lost only its newline gets it back.
    pub fn reopen(&self, id: &str) -> Result<Writer, JournalError> {
        let mut w = self.create(id)?;
        w.end_last_line()?;
        Ok(w)
    }

    /// Reads one recovery's file.
    /// A recovery's journal as written (what a group keeps in etcd).
    pub fn raw(&self, id: &str) -> Result<String, JournalError> {
        let path = self.path_of(id);
        std::fs::read(&path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|source| JournalError::Io { path, source })
    }

    /// Writes a recovery's journal as the group has it (a new leader takes the journal from
    /// etcd), replacing the local copy atomically.
    pub fn install(&self, id: &str, text: &str) -> Result<(), JournalError> {
        let path = self.path_of(id);
        let tmp = self.dir.join(format!(".{id}.jsonl.tmp"));
        let io = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Moves a recovery's journal into `<journal>/<into>/` (kept, never deleted).
    pub fn move_aside(&self, id: &str, into: &str) -> Result<PathBuf, JournalError> {
        let dir = self.dir.join(into);
        std::fs::create_dir_all(&dir).map_err(|source| JournalError::Io {
            path: dir.clone(),
            source,
        })?;
        let to = dir.join(format!("{id}.jsonl"));
        std::fs::rename(self.path_of(id), &to).map_err(|source| JournalError::Io {
            path: to.clone(),
            source,
        })?;
        Ok(to)
    }

    pub fn read(&self, id: &str) -> Result<RecoveryLog, JournalError> {
        read_file(&self.path_of(id), id)
    }

    /// Every recovery that reads back, oldest first. A damaged file is skipped (not moved: a
    /// recovery being written may be read mid-write), so `medic history` shows the others;
    /// [`scan`](Self::scan) says which were skipped.
    pub fn all(&self) -> Result<Vec<RecoveryLog>, JournalError> {
        let scan = self.scan()?;
        for d in &scan.damaged {
            tracing::debug!(error = %d.error, "Skipping a damaged recovery journal.");
        }
        Ok(scan.recoveries)
    }

    /// Reads every journal in the directory: the recoveries that read back, oldest first, and
    /// the files that do not, each with its error (file and line). Moves nothing. Only an
    /// unreadable directory is an error: one bad file never hides the others.
    pub fn scan(&self) -> Result<Scan, JournalError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| JournalError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let mut scan = Scan::default();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("jsonl") {
                continue;
            }
            let Some(id) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let id = id.to_owned();
            match std::fs::read(&path) {
                Ok(bytes) => match parse(&bytes, &path, &id) {
                    Ok(log) => scan.recoveries.push(log),
                    Err(error) => scan
                        .damaged
                        .push(Damaged::new(id, path, error, Some(&bytes))),
                },
                Err(source) => {
                    let error = JournalError::Io {
                        path: path.clone(),
                        source,
                    };
                    scan.damaged.push(Damaged::new(id, path, error, None));
                }
            }
        }
        scan.recoveries
            .sort_by(|a, b| (a.begun_ms, &a.id).cmp(&(b.begun_ms, &b.id)));
        scan.damaged.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(scan)
    }

    /// At start-up, before any recovery is written: the recoveries without an end (the ones a
    /// restarted controller must finish), oldest first, and the damaged files, each moved into
    /// `journal/damaged/` under its own name so the next start is clean. A file that cannot
    /// be read at all is left where it is (reported again at the next start). One damaged file
    /// never keeps the others from being resumed; the caller alerts about each damaged one
    /// ([`Damaged::level`], and its `Display` is the alert's text).
    ///
    /// Not while recoveries are being written: a journal just created (still empty) would be
    /// taken for a damaged one and moved away from its writer.
    pub fn open_recoveries(&self) -> Result<OpenRecoveries, JournalError> {
        let Scan {
            recoveries,
            mut damaged,
        } = self.scan()?;
        for d in &mut damaged {
            // Unreadable is not damaged: whatever keeps it from being read, its text may be
            // whole, so it stays where the next start looks.
            if d.line.is_some() {
                match self.set_aside(&d.path) {
                    Ok(to) => d.moved_to = Some(to),
                    Err(e) => d.not_moved = Some(e.to_string()),
                }
            }
            tracing::warn!(
                path = %d.path.display(),
                moved_to = ?d.moved_to,
                not_moved = ?d.not_moved,
                recovery = ?d.recovery,
                error = %d.error,
                "A recovery journal does not read back."
            );
        }
        Ok(OpenRecoveries {
            recoveries: recoveries.into_iter().filter(|l| l.is_open()).collect(),
            damaged,
        })
    }

    /// Moves a file into `<dir>/damaged/`, under its own name (with `.1`, `.2`... after it if
    /// that is taken: nothing there is ever replaced), durably.
    fn set_aside(&self, path: &Path) -> Result<PathBuf, JournalError> {
        let aside = self.dir.join(DAMAGED_DIR);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| JournalError::Io { path, source }
        };
        std::fs::create_dir_all(&aside).map_err(io(&aside))?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let mut to = aside.join(&*name);
        let mut n = 0;
        while std::fs::symlink_metadata(&to).is_ok() {
            n += 1;
            to = aside.join(format!("{name}.{n}"));
        }
        std::fs::rename(path, &to).map_err(io(path))?;
        for d in [&aside, &self.dir] {
            File::open(d).and_then(|d| d.sync_all()).map_err(io(d))?;
        }
        Ok(to)
    }
}

fn read_file(path: &Path, id: &str) -> Result<RecoveryLog, JournalError> {
    let bytes = std::fs::read(path).map_err(|source| JournalError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&bytes, path, id)
}

pub(crate) fn parse(bytes: &[u8], path: &Path, id: &str) -> Result<RecoveryLog, JournalError> {
    // Bytes, not text: a write torn in the middle of a multi-byte character is a torn line too.
    let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    if bytes.ends_with(b"\n") {
        lines.pop();
    }
    let mut log: Option<RecoveryLog> = None;
    let mut torn_tail = false;
    let last = lines.len();
    for (i, line) in lines.iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let record: Record = match serde_json::from_slice(line) {
            Ok(r) => r,
            // Only the last line may be torn; anything else is damage worth stopping for.
            Err(_) if i + 1 == last => {
                torn_tail = true;
                break;
            }
            Err(e) => {
                return Err(JournalError::Corrupt {
                    path: path.to_owned(),
                    line: i + 1,
                    message: e.to_string(),
                });
            }
        };
        match (record, log.as_mut()) {
            (
                Record::Begin {
                    at_ms,
                    trigger,
                    first_failure_ms,
                    master_last_ok_ms,
                    plan,
                },
                None,
            ) => {
                log = Some(RecoveryLog {
                    id: id.to_owned(),
                    begun_ms: at_ms,
                    trigger,
                    first_failure_ms,
                    master_last_ok_ms,
                    plan,
                    done: Default::default(),
                    begun: Default::default(),
                    failures: Vec::new(),
                    resumed: Vec::new(),
                    end: None,
                    torn_tail: false,
                })
            }
            (_, None) | (Record::Begin { .. }, Some(_)) => {
                return Err(JournalError::Corrupt {
                    path: path.to_owned(),
                    line: i + 1,
                    message: "a journal has exactly one begin record, first".to_owned(),
                });
            }
            (Record::Intent { step, .. }, Some(l)) => {
                l.begun.insert(step);
            }
            (
                Record::Done {
                    step,
                    at_ms,
                    duration_ms,
                    summary,
                    output,
                },
                Some(l),
            ) => {
                l.done.insert(
                    step,
                    DoneStep {
                        at_ms,
                        duration_ms,
                        summary,
                        output,
                    },
                );
            }
            (Record::Failed { step, error, .. }, Some(l)) => l.failures.push((step, error)),
            (Record::End { at_ms, outcome }, Some(l)) => l.end = Some((at_ms, outcome)),
            (Record::Resumed { at_ms, .. }, Some(l)) => l.resumed.push(at_ms),
        }
    }
    let mut log = log.ok_or_else(|| JournalError::Corrupt {
        path: path.to_owned(),
        line: 1,
        message: "no begin record".to_owned(),
    })?;
    log.torn_tail = torn_tail;
    Ok(log)
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use medic_plan::{Action, AlertLevel, Event, MonitorTarget, Step};

    pub(crate) fn plan(id: &str) -> Plan {
        let target = MonitorTarget::Machine {
            machine: "redis1".into(),
        };
        Plan {
            recovery: id.into(),
            topology: "t".into(),
            event: Event::MachineLost {
                machine: "redis1".into(),
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
                    action: Action::Alert {
                        level: AlertLevel::Warning,
                        message: "x".into(),
                    },
                },
                Step {
                    index: 3,
                    action: Action::Monitor { target },
                },
            ],
        }
    }

    pub(crate) fn begin(id: &str) -> Record {
        Record::Begin {
            at_ms: 1,
            trigger: "test".into(),
            first_failure_ms: None,
            master_last_ok_ms: None,
            plan: plan(id),
        }
    }

    pub(crate) fn done(step: usize) -> Record {
        Record::Done {
            step,
            at_ms: 2,
            duration_ms: 3,
            summary: "ok".into(),
            output: StepOutput::default(),
        }
    }

    #[test]
    fn an_unfinished_recovery_goes_on_from_its_first_step_not_done() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let mut w = j.begin(&begin("r-1")).unwrap();
        w.append(&Record::Intent {
            step: 1,
            at_ms: 1,
            attempt: 1,
            token: None,
        })
        .unwrap();
        w.append(&done(1)).unwrap();
        // Step 2 started, and the controller died.
        w.append(&Record::Intent {
            step: 2,
            at_ms: 1,
            attempt: 1,
            token: None,
        })
        .unwrap();
        let open = j.open_recoveries().unwrap().recoveries;
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].next_step(), Some(2));
        let mut w = j.reopen("r-1").unwrap();
        w.append(&done(2)).unwrap();
        w.append(&done(3)).unwrap();
        w.append(&Record::End {
            at_ms: 9,
            outcome: Outcome::Completed,
        })
        .unwrap();
        assert!(j.open_recoveries().unwrap().recoveries.is_empty());
        let all = j.all().unwrap();
        assert_eq!(all[0].end, Some((9, Outcome::Completed)));
        assert_eq!(all[0].next_step(), None);
    }

    #[test]
    fn a_torn_last_line_is_redone_and_damage_elsewhere_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let mut w = j.begin(&begin("r-2")).unwrap();
        w.append(&done(1)).unwrap();
        drop(w);
        let path = dir.path().join("r-2.jsonl");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"record\":\"done\",\"step\":2,\"at_");
        std::fs::write(&path, &text).unwrap();
        let log = j.read("r-2").unwrap();
        assert!(log.torn_tail);
        assert_eq!(log.next_step(), Some(2));

        let damaged = text.replacen("\"record\":\"done\"", "\"record\":\"dome\"", 1) + "\n{}\n";
        std::fs::write(&path, damaged).unwrap();
        let err = j.read("r-2").unwrap_err().to_string();
        assert!(err.contains("r-2.jsonl:2:"), "{err}");
    }
}
