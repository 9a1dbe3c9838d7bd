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
