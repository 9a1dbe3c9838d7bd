//! Bounded fuzzing of playbooks: `load_playbook` on mutations of real playbooks
//! (`tests/fuzz-corpus/playbook/`: the repository's and the unit tests', byte-level and
//! YAML-aware), each written to a file as an operator's would be, and `Playbook::render` of
//! every one that loads with variables made from the ones medic passes
//! (`tests/fuzz-corpus/playbook-vars/<playbook>--*.json`, taken from `medic plan`), parts of
//! them replaced by random JSON or removed.
//!
//! The property: loading and rendering return, never panic; a refusal carries an error; what
//! renders is usable: every step prints, a port is never 0, a mode is permission bits, and the
//! rendered steps read back from the JSON they are kept in.
//!
//! Run: `cargo test -p medic-playbook --test fuzz -- --nocapture` (prints the inputs executed
//! and the time); `PROPTEST_CASES=N` runs more.

#![allow(
    clippy::unwrap_used,
    reason = "a test: a failed unwrap is a failed test"
)]

#[path = "../../../tests/fuzz-support/mutate.rs"]
mod mutate;

use std::path::Path;

use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde_json::{Map, Value};

use medic_playbook::{Playbook, RenderedAction, RenderedStep, load_playbook};

use mutate::{Case, Run, Seed, apply, case, corpus, guard, number, text, value_case};

/// Keys the playbooks' variables have, and a few they do not.
const KEYS: &[&str] = &[
    "host",
    "name",
    "address",
    "role",
    "topology",
    "shards",
    "port",
    "master_host",
    "master_port",
    "persistence",
    "maxmemory",
    "auth",
    "medic",
    "replication",
    "clients",
    "user",
    "hash",
    "rules",
    "password",
    "frontends",
    "backend",
    "listen",
    "servers",
    "active",
    "shard",
    "haproxy",
    "runtime_api",
    "socket",
    "redis_auth",
    "path",
    "item",
    "",
    "x",
];

/// Any JSON value, leaves often at their limits, objects keyed as the variables are.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![Just(0), Just(65535), Just(65536), Just(-1), Just(i64::MIN)]
            .prop_map(Value::from),
        number().prop_map(Value::String),
        text().prop_map(Value::String),
        select(mutate::SCALARS).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((select(KEYS), inner), 0..4).prop_map(|kv| {
                Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

/// A change to the variables.
#[derive(Debug, Clone)]
enum VarEdit {
    /// Replace a value (any, the whole document included) by another.
    Replace { at: Index, value: Value },
    /// Remove a member or an element.
    Remove { at: Index },
}

fn var_edit() -> impl Strategy<Value = VarEdit> {
    prop_oneof![
        3 => (any::<Index>(), json()).prop_map(|(at, value)| VarEdit::Replace { at, value }),
        1 => any::<Index>().prop_map(|at| VarEdit::Remove { at }),
    ]
}

/// JSON pointers to every value of `v`, the document first.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                pointers(
                    v,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

fn edit(vars: &mut Value, e: &VarEdit) {
    let mut ptrs = Vec::new();
    pointers(vars, String::new(), &mut ptrs);
    match e {
        VarEdit::Replace { at, value } => {
            if let Some(v) = vars.pointer_mut(at.get(&ptrs).as_str()) {
                *v = value.clone();
            }
        }
        VarEdit::Remove { at } => {
            let p = at.get(&ptrs);
            let Some((parent, last)) = p.rsplit_once('/') else {
                return;
            };
            match vars.pointer_mut(parent) {
                Some(Value::Object(m)) => {
                    m.remove(&last.replace("~1", "/").replace("~0", "~"));
                }
                Some(Value::Array(a)) => {
                    if let Ok(i) = last.parse::<usize>()
                        && i < a.len()
                    {
                        a.remove(i);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The variables medic passes a playbook named `name` (any playbook's if none is kept): the
/// one `pick` says, or the first.
fn vars_for<'a>(vars: &'a [(String, Value)], name: &str, pick: Option<&Index>) -> &'a Value {
    let prefix = format!("{name}--");
    let mut own: Vec<&(String, Value)> = vars
        .iter()
        .filter(|(n, _)| n.starts_with(&prefix))
        .collect();
    if own.is_empty() {
        own = vars.iter().collect();
    }
    &pick.map_or(own[0], |p| *p.get(&own)).1
}

/// Renders `pb` with `vars` and checks what came back.
fn check_render(run: &Run, pb: &Playbook, vars: &Value) -> Result<(), String> {
    let steps = match pb.render(vars) {
        Ok(steps) => steps,
        Err(e) => {
            run.outcome("loaded, not rendered");
            let _ = e.to_string();
            return Ok(());
        }
    };
    run.outcome("rendered");
    for s in &steps {
        let _ = s.action.to_string();
        match &s.action {
            RenderedAction::WaitForPort { port: 0, .. } => {
                return Err(format!("step `{}`: port 0", s.name));
            }
            RenderedAction::File { mode, content, .. } => {
                if *mode > 0o7777 {
                    return Err(format!("step `{}`: mode {mode:o}", s.name));
                }
                let _ = RenderedAction::content_digest(content);
            }
            _ => {}
        }
        let json = serde_json::to_string(s).map_err(|e| format!("step `{}`: {e}", s.name))?;
        let back: RenderedStep =
            serde_json::from_str(&json).map_err(|e| format!("step `{}`: {e}: {json}", s.name))?;
        if back != *s {
            return Err(format!("step `{}` does not read back: {json}", s.name));
        }
    }
    Ok(())
}

/// Loads the playbook in `file` and renders it.
fn check(
    run: &Run,
    file: &Path,
    vars: &[(String, Value)],
    pick: Option<&Index>,
    edits: &[VarEdit],
) -> Result<(), String> {
    let pb = match load_playbook(file) {
        Ok(pb) => pb,
        Err(d) => {
            run.outcome("refused");
            if d.is_empty() {
                return Err("refused without an error".to_owned());
            }
            for d in &d {
                let _ = d.to_string();
            }
            return Ok(());
        }
    };
    let mut v = vars_for(vars, pb.name(), pick).clone();
    for e in edits {
        edit(&mut v, e);
    }
    check_render(run, &pb, &v)
}

#[test]
fn playbooks_load_and_render() {
    let seeds = corpus("playbook");
    let vars: Vec<(String, Value)> = corpus("playbook-vars")
        .into_iter()
        .map(|Seed { name, bytes }| {
            let v = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, v)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fuzz.yaml");
    let run = Run::new("playbook");

    // Each playbook as it is, with its own variables as medic passes them.
    run.seeds(&seeds, |input| {
        std::fs::write(&file, input).unwrap();
        check(&run, &file, &vars, None, &[])
    });
    assert_eq!(
        run.outcomes("rendered"),
        seeds.len(),
        "every playbook of the corpus renders with its variables"
    );

    // Mutated playbooks, or the corpus's as they are, with mutated variables.
    let playbook = prop_oneof![
        1 => any::<Index>().prop_map(|seed| Case { seed, mutations: Vec::new() }),
        2 => case(true),
        2 => value_case(),
    ];
    let strategy = (
        playbook,
        any::<Index>(),
        prop::collection::vec(var_edit(), 0..=3),
    );
    run.cases(file!(), 6000, strategy, |(c, pick, edits)| {
        let input = apply(&seeds, &c);
        guard("playbook", &input, || {
            std::fs::write(&file, &input).unwrap();
            check(&run, &file, &vars, Some(&pick), &edits)
        })
    });
    run.report();
    assert!(
        run.outcomes("rendered") > seeds.len(),
        "no mutation rendered"
    );
}
