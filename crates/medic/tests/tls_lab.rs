//! The lab of examples/lab.yaml with `redis_tls` (and `redis_auth`): every redis server speaks
//! only TLS; the clients, HAProxy's checks, replication and medic verify its certificate; and
//! medic checks, fails over and replaces machines over TLS, while the key reaches nothing medic
//! prints or keeps. Needs root.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::*;
use medic_testkit::Certs;

const NAME: &str = "redis.lab.internal";
const PASSWORDS: [(&str, &str); 3] = [
    ("medic", "medic-Tq8vQ2xk9Ls4Wm7c"),
    ("replica", "replica-Yb3nZ6rt1Hp8Ke5d"),
    ("app", "app-Qf4jN9ws2Vc7Lx6g"),
];

/// What a client in the clear gets from `host:port`: the first line of the reply to a PING.
fn plain_ping(host: &str, port: u16) -> String {
    let addr = format!("{host}:{port}").parse().unwrap();
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return "refused".to_owned();
    };
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = s.write_all(b"PING\r\n");
    let mut line = String::new();
    let _ = BufReader::new(s).read_line(&mut line);
    line
}

#[test]
fn with_redis_tls_medic_checks_fails_over_and_replaces_and_the_key_stays_secret() {
    let certs = Certs::issue(NAME);
    std::fs::set_permissions(&certs.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key_text = std::fs::read_to_string(&certs.key).unwrap();
    let key_body = key_text.lines().nth(1).unwrap().to_owned();
    let secrets = tempfile::tempdir().unwrap();
    let files: Vec<String> = PASSWORDS
        .iter()
        .map(|(user, pass)| {
            let p = secrets.path().join(user);
            std::fs::write(&p, format!("{pass}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            p.display().to_string()
        })
        .collect();
    let Some(mut env) = Env::new(16, |t| {
        format!(
            "{t}\nredis_auth:\n  medic: {{user: medic, password: {{file: {}}}}}\n  \
             replication: {{user: replica, password: {{file: {}}}}}\n  \
             clients:\n    - {{user: app, password: {{file: {}}}}}\n\
             redis_tls:\n  name: {NAME}\n  ca: {}\n  cert: {}\n  key: {}\n",
            files[0],
            files[1],
            files[2],
            certs.ca.display(),
            certs.cert.display(),
            certs.key.display()
        )
    }) else {
        return;
    };
    let (redis1, app) = (env.ip(10), env.ip(14));

    // In the clear, nobody gets an answer: not from a server, not through the app proxy.
    for (host, port) in [(redis1.as_str(), 9001), (app.as_str(), 7001)] {
        let reply = plain_ping(host, port);
        assert!(
            !reply.contains("PONG") && !reply.contains("NOAUTH"),
            "{host}:{port} answered a client in the clear: {reply:?}"
        );
    }
    // Under TLS (the certificate verified), a client without a login is asked for one.
    CLIENT_TLS.set((certs.ca.clone(), NAME.to_owned())).unwrap();
    let reply = cli(&redis1, 9001, &["SET", "k", "v"]);
    assert!(
        reply.contains("NOAUTH"),
        "{redis1}:9001 under TLS: {reply:?}"
    );
    CLIENT_AUTH
        .set(("app".to_owned(), PASSWORDS[2].1.to_owned()))
        .unwrap();
    assert_eq!(
        cli(&app, 7001, &["SET", "k", "v"]),
        "OK",
        "through the app proxy"
    );
    // HAProxy's checks speak TLS and verify the certificate: each proxy sees its masters up.
    for proxy in ["haproxy1", "haproxy2"] {
        let servers = env.haproxy_servers(proxy, 9999, None);
        let ready: Vec<String> = servers
            .iter()
            .filter(|s| s.is_ready())
            .map(|s| format!("{}/{} {:?}", s.backend, s.server, s.op_state))
            .collect();
        assert_eq!(ready.len(), 2, "{proxy}: one master per shard: {servers:?}");
        assert!(
            servers
                .iter()
                .filter(|s| s.is_ready())
                .all(|s| s.op_state == medic_haproxy::OpState::Running),
            "{proxy}'s checks over TLS: {ready:?}"
        );
    }

    env.start(&[("MEDIC_LOG", "debug")]);
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
    // The replacement replicates over TLS and holds the last write.
    let last_ok = log.iter().rev().find(|(_, _, ok)| *ok).unwrap().1;
    wait_replicated(
        &env.ip(15),
        9001,
        &format!("w:{last_ok}"),
        &last_ok.to_string(),
    );
    let reply = plain_ping(&env.ip(15), 9001);
    assert!(
        !reply.contains("PONG") && !reply.contains("NOAUTH"),
        "the replacement answered a client in the clear: {reply:?}"
    );

    // The key in nothing medic printed or kept; the plan shows where it goes.
    let plan = medic(&["plan", env.f(), "--lose", "redis2", "--files"]);
    assert!(plan.status.success(), "{}", text(&plan));
    assert!(
        text(&plan).contains("${tls:key}") && text(&plan).contains("tls-port 9001"),
        "the plan shows the key's placeholder and the TLS port:\n{}",
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
    ];
    for f in walk(&env._dir.path().join("lab/controller")) {
        let content = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        places.push((f.display().to_string(), content));
    }
    for (place, content) in &places {
        assert!(!content.contains(&key_body), "the TLS key in {place}");
    }

    // The same deployment described without redis_tls. A reload cannot take TLS away under
    // the running controller ...
    let described = std::fs::read_to_string(&env.file).unwrap();
    let without = described[..described.find("redis_tls:").unwrap()].to_owned();
    std::fs::write(&env.file, &without).unwrap();
    let pid = env.run.as_ref().unwrap().id().to_string();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(hup.success());
    env.wait("the reload refused", Duration::from_secs(10), |e| {
        e.logs().contains("redis_auth or redis_tls changed")
    });
    std::fs::write(&env.file, &described).unwrap();
    env.stop();
    // ... and medic does not start on it (it would take every server for a silent one and fail
    // them all over), and says why.
    let plain = env._dir.path().join("without-tls.yaml");
    std::fs::write(&plain, &without).unwrap();
    let out = std::process::Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_medic"))
        .arg("run")
        .arg(&plain)
        .output()
        .unwrap();
    let said = text(&out);
    assert!(
        !out.status.success() && out.status.code() != Some(124),
        "medic run on TLS servers described without redis_tls: {:?}\n{said}",
        out.status
    );
    assert!(
        said.contains("not started") && said.contains("speaks TLS"),
        "{said}"
    );
}
