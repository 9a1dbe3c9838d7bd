//! The playbook loader's and renderer's unit tests.

use super::*;

#[test]
fn a_when_with_template_delimiters_is_an_error_not_a_panic() {
    // Found by fuzzing: minijinja's expression lexer panics on a stray `}}`.
    let env = minijinja::Environment::new();
    for bad in ["haproxy.timeout_connect_ms }}ms", "{{ x }}", "a %} b", "#}"] {
        assert!(compile_when(&env, bad).is_err(), "{bad}");
    }
    assert!(compile_when(&env, "item.role == \"replica\"").is_ok());
}
use serde_json::json;

fn parse(text: &str) -> Result<Playbook, Vec<Diagnostic>> {
    let pb: Playbook =
        medic_topology::load::parse_str(Path::new("t.yaml"), text, "a playbook").into_result()?;
    let mut d = Diagnostics::new(Path::new("t.yaml"));
    pb.validate(&mut d);
    if d.has_errors() {
        Err(d.into_sorted())
    } else {
        Ok(pb)
    }
}

const PB: &str = r#"
name: t
description: test
vars:
  - {name: host, description: the machine}
  - {name: shards, description: servers}
steps:
  - name: dir {{ item.port }}
    for_each: shards
    command: mkdir -p /var/lib/redis/{{ item.port }}
    creates: /var/lib/redis/{{ item.port }}
  - name: conf
    for_each: shards
    when: item.role == "replica"
    file:
      path: /etc/redis/{{ item.port }}.conf
      mode: "0640"
      content: |
        port {{ item.port }}
        bind {{ host.address }}
  - name: wait
    for_each: shards
    wait_for_port: {port: "{{ item.port }}", timeout: 5s}
"#;

#[test]
fn shell_quote_makes_any_value_one_shell_word() {
    let pb = parse(
        r#"
name: q
description: test
vars:
  - {name: path, description: a path}
steps:
  - name: touch
    command: touch {{ path | shell_quote }}
"#,
    )
    .unwrap();
    let steps = pb
        .render(&json!({"path": "/tmp/a b'; rm -rf / #"}))
        .unwrap();
    match &steps[0].action {
        RenderedAction::Command { command, .. } => {
            assert_eq!(command, r#"touch '/tmp/a b'\''; rm -rf / #'"#)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn renders_for_each_when_and_defaults() {
    let pb = parse(PB).unwrap();
    let vars = json!({"host": {"address": "10.0.0.1"}, "shards": [{"port": 9001, "role": "master"}, {"port": 9002, "role": "replica"}]});
    let steps = pb.render(&vars).unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["dir 9001", "dir 9002", "conf", "wait", "wait"]);
    assert_eq!(
        steps[2].action,
        RenderedAction::File {
            path: "/etc/redis/9002.conf".into(),
            mode: 0o640,
            content: "port 9002\nbind 10.0.0.1\n".into()
        }
    );
    assert_eq!(
        steps[3].action,
        RenderedAction::WaitForPort {
            host: "10.0.0.1".into(),
            port: 9001,
            timeout_ms: 5000
        }
    );
    match &steps[0].action {
        RenderedAction::Command {
            command, creates, ..
        } => {
            assert_eq!(command, "mkdir -p /var/lib/redis/9001");
            assert_eq!(creates.as_deref(), Some("/var/lib/redis/9001"));
        }
        other => panic!("expected a command, got {other:?}"),
    }
}

#[test]
fn missing_and_undefined_variables_are_errors() {
    let pb = parse(PB).unwrap();
    let e = pb.render(&json!({"shards": []})).unwrap_err();
    assert_eq!(
        e.to_string(),
        "playbook t: variable `host` is not given; expected it in the step's vars"
    );
    let e = pb
        .render(&json!({"host": {}, "shards": [{"port": 1, "role": "replica"}]}))
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("playbook t, step `conf`: file.content:"),
        "{e}"
    );
}

#[test]
fn bad_steps_are_all_reported() {
    let text = r#"name: t
description: x
vars: [{name: a, description: y}]
steps:
  - name: two actions
    command: "true"
    file: {path: /x, content: y}
  - name: nothing
  - name: guard
    wait_for_port: {port: "1"}
    unless: "true"
  - name: "{{ broken"
    for_each: nope
    command: "true"
  - name: mode
    file: {path: /x, content: y, mode: "rw"}
"#;
    let errs: Vec<String> = parse(text)
        .unwrap_err()
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(
        errs,
        [
            "t.yaml:5:5: steps[0]: step `two actions` has command and file; expected exactly one of command, file, wait_for_port",
            "t.yaml:8:5: steps[1]: step `nothing` has no action; expected exactly one of command, file, wait_for_port",
            "t.yaml:11:13: steps[2].unless: `unless` guards a command; expected it only on a `command` step",
            "t.yaml:12:11: steps[3].name: template error: unexpected end of input, expected end of variable block",
            "t.yaml:13:15: steps[3].for_each: `nope` is not a declared variable; expected one of a",
            "t.yaml:16:40: steps[4].file.mode: `rw` is not a mode; expected octal permission bits like \"0644\"",
        ]
    );
}
