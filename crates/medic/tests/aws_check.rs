//! `medic aws check` against moto: the examples' AWS resources, created in the emulator.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::path::Path;
use std::process::Command;

use medic_aws::{AwsSettings, load_config};
use medic_testkit::Moto;

struct Ids {
    subnets: [String; 2],
    sg: String,
    amis: [String; 2],
    zone: String,
}

async fn create(moto: &Moto) -> Ids {
    let s = AwsSettings {
        region: "us-east-1".into(),
        endpoint: Some(moto.url.clone()),
        static_credentials: Some(("testing".into(), "testing".into())),
    };
    let ec2 = aws_sdk_ec2::Client::new(&load_config(&s).await);
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc()
        .unwrap()
        .vpc_id()
        .unwrap()
        .to_owned();
    let mut subnets = Vec::new();
    for cidr in ["10.0.1.0/24", "10.0.2.0/24"] {
        let sn = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(cidr)
            .send()
            .await
            .unwrap();
        subnets.push(sn.subnet().unwrap().subnet_id().unwrap().to_owned());
    }
    let sg = ec2
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
    let mut amis = Vec::new();
    for name in ["medic-redis", "medic-haproxy"] {
        amis.push(
            ec2.register_image()
                .name(name)
                .root_device_name("/dev/sda1")
                .send()
                .await
                .unwrap()
                .image_id()
                .unwrap()
                .to_owned(),
        );
    }
    let r53 = aws_sdk_route53::Client::new(&load_config(&s).await);
    let z = r53
        .create_hosted_zone()
        .name("barton.example.com")
        .caller_reference("medic")
        .send()
        .await
        .unwrap();
    let zone = z
        .hosted_zone()
        .unwrap()
        .id()
        .trim_start_matches("/hostedzone/")
        .to_owned();
    Ids {
        subnets: [subnets[0].clone(), subnets[1].clone()],
        sg,
        amis: [amis[0].clone(), amis[1].clone()],
        zone,
    }
}

fn topology(ids: &Ids, dir: &Path) -> std::path::PathBuf {
    let root = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../..");
    let text = std::fs::read_to_string(root.join("examples/barton.yaml"))
        .unwrap()
        .replace("subnet-0a1b2c3d4e5f60718", &ids.subnets[0])
        .replace("subnet-0f1e2d3c4b5a69788", &ids.subnets[1])
        .replace("sg-0123456789abcdef0", &ids.sg)
        .replace("ami-0a1b2c3d4e5f60718", &ids.amis[0])
        .replace("ami-0b2c3d4e5f6071829", &ids.amis[1])
        .replace("Z04117612BARTON0EXAMPLE", &ids.zone)
        .replace(
            "../playbooks",
            &root.join("playbooks").display().to_string(),
        )
        .replace("../amis", &root.join("amis").display().to_string());
    let p = dir.join("barton.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

fn check(file: &Path, moto: &Moto) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["aws", "check"])
        .arg(file)
        .args(["--endpoint", &moto.url])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn everything_the_topology_names_is_found() {
    let moto = Moto::start();
    let ids = create(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = check(&topology(&ids, dir.path()), &moto);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 8, "{out}");
    assert!(lines[..7].iter().all(|l| l.starts_with("ok ")), "{out}");
    assert!(lines[7].ends_with("7 checked, all found"), "{out}");
}

#[tokio::test]
async fn what_is_missing_is_named_with_its_field() {
    let moto = Moto::start();
    let mut ids = create(&moto).await;
    ids.subnets[1] = "subnet-00000000000000000".into();
    ids.amis[0] = "ami-00000000000000000".into();
    ids.zone = "Z00000000000NOSUCHZONE".into();
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = check(&topology(&ids, dir.path()), &moto);
    assert_eq!(code, 1, "{out}");
    let missing: Vec<&str> = out.lines().filter(|l| l.starts_with("MISSING")).collect();
    assert_eq!(missing.len(), 3, "{out}");
    assert!(
        missing[0].contains("AMI ami-00000000000000000")
            && missing[0].contains("amis[redis].image_ids.us-east-1"),
        "{out}"
    );
    assert!(
        missing[1].contains("subnet subnet-00000000000000000")
            && missing[1].contains("provider.aws.subnets[1]"),
        "{out}"
    );
    assert!(
        missing[2].contains("hosted zone Z00000000000NOSUCHZONE")
            && missing[2].contains("dns.provider.route53.zone_id"),
        "{out}"
    );
    assert!(
        out.lines()
            .last()
            .unwrap()
            .ends_with("7 checked, 3 missing or not visible"),
        "{out}"
    );
}

/// examples/sounz.yaml on aws, its moving address with an Elastic IP: `medic aws check` looks
/// the allocation up and names the field when EC2 does not know it.
#[tokio::test]
async fn a_service_s_elastic_ip_is_looked_up() {
    let moto = Moto::start();
    let ids = create(&moto).await;
    let s = AwsSettings {
        region: "us-east-1".into(),
        endpoint: Some(moto.url.clone()),
        static_credentials: Some(("testing".into(), "testing".into())),
    };
    let ec2 = aws_sdk_ec2::Client::new(&load_config(&s).await);
    let eip = ec2
        .allocate_address()
        .domain(aws_sdk_ec2::types::DomainType::Vpc)
        .send()
        .await
        .unwrap();
    let allocation = eip.allocation_id().unwrap().to_owned();
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sounz = std::fs::read_to_string(root.join("examples/sounz.yaml")).unwrap();
    let start = sounz.find("provider:\n").unwrap();
    let end = sounz.find("playbooks:").unwrap();
    let aws = format!(
        "{}provider:\n  aws:\n    region: us-east-1\n    subnets: [{}]\n    security_groups: [{}]\n    key_pair: medic\n{}",
        &sounz[..start],
        ids.subnets[0],
        ids.sg,
        &sounz[end..]
    )
    .replace("ami: web}", "ami: web, instance_type: t3.small}")
    .replace(
        "definition: ../amis/web.yaml",
        &format!(
            "definition: {}\n    image_ids: {{us-east-1: {}}}",
            root.join("amis/web.yaml").display(),
            ids.amis[0]
        ),
    )
    .replace("playbooks: sounz", &format!("playbooks: {}", root.join("examples/sounz").display()));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sounz.yaml");
    for (elastic, found) in [
        (allocation.as_str(), true),
        ("eipalloc-0123456789abcdef0", false),
    ] {
        std::fs::write(
            &file,
            aws.replace(
                "interface: eth0}",
                &format!("interface: eth0, elastic_ip: {elastic}}}"),
            ),
        )
        .unwrap();
        let (code, out) = check(&file, &moto);
        let line = out
            .lines()
            .find(|l| l.contains(&format!("Elastic IP {elastic}")))
            .unwrap_or_else(|| panic!("no line for the Elastic IP: {out}"));
        if found {
            assert_eq!(code, 0, "{out}");
            assert!(line.starts_with("ok "), "{out}");
        } else {
            assert_eq!(code, 1, "{out}");
            assert!(
                line.starts_with("MISSING") && line.contains("services[0].address.elastic_ip"),
                "{out}"
            );
        }
    }
}
