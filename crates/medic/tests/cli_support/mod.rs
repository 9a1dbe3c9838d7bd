//! The `medic` binary run as an operator runs it, from the repository root, for the tests that
//! need no lab (cli.rs, import_monit.rs, schema.rs, prometheus.rs).

#![allow(
    clippy::unwrap_used,
    dead_code,
    reason = "a test that cannot set up should fail loudly; each test binary uses a part of this"
)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../..")
    .canonicalize()
    .unwrap()
}

/// Runs medic in the repository root, so paths in messages are the short relative ones.
pub fn medic(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
