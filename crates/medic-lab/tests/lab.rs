//! The lab on this host's real network namespaces (needs root, as CI has).

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use medic_cloud::*;
use medic_lab::{Fault, Lab, LabConfig};
use medic_plan::LaunchSpec;
use medic_ssh::{Host, HostKeys, Remote, Ssh, run_playbook};
use serde_json::json;

const T: Duration = Duration::from_secs(10);

/// A lab of its own (bridge, /24, prefix, state), torn down when dropped, even on failure.
struct TestLab {
    lab: Lab,
    client_key: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for TestLab {
    fn drop(&mut self) {
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        for ns in String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
        {
            if ns.starts_with(&self.lab.cfg.prefix) {
                let pids = Command::new("ip")
                    .args(["netns", "pids", ns])
                    .output()
                    .unwrap();
                for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                    let _ = Command::new("kill")
                        .args(["-s", "KILL", "--", pid])
                        .status();
                }
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.lab.cfg.bridge])
            .status();
    }
}

fn test_lab() -> TestLab {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let p = std::process::id() % 200;
    let dir = tempfile::tempdir().unwrap();
    let client_key = dir.path().join("id_ed25519");
    medic_testkit::keygen(&client_key, "controller");
    let authorized_key = std::fs::read_to_string(client_key.with_extension("pub")).unwrap();
    let amis = BTreeMap::from([
        (
            "redis".to_owned(),
            vec![PathBuf::from("/usr/bin/redis-server")],
        ),
        (
            "haproxy".to_owned(),
            vec![PathBuf::from("/usr/sbin/haproxy")],
        ),
        (
            "future".to_owned(),
            vec![PathBuf::from("/usr/bin/no-such-program")],
        ),
    ]);
    let cfg = LabConfig {
        subnet: [
            10,
            78 + (n as u8 / 50),
            (p as u8).wrapping_add((n % 50) as u8 * 5),
        ],
        bridge: format!("mlb{p}x{n}"),
        state_dir: dir.path().join("lab"),
        prefix: format!("mlt{p}x{n}-"),
        authorized_key,
        amis,
    };
    TestLab {
        lab: Lab::new(cfg),
        client_key,
        _dir: dir,
    }
}

fn spec(machine: &str, ami: &str, recovery: &str, step: usize) -> LaunchSpec {
    LaunchSpec {
        machine: machine.into(),
        role: medic_topology::Role::Redis,
        ami: ami.into(),
        image_id: None,
        instance_types: Vec::new(),
        subnet: None,
        security_groups: Vec::new(),
        key_pair: None,
        instance_profile: None,
        tags: BTreeMap::from([
            (TAG_TOPOLOGY.to_owned(), "barton".to_owned()),
            (TAG_MACHINE.to_owned(), machine.to_owned()),
            (TAG_RECOVERY.to_owned(), recovery.to_owned()),
            (TAG_STEP.to_owned(), step.to_string()),
        ]),
        client_token: format!("{recovery}-{step}"),
        from_spares: false,
    }
}

/// Launches, waits for sshd, and returns an SSH handle that verifies the recorded host key.
async fn up(t: &TestLab, machine: &str) -> (Instance, Ssh, Host, tempfile::TempDir) {
    let l = t
        .lab
        .launch(&spec(machine, "redis", "rec-1", 1))
        .await
        .unwrap();
    let i = wait_running(&t.lab, &l.instance.id, T, Duration::from_millis(50))
        .await
        .unwrap();
    let addr = i.address.unwrap();
    wait_port(SocketAddr::new(addr, 22), T).await.unwrap();
    let kh = tempfile::tempdir().unwrap();
    let ssh = Ssh::new(&kh.path().join("known_hosts")).unwrap();
    let host = Host {
        name: machine.into(),
        addr,
        port: 22,
        user: medic_lab::LOGIN_USER.into(),
        key: Some(t.client_key.clone()),
        host_keys: HostKeys::Strict,
    };
    for key in t.lab.host_keys(&i.id).await.unwrap() {
        ssh.learn_host_key(&host, &key).unwrap();
    }
    (i, ssh, host, kh)
}

fn playbook(name: &str) -> medic_playbook::Playbook {
    medic_playbook::load_playbook(
        &std::path::PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../playbooks")
        .join(format!("{name}.yaml")),
    )
    .unwrap()
}

fn connects(addr: SocketAddr) -> Result<(), std::io::ErrorKind> {
    TcpStream::connect_timeout(&addr, Duration::from_millis(700))
        .map(drop)
        .map_err(|e| e.kind())
}

/// Whether the SSH banner arrives within a short time (it does not from a hung machine).
fn banner(addr: SocketAddr) -> bool {
    use std::io::Read;
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(700)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut b = [0u8; 4];
    matches!(s.read(&mut b), Ok(4)) && &b == b"SSH-"
}

/// After a heal the link comes back and the host's ARP entry for the address may still say
/// "failed" for a moment: wait for the condition, within a bound.
fn eventually(what: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if what() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A TCP connection from inside another machine's namespace.
fn connects_from(t: &TestLab, machine: &str, addr: SocketAddr) -> bool {
    let ns = t.lab.live(machine).unwrap().netns;
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "python3",
            "-c",
            &format!(
                "import socket; socket.create_connection(('{}', {}), 1)",
                addr.ip(),
                addr.port()
            ),
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[tokio::test]
async fn a_machine_launches_runs_the_redis_playbook_and_terminates_without_a_trace() {
    if !medic_testkit::root_or_skip(
        "a_machine_launches_runs_the_redis_playbook_and_terminates_without_a_trace",
    ) {
        return;
    }
    let t = test_lab();
    let (i, ssh, host, _kh) = up(&t, "redis1").await;
    assert_eq!(
        i.address.unwrap(),
        IpAddr::from([
            t.lab.cfg.subnet[0],
            t.lab.cfg.subnet[1],
            t.lab.cfg.subnet[2],
            10
        ])
    );

    // Its own /etc: the login user exists there and not on this host.
    let out = ssh
        .run(
            &host,
            "id -u; grep -c '^medic:' /etc/passwd; ls /var/lib",
            T,
        )
        .await
        .unwrap();
    assert_eq!(out.stdout, "0\n1\nmedic-home\n", "{out:?}");
    assert!(
        !std::fs::read_to_string("/etc/passwd")
            .unwrap()
            .contains("medic lab login")
    );

    let vars = json!({
        "host": {"name": "redis1", "address": i.address.unwrap().to_string(), "role": "redis", "topology": "barton"},
        "shards": [{"name": "r9001", "port": 9001, "role": "master", "master_host": null, "master_port": null, "persistence": "none", "maxmemory": null}],
        "auth": null,
        "tls": null,
    });
    run_playbook(&ssh, &host, &playbook("redis"), &vars)
        .await
        .unwrap();
    let mut probe = medic_redis::Probe::new(
        medic_redis::RedisAddr::new(i.address.unwrap(), 9001),
        Some(medic_redis::Role::Master),
        T,
    );
    assert!(
        probe.check().await.is_up(),
        "redis answers on the machine's own address"
    );
    // Its files are where the playbook put them, inside the machine.
    assert!(
        t.lab
            .cfg
            .state_dir
            .join("machines")
            .join(&i.id)
            .join("etc-upper/redis/redis-9001.conf")
            .exists()
    );

    assert_eq!(
        t.lab.terminate(&i.id).await.unwrap(),
        TerminateOutcome::Terminated
    );
    let ns_list = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!ns_list.contains(&t.lab.cfg.prefix), "{ns_list}");
    assert!(
        connects(SocketAddr::new(i.address.unwrap(), 9001)).is_err(),
        "nothing answers at its address"
    );
    assert_eq!(
        t.lab.terminate(&i.id).await.unwrap(),
        TerminateOutcome::AlreadyGone
    );
    assert_eq!(
        t.lab.describe(&i.id).await.unwrap().unwrap().state,
        InstanceState::Terminated
    );
    assert!(list_owned(&t.lab, "barton").await.unwrap().is_empty());
}

#[tokio::test]
async fn launch_is_idempotent_and_survives_a_new_controller() {
    if !medic_testkit::root_or_skip("launch_is_idempotent_and_survives_a_new_controller") {
        return;
    }
    let t = test_lab();
    let a = t
        .lab
        .launch(&spec("redis1", "redis", "rec-9", 13))
        .await
        .unwrap();
    // A new Lab value (a restarted controller) reads the state from disk.
    let again = Lab::new(t.lab.cfg.clone());
    let b = again
        .launch(&spec("redis1", "redis", "rec-9", 13))
        .await
        .unwrap();
    assert!(b.reused);
    assert_eq!(a.instance.id, b.instance.id);
    assert_eq!(list_owned(&again, "barton").await.unwrap().len(), 1);
    // A replacement gets a new address.
    again.terminate(&a.instance.id).await.unwrap();
    let c = again
        .launch(&spec("redis1", "redis", "rec-10", 13))
        .await
        .unwrap();
    assert_ne!(c.instance.address, a.instance.address);
    // An AMI whose programs are not on this host is refused, naming the program.
    let e = again
        .launch(&spec("x", "future", "rec-11", 1))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("/usr/bin/no-such-program"), "{e}");
}

#[tokio::test]
async fn faults_do_what_they_say() {
    if !medic_testkit::root_or_skip("faults_do_what_they_say") {
        return;
    }
    let t = test_lab();
    let (a, ..) = up(&t, "a").await;
    let (b, ..) = up(&t, "b").await;
    let a_ssh = SocketAddr::new(a.address.unwrap(), 22);
    let b_ssh = SocketAddr::new(b.address.unwrap(), 22);
    assert!(banner(a_ssh) && banner(b_ssh));

    // Hang: connections are accepted by the kernel, nothing answers; heal resumes it.
    t.lab.fault("b", Fault::Hang).await.unwrap();
    assert!(connects(b_ssh).is_ok() && !banner(b_ssh));
    t.lab.fault("b", Fault::Heal).await.unwrap();
    assert!(eventually(|| banner(b_ssh)));

    // Partition from the monitor only: silent to us, still reachable from machine a.
    t.lab
        .fault("b", Fault::Partition { monitor_only: true })
        .await
        .unwrap();
    assert_eq!(connects(b_ssh), Err(std::io::ErrorKind::TimedOut));
    assert!(
        connects_from(&t, "a", b_ssh),
        "another machine still reaches it"
    );
    t.lab.fault("b", Fault::Heal).await.unwrap();
    assert!(eventually(|| banner(b_ssh)));

    // Partition both ways: alive, reachable by no one.
    t.lab
        .fault(
            "b",
            Fault::Partition {
                monitor_only: false,
            },
        )
        .await
        .unwrap();
    assert!(connects(b_ssh).is_err());
    assert!(!connects_from(&t, "a", b_ssh));
    t.lab.fault("b", Fault::Heal).await.unwrap();
    assert!(eventually(|| banner(b_ssh)));

    // Crash: every process gone and silence — no refusal either.
    t.lab.fault("a", Fault::Crash).await.unwrap();
    assert!(connects(a_ssh).is_err_and(|k| k != std::io::ErrorKind::ConnectionRefused));
    let ns = t.lab.live("a").unwrap().netns;
    let pids = Command::new("ip")
        .args(["netns", "pids", &ns])
        .output()
        .unwrap();
    assert!(
        pids.stdout.is_empty(),
        "no process left in a crashed machine"
    );
}

#[tokio::test]
async fn down_removes_everything_twice() {
    if !medic_testkit::root_or_skip("down_removes_everything_twice") {
        return;
    }
    let t = test_lab();
    t.lab
        .launch(&spec("redis1", "redis", "rec-1", 1))
        .await
        .unwrap();
    t.lab
        .launch(&spec("redis2", "redis", "rec-1", 2))
        .await
        .unwrap();
    assert_eq!(t.lab.down().await.unwrap(), 2);
    let ns_list = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!ns_list.contains(&t.lab.cfg.prefix));
    assert!(
        !Command::new("ip")
            .args(["link", "show", &t.lab.cfg.bridge])
            .status()
            .unwrap()
            .success(),
        "bridge removed"
    );
    assert!(t.lab.records().is_empty());
    assert_eq!(t.lab.down().await.unwrap(), 0);
}
