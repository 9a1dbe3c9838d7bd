//! Mutations of examples/barton.yaml — truncations, stray characters, an unknown key `zz`
//! injected at every kind of position — each taken through everything a user's file goes
//! through: `load_topology` (parse, validate, the AMI definitions it names), the playbooks it
//! uses, and, when all of that passes, the planner for every machine loss, every redis process
//! death and every shard's switchover, each step described as `medic plan` prints it.
//!
//! Nothing may panic, and every outcome is checked:
//! - rejected: at least one error located in the text (a line of it, a message);
//! - accepted: every machine loss and process death plans a non-empty recovery, every shard
//!   with a replica a non-empty switchover;
//! - a mutation that leaves the data as it was (it landed in a comment): accepted, with the
//!   very plans of the unmutated file;
//! - `zz` as a key of a mapping medic reads field by field: rejected, the error naming `zz` or
//!   pointing at it; as a key of a free-form map (tags, image ids): the key itself accepted.
//!
//! Each outcome (not parsed, invalid, planned) is counted and must occur, so the test cannot
//! silently turn into one that checks nothing.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::Value;

use medic_plan::describe::describe;
use medic_plan::{Event, ObservedState, Plan, PlanError, plan_recovery};
use medic_playbook::Playbooks;
use medic_topology::diag::Pos;
use medic_topology::load::parse_str;
use medic_topology::{Diagnostic, Severity, Topology, load_topology};

const BARTON: &str = include_str!("../../../examples/barton.yaml");

/// What `load_topology` says a topology is, in its messages.
const WHAT: &str = "a topology (see docs/topology.md)";

/// The plan of one event, as `medic plan` computes it.
type Planned = Vec<(Event, Result<Plan, PlanError>)>;

/// A file loaded, or why it could not be.
type Loaded<T> = Result<T, Vec<Diagnostic>>;

/// What one mutation came to.
#[derive(Debug)]
enum Outcome {
    /// No topology could be built from the text: malformed YAML, a wrong type, ...
    NotParsed(Vec<Diagnostic>),
    /// A topology was built, but it, its AMI definitions or its playbooks have errors.
    Invalid(Vec<Diagnostic>),
    /// Valid: the plan of every event tried.
    Planned(Planned),
}

#[derive(Debug, Default)]
struct Counts {
    not_parsed: usize,
    invalid: usize,
    planned: usize,
    /// Rejected with no place in the text to point at: a text with nothing but comments.
    empty: usize,
    /// Rejected with no place in the text to point at: a `playbooks:` directory that does
    /// not exist (see `assert_located`).
    no_playbook_dir: usize,
    /// Accepted, the data unchanged: the mutation landed in a comment.
    comment: usize,
}

/// A copy of the example's surroundings (`../playbooks`, `../amis`) in a temporary directory,
/// so that a mutation is read from a file exactly as `medic validate` and `medic plan` read it.
struct Pipeline {
    _dir: tempfile::TempDir,
    file: PathBuf,
    /// Playbooks by directory and names, loaded once: mutations do not change them.
    playbooks: HashMap<(PathBuf, Vec<&'static str>), Loaded<Playbooks>>,
    /// The example's data, and its plans.
    original: Value,
    baseline: Planned,
    counts: Counts,
}

impl Pipeline {
    fn new() -> Self {
        assert!(BARTON.is_ascii(), "columns below are counted in bytes");
        let dir = tempfile::tempdir().unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for sub in ["playbooks", "amis"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            for e in std::fs::read_dir(repo.join(sub)).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), dir.path().join(sub).join(e.file_name())).unwrap();
            }
        }
        std::fs::create_dir(dir.path().join("examples")).unwrap();
        let mut p = Pipeline {
            file: dir.path().join("examples/barton.yaml"),
            _dir: dir,
            playbooks: HashMap::new(),
            original: generic(BARTON).unwrap(),
            baseline: Vec::new(),
            counts: Counts::default(),
        };
        let Outcome::Planned(plans) = p.outcome(BARTON) else {
            panic!("examples/barton.yaml does not plan");
        };
        // 6 machines lost; 2 shards switched over, each of their 2 processes died.
        assert_eq!(plans.len(), 6 + 2 * 3);
        p.baseline = plans;
        assert!(matches!(
            p.check("the example itself", BARTON).0,
            Outcome::Planned(_)
        ));
        p.counts = Counts::default();
        p
    }

    /// `medic validate`, then `medic plan` for every event, on `text`.
    fn outcome(&mut self, text: &str) -> Outcome {
        std::fs::write(&self.file, text).unwrap();
        let loaded = match load_topology(&self.file) {
            Ok(l) => l,
            Err(e) => {
                // Whether a topology was built at all: the parse `load_topology` starts with.
                let parsed = parse_str::<Topology>(&self.file, text, WHAT)
                    .value
                    .is_some();
                return if parsed {
                    Outcome::Invalid(e.diagnostics)
                } else {
                    Outcome::NotParsed(e.diagnostics)
                };
            }
        };
        // The playbooks `medic validate` loads: those of the roles the machines have.
        let mut names: Vec<&'static str> = loaded
            .topology
            .machines
            .iter()
            .filter_map(|m| m.value.role.value.playbook())
            .collect();
        names.sort_unstable();
        names.dedup();
        let dir = loaded.playbook_dir();
        let playbooks = self
            .playbooks
            .entry((dir.clone(), names.clone()))
            .or_insert_with(|| Playbooks::load(&dir, names));
        let playbooks = match playbooks {
            Ok(p) => p,
            Err(d) => return Outcome::Invalid(d.clone()),
        };
        let top = &loaded.topology;
        let mut events: Vec<Event> = top
            .machines
            .iter()
            .map(|m| Event::MachineLost {
                machine: m.value.name.value.clone(),
            })
            .collect();
        for s in &top.shards {
            let shard = &s.value.name.value;
            events.push(Event::Switchover {
                shard: shard.clone(),
                to: None,
            });
            for m in std::iter::once(&s.value.master).chain(&s.value.replicas) {
                events.push(Event::ProcessDied {
                    shard: shard.clone(),
                    machine: m.value.clone(),
                });
            }
        }
        let state = ObservedState::assumed(top);
        let planned = events
            .into_iter()
            .map(|event| {
                let plan = plan_recovery(top, &state, &event, "dry-run");
                for step in plan.iter().flat_map(|p| &p.steps) {
                    assert_eq!(describe(step, playbooks).index, step.index);
                }
                // What the planner may legitimately refuse: a switchover with no replica.
                if let (Event::Switchover { shard, .. }, Err(e)) = (&event, &plan) {
                    let replicas = top.shard(shard).map_or(0, |s| s.replicas.len());
                    assert!(
                        replicas == 0 && matches!(e, PlanError::CannotSwitch { .. }),
                        "switchover of {shard}: {e}"
                    );
                }
                (event, plan)
            })
            .collect();
        Outcome::Planned(planned)
    }

    /// Runs `text` through the pipeline, checks what it came to, counts it; also returns the
    /// text's data (None if it is not YAML at all).
    fn check(&mut self, what: &str, text: &str) -> (Outcome, Option<Value>) {
        let outcome = match catch_unwind(AssertUnwindSafe(|| self.outcome(text))) {
            Ok(o) => o,
            Err(_) => panic!("{what}: the pipeline panicked (see above) on this text:\n{text}"),
        };
        match &outcome {
            Outcome::NotParsed(d) => {
                self.counts.not_parsed += 1;
                self.assert_located(what, text, d);
            }
            Outcome::Invalid(d) => {
                self.counts.invalid += 1;
                self.assert_located(what, text, d);
            }
            Outcome::Planned(plans) => {
                self.counts.planned += 1;
                for (event, plan) in plans {
                    let lost_or_died =
                        matches!(event, Event::MachineLost { .. } | Event::ProcessDied { .. });
                    match plan {
                        Ok(p) => assert!(!p.steps.is_empty(), "{what}: {event}: no step"),
                        Err(e) => assert!(!lost_or_died, "{what}: {event}: {e}"),
                    }
                }
            }
        }
        let data = generic(text);
        if data.as_ref() == Some(&self.original) {
            // Only a comment changed: the same file to medic, down to the plans.
            match &outcome {
                Outcome::Planned(plans) => assert!(
                    *plans == self.baseline,
                    "{what}: only a comment changed, yet the plans differ"
                ),
                other => panic!("{what}: only a comment changed, yet: {other:?}\n{text}"),
            }
            self.counts.comment += 1;
        }
        (outcome, data)
    }

    /// A rejected text has at least one error located in it: a line of the text (counting the
    /// one after a final newline), a column, a message. Two rejections have no such place.
    fn assert_located(&mut self, what: &str, text: &str, diags: &[Diagnostic]) {
        let lines = text.split('\n').count() as u64;
        let located = diags.iter().any(|d| {
            d.severity == Severity::Error
                && d.file == self.file
                && (1..=lines).contains(&d.pos.line)
                && d.pos.column >= 1
                && !d.message.trim().is_empty()
        });
        if located {
            return;
        }
        let all: Vec<String> = diags.iter().map(ToString::to_string).collect();
        // Nothing but comments: no line to point at.
        let blank = text.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
        });
        if blank {
            assert_eq!(
                diags.iter().map(|d| &d.message).collect::<Vec<_>>(),
                [&format!("the file is empty; expected {WHAT}")],
                "{what}"
            );
            self.counts.empty += 1;
            return;
        }
        // A mutated `playbooks:` naming a directory that does not exist: each playbook is
        // reported as a file that cannot be opened, named in full but without a position —
        // not at the `playbooks:` line, as a missing AMI definition is (medic's loader of the
        // playbooks, not this test, would have to change for that).
        let no_dir = !diags.is_empty()
            && diags.iter().all(|d| {
                d.severity == Severity::Error
                    && d.message.starts_with("cannot open the file: ")
                    && d.file.parent().is_some_and(|dir| !dir.exists())
            });
        if no_dir {
            self.counts.no_playbook_dir += 1;
            return;
        }
        panic!("{what}: rejected without an error located in the text: {all:#?}\n{text}");
    }
}

/// The data of a YAML text, whatever medic would make of it.
fn generic(text: &str) -> Option<Value> {
    parse_str::<Value>(Path::new("generic.yaml"), text, "YAML").value
}

#[test]
fn truncations_and_stray_characters_are_rejected_where_they_are_or_planned() {
    let started = Instant::now();
    let mut p = Pipeline::new();
    let mut runs = 0;
    for (k, (i, _)) in BARTON.char_indices().enumerate().step_by(7) {
        p.check(&format!("cut at byte {i}"), &BARTON[..i]);
        runs += 1;
        if k % 3 != 0 {
            continue;
        }
        for junk in ["{", "]", ":", "\"", "- ", "\t", "\n  ", "#"] {
            let text = format!("{}{junk}{}", &BARTON[..i], &BARTON[i..]);
            p.check(&format!("{junk:?} inserted at byte {i}"), &text);
            runs += 1;
        }
    }
    let c = &p.counts;
    eprintln!("{runs} mutations in {:.1?}: {c:?}", started.elapsed());
    assert_eq!(c.not_parsed + c.invalid + c.planned, runs);
    assert!(c.not_parsed > 0 && c.invalid > 0 && c.planned > 0, "{c:?}");
    assert!(c.empty > 0 && c.comment > 0, "{c:?}");
}

/// One step of a path into YAML data.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn show(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if s.is_empty() => s.push_str(k),
            Seg::Key(k) => s.push_str(&format!(".{k}")),
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn get<'v>(mut v: &'v Value, path: &[Seg]) -> Option<&'v Value> {
    for seg in path {
        v = match seg {
            Seg::Key(k) => v.get(k)?,
            Seg::Index(i) => v.get(i)?,
        };
    }
    Some(v)
}

/// The paths of every mapping that has a key `zz`.
fn zz_parents(v: &Value, at: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    match v {
        Value::Object(m) => {
            if m.contains_key("zz") {
                out.push(at.clone());
            }
            for (k, v) in m {
                at.push(Seg::Key(k.clone()));
                zz_parents(v, at, out);
                at.pop();
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                at.push(Seg::Index(i));
                zz_parents(v, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

/// The maps whose keys are the user's, not medic's field names: instance tags, and image ids
/// by region. Any key is accepted there; only its value is checked.
fn free_form(path: &[Seg]) -> bool {
    let p = show(path);
    p == "provider.aws.tags"
        || (p.starts_with("amis[") && p.ends_with("].image_ids") && path.len() == 3)
}

/// Where an injected key can land differently from its neighbours, and so gets every variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spot {
    /// Where a key can start: a line's start or end, inside its indentation, after `{`, `,`
    /// or `:` (where a value starts, a nested mapping can).
    KeyStart,
    /// Next to other YAML punctuation or a space.
    Punctuation,
    /// Inside a word, or inside a comment's text: like the positions around it.
    Word,
}

fn spot(line: &str, col: usize) -> Spot {
    let b = line.as_bytes();
    let indent = line.len() - line.trim_start().len();
    let comment = line.trim_start().starts_with('#');
    if col == 0 || col == line.len() || col <= indent || (comment && col == indent + 1) {
        Spot::KeyStart
    } else if comment {
        Spot::Word
    } else if b"{,:".contains(&b[col - 1])
        || (col >= 2 && [&b", "[..], b": "].contains(&&b[col - 2..col]))
    {
        Spot::KeyStart
    } else if b"{}[],:#- ".contains(&b[col - 1]) || b"{}[],:#- ".contains(&b[col]) {
        Spot::Punctuation
    } else {
        Spot::Word
    }
}

#[derive(Debug, Default)]
struct ZzCounts {
    /// `zz` in a mapping medic reads field by field, rejected: by name, at its position, or
    /// after parsing stopped before it (at an earlier error the mutation caused).
    named: usize,
    pointed_at: usize,
    stopped_before: usize,
    /// `zz` a key of a free-form map: accepted as a key.
    free_form: usize,
    /// `zz` made a mapping where medic reads a name or a list item: rejected.
    not_a_mapping: usize,
    /// Accepted, only a tag changed (`team:zz: 1,  platform` is the tag `team:zz`).
    in_a_tag: usize,
}

#[test]
fn an_unknown_key_is_rejected_in_every_mapping_medic_reads_field_by_field() {
    let started = Instant::now();
    let mut p = Pipeline::new();
    let mut z = ZzCounts::default();
    let mut runs = 0;
    let (mut turn, mut sample) = (0usize, 0usize);
    let mut line_start = 0;
    for (n, line) in BARTON.split('\n').enumerate() {
        for col in 0..=line.len() {
            const KEYS: [&str; 3] = ["zz: 1, ", "zz: 1\n", "zz: {a: [1, 2]}, "];
            // Every variant where a key can start; elsewhere one variant in turn, and inside
            // words at one position in 5 (deterministic: the run time stays in tens of seconds).
            let keys: &[&str] = match spot(line, col) {
                Spot::KeyStart => &KEYS,
                Spot::Punctuation => {
                    turn += 1;
                    std::slice::from_ref(&KEYS[turn % 3])
                }
                Spot::Word => {
                    sample += 1;
                    if sample % 5 != 0 {
                        continue;
                    }
                    std::slice::from_ref(&KEYS[sample / 5 % 3])
                }
            };
            let zz = Pos {
                line: n as u64 + 1,
                column: col as u64 + 1,
            };
            for key in keys {
                let at = line_start + col;
                let text = format!("{}{key}{}", &BARTON[..at], &BARTON[at..]);
                let what = format!("{key:?} at {}:{}", zz.line, zz.column);
                runs += 1;
                let (outcome, data) = p.check(&what, &text);
                let diags = match &outcome {
                    Outcome::NotParsed(d) | Outcome::Invalid(d) => d.as_slice(),
                    Outcome::Planned(_) => &[],
                };
                let Some(data) = data else {
                    // Not YAML: rejected, located (checked above), nothing more to see.
                    assert!(!matches!(outcome, Outcome::Planned(_)), "{what}");
                    continue;
                };
                let names_zz = |d: &Diagnostic| {
                    d.message.contains("`zz`") || d.path.split(['.', '[']).any(|s| s == "zz")
                };
                let mut parents = Vec::new();
                zz_parents(&data, &mut Vec::new(), &mut parents);
                for parent in &parents {
                    let was = get(&p.original, parent);
                    let shown = show(parent);
                    if free_form(parent) {
                        assert!(
                            !diags
                                .iter()
                                .any(|d| d.message.contains("unknown field `zz`") || d.pos == zz),
                            "{what}: `zz` is a fine key in {shown}: {diags:#?}"
                        );
                        z.free_form += 1;
                    } else if was.is_some_and(Value::is_object) {
                        // A mapping medic reads field by field (a struct, or the one key that
                        // names an enum variant): `zz` must be rejected.
                        let stopped_before = matches!(outcome, Outcome::NotParsed(_))
                            && diags.last().is_some_and(|d| d.pos.known() && d.pos < zz);
                        if diags.iter().any(names_zz) {
                            z.named += 1;
                        } else if diags.iter().any(|d| d.pos == zz) {
                            z.pointed_at += 1;
                        } else if stopped_before {
                            z.stopped_before += 1;
                        } else {
                            panic!("{what}: `zz` in {shown} not rejected: {outcome:#?}\n{text}");
                        }
                    } else {
                        // `zz: ...` made a mapping where the example has a name or a list.
                        assert!(
                            !matches!(outcome, Outcome::Planned(_)),
                            "{what}: `zz` accepted in {shown}\n{text}"
                        );
                        z.not_a_mapping += 1;
                    }
                }
                if let Outcome::Planned(_) = outcome {
                    // Accepted: exactly when the data is the example's, or only a tag changed.
                    let without_tags = |v: &Value| {
                        let mut v = v.clone();
                        v["provider"]["aws"]["tags"] = Value::Null;
                        v
                    };
                    if data != p.original {
                        assert!(
                            without_tags(&data) == without_tags(&p.original),
                            "{what}: accepted, and not in a comment or a tag: {data:#}"
                        );
                        z.in_a_tag += 1;
                    }
                }
            }
        }
        line_start += line.len() + 1;
    }
    let c = &p.counts;
    eprintln!(
        "{runs} mutations in {:.1?}: {c:?}, {z:?}",
        started.elapsed()
    );
    assert_eq!(c.not_parsed + c.invalid + c.planned, runs);
    assert!(c.not_parsed > 0 && c.invalid > 0 && c.planned > 0, "{c:?}");
    assert_eq!(c.planned, c.comment + z.in_a_tag, "{c:?} {z:?}");
    assert!(
        z.named > 0
            && z.pointed_at > 0
            && z.stopped_before > 0
            && z.free_form > 0
            && z.not_a_mapping > 0
            && z.in_a_tag > 0
            && c.comment > 0,
        "{z:?} {c:?}"
    );
}
