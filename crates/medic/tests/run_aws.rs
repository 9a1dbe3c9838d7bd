//! The same redis-machine recovery as run_lab.rs, with the **EC2 and Route 53 providers**
//! against the AWS emulator (moto), so the AWS code path runs end to end: `medic up` launches
//! every machine through RunInstances, `medic run` terminates the crashed one and launches its
//! replacement. The lab mirrors each emulated instance (aws_support). Needs root.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod aws_support;
mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use medic_aws::load_config;
use medic_lab::Fault;

use common::{http_get, text};

#[test]
fn a_crashed_redis_machine_on_ec2_is_terminated_and_replaced_from_its_ami() {
    if !medic_testkit::root_or_skip("a_crashed_redis_machine_on_ec2_is_terminated_and_replaced") {
        return;
    }
    let aws_support::Emulator {
        root,
        rt,
        moto,
        settings,
    } = aws_support::Emulator::start();
    let net = 100 + std::process::id() % 100;
    let dir = tempfile::tempdir().unwrap();
    let (ec2, subnet, sg, redis_ami, haproxy_ami, zone_id) = rt.block_on(async {
        let config = load_config(&settings).await;
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let vpc = aws_support::vpc(&ec2, net).await;
        let redis_ami = aws_support::ami(&ec2, "medic-redis").await;
        let haproxy_ami = aws_support::ami(&ec2, "medic-haproxy").await;
        let zone_id =
            aws_support::zone(&aws_sdk_route53::Client::new(&config), "barton.test").await;
        (
            ec2,
            vpc.subnet,
            vpc.security_group,
            redis_ami,
            haproxy_ami,
            zone_id,
        )
    });

    // The controller's key, which the lab's machines authorize.
    let key = aws_support::controller_key(dir.path());
    let port = 22000 + net as u16;
    let topo = format!(
        r#"name: barton
provider:
  aws:
    region: us-east-1
    subnets: [{subnet}]
    security_groups: [{sg}]
    key_pair: medic
    endpoint: {endpoint}
playbooks: {playbooks}
ssh:
  user: medic
  key: {key}
  host_keys: accept-new
amis:
  - {{name: redis, definition: {amis}/redis.yaml, image_ids: {{us-east-1: {redis_ami}}}}}
  - {{name: haproxy, definition: {amis}/haproxy.yaml, image_ids: {{us-east-1: {haproxy_ami}}}}}
machines:
  - {{name: redis1, role: redis, ami: redis, instance_type: r6i.large}}
  - {{name: redis2, role: redis, ami: redis, instance_type: r6i.large}}
  - {{name: haproxy1, role: haproxy, ami: haproxy, instance_type: c6i.large}}
  - {{name: haproxy2, role: haproxy, ami: haproxy, instance_type: c6i.large}}
  - {{name: app, role: app, ami: haproxy, instance_type: t3.medium}}
  - {{name: monitor, role: monitor}}
shards:
  - {{name: r9001, port: 9001, master: redis1, replicas: [redis2]}}
  - {{name: r9002, port: 9002, master: redis1, replicas: [redis2]}}
proxies:
  machines: [haproxy1, haproxy2]
  runtime_api: {{port: 9999}}
  frontends:
    - {{listen: 8001, shard: r9001}}
    - {{listen: 8002, shard: r9002}}
app_proxies:
  - machine: app
    runtime_api: {{port: 9998}}
    primary: haproxy1
    backup: haproxy2
    frontends:
      - {{listen: 7001, shard: r9001}}
      - {{listen: 7002, shard: r9002}}
dns:
  provider:
    route53: {{zone_id: {zone_id}, zone: barton.test}}
  ttl: 60
  records:
    - {{name: haproxy1.barton.test, machines: [haproxy1]}}
    - {{name: haproxy2.barton.test, machines: [haproxy2]}}
checks:
  redis: {{interval: 250ms, timeout: 200ms, fall: 3, rise: 2, jitter: 20ms}}
policy:
  boot_timeout: 1m
  sync_timeout: 1m
controller:
  listen: 127.0.0.1:{port}
  state_dir: {state}
"#,
        endpoint = moto.url,
        playbooks = root.join("playbooks").display(),
        amis = root.join("amis").display(),
        key = key.display(),
        state = dir.path().join("controller").display(),
    );
    let file = dir.path().join("aws.yaml");
    std::fs::write(&file, &topo).unwrap();
    let loaded = medic_topology::load_topology(&file)
        .map_err(|e| format!("{e}: {:?}", e.diagnostics))
        .unwrap();
    let mirror = aws_support::Mirror::start(
        &rt,
        &ec2,
        ("maws", net),
        dir.path(),
        &key,
        &loaded,
        BTreeMap::from([
            (redis_ami.clone(), "redis".to_owned()),
            (haproxy_ami.clone(), "haproxy".to_owned()),
        ]),
    );
    let aws_env = aws_support::AWS_ENV;

    // Set up from nothing through RunInstances, the playbooks and Route 53.
    let out = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["up", file.to_str().unwrap()])
        .envs(aws_env)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let before = rt.block_on(aws_support::instances(&ec2));
    assert_eq!(
        before.iter().filter(|i| i.state == "running").count(),
        5,
        "{before:?}"
    );
    let old_redis1 = before
        .iter()
        .find(|i| i.machine == "redis1")
        .unwrap()
        .clone();

    let log = dir.path().join("run.log");
    let start = || {
        let child = Command::new(env!("CARGO_BIN_EXE_medic"))
            .args(["run", file.to_str().unwrap()])
            .envs(aws_env)
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        aws_support::Run(Some(child))
    };
    let mut run = start();
    let wait = |what: &str, within: Duration, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "waited {within:?} for {what}\nhistory: {}\nlog:\n{}",
            serde_json::to_string_pretty(&http_get(port, "/api/history")).unwrap(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    wait("the controller's API", Duration::from_secs(30), &|| {
        http_get(port, "/api/status").is_some()
    });
    let app: IpAddr = rt
        .block_on(aws_support::instances(&ec2))
        .into_iter()
        .find(|i| i.machine == "app")
        .and_then(|i| i.address)
        .map(IpAddr::V4)
        .unwrap();
    let redis_cli = |host: &str, port: u16, args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-h", host, "-p", &port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(redis_cli(&app.to_string(), 7001, &["SET", "k", "1"]), "OK");

    // A look-alike: an instance carrying medic's tags for redis1, launched by someone else
    // (another deployment, an impostor) after medic's. A restarted controller keeps the
    // instance it recorded, says so, and never terminates the look-alike.
    let impostor = rt.block_on(async {
        use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        ec2.run_instances()
            .image_id(&redis_ami)
            .min_count(1)
            .max_count(1)
            .subnet_id(&subnet)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .tags(tag("medic:topology", "barton"))
                    .tags(tag("medic:machine", "redis1"))
                    .tags(tag("medic:recovery", "not-medics"))
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .instances()[0]
            .instance_id()
            .unwrap()
            .to_owned()
    });
    drop(run);
    run = start();
    wait(
        "the look-alike named in an alert",
        Duration::from_secs(30),
        &|| {
            http_get(port, "/api/status").is_some_and(|s| {
                s["alerts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|a| a["message"].as_str().is_some_and(|m| m.contains(&impostor)))
            })
        },
    );
    let status = http_get(port, "/api/status").unwrap();
    let redis1 = status["machines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "redis1")
        .unwrap();
    assert_eq!(redis1["instance"], old_redis1.id, "{redis1}");

    rt.block_on(mirror.lab.fault("redis1", Fault::Crash))
        .unwrap();
    wait("the recovery of redis1", Duration::from_secs(90), &|| {
        http_get(port, "/api/history")
            .and_then(|h| h.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .any(|r| r["event"] == "machine redis1 lost" && r["outcome"]["outcome"] == "completed")
    });
    // The crashed instance terminated in EC2, exactly one replacement launched from the AMI;
    // the look-alike untouched.
    let after = rt.block_on(aws_support::instances(&ec2));
    assert!(
        after
            .iter()
            .any(|i| i.id == impostor && i.state == "running"),
        "the look-alike was terminated: {after:?}"
    );
    let redis1: Vec<_> = after
        .iter()
        .filter(|i| i.machine == "redis1" && i.id != impostor)
        .collect();
    assert_eq!(redis1.len(), 2, "{redis1:?}");
    assert!(
        redis1
            .iter()
            .any(|i| i.id == old_redis1.id && i.state == "terminated")
    );
    let new = redis1.iter().find(|i| i.state == "running").unwrap();
    assert_eq!(new.image, redis_ami);
    let new_ip = new.address.unwrap().to_string();
    // The replacement (a lab machine at the instance's address) is a replica in sync.
    wait("redis1 in sync", Duration::from_secs(30), &|| {
        redis_cli(&new_ip, 9001, &["ROLE"]).starts_with("slave")
            && redis_cli(&new_ip, 9001, &["GET", "k"]) == "1"
    });
    assert_eq!(redis_cli(&app.to_string(), 7001, &["SET", "k", "2"]), "OK");
    drop(run);
    drop(mirror);
}
