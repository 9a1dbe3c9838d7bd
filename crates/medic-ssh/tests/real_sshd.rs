//! Against a real sshd with its own host key, a dedicated user whose shell is /bin/sh, and (for
//! the playbooks) its own /etc/redis, /var/lib/redis, /var/log/redis and /run/redis.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::path::Path;
use std::time::{Duration, Instant};

use medic_ssh::*;
use medic_testkit::{Sshd, unique_loopback};
use serde_json::json;

const T: Duration = Duration::from_secs(10);
const REDIS_DIRS: &[&str] = &[
    "/etc/redis",
    "/var/lib/redis",
    "/var/log/redis",
    "/run/redis",
];

fn host(s: &Sshd, keys: HostKeys) -> Host {
    Host {
        name: "lab1".into(),
        addr: s.addr.ip(),
        port: s.addr.port(),
        user: s.user.clone(),
        key: Some(s.client_key.clone()),
        host_keys: keys,
    }
}

fn ssh_for(s: &Sshd) -> Ssh {
    Ssh::new(&s.known_hosts_file()).unwrap()
}

#[tokio::test]
async fn commands_report_status_stdout_and_stderr_over_one_session() {
    if !medic_testkit::root_or_skip("commands_report_status_stdout_and_stderr_over_one_session") {
        return;
    }
    let s = Sshd::start(unique_loopback(), &[]);
    let ssh = ssh_for(&s);
    let h = host(&s, HostKeys::Strict);
    let out = ssh
        .run(&h, "echo out; echo err >&2; exit 3", T)
        .await
        .unwrap();
    assert_eq!(
        out,
        CommandOutput {
            status: Some(3),
            stdout: "out\n".into(),
            stderr: "err\n".into()
        }
    );
    assert_eq!(ssh.run(&h, "id -u", T).await.unwrap().stdout, "0\n");
    // Quoting survives: the command is run by sh -c exactly as written.
    let out = ssh
        .run(&h, "printf '%s|' \"a b\" 'c'\"'\"'d'", T)
        .await
        .unwrap();
    assert_eq!(out.stdout, "a b|c'd|");
    // Many commands, one multiplexed session.
    for i in 0..20 {
        assert_eq!(
            ssh.run(&h, &format!("echo {i}"), T).await.unwrap().stdout,
            format!("{i}\n")
        );
    }
    let masters = std::fs::read_to_string(s.dir.path().join("sshd.log"))
        .unwrap()
        .matches("Accepted publickey")
        .count();
    assert_eq!(masters, 1, "one SSH connection for every command");
}

#[tokio::test]
async fn upload_is_atomic_and_sets_the_mode() {
    if !medic_testkit::root_or_skip("upload_is_atomic_and_sets_the_mode") {
        return;
    }
    let s = Sshd::start(unique_loopback(), &["/etc/redis"]);
    let ssh = ssh_for(&s);
    let h = host(&s, HostKeys::Strict);
    let content = b"line 1\nline 2 with 'quotes' and $dollars\n";
    ssh.upload(&h, "/etc/redis/sub/test.conf", content, 0o640, T)
        .await
        .unwrap();
    let real = s.private_path("/etc/redis").unwrap().join("sub/test.conf");
    assert_eq!(std::fs::read(&real).unwrap(), content);
    let out = ssh
        .run(
            &h,
            "stat -c %a /etc/redis/sub/test.conf; ls /etc/redis/sub",
            T,
        )
        .await
        .unwrap();
    assert_eq!(
        out.stdout, "640\ntest.conf\n",
        "mode set, no temporary file left behind"
    );
    // This machine's own /etc/redis was not touched.
    assert!(!Path::new("/etc/redis/sub/test.conf").exists());
}

#[tokio::test]
async fn a_wrong_host_key_is_refused() {
    if !medic_testkit::root_or_skip("a_wrong_host_key_is_refused") {
        return;
    }
    let s = Sshd::start(unique_loopback(), &[]);
    let other = Sshd::start(unique_loopback(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("known_hosts");
    // The right address, another server's key.
    let wrong =
        other
            .known_hosts_line
            .replacen(&other.addr.ip().to_string(), &s.addr.ip().to_string(), 1);
    std::fs::write(&kh, format!("{wrong}\n")).unwrap();
    let ssh = Ssh::new(&kh).unwrap();
    let e = ssh
        .run(&host(&s, HostKeys::Strict), "true", T)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, SshError::Connect { .. }), "{e:?}");
    assert!(
        text.contains("Host key verification failed")
            || text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{text}"
    );
    // Even accept-new does not accept a key that contradicts a recorded one.
    let e = ssh
        .run(&host(&s, HostKeys::AcceptNew), "true", T)
        .await
        .unwrap_err();
    assert!(matches!(e, SshError::Connect { .. }), "{e:?}");
}

#[tokio::test]
async fn an_unknown_host_needs_accept_new_or_a_learned_key() {
    if !medic_testkit::root_or_skip("an_unknown_host_needs_accept_new_or_a_learned_key") {
        return;
    }
    let s = Sshd::start(unique_loopback(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("known_hosts");
    let ssh = Ssh::new(&kh).unwrap();
    let e = ssh
        .run(&host(&s, HostKeys::Strict), "true", T)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("Host key verification failed"),
        "{e}"
    );
    // Learned from another source (the lab's record, the cloud's console output): accepted.
    let key = s.known_hosts_line.split_once(' ').unwrap().1;
    ssh.learn_host_key(&host(&s, HostKeys::Strict), key)
        .unwrap();
    assert!(
        ssh.run(&host(&s, HostKeys::Strict), "true", T)
            .await
            .unwrap()
            .success()
    );

    // accept-new on an empty file: accepted and recorded.
    let kh2 = dir.path().join("known_hosts2");
    let ssh2 = Ssh::new(&kh2).unwrap();
    assert!(
        ssh2.run(&host(&s, HostKeys::AcceptNew), "true", T)
            .await
            .unwrap()
            .success()
    );
    assert!(
        std::fs::read_to_string(&kh2)
            .unwrap()
            .contains(&s.addr.ip().to_string())
    );
}

#[tokio::test]
async fn a_silent_host_times_out_within_its_bound() {
    // Accepts TCP connections (the kernel does) and never says a word: like a hung machine.
    let ip = unique_loopback();
    let _listener = std::net::TcpListener::bind((ip, 22)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut ssh = Ssh::new(&dir.path().join("known_hosts")).unwrap();
    ssh.connect_timeout = Duration::from_secs(1);
    let h = Host {
        name: "silent".into(),
        addr: ip.into(),
        port: 22,
        user: "medic".into(),
        key: None,
        host_keys: HostKeys::Strict,
    };
    let t = Instant::now();
    let e = ssh.run(&h, "true", T).await.unwrap_err();
    assert!(matches!(e, SshError::Connect { .. }), "{e:?}");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "bounded: {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn a_command_over_its_timeout_is_reported() {
    if !medic_testkit::root_or_skip("a_command_over_its_timeout_is_reported") {
        return;
    }
    let s = Sshd::start(unique_loopback(), &[]);
    let ssh = ssh_for(&s);
    let e = ssh
        .run(
            &host(&s, HostKeys::Strict),
            "sleep 5",
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, SshError::Timeout { .. }), "{e:?}");
}

#[tokio::test]
async fn a_dropped_session_is_reopened() {
    if !medic_testkit::root_or_skip("a_dropped_session_is_reopened") {
        return;
    }
    let mut s = Sshd::start(unique_loopback(), &[]);
    let ssh = ssh_for(&s);
    let h = host(&s, HostKeys::Strict);
    assert!(ssh.run(&h, "true", T).await.unwrap().success());
    s.restart(); // every session it served is gone
    assert_eq!(
        ssh.run(&h, "echo again", T).await.unwrap().stdout,
        "again\n"
    );
}

fn playbook(name: &str) -> medic_playbook::Playbook {
    let path = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../playbooks")
    .join(format!("{name}.yaml"));
    medic_playbook::load_playbook(&path).unwrap()
}

#[tokio::test]
async fn the_redis_playbook_configures_a_real_redis_and_a_second_run_changes_nothing() {
    if !medic_testkit::root_or_skip(
        "the_redis_playbook_configures_a_real_redis_and_a_second_run_changes_nothing",
    ) {
        return;
    }
    let s = Sshd::start(unique_loopback(), REDIS_DIRS);
    let ssh = ssh_for(&s);
    let h = host(&s, HostKeys::Strict);
    let ip = s.addr.ip().to_string();
    let vars = json!({
        "host": {"name": "lab1", "address": ip, "role": "redis", "topology": "test"},
        "shards": [
            {"name": "r9001", "port": 9001, "role": "master", "master_host": null, "master_port": null, "persistence": "none", "maxmemory": null},
            {"name": "r9002", "port": 9002, "role": "replica", "master_host": ip, "master_port": 9001, "persistence": "aof", "maxmemory": "64mb"},
        ],
        "auth": null,
        "tls": null,
    });
    let pb = playbook("redis");
    let first = run_playbook(&ssh, &h, &pb, &vars).await.unwrap();
    let outcomes: Vec<(&str, &str)> = first
        .iter()
        .map(|r| {
            let kind = match r.outcome {
                StepOutcome::Ran => "ran",
                StepOutcome::Skipped { .. } => "skipped",
                StepOutcome::Changed => "changed",
                StepOutcome::Unchanged => "unchanged",
                StepOutcome::PortOpen => "port open",
            };
            (r.name.as_str(), kind)
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            // (The host has the redis user already.)
            ("the redis user", "skipped"),
            ("directories of r9001", "ran"),
            ("directories of r9002", "ran"),
            ("configuration of r9001", "changed"),
            ("configuration of r9002", "changed"),
            ("r9001's files belong to redis", "ran"),
            ("r9002's files belong to redis", "ran"),
            ("start r9001", "ran"),
            ("start r9002", "ran"),
            ("r9001 accepts connections", "port open"),
            ("r9002 accepts connections", "port open"),
        ]
    );

    // The servers are real, bound to the machine's address, in the roles the vars gave.
    let redis = medic_redis::Redis::default();
    let master = medic_redis::RedisAddr::new(s.addr.ip(), 9001);
    let replica = medic_redis::RedisAddr::new(s.addr.ip(), 9002);
    let info = medic_redis::wait_in_sync(&redis, replica, master, T)
        .await
        .unwrap();
    assert_eq!(info.role, medic_redis::Role::Replica);
    use medic_redis::RedisAdmin;
    assert_eq!(
        redis.replication(master).await.unwrap().role,
        medic_redis::Role::Master
    );
    let conf = std::fs::read_to_string(
        s.private_path("/etc/redis")
            .unwrap()
            .join("redis-9002.conf"),
    )
    .unwrap();
    assert!(
        conf.contains("appendonly yes") && conf.contains("maxmemory 64mb"),
        "{conf}"
    );

    // Again: nothing to do.
    let second = run_playbook(&ssh, &h, &pb, &vars).await.unwrap();
    assert!(
        second.iter().all(|r| matches!(
            r.outcome,
            StepOutcome::Skipped { .. } | StepOutcome::Unchanged | StepOutcome::PortOpen
        )),
        "{second:#?}"
    );
}

#[tokio::test]
async fn a_failing_step_names_host_playbook_step_exit_and_stderr() {
    if !medic_testkit::root_or_skip("a_failing_step_names_host_playbook_step_exit_and_stderr") {
        return;
    }
    let s = Sshd::start(unique_loopback(), &[]);
    let ssh = ssh_for(&s);
    let text = "name: broken\ndescription: fails\nsteps:\n  - name: fine\n    command: \"true\"\n  - name: explode\n    command: \"echo starting; echo first >&2; echo 'no such thing' >&2; exit 3\"\n  - name: never\n    command: \"true\"\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, text).unwrap();
    let pb = medic_playbook::load_playbook(&path).unwrap();
    let e = run_playbook(&ssh, &host(&s, HostKeys::Strict), &pb, &json!({}))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "lab1: playbook broken, step `explode` failed with exit 3: first\nno such thing"
    );
}

/// A login user who is not root (EC2's Debian `admin`): commands and uploads go through
/// `sudo -n`; without sudo rights, sudo's own refusal is what the caller sees.
#[tokio::test]
async fn a_non_root_user_works_through_sudo_and_a_user_without_it_is_told_why() {
    if !medic_testkit::root_or_skip(
        "a_non_root_user_works_through_sudo_and_a_user_without_it_is_told_why",
    ) {
        return;
    }
    let s = Sshd::start(unique_loopback(), &["/etc/redis"]);
    let ssh = ssh_for(&s);
    let mut h = host(&s, HostKeys::Strict);
    h.user = medic_testkit::SUDO_USER.into();
    assert_eq!(ssh.run(&h, "id -u", T).await.unwrap().stdout, "0\n");
    ssh.upload(&h, "/etc/redis/by-sudo.conf", b"x\n", 0o600, T)
        .await
        .unwrap();
    let out = ssh
        .run(&h, "stat -c '%U %a' /etc/redis/by-sudo.conf", T)
        .await
        .unwrap();
    assert_eq!(out.stdout, "root 600\n");

    h.user = medic_testkit::PLAIN_USER.into();
    let out = ssh.run(&h, "id -u", T).await.unwrap();
    assert!(!out.success());
    assert!(
        out.stderr.contains("sudo: a password is required"),
        "{out:?}"
    );
    let e = ssh
        .upload(&h, "/etc/redis/x.conf", b"x", 0o644, T)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("sudo: a password is required"),
        "{e}"
    );
    // What needs no privilege (a witness's probe) runs as the user itself, without sudo.
    let out = ssh.run_unprivileged(&h, "id -u; exit 3", T).await.unwrap();
    assert_eq!(out.status, Some(3), "{out:?}");
    assert_ne!(out.stdout.trim(), "0", "{out:?}");
    assert!(!out.stderr.contains("sudo"), "{out:?}");
}
