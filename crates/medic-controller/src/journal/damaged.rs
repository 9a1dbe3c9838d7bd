//! Damaged journals: what start-up reports of a journal that does not read back, and where it
//! is moved (see the parent module).

use std::path::PathBuf;

use medic_plan::AlertLevel;

use super::{JournalError, Record, RecoveryLog};

/// Where [`Journal::open_recoveries`] moves damaged journals, inside the journal directory.
pub const DAMAGED_DIR: &str = "damaged";

/// Every journal in the directory, as [`Journal::scan`] read it.
#[derive(Debug, Default)]
pub struct Scan {
    /// Oldest first.
    pub recoveries: Vec<RecoveryLog>,
    /// The files that did not read back, by path.
    pub damaged: Vec<Damaged>,
}

/// What a restarted controller finds in the journal: see [`Journal::open_recoveries`].
/// Iterating over it gives the recoveries to resume.
#[derive(Debug)]
pub struct OpenRecoveries {
    /// The recoveries without an end, oldest first.
    pub recoveries: Vec<RecoveryLog>,
    /// The damaged files, moved aside: alert about each.
    pub damaged: Vec<Damaged>,
}

impl OpenRecoveries {
    /// Calls `alert` with the level and the text of the alert each damaged journal calls for
    /// (critical if its recovery may have been in flight).
    pub fn alert_damaged(&self, mut alert: impl FnMut(AlertLevel, String)) {
        for d in &self.damaged {
            alert(d.level(), d.to_string());
        }
    }
}

impl IntoIterator for OpenRecoveries {
    type Item = RecoveryLog;
    type IntoIter = std::vec::IntoIter<RecoveryLog>;

    fn into_iter(self) -> Self::IntoIter {
        self.recoveries.into_iter()
    }
}

/// What a damaged journal's readable lines say about its recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamagedRecovery {
    /// Not one whole line: the file is empty or holds only a torn begin record (a crash while
    /// it was being created). The begin record is durable before the first step starts, so no
    /// step ran.
    NotStarted,
    /// An end record is readable: the recovery was over.
    Ended,
    /// No end record is readable: the recovery may have been in flight, with steps done that
    /// nothing rolls forward now.
    MaybeInFlight,
}

/// A recovery journal that does not read back.
#[derive(Debug)]
pub struct Damaged {
    /// The file's name without `.jsonl`: the recovery's id.
    pub id: String,
    /// Where the file was found.
    pub path: PathBuf,
    /// The first damaged line (1-based; a missing begin record is line 1). `None`: the file
    /// could not be read at all, and is left where it is.
    pub line: Option<usize>,
    /// What is wrong, naming the file and the line.
    pub error: JournalError,
    pub recovery: DamagedRecovery,
    /// What the begin record says, if it can be read: the event ("machine redis1 lost").
    pub event: Option<String>,
    /// ... and the machines its plan names.
    pub machines: Vec<String>,
    /// Where it was moved.
    pub moved_to: Option<PathBuf>,
    /// Why it could not be moved (it is found again at the next start).
    pub not_moved: Option<String>,
}

impl Damaged {
    pub(super) fn new(
        id: String,
        path: PathBuf,
        error: JournalError,
        bytes: Option<&[u8]>,
    ) -> Damaged {
        let line = match &error {
            JournalError::Corrupt { line, .. } => Some(*line),
            JournalError::Io { .. } => None,
        };
        let mut d = Damaged {
            id,
            path,
            line,
            error,
            recovery: DamagedRecovery::MaybeInFlight,
            event: None,
            machines: Vec::new(),
            moved_to: None,
            not_moved: None,
        };
        let Some(bytes) = bytes else {
            return d;
        };
        let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        // The last piece has no newline: a torn write, or nothing.
        let unended = lines.pop().unwrap_or_default();
        let blank = |l: &[u8]| l.iter().all(u8::is_ascii_whitespace);
        if lines.iter().all(|l| blank(l)) {
            // No whole line; `unended` is no whole record either, or the file would read back.
            d.recovery = DamagedRecovery::NotStarted;
        } else if lines
            .iter()
            .chain([&unended])
            .any(|l| matches!(serde_json::from_slice(l), Ok(Record::End { .. })))
        {
            d.recovery = DamagedRecovery::Ended;
        }
        // The begin record, even if part of it is damaged: whatever of it still parses.
        if let Some(begin) = lines
            .iter()
            .chain([&unended])
            .find(|l| !blank(l))
            .and_then(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        {
            d.event = serde_json::from_value::<medic_plan::Event>(begin["plan"]["event"].clone())
                .ok()
                .map(|e| e.to_string());
            let mut machines = std::collections::BTreeSet::new();
            machines_in(&begin["plan"], &mut machines);
            d.machines = machines.into_iter().collect();
        }
        d
    }

    /// Whether the recovery may have been in flight: then a human must check its machines.
    pub fn may_be_in_flight(&self) -> bool {
        self.recovery == DamagedRecovery::MaybeInFlight
    }

    /// How loud the alert about it is: critical if the recovery may have been in flight.
    pub fn level(&self) -> AlertLevel {
        if self.may_be_in_flight() {
            AlertLevel::Critical
        } else {
            AlertLevel::Warning
        }
    }
}

/// Every string under a `machine` key (a playbook's free-form variables aside).
fn machines_in(v: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("machine", serde_json::Value::String(s)) => {
                        out.insert(s.clone());
                    }
                    ("vars", _) => {}
                    _ => machines_in(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| machines_in(v, out)),
        _ => {}
    }
}

/// The alert's text.
impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path.display();
        match &self.error {
            JournalError::Corrupt { line, message, .. } => {
                // serde_json counts lines within the one it was given.
                let message = message.replace(" at line 1 column ", " at column ");
                write!(
                    f,
                    "recovery journal {path} is damaged at line {line} ({message})"
                )?;
            }
            JournalError::Io { source, .. } => {
                write!(f, "recovery journal {path} cannot be read ({source})")?;
            }
        }
        match (&self.moved_to, &self.not_moved) {
            (Some(to), _) => write!(f, ": moved to {}", to.display())?,
            (None, Some(e)) => write!(
                f,
                ": could not be moved aside ({e}), so it is reported again at the next start"
            )?,
            (None, None) if self.line.is_none() => write!(
                f,
                ": left in place, so it is reported again at the next start"
            )?,
            (None, None) => {}
        }
        let event = self.event.as_deref();
        match self.recovery {
            DamagedRecovery::NotStarted => write!(
                f,
                "; it holds no whole record (a crash while the recovery was being created): no step ran, and a failure still there is detected again"
            ),
            DamagedRecovery::Ended => {
                write!(f, "; the recovery")?;
                if let Some(event) = event {
                    write!(f, " ({event})")?;
                }
                write!(f, " had ended; `medic history` no longer shows it")
            }
            DamagedRecovery::MaybeInFlight => {
                write!(f, "; if a recovery was in flight")?;
                if let Some(event) = event {
                    write!(f, " ({event})")?;
                }
                write!(f, ", check the machines it names")?;
                if self.machines.is_empty() {
                    write!(f, " (its begin record is unreadable: see the file)")?;
                } else {
                    write!(f, ": {}", self.machines.join(", "))?;
                }
                write!(
                    f,
                    ". `medic history` no longer shows it and `medic run` does not resume it"
                )
            }
        }
    }
}
