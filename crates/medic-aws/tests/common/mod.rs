//! What the moto tests set up alike: the settings that reach moto directly, a VPC with a
//! subnet, an AMI, a hosted zone.

#![allow(
    clippy::unwrap_used,
    dead_code,
    reason = "a test that cannot set up should fail loudly; not every test uses every helper"
)]

use medic_aws::{AwsSettings, load_config};
use medic_testkit::Moto;

/// The SDK's settings for moto itself (no proxy in between).
pub fn direct(moto: &Moto) -> AwsSettings {
    AwsSettings {
        region: "us-east-1".into(),
        endpoint: Some(moto.url.clone()),
        static_credentials: Some(("testing".into(), "testing".into())),
    }
}

/// A VPC 10.0.0.0/16 with the subnet 10.0.1.0/24: (VPC id, subnet id).
pub async fn vpc_and_subnet(ec2: &aws_sdk_ec2::Client) -> (String, String) {
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_owned();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.0.1.0/24")
        .send()
        .await
        .unwrap();
    let subnet = subnet.subnet().unwrap().subnet_id().unwrap().to_owned();
    (vpc, subnet)
}

/// An AMI named `name`: its id.
pub async fn ami(ec2: &aws_sdk_ec2::Client, name: &str) -> String {
    let out = ec2
        .register_image()
        .name(name)
        .root_device_name("/dev/sda1")
        .send()
        .await
        .unwrap();
    out.image_id().unwrap().to_owned()
}

/// The hosted zone barton.example.com: its id.
pub async fn zone(moto: &Moto) -> String {
    let r53 = aws_sdk_route53::Client::new(&load_config(&direct(moto)).await);
    let z = r53
        .create_hosted_zone()
        .name("barton.example.com")
        .caller_reference("medic-test")
        .send()
        .await
        .unwrap();
    z.hosted_zone()
        .unwrap()
        .id()
        .trim_start_matches("/hostedzone/")
        .to_owned()
}
