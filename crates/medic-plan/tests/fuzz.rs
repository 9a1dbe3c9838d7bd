//! Bounded fuzzing of the planner behind the topology loader: mutations of real topology files
//! (`tests/fuzz-corpus/topology/`, byte-level and YAML-aware), written to a file beside a copy
//! of the repository's playbooks and AMI definitions and loaded with `load_topology`; every
//! one that loads is planned as `medic plan` and `medic run` plan it.
//!
//! The property: nothing panics, and what loads can be planned: every machine lost and every
//! redis process death plans a recovery of at least one step, numbered 1, 2, ...; a switchover
//! plans, or is refused only for a shard without a replica; the bootstrap plans; every step
//! is described (its playbook rendered) and applied to the observed state as the controller
//! does after it runs.
//!
//! Run: `cargo test -p medic-plan --test fuzz -- --nocapture` (prints the inputs executed and
//! the time); `PROPTEST_CASES=N` runs more.

#![allow(
    clippy::unwrap_used,
    reason = "a test: a failed unwrap is a failed test"
)]

#[path = "../../../tests/fuzz-support/mutate.rs"]
mod mutate;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use medic_plan::describe::describe;
use medic_plan::{Event, ObservedState, Plan, PlanError, StepOutput, plan_recovery};
use medic_playbook::Playbooks;
use medic_topology::{Topology, load_topology};

use mutate::{Run, case, corpus, repo, value_case};

/// A copy of the repository's `playbooks/` and `amis/` in a temporary directory, with
/// `examples/` beside them, so that a topology written to `examples/` finds them as the
/// examples do.
fn layout() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["playbooks", "amis"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
        for e in std::fs::read_dir(repo().join(sub)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.path().join(sub).join(e.file_name())).unwrap();
        }
    }
    std::fs::create_dir(dir.path().join("examples")).unwrap();
    let file = dir.path().join("examples/fuzz.yaml");
    (dir, file)
}

/// Playbooks by directory and names: mutations of the topology do not change them.
type PlaybookCache = HashMap<(PathBuf, Vec<&'static str>), Playbooks>;

/// Every event `medic plan` and `medic run` plan for a topology.
fn events(top: &Topology) -> Vec<Event> {
    let mut events: Vec<Event> = top
        .machines
        .iter()
        .map(|m| Event::MachineLost {
            machine: m.value.name.value.clone(),
        })
        .collect();
    for s in &top.shards {
        let shard = &s.value.name.value;
        events.push(Event::Switchover {
            shard: shard.clone(),
            to: None,
        });
        for m in Topology::shard_machines(&s.value) {
            events.push(Event::ProcessDied {
                shard: shard.clone(),
                machine: m.to_owned(),
            });
        }
    }
    events.push(Event::Bootstrap);
    events
}

/// Checks one plan: numbered steps, each described and applied to the state.
fn check_plan(
    top: &Topology,
    state: &ObservedState,
    event: &Event,
    plan: Result<Plan, PlanError>,
    playbooks: &Playbooks,
) -> Result<(), String> {
    let plan = match (event, plan) {
        (_, Ok(plan)) => plan,
        (Event::Switchover { shard, .. }, Err(e @ PlanError::CannotSwitch { .. }))
            if top.shard(shard).is_some_and(|s| s.replicas.is_empty()) =>
        {
            let _ = e.to_string();
            return Ok(());
        }
        (_, Err(e)) => return Err(format!("{event}: cannot plan: {e}")),
    };
    let wants_steps = matches!(event, Event::MachineLost { .. } | Event::ProcessDied { .. });
    if wants_steps && plan.steps.is_empty() {
        return Err(format!("{event}: a plan without a step"));
    }
    let mut state = state.clone();
    for (i, step) in plan.steps.iter().enumerate() {
        if step.index != i + 1 {
            return Err(format!("{event}: step {} numbered {}", i + 1, step.index));
        }
        let view = describe(step, playbooks);
        if view.index != step.index {
            return Err(format!(
                "{event}: step {} described as {}",
                step.index, view.index
            ));
        }
        state.apply(&step.action, &StepOutput::default());
    }
    let done: BTreeSet<usize> = plan.steps.iter().map(|s| s.index).collect();
    let _ = plan.redo_on_resume(&done);
    let _ = plan.event.to_string();
    Ok(())
}

/// `medic validate`, then `medic plan` for every event, on `file`.
fn check(run: &Run, cache: &RefCell<PlaybookCache>, file: &Path) -> Result<(), String> {
    let Ok(loaded) = load_topology(file) else {
        run.outcome("refused");
        return Ok(());
    };
    let top = &loaded.topology;
    // The playbooks `medic validate` loads: those of the roles the machines have.
    let mut names: Vec<&'static str> = top
        .machines
        .iter()
        .filter_map(|m| m.value.role.value.playbook())
        .collect();
    names.sort_unstable();
    names.dedup();
    let dir = loaded.playbook_dir();
    let mut cache = cache.borrow_mut();
    let playbooks = cache
        .entry((dir.clone(), names.clone()))
        // A `playbooks:` that names no directory of playbooks: steps are described without.
        .or_insert_with(|| Playbooks::load(&dir, names).unwrap_or_default());
    run.outcome(if playbooks.by_name.is_empty() {
        "planned without playbooks"
    } else {
        "planned"
    });
    let assumed = ObservedState::assumed(top);
    let empty = ObservedState::empty(top);
    for event in events(top) {
        let state = if event == Event::Bootstrap {
            &empty
        } else {
            &assumed
        };
        let plan = plan_recovery(top, state, &event, "fuzz");
        check_plan(top, state, &event, plan, playbooks)?;
    }
    Ok(())
}

#[test]
fn topologies_that_load_are_planned() {
    let seeds = corpus("topology");
    let (_dir, file) = layout();
    let cache = RefCell::new(PlaybookCache::new());
    let run = Run::new("plan");
    let check = |input: &[u8]| {
        std::fs::write(&file, input).unwrap();
        check(&run, &cache, &file)
    };
    run.bytes(file!(), 1000, &seeds, case(true), check);
    run.mutated(file!(), 2000, &seeds, value_case(), check);
    run.report();
    assert!(run.outcomes("planned") > 0, "no mutation was planned");
}
