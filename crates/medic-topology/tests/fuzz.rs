//! Bounded fuzzing of the topology loader: `load_topology` on mutations of real topology files
//! (`tests/fuzz-corpus/topology/`: the examples, the simulator's, the validator's fixture of
//! mistakes, one with `redis_auth`) and of the AMI definitions it reads
//! (`tests/fuzz-corpus/ami/`), each written to a file as a user's would be.
//!
//! The property: `load_topology` returns, never panics; a refusal carries at least one error;
//! a topology it accepts answers every lookup the validator and the planner make of it.
//! (Planning every accepted mutation is crates/medic-plan/tests/fuzz.rs.)
//!
//! Run: `cargo test -p medic-topology --test fuzz -- --nocapture` (prints the inputs executed
//! and the time); `PROPTEST_CASES=N` runs more.

#![allow(
    clippy::unwrap_used,
    reason = "a test: a failed unwrap is a failed test"
)]

#[path = "../../../tests/fuzz-support/mutate.rs"]
mod mutate;

use std::path::{Path, PathBuf};

use medic_topology::{LoadedTopology, Severity, Topology, load_topology};

use mutate::{Run, case, corpus, repo, value_case};

/// A copy of the repository's `amis/` in a temporary directory, with `examples/` beside it,
/// so that a topology written to `examples/` finds its AMI definitions as the examples do.
fn layout() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("amis")).unwrap();
    for e in std::fs::read_dir(repo().join("amis")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join("amis").join(e.file_name())).unwrap();
    }
    std::fs::create_dir(dir.path().join("examples")).unwrap();
    let file = dir.path().join("examples/fuzz.yaml");
    (dir, file)
}

/// Loads `file` and checks what came back.
fn check_load(run: &Run, file: &Path) -> Result<(), String> {
    match load_topology(file) {
        Ok(loaded) => {
            run.outcome("accepted");
            use_loaded(&loaded)
        }
        Err(e) => {
            let Some(first) = e.errors().next() else {
                return Err(format!("refused without an error: {:?}", e.diagnostics));
            };
            // The parser's errors name no field; the validator's do.
            run.outcome(if first.path.is_empty() {
                "refused by the parser"
            } else {
                "refused by the validator"
            });
            let _ = e.to_string();
            for d in &e.diagnostics {
                let _ = d.to_string();
            }
            Ok(())
        }
    }
}

/// Every lookup the validator and the planner make of an accepted topology.
fn use_loaded(loaded: &LoadedTopology) -> Result<(), String> {
    let top: &Topology = &loaded.topology;
    if let Some(w) = loaded
        .warnings
        .iter()
        .find(|w| w.severity == Severity::Error)
    {
        return Err(format!("accepted with an error: {w}"));
    }
    for w in &loaded.warnings {
        let _ = w.to_string();
    }
    let _ = loaded.playbook_dir();
    for m in &top.machines {
        let m = &m.value;
        let name = m.name.value.as_str();
        if top.machine(name).is_none() {
            return Err(format!("machine `{name}` is listed but not found"));
        }
        let _ = top.shards_on(name).count();
        let _ = top.ssh_for(m);
        let _ = top.check_for(m.role.value);
        let _ = top.dns_records_of(name).count();
        let _ = top.subnet_for(m);
        let _ = top.runtime_api_of(name);
    }
    for s in &top.shards {
        let s = &s.value;
        if top.shard(&s.name.value).is_none() {
            return Err(format!("shard `{}` is listed but not found", s.name.value));
        }
        for m in Topology::shard_machines(s) {
            if top.machine(m).is_none() {
                return Err(format!(
                    "shard `{}` names unknown machine `{m}`",
                    s.name.value
                ));
            }
        }
    }
    for p in top.proxy_machines() {
        if top.runtime_api_of(p).is_none() {
            return Err(format!("proxy `{p}` has no runtime API"));
        }
    }
    for a in &top.amis {
        if !loaded.amis.contains_key(&a.value.name.value) {
            return Err(format!("AMI `{}` has no definition", a.value.name.value));
        }
    }
    Ok(())
}

#[test]
fn topology_files() {
    let seeds = corpus("topology");
    let (_dir, file) = layout();
    let run = Run::new("topology");
    let check = |input: &[u8]| {
        std::fs::write(&file, input).unwrap();
        check_load(&run, &file)
    };
    run.bytes(file!(), 2000, &seeds, case(true), check);
    run.mutated(file!(), 1000, &seeds, value_case(), check);
    run.report();
}

#[test]
fn ami_definitions() {
    let seeds = corpus("ami");
    let (dir, file) = layout();
    std::fs::copy(repo().join("examples/barton.yaml"), &file).unwrap();
    let run = Run::new("ami");
    run.bytes(file!(), 1500, &seeds, case(true), |input| {
        // barton.yaml names both definitions: the mutated one replaces the definition it came
        // from (as its name says), the other is the repository's.
        let amis = dir.path().join("amis");
        let haproxy = input.windows(13).any(|w| w == b"name: haproxy");
        let (mutated, other) = if haproxy {
            ("haproxy.yaml", "redis.yaml")
        } else {
            ("redis.yaml", "haproxy.yaml")
        };
        std::fs::write(amis.join(mutated), input).unwrap();
        std::fs::copy(repo().join("amis").join(other), amis.join(other)).unwrap();
        check_load(&run, &file)
    });
    run.report();
}
