//! Reading YAML files. This module is the only place that knows the parser is serde-saphyr.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_saphyr::{MessageFormatter, UserMessageFormatter};

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
        let message = UserMessageFormatter
            .format_message(e.without_snippet())
            .into_owned();
        Diagnostic {
            severity: Severity::Error,
            file: path.to_path_buf(),
            pos,
            path: String::new(),
            message: message.escape_debug().to_string(),
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
