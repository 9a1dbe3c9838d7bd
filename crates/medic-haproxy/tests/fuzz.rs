//! Bounded fuzzing of what medic reads from HAProxy: the runtime API's `show servers state`
//! and `show stat` replies (`tests/fuzz-corpus/haproxy-servers-state/`,
//! `tests/fuzz-corpus/haproxy-stat/`: replies of a real HAProxy 2.6 with servers up, down,
//! ready, draining, in maintenance and moved, and the unit tests' samples) and the haproxy.cfg
//! that `edit_server` rewrites (`tests/fuzz-corpus/haproxy-cfg/`: the files the haproxy and
//! app-proxy playbooks write). Replies are taken as the client takes them (bytes, invalid
//! UTF-8 replaced); mutations are byte-level, line-level (lines deleted, duplicated, numbers at
//! their limits) and, for haproxy.cfg, a word replaced by a keyword or a name.
//!
//! The property: every parser returns, never panics; what it returns is what the text says
//! (a server per line, names without blanks); `edit_server` changes at most the one line it
//! names, the way it was asked, and editing again changes nothing.
//!
//! Run: `cargo test -p medic-haproxy --test fuzz -- --nocapture` (prints the inputs executed
//! and the time); `PROPTEST_CASES=N` runs more.

#![allow(
    clippy::unwrap_used,
    reason = "a test: a failed unwrap is a failed test"
)]

#[path = "../../../tests/fuzz-support/mutate.rs"]
mod mutate;

use std::net::SocketAddr;

use proptest::prelude::*;
use proptest::sample::{Index, select};

use medic_haproxy::{
    ConfigEditError, ServerEdit, ServerName, edit_server, parse_servers_state, parse_stat,
};

use mutate::{Case, Run, apply, case, corpus, guard, line_case};

/// A reply as the runtime API client returns it.
fn text(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

/// Lines that are not blank: at most one row each.
fn lines(text: &str) -> usize {
    text.lines().filter(|l| !l.trim().is_empty()).count()
}

fn replies() -> impl Strategy<Value = Case> {
    prop_oneof![2 => case(false), 1 => line_case()]
}

#[test]
fn show_servers_state() {
    let seeds = corpus("haproxy-servers-state");
    let run = Run::new("haproxy show servers state");
    run.bytes(file!(), 20_000, &seeds, replies(), |input| {
        let text = text(input);
        let Ok(servers) = parse_servers_state(&text) else {
            run.outcome("refused");
            return Ok(());
        };
        run.outcome("parsed");
        if servers.len() + 2 > lines(&text).max(2) {
            return Err(format!(
                "{} servers from {} lines",
                servers.len(),
                lines(&text)
            ));
        }
        for s in &servers {
            for name in [&s.backend, &s.server, &s.addr] {
                if name.is_empty() || name.contains(char::is_whitespace) {
                    return Err(format!("a name {name:?} in {s:?}"));
                }
            }
            if s.is_ready() != (!s.in_maint() && !s.in_drain()) {
                return Err(format!("ready and maintenance disagree: {s:?}"));
            }
        }
        Ok(())
    });
    run.report();
    assert!(run.outcomes("parsed") > seeds.len());
}

#[test]
fn show_stat() {
    let seeds = corpus("haproxy-stat");
    let run = Run::new("haproxy show stat");
    run.bytes(file!(), 4000, &seeds, replies(), |input| {
        let text = text(input);
        let Ok(rows) = parse_stat(&text) else {
            run.outcome("refused");
            return Ok(());
        };
        run.outcome("parsed");
        if rows.len() + 1 > lines(&text).max(1) {
            return Err(format!("{} rows from {} lines", rows.len(), lines(&text)));
        }
        for r in &rows {
            if r.fields.keys().any(String::is_empty) {
                return Err(format!("a column without a name: {r:?}"));
            }
            if r.fields.get("pxname").is_some_and(|p| *p != r.proxy) {
                return Err(format!("proxy and pxname disagree: {r:?}"));
            }
        }
        Ok(())
    });
    run.report();
    assert!(run.outcomes("parsed") > seeds.len());
}

/// Words of haproxy.cfg worth putting where another was: section and server keywords, names
/// and addresses of the corpus.
const WORDS: &[&str] = &[
    "server",
    "backend",
    "listen",
    "frontend",
    "defaults",
    "global",
    "disabled",
    "enabled",
    "check",
    "backup",
    "weight",
    "#",
    "#disabled",
    "redis1",
    "redis2",
    "haproxy1",
    "redis-r9001",
    "app-r9001",
    "10.0.1.11:9001",
    "[::1]:9001",
    "",
];

/// A word (between blanks) of the text replaced.
#[derive(Debug, Clone)]
struct Word {
    which: Index,
    by: &'static str,
}

fn replace_word(text: &str, w: &Word) -> String {
    let words: Vec<(usize, &str)> = text
        .split(|c: char| c.is_ascii_whitespace())
        .scan(0, |at, word| {
            let start = *at;
            *at += word.len() + 1;
            Some((start, word))
        })
        .filter(|(_, w)| !w.is_empty())
        .collect();
    if words.is_empty() {
        return text.to_owned();
    }
    let (start, word) = *w.which.get(&words);
    format!("{}{}{}", &text[..start], w.by, &text[start + word.len()..])
}

/// The backends and servers a configuration names (what `edit_server` is asked about).
fn names(cfg: &str) -> (Vec<String>, Vec<String>) {
    let (mut backends, mut servers) = (Vec::new(), Vec::new());
    for line in cfg.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        match t.as_slice() {
            ["backend" | "listen", name, ..] => backends.push((*name).to_owned()),
            ["server", name, ..] => servers.push((*name).to_owned()),
            _ => {}
        }
    }
    (backends, servers)
}

/// Every server line of a configuration, with the section it is in.
fn servers(cfg: &str) -> Vec<ServerName> {
    let mut out = Vec::new();
    let mut section = String::new();
    for line in cfg.lines() {
        match tokens(line).as_slice() {
            ["server", name, _, ..] => out.push(ServerName::new(section.clone(), *name)),
            [_, name, ..] if !line.starts_with([' ', '\t']) => section = (*name).to_owned(),
            _ => {}
        }
    }
    out
}

fn server_edit() -> impl Strategy<Value = ServerEdit> {
    let addr = prop_oneof![
        any::<SocketAddr>(),
        select(&["10.0.1.99:9001", "[2001:db8::1]:6379", "0.0.0.0:0"][..])
            .prop_map(|a| a.parse().unwrap()),
    ];
    (prop::option::of(addr), prop::option::of(any::<bool>()))
        .prop_map(|(addr, enabled)| ServerEdit { addr, enabled })
}

/// The words before a `#` on a line.
fn tokens(line: &str) -> Vec<&str> {
    line.split('#')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect()
}

fn check_edit(run: &Run, cfg: &str, s: &ServerName, edit: ServerEdit) -> Result<(), String> {
    let out = match edit_server(cfg, s, edit) {
        Ok(out) => out,
        Err(e @ (ConfigEditError::NoBackend(_) | ConfigEditError::NoServer(_))) => {
            run.outcome("no such server");
            let _ = e.to_string();
            return Ok(());
        }
    };
    run.outcome("edited");
    let before: Vec<&str> = cfg.split_inclusive('\n').collect();
    let after: Vec<&str> = out.split_inclusive('\n').collect();
    if before.len() != after.len() {
        return Err(format!("{} lines became {}", before.len(), after.len()));
    }
    let changed: Vec<usize> = (0..before.len())
        .filter(|&i| before[i] != after[i])
        .collect();
    if changed.len() > 1 {
        return Err(format!("lines {changed:?} changed"));
    }
    if let Some(&i) = changed.first() {
        let t = tokens(after[i]);
        if t.len() < 3 || t[0] != "server" || t[1] != s.server {
            return Err(format!(
                "the edited line is not `server {}`: {:?}",
                s.server, after[i]
            ));
        }
        if let Some(a) = edit.addr
            && t[2] != a.to_string()
        {
            return Err(format!("the address is not {a}: {:?}", after[i]));
        }
        let disabled = t[3..].contains(&"disabled");
        if edit.enabled.is_some_and(|e| e == disabled) {
            return Err(format!("asked {:?}, got {:?}", edit.enabled, after[i]));
        }
    }
    match edit_server(&out, s, edit) {
        Ok(again) if again == out => Ok(()),
        other => Err(format!("editing again: {other:?}")),
    }
}

#[test]
fn edit_server_in_haproxy_cfg() {
    let seeds = corpus("haproxy-cfg");
    let run = Run::new("haproxy.cfg edit_server");
    // Every server of every file of the corpus, moved, disabled, enabled.
    let addr = Some("10.0.9.9:9009".parse().unwrap());
    let edits = [None, Some(false), Some(true)]
        .into_iter()
        .flat_map(|enabled| [None, addr].map(|addr| ServerEdit { addr, enabled }));
    for seed in &seeds {
        let cfg = text(&seed.bytes);
        for s in servers(&cfg) {
            for edit in edits.clone() {
                run.count();
                if let Err(e) = guard("haproxy.cfg", &seed.bytes, || {
                    check_edit(&run, &cfg, &s, edit)
                }) {
                    panic!("{}: edit_server({s}, {edit:?}): {e}", seed.name);
                }
            }
        }
    }
    let name = (any::<Index>(), prop::bool::weighted(0.9));
    let strategy = (
        prop_oneof![
            1 => any::<Index>().prop_map(|seed| Case { seed, mutations: Vec::new() }),
            2 => case(false),
            2 => line_case(),
        ],
        prop::collection::vec(
            (any::<Index>(), select(WORDS)).prop_map(|(which, by)| Word { which, by }),
            0..=3,
        ),
        name.clone(),
        name,
        server_edit(),
    );
    run.cases(
        file!(),
        5000,
        strategy,
        |(c, words, backend, server, edit)| {
            let mut cfg = text(&apply(&seeds, &c));
            for w in &words {
                cfg = replace_word(&cfg, w);
            }
            // A backend and a server the file names (most often), or any word of it.
            let (backends, servers) = names(&cfg);
            let all: Vec<String> = cfg.split_whitespace().map(str::to_owned).collect();
            let pick = |(i, named): &(Index, bool), from: &[String]| -> String {
                match (named, from.is_empty(), all.is_empty()) {
                    (true, false, _) => i.get(from).clone(),
                    (_, _, false) => i.get(&all).clone(),
                    _ => "x".to_owned(),
                }
            };
            let s = ServerName::new(pick(&backend, &backends), pick(&server, &servers));
            guard("haproxy.cfg", cfg.as_bytes(), || {
                check_edit(&run, &cfg, &s, edit)
                    .map_err(|e| format!("edit_server({s}, {edit:?}): {e}"))
            })
        },
    );
    run.report();
    assert!(run.outcomes("edited") > 0);
}
