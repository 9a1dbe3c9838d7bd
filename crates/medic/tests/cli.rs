//! The `medic` binary as an operator runs it: exit codes, messages, and golden plans.
//!
//! Golden files live in `tests/golden/`; after an intended change of output, regenerate them
//! with `UPDATE_GOLDEN=1 cargo test -p medic --test cli` and review the diff.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::path::Path;
use std::process::Command;

mod cli_support;

use cli_support::{medic, root, text};

fn assert_golden(name: &str, actual: &str) {
    let path = root().join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    if expected != actual {
        let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
        let first = e
            .iter()
            .zip(&a)
            .position(|(x, y)| x != y)
            .unwrap_or(e.len().min(a.len()));
        panic!(
            "{name} differs from the golden file at line {}:\n  golden: {:?}\n  actual: {:?}\n\
             (UPDATE_GOLDEN=1 regenerates it)",
            first + 1,
            e.get(first),
            a.get(first)
        );
    }
}

#[test]
fn the_examples_validate() {
    for (f, provider) in [
        ("examples/barton.yaml", "aws"),
        ("examples/lab.yaml", "local"),
        ("examples/static.yaml", "static"),
    ] {
        let out = medic(&["validate", f]);
        assert!(out.status.success(), "{f}: {}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout),
            format!(
                "{f}: valid: topology barton, provider {provider}, 6 machines, 2 shards, \
                 2 proxies, 1 app proxies\n"
            )
        );
        assert_eq!(text(&out.stderr), "", "{f}: no warnings expected");
    }
}

#[test]
fn a_file_full_of_mistakes_exits_1_with_every_message() {
    let out = medic(&["validate", "tests/fixtures/mistakes.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    // The exact messages are asserted in crates/medic-topology/tests/validation.rs; here, the
    // binary prints all of them, each located, in file order.
    assert_eq!(lines.len(), 50, "{err}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("tests/fixtures/mistakes.yaml:")),
        "{err}"
    );
    assert_eq!(
        lines[0],
        "tests/fixtures/mistakes.yaml:3:7: name: `Barton_Test` is not a valid name; expected 1 \
         to 63 lowercase letters, digits and '-', not starting or ending with '-'"
    );
    let json = medic(&[
        "validate",
        "tests/fixtures/mistakes.yaml",
        "--format",
        "json",
    ]);
    assert_eq!(json.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&json.stderr).unwrap();
    let diags = v["diagnostics"].as_array().unwrap();
    assert_eq!(diags.len(), lines.len());
    assert_eq!(diags[0]["pos"], serde_json::json!({"line": 3, "column": 7}));
    assert_eq!(diags[0]["path"], "name");
    assert_eq!(diags[0]["severity"], "error");
}

#[test]
fn bad_files_exit_1_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "empty.yaml",
            b"".to_vec(),
            "the file is empty; expected a topology",
        ),
        (
            "broken.yaml",
            b"name: x\nmachines: [\n".to_vec(),
            ":2:11: unclosed bracket '['",
        ),
        (
            "huge.yaml",
            vec![b' '; 50 * 1024 * 1024],
            "the file is 52428800 bytes; expected at most 4194304 bytes",
        ),
        (
            "dup.yaml",
            b"name: a\nname: b\n".to_vec(),
            ":2:1: duplicate mapping key `name` is not allowed here",
        ),
        (
            "type.yaml",
            b"name: [a]\n".to_vec(),
            ":1:7: expected a single value, not a list or a mapping",
        ),
        (
            "binary.yaml",
            vec![0xff, 0, 1, 2],
            "the file is not UTF-8 text",
        ),
    ];
    for (name, content, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let out = medic(&["validate", path.to_str().unwrap()]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(expected), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
    }
    let out = medic(&["validate", "/nonexistent/topology.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("/nonexistent/topology.yaml: cannot open the file:"),
        "{}",
        text(&out.stderr)
    );
}

/// A `playbooks:` naming a directory that is not there is one error at that field (as a
/// missing AMI definition is at its `amis[i].definition`), not a "cannot open" per playbook;
/// validate, plan and run --check-config all say it the same way.
#[test]
fn a_missing_playbook_directory_is_reported_at_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path();
    std::fs::create_dir(tmp.join("examples")).unwrap();
    for sub in ["amis", "playbooks"] {
        std::fs::create_dir(tmp.join(sub)).unwrap();
        for entry in std::fs::read_dir(root().join(sub)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), tmp.join(sub).join(entry.file_name())).unwrap();
        }
    }
    let barton = std::fs::read_to_string(root().join("examples/barton.yaml")).unwrap();
    let line = 1 + barton
        .lines()
        .position(|l| l == "playbooks: ../playbooks")
        .unwrap();
    // The copy as it is validates: only the directory makes the difference below.
    let good = tmp.join("examples/good.yaml");
    std::fs::write(&good, &barton).unwrap();
    let out = medic(&["validate", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let bad = tmp.join("examples/barton.yaml");
    std::fs::write(
        &bad,
        barton.replace("playbooks: ../playbooks", "playbooks: ../play books"),
    )
    .unwrap();
    let bad = bad.to_str().unwrap();
    let expected = format!(
        "{bad}:{line}:12: playbooks: no directory {}/examples/../play books; expected a \
         directory with the playbooks the machines' roles and the services' hooks use: app-proxy.yaml, haproxy.yaml, \
         redis.yaml\n",
        tmp.display()
    );
    for args in [
        vec!["validate", bad],
        vec!["plan", bad, "--lose", "redis1"],
        vec!["run", "--check-config", bad],
    ] {
        let out = medic(&args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), "", "{args:?}");
        assert_eq!(text(&out.stderr), expected, "{args:?}");
    }

    let json = medic(&["validate", bad, "--format", "json"]);
    assert_eq!(json.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&json.stderr).unwrap();
    let diags = v["diagnostics"].as_array().unwrap();
    assert_eq!(diags.len(), 1, "{v}");
    assert_eq!(diags[0]["file"], bad);
    assert_eq!(diags[0]["path"], "playbooks");
    assert_eq!(
        diags[0]["pos"],
        serde_json::json!({"line": line, "column": 12})
    );

    // A file where the directory should be: said so, at the same field.
    std::fs::write(tmp.join("play books"), "").unwrap();
    let out = medic(&["validate", bad]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "{bad}:{line}:12: playbooks: {}/examples/../play books is not a directory; \
             expected a directory with the playbooks the machines' roles and the services' hooks use: app-proxy.yaml, \
             haproxy.yaml, redis.yaml\n",
            tmp.display()
        )
    );
}

#[test]
fn golden_plan_barton_lose_redis1() {
    let out = medic(&["plan", "examples/barton.yaml", "--lose", "redis1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_golden("barton-lose-redis1.txt", &text(&out.stdout));
}

#[test]
fn golden_plan_barton_lose_haproxy1_with_files() {
    let out = medic(&[
        "plan",
        "examples/barton.yaml",
        "--lose",
        "haproxy1",
        "--files",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_golden("barton-lose-haproxy1.txt", &text(&out.stdout));
}

/// The draft `medic import monit` writes from a monitrc in seed 003's style (its checks are
/// in import_monit.rs).
#[test]
fn golden_import_monit() {
    let out = medic(&[
        "import",
        "monit",
        "tests/fixtures/monit/monitrc",
        "--hosts",
        "tests/fixtures/monit/hosts",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_golden("import-monit.yaml", &text(&out.stdout));
}

#[test]
fn golden_plan_barton_process_json() {
    let args = [
        "plan",
        "examples/barton.yaml",
        "--process",
        "r9001@redis1",
        "--format",
        "json",
    ];
    let out = medic(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["plan"]["event"],
        serde_json::json!({"event": "process_died", "shard": "r9001", "machine": "redis1"})
    );
    assert_eq!(v["plan"]["steps"][3]["action"], "promote_replica");
    assert_eq!(v["plan"]["steps"][3]["server"]["machine"], "redis2");
    assert_golden("barton-process-r9001-redis1.json", &text(&out.stdout));
}

#[test]
fn plan_errors_are_clear() {
    let out = medic(&["plan", "examples/barton.yaml", "--lose", "redis9"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "examples/barton.yaml: cannot plan: unknown machine `redis9`; expected one of redis1, \
         redis2, haproxy1, haproxy2, app, monitor\n"
    );
    let out = medic(&["plan", "examples/barton.yaml", "--process", "r9001"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "medic: --process `r9001`: expected SHARD@MACHINE, like r9001@redis1\n"
    );
    let out = medic(&["plan", "examples/barton.yaml"]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
    let out = medic(&["plan", "tests/fixtures/mistakes.yaml", "--lose", "redis1"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an invalid topology is never planned"
    );
}

/// The operators' commands say what is wrong with what they were given, and `--format json`
/// answers in JSON even when no controller answers.
#[test]
fn operator_commands_say_what_went_wrong() {
    let out = medic(&["history", "--since", "yesterday", "-t", "examples/lab.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "medic: --since \"yesterday\": expected a duration back from now (90s, 30m, 2h, 7d) or a \
         UTC time (2026-12-01T03:00:00Z)\n"
    );
    let out = medic(&["history", "--limit", "0", "-t", "examples/lab.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("0 is not in 1..=1000"),
        "{}",
        text(&out.stderr)
    );
    // A controller that is not running: the topology says where, nobody listens there.
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lab = std::fs::read_to_string(root().join("examples/lab.yaml")).unwrap();
    let moved = lab
        .replace("../", &format!("{}/", root().display()))
        .replace(
            "listen: 127.0.0.1:7600",
            &format!("listen: 127.0.0.1:{port}"),
        )
        .replace(
            "state_dir: /var/lib/medic/lab/controller",
            &format!("state_dir: {}", dir.path().display()),
        );
    assert_ne!(moved, lab);
    let file = dir.path().join("lab.yaml");
    std::fs::write(&file, moved).unwrap();
    std::fs::write(dir.path().join("api-token"), "t\n").unwrap();
    let out = medic(&[
        "unmonitor",
        "redis2",
        "--format",
        "json",
        "-t",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(said["ok"], false, "{said}");
    assert_eq!(said["command"], "unmonitor", "{said}");
    assert!(said.get("status").is_none(), "never reached: {said}");
    assert!(
        said["error"].as_str().unwrap().contains("is `medic run"),
        "{said}"
    );
}

/// Every HAProxy configuration a plan would write passes the real `haproxy -c`.
#[test]
fn rendered_haproxy_configs_pass_haproxy_check() {
    let haproxy = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(haproxy) = haproxy else {
        panic!("haproxy is not installed: .ci/run installs it (apt-get install haproxy)");
    };
    let dir = tempfile::tempdir().unwrap();
    let web = web_behind_proxies(dir.path());
    for (topology, machine) in [
        ("examples/barton.yaml", "haproxy1"),
        ("examples/barton.yaml", "app"),
        (web.to_str().unwrap(), "lb1"),
    ] {
        let out = medic(&["plan", topology, "--lose", machine, "--format", "json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let files: Vec<&serde_json::Value> = v["views"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["files"].as_array().unwrap())
            .collect();
        assert_eq!(files.len(), 1, "{machine}: one haproxy.cfg");
        assert_eq!(files[0]["path"], "/etc/haproxy/haproxy.cfg");
        // The replacement's own address is known only once it is launched: stand one in, and
        // keep the admin socket inside the test's directory.
        let cfg = files[0]["content"]
            .as_str()
            .unwrap()
            .replace(&format!("${{address:{machine}}}"), "127.0.0.1")
            .replace(
                "/run/haproxy/admin.sock",
                &dir.path().join("admin.sock").display().to_string(),
            );
        assert!(
            !cfg.contains("${"),
            "{machine}: unresolved address left:\n{cfg}"
        );
        let path = dir.path().join(format!("{machine}.cfg"));
        std::fs::write(&path, &cfg).unwrap();
        let check = Command::new(haproxy)
            .args(["-c", "-f"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{machine}: haproxy -c rejected the rendered config:\n{}{}\n{cfg}",
            text(&check.stdout),
            text(&check.stderr)
        );
    }
}

/// examples/domino.yaml with its web servers behind a HAProxy (`lb1`), in HTTP mode, written
/// in `dir` with a playbooks directory of its hooks and the proxies' playbook.
fn web_behind_proxies(dir: &Path) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let playbooks = dir.join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    for from in [
        "examples/domino/primary-include.yaml",
        "examples/domino/standby-include.yaml",
        "playbooks/haproxy.yaml",
    ] {
        let from = root.join(from);
        std::fs::copy(&from, playbooks.join(from.file_name().unwrap())).unwrap();
    }
    let text = std::fs::read_to_string(root.join("examples/domino.yaml"))
        .unwrap()
        .replace("playbooks: domino", &format!("playbooks: {}", playbooks.display()))
        .replace(
            "  - {name: monitor, role: monitor}\n",
            "  - {name: lb1, role: haproxy, ami: haproxy}\n  - {name: monitor, role: monitor}\n\nproxies:\n  machines: [lb1]\n  runtime_api: {port: 9999}\n  frontends: []\n",
        )
        .replace("    port: 80\n", "    port: 80\n    proxy: {listen: 8080, mode: http}\n")
        .replace(
            "amis:\n",
            "amis:\n  - name: haproxy\n    definition: ../amis/haproxy.yaml\n",
        )
        .replace("../amis", &root.join("amis").display().to_string());
    let file = dir.join("web.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

/// Every command and subcommand, as `medic --help` lists them.
const COMMANDS: [&str; 18] = [
    "run",
    "up",
    "status",
    "history",
    "events",
    "recover",
    "switchover",
    "unmonitor",
    "monitor",
    "step-down",
    "completions",
    "lab",
    "aws",
    "schema",
    "import",
    "validate",
    "plan",
    "help",
];
const SUBCOMMANDS: [(&str, &[&str]); 3] = [
    ("lab", &["up", "down", "status", "fault"]),
    ("aws", &["check"]),
    ("import", &["monit"]),
];

#[test]
fn completions_know_every_command() {
    // The list above is the CLI's: a new command must be added here too.
    let help = text(&medic(&["--help"]).stdout);
    let listed: Vec<&str> = help
        .split("Commands:\n")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(listed, COMMANDS, "{help}");
    for shell in ["bash", "zsh", "fish"] {
        let out = medic(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        // Each shell's own way of naming a command it completes, as clap_complete writes it.
        let offers = |parent: Option<&str>, cmd: &str| match (shell, parent) {
            ("bash", None) => script.contains(&format!("            medic,{cmd})")),
            ("bash", Some(p)) => script.contains(&format!("medic__subcmd__{p},{cmd})")),
            ("zsh", _) => script.contains(&format!("\n'{cmd}:")),
            (_, None) => script.contains(&format!(
                "-n \"__fish_medic_needs_command\" -f -a \"{cmd}\""
            )),
            (_, Some(p)) => script.lines().any(|l| {
                l.contains(&format!("__fish_medic_using_subcommand {p};"))
                    && l.contains(&format!(" -f -a \"{cmd}\""))
            }),
        };
        for cmd in COMMANDS {
            assert!(offers(None, cmd), "{shell} completion lacks {cmd}");
        }
        for (parent, subs) in SUBCOMMANDS {
            for sub in subs {
                assert!(
                    offers(Some(parent), sub),
                    "{shell} completion lacks {parent} {sub}"
                );
            }
        }
        assert!(!offers(None, "nonsense"), "{shell}: the check itself works");
    }
    let out = medic(&["completions", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    let file = root().join("examples/barton.yaml");
    // The reading end closed before medic even starts: its first line meets a closed pipe,
    // whatever the timing (a pipe closed after the spawn could still take the whole plan).
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_medic"))
        .args([
            "plan",
            file.to_str().unwrap(),
            "--lose",
            "redis1",
            "--files",
        ])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(141));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "no panic, no error"
    );
}

/// The four seeds' services examples: each validates, and `medic plan` prints its primary's
/// loss, its service's failure and a switchover — the steps the lab tests run.
#[test]
fn every_services_example_validates_and_plans() {
    for (example, service, primary, steps) in [
        ("domino", "www", "web1", &["hook", "role", "dns"][..]),
        ("sounz", "sounz", "slayer", &["address", "hook", "role"]),
        ("edina", "filestore", "rjb-a", &["hook", "role"]),
        ("dryad", "dryad", "primus", &["role", "dns"]),
    ] {
        let file = root().join(format!("examples/{example}.yaml"));
        let f = file.to_str().unwrap();
        let out = medic(&["validate", f]);
        assert!(out.status.success(), "{example}: {}", text(&out.stderr));
        let process = format!("{service}@{primary}");
        for args in [
            ["plan", f, "--lose", primary],
            ["plan", f, "--process", &process],
            ["plan", f, "--switchover", service],
        ] {
            let out = medic(&args);
            let shown = text(&out.stdout);
            assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
            for kind in steps.iter().copied() {
                assert!(
                    shown
                        .lines()
                        .any(|l| l.split_whitespace().nth(1) == Some(kind)),
                    "{args:?}: no `{kind}` step in:\n{shown}"
                );
            }
        }
    }
}
