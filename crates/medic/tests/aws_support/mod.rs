//! The AWS emulator (moto) beside the lab, for the tests that run medic's EC2 and Route 53
//! providers end to end (run_aws.rs, service_aws.rs): a VPC whose subnet is the lab's /24,
//! AMIs and a hosted zone made through the SDK, and a bridge that materialises each emulated
//! instance as a lab machine at the instance's private address and removes it when the
//! instance is terminated — moto has no machines, the lab has no EC2 API.

#![allow(dead_code, reason = "each test uses part of it")]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use medic_cloud::{Cloud, LaunchSpec};
use medic_lab::{Lab, LabConfig};

const MIRROR_OF: &str = "mirror-of";

/// The AWS emulator for one test: the workspace's root (its playbooks and AMI definitions),
/// a runtime for the SDK's calls, moto itself, and the settings that reach it.
pub struct Emulator {
    pub root: std::path::PathBuf,
    pub rt: tokio::runtime::Runtime,
    pub moto: medic_testkit::Moto,
    pub settings: medic_aws::AwsSettings,
}

impl Emulator {
    pub fn start() -> Emulator {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .canonicalize()
            .unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let moto = medic_testkit::Moto::start();
        let settings = medic_aws::AwsSettings {
            region: "us-east-1".into(),
            endpoint: Some(moto.url.clone()),
            static_credentials: Some(("testing".into(), "testing".into())),
        };
        Emulator {
            root,
            rt,
            moto,
            settings,
        }
    }
}

/// What the emulator holds for the test: a VPC (`10.74.0.0/16`) with one subnet, the lab's
/// /24 (`10.74.NET.0/24`), a security group and the key pair `medic`.
pub struct Vpc {
    pub subnet: String,
    pub security_group: String,
}

/// The VPC, subnet, security group and key pair in moto.
pub async fn vpc(ec2: &aws_sdk_ec2::Client, net: u32) -> Vpc {
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.74.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc()
        .unwrap()
        .vpc_id()
        .unwrap()
        .to_owned();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block(format!("10.74.{net}.0/24"))
        .send()
        .await
        .unwrap()
        .subnet()
        .unwrap()
        .subnet_id()
        .unwrap()
        .to_owned();
    let security_group = ec2
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
    ec2.create_key_pair()
        .key_name("medic")
        .send()
        .await
        .unwrap();
    Vpc {
        subnet,
        security_group,
    }
}

/// An AMI registered under `name`: its id.
pub async fn ami(ec2: &aws_sdk_ec2::Client, name: &str) -> String {
    ec2.register_image()
        .name(name)
        .root_device_name("/dev/sda1")
        .send()
        .await
        .unwrap()
        .image_id()
        .unwrap()
        .to_owned()
}

/// A hosted zone for `name`: its id, without `/hostedzone/`.
pub async fn zone(r53: &aws_sdk_route53::Client, name: &str) -> String {
    r53.create_hosted_zone()
        .name(name)
        .caller_reference(format!("medic-e2e-{name}"))
        .send()
        .await
        .unwrap()
        .hosted_zone()
        .unwrap()
        .id()
        .trim_start_matches("/hostedzone/")
        .to_owned()
}

/// An SSH key pair for the controller in `dir` (`id_ed25519`), which the lab's machines
/// authorize: its private key's path.
pub fn controller_key(dir: &Path) -> std::path::PathBuf {
    let key = dir.join("id_ed25519");
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap()
            .success()
    );
    key
}

/// One instance as EC2 describes it.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub state: String,
    pub address: Option<Ipv4Addr>,
    /// Its `medic:machine` tag.
    pub machine: String,
    pub image: String,
}

/// Every instance moto holds.
pub async fn instances(ec2: &aws_sdk_ec2::Client) -> Vec<Instance> {
    let mut out = Vec::new();
    let Ok(r) = ec2.describe_instances().send().await else {
        return out;
    };
    for res in r.reservations() {
        for i in res.instances() {
            let machine = i
                .tags()
                .iter()
                .find(|t| t.key() == Some("medic:machine"))
                .and_then(|t| t.value())
                .unwrap_or("")
                .to_owned();
            out.push(Instance {
                id: i.instance_id().unwrap_or("").to_owned(),
                state: i
                    .state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_owned())
                    .unwrap_or_default(),
                address: i.private_ip_address().and_then(|a| a.parse().ok()),
                machine,
                image: i.image_id().unwrap_or("").to_owned(),
            });
        }
    }
    out
}

/// Keeps the lab in step with the emulator until `stop`: a running instance gets a lab machine
/// at its private address, from the AMI `amis` names for its image; a terminated one loses it.
async fn bridge(
    ec2: aws_sdk_ec2::Client,
    lab: Arc<Lab>,
    amis: BTreeMap<String, String>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let records = lab.records();
        for i in instances(&ec2).await {
            let mirror = records
                .iter()
                .find(|r| r.tags.get(MIRROR_OF) == Some(&i.id) && r.state != "terminated");
            match (i.state.as_str(), mirror, i.address) {
                ("running" | "pending", None, Some(addr)) if !i.machine.is_empty() => {
                    let spec = LaunchSpec {
                        machine: i.machine.clone(),
                        // (The lab's machine is made from its AMI; the role changes nothing.)
                        role: medic_topology::Role::Redis,
                        ami: amis.get(&i.image).cloned().unwrap_or_default(),
                        image_id: None,
                        instance_types: vec![],
                        subnet: None,
                        security_groups: vec![],
                        key_pair: None,
                        instance_profile: None,
                        tags: BTreeMap::from([
                            ("medic:machine".to_owned(), i.machine.clone()),
                            (MIRROR_OF.to_owned(), i.id.clone()),
                        ]),
                        client_token: i.id.clone(),
                        from_spares: false,
                    };
                    if let Err(e) = lab.launch_at(&spec, addr).await {
                        eprintln!("bridge: {} at {addr}: {e}", i.id);
                    }
                }
                ("terminated" | "shutting-down", Some(r), _) => {
                    let _ = lab.terminate(&r.id).await;
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `medic run`, stopped (SIGTERM, then SIGKILL after 15 s) when dropped.
pub struct Run(pub Option<Child>);

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
        }
    }
}

/// The lab beside moto: its bridge up (nothing may be sent to a lab address before it routes
/// it), each instance mirrored as a lab machine until dropped; then the lab is torn down.
pub struct Mirror {
    pub lab: Arc<Lab>,
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
    rt: tokio::runtime::Handle,
}

impl Mirror {
    /// The lab on `10.74.NET.0/24` (the VPC's subnet), its bridge and namespaces named after
    /// `name` and `net`, its state in `dir/lab`; its machines authorize `key` (its `.pub`) and
    /// are made from the AMIs `loaded` defines, named for each image id by `amis`.
    pub fn start(
        rt: &tokio::runtime::Runtime,
        ec2: &aws_sdk_ec2::Client,
        (name, net): (&str, u32),
        dir: &Path,
        key: &Path,
        loaded: &medic_topology::LoadedTopology,
        amis: BTreeMap<String, String>,
    ) -> Mirror {
        let lab = Arc::new(Lab::new(LabConfig {
            subnet: [10, 74, u8::try_from(net).unwrap()],
            bridge: format!("{name}{net}"),
            state_dir: dir.join("lab"),
            prefix: format!("{name}{net}-"),
            authorized_key: std::fs::read_to_string(key.with_extension("pub")).unwrap(),
            amis: loaded
                .amis
                .iter()
                .map(|(name, def)| (name.clone(), def.summary().binaries))
                .collect(),
        }));
        rt.block_on(lab.ensure_bridge()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let task = rt.spawn(bridge(ec2.clone(), lab.clone(), amis, stop.clone()));
        Mirror {
            lab,
            stop,
            task: Some(task),
            rt: rt.handle().clone(),
        }
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            let _ = self.rt.block_on(t);
        }
        let _ = self.rt.block_on(self.lab.down());
    }
}

/// The environment `medic` needs to reach moto with the SDK's static credentials.
pub const AWS_ENV: [(&str, &str); 4] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("NO_COLOR", "1"),
];
