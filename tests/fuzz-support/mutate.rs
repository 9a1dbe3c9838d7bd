//! Bounded fuzzing, shared by the `tests/fuzz.rs` of every crate whose parsers read input from
//! outside medic (each includes this file with `#[path]`).
//!
//! - The corpus: real inputs of each target, in `tests/fuzz-corpus/<target>/` at the workspace
//!   root. Every seed is run as it is, then mutated.
//! - The mutations, as proptest strategies: byte-level ones for any text (flip, set, insert
//!   control characters, NUL and invalid UTF-8, delete, duplicate, truncate, splice two seeds,
//!   very long lines, numbers at their limits) and structure-aware ones for YAML (a scalar
//!   replaced by random text with newlines and quotes, huge or negative numbers, unicode, or
//!   another scalar of the file; a line deleted, duplicated or re-indented; a value nested
//!   deeper than the parser allows; anchors, aliases, tags and directives inserted).
//! - The runner: a bounded number of cases (`PROPTEST_CASES` overrides it,
//!   `PROPTEST_RNG_SEED` fixes the random seed), the number of inputs executed and the time
//!   printed, a panic caught and reported with the input that caused it. A failing case is
//!   shrunk, its seed saved in `<test>.proptest-regressions` next to the test (every later run
//!   replays it first: keep the file in the repository) and the input itself written under
//!   the target directory's `tmp/fuzz-failures/` (add it to the corpus once fixed).

#![allow(dead_code, reason = "each fuzz test uses the part it needs")]

use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::sample::{Index, select};

#[path = "dictionary.rs"]
mod dictionary;
#[path = "runner.rs"]
mod runner;
pub use dictionary::SCALARS;
use dictionary::{NUMBERS, SNIPPETS, SPECIAL, TEXT_CHARS};
#[allow(unused_imports, reason = "each fuzz test uses the part it needs")]
pub use runner::{Run, guard, show};

/// No mutated input grows past this: the parsers refuse (or never get) anything near it, and a
/// bounded run must stay quick.
const MAX_INPUT: usize = 1 << 20;

/// One input of the corpus.
#[derive(Debug, Clone)]
pub struct Seed {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The workspace root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `tests/fuzz-corpus/<target>/`.
pub fn corpus_dir(target: &str) -> PathBuf {
    repo().join("tests/fuzz-corpus").join(target)
}

/// Every file of a target's corpus, by name.
pub fn corpus(target: &str) -> Vec<Seed> {
    let dir = corpus_dir(target);
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()));
    let mut seeds: Vec<Seed> = entries
        .map(|e| e.unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display())))
        .filter(|e| e.path().is_file())
        .map(|e| Seed {
            name: e.file_name().to_string_lossy().into_owned(),
            bytes: std::fs::read(e.path())
                .unwrap_or_else(|err| panic!("{}: {err}", e.path().display())),
        })
        .collect();
    seeds.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!seeds.is_empty(), "corpus {} is empty", dir.display());
    seeds
}

/// One change to an input. Positions are [`Index`]es: a fraction of the input's length at the
/// time the mutation applies, so every mutation applies to every input.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// XOR one byte with `mask`.
    Flip {
        at: Index,
        mask: u8,
    },
    /// Overwrite one byte.
    Set {
        at: Index,
        byte: u8,
    },
    /// Insert bytes: random ones, control characters, NUL, invalid UTF-8, syntax.
    Insert {
        at: Index,
        bytes: Vec<u8>,
    },
    Delete {
        at: Index,
        len: usize,
    },
    /// Copy a range `times` times to another place.
    Duplicate {
        at: Index,
        len: usize,
        to: Index,
        times: usize,
    },
    Truncate {
        at: Index,
    },
    /// Insert a piece of another seed.
    Splice {
        seed: Index,
        from: Index,
        len: usize,
        at: Index,
    },
    /// This input up to `cut`, then another seed from `from` on.
    Join {
        seed: Index,
        cut: Index,
        from: Index,
    },
    /// A very long line of one byte.
    LongLine {
        at: Index,
        byte: u8,
        len: usize,
    },
    /// Replace a run of digits by another number, often at a type's limit.
    Number {
        which: Index,
        value: String,
    },
    /// A YAML-aware change (the input taken as text).
    Yaml(YamlMutation),
}

/// A change to a YAML text that knows its lines and scalars.
#[derive(Debug, Clone)]
pub enum YamlMutation {
    /// Replace a scalar by another: a value, or (`key`) a key or a value.
    Scalar {
        which: Index,
        key: bool,
        value: Scalar,
    },
    /// Replace a value by another scalar of the same file (a machine name where a shard's is
    /// expected, a port twice...).
    CopyScalar {
        from: Index,
        to: Index,
    },
    DeleteLine {
        line: Index,
    },
    DuplicateLine {
        line: Index,
        to: Index,
    },
    /// Indent a line more (positive) or less.
    Indent {
        line: Index,
        delta: i8,
    },
    /// Nest a scalar `depth` levels deep, in flow (`[[x]]`, `{k: {k: x}}`) or block
    /// (`- - x`) style.
    Deepen {
        which: Index,
        depth: usize,
        style: Nest,
    },
    /// Insert a snippet (anchors, aliases, tags, directives, unclosed quotes...) as lines at
    /// the indentation of the line it goes before.
    Snippet {
        line: Index,
        text: &'static str,
    },
}

#[derive(Debug, Clone, Copy)]
pub enum Nest {
    FlowList,
    FlowMap,
    Block,
}

/// A scalar written as YAML would: plain, quoted, or as a block.
#[derive(Debug, Clone)]
pub enum Scalar {
    Plain(String),
    Double(String),
    Single(String),
    Block(String),
}

fn special_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => select(SPECIAL).prop_map(<[u8]>::to_vec),
        2 => prop::collection::vec(any::<u8>(), 1..8),
        1 => prop::collection::vec(select(SPECIAL), 2..6).prop_map(|v| v.concat()),
    ]
}

/// A number as text, often at a type's limit.
pub fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(NUMBERS).prop_map(str::to_owned),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<u128>().prop_map(|n| n.to_string()),
    ]
}

/// Byte-level mutations, for any input.
pub fn byte_mutation() -> BoxedStrategy<Mutation> {
    let at = any::<Index>;
    prop_oneof![
        2 => (at(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        1 => (at(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        4 => (at(), special_bytes()).prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        2 => (at(), 1..64usize).prop_map(|(at, len)| Mutation::Delete { at, len }),
        2 => (at(), 1..256usize, at(), 1..4usize)
            .prop_map(|(at, len, to, times)| Mutation::Duplicate { at, len, to, times }),
        1 => at().prop_map(|at| Mutation::Truncate { at }),
        1 => (at(), at(), 1..512usize, at())
            .prop_map(|(seed, from, len, at)| Mutation::Splice { seed, from, len, at }),
        1 => (at(), at(), at()).prop_map(|(seed, cut, from)| Mutation::Join { seed, cut, from }),
        1 => (at(), select(&b"a0 :#\"'{[,\t\xff"[..]), 1..65_536usize)
            .prop_map(|(at, byte, len)| Mutation::LongLine { at, byte, len }),
        2 => (at(), number()).prop_map(|(which, value)| Mutation::Number { which, value }),
    ]
    .boxed()
}

/// Random text: YAML's structure, quotes, escapes, line breaks, control characters, unicode.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(select(TEXT_CHARS), 0..40)
            .prop_map(|c| c.into_iter().collect::<String>()),
        1 => prop::collection::vec(any::<char>(), 0..20)
            .prop_map(|c| c.into_iter().collect::<String>()),
    ]
}

fn scalar() -> impl Strategy<Value = Scalar> {
    let any_text = prop_oneof![
        3 => text(),
        3 => select(SCALARS).prop_map(str::to_owned),
        2 => number(),
    ];
    (0..8u8, any_text).prop_map(|(style, s)| match style {
        0..=3 => Scalar::Plain(s),
        4 | 5 => Scalar::Double(s),
        6 => Scalar::Single(s),
        _ => Scalar::Block(s),
    })
}

/// YAML-aware mutations.
pub fn yaml_mutation() -> BoxedStrategy<Mutation> {
    let at = any::<Index>;
    prop_oneof![
        5 => (at(), prop::bool::weighted(0.25), scalar())
            .prop_map(|(which, key, value)| YamlMutation::Scalar { which, key, value }),
        2 => (at(), at()).prop_map(|(from, to)| YamlMutation::CopyScalar { from, to }),
        2 => at().prop_map(|line| YamlMutation::DeleteLine { line }),
        2 => (at(), at()).prop_map(|(line, to)| YamlMutation::DuplicateLine { line, to }),
        1 => (at(), -4..=4i8).prop_map(|(line, delta)| YamlMutation::Indent { line, delta }),
        1 => (
            at(),
            prop_oneof![1..8usize, 60..70usize, 100..300usize],
            prop_oneof![Just(Nest::FlowList), Just(Nest::FlowMap), Just(Nest::Block)]
        )
            .prop_map(|(which, depth, style)| YamlMutation::Deepen { which, depth, style }),
        1 => (at(), select(SNIPPETS)).prop_map(|(line, text)| YamlMutation::Snippet { line, text }),
    ]
    .prop_map(Mutation::Yaml)
    .boxed()
}

/// A corpus seed and what is done to it.
#[derive(Debug, Clone)]
pub struct Case {
    pub seed: Index,
    pub mutations: Vec<Mutation>,
}

/// A seed with 1 to 8 mutations, most often one (an input with many is rarely parsed past its
/// first error); YAML-aware ones too if `yaml`.
pub fn case(yaml: bool) -> impl Strategy<Value = Case> {
    let one = if yaml {
        prop_oneof![1 => byte_mutation(), 2 => yaml_mutation()].boxed()
    } else {
        byte_mutation()
    };
    let mutations = prop_oneof![
        4 => prop::collection::vec(one.clone(), 1..=1),
        2 => prop::collection::vec(one.clone(), 2..=3),
        1 => prop::collection::vec(one, 4..=8),
    ];
    (any::<Index>(), mutations).prop_map(|(seed, mutations)| Case { seed, mutations })
}

/// A seed with 1 to 3 changes of its values or lines that mostly keep it YAML of the same
/// shape: values replaced by ones that mean something to YAML or medic, by numbers at their
/// limits or by other values of the file; lines deleted or duplicated. Inputs that parse, for
/// what comes after the parser.
pub fn value_case() -> impl Strategy<Value = Case> {
    let at = any::<Index>;
    let value = prop_oneof![
        2 => select(SCALARS).prop_map(str::to_owned),
        1 => number(),
    ];
    let one = prop_oneof![
        3 => (at(), value).prop_map(|(which, v)| YamlMutation::Scalar {
            which,
            key: false,
            value: Scalar::Plain(v),
        }),
        3 => (at(), at()).prop_map(|(from, to)| YamlMutation::CopyScalar { from, to }),
        2 => at().prop_map(|line| YamlMutation::DeleteLine { line }),
        1 => (at(), at()).prop_map(|(line, to)| YamlMutation::DuplicateLine { line, to }),
    ]
    .prop_map(Mutation::Yaml);
    (any::<Index>(), prop::collection::vec(one, 1..=3))
        .prop_map(|(seed, mutations)| Case { seed, mutations })
}

/// A seed with 1 to 4 changes of its lines for any line-based text (a journal, a reply):
/// lines deleted or copied elsewhere, the text cut, numbers at their limits.
pub fn line_case() -> impl Strategy<Value = Case> {
    let at = any::<Index>;
    let one = prop_oneof![
        2 => at().prop_map(|line| Mutation::Yaml(YamlMutation::DeleteLine { line })),
        2 => (at(), at())
            .prop_map(|(line, to)| Mutation::Yaml(YamlMutation::DuplicateLine { line, to })),
        1 => at().prop_map(|at| Mutation::Truncate { at }),
        2 => (at(), number()).prop_map(|(which, value)| Mutation::Number { which, value }),
    ];
    (any::<Index>(), prop::collection::vec(one, 1..=4))
        .prop_map(|(seed, mutations)| Case { seed, mutations })
}

/// The input a case makes of the corpus.
pub fn apply(seeds: &[Seed], case: &Case) -> Vec<u8> {
    let mut bytes = case.seed.get(seeds).bytes.clone();
    for m in &case.mutations {
        mutate(&mut bytes, seeds, m);
        bytes.truncate(MAX_INPUT);
    }
    bytes
}

/// A position in `0..=len`.
fn pos(i: &Index, len: usize) -> usize {
    i.index(len + 1)
}

fn range(at: &Index, len: usize, total: usize) -> Range<usize> {
    let start = pos(at, total);
    start..(start + len).min(total)
}

fn mutate(b: &mut Vec<u8>, seeds: &[Seed], m: &Mutation) {
    match m {
        Mutation::Flip { at, mask } if !b.is_empty() => {
            let i = at.index(b.len());
            b[i] ^= mask;
        }
        Mutation::Set { at, byte } if !b.is_empty() => {
            let i = at.index(b.len());
            b[i] = *byte;
        }
        Mutation::Flip { .. } | Mutation::Set { .. } => {}
        Mutation::Insert { at, bytes } => {
            let i = pos(at, b.len());
            b.splice(i..i, bytes.iter().copied());
        }
        Mutation::Delete { at, len } => {
            let r = range(at, *len, b.len());
            b.drain(r);
        }
        Mutation::Duplicate { at, len, to, times } => {
            let r = range(at, *len, b.len());
            let piece = b[r].repeat(*times);
            let i = pos(to, b.len());
            b.splice(i..i, piece);
        }
        Mutation::Truncate { at } => b.truncate(pos(at, b.len())),
        Mutation::Splice {
            seed,
            from,
            len,
            at,
        } => {
            let other = &seed.get(seeds).bytes;
            let r = range(from, *len, other.len());
            let i = pos(at, b.len());
            b.splice(i..i, other[r].iter().copied());
        }
        Mutation::Join { seed, cut, from } => {
            let other = &seed.get(seeds).bytes;
            b.truncate(pos(cut, b.len()));
            b.extend_from_slice(&other[pos(from, other.len())..]);
        }
        Mutation::LongLine { at, byte, len } => {
            let i = pos(at, b.len());
            b.splice(i..i, std::iter::repeat_n(*byte, *len));
        }
        Mutation::Number { which, value } => {
            let runs = digit_runs(b);
            if !runs.is_empty() {
                let r = which.get(&runs).clone();
                b.splice(r, value.bytes());
            }
        }
        Mutation::Yaml(y) => {
            // Valid UTF-8 stays exact; a byte-level mutation may have broken it: then the text
            // is taken as a reader that replaces bad bytes would take it.
            let text = String::from_utf8_lossy(b).into_owned();
            *b = mutate_yaml(&text, y).into_bytes();
        }
    }
}

/// Runs of ASCII digits, with a leading `-`.
fn digit_runs(b: &[u8]) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = if i > 0 && b[i - 1] == b'-' { i - 1 } else { i };
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            runs.push(start..i);
        } else {
            i += 1;
        }
    }
    runs
}

/// Where each line of `text` starts and ends (without its `\n`).
fn lines(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if c == '\n' {
            out.push(start..i);
            start = i + 1;
        }
    }
    out.push(start..text.len());
    out
}

/// The scalars of a YAML text, roughly as a reader sees them: what lies between flow
/// indicators, `: `, `- ` and comments, trimmed (a quoted scalar whole); each with whether it
/// is a key (followed by `:`).
pub fn scalars(text: &str) -> Vec<(Range<usize>, bool)> {
    let mut out = Vec::new();
    for line in lines(text) {
        let l = &text[line.clone()];
        let mut start: Option<usize> = None;
        let mut end = 0;
        let mut quote: Option<char> = None;
        let mut prev_space = true;
        let mut flush = |start: &mut Option<usize>, end: usize, key: bool| {
            if let Some(s) = start.take()
                && end > s
            {
                out.push((line.start + s..line.start + end, key));
            }
        };
        let mut chars = l.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            let next_space = chars.peek().is_none_or(|(_, n)| n.is_whitespace());
            if let Some(q) = quote {
                if c == q {
                    quote = None;
                    end = i + c.len_utf8();
                }
                continue;
            }
            match c {
                '"' | '\'' if start.is_none() => {
                    start = Some(i);
                    quote = Some(c);
                }
                '#' if prev_space => {
                    flush(&mut start, end, false);
                    break;
                }
                '{' | '}' | '[' | ']' | ',' => flush(&mut start, end, false),
                ':' if next_space => flush(&mut start, end, true),
                '-' | '?' if start.is_none() && next_space => {}
                c if c.is_whitespace() => {}
                _ => {
                    if start.is_none() {
                        start = Some(i);
                    }
                    end = i + c.len_utf8();
                }
            }
            prev_space = c.is_whitespace();
        }
        if quote.is_some() {
            end = l.len();
        }
        flush(&mut start, end, false);
    }
    out
}

fn indent_of(text: &str, at: usize) -> usize {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    text[start..].len() - text[start..].trim_start_matches(' ').len()
}

/// A scalar written at `indent` (the indentation of its line).
fn render_scalar(s: &Scalar, indent: usize) -> String {
    match s {
        Scalar::Plain(s) => s.clone(),
        Scalar::Double(s) => {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    c if c.is_control() && (c as u32) < 0x100 => {
                        let _ = write!(out, "\\x{:02x}", c as u32);
                    }
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        Scalar::Single(s) => format!("'{}'", s.replace('\'', "''")),
        Scalar::Block(s) => {
            let pad = " ".repeat(indent + 2);
            let mut out = String::from("|-");
            for l in s.split('\n') {
                out.push('\n');
                out.push_str(&pad);
                out.push_str(l);
            }
            out
        }
    }
}

fn mutate_yaml(text: &str, m: &YamlMutation) -> String {
    let mut t = text.to_owned();
    match m {
        YamlMutation::Scalar { which, key, value } => {
            let spans: Vec<Range<usize>> = scalars(text)
                .into_iter()
                .filter(|(_, k)| *key || !k)
                .map(|(r, _)| r)
                .collect();
            if !spans.is_empty() {
                let r = which.get(&spans).clone();
                let v = render_scalar(value, indent_of(text, r.start));
                t.replace_range(r, &v);
            }
        }
        YamlMutation::CopyScalar { from, to } => {
            let spans = scalars(text);
            let values: Vec<&Range<usize>> =
                spans.iter().filter(|(_, k)| !k).map(|(r, _)| r).collect();
            if !values.is_empty() {
                let v = text[from.get(&spans).0.clone()].to_owned();
                t.replace_range((*to.get(&values)).clone(), &v);
            }
        }
        YamlMutation::DeleteLine { line } => {
            let ls = lines(text);
            let r = line.get(&ls).clone();
            let end = (r.end + 1).min(text.len());
            t.replace_range(r.start..end, "");
        }
        YamlMutation::DuplicateLine { line, to } => {
            let ls = lines(text);
            let l = format!("{}\n", &text[line.get(&ls).clone()]);
            t.insert_str(to.get(&ls).start, &l);
        }
        YamlMutation::Indent { line, delta } => {
            let ls = lines(text);
            let r = line.get(&ls).clone();
            if *delta >= 0 {
                t.insert_str(r.start, &" ".repeat(*delta as usize));
            } else {
                let l = &text[r.clone()];
                let spaces =
                    (l.len() - l.trim_start_matches(' ').len()).min(delta.unsigned_abs() as usize);
                t.replace_range(r.start..r.start + spaces, "");
            }
        }
        YamlMutation::Deepen {
            which,
            depth,
            style,
        } => {
            let spans: Vec<Range<usize>> = scalars(text).into_iter().map(|(r, _)| r).collect();
            if !spans.is_empty() {
                let r = which.get(&spans).clone();
                let v = &text[r.clone()];
                let nested = match style {
                    Nest::FlowList => format!("{}{v}{}", "[".repeat(*depth), "]".repeat(*depth)),
                    Nest::FlowMap => format!("{}{v}{}", "{k: ".repeat(*depth), "}".repeat(*depth)),
                    Nest::Block => format!(
                        "\n{}{}{v}",
                        " ".repeat(indent_of(text, r.start) + 2),
                        "- ".repeat(*depth)
                    ),
                };
                t.replace_range(r, &nested);
            }
        }
        YamlMutation::Snippet {
            line,
            text: snippet,
        } => {
            let ls = lines(text);
            let r = line.get(&ls).clone();
            let pad = " ".repeat(indent_of(text, r.start));
            let mut s = String::new();
            for l in snippet.split('\n') {
                s.push_str(&pad);
                s.push_str(l);
                s.push('\n');
            }
            t.insert_str(r.start, &s);
        }
    }
    t
}
