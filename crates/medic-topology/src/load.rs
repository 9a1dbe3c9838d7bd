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

/// Reads and parses one YAML file into `T`. Every failure comes back as one located diagnostic:
/// unreadable, too large, empty, malformed YAML, duplicate keys, wrong types, unknown fields.
pub fn parse_file<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T, Diagnostic> {
    let text = read_limited(path)?;
    parse_str(path, &text, what)
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

/// Parses YAML text that came from `path`.
pub fn parse_str<T: DeserializeOwned>(
    path: &Path,
    text: &str,
    what: &str,
) -> Result<T, Diagnostic> {
    let blank = text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
    });
    if blank {
        return Err(Diagnostic {
            severity: Severity::Error,
            file: path.to_path_buf(),
            pos: Pos::default(),
            path: String::new(),
            message: format!("the file is empty; expected {what}"),
        });
    }
    serde_saphyr::from_str::<T>(text).map_err(|e| {
        let pos = e.location().map(Pos::from).unwrap_or_default();
        let message = OperatorMessages.format_message(&e).into_owned();
        Diagnostic {
            severity: Severity::Error,
            file: path.to_path_buf(),
            pos,
            path: String::new(),
            // One line per diagnostic: no control characters from the input reach the terminal.
            message: message
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect(),
        }
    })
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
