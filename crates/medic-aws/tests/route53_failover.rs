//! Route 53 failover routing (a service's `dns: {routing: failover}`) through the real SDK
//! client against moto server: the PRIMARY and SECONDARY record sets and the health checks
//! medic creates, keeps in step with the roles and deletes.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::collections::BTreeMap;
use std::net::IpAddr;

mod common;

use common::{direct, zone};
use medic_aws::{Route53, load_config};
use medic_cloud::{Dns, FailoverSet, HealthSpec};
use medic_testkit::Moto;

/// Route 53 failover routing as a service's record: PRIMARY and SECONDARY sets, each with its
/// health check; the roles swapped; a new address (a replaced standby) gets a check of its
/// own and the one no longer used is deleted; the same change twice creates nothing twice.
#[tokio::test]
async fn failover_record_sets_and_their_health_checks_follow_the_roles() {
    let moto = Moto::start();
    let zone_id = zone(&moto).await;
    let dns = Route53::new(&direct(&moto), &zone_id).await;
    let r53 = aws_sdk_route53::Client::new(&load_config(&direct(&moto)).await);
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let health = HealthSpec {
        http_path: Some("/health".into()),
        https: false,
        server_name: None,
        port: 80,
        owner: "medic:barton:www".into(),
    };
    let sets = |p: &str, s: &str| {
        [
            FailoverSet {
                primary: true,
                value: ip(p),
                health: health.clone(),
            },
            FailoverSet {
                primary: false,
                value: ip(s),
                health: health.clone(),
            },
        ]
    };
    let name = "www.barton.example.com";
    // Each check by id: (address, port, type, path, caller reference).
    let checks = || async {
        let out = r53.list_health_checks().send().await.unwrap();
        out.health_checks()
            .iter()
            .map(|h| {
                let c = h.health_check_config().unwrap();
                (
                    h.id().to_owned(),
                    (
                        c.ip_address().unwrap_or_default().to_owned(),
                        c.port().unwrap_or_default(),
                        c.r#type().as_str().to_owned(),
                        c.resource_path().unwrap_or_default().to_owned(),
                        h.caller_reference().to_owned(),
                    ),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    // The record sets of `name`: (failover, set identifier, value, health check id).
    let records = || async {
        let out = r53
            .list_resource_record_sets()
            .hosted_zone_id(&zone_id)
            .send()
            .await
            .unwrap();
        let mut v: Vec<(String, String, String, String)> = out
            .resource_record_sets()
            .iter()
            .filter(|r| r.name().trim_end_matches('.') == name)
            .map(|r| {
                (
                    r.failover()
                        .map(|f| f.as_str().to_owned())
                        .unwrap_or_default(),
                    r.set_identifier().unwrap_or_default().to_owned(),
                    r.resource_records()
                        .iter()
                        .map(|x| x.value().to_owned())
                        .collect::<Vec<_>>()
                        .join(","),
                    r.health_check_id().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let by_address = |c: &BTreeMap<String, (String, i32, String, String, String)>, a: &str| {
        c.iter()
            .find(|(_, x)| x.0 == a)
            .map(|(id, _)| id.clone())
            .unwrap_or_default()
    };

    let change = dns
        .upsert_failover(name, 5, &sets("10.0.1.10", "10.0.2.10"))
        .await
        .unwrap();
    assert!(dns.in_sync(&change).await.unwrap());
    let c = checks().await;
    assert_eq!(c.len(), 2, "{c:?}");
    for (_, port, kind, path, reference) in c.values() {
        assert_eq!(
            (*port, kind.as_str(), path.as_str()),
            (80, "HTTP", "/health")
        );
        assert!(reference.starts_with("medic:barton:www:"), "{reference}");
    }
    let (a, b) = (by_address(&c, "10.0.1.10"), by_address(&c, "10.0.2.10"));
    assert_eq!(
        records().await,
        vec![
            (
                "PRIMARY".into(),
                "medic:barton:www:primary".into(),
                "10.0.1.10".into(),
                a.clone()
            ),
            (
                "SECONDARY".into(),
                "medic:barton:www:secondary".into(),
                "10.0.2.10".into(),
                b.clone()
            ),
        ]
    );
    // A failover: the roles swap; the same checks serve (nothing created twice, even when the
    // step runs again).
    for _ in 0..2 {
        dns.upsert_failover(name, 5, &sets("10.0.2.10", "10.0.1.10"))
            .await
            .unwrap();
    }
    assert_eq!(checks().await.len(), 2);
    assert_eq!(
        records().await,
        vec![
            (
                "PRIMARY".into(),
                "medic:barton:www:primary".into(),
                "10.0.2.10".into(),
                b.clone()
            ),
            (
                "SECONDARY".into(),
                "medic:barton:www:secondary".into(),
                "10.0.1.10".into(),
                a.clone()
            ),
        ]
    );
    // The secondary at a new address: a check of its own, the old one deleted.
    dns.upsert_failover(name, 5, &sets("10.0.2.10", "10.0.1.77"))
        .await
        .unwrap();
    let c = checks().await;
    assert_eq!(c.len(), 2, "{c:?}");
    assert!(
        !c.contains_key(&a),
        "the check of 10.0.1.10 is deleted: {c:?}"
    );
    let new = by_address(&c, "10.0.1.77");
    assert_eq!(
        records().await,
        vec![
            (
                "PRIMARY".into(),
                "medic:barton:www:primary".into(),
                "10.0.2.10".into(),
                b
            ),
            (
                "SECONDARY".into(),
                "medic:barton:www:secondary".into(),
                "10.0.1.77".into(),
                new
            ),
        ]
    );
}

/// A service checked over https: Route 53's checks are HTTPS ones, sending the check's name
/// (SNI and `Host`); a service whose check becomes https gets new checks (a check's type
/// cannot be changed) and the old ones are deleted.
#[tokio::test]
async fn an_https_service_gets_https_health_checks_sending_its_name() {
    let moto = Moto::start();
    let zone_id = zone(&moto).await;
    let dns = Route53::new(&direct(&moto), &zone_id).await;
    let r53 = aws_sdk_route53::Client::new(&load_config(&direct(&moto)).await);
    let sets = |https: bool| {
        let health = HealthSpec {
            http_path: Some("/health".into()),
            https,
            server_name: https.then(|| "www.barton.example.com".to_owned()),
            port: 443,
            owner: "medic:barton:www".into(),
        };
        [("10.0.1.10", true), ("10.0.2.10", false)].map(|(a, primary)| FailoverSet {
            primary,
            value: a.parse::<IpAddr>().unwrap(),
            health: health.clone(),
        })
    };
    // Each check by id: (address, type, path, name, SNI).
    let checks = || async {
        let out = r53.list_health_checks().send().await.unwrap();
        out.health_checks()
            .iter()
            .map(|h| {
                let c = h.health_check_config().unwrap();
                (
                    h.id().to_owned(),
                    (
                        c.ip_address().unwrap_or_default().to_owned(),
                        c.r#type().as_str().to_owned(),
                        c.resource_path().unwrap_or_default().to_owned(),
                        c.fully_qualified_domain_name()
                            .unwrap_or_default()
                            .to_owned(),
                        c.enable_sni().unwrap_or_default(),
                    ),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    let name = "www.barton.example.com";
    dns.upsert_failover(name, 5, &sets(false)).await.unwrap();
    let http = checks().await;
    assert_eq!(http.len(), 2, "{http:?}");
    assert!(http.values().all(|c| c.1 == "HTTP"), "{http:?}");
    // The check becomes https: two new HTTPS checks, the HTTP ones deleted.
    for _ in 0..2 {
        dns.upsert_failover(name, 5, &sets(true)).await.unwrap();
    }
    let https = checks().await;
    assert_eq!(https.len(), 2, "{https:?}");
    assert!(
        http.keys().all(|id| !https.contains_key(id)),
        "the HTTP checks are deleted: {https:?}"
    );
    let mut seen: Vec<_> = https.values().cloned().collect();
    seen.sort();
    let want = |a: &str| {
        (
            a.to_owned(),
            "HTTPS".to_owned(),
            "/health".to_owned(),
            name.to_owned(),
            true,
        )
    };
    assert_eq!(seen, [want("10.0.1.10"), want("10.0.2.10")]);
    // The record sets use them.
    let out = r53
        .list_resource_record_sets()
        .hosted_zone_id(&zone_id)
        .send()
        .await
        .unwrap();
    let mut used: Vec<String> = out
        .resource_record_sets()
        .iter()
        .filter(|r| r.name().trim_end_matches('.') == name)
        .map(|r| r.health_check_id().unwrap_or_default().to_owned())
        .collect();
    used.sort();
    let mut ids: Vec<String> = https.keys().cloned().collect();
    ids.sort();
    assert_eq!(used, ids);
}
