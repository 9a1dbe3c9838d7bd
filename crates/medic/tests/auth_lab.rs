//! The lab of examples/lab.yaml with `redis_auth`: every redis server refuses anyone who does
//! not log in, runs as its own user, and medic checks, fails over and replaces machines with
//! its own least-privilege login, while no password reaches anything medic prints, keeps or
//! sends. Needs root.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use common::*;

/// A webhook URL with its token in the path; port 9 refuses, so every delivery fails.
const SECRET_HOOK: &str = "http://127.0.0.1:9/services/T0000/B0000/XWEBHOOKTOKENX";

const PASSWORDS: [(&str, &str); 3] = [
    ("medic", "medic-Ls8vQ2xk9Tq4Wm7c"),
    ("replica", "replica-Hp3nZ6rt1Yb8Ke5d"),
    ("app", "app-Vc4jN9ws2Qf7Lx6g"),
];

fn secret_files(dir: &Path) -> Vec<String> {
    PASSWORDS
        .iter()
        .map(|(user, pass)| {
            let p = dir.join(user);
            std::fs::write(&p, format!("{pass}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            p.display().to_string()
        })
        .collect()
}

/// The uids of the redis-server processes in a lab machine's network namespace.
fn redis_uids(netns: &str) -> Vec<(u32, String)> {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", netns])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (comm.trim() == "redis-server").then_some(())?;
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let uid = status.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            Some((pid.parse().ok()?, uid))
        })
        .collect()
}

fn assert_redis_not_root(env: &Env, machine: &str) {
    let uids = redis_uids(&env.netns(machine));
    assert_eq!(
        uids.len(),
        2,
        "{machine}: one redis-server per shard: {uids:?}"
    );
    let redis_uid = std::process::Command::new("id")
        .args(["-u", "redis"])
        .output()
        .unwrap();
    let redis_uid = String::from_utf8_lossy(&redis_uid.stdout).trim().to_owned();
    for (pid, line) in uids {
        let real = line.split_whitespace().nth(1).unwrap();
        assert_eq!(
            real, redis_uid,
            "{machine}: redis-server {pid} runs as {line}"
        );
    }
}

#[test]
fn with_redis_auth_medic_checks_fails_over_and_replaces_and_tells_no_password() {
    let secrets = tempfile::tempdir().unwrap();
    let files = secret_files(secrets.path());
    let Some(mut env) = Env::new(3, |t| {
        // A second webhook whose URL (a secret, as Slack's are) cannot be reached.
        let t = t.replace(
            "notifications:\n",
            "notifications:\n  - webhook: {url_env: MEDIC_TEST_SECRET_HOOK, format: slack}\n",
        );
        format!(
            "{t}\nredis_auth:\n  medic: {{user: medic, password: {{file: {}}}}}\n  \
             replication: {{user: replica, password: {{file: {}}}}}\n  \
             clients:\n    - {{user: app, password: {{file: {}}}, rules: \"~* &* +@all -@dangerous\"}}\n",
            files[0], files[1], files[2]
        )
    }) else {
        return;
    };
    let (redis1, app) = (env.ip(10), env.ip(14));

    // Nobody without a login: not on the server, not through the proxies.
    for (host, port) in [(redis1.as_str(), 9001), (app.as_str(), 7001)] {
        let reply = cli(host, port, &["SET", "k", "v"]);
        assert!(reply.contains("NOAUTH"), "{host}:{port} answered {reply:?}");
    }
    assert_redis_not_root(&env, "redis1");
    assert_redis_not_root(&env, "redis2");
    CLIENT_AUTH
        .set(("app".to_owned(), PASSWORDS[2].1.to_owned()))
        .unwrap();
    assert_eq!(
        cli(&redis1, 9001, &["SET", "k", "v"]),
        "OK",
        "the app's login"
    );

    // Everything medic logs, at the most detailed level, is searched for secrets below.
    env.start(&[
        ("MEDIC_TEST_SECRET_HOOK", SECRET_HOOK),
        ("MEDIC_LOG", "trace"),
    ]);
    env.wait("both shards ok, replicas seen in sync", RECOVERY, |e| {
        ["r9001", "r9002"]
            .iter()
            .all(|s| e.shard(s)["state"] == "ok")
    });
    let writer = Writer::start(format!("{app}:7001").parse().unwrap());
    writer.wait_acked("the client's first writes", Instant::now(), 50);
    let crashed_at = Instant::now();
    env.fault("redis1", "crash", &[]);
    env.wait("the recovery of redis1", RECOVERY, |e| {
        e.ended("machine redis1 lost", "completed")
    });
    env.wait(
        "both shards ok again, the replacement a replica",
        RECOVERY,
        |e| {
            ["r9001", "r9002"].iter().all(|s| {
                let sh = e.shard(s);
                sh["state"] == "ok"
                    && sh["master"] == "redis2"
                    && sh["replicas"][0]["machine"] == "redis1"
            })
        },
    );
    let settled = Instant::now();
    writer.wait_acked("writes through the app proxy", settled, 20);
    let log = writer.finish();
    assert_no_acknowledged_write_lost(&app, &log, crashed_at, settled);
    // The replacement logged in to its master (masterauth) and holds the last write.
    let last_ok = log.iter().rev().find(|(_, _, ok)| *ok).unwrap().1;
    wait_replicated(
        &env.ip(15),
        9001,
        &format!("w:{last_ok}"),
        &last_ok.to_string(),
    );
    assert_redis_not_root(&env, "redis1");
    let flush = cli(&env.ip(15), 9001, &["FLUSHALL"]);
    assert!(
        flush.contains("NOPERM"),
        "the app's rules leave out FLUSHALL: {flush:?}"
    );

    // No password in anything medic printed, kept or sent.
    let plan = medic(&["plan", env.f(), "--lose", "redis2", "--files"]);
    assert!(plan.status.success(), "{}", text(&plan));
    assert!(
        text(&plan).contains("masterauth ${secret:replica}"),
        "the plan shows where the replication password goes:\n{}",
        text(&plan)
    );
    let mut places = vec![
        ("medic plan".to_owned(), text(&plan)),
        ("the controller's log".to_owned(), env.logs()),
        (
            "/api/status".to_owned(),
            serde_json::to_string(&env.status()).unwrap(),
        ),
        (
            "/api/history".to_owned(),
            serde_json::to_string(&env.history()).unwrap(),
        ),
        ("/metrics".to_owned(), http_text(env.port, "/metrics")),
        ("the webhooks".to_owned(), env.hook.bodies_text()),
    ];
    let state = env._dir.path().join("lab/controller");
    for f in walk(&state) {
        let content = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        places.push((f.display().to_string(), content));
    }
    assert!(places.len() > 6, "the controller's state dir has files");
    let log = env.logs();
    assert!(
        log.contains("A notification was not sent.") && log.contains(" DEBUG "),
        "the failing webhook logged, at the most detailed level: {}",
        tail(&log, 20)
    );
    for (user, pass) in PASSWORDS.iter().chain(&[("the webhook", "XWEBHOOKTOKENX")]) {
        for (place, content) in &places {
            assert!(!content.contains(pass), "{user}'s secret in {place}");
        }
    }
    env.stop();
}
