//! Bounded fuzzing of what medic reads from redis: `INFO replication` replies
//! (`tests/fuzz-corpus/redis-info-replication/`: a real redis 7.0 master with and without
//! replicas, a replica in sync, one whose master is gone, one just promoted, the whole `INFO`,
//! and the unit tests' samples) and `ROLE` replies (`tests/fuzz-corpus/redis-role/`: the
//! same servers' replies as they came over the wire, RESP2 and RESP3, read with the redis
//! client's own parser), plus `ROLE` replies built at random around their real shape.
//! Mutations are byte-level, line-level, and for `INFO` a field's value replaced (a role,
//! a number at its limits, a replica's `ip=...,port=...` list) or a replica line added.
//!
//! The property: `parse_replication` and `parse_role` return, never panic, and what they
//! return is what the reply says (a role among the ones redis has, one replica per `slaveN`
//! line).
//!
//! Run: `cargo test -p medic-redis --test fuzz -- --nocapture` (prints the inputs executed
//! and the time); `PROPTEST_CASES=N` runs more.

#![allow(
    clippy::unwrap_used,
    reason = "a test: a failed unwrap is a failed test"
)]

#[path = "../../../tests/fuzz-support/mutate.rs"]
mod mutate;

use proptest::prelude::*;
use proptest::sample::{Index, select};
use redis::Value;

use medic_redis::info::{RoleReply, parse_replication, parse_role};

use mutate::{Case, Run, apply, case, corpus, guard, line_case, number, text};

/// Values of `INFO` fields worth trying.
const FIELD_VALUES: &[&str] = &[
    "master",
    "slave",
    "replica",
    "sentinel",
    "up",
    "down",
    "0",
    "1",
    "-1",
    "",
    ":",
    "ip=127.0.0.1,port=9001,state=online,offset=1,lag=0",
    "ip=::1,port=65535,state=wait_bgsave,offset=0,lag=18446744073709551615",
    "ip=127.0.0.1,port=65536,state=online,offset=1,lag=0",
    "ip=127.0.0.1,port=9001,state=online,offset=-1,lag=0",
    "ip=127.0.0.1,port=9001,state=online",
    "ip=,port=,state=,offset=,lag=",
    "ip=a=b,port=1,state=x,offset=2,lag=x",
    "port=1,ip=1.2.3.4,lag=3,offset=4,state=online,ip=5.6.7.8",
    "=,=,=",
    ",,,",
];

/// A change that knows `INFO`'s `key:value` lines.
#[derive(Debug, Clone)]
enum InfoEdit {
    /// The value of a line replaced.
    Value { line: Index, value: String },
    /// A replica line added (`slaveN:...`).
    Replica { at: Index, n: String, value: String },
}

fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(FIELD_VALUES).prop_map(str::to_owned),
        2 => number(),
        1 => text(),
    ]
}

fn info_edit() -> impl Strategy<Value = InfoEdit> {
    prop_oneof![
        3 => (any::<Index>(), field_value()).prop_map(|(line, value)| InfoEdit::Value { line, value }),
        1 => (
            any::<Index>(),
            prop_oneof![Just(String::new()), Just("0".to_owned()), number()],
            field_value()
        )
            .prop_map(|(at, n, value)| InfoEdit::Replica { at, n, value }),
    ]
}

fn info_apply(text: &str, e: &InfoEdit) -> String {
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    match e {
        InfoEdit::Value { line, value } => {
            let l = line.get_mut(&mut lines);
            if let Some((key, _)) = l.split_once(':') {
                let end = if l.ends_with('\r') { "\r" } else { "" };
                *l = format!("{key}:{value}{end}");
            }
        }
        InfoEdit::Replica { at, n, value } => {
            let i = at.index(lines.len() + 1);
            lines.insert(i, format!("slave{n}:{value}"));
        }
    }
    lines.join("\n")
}

/// What the text says the role is: the last `role:` line.
fn role_line(text: &str) -> Option<&str> {
    text.lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("role:"))
        .next_back()
}

fn check_info(run: &Run, text: &str) -> Result<(), String> {
    let info = match parse_replication(text) {
        Ok(info) => info,
        Err(e) => {
            run.outcome("refused");
            let _ = e.to_string();
            return Ok(());
        }
    };
    run.outcome("parsed");
    let said = role_line(text);
    let role_ok = match said {
        Some("master") => info.role.as_str() == "master",
        Some("slave" | "replica") => info.role.as_str() == "replica",
        _ => false,
    };
    if !role_ok {
        return Err(format!("role {:?} read as {:?}", said, info.role));
    }
    let replica_lines = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| {
            k.strip_prefix("slave")
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count();
    if info.replicas.len() != replica_lines {
        return Err(format!(
            "{} replicas from {replica_lines} replica lines",
            info.replicas.len()
        ));
    }
    for r in &info.replicas {
        let _ = r.is_at("127.0.0.1".parse().unwrap(), r.port);
    }
    Ok(())
}

#[test]
fn info_replication() {
    let seeds = corpus("redis-info-replication");
    let run = Run::new("redis INFO replication");
    run.seeds(&seeds, |input| {
        check_info(&run, &String::from_utf8_lossy(input))
    });
    assert_eq!(
        run.outcomes("parsed"),
        seeds.len(),
        "every reply of the corpus parses"
    );
    let strategy = (
        prop_oneof![
            1 => any::<Index>().prop_map(|seed| Case { seed, mutations: Vec::new() }),
            2 => case(false),
            2 => line_case(),
        ],
        prop::collection::vec(info_edit(), 0..=3),
    );
    run.cases(file!(), 100_000, strategy, |(c, edits)| {
        // As the client takes a bulk string: bytes, invalid UTF-8 replaced.
        let mut text = String::from_utf8_lossy(&apply(&seeds, &c)).into_owned();
        for e in &edits {
            text = info_apply(&text, e);
        }
        guard("INFO replication", text.as_bytes(), || {
            check_info(&run, &text)
        })
    });
    run.report();
}

fn check_role(run: &Run, v: &Value) -> Result<(), String> {
    match parse_role(v) {
        Ok(reply) => {
            run.outcome("parsed");
            let Value::Array(items) = v else {
                return Err(format!("{reply:?} from a reply that is not an array"));
            };
            let first = match items.first() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(Value::SimpleString(s)) => s.clone(),
                other => return Err(format!("{reply:?} from a reply starting with {other:?}")),
            };
            let role_ok = match &reply {
                RoleReply::Master { .. } => first == "master",
                RoleReply::Replica { .. } => first == "slave" || first == "replica",
            };
            if !role_ok {
                return Err(format!("{reply:?} from a reply starting with {first:?}"));
            }
        }
        Err(e) => {
            run.outcome("refused");
            let _ = e.to_string();
        }
    }
    Ok(())
}

#[test]
fn role_replies_over_the_wire() {
    let seeds = corpus("redis-role");
    let run = Run::new("redis ROLE (RESP)");
    let resp = |input: &[u8]| -> Result<(), String> {
        match redis::parse_redis_value(input) {
            Ok(v) => check_role(&run, &v),
            Err(_) => {
                run.outcome("not RESP");
                Ok(())
            }
        }
    };
    run.bytes(
        file!(),
        60_000,
        &seeds,
        prop_oneof![2 => case(false), 1 => line_case()],
        resp,
    );
    run.report();
    assert!(run.outcomes("parsed") > seeds.len());
}

/// Words a `ROLE` reply is made of, and numbers at the limits of its fields.
const ROLE_WORDS: &[&str] = &[
    "master",
    "slave",
    "replica",
    "sentinel",
    "connect",
    "connecting",
    "sync",
    "connected",
    "handshake",
    "127.0.0.1",
    "::1",
    "",
    "0",
    "-1",
    "65535",
    "65536",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "18446744073709551616",
    "1e3",
    " 1",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(ROLE_WORDS).prop_map(str::to_owned),
        1 => number(),
        1 => text(),
    ]
}

/// Any reply, leaves often what `ROLE` has.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        Just(Value::Okay),
        any::<i64>().prop_map(Value::Int),
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(65535),
            Just(65536),
            Just(i64::MIN),
            Just(i64::MAX)
        ]
        .prop_map(Value::Int),
        word().prop_map(|w| Value::BulkString(w.into_bytes())),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(Value::BulkString),
        word().prop_map(Value::SimpleString),
        any::<f64>().prop_map(Value::Double),
        any::<bool>().prop_map(Value::Boolean),
        word().prop_map(|text| Value::VerbatimString {
            format: redis::VerbatimFormat::Text,
            text
        }),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            4 => prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            1 => prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Set),
            1 => prop::collection::vec((inner.clone(), inner.clone()), 0..3).prop_map(Value::Map),
            1 => (inner.clone(), prop::collection::vec((inner.clone(), inner), 0..2)).prop_map(
                |(data, attributes)| Value::Attribute {
                    data: Box::new(data),
                    attributes
                }
            ),
        ]
    })
}

/// A text as redis sends it: a bulk string most often, or a simple one.
fn text_value(w: String, simple: bool) -> Value {
    if simple {
        Value::SimpleString(w)
    } else {
        Value::BulkString(w.into_bytes())
    }
}

/// A field of a `ROLE` reply: most often what redis sends there (a word or a number, as an
/// integer or as text), sometimes any value.
fn field(number_field: bool) -> impl Strategy<Value = Value> {
    let int = prop_oneof![
        3 => (0i64..10_000_000).prop_map(Value::Int),
        1 => any::<i64>().prop_map(Value::Int),
    ];
    let text = (word(), any::<bool>()).prop_map(|(w, s)| text_value(w, s));
    let numeric_text = (number(), any::<bool>()).prop_map(|(w, s)| text_value(w, s));
    if number_field {
        prop_oneof![4 => int, 2 => numeric_text, 1 => text, 1 => value()].boxed()
    } else {
        prop_oneof![6 => text, 1 => int, 1 => value()].boxed()
    }
}

/// Some of `fields`, in order (a reply cut short), and maybe more values after them.
fn cut(fields: Vec<Value>, keep: Index, more: Vec<Value>, complete: bool) -> Value {
    let n = if complete {
        fields.len()
    } else {
        keep.index(fields.len() + 1)
    };
    Value::Array(fields.into_iter().take(n).chain(more).collect())
}

/// A reply shaped as `ROLE`'s: a master's `[master, offset, [[ip, port, offset], ...]]` or a
/// replica's `[slave, host, port, state, offset]`, any field possibly something else, cut
/// short, or followed by more.
fn role_shaped() -> impl Strategy<Value = Value> {
    let word = |w: &'static [&'static str]| {
        (select(w), any::<bool>()).prop_map(|(w, s)| text_value(w.to_owned(), s))
    };
    let tail = || prop::collection::vec(value(), 0..2);
    let complete = || prop::bool::weighted(0.7);
    let replica_entry = (
        field(false),
        field(true),
        field(true),
        any::<Index>(),
        tail(),
        complete(),
    )
        .prop_map(|(ip, port, off, keep, more, all)| cut(vec![ip, port, off], keep, more, all));
    let master = (
        word(&["master", "master", "slave", "sentinel"]),
        field(true),
        prop_oneof![
            4 => prop::collection::vec(replica_entry, 0..4).prop_map(Value::Array),
            1 => value(),
        ],
        any::<Index>(),
        tail(),
        complete(),
    )
        .prop_map(|(role, off, replicas, keep, more, all)| {
            cut(vec![role, off, replicas], keep, more, all)
        });
    let replica = (
        word(&["slave", "replica", "master", "sentinel"]),
        field(false),
        field(true),
        field(false),
        field(true),
        any::<Index>(),
        tail(),
        complete(),
    )
        .prop_map(|(role, host, port, state, off, keep, more, all)| {
            cut(vec![role, host, port, state, off], keep, more, all)
        });
    prop_oneof![master, replica]
}

#[test]
fn role_replies_built_at_random() {
    let run = Run::new("redis ROLE (values)");
    run.cases(
        file!(),
        100_000,
        prop_oneof![3 => role_shaped(), 1 => value()],
        |v| {
            let shown = format!("{v:?}");
            guard("ROLE", shown.as_bytes(), || check_role(&run, &v))
        },
    );
    run.report();
    assert!(run.outcomes("parsed") > 0);
}
