//! Against a real BIND 9 named, primary for a zone accepting TSIG-signed updates.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::net::IpAddr;
use std::time::Duration;

use medic_cloud::{CloudError, Dns, RecordSet, upsert_and_wait};
use medic_rfc2136::{Rfc2136, read_secret};
use medic_testkit::{Named, unique_loopback};

fn client(n: &Named) -> Rfc2136 {
    Rfc2136::new(
        n.addr,
        &n.zone,
        &n.key_name,
        "hmac-sha256",
        read_secret(&n.key_file).unwrap(),
    )
    .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn upsert_then_resolve_through_the_server() {
    let n = Named::start(unique_loopback(), "barton.lab", "medic");
    let dns = client(&n);
    assert_eq!(dns.read("haproxy1.barton.lab").await.unwrap(), None);
    upsert_and_wait(
        &dns,
        "haproxy1.barton.lab",
        60,
        &[ip("10.77.0.12")],
        Duration::from_secs(5),
        Duration::from_millis(100),
    )
    .await
    .unwrap();
    assert_eq!(
        dns.read("haproxy1.barton.lab").await.unwrap(),
        Some(RecordSet {
            name: "haproxy1.barton.lab".into(),
            ttl: 60,
            values: vec![ip("10.77.0.12")]
        })
    );
    // An UPSERT replaces the whole set (a replaced proxy's old address is gone); twice is fine.
    for _ in 0..2 {
        dns.upsert(
            "haproxy1.barton.lab",
            30,
            &[ip("10.77.0.16"), ip("10.77.0.17")],
        )
        .await
        .unwrap();
    }
    let rs = dns.read("haproxy1.barton.lab.").await.unwrap().unwrap();
    let mut v = rs.values.clone();
    v.sort();
    assert_eq!((rs.ttl, v), (30, vec![ip("10.77.0.16"), ip("10.77.0.17")]));
}

#[tokio::test]
async fn a_wrong_tsig_key_is_refused_clearly() {
    let n = Named::start(unique_loopback(), "barton.lab", "medic");
    let wrong = Rfc2136::new(n.addr, &n.zone, &n.key_name, "hmac-sha256", vec![7u8; 32]).unwrap();
    let e = wrong
        .upsert("x.barton.lab", 60, &[ip("10.77.0.20")])
        .await
        .unwrap_err();
    assert!(matches!(e, CloudError::Unauthorized { .. }), "{e:?}");
    assert!(e.to_string().contains("NOTAUTH"), "{e}");
    let unknown = Rfc2136::new(
        n.addr,
        &n.zone,
        "nobody",
        "hmac-sha256",
        read_secret(&n.key_file).unwrap(),
    )
    .unwrap();
    let e = unknown
        .upsert("x.barton.lab", 60, &[ip("10.77.0.20")])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("refused `nobody`"), "{e}");
    assert_eq!(
        client(&n).read("x.barton.lab").await.unwrap(),
        None,
        "nothing was changed"
    );
}

#[tokio::test]
async fn bad_requests_fail_before_sending() {
    let n = Named::start(unique_loopback(), "barton.lab", "medic");
    let dns = client(&n);
    assert!(
        dns.upsert("x.barton.lab", 60, &[])
            .await
            .unwrap_err()
            .to_string()
            .contains("no A value")
    );
    assert!(
        dns.upsert("x.example.org", 60, &[ip("10.0.0.1")])
            .await
            .unwrap_err()
            .to_string()
            .contains("outside the zone")
    );
    assert!(
        Rfc2136::new(n.addr, "barton.lab", "medic", "hmac-md5", vec![1; 16])
            .unwrap_err()
            .to_string()
            .contains("not supported")
    );
    // A server that is not there: a transport error, bounded.
    let mut gone = Rfc2136::new(
        std::net::SocketAddr::from((unique_loopback(), 53)),
        "barton.lab",
        "medic",
        "hmac-sha256",
        vec![1; 32],
    )
    .unwrap();
    gone.timeout = Duration::from_secs(1);
    assert!(matches!(
        gone.upsert("x.barton.lab", 60, &[ip("10.0.0.1")]).await,
        Err(CloudError::Transport { .. } | CloudError::Timeout { .. })
    ));
}
