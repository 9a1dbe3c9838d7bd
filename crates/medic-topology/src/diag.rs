//! Diagnostics: one located message per problem, printed as
//! `FILE:LINE:COL: path.to.field: what is wrong, what is expected`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_saphyr::Location;

/// How bad a problem is. Errors make a file unusable; warnings are printed and the file is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A line and column in a file, both 1-based. Line 0 means "no position known".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

impl Pos {
    pub fn known(self) -> bool {
        self.line > 0
    }
}

impl From<Location> for Pos {
    fn from(l: Location) -> Self {
        Pos {
            line: l.line(),
            column: l.column(),
        }
    }
}

/// One problem found in one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    pub pos: Pos,
    /// Dotted path of the field, `machines[2].role`; empty for the whole document.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.pos.known() {
            write!(f, ":{}:{}", self.pos.line, self.pos.column)?;
        }
        f.write_str(": ")?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Collects diagnostics for one file. Validation passes push into it and never stop early.
#[derive(Debug)]
pub struct Diagnostics {
    file: PathBuf,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new(file: &Path) -> Self {
        Diagnostics {
            file: file.to_path_buf(),
            items: Vec::new(),
        }
    }

    pub fn error(
        &mut self,
        pos: impl Into<Pos>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.push(Severity::Error, pos.into(), path.into(), message.into());
    }

    pub fn warning(
        &mut self,
        pos: impl Into<Pos>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.push(Severity::Warning, pos.into(), path.into(), message.into());
    }

    fn push(&mut self, severity: Severity, pos: Pos, path: String, message: String) {
        self.items.push(Diagnostic {
            severity,
            file: self.file.clone(),
            pos,
            path,
            message,
        });
    }

    pub fn extend(&mut self, other: Vec<Diagnostic>) {
        self.items.extend(other);
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// The diagnostics in file order (then by path), so output is stable whatever order the
    /// checks ran in.
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by(|a, b| {
            (&a.file, a.pos, a.severity, &a.path, &a.message)
                .cmp(&(&b.file, b.pos, b.severity, &b.path, &b.message))
        });
        self.items.dedup();
        self.items
    }
}
