//! Against real redis-server processes speaking only TLS, as medic's playbook renders them
//! with `redis_tls`: medic's checks and admin calls verify the certificate, a replica syncs
//! over TLS, and a hung server is told from a live one.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::time::Duration;

use medic_redis::*;
use medic_testkit::{Certs, RedisServer, unique_loopback};

const NAME: &str = "redis.medic.test";

fn client(certs: &Certs, name: &str) -> Redis {
    let ca = std::fs::read(&certs.ca).unwrap();
    Redis {
        tls: Some(Tls::new(&ca, name).unwrap()),
        ..Redis::default()
    }
}

#[tokio::test]
async fn medic_checks_and_replicates_over_tls_and_refuses_a_wrong_certificate() {
    let certs = Certs::issue(NAME);
    let master = RedisServer::start_with_config(unique_loopback(), 9001, &certs.redis_conf(9001));
    let replica = RedisServer::start_with_config(
        unique_loopback(),
        9001,
        &format!(
            "{}replicaof {} 9001\n",
            certs.redis_conf(9001),
            master.addr.ip()
        ),
    );
    let (m, r) = (RedisAddr::from(master.addr), RedisAddr::from(replica.addr));
    let redis = client(&certs, NAME);

    // The checks, with TLS: both up, in their roles.
    let mut probe = redis.probe(m, Some(Role::Master), Duration::from_secs(2));
    assert!(probe.check().await.is_up(), "{:?}", probe.check().await);
    // The replica synced from its master over TLS (tls-replication).
    wait_in_sync(&redis, r, m, Duration::from_secs(10))
        .await
        .unwrap();
    redis.ping(r).await.unwrap();
    // A write through a TLS connection reaches the replica.
    redis
        .write_probe(m, "medic:probe", "1", 60_000)
        .await
        .unwrap();
    let offset = redis.replication(m).await.unwrap().offset;
    wait_caught_up(&redis, r, m, offset, Duration::from_secs(5))
        .await
        .unwrap();

    // In the clear, the server does not answer as redis.
    let mut plain = Probe::new(m, None, Duration::from_secs(2));
    let got = plain.check().await;
    assert!(!got.is_up(), "a plain connection to a TLS port: {got:?}");
    // A certificate for another name, or from another CA, is refused.
    let wrong_name = client(&certs, "other.medic.test");
    let e = wrong_name.ping(m).await.unwrap_err();
    assert!(e.to_string().contains("connect"), "{e}");
    let other = Certs::issue(NAME);
    let e = client(&other, NAME).ping(m).await.unwrap_err();
    assert!(e.to_string().contains("connect"), "{e}");
    let mut p = client(&other, NAME).probe(m, None, Duration::from_secs(2));
    let got = p.check().await;
    // ... and the check says it answers, its certificate refused: never that it is gone.
    assert!(
        matches!(&got, ProbeResult::ErrorReply { code, message } if code == TLS_REFUSED && message.contains("certificate")),
        "{got:?}"
    );
    let mut p = wrong_name.probe(m, None, Duration::from_secs(2));
    let got = p.check().await;
    assert!(
        matches!(&got, ProbeResult::ErrorReply { code, .. } if code == TLS_REFUSED),
        "{got:?}"
    );

    // What a clear-text PING finds: a TLS server closes at once, a clear-text one replies, a
    // port nobody listens on says nothing.
    let clear = RedisServer::start(unique_loopback(), 9001);
    assert_eq!(
        speaks_tls(master.addr, Duration::from_secs(1)).await,
        Some(true)
    );
    assert_eq!(
        speaks_tls(clear.addr, Duration::from_secs(1)).await,
        Some(false)
    );
    let nobody = std::net::SocketAddr::new(clear.addr.ip(), 9002);
    assert_eq!(speaks_tls(nobody, Duration::from_secs(1)).await, None);

    // A hung server accepts the connection (the kernel does) but never completes the
    // handshake: a timeout, never "up".
    master.proc.signal("STOP");
    let mut fresh = redis.probe(m, None, Duration::from_millis(500));
    assert_eq!(fresh.check().await, ProbeResult::Timeout);
    master.proc.signal("CONT");
    assert!(fresh.check().await.is_up());
}

#[test]
fn the_servers_files_are_checked_before_any_machine_gets_them() {
    let certs = Certs::issue(NAME);
    let other = Certs::issue(NAME);
    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    let (ca, cert, key) = (read(&certs.ca), read(&certs.cert), read(&certs.key));
    check_server_files(&ca, &cert, &key, NAME).unwrap();
    let e = check_server_files(&ca, &cert, &key, "other.medic.test").unwrap_err();
    assert!(
        matches!(e, TlsError::ServerCert(_)) && e.to_string().contains("other.medic.test"),
        "another name: {e}"
    );
    let e = check_server_files(&read(&other.ca), &cert, &key, NAME).unwrap_err();
    assert!(matches!(e, TlsError::ServerCert(_)), "another CA: {e}");
    let e = check_server_files(&ca, &cert, &read(&other.key), NAME).unwrap_err();
    assert!(
        matches!(e, TlsError::Key(_)),
        "another certificate's key: {e}"
    );
    let e = check_server_files(&ca, &cert, b"not a key", NAME).unwrap_err();
    assert!(matches!(e, TlsError::Key(_)), "no key: {e}");
    assert!(
        !e.to_string().contains("not a key"),
        "the key's text is not quoted: {e}"
    );
}
