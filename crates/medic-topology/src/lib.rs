//! medic's topology: the YAML file that describes one deployment.
//!
//! [`load_topology`] is the one entry point: it reads the file, parses it (serde-saphyr, kept
//! behind this crate), checks everything ([`validate::validate`]) and loads the AMI definitions
//! the file names.
//!
//! # Guarantees
//! - Pure apart from reading the files it is given: no network, no clock.
//! - Never panics on input. Parse-level problems (malformed YAML, duplicate keys, a wrong type,
//!   an unknown field) stop parsing and are reported once, located by the parser. Every
//!   semantic problem (unknown references, duplicate names, port clashes, impossible checks,
//!   ...) is reported together, each as `FILE:LINE:COL: path.to.field: what is wrong, what is
//!   expected`.

pub mod ami;
pub mod diag;
pub mod duration;
pub mod load;
pub mod model;
pub mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use ami::AmiDefinition;
pub use diag::{Diagnostic, Diagnostics, Severity};
pub use model::*;

/// A topology that passed validation, with what it references.
#[derive(Debug, Clone)]
pub struct LoadedTopology {
    pub path: PathBuf,
    pub topology: Topology,
    /// AMI definitions by AMI name.
    pub amis: BTreeMap<String, AmiDefinition>,
    /// Warnings: printed, not fatal.
    pub warnings: Vec<Diagnostic>,
}

impl LoadedTopology {
    /// The playbook directory, resolved against the topology file's directory.
    pub fn playbook_dir(&self) -> PathBuf {
        load::relative_to(&self.path, &self.topology.playbooks.value)
    }
}

/// Why a topology could not be used: every error found, warnings included for context.
#[derive(Debug, thiserror::Error)]
pub struct InvalidTopology {
    pub diagnostics: Vec<Diagnostic>,
}

impl InvalidTopology {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }
}

impl fmt::Display for InvalidTopology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors().count();
        write!(
            f,
            "{n} error{} in the topology",
            if n == 1 { "" } else { "s" }
        )
    }
}

/// Reads, parses and validates a topology file and the AMI definitions it names.
pub fn load_topology(path: &Path) -> Result<LoadedTopology, InvalidTopology> {
    let topology: Topology =
        load::parse_file(path, "a topology (see docs/topology.md)").map_err(|d| {
            InvalidTopology {
                diagnostics: vec![d],
            }
        })?;
    let mut d = Diagnostics::new(path);
    validate::validate(&topology, &mut d);
    let mut diagnostics = d.into_sorted();

    let mut amis = BTreeMap::new();
    for (i, ami) in topology.amis.iter().enumerate() {
        let def_path = load::relative_to(path, &ami.value.definition.value);
        match load::parse_file::<AmiDefinition>(
            &def_path,
            "an AMI definition (see docs/topology.md)",
        ) {
            Err(mut e) => {
                if !def_path.exists() {
                    // Point at the field that names the missing file, not at the file itself.
                    e = Diagnostic {
                        severity: Severity::Error,
                        file: path.to_path_buf(),
                        pos: ami.value.definition.referenced.into(),
                        path: format!("amis[{i}].definition"),
                        message: format!(
                            "no file {}; expected an AMI definition (amis/*.yaml)",
                            def_path.display()
                        ),
                    };
                }
                diagnostics.push(e);
            }
            Ok(def) => {
                let mut dd = Diagnostics::new(&def_path);
                def.validate(&mut dd);
                if def.name.value != ami.value.name.value {
                    dd.error(
                        def.name.referenced,
                        "name",
                        format!(
                            "the definition is named `{}` but the topology uses it as `{}`; expected the same name",
                            def.name.value, ami.value.name.value
                        ),
                    );
                }
                diagnostics.extend(dd.into_sorted());
                amis.insert(ami.value.name.value.clone(), def);
            }
        }
    }

    diagnostics.sort_by(|a, b| (&a.file, a.pos, &a.path).cmp(&(&b.file, b.pos, &b.path)));
    if diagnostics.iter().any(|d| d.severity == Severity::Error) {
        return Err(InvalidTopology { diagnostics });
    }
    Ok(LoadedTopology {
        path: path.to_path_buf(),
        topology,
        amis,
        warnings: diagnostics,
    })
}

#[cfg(test)]
mod tests {
    //! Parse-level failures: each one clear, located where the parser knows, never a panic.
    use std::io::Write;
    use std::path::PathBuf;

    use super::*;

    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, content: &[u8]) -> Self {
            let dir = std::env::temp_dir().join(format!("medic-topology-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(name);
            std::fs::File::create(&path)
                .unwrap()
                .write_all(content)
                .unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn only_error(name: &str, content: &[u8]) -> String {
        let f = TempFile::new(name, content);
        let err = load_topology(&f.0).unwrap_err();
        assert_eq!(err.diagnostics.len(), 1, "{:?}", err.diagnostics);
        let prefix = format!("{}", f.0.display());
        err.diagnostics[0].to_string().replacen(&prefix, "F", 1)
    }

    const MINIMAL: &str = "name: t\nprovider: static\nmachines: []\nshards: []\nproxies: {machines: [], runtime_api: {port: 1}, frontends: []}\n";

    #[test]
    fn malformed_yaml() {
        assert_eq!(
            only_error("a.yaml", b"name: t\nprovider: static\nmachines: [\n"),
            "F:3:11: unclosed bracket '['"
        );
        assert_eq!(
            only_error("a2.yaml", b"name: t\n\tprovider: static\n"),
            "F:1:7: while scanning a plain scalar, found a tab"
        );
    }

    #[test]
    fn empty_and_comment_only_files() {
        assert_eq!(
            only_error("b.yaml", b""),
            "F: the file is empty; expected a topology (see docs/topology.md)"
        );
        assert_eq!(
            only_error("c.yaml", b"# nothing\n\n---\n"),
            "F: the file is empty; expected a topology (see docs/topology.md)"
        );
    }

    #[test]
    fn a_huge_file_is_refused_before_it_is_read() {
        let big = vec![b'#'; 50 * 1024 * 1024];
        assert_eq!(
            only_error("d.yaml", &big),
            "F: the file is 52428800 bytes; expected at most 4194304 bytes (is this the right file?)"
        );
    }

    #[test]
    fn duplicate_keys() {
        let text = MINIMAL.replace("name: t\n", "name: t\nname: u\n");
        let e = only_error("e.yaml", text.as_bytes());
        assert_eq!(e, "F:2:1: duplicate mapping key `name` is not allowed here");
    }

    #[test]
    fn wrong_types() {
        let text = MINIMAL.replace("runtime_api: {port: 1}", "runtime_api: {port: lots}");
        let e = only_error("f.yaml", text.as_bytes());
        assert_eq!(e, "F:5:45: expected a whole number from 0 to 65535");
        let text = MINIMAL.replace("name: t", "name: [t]");
        assert_eq!(
            only_error("f2.yaml", text.as_bytes()),
            "F:1:7: expected a single value, not a list or a mapping"
        );
        let text = MINIMAL.replace("machines: []", "machines: redis1");
        assert_eq!(
            only_error("f3.yaml", text.as_bytes()),
            "F:3:11: expected a list: [a, b], or lines starting with '- '"
        );
        let text = MINIMAL.replace(
            "machines: []\nshards",
            "machines: []\ncontroller: {listen: nowhere}\nshards",
        );
        let e = only_error("g.yaml", text.as_bytes());
        assert_eq!(
            e,
            "F:4:22: not an address with a port; expected IP:PORT, like 127.0.0.1:7600"
        );
    }

    #[test]
    fn unknown_fields_and_variants() {
        let text = MINIMAL.replace("name: t\n", "name: t\nnmae: u\n");
        let e = only_error("h.yaml", text.as_bytes());
        assert!(
            e.starts_with("F:2:1: unknown field `nmae`, expected one of"),
            "{e}"
        );
        let text = MINIMAL.replace("provider: static", "provider: gcp");
        let e = only_error("i.yaml", text.as_bytes());
        assert!(
            e.starts_with("F:2:11: unknown variant `gcp`, expected one of aws, local, static"),
            "{e}"
        );
    }

    #[test]
    fn bad_durations_say_what_is_expected() {
        let text = format!(
            "{MINIMAL}checks:\n  redis: {{interval: soon, timeout: 1s, fall: 1, rise: 1}}\n"
        );
        let e = only_error("j.yaml", text.as_bytes());
        assert!(e.starts_with("F:7:21: `soon` is not a duration"), "{e}");
        assert!(
            e.ends_with("expected a number with a unit, like 500ms, 2s or 5m"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_file_and_binary_garbage() {
        let e = load_topology(Path::new("/nonexistent/t.yaml")).unwrap_err();
        assert!(
            e.diagnostics[0]
                .to_string()
                .starts_with("/nonexistent/t.yaml: cannot open the file:"),
            "{}",
            e.diagnostics[0]
        );
        assert_eq!(
            only_error("k.yaml", &[0xff, 0xfe, 0x00, 0x41]),
            "F: the file is not UTF-8 text (invalid byte at offset 0)"
        );
    }
}
