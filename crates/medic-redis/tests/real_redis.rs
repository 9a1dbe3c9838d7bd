//! Against real redis-server processes, each on its own loopback address.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::time::{Duration, Instant};

use medic_redis::*;
use medic_testkit::{Proc, RedisServer, unique_loopback};

fn addr(s: &RedisServer) -> RedisAddr {
    RedisAddr::from(s.addr)
}

fn pair() -> (RedisServer, RedisServer) {
    let master = RedisServer::start(unique_loopback(), 9001);
    let replica = RedisServer::start_replica_of(unique_loopback(), 9001, master.addr);
    (master, replica)
}

#[tokio::test]
async fn typed_replication_view_of_a_pair() {
    let (master, replica) = pair();
    let redis = Redis::default();
    for i in 0..100 {
        master.cli(&["SET", &format!("k{i}"), "v"]);
    }
    let synced = wait_in_sync(
        &redis,
        addr(&replica),
        addr(&master),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(synced.role, Role::Replica);
    assert_eq!(synced.master_link_status, Some(LinkStatus::Up));
    assert_eq!(synced.master, Some((master.addr.ip().to_string(), 9001)));

    redis.ping(addr(&master)).await.unwrap();
    match redis.role(addr(&master)).await.unwrap() {
        RoleReply::Master { offset, replicas } => {
            assert!(offset > 0);
            assert_eq!(replicas.len(), 1);
            assert_eq!(
                (replicas[0].0.as_str(), replicas[0].1),
                (replica.addr.ip().to_string().as_str(), 9001)
            );
        }
        other => panic!("{other:?}"),
    }
    match redis.role(addr(&replica)).await.unwrap() {
        RoleReply::Replica {
            master_port, state, ..
        } => assert_eq!((master_port, state.as_str()), (9001, "connected")),
        other => panic!("{other:?}"),
    }
    let m = redis.replication(addr(&master)).await.unwrap();
    assert_eq!(m.role, Role::Master);
    assert!(m.offset > 0);
    assert_eq!(m.replicas.len(), 1);
    // The replica announces its own address (replica-announce-ip), not 127.0.0.1.
    assert!(
        m.replicas[0].is_at(replica.addr.ip(), 9001),
        "{:?}",
        m.replicas
    );
    assert_eq!(m.replicas[0].state, "online");
}

#[tokio::test]
async fn promote_then_make_the_old_master_a_replica() {
    let (master, replica) = pair();
    let redis = Redis::default();
    master.cli(&["SET", "before", "1"]);
    wait_in_sync(
        &redis,
        addr(&replica),
        addr(&master),
        Duration::from_secs(10),
    )
    .await
    .unwrap();

    redis.replicaof(addr(&replica), None).await.unwrap();
    assert_eq!(
        redis.replication(addr(&replica)).await.unwrap().role,
        Role::Master
    );
    assert_eq!(
        replica.cli(&["SET", "after", "2"]),
        "OK",
        "the promoted replica takes writes"
    );

    redis
        .replicaof(addr(&master), Some(addr(&replica)))
        .await
        .unwrap();
    let info = wait_in_sync(
        &redis,
        addr(&master),
        addr(&replica),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(info.role, Role::Replica);
    assert_eq!(
        master.cli(&["GET", "after"]),
        "2",
        "the old master has the new master's data"
    );
    // Twice is harmless.
    redis
        .replicaof(addr(&master), Some(addr(&replica)))
        .await
        .unwrap();
    redis.replicaof(addr(&replica), None).await.unwrap();
}

#[tokio::test]
async fn pause_holds_writes_until_unpause() {
    let master = RedisServer::start(unique_loopback(), 9001);
    let redis = Redis::default();
    redis
        .pause_writes(addr(&master), Duration::from_secs(10))
        .await
        .unwrap();
    let a = master.addr;
    let writer = std::thread::spawn(move || medic_testkit::redis_cli(a, &["SET", "paused", "1"]));
    // The write arrived and is held: redis lists its client as blocked in a SET.
    medic_testkit::wait_until(
        "the SET to be held by the pause",
        Duration::from_secs(10),
        Duration::from_millis(10),
        || {
            let clients = master.cli(&["CLIENT", "LIST"]);
            let held = clients
                .lines()
                .any(|l| l.contains(" flags=b ") && l.contains(" cmd=set "));
            if held { Ok(()) } else { Err(clients) }
        },
    );
    assert_eq!(
        master.cli(&["GET", "paused"]),
        "",
        "reads go on; the write has not happened"
    );
    assert!(
        !writer.is_finished(),
        "the client still waits for its reply"
    );
    redis.unpause(addr(&master)).await.unwrap();
    assert_eq!(writer.join().unwrap(), "OK");
    assert_eq!(master.cli(&["GET", "paused"]), "1");
}

#[tokio::test]
async fn config_set_and_its_errors() {
    let master = RedisServer::start(unique_loopback(), 9001);
    let redis = Redis::default();
    redis
        .config_set(addr(&master), "min-replicas-to-write", "1")
        .await
        .unwrap();
    redis
        .config_set(addr(&master), "min-replicas-max-lag", "10")
        .await
        .unwrap();
    assert_eq!(
        master.cli(&["CONFIG", "GET", "min-replicas-to-write"]),
        "min-replicas-to-write\n1"
    );
    // With no replica, writes are now refused: redis's own error reaches us intact.
    let e = redis
        .config_set(addr(&master), "no-such-parameter", "1")
        .await
        .unwrap_err();
    match &e {
        RedisError::Reply { code, op, .. } => {
            assert_eq!(code, "ERR");
            assert_eq!(*op, "CONFIG SET");
        }
        other => panic!("expected a reply error, got {other:?}"),
    }
    assert!(
        e.to_string().starts_with(&format!(
            "redis {}: CONFIG SET: the server replied ERR",
            master.addr
        )),
        "{e}"
    );
}

#[tokio::test]
async fn a_replica_that_never_syncs_times_out_saying_why() {
    // Its master's address has no server at all.
    let nowhere = RedisAddr::new(unique_loopback().into(), 9001);
    let replica = RedisServer::start(unique_loopback(), 9001);
    let redis = Redis::default();
    redis
        .replicaof(addr(&replica), Some(nowhere))
        .await
        .unwrap();
    let t = Instant::now();
    let e = wait_caught_up(
        &redis,
        addr(&replica),
        nowhere,
        1,
        Duration::from_millis(600),
    )
    .await
    .unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "bounded by its timeout"
    );
    match &e {
        RedisError::NotInSync { state, .. } => assert!(state.starts_with("link down"), "{state}"),
        other => panic!("expected NotInSync, got {other:?}"),
    }
    assert!(e.to_string().contains("not in sync with"), "{e}");
}

#[tokio::test]
async fn probe_tells_up_wrong_role_refused_hung_and_error_replies_apart() {
    let (master, mut replica) = pair();
    let timeout = Duration::from_millis(300);

    let mut p = Probe::new(addr(&master), Some(Role::Master), timeout);
    assert!(matches!(p.check().await, ProbeResult::Up { info } if info.role == Role::Master));
    // The connection is kept: a second check does not reconnect (same client id).
    let clients_before = master.cli(&["CLIENT", "LIST"]).lines().count();
    for _ in 0..5 {
        assert!(p.check().await.is_up());
    }
    assert_eq!(
        master.cli(&["CLIENT", "LIST"]).lines().count(),
        clients_before
    );

    let mut wrong = Probe::new(addr(&replica), Some(Role::Master), timeout);
    assert_eq!(
        wrong.check().await,
        ProbeResult::WrongRole {
            expected: Role::Master,
            actual: Role::Replica
        }
    );

    // Hung (SIGSTOP): the kernel still accepts, nothing answers.
    let mut hung = Probe::new(addr(&replica), None, timeout);
    assert!(hung.check().await.is_up());
    replica.proc.signal("STOP");
    let t = Instant::now();
    assert_eq!(hung.check().await, ProbeResult::Timeout);
    assert!(t.elapsed() < timeout * 3, "bounded: {:?}", t.elapsed());
    replica.proc.signal("CONT");
    assert!(hung.check().await.is_up(), "back after CONT");

    // Dead process on a live host: refused.
    replica.proc.kill();
    assert_eq!(hung.check().await, ProbeResult::Refused);

    // An error reply is reported with redis's code.
    master.cli(&["CONFIG", "SET", "requirepass", "secret"]);
    let mut auth = Probe::new(addr(&master), None, timeout);
    match auth.check().await {
        ProbeResult::ErrorReply { code, .. } => assert_eq!(code, "NOAUTH"),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[tokio::test]
async fn a_hung_server_does_not_delay_probes_of_others() {
    let (master, replica) = pair();
    replica.proc.signal("STOP");
    let timeout = Duration::from_millis(500);
    let mut slow = Probe::new(addr(&replica), None, timeout);
    let mut fast = Probe::new(addr(&master), None, timeout);
    let hung = tokio::spawn(async move { slow.check().await });
    let t = Instant::now();
    assert!(fast.check().await.is_up());
    assert!(
        t.elapsed() < timeout,
        "the healthy server answered while the hung one was waited on"
    );
    assert_eq!(hung.await.unwrap(), ProbeResult::Timeout);
    replica.proc.signal("CONT");
}

/// Kills a server started by [`RedisServer::start_with_config`] and starts it again from its
/// config file, as a reboot, systemd or an operator would: it comes back as the file says.
fn restart_from_config(s: &mut RedisServer) {
    s.proc.kill();
    let mut cmd = std::process::Command::new(medic_testkit::program("redis-server"));
    cmd.arg(s.dir.path().join("redis.conf"));
    s.proc = Proc::spawn("redis-server", cmd, s.dir.path().join("redis.log"));
    assert!(
        medic_testkit::wait_port(s.addr, Duration::from_secs(10)),
        "redis {} did not restart:\n{}",
        s.addr,
        s.proc.log_text()
    );
    // It listens before it has loaded its data (a replica's sync leaves a dump.rdb behind).
    medic_testkit::wait_until(
        "the restarted server to have loaded its data",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let info = s.cli(&["INFO", "persistence"]);
            if info.contains("loading:0") {
                Ok(())
            } else {
                Err(info)
            }
        },
    );
}

fn replicaof_lines(s: &RedisServer) -> Vec<String> {
    std::fs::read_to_string(s.dir.path().join("redis.conf"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("replicaof"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_role_change_not_rewritten_is_lost_on_restart() {
    // The defect itself: a replica (by its config file, as the playbook writes it) promoted
    // at runtime only comes back as a replica of the old master.
    let master = RedisServer::start(unique_loopback(), 9001);
    let mut server = RedisServer::start_with_config(
        unique_loopback(),
        9001,
        &format!("replicaof {} 9001\n", master.addr.ip()),
    );
    let redis = Redis::default();
    redis.replicaof(addr(&server), None).await.unwrap();
    assert_eq!(
        redis.replication(addr(&server)).await.unwrap().role,
        Role::Master
    );
    restart_from_config(&mut server);
    let info = redis.replication(addr(&server)).await.unwrap();
    assert_eq!(
        info.role,
        Role::Replica,
        "the file's role, not the runtime one"
    );
    assert_eq!(info.master, Some((master.addr.ip().to_string(), 9001)));
}

#[tokio::test]
async fn role_changes_rewritten_into_the_config_file_survive_a_restart() {
    let master = RedisServer::start(unique_loopback(), 9001);
    master.cli(&["SET", "k", "v"]);
    // A master by its file (no `replicaof` line).
    let mut server = RedisServer::start_with_config(unique_loopback(), 9001, "");
    let redis = Redis::default();
    assert_eq!(
        redis.replication(addr(&server)).await.unwrap().role,
        Role::Master
    );

    // Made a replica and rewritten: the file names the master ...
    redis
        .replicaof(addr(&server), Some(addr(&master)))
        .await
        .unwrap();
    redis.config_rewrite(addr(&server)).await.unwrap();
    assert_eq!(
        replicaof_lines(&server),
        [format!("replicaof {} 9001", master.addr.ip())]
    );
    // ... and the restarted process replicates that master again: it gets what was written
    // while it was down.
    restart_from_config(&mut server);
    master.cli(&["SET", "while-down", "1"]);
    let info = wait_in_sync(
        &redis,
        addr(&server),
        addr(&master),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(info.role, Role::Replica);
    assert_eq!(info.master, Some((master.addr.ip().to_string(), 9001)));
    assert_eq!(
        server.cli(&["GET", "while-down"]),
        "1",
        "synced from the master"
    );

    // Promoted and rewritten: the file has no `replicaof` any more ...
    redis.replicaof(addr(&server), None).await.unwrap();
    redis.config_rewrite(addr(&server)).await.unwrap();
    assert_eq!(replicaof_lines(&server), Vec::<String>::new());
    // ... and the restarted process is a master, not a replica of the old one (which still
    // runs): it takes writes, and the old master has no replica.
    restart_from_config(&mut server);
    let info = redis.replication(addr(&server)).await.unwrap();
    assert_eq!(info.role, Role::Master);
    assert_eq!(info.master, None);
    assert_eq!(server.cli(&["SET", "after", "1"]), "OK");
    medic_testkit::wait_until(
        "the old master to have no replica",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let info = master.cli(&["INFO", "replication"]);
            if info.contains("connected_slaves:0") {
                Ok(())
            } else {
                Err(info)
            }
        },
    );
    // Twice is harmless.
    redis.config_rewrite(addr(&server)).await.unwrap();
}

#[tokio::test]
async fn config_rewrite_without_a_config_file_says_so() {
    // Started with its settings on the command line: no file to rewrite.
    let server = RedisServer::start(unique_loopback(), 9001);
    let redis = Redis::default();
    let e = redis.config_rewrite(addr(&server)).await.unwrap_err();
    assert!(
        matches!(e, RedisError::NoConfigFile { addr: a } if a == addr(&server)),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "redis {}: CONFIG REWRITE: the server runs without a config file, so nothing keeps its settings over a restart",
            server.addr
        )
    );
}
