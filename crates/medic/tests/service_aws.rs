//! A web service's failover with the **EC2 and Route 53 providers** against the AWS emulator
//! (moto), end to end: `medic up` launches both machines through RunInstances, brings the
//! service's address up on the primary (a secondary private IP assigned to its instance, the
//! Elastic IP associated with it, the address on its interface) and names the primary in
//! Route 53. The primary's machine is cut off from everyone: `medic run` takes the address
//! and the Elastic IP from its instance (a fence that needs no answer from it), assigns them
//! to the standby's and brings the address up there, and points the name at the standby.
//! Read back through the SDK (the addresses, each instance's interface, the record) and
//! through the clients' path (the address answers, served by the standby). The old primary
//! then comes back, still holding the address on its interface: medic takes it down there
//! and the machine rejoins as a standby; the address is served by the standby alone. The lab
//! mirrors each emulated instance (aws_support). Needs root.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod aws_support;
mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use medic_aws::load_config;
use medic_lab::Fault;

use common::web::{NGINX_CONF, get, on_with, role_conf};
use common::{http_get, text};

/// The network interface the Elastic IP is associated with, if any. (moto records the
/// interface, on its primary address, whatever `PrivateIpAddress` asked.)
async fn elastic(ec2: &aws_sdk_ec2::Client, allocation: &str) -> Option<String> {
    let r = ec2
        .describe_addresses()
        .allocation_ids(allocation)
        .send()
        .await
        .ok()?;
    r.addresses()
        .first()?
        .network_interface_id()
        .filter(|i| !i.is_empty())
        .map(str::to_owned)
}

/// Each instance's network interface and every private address it holds.
async fn interfaces(ec2: &aws_sdk_ec2::Client) -> BTreeMap<String, (String, Vec<String>)> {
    let mut out = BTreeMap::new();
    let Ok(r) = ec2.describe_network_interfaces().send().await else {
        return out;
    };
    for ni in r.network_interfaces() {
        let Some(instance) = ni.attachment().and_then(|a| a.instance_id()) else {
            continue;
        };
        out.insert(
            instance.to_owned(),
            (
                ni.network_interface_id().unwrap_or_default().to_owned(),
                ni.private_ip_addresses()
                    .iter()
                    .filter_map(|p| p.private_ip_address().map(str::to_owned))
                    .collect(),
            ),
        );
    }
    out
}

/// The values of the A record `name` in the zone.
async fn record(r53: &aws_sdk_route53::Client, zone: &str, name: &str) -> Vec<String> {
    let Ok(r) = r53
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .send()
        .await
    else {
        return vec![];
    };
    r.resource_record_sets()
        .iter()
        .filter(|s| s.name().trim_end_matches('.') == name && s.r#type().as_str() == "A")
        .flat_map(|s| s.resource_records().iter().map(|v| v.value().to_owned()))
        .collect()
}

#[test]
fn a_primary_cut_off_on_ec2_hands_its_address_elastic_ip_and_name_to_the_standby() {
    if !medic_testkit::root_or_skip("a_primary_cut_off_on_ec2_hands_its_address") {
        return;
    }
    let aws_support::Emulator {
        root,
        rt,
        moto,
        settings,
    } = aws_support::Emulator::start();
    // (Another /24 of the lab's than run_aws.rs's, so both may run at once.)
    let net = 200 + std::process::id() % 50;
    let dir = tempfile::tempdir().unwrap();
    let (ec2, r53, vpc, web_ami, zone_id, eip) = rt.block_on(async {
        let config = load_config(&settings).await;
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let r53 = aws_sdk_route53::Client::new(&config);
        let vpc = aws_support::vpc(&ec2, net).await;
        let web_ami = aws_support::ami(&ec2, "medic-web").await;
        let zone_id = aws_support::zone(&r53, "dryad.test").await;
        let eip = ec2
            .allocate_address()
            .domain(aws_sdk_ec2::types::DomainType::Vpc)
            .send()
            .await
            .unwrap()
            .allocation_id()
            .unwrap()
            .to_owned();
        (ec2, r53, vpc, web_ami, zone_id, eip)
    });
    let key = aws_support::controller_key(dir.path());
    let port = 23000 + net as u16;
    let vip = format!("10.74.{net}.100");
    let topo = format!(
        r#"name: dryad
provider:
  aws:
    region: us-east-1
    subnets: [{subnet}]
    security_groups: [{sg}]
    key_pair: medic
    endpoint: {endpoint}
ssh:
  user: medic
  key: {key}
  host_keys: accept-new
amis:
  - {{name: web, definition: {amis}/web.yaml, image_ids: {{us-east-1: {web_ami}}}}}
machines:
  - {{name: primus, role: service, ami: web, instance_type: t3.medium}}
  - {{name: secundus, role: service, ami: web, instance_type: t3.medium}}
  - {{name: monitor, role: monitor}}
services:
  - name: web
    primary: primus
    standbys: [secundus]
    port: 80
    check: {{kind: http, path: /health, status: 200, interval: 250ms, timeout: 200ms, fall: 3, rise: 2}}
    address: {{ip: {vip}/24, interface: eth0, elastic_ip: {eip}}}
    dns: {{name: www.dryad.test, ttl: 60}}
dns:
  provider:
    route53: {{zone_id: {zone_id}, zone: dryad.test}}
  ttl: 60
  records: []
policy:
  boot_timeout: 1m
controller:
  listen: 127.0.0.1:{port}
  state_dir: {state}
"#,
        subnet = vpc.subnet,
        sg = vpc.security_group,
        endpoint = moto.url,
        amis = root.join("amis").display(),
        key = key.display(),
        state = dir.path().join("controller").display(),
    );
    let file = dir.path().join("dryad.yaml");
    std::fs::write(&file, &topo).unwrap();
    let loaded = medic_topology::load_topology(&file)
        .map_err(|e| format!("{e}: {:?}", e.diagnostics))
        .unwrap();
    let mirror = aws_support::Mirror::start(
        &rt,
        &ec2,
        ("mweb", net),
        dir.path(),
        &key,
        &loaded,
        BTreeMap::from([(web_ami.clone(), "web".to_owned())]),
    );

    // Set up from nothing: both instances, the address on primus, the name.
    let out = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["up", file.to_str().unwrap()])
        .envs(aws_support::AWS_ENV)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let running = rt.block_on(aws_support::instances(&ec2));
    let instance = |m: &str| {
        running
            .iter()
            .find(|i| i.machine == m && i.state == "running")
            .unwrap_or_else(|| panic!("no running instance for {m}: {running:?}"))
            .clone()
    };
    let (primus, secundus) = (instance("primus"), instance("secundus"));
    let (primus_ip, secundus_ip) = (
        primus.address.unwrap().to_string(),
        secundus.address.unwrap().to_string(),
    );
    let held = rt.block_on(interfaces(&ec2));
    let eni = |i: &aws_support::Instance| held.get(&i.id).map(|h| h.0.clone());
    assert!(
        held.get(&primus.id).is_some_and(|h| h.1.contains(&vip)),
        "{held:?}"
    );
    assert_eq!(rt.block_on(elastic(&ec2, &eip)), eni(&primus), "{held:?}");
    assert_eq!(
        rt.block_on(record(&r53, &zone_id, "www.dryad.test")),
        [primus_ip.as_str()]
    );

    // The operator's web servers, each saying who it is at /role.
    for (ip, name) in [(&primus_ip, "primus"), (&secundus_ip, "secundus")] {
        on_with(
            &key,
            ip,
            &format!(
                "mkdir -p /etc/web && printf '%s' '{NGINX_CONF}' > /etc/web/nginx.conf && printf '%s' '{}' > /etc/web/role.conf && nginx -e /run/web-error.log -c /etc/web/nginx.conf",
                role_conf(name)
            ),
        );
    }

    let log = dir.path().join("run.log");
    let _run = aws_support::Run(Some(
        Command::new(env!("CARGO_BIN_EXE_medic"))
            .args(["run", file.to_str().unwrap()])
            .envs(aws_support::AWS_ENV)
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
            .spawn()
            .unwrap(),
    ));
    let wait = |what: &str, within: Duration, cond: &dyn Fn() -> Result<(), String>| {
        let deadline = Instant::now() + within;
        let mut last = cond();
        while last.is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            last = cond();
        }
        if let Err(seen) = last {
            panic!(
                "waited {within:?} for {what}; last seen: {seen}\nhistory: {}\nlog:\n{}",
                serde_json::to_string_pretty(&http_get(port, "/api/history")).unwrap(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    };
    let primary = || {
        http_get(port, "/api/status")
            .and_then(|s| s["services"].get(0).cloned())
            .map(|s| format!("{} ({})", s["primary"], s["machines"]))
            .unwrap_or_else(|| "no status".to_owned())
    };
    wait(
        "the controller to see primus serve",
        Duration::from_secs(30),
        &|| {
            let p = primary();
            let served = get(&vip, "/role");
            if p.starts_with("\"primus\"") && served == "primus" {
                Ok(())
            } else {
                Err(format!("primary {p}; {vip} answers {served:?}"))
            }
        },
    );

    // A client asking the address all along: once the standby has answered, primus never.
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let asking = Arc::new(AtomicBool::new(true));
    let client = {
        let (seen, asking, vip) = (seen.clone(), asking.clone(), vip.clone());
        std::thread::spawn(move || {
            while asking.load(Ordering::Relaxed) {
                let got = get(&vip, "/role");
                seen.lock().unwrap().push(got);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    rt.block_on(mirror.lab.fault(
        "primus",
        Fault::Partition {
            monitor_only: false,
        },
    ))
    .unwrap();
    wait(
        "secundus the primary, serving the address, named in Route 53",
        Duration::from_secs(60),
        &|| {
            let p = primary();
            let served = get(&vip, "/role");
            let named = rt.block_on(record(&r53, &zone_id, "www.dryad.test"));
            if p.starts_with("\"secundus\"")
                && served == "secundus"
                && named == [secundus_ip.as_str()]
            {
                Ok(())
            } else {
                Err(format!(
                    "primary {p}; {vip} answers {served:?}; www.dryad.test {named:?}"
                ))
            }
        },
    );
    wait(
        "the client to be answered at the address by secundus",
        Duration::from_secs(10),
        &|| {
            let seen = seen.lock().unwrap();
            if seen.iter().any(|s| s == "secundus") {
                Ok(())
            } else {
                Err(format!("{:?}", &seen[seen.len().saturating_sub(5)..]))
            }
        },
    );
    asking.store(false, Ordering::Relaxed);
    client.join().unwrap();

    // EC2's side, read back: the service's address held by secundus's interface alone, the
    // Elastic IP on that interface.
    let held = rt.block_on(interfaces(&ec2));
    let eni = |i: &aws_support::Instance| held.get(&i.id).map(|h| h.0.clone());
    assert!(
        held.get(&secundus.id).is_some_and(|h| h.1.contains(&vip)),
        "{held:?}"
    );
    assert!(
        !held.get(&primus.id).is_some_and(|h| h.1.contains(&vip)),
        "{held:?}"
    );
    assert_eq!(rt.block_on(elastic(&ec2, &eip)), eni(&secundus), "{held:?}");
    // The clients' path: primus answered before the cut, secundus after, never primus again.
    let seen = seen.lock().unwrap().clone();
    let first = seen.iter().position(|s| s == "secundus");
    assert!(
        first.is_some_and(|f| seen[f..].iter().all(|s| s != "primus")),
        "{seen:?}"
    );
    let history = http_get(port, "/api/history").unwrap();
    let steps: Vec<&str> = history
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["steps"].as_array().into_iter().flatten())
        .filter_map(|s| s["kind"].as_str())
        .collect();
    assert!(
        steps.contains(&"cloud-address") && steps.contains(&"address"),
        "{steps:?}"
    );
    eprintln!("the failover's steps: {history:#}");

    // primus comes back, its address still up on its interface (nobody could take it down):
    // medic takes it down there, and primus rejoins as a standby. (On EC2 the VPC routes the
    // address to the interface it is assigned to, secundus's, whatever primus's own
    // interface says; the lab's bridge is one segment, so the client is not asked until
    // primus has let the address go.)
    let netns = mirror
        .lab
        .records()
        .into_iter()
        .find(|r| {
            r.tags.get("medic:machine").map(String::as_str) == Some("primus")
                && r.state == "running"
        })
        .unwrap()
        .netns;
    let holds_vip = || {
        let out = Command::new("ip")
            .args(["netns", "exec", &netns, "ip", "-o", "-4", "addr", "show"])
            .output()
            .unwrap();
        assert!(out.status.success(), "ip in {netns}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).contains(&format!(" {vip}/"))
    };
    assert!(holds_vip(), "primus was cut off with the address up");
    rt.block_on(mirror.lab.fault("primus", Fault::Heal))
        .unwrap();
    wait(
        "primus to let the address go and rejoin as a standby",
        Duration::from_secs(60),
        &|| {
            let role = http_get(port, "/api/status")
                .and_then(|s| s["services"].get(0).cloned())
                .and_then(|s| {
                    s["machines"]
                        .as_array()?
                        .iter()
                        .find(|m| m["machine"] == "primus")
                        .map(|m| format!("{} {}", m["role"], m["state"]))
                })
                .unwrap_or_default();
            if !holds_vip() && role.starts_with("\"standby\"") {
                Ok(())
            } else {
                Err(format!(
                    "primus holds {vip}: {}; its role and state: {role}",
                    holds_vip()
                ))
            }
        },
    );
    let answers: Vec<String> = (0..20).map(|_| get(&vip, "/role")).collect();
    assert!(answers.iter().all(|a| a == "secundus"), "{answers:?}");
    assert_eq!(
        rt.block_on(record(&r53, &zone_id, "www.dryad.test")),
        [secundus_ip.as_str()]
    );
    let held = rt.block_on(interfaces(&ec2));
    assert!(
        !held.get(&primus.id).is_some_and(|h| h.1.contains(&vip)),
        "{held:?}"
    );
    // Nothing launched or terminated: a service's machines are the operator's to mend (medic
    // launches them only at `medic up`).
    let after = rt.block_on(aws_support::instances(&ec2));
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.iter().all(|i| i.state == "running"), "{after:?}");
    drop(_run);
    drop(mirror);
}
