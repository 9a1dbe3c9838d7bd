//! `medic import monit` on a monit control file written in seed 003's style
//! (tests/fixtures/monit/monitrc, its hosts file beside it): the draft validates and plans,
//! the report gives every statement and test of the file a fate, and bad input gets a clear
//! error. The draft itself is a golden file (cli.rs, `golden_import_monit`).

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod cli_support;

use cli_support::{medic, root, text};

const MONITRC: &str = "tests/fixtures/monit/monitrc";
const HOSTS: &str = "tests/fixtures/monit/hosts";

#[test]
fn the_draft_of_a_seed_style_monitrc_validates_and_plans_the_failover() {
    let dir = tempfile::tempdir().unwrap();
    let draft = dir.path().join("topology.yaml");
    let playbooks = root().join("playbooks");
    let out = medic(&[
        "import",
        "monit",
        MONITRC,
        "--hosts",
        HOSTS,
        "--playbooks",
        playbooks.to_str().unwrap(),
        "--out",
        draft.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "the draft went to --out");
    let report = text(&out.stderr);
    let yaml = std::fs::read_to_string(&draft).unwrap();
    // The report heads the draft too, as comments.
    for line in report.lines() {
        assert!(yaml.contains(&format!("# {line}\n")), "{line} in the draft");
    }
    let out = medic(&["validate", draft.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}\n{yaml}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("5 machines, 2 shards, 2 proxies"),
        "{}",
        text(&out.stdout)
    );
    // What the failover script did for redis1, medic plans: fence on both proxies, promote
    // redis2, point the proxies at it.
    let out = medic(&["plan", draft.to_str().unwrap(), "--lose", "redis1"]);
    let plan = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for step in [
        "haproxy 10.0.1.12:9999> set server redis-r9001/redis1 state maint",
        "haproxy 10.0.1.13:9999> set server redis-r9002/redis1 state maint",
        "redis 10.0.1.11:9001> REPLICAOF NO ONE",
        "redis 10.0.1.11:9002> REPLICAOF NO ONE",
        "haproxy 10.0.1.13:9999> set server redis-r9001/redis2 state ready",
    ] {
        assert!(plan.contains(step), "{step} in:\n{plan}");
    }
    // --out never overwrites.
    let again = medic(&[
        "import",
        "monit",
        MONITRC,
        "--hosts",
        HOSTS,
        "--out",
        draft.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("it must not exist"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(std::fs::read_to_string(&draft).unwrap(), yaml);
}

/// Each `set`, `check`, `if` and other clause of the file has a line in the report, under
/// mapped, assumed or not mapped — nothing is dropped silently.
#[test]
fn every_statement_of_the_file_has_its_fate_in_the_report() {
    let out = medic(&["import", "monit", MONITRC, "--hosts", HOSTS]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stderr);
    let rc = std::fs::read_to_string(root().join(MONITRC)).unwrap();
    let mut statements = 0;
    // Inside a check that is not mapped as a whole, its clauses go with it.
    let mut whole_check_left_out = false;
    for (i, line) in rc.lines().enumerate() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if first == "check" {
            let kind_name: Vec<&str> = line.split_whitespace().skip(1).take(2).collect();
            whole_check_left_out = report.contains(&format!(
                "{MONITRC}:{}: check {}:",
                i + 1,
                kind_name.join(" ")
            ));
        }
        if ["set", "check", "if", "group", "start", "stop"].contains(&first) {
            statements += 1;
            if first != "check" && whole_check_left_out {
                continue;
            }
            assert!(
                report.contains(&format!("{MONITRC}:{}: ", i + 1)),
                "line {} ({line}) has no fate in:\n{report}",
                i + 1
            );
        }
    }
    assert!(statements > 25, "{statements}");
    let section = |title: &str| -> String {
        report
            .split(&format!("{title}:\n"))
            .nth(1)
            .unwrap()
            .split("\n\n")
            .next()
            .unwrap()
            .lines()
            .take_while(|l| l.starts_with("  "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mapped = section("mapped");
    let assumed = section("assumed (check each)");
    let not = section("not mapped");
    for (part, line) in [
        (&mapped, "monitrc:5: set daemon 5 → the checks' interval"),
        (
            &mapped,
            "monitrc:14: check host redis1 → machine redis1, role redis, address 10.0.1.10 (redis1.barton.internal in the hosts file)",
        ),
        (
            &mapped,
            "monitrc:15: `exec \"/usr/local/sbin/failover redis redis1\"` → medic's own recovery",
        ),
        (
            &mapped,
            "interval 5s, fall 3 (the most failed cycles a mapped test waited for), timeout 2000ms",
        ),
        (
            &assumed,
            "monitrc:14: shard r9001: redis1 is its master (the first host tested on port 9001), replicas: redis2",
        ),
        (&assumed, "(8001 → r9001, 8002 → r9002)"),
        (
            &not,
            "monitrc:9: set alert ops@whiskymedia.example: medic sends no mail",
        ),
        (
            &not,
            "monitrc:39: check system monit.barton.internal: resource checks",
        ),
        (&not, "monitrc:46: check process sshd:"),
        (&not, "app-side proxies"),
        (&not, "DNS records"),
    ] {
        assert!(part.contains(line), "{line} in:\n{part}");
    }
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("monitrc");
    std::fs::write(
        &bad,
        "set daemon 5\ncheck host redis1 with address 10.0.1.10\n  if failed port 70000 then alert\n",
    )
    .unwrap();
    let out = medic(&["import", "monit", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "medic: {}:3: port: expected a port number (1 to 65535)\n",
            bad.display()
        )
    );
    std::fs::write(&bad, "set daemon 5\n").unwrap();
    let out = medic(&["import", "monit", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no `check` statement: expected a monit control file"),
        "{}",
        text(&out.stderr)
    );
    // A Debian-style monitrc whose checks are all in included files.
    std::fs::write(&bad, "set daemon 30\ninclude /etc/monit/conf.d/*\n").unwrap();
    let out = medic(&["import", "monit", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(
            "no `check` statement here, and includes are not followed (include /etc/monit/conf.d/*): import the files with the checks"
        ),
        "{}",
        text(&out.stderr)
    );
    let out = medic(&["import", "monit", "tests/fixtures/monit/nothing-here"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with(
            "medic: reading the monit control file tests/fixtures/monit/nothing-here:"
        ),
        "{}",
        text(&out.stderr)
    );
    // Without the hosts file the names cannot be resolved: the draft says so, and validation
    // refuses it at those lines rather than guessing.
    let out = medic(&["import", "monit", MONITRC]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("monitrc:14: the address of redis1: redis1.barton.internal is not an IP address and not in the hosts file (--hosts FILE); the draft says TODO"),
        "{}",
        text(&out.stderr)
    );
    let draft = dir.path().join("draft.yaml");
    std::fs::write(&draft, &out.stdout).unwrap();
    let redis1 = text(&out.stdout)
        .lines()
        .position(|l| l.starts_with("  - {name: redis1, role: redis, address: \"TODO"))
        .unwrap()
        + 1;
    let out = medic(&["validate", draft.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!(
            "{}:{redis1}:42: not an IP address; expected one like",
            draft.display()
        )),
        "{}",
        text(&out.stderr)
    );
}
