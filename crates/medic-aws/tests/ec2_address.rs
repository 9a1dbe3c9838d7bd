//! A service's own address moved between EC2 instances (a secondary private IP, and the
//! Elastic IP with it), through the real SDK against moto server; every claim read back with
//! the SDK's own calls, not medic's.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::net::Ipv4Addr;

mod common;

use medic_aws::{Ec2, load_config};
use medic_cloud::{Cloud, CloudError};
use medic_testkit::Moto;

struct World {
    _moto: Moto,
    raw: aws_sdk_ec2::Client,
    ec2: Ec2,
    a: String,
    b: String,
    allocation: String,
    public: String,
}

async fn world() -> World {
    let moto = Moto::start();
    let settings = common::direct(&moto);
    let raw = aws_sdk_ec2::Client::new(&load_config(&settings).await);
    let (_, subnet) = common::vpc_and_subnet(&raw).await;
    let ami = common::ami(&raw, "web").await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let out = raw
            .run_instances()
            .image_id(&ami)
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .subnet_id(&subnet)
            .min_count(1)
            .max_count(1)
            .send()
            .await
            .unwrap();
        ids.push(out.instances()[0].instance_id().unwrap().to_owned());
    }
    let eip = raw
        .allocate_address()
        .domain(aws_sdk_ec2::types::DomainType::Vpc)
        .send()
        .await
        .unwrap();
    World {
        ec2: Ec2::new(&settings).await,
        raw,
        b: ids.pop().unwrap(),
        a: ids.pop().unwrap(),
        allocation: eip.allocation_id().unwrap().to_owned(),
        public: eip.public_ip().unwrap().to_owned(),
        _moto: moto,
    }
}

impl World {
    /// The instance's primary interface and every private address on it, as EC2 says.
    async fn addresses_of(&self, id: &str) -> (String, Vec<String>) {
        let out = self
            .raw
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .unwrap();
        let i = &out.reservations()[0].instances()[0];
        let eni = i.network_interfaces()[0]
            .network_interface_id()
            .unwrap()
            .to_owned();
        let n = self
            .raw
            .describe_network_interfaces()
            .network_interface_ids(&eni)
            .send()
            .await
            .unwrap();
        let ips = n.network_interfaces()[0]
            .private_ip_addresses()
            .iter()
            .filter_map(|a| a.private_ip_address().map(str::to_owned))
            .collect();
        (eni, ips)
    }

    /// The interface the Elastic IP is associated with (on its primary address).
    async fn elastic(&self) -> Option<String> {
        let out = self
            .raw
            .describe_addresses()
            .allocation_ids(&self.allocation)
            .send()
            .await
            .unwrap();
        // (moto says "" for none.)
        out.addresses()[0]
            .network_interface_id()
            .filter(|i| !i.is_empty())
            .map(str::to_owned)
    }
}

const SERVICE: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 100);

#[tokio::test]
async fn the_address_and_its_elastic_ip_move_to_the_new_primary_alone() {
    let w = world().await;
    let said = w
        .ec2
        .move_address(&w.a, SERVICE, Some(&w.allocation))
        .await
        .unwrap();
    let (eni_a, on_a) = w.addresses_of(&w.a).await;
    assert!(on_a.contains(&SERVICE.to_string()), "{on_a:?}");
    assert_eq!(w.elastic().await, Some(eni_a.clone()));
    assert!(
        said.contains(&eni_a) && said.contains(&w.public),
        "it says what it did: {said}"
    );

    // The failover: to b, taken from a.
    let said = w
        .ec2
        .move_address(&w.b, SERVICE, Some(&w.allocation))
        .await
        .unwrap();
    let (eni_b, on_b) = w.addresses_of(&w.b).await;
    let (_, on_a) = w.addresses_of(&w.a).await;
    assert!(on_b.contains(&SERVICE.to_string()), "{on_b:?}");
    assert!(
        !on_a.contains(&SERVICE.to_string()),
        "the old primary keeps it: {on_a:?}"
    );
    assert_eq!(w.elastic().await, Some(eni_b.clone()));
    assert!(said.contains(&eni_b), "{said}");

    // Again (a resumed step): nothing more changes, and it still says where it is.
    let again = w
        .ec2
        .move_address(&w.b, SERVICE, Some(&w.allocation))
        .await
        .unwrap();
    assert!(
        again.contains("already") && !again.contains("taken from"),
        "{again}"
    );
    assert_eq!(w.addresses_of(&w.b).await.1, on_b);
    assert_eq!(w.elastic().await, Some(eni_b));

    // The fence: the address and the Elastic IP taken from b's instance, read back; again,
    // nothing more.
    let said = w
        .ec2
        .release_address(&w.b, SERVICE, Some(&w.allocation))
        .await
        .unwrap();
    assert!(
        said.contains("taken from") && said.contains("taken off"),
        "{said}"
    );
    assert!(!w.addresses_of(&w.b).await.1.contains(&SERVICE.to_string()));
    assert_eq!(w.elastic().await, None, "the Elastic IP still reaches b");
    let again = w
        .ec2
        .release_address(&w.b, SERVICE, Some(&w.allocation))
        .await
        .unwrap();
    assert!(
        again.contains(&format!("{SERVICE} not on"))
            && again.contains("Elastic IP")
            && again.contains("not on"),
        "{again}"
    );

    // Without an Elastic IP: the private address alone moves back to a, b holds nothing.
    w.ec2.move_address(&w.a, SERVICE, None).await.unwrap();
    assert!(w.addresses_of(&w.a).await.1.contains(&SERVICE.to_string()));
    assert!(!w.addresses_of(&w.b).await.1.contains(&SERVICE.to_string()));

    // An instance gone holds nothing.
    w.raw
        .terminate_instances()
        .instance_ids(&w.b)
        .send()
        .await
        .unwrap();
    let gone = w.ec2.release_address(&w.b, SERVICE, None).await.unwrap();
    assert!(gone.contains("is gone"), "{gone}");
}

#[tokio::test]
async fn an_unknown_elastic_ip_or_instance_is_a_clear_error() {
    let w = world().await;
    let e = w
        .ec2
        .move_address(&w.a, SERVICE, Some("eipalloc-0000000000000000"))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(e, CloudError::NotFound { .. }) && text.contains("services[].address.elastic_ip"),
        "{text}"
    );
    let e = w
        .ec2
        .move_address("i-0000000000000000", SERVICE, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("i-0000000000000000"), "{e}");
}
