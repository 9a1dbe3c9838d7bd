//! Against real redis-server processes with ACLs as medic's playbook renders them: `default`
//! off, medic's own user limited to what medic sends, replicas logging in to their master.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::time::Duration;

use medic_redis::*;
use medic_testkit::{RedisServer, unique_loopback};
use medic_topology::auth::{MEDIC_RULES, REPLICATION_RULES};

const MEDIC_PASS: &str = "medic-0123456789-abcdef";
const REPL_PASS: &str = "repl-0123456789-abcdef";
const APP_PASS: &str = "app-0123456789-abcdef";

fn acl() -> String {
    format!(
        "user default off\nuser medic on >{MEDIC_PASS} {MEDIC_RULES}\n\
         user replica on >{REPL_PASS} {REPLICATION_RULES}\n\
         user app on >{APP_PASS} ~* &* +@all -@dangerous\n\
         masteruser replica\nmasterauth {REPL_PASS}\n"
    )
}

fn medic() -> Option<Credentials> {
    Some(Credentials::new("medic", MEDIC_PASS))
}

#[tokio::test]
async fn medic_checks_and_fails_over_a_pair_with_acls_with_its_own_user_only() {
    let master = RedisServer::start_with_config(unique_loopback(), 9001, &acl());
    let replica = RedisServer::start_with_config(
        unique_loopback(),
        9001,
        &format!("{}replicaof {} 9001\n", acl(), master.addr.ip()),
    );
    let (m, r) = (RedisAddr::from(master.addr), RedisAddr::from(replica.addr));
    let redis = Redis::with_auth(medic());

    // Anyone without a password is refused, whatever they send.
    for args in [
        &["PING"][..],
        &["SET", "k", "v"],
        &["REPLICAOF", "NO", "ONE"],
    ] {
        let reply = master.cli(args);
        assert!(reply.contains("NOAUTH"), "{args:?} answered {reply:?}");
    }
    let mut anonymous = Probe::new(m, None, Duration::from_secs(1));
    match anonymous.check().await {
        ProbeResult::ErrorReply { code, .. } => assert!(is_auth_refusal(&code), "{code}"),
        other => panic!("an anonymous probe saw {other:?}"),
    }
    let mut wrong = Probe::new(m, None, Duration::from_secs(1))
        .with_auth(Some(Credentials::new("medic", "not-the-password-at-all")));
    match wrong.check().await {
        ProbeResult::ErrorReply { code, message } => {
            assert_eq!(code, "WRONGPASS", "{message}");
            assert!(!message.contains("not-the-password"), "{message}");
        }
        other => panic!("a probe with a wrong password saw {other:?}"),
    }

    // medic's probe logs in and reads the replication state; the replica logged in to its
    // master (masteruser/masterauth) and is in sync.
    let mut probe = Probe::new(m, None, Duration::from_secs(1)).with_auth(medic());
    assert!(
        probe.check().await.is_up(),
        "medic's probe with its password"
    );
    assert!(
        probe.check().await.is_up(),
        "the kept connection stays logged in"
    );
    let synced = wait_in_sync(&redis, r, m, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(synced.master_link_status, Some(LinkStatus::Up));

    // Everything medic sends in a failover works under its ACL.
    redis.ping(m).await.unwrap();
    redis.role(m).await.unwrap();
    redis
        .write_probe(m, "medic:probe", "1", 1_000)
        .await
        .unwrap();
    redis
        .pause_writes(m, Duration::from_millis(500))
        .await
        .unwrap();
    redis.unpause(m).await.unwrap();
    redis.replicaof(r, None).await.unwrap();
    redis.config_rewrite(r).await.unwrap();
    redis.replicaof(m, Some(r)).await.unwrap();
    let synced = wait_in_sync(&redis, m, r, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(synced.role, Role::Replica);

    // ... and nothing else: medic's user can neither read nor write the data, nor flush it.
    let denied = [("SET", redis.write_probe(r, "app:key", "1", 1_000).await)];
    for (what, r) in denied {
        match r {
            Err(RedisError::Reply { code, .. }) => assert_eq!(code, "NOPERM", "{what}"),
            other => panic!("{what} with medic's user: {other:?}"),
        }
    }
    // CONFIG SET is not among them: with medic's password one cannot make a replica
    // writable or change what it replicates from.
    match redis.config_set(m, "replica-read-only", "no").await {
        Err(RedisError::Reply { code, .. }) => assert_eq!(code, "NOPERM"),
        other => panic!("CONFIG SET with medic's user: {other:?}"),
    }
    let flush = redis_cli_as(replica.addr, "medic", MEDIC_PASS, &["FLUSHALL"]);
    assert!(
        flush.contains("NOPERM"),
        "FLUSHALL as medic answered {flush:?}"
    );
    let get = redis_cli_as(replica.addr, "medic", MEDIC_PASS, &["GET", "medic:probe"]);
    assert!(get.contains("NOPERM"), "GET as medic answered {get:?}");
    let app = redis_cli_as(replica.addr, "app", APP_PASS, &["SET", "app:key", "v"]);
    assert_eq!(app.trim(), "OK", "the application's user writes");
}

fn redis_cli_as(addr: std::net::SocketAddr, user: &str, pass: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(medic_testkit::program("redis-cli"))
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["--user", user, "--no-auth-warning"])
        .env("REDISCLI_AUTH", pass)
        .args(args)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
