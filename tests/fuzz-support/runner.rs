//! The fuzzers' runner (tests/fuzz-support/mutate.rs): a bounded number of cases, counted and
//! timed; a panic caught and reported with the input that caused it, which is saved.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};

use super::*;

/// An input as escaped text, cut to `max` bytes, for a failure message.
pub fn show(bytes: &[u8], max: usize) -> String {
    let shown = bytes[..bytes.len().min(max)].escape_ascii().to_string();
    if bytes.len() > max {
        format!("{shown}... ({} bytes in all)", bytes.len())
    } else {
        shown
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Keeps an input that failed, for the corpus; returns where.
fn save_failure(target: &str, input: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    let mut h = std::collections::hash_map::DefaultHasher::new();
    input.hash(&mut h);
    let path = dir.join(format!("{target}-{:016x}", h.finish()));
    let _ = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input));
    path
}

/// Runs `check` on `input`: a panic, or a property `check` finds broken, is a failure that
/// names the input (escaped, and saved to a file).
pub fn guard(
    target: &str,
    input: &[u8],
    check: impl FnOnce() -> Result<(), String>,
) -> Result<(), TestCaseError> {
    let what = match catch_unwind(AssertUnwindSafe(check)) {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(broken)) => broken,
        Err(p) => format!("panicked: {}", panic_message(&*p)),
    };
    let saved = save_failure(target, input);
    Err(TestCaseError::fail(format!(
        "{target}: {what}\ninput ({} bytes, saved as {}):\n{}",
        input.len(),
        saved.display(),
        show(input, 4096)
    )))
}

/// A bounded run: counts every input executed and prints the count and the time it took.
#[derive(Debug)]
pub struct Run {
    target: &'static str,
    started: Instant,
    executed: AtomicUsize,
    /// What the inputs came to (accepted, refused, ...), by name.
    outcomes: Mutex<BTreeMap<&'static str, usize>>,
}

impl Run {
    pub fn new(target: &'static str) -> Run {
        Run {
            target,
            started: Instant::now(),
            executed: AtomicUsize::new(0),
            outcomes: Mutex::new(BTreeMap::new()),
        }
    }

    /// Counts one outcome, so a run shows it reached past the first check.
    pub fn outcome(&self, what: &'static str) {
        if let Ok(mut o) = self.outcomes.lock() {
            *o.entry(what).or_default() += 1;
        }
    }

    /// How many inputs came to `what`.
    pub fn outcomes(&self, what: &str) -> usize {
        self.outcomes
            .lock()
            .map_or(0, |o| o.get(what).copied().unwrap_or(0))
    }

    /// Counts one input executed.
    pub fn count(&self) {
        self.executed.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs every seed as it is.
    pub fn seeds(&self, seeds: &[Seed], check: impl Fn(&[u8]) -> Result<(), String>) {
        for s in seeds {
            self.count();
            if let Err(e) = guard(self.target, &s.bytes, || check(&s.bytes)) {
                panic!("seed {}: {e}", s.name);
            }
        }
    }

    /// `cases` cases of `strategy` (`PROPTEST_CASES` overrides it), failures persisted next to
    /// `source_file` (the caller's `file!()`).
    pub fn cases<S: Strategy>(
        &self,
        source_file: &'static str,
        cases: u32,
        strategy: S,
        test: impl Fn(S::Value) -> Result<(), TestCaseError>,
    ) {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(cases);
        let persist = std::env::var_os("PROPTEST_DISABLE_FAILURE_PERSISTENCE").is_none();
        let config = Config {
            cases,
            source_file: Some(source_file),
            failure_persistence: persist
                .then(|| Box::new(FileFailurePersistence::WithSource("proptest-regressions")) as _),
            test_name: Some(self.target),
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        let result = runner.run(&strategy, |v| {
            self.count();
            test(v)
        });
        if let Err(e) = result {
            self.report();
            panic!("fuzz {}: {e}", self.target);
        }
    }

    /// Byte inputs: every seed as it is, then `cases` cases of `strategy` ([`case`],
    /// [`value_case`]) applied to them.
    pub fn bytes(
        &self,
        source_file: &'static str,
        cases: u32,
        seeds: &[Seed],
        strategy: impl Strategy<Value = Case>,
        check: impl Fn(&[u8]) -> Result<(), String>,
    ) {
        self.seeds(seeds, &check);
        self.mutated(source_file, cases, seeds, strategy, check);
    }

    /// `cases` cases of `strategy` applied to the seeds (the seeds themselves not run).
    pub fn mutated(
        &self,
        source_file: &'static str,
        cases: u32,
        seeds: &[Seed],
        strategy: impl Strategy<Value = Case>,
        check: impl Fn(&[u8]) -> Result<(), String>,
    ) {
        self.cases(source_file, cases, strategy, |c| {
            let input = apply(seeds, &c);
            guard(self.target, &input, || check(&input))
        });
    }

    /// Prints how many inputs ran, and how long it took.
    pub fn report(&self) {
        let n = self.executed.load(Ordering::Relaxed);
        let t = self.started.elapsed();
        let outcomes = self
            .outcomes
            .lock()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        eprintln!(
            "fuzz {}: {n} inputs executed in {:.2} s ({:.0} per second){}",
            self.target,
            t.as_secs_f64(),
            n as f64 / t.as_secs_f64().max(1e-9),
            if outcomes.is_empty() {
                String::new()
            } else {
                format!(": {outcomes}")
            }
        );
    }
}
