//! EC2 and Route 53 through the real SDK clients against moto server, the AWS API emulator.
//!
//! moto does not run out of capacity, throttle or refuse permissions, and makes every
//! transition instant. So EC2 calls go through a small HTTP proxy that answers chosen calls
//! with the error responses EC2 sends (the SDK parses them for real), and slow transitions come
//! from `medic_cloud::faults::Faulty`, which implements the same traits.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use common::direct;
use medic_aws::{AwsSettings, Ec2, Route53, load_config};
use medic_cloud::faults::{Faults, Faulty};
use medic_cloud::*;
use medic_plan::LaunchSpec;
use medic_testkit::{Moto, unique_loopback};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---- An EC2 error injector in front of moto ----------------------------------------------

#[derive(Debug, Clone)]
struct Rule {
    /// The query action, `RunInstances`.
    action: &'static str,
    /// Only requests whose body contains this.
    contains: Option<String>,
    status: u16,
    code: &'static str,
    /// How many more times; `None` for always.
    times: Option<u32>,
}

#[derive(Debug, Default)]
struct Injector {
    rules: Mutex<Vec<Rule>>,
    hits: Mutex<BTreeMap<&'static str, u32>>,
}

impl Injector {
    fn add(&self, r: Rule) {
        self.rules.lock().unwrap().push(r);
    }

    fn hits(&self, code: &str) -> u32 {
        self.hits.lock().unwrap().get(code).copied().unwrap_or(0)
    }

    fn pick(&self, body: &str) -> Option<Rule> {
        let mut rules = self.rules.lock().unwrap();
        for r in rules.iter_mut() {
            let matches = body.contains(&format!("Action={}", r.action))
                && r.contains
                    .as_ref()
                    .is_none_or(|c| body.contains(c.as_str()));
            if matches && r.times != Some(0) {
                if let Some(t) = r.times.as_mut() {
                    *t -= 1;
                }
                *self.hits.lock().unwrap().entry(r.code).or_default() += 1;
                return Some(r.clone());
            }
        }
        None
    }
}

/// Reads one HTTP/1.1 message (head + Content-Length body); `None` at EOF.
async fn read_message(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut byte).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&byte[..n]);
    }
    Some(buf)
}

async fn proxy(listener: TcpListener, upstream: SocketAddr, inj: Arc<Injector>) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            return;
        };
        let inj = inj.clone();
        tokio::spawn(async move {
            while let Some(req) = read_message(&mut client).await {
                let text = String::from_utf8_lossy(&req).into_owned();
                let reply = match inj.pick(&text) {
                    Some(r) => {
                        let body = format!(
                            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>injected {} for {}</Message></Error></Errors><RequestID>inj</RequestID></Response>",
                            r.code, r.code, r.action
                        );
                        format!("HTTP/1.1 {} Injected\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{body}", r.status, body.len())
                            .into_bytes()
                    }
                    None => {
                        let mut up = TcpStream::connect(upstream).await.unwrap();
                        up.write_all(&req).await.unwrap();
                        read_message(&mut up).await.unwrap_or_default()
                    }
                };
                if client.write_all(&reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

// ---- The world: moto, the proxy, and what a topology would reference ---------------------

struct World {
    moto: Moto,
    inj: Arc<Injector>,
    ec2: Ec2,
    raw: aws_sdk_ec2::Client,
    settings: AwsSettings,
    subnet: String,
    sg: String,
    ami: String,
}

async fn world() -> World {
    let moto = Moto::start();
    let inj = Arc::new(Injector::default());
    let listener = TcpListener::bind((unique_loopback(), 5001)).await.unwrap();
    let proxy_addr = listener.local_addr().unwrap();
    tokio::spawn(proxy(listener, moto.addr, inj.clone()));
    let settings = AwsSettings {
        endpoint: Some(format!("http://{proxy_addr}")),
        ..direct(&moto)
    };
    let raw = aws_sdk_ec2::Client::new(&load_config(&direct(&moto)).await);
    let (vpc, subnet) = common::vpc_and_subnet(&raw).await;
    let sg = raw
        .create_security_group()
        .group_name("medic")
        .description("medic")
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_owned();
    raw.create_key_pair()
        .key_name("medic")
        .send()
        .await
        .unwrap();
    let ami = common::ami(&raw, "medic-redis").await;
    let ec2 = Ec2::new(&settings).await;
    World {
        moto,
        inj,
        ec2,
        raw,
        settings,
        subnet,
        sg,
        ami,
    }
}

fn spec(w: &World, machine: &str, recovery: &str, step: usize) -> LaunchSpec {
    let tags = BTreeMap::from([
        ("Name".to_owned(), format!("barton-{machine}")),
        (TAG_TOPOLOGY.to_owned(), "barton".to_owned()),
        (TAG_MACHINE.to_owned(), machine.to_owned()),
        (TAG_RECOVERY.to_owned(), recovery.to_owned()),
        (TAG_STEP.to_owned(), step.to_string()),
        ("team".to_owned(), "platform".to_owned()),
    ]);
    LaunchSpec {
        machine: machine.into(),
        role: medic_topology::Role::Redis,
        ami: "redis".into(),
        image_id: Some(w.ami.clone()),
        instance_types: vec!["r6i.large".into(), "r5.large".into(), "m6i.large".into()],
        subnet: Some(w.subnet.clone()),
        security_groups: vec![w.sg.clone()],
        key_pair: Some("medic".into()),
        instance_profile: None,
        tags,
        client_token: medic_plan::client_token(recovery, step),
        from_spares: false,
    }
}

// ---- EC2 ------------------------------------------------------------------------------------

#[tokio::test]
async fn launch_tags_the_instance_and_waits_until_it_runs() {
    let w = world().await;
    let s = spec(&w, "redis1", "rec-1", 13);
    let l = w.ec2.launch(&s).await.unwrap();
    assert!(!l.reused);
    let i = wait_running(
        &w.ec2,
        &l.instance.id,
        Duration::from_secs(10),
        Duration::from_millis(100),
    )
    .await
    .unwrap();
    for (k, v) in &s.tags {
        assert_eq!(i.tag(k), Some(v.as_str()), "tag {k}");
    }
    assert_eq!(i.instance_type.as_deref(), Some("r6i.large"));
    assert!(
        matches!(i.address, Some(IpAddr::V4(a)) if a.octets()[..3] == [10, 0, 1]),
        "{:?}",
        i.address
    );
    // What EC2 itself recorded: subnet, security group, key, IMDSv2 required.
    let d = w
        .raw
        .describe_instances()
        .instance_ids(&i.id)
        .send()
        .await
        .unwrap();
    let raw = &d.reservations()[0].instances()[0];
    assert_eq!(raw.subnet_id(), Some(w.subnet.as_str()));
    assert_eq!(raw.key_name(), Some("medic"));
    assert_eq!(raw.security_groups()[0].group_id(), Some(w.sg.as_str()));
    assert_eq!(
        raw.metadata_options()
            .and_then(|m| m.http_tokens())
            .map(|t| t.as_str()),
        Some("required")
    );
}

#[tokio::test]
async fn a_crash_after_launch_finds_the_instance_instead_of_launching_a_second() {
    let w = world().await;
    let s = spec(&w, "redis1", "rec-crash", 13);
    let first = w.ec2.launch(&s).await.unwrap();
    // The controller dies after RunInstances; a new one (new client, nothing in memory) runs
    // the same step again.
    let restarted = Ec2::new(&w.settings).await;
    let again = restarted.launch(&s).await.unwrap();
    assert!(again.reused);
    assert_eq!(again.instance.id, first.instance.id);
    assert_eq!(
        list_owned(&restarted, "barton").await.unwrap().len(),
        1,
        "exactly one instance"
    );
    // Another step of the same recovery is another instance.
    let other = restarted
        .launch(&spec(&w, "redis1", "rec-crash", 14))
        .await
        .unwrap();
    assert!(!other.reused);
}

#[tokio::test]
async fn terminate_twice_and_unknown_instances_are_fine() {
    let w = world().await;
    let l = w.ec2.launch(&spec(&w, "redis2", "rec-t", 5)).await.unwrap();
    assert_eq!(
        w.ec2.terminate(&l.instance.id).await.unwrap(),
        TerminateOutcome::Terminated
    );
    assert_eq!(
        w.ec2.terminate(&l.instance.id).await.unwrap(),
        TerminateOutcome::AlreadyGone
    );
    assert_eq!(
        w.ec2.terminate("i-0123456789abcdef0").await.unwrap(),
        TerminateOutcome::AlreadyGone
    );
    assert!(
        list_owned(&w.ec2, "barton").await.unwrap().is_empty(),
        "terminated instances are not owned machines"
    );
}

#[tokio::test]
async fn orphans_are_listed() {
    let w = world().await;
    let current = w
        .ec2
        .launch(&spec(&w, "redis1", "rec-a", 13))
        .await
        .unwrap()
        .instance
        .id;
    let double = w
        .ec2
        .launch(&spec(&w, "redis1", "rec-b", 13))
        .await
        .unwrap()
        .instance
        .id;
    let ghost = w
        .ec2
        .launch(&spec(&w, "ghost", "rec-c", 13))
        .await
        .unwrap()
        .instance
        .id;
    let busy = w
        .ec2
        .launch(&spec(&w, "redis2", "rec-now", 13))
        .await
        .unwrap()
        .instance
        .id;
    let owned = list_owned(&w.ec2, "barton").await.unwrap();
    assert_eq!(owned.len(), 4);
    let cur = BTreeMap::from([("redis1".to_owned(), current)]);
    let in_flight = BTreeSet::from(["rec-now".to_owned()]);
    let mut ids: Vec<String> = orphans(&owned, &cur, &in_flight)
        .iter()
        .map(|i| i.id.clone())
        .collect();
    ids.sort();
    let mut want = vec![double, ghost];
    want.sort();
    assert_eq!(ids, want);
    let _ = busy;
}

#[tokio::test]
async fn no_capacity_falls_back_to_the_next_instance_type() {
    let w = world().await;
    w.inj.add(Rule {
        action: "RunInstances",
        contains: Some("InstanceType=r6i.large".into()),
        status: 500,
        code: "InsufficientInstanceCapacity",
        times: None,
    });
    let l = w
        .ec2
        .launch(&spec(&w, "redis1", "rec-cap", 13))
        .await
        .unwrap();
    assert_eq!(l.instance.instance_type.as_deref(), Some("r5.large"));
    assert!(w.inj.hits("InsufficientInstanceCapacity") >= 1);

    w.inj.add(Rule {
        action: "RunInstances",
        contains: None,
        status: 500,
        code: "InsufficientInstanceCapacity",
        times: None,
    });
    let e = w
        .ec2
        .launch(&spec(&w, "redis2", "rec-cap", 14))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CloudError::NoCapacity { tried, .. } if tried.len() == 3),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("no capacity for any of the instance types"),
        "{e}"
    );
}

#[tokio::test]
async fn throttling_is_retried_then_reported() {
    let w = world().await;
    // Twice: the SDK's retries absorb it.
    w.inj.add(Rule {
        action: "DescribeInstances",
        contains: None,
        status: 503,
        code: "RequestLimitExceeded",
        times: Some(2),
    });
    assert!(list_owned(&w.ec2, "barton").await.unwrap().is_empty());
    assert_eq!(w.inj.hits("RequestLimitExceeded"), 2);
    // Always: reported after the last attempt.
    w.inj.add(Rule {
        action: "DescribeInstances",
        contains: None,
        status: 503,
        code: "RequestLimitExceeded",
        times: None,
    });
    let e = list_owned(&w.ec2, "barton").await.unwrap_err();
    assert!(
        matches!(e, CloudError::Throttled { attempts: 5, .. }),
        "{e:?}"
    );
    assert_eq!(w.inj.hits("RequestLimitExceeded"), 2 + 5);
}

#[tokio::test]
async fn a_missing_permission_names_the_iam_action() {
    let w = world().await;
    w.inj.add(Rule {
        action: "TerminateInstances",
        contains: None,
        status: 403,
        code: "UnauthorizedOperation",
        times: None,
    });
    let l = w
        .ec2
        .launch(&spec(&w, "redis1", "rec-iam", 13))
        .await
        .unwrap();
    let e = w.ec2.terminate(&l.instance.id).await.unwrap_err();
    assert!(
        e.to_string().starts_with(
            "terminate: not authorized: the credentials need the IAM action ec2:TerminateInstances"
        ),
        "{e}"
    );
}

#[tokio::test]
async fn unknown_ami_and_subnet_name_the_topology_field() {
    let w = world().await;
    let mut s = spec(&w, "redis1", "rec-bad", 13);
    s.image_id = Some("ami-0123456789abcdef0".into());
    let e = w.ec2.launch(&s).await.unwrap_err();
    assert!(
        matches!(&e, CloudError::NotFound { field, .. } if field == "amis[name = redis].image_ids"),
        "{e:?}"
    );
    let mut s = spec(&w, "redis1", "rec-bad", 14);
    s.subnet = Some("subnet-00000000".into());
    let e = w.ec2.launch(&s).await.unwrap_err();
    assert!(e.to_string().contains("subnet subnet-00000000 does not exist; check machines[name = redis1].subnet or provider.aws.subnets"), "{e}");
}

#[tokio::test]
async fn slow_transitions_time_out_through_the_fault_wrapper() {
    let w = world().await;
    let slow = Faulty::new(
        Ec2::new(&w.settings).await,
        Faults {
            pending_for: Duration::from_secs(30),
            ..Faults::default()
        },
    );
    let l = slow
        .launch(&spec(&w, "redis1", "rec-slow", 13))
        .await
        .unwrap();
    let e = wait_running(
        &slow,
        &l.instance.id,
        Duration::from_millis(600),
        Duration::from_millis(100),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, CloudError::Timeout { state, .. } if state.contains("Pending")),
        "{e:?}"
    );
    // A throttled launch through the wrapper is an error the caller sees as such.
    let flaky = Faulty::new(
        Ec2::new(&w.settings).await,
        Faults {
            throttle_launches: 1,
            ..Faults::default()
        },
    );
    assert!(matches!(
        flaky.launch(&spec(&w, "redis2", "rec-slow", 14)).await,
        Err(CloudError::Throttled { .. })
    ));
    assert!(
        flaky
            .launch(&spec(&w, "redis2", "rec-slow", 14))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn ssh_port_wait_is_bounded() {
    let closed = SocketAddr::from((unique_loopback(), 22));
    let e = wait_port(closed, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(e, CloudError::Timeout { .. }), "{e:?}");
    let open = std::net::TcpListener::bind((unique_loopback(), 22)).unwrap();
    wait_port(open.local_addr().unwrap(), Duration::from_secs(2))
        .await
        .unwrap();
}

// ---- Route 53 -------------------------------------------------------------------------------

async fn zone(w: &World) -> String {
    common::zone(&w.moto).await
}

#[tokio::test]
async fn upsert_waits_until_in_sync_and_reads_back() {
    let w = world().await;
    let zone_id = zone(&w).await;
    let dns = Route53::new(&direct(&w.moto), &zone_id).await;
    let a: IpAddr = "10.0.1.21".parse().unwrap();
    let b: IpAddr = "10.0.2.21".parse().unwrap();
    upsert_and_wait(
        &dns,
        "haproxy1.barton.example.com",
        60,
        &[a],
        Duration::from_secs(5),
        Duration::from_millis(100),
    )
    .await
    .unwrap();
    assert_eq!(
        dns.read("haproxy1.barton.example.com").await.unwrap(),
        Some(RecordSet {
            name: "haproxy1.barton.example.com".into(),
            ttl: 60,
            values: vec![a]
        })
    );
    // UPSERT replaces the values; twice is harmless.
    for _ in 0..2 {
        upsert_and_wait(
            &dns,
            "haproxy1.barton.example.com",
            30,
            &[b, a],
            Duration::from_secs(5),
            Duration::from_millis(100),
        )
        .await
        .unwrap();
    }
    let rs = dns
        .read("haproxy1.barton.example.com.")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((rs.ttl, rs.values.len()), (30, 2));
    assert!(
        dns.read("nothing.barton.example.com")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn dns_errors_are_clear() {
    let w = world().await;
    let zone_id = zone(&w).await;
    let dns = Route53::new(&direct(&w.moto), &zone_id).await;
    let e = upsert_and_wait(
        &dns,
        "haproxy1.barton.example.com",
        60,
        &[],
        Duration::from_secs(1),
        Duration::from_millis(100),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("no A value"), "{e}");
    let nowhere = Route53::new(&direct(&w.moto), "Z0000000000000NOZONE").await;
    let e = nowhere
        .upsert("a.barton.example.com", 60, &["10.0.0.1".parse().unwrap()])
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("check dns.provider.route53.zone_id"),
        "{e}"
    );
    // A change that stays pending times out (moto's are in sync at once: the wrapper lies).
    let slow = Faulty::new(
        Route53::new(&direct(&w.moto), &zone_id).await,
        Faults {
            dns_pending_for: Duration::from_secs(30),
            ..Faults::default()
        },
    );
    let e = upsert_and_wait(
        &slow,
        "b.barton.example.com",
        60,
        &["10.0.0.2".parse().unwrap()],
        Duration::from_millis(500),
        Duration::from_millis(100),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, CloudError::Timeout { .. }), "{e:?}");
}
