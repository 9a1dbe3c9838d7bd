//! medic's topology: the YAML file that describes one deployment.
//!
//! [`load_topology`] is the one entry point: it reads the file, parses it (serde-saphyr, kept
//! behind this crate), checks everything ([`validate::validate`]) and loads the AMI definitions
//! the file names.
//!
//! # Guarantees
//! - Pure apart from reading the files it is given: no network, no clock.
//! - Never panics on input. Every problem is reported in one run, each as
//!   `FILE:LINE:COL: path.to.field: what is wrong, what is expected`: unknown fields (each
//!   one; parsing goes on without them), then every semantic problem (unknown references,
//!   duplicate names, port clashes, impossible checks, ...). Malformed YAML, a duplicate key,
//!   a wrong type or an unknown variant stops parsing and is reported as the parser locates it.

pub mod adopt;
pub mod ami;
pub mod auth;
pub mod diag;
pub mod duration;
pub mod load;
pub mod model;
pub mod pg_rejoin;
pub mod schema;
pub mod service;
pub mod spares;
pub mod tls;
pub mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use ami::AmiDefinition;
pub use auth::{Password, RedisAuth, SecretError, Secrets};
pub use diag::{Diagnostic, Diagnostics, Severity};
pub use model::*;
pub use service::{
    CheckKind, DnsRouting, Failback, Hooks, ProxyMode, RoleState, Service, ServiceCheck,
    ServiceDns, ServiceMode, ServiceProxy,
};

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
    let parsed = load::parse_file::<Topology>(path, "a topology (see docs/topology.md)");
    let mut diagnostics = parsed.diagnostics;
    // Unknown fields do not stop us: the rest of the file is still validated.
    let Some(topology) = parsed.value else {
        return Err(InvalidTopology { diagnostics });
    };
    let mut d = Diagnostics::new(path);
    validate::validate(&topology, &mut d);
    diagnostics.extend(d.into_sorted());

    let mut amis = BTreeMap::new();
    for (i, ami) in topology.amis.iter().enumerate() {
        let def_path = load::relative_to(path, &ami.value.definition.value);
        let parsed = load::parse_file::<AmiDefinition>(
            &def_path,
            "an AMI definition (see docs/topology.md)",
        );
        match parsed.value {
            None => {
                let mut e = parsed.diagnostics;
                if !def_path.exists() {
                    // Point at the field that names the missing file, not at the file itself.
                    e = vec![Diagnostic {
                        severity: Severity::Error,
                        file: path.to_path_buf(),
                        pos: ami.value.definition.referenced.into(),
                        path: format!("amis[{i}].definition"),
                        message: format!(
                            "no file {}; expected an AMI definition (amis/*.yaml)",
                            def_path.display()
                        ),
                    }];
                }
                diagnostics.extend(e);
            }
            Some(def) => {
                diagnostics.extend(parsed.diagnostics);
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
        // An unknown field does not stop validation: MINIMAL's own gaps are reported with it.
        let text = MINIMAL.replace("name: t\n", "name: t\nnmae: u\n");
        let f = TempFile::new("h.yaml", text.as_bytes());
        let err = load_topology(&f.0).unwrap_err();
        let msgs: Vec<String> = err.diagnostics.iter().map(|d| d.message.clone()).collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}"); // "no shards and no services", and it
        assert!(
            msgs[1].starts_with("unknown field `nmae`, expected one of name, provider"),
            "{msgs:?}"
        );
        assert_eq!(err.diagnostics[1].pos, diag::Pos { line: 2, column: 1 });
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

#[cfg(test)]
mod unknown_fields {
    //! Unknown fields do not stop parsing: each is reported where it is, and the rest of the
    //! file is still parsed and validated.
    use std::path::Path;

    use crate::load::parse_str;
    use crate::{Diagnostics, Topology, validate};

    fn messages(text: &str) -> Vec<String> {
        let parsed = parse_str::<Topology>(Path::new("t.yaml"), text, "a topology");
        let mut out: Vec<String> = parsed.diagnostics.iter().map(ToString::to_string).collect();
        if let Some(top) = parsed.value {
            let mut d = Diagnostics::new(Path::new("t.yaml"));
            validate::validate(&top, &mut d);
            out.extend(d.into_sorted().iter().map(ToString::to_string));
        }
        out.iter()
            .map(|m| m.split(", expected one of").next().unwrap_or(m).to_owned())
            .collect()
    }

    const BASE: &str = "name: t
provider: static
machines:
  - {name: a, role: redis, address: 10.0.0.1}
  - name: b
    role: redis
    address: 10.0.0.2
  - {name: h, role: haproxy, address: 10.0.0.3}
  - {name: h2, role: haproxy, address: 10.0.0.4}
shards:
  - {name: s, port: 9001, master: a, replicas: [b]}
proxies:
  machines: [h, h2]
  runtime_api: {port: 9999}
  frontends: [{listen: 8001, shard: s}]
";

    #[test]
    fn the_base_is_valid() {
        assert_eq!(messages(BASE), Vec::<String>::new());
    }

    #[test]
    fn block_flow_nested_and_multiline_entries_are_all_reported() {
        let text = BASE
            .replace("name: t\n", "name: t\ncolour: blue\n")
            .replace("role: redis, address: 10.0.0.1}", "role: redis, size: 3, address: 10.0.0.1}")
            .replace("    address: 10.0.0.2\n", "    address: 10.0.0.2\n    notes: |\n      two\n      lines\n    labels:\n      - x\n")
            .replace("{port: 9999}", "{port: 9999,\n    tls: true}")
            .replace("replicas: [b]}", "replicas: [c], weight: 2}");
        assert_eq!(
            messages(&text),
            [
                "t.yaml:2:1: unknown field `colour`",
                "t.yaml:5:28: unknown field `size`",
                "t.yaml:9:5: unknown field `notes`",
                "t.yaml:12:5: unknown field `labels`",
                "t.yaml:17:53: unknown field `weight`",
                "t.yaml:21:5: unknown field `tls`",
                // ...and the semantic pass still ran over the rest.
                "t.yaml:17:49: shards[0].replicas[0]: unknown machine `c`; expected one of a, b (machines with role redis)",
            ]
        );
    }

    #[test]
    fn a_type_error_after_unknown_fields_is_reported_too() {
        let text = BASE
            .replace("name: t\n", "name: t\ncolour: blue\n")
            .replace("port: 9001", "port: lots");
        assert_eq!(
            messages(&text),
            [
                "t.yaml:2:1: unknown field `colour`",
                "t.yaml:12:21: expected a whole number from 0 to 65535"
            ]
        );
    }
}
