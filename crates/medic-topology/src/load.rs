//! Reading YAML files. This module is the only place that knows the parser is serde-saphyr.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use std::borrow::Cow;

use serde_saphyr::{Error, MessageFormatter, UserMessageFormatter};

use crate::diag::{Diagnostic, Pos, Severity};

/// No topology, playbook or AMI definition is anywhere near this size; a larger file is a
/// mistake (a log, a dump) and is refused before it is read.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// What parsing a file gave: the value, if one could be built, and every problem found.
///
/// Unknown fields do not stop parsing: each is reported and the value is built without it, so
/// the caller can go on to validate the rest. Any other parse-level problem (malformed YAML,
/// a duplicate key, a wrong type, an unknown variant) ends parsing with `value: None`.
#[derive(Debug)]
pub struct Parsed<T> {
    pub value: Option<T>,
    pub diagnostics: Vec<Diagnostic>,
}

impl<T> Parsed<T> {
    fn failed(d: Diagnostic) -> Self {
        Parsed {
            value: None,
            diagnostics: vec![d],
        }
    }

    /// The value if the file had no problem at all.
    pub fn into_result(self) -> Result<T, Vec<Diagnostic>> {
        match self.value {
            Some(v) if self.diagnostics.is_empty() => Ok(v),
            _ => Err(self.diagnostics),
        }
    }
}

/// Reads and parses one YAML file into `T`: unreadable, too large, empty or non-UTF-8 files,
/// malformed YAML, duplicate keys, wrong types and unknown fields are all located diagnostics.
pub fn parse_file<T: DeserializeOwned>(path: &Path, what: &str) -> Parsed<T> {
    match read_limited(path) {
        Ok(text) => parse_str(path, &text, what),
        Err(d) => Parsed::failed(d),
    }
}

fn read_limited(path: &Path) -> Result<String, Diagnostic> {
    let fail = |message: String| Diagnostic {
        severity: Severity::Error,
        file: path.to_path_buf(),
        pos: Pos::default(),
        path: String::new(),
        message,
    };
    let file = fs::File::open(path).map_err(|e| fail(format!("cannot open the file: {e}")))?;
    let size = file
        .metadata()
        .map_err(|e| fail(format!("cannot read the file: {e}")))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(fail(format!(
            "the file is {} bytes; expected at most {} bytes (is this the right file?)",
            size, MAX_FILE_BYTES
        )));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // `take` guards against a file that grows while it is read.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read the file: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(fail(format!(
            "the file is larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        fail(format!(
            "the file is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// At most this many unknown fields are collected from one file before giving up.
const MAX_UNKNOWN_FIELDS: usize = 100;

/// Parses YAML text that came from `path`.
pub fn parse_str<T: DeserializeOwned>(path: &Path, text: &str, what: &str) -> Parsed<T> {
    let blank = text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
    });
    if blank {
        return Parsed::failed(Diagnostic {
            severity: Severity::Error,
            file: path.to_path_buf(),
            pos: Pos::default(),
            path: String::new(),
            message: format!("the file is empty; expected {what}"),
        });
    }
    let mut diagnostics = Vec::new();
    let mut lines: Vec<Vec<char>> = text.split('\n').map(|l| l.chars().collect()).collect();
    // Lines blanked so far: an error there, or just after, is an artifact of the blanking.
    let mut blanked: Vec<(usize, usize)> = Vec::new();
    let mut current = text.to_owned();
    loop {
        let err = match serde_saphyr::from_str::<T>(&current) {
            Ok(value) => {
                return Parsed {
                    value: Some(value),
                    diagnostics,
                };
            }
            Err(e) => e,
        };
        let pos = err.location().map(Pos::from).unwrap_or_default();
        let unknown_field = is_unknown_field(&err);
        // An unknown field is always real: blanking only removes text. Another error in or
        // just after a blanked entry may be an artifact of the blanking.
        let artifact = !unknown_field
            && blanked
                .iter()
                .any(|(a, b)| pos.line as usize >= *a && pos.line as usize <= b + 1);
        if artifact {
            // What we removed left the text unparsable here; the unknown fields already found
            // are real, and anything else will show once they are fixed.
            return Parsed {
                value: None,
                diagnostics,
            };
        }
        diagnostics.push(Diagnostic {
            severity: Severity::Error,
            file: path.to_path_buf(),
            pos,
            path: String::new(),
            // One line per diagnostic: no control characters from the input reach the terminal.
            message: OperatorMessages
                .format_message(&err)
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect(),
        });
        if !unknown_field || diagnostics.len() >= MAX_UNKNOWN_FIELDS || !pos.known() {
            return Parsed {
                value: None,
                diagnostics,
            };
        }
        match blank_entry(&mut lines, pos.line as usize - 1, pos.column as usize - 1) {
            Some((a, b)) => blanked.push((a + 1, b + 1)),
            None => {
                return Parsed {
                    value: None,
                    diagnostics,
                };
            }
        }
        current = lines
            .iter()
            .map(|l| l.iter().collect::<String>())
            .collect::<Vec<_>>()
            .join("\n");
    }
}

fn is_unknown_field(mut err: &Error) -> bool {
    while let Error::AliasError { error, .. } | Error::WithSnippet { error, .. } = err {
        err = error;
    }
    matches!(err, Error::SerdeUnknownField { .. })
}

/// Replaces the mapping entry whose key starts at `line`, `col` (0-based, in characters) with
/// spaces, keeping every other character where it was, so later positions stay true. Returns
/// the 0-based lines it touched, or `None` if it cannot tell where the entry ends.
fn blank_entry(lines: &mut [Vec<char>], line: usize, col: usize) -> Option<(usize, usize)> {
    if line >= lines.len() || col >= lines[line].len() {
        return None;
    }
    // In a flow mapping the key follows `{` or `,`; in a block mapping it starts its line or
    // follows `- `.
    // Look back across lines: a flow mapping may continue on the next line.
    let before = lines[..=line]
        .iter()
        .enumerate()
        .rev()
        .flat_map(|(j, l)| {
            let end = if j == line { col } else { l.len() };
            l[..end].iter().rev()
        })
        .find(|c| !c.is_whitespace())
        .copied();
    if matches!(before, Some('{') | Some(',')) {
        return blank_flow_entry(lines, line, col, before == Some(','));
    }
    for c in &mut lines[line][col..] {
        *c = ' ';
    }
    let mut last = line;
    for (j, l) in lines.iter_mut().enumerate().skip(line + 1) {
        let indent = l.iter().position(|c| !c.is_whitespace());
        match indent {
            None => continue, // blank line: part of whatever comes next
            Some(i) if i > col || l[i] == '#' => {
                for c in l.iter_mut() {
                    *c = ' ';
                }
                last = j;
            }
            Some(_) => break,
        }
    }
    Some((line, last))
}

fn blank_flow_entry(
    lines: &mut [Vec<char>],
    line: usize,
    col: usize,
    after_comma: bool,
) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let (mut j, mut i) = (line, col);
    // Find where the entry ends: a `,` or a closing bracket at depth 0.
    let (end_line, end_col, comma) = loop {
        if j >= lines.len() {
            return None;
        }
        if i >= lines[j].len() {
            j += 1;
            i = 0;
            continue;
        }
        let c = lines[j][i];
        match (quote, c) {
            (Some('"'), '\\') => i += 1,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') if depth == 0 => break (j, i, false),
            (None, ']' | '}') => depth -= 1,
            (None, ',') if depth == 0 => break (j, i, true),
            _ => {}
        }
        i += 1;
    };
    // Blank from the key to the end (the comma included), across lines if need be.
    let stop = if comma {
        (end_line, end_col + 1)
    } else {
        (end_line, end_col)
    };
    let (mut j, mut i) = (line, col);
    while (j, i) < stop {
        if i >= lines[j].len() {
            j += 1;
            i = 0;
            continue;
        }
        lines[j][i] = ' ';
        i += 1;
    }
    // The last entry of a mapping: its leading comma goes too, or `{a: 1, }` would remain.
    if !comma && after_comma {
        let (mut pj, mut pi) = (line, col);
        loop {
            if pi == 0 {
                if pj == 0 {
                    break;
                }
                pj -= 1;
                pi = lines[pj].len();
                continue;
            }
            pi -= 1;
            match lines[pj][pi] {
                ',' => {
                    lines[pj][pi] = ' ';
                    break;
                }
                c if c.is_whitespace() => {}
                _ => break,
            }
        }
    }
    Some((line, end_line))
}

/// Resolves a path written in a file relative to that file's directory.
pub fn relative_to(file: &Path, written: &Path) -> PathBuf {
    if written.is_absolute() {
        written.to_path_buf()
    } else {
        file.parent().unwrap_or(Path::new(".")).join(written)
    }
}

/// The parser's messages, with the terse ones said the way an operator needs them.
struct OperatorMessages;

impl MessageFormatter for OperatorMessages {
    fn format_message<'a>(&self, mut err: &'a Error) -> Cow<'a, str> {
        while let Error::AliasError { error, .. } | Error::WithSnippet { error, .. } = err {
            err = error;
        }
        match err {
            Error::InvalidScalar { ty, .. } => Cow::Owned(match ty.to_string().as_str() {
                "u8" => "expected a whole number from 0 to 255".to_owned(),
                "u16" => "expected a whole number from 0 to 65535".to_owned(),
                "u32" => "expected a whole number from 0 to 4294967295".to_owned(),
                "u64" | "usize" => "expected a whole number, 0 or more".to_owned(),
                "i8" | "i16" | "i32" | "i64" | "isize" => "expected a whole number".to_owned(),
                "f32" | "f64" => "expected a number".to_owned(),
                "bool" => "expected true or false".to_owned(),
                other => format!("expected a value of type {other}"),
            }),
            Error::Unexpected { expected, .. } => Cow::Owned(match expected.to_string().as_str() {
                "string scalar" => "expected a single value, not a list or a mapping".to_owned(),
                "sequence start" => {
                    "expected a list: [a, b], or lines starting with '- '".to_owned()
                }
                "mapping start" => {
                    "expected a mapping: `key: value` lines or {key: value}".to_owned()
                }
                other => format!("expected {other}"),
            }),
            other => {
                let text = UserMessageFormatter.format_message(other);
                // std's address parsers say what failed, not what is expected.
                match text.as_ref() {
                    "invalid socket address syntax" => Cow::Borrowed(
                        "not an address with a port; expected IP:PORT, like 127.0.0.1:7600",
                    ),
                    "invalid IP address syntax" => {
                        Cow::Borrowed("not an IP address; expected one like 10.0.1.11")
                    }
                    _ => text,
                }
            }
        }
    }
}
