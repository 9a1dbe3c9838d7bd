//! The election and the fencing token against a real etcd (`etcd` from Debian's etcd-server,
//! started per test on a loopback address of its own).

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use medic_coord::etcd::{Etcd, EtcdError};
use medic_testkit::{Proc, program, unique_loopback, wait_port, wait_until};

struct Server {
    proc: Proc,
    client: SocketAddr,
    _dir: tempfile::TempDir,
}

fn etcd() -> Server {
    let ip = unique_loopback();
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (format!("http://{ip}:2379"), format!("http://{ip}:2380"));
    let mut cmd = Command::new(program("etcd"));
    cmd.args(["--name", "t", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("t={peer}")]);
    let proc = Proc::spawn("etcd", cmd, dir.path().join("etcd.log"));
    let client: SocketAddr = format!("{ip}:2379").parse().unwrap();
    assert!(
        wait_port(client, Duration::from_secs(10)),
        "etcd did not start: {}",
        proc.log_text()
    );
    // Listening is not serving: a new member answers once it has elected itself.
    let c = Etcd::new(vec![client], Duration::from_secs(2));
    let rt = rt();
    wait_until(
        "etcd serves requests",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            rt.block_on(c.leader("/medic/test/ready"))
                .map_err(|e| e.to_string())
        },
    );
    Server {
        proc,
        client,
        _dir: dir,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const KEY: &str = "/medic/test/leader";

#[test]
fn one_leader_at_a_time_and_a_deposed_leader_cannot_write() {
    let server = etcd();
    let rt = rt();
    let c = Etcd::new(vec![server.client], Duration::from_secs(2));
    let (a, b) = rt.block_on(async {
        (
            c.grant(Duration::from_secs(3)).await.unwrap(),
            c.grant(Duration::from_secs(30)).await.unwrap(),
        )
    });
    // a stands first and wins; b stands and finds a.
    let first = rt.block_on(c.campaign(KEY, "monitor-a", a.id)).unwrap();
    assert_eq!(first.name, "monitor-a");
    let seen_by_b = rt.block_on(c.campaign(KEY, "monitor-b", b.id)).unwrap();
    assert_eq!(seen_by_b, first, "b does not take over a live leader");
    assert!(
        rt.block_on(c.put_if_leader(KEY, first.token, "/medic/test/step", "1 by a"))
            .unwrap()
    );
    // a stops renewing (a leader host that froze): its lease expires, b takes over with a
    // higher token.
    let second = wait_until(
        "b leads after a's lease expired",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let l = rt.block_on(c.campaign(KEY, "monitor-b", b.id)).unwrap();
            if l.name == "monitor-b" {
                Ok(l)
            } else {
                Err(format!("{l:?}"))
            }
        },
    );
    assert!(second.token > first.token, "{second:?} after {first:?}");
    // a wakes up and writes with its old token: refused; b's write lands.
    assert!(
        !rt.block_on(c.put_if_leader(KEY, first.token, "/medic/test/step", "2 by a"))
            .unwrap()
    );
    assert!(
        rt.block_on(c.put_if_leader(KEY, second.token, "/medic/test/step", "2 by b"))
            .unwrap()
    );
    assert_eq!(
        rt.block_on(c.get("/medic/test/step")).unwrap().as_deref(),
        Some("2 by b")
    );
    // a's lease is gone for good.
    assert!(matches!(
        rt.block_on(c.keep_alive(a.id)),
        Err(EtcdError::LeaseGone { .. })
    ));
}

#[test]
fn a_leader_that_steps_down_hands_over_at_once() {
    let server = etcd();
    let rt = rt();
    let c = Etcd::new(vec![server.client], Duration::from_secs(2));
    let a = rt.block_on(c.grant(Duration::from_secs(30))).unwrap();
    let b = rt.block_on(c.grant(Duration::from_secs(30))).unwrap();
    assert_eq!(rt.block_on(c.campaign(KEY, "a", a.id)).unwrap().name, "a");
    assert!(rt.block_on(c.keep_alive(a.id)).unwrap() > Duration::ZERO);
    rt.block_on(c.revoke(a.id)).unwrap();
    assert_eq!(rt.block_on(c.leader(KEY)).unwrap(), None);
    assert_eq!(rt.block_on(c.campaign(KEY, "b", b.id)).unwrap().name, "b");
}

#[test]
fn an_unreachable_etcd_is_an_error_within_the_bound() {
    let mut server = etcd();
    let rt = rt();
    let c = Etcd::new(vec![server.client], Duration::from_millis(500));
    let a = rt.block_on(c.grant(Duration::from_secs(5))).unwrap();
    server.proc.kill();
    let started = std::time::Instant::now();
    let e = rt.block_on(c.keep_alive(a.id)).unwrap_err();
    assert!(matches!(e, EtcdError::Unreachable { .. }), "{e}");
    // Bounded: the leader learns within its timeout that it cannot renew (and stops acting by
    // its tenure's deadline).
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
