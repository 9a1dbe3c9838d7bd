//! The JSON Schemas in docs/schema/ (topology, playbook, AMI definition): generated from the
//! model medic loads (`medic schema`), named by every example, passed by every example
//! according to an independent validator (`check-jsonschema`, from PyPI; scripts/deps installs
//! it), and as strict as medic: a field the schema lacks is one medic rejects, wherever it is
//! put.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod cli_support;

use cli_support::{medic, root, text};

/// `check-jsonschema --schemafile SCHEMA FILES...`.
fn check_jsonschema(schema: &Path, files: &[PathBuf]) -> Output {
    let venv = std::env::var_os("MEDIC_JSONSCHEMA_VENV").map_or_else(
        || PathBuf::from("/var/cache/medic/venv-jsonschema"),
        PathBuf::from,
    );
    let bin = venv.join("bin/check-jsonschema");
    Command::new(&bin)
        .arg("--schemafile")
        .arg(schema)
        .args(files)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/deps installs it)", bin.display()))
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Each schema and the files it describes.
fn described() -> Vec<(&'static str, Vec<PathBuf>)> {
    let mut playbooks = yaml_files("playbooks");
    for d in ["examples/domino", "examples/sounz", "examples/edina"] {
        playbooks.extend(yaml_files(d));
    }
    vec![
        ("topology", yaml_files("examples")),
        ("playbook", playbooks),
        ("ami", yaml_files("amis")),
    ]
}

#[test]
fn the_schemas_in_docs_are_the_ones_the_model_generates() {
    for (kind, _) in described() {
        let out = medic(&["schema", kind]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let path = root().join(format!("docs/schema/{kind}.schema.json"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &out.stdout).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap();
        assert!(
            committed == text(&out.stdout),
            "{} is not what `medic schema {kind}` prints: the model changed; UPDATE_GOLDEN=1 \
             cargo test -p medic --test schema rewrites it",
            path.display()
        );
    }
}

#[test]
fn every_example_names_its_schema_and_passes_it() {
    for (kind, files) in described() {
        assert!(!files.is_empty(), "no {kind} files");
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            let first = text.lines().next().unwrap_or_default();
            let rel = first
                .strip_prefix("# yaml-language-server: $schema=")
                .unwrap_or_else(|| panic!("{}: first line {first:?}", f.display()));
            assert!(
                rel.ends_with(&format!("{kind}.schema.json")),
                "{}",
                f.display()
            );
            assert!(
                f.parent().unwrap().join(rel).is_file(),
                "{}: {rel} does not exist",
                f.display()
            );
        }
        let schema = root().join(format!("docs/schema/{kind}.schema.json"));
        let mut files = files;
        if kind == "topology" {
            // And the draft `medic import monit` writes (it names the installed schema).
            files.push(root().join("tests/golden/import-monit.yaml"));
        }
        let out = check_jsonschema(&schema, &files);
        assert!(
            out.status.success(),
            "{kind}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

/// Copies of the file, each with one field added to one of its mappings (beside each key, and
/// inside each flow mapping), with the line it was added at.
fn with_an_unknown_field_everywhere(file: &str) -> Vec<(usize, String)> {
    let original = std::fs::read_to_string(root().join(file)).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        // A block mapping's key (`key:` or `- key:`): a sibling before it.
        let (key_indent, key) = match trimmed.strip_prefix("- ") {
            Some(rest) => (indent + 2, rest),
            None => (indent, trimmed),
        };
        let is_key = key.split_once(':').is_some_and(|(k, v)| {
            !k.is_empty()
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && (v.is_empty() || v.starts_with(' '))
        });
        if trimmed.starts_with('#') || !is_key {
            continue;
        }
        // Inside a block scalar (`|`, `>`) a line is text, not a key.
        let in_scalar = lines[..i].iter().rev().find(|l| {
            let t = l.trim_start();
            !t.is_empty() && (l.len() - t.len()) < indent
        });
        if in_scalar.is_some_and(|l| l.trim_end().ends_with('|') || l.trim_end().ends_with('>')) {
            continue;
        }
        let mut copy: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        let sibling = format!("{}unknown_field_{i}: x", " ".repeat(key_indent));
        if trimmed.starts_with("- ") {
            // After the item's first key: a field of the same item.
            copy.insert(i + 1, sibling);
        } else {
            copy.insert(i, sibling);
        }
        out.push((i + 1, copy.join("\n") + "\n"));
        // A flow mapping on the line (`{name: a, ...}`): a field inside it too.
        if let Some(open) = line.find('{') {
            let mut copy: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
            copy[i] = format!(
                "{}{{unknown_field_{i}f: x, {}",
                &line[..open],
                &line[open + 1..]
            );
            out.push((i + 1, copy.join("\n") + "\n"));
        }
    }
    out
}

/// Wherever a field is added: if the schema refuses it, so does `medic validate`; and when medic
/// refuses it as a field it does not know, so does the schema. (A key of a free-form map —
/// tags, image ids — is no unknown field: both take it, though medic may still refuse its value.)
#[test]
fn a_field_the_schema_lacks_is_one_medic_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let schema = root().join("docs/schema/topology.schema.json");
    let (mut total, mut refusals) = (0, 0);
    for example in [
        "examples/barton.yaml",
        "examples/domino.yaml",
        "examples/lab.yaml",
    ] {
        let mutated = with_an_unknown_field_everywhere(example);
        assert!(mutated.len() > 40, "{example}: {}", mutated.len());
        let mut files = Vec::new();
        for (n, (line, yaml)) in mutated.iter().enumerate() {
            // Beside the example, so its relative paths (playbooks, AMIs) still resolve.
            let stem = Path::new(example).file_stem().unwrap().to_string_lossy();
            let path = dir.path().join(format!("{stem}-{n}.yaml"));
            std::fs::write(
                &path,
                yaml.replace(
                    "../playbooks",
                    &root().join("playbooks").display().to_string(),
                )
                .replace("../amis", &root().join("amis").display().to_string())
                .replace("../docs/", &root().join("docs/").display().to_string()),
            )
            .unwrap();
            let out = medic(&["validate", path.to_str().unwrap()]);
            let refused = out.status.code() == Some(1);
            let stderr = text(&out.stderr);
            let unknown = stderr.contains("unknown field `unknown_field_")
                || stderr.contains("expected end of mapping after enum variant value");
            // A refusal names the file and line (the field itself, unless the parser stops
            // first: a field beside an enum's variant).
            assert!(
                out.status.success()
                    || (refused && text(&out.stderr).starts_with(&format!("{}:", path.display()))),
                "{example}, a field added at line {line}: {}",
                text(&out.stderr)
            );
            files.push((path, *line, refused, unknown));
        }
        // The validator names each copy it refuses (one run for all of them).
        let paths: Vec<PathBuf> = files.iter().map(|f| f.0.clone()).collect();
        let out = check_jsonschema(&schema, &paths);
        let said = text(&out.stdout);
        for (path, line, refused, unknown) in &files {
            let schema_refused = said.contains(&format!("{}::", path.display()));
            assert!(
                (!schema_refused || *refused) && (!*unknown || schema_refused),
                "{example}, a field added at line {line}: the schema {} it, medic {} it{}\n{said}",
                if schema_refused { "refused" } else { "took" },
                if *refused { "refused" } else { "took" },
                if *unknown { " as unknown" } else { "" },
            );
        }
        refusals += files.iter().filter(|f| f.3).count();
        total += files.len();
    }
    // Most places are objects with fixed fields.
    assert!(
        total > 150 && refusals * 10 > total * 9,
        "{refusals} of {total}"
    );
}
