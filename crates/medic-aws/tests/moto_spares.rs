//! Spares (`policy.spares`) on EC2 through the real SDK against moto: a spare prepared as
//! `PrepareSpare` leaves it (tagged `medic:spare`, stopped, tagged ready) is taken by a
//! replacement's launch step — re-tagged as the machine, read back, started — and taken once.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

mod common;

use common::direct;
use medic_aws::{Ec2, load_config};
use medic_cloud::faults::{Faults, Faulty};
use medic_cloud::spares::{TAG_SPARE, TAG_SPARE_FIT, TAG_SPARE_READY, claim, spare_tags};
use medic_cloud::*;
use medic_plan::LaunchSpec;
use medic_testkit::Moto;

struct World {
    _moto: Moto,
    ec2: Ec2,
    ami: String,
    subnet: String,
}

async fn world() -> World {
    let moto = Moto::start();
    let settings = direct(&moto);
    let raw = aws_sdk_ec2::Client::new(&load_config(&settings).await);
    let (_vpc, subnet) = common::vpc_and_subnet(&raw).await;
    let ami = common::ami(&raw, "medic-redis").await;
    World {
        _moto: moto,
        ec2: Ec2::new(&settings).await,
        ami,
        subnet,
    }
}

fn spec(w: &World, name: &str, recovery: &str, step: usize) -> LaunchSpec {
    LaunchSpec {
        machine: name.into(),
        role: medic_topology::Role::Redis,
        ami: "redis".into(),
        image_id: Some(w.ami.clone()),
        instance_types: vec!["r6i.large".into()],
        subnet: Some(w.subnet.clone()),
        security_groups: vec![],
        key_pair: None,
        instance_profile: None,
        tags: BTreeMap::from([
            ("Name".to_owned(), format!("barton-{name}")),
            (TAG_TOPOLOGY.to_owned(), "barton".to_owned()),
            (TAG_RECOVERY.to_owned(), recovery.to_owned()),
            (TAG_STEP.to_owned(), step.to_string()),
        ]),
        client_token: medic_plan::client_token(recovery, step),
        from_spares: false,
    }
}

/// A spare as its preparation leaves it: launched with `medic:spare`, `stop`ped if asked,
/// tagged ready.
async fn spare<C: Cloud>(cloud: &C, w: &World, recovery: &str, stop: bool) -> String {
    let mut s = spec(w, &format!("spare-redis-{recovery}"), recovery, 1);
    s.tags.insert(TAG_SPARE.into(), "redis".into());
    // Launched as the replacement would be: the same AMI, subnet and instance types.
    s.tags.insert(TAG_SPARE_FIT.into(), s.fit());
    let id = cloud.launch(&s).await.unwrap().instance.id;
    wait_running(
        cloud,
        &id,
        Duration::from_secs(30),
        Duration::from_millis(50),
    )
    .await
    .unwrap();
    if stop {
        cloud.stop(&id).await.unwrap();
    }
    let ready = BTreeMap::from([(TAG_SPARE_READY.to_owned(), "yes".to_owned())]);
    cloud.retag(&id, &ready, &[]).await.unwrap();
    id
}

fn replacement(w: &World, recovery: &str, step: usize) -> LaunchSpec {
    let mut r = spec(w, "redis2", recovery, step);
    r.tags.insert(TAG_MACHINE.into(), "redis2".into());
    r.from_spares = true;
    r
}

#[tokio::test]
async fn a_stopped_spare_is_taken_retagged_started_and_taken_once() {
    let w = world().await;
    let id = spare(&w.ec2, &w, "prep-1", true).await;
    let stopped = w.ec2.describe(&id).await.unwrap().unwrap();
    assert_eq!(stopped.state, InstanceState::Stopped);
    // A machine launched in another subnet (another zone) does not take it: it launches.
    let mut elsewhere = replacement(&w, "rec-x", 16);
    elsewhere.subnet = Some("subnet-0123456789abcdef0".into());
    assert!(claim(&w.ec2, &elsewhere).await.unwrap().is_none());
    let r = replacement(&w, "rec-2", 16);
    let got = claim(&w.ec2, &r).await.unwrap().unwrap();
    assert_eq!(got.instance.id, id);
    assert!(got.spare && !got.reused);
    let i = wait_running(
        &w.ec2,
        &id,
        Duration::from_secs(30),
        Duration::from_millis(50),
    )
    .await
    .unwrap();
    for (k, v) in &r.tags {
        assert_eq!(i.tag(k), Some(v.as_str()), "tag {k}: {:?}", i.tags);
    }
    assert!(
        i.tag(TAG_SPARE).is_none() && i.tag(TAG_SPARE_READY).is_none(),
        "{:?}",
        i.tags
    );
    assert!(
        w.ec2
            .find(&spare_tags("barton", "redis"))
            .await
            .unwrap()
            .is_empty(),
        "the pool is empty"
    );
    // The same step run again (a controller killed after the re-tag) finds it; another step
    // finds no spare (and would launch).
    let again = claim(&w.ec2, &r).await.unwrap().unwrap();
    assert_eq!(again.instance.id, id);
    assert!(again.reused);
    assert!(
        claim(&w.ec2, &replacement(&w, "rec-3", 16))
            .await
            .unwrap()
            .is_none()
    );
    // It is redis2's instance now, as a lookup by tags finds a machine's.
    let by_machine = w
        .ec2
        .find(&BTreeMap::from([
            (TAG_TOPOLOGY.to_owned(), "barton".to_owned()),
            (TAG_MACHINE.to_owned(), "redis2".to_owned()),
        ]))
        .await
        .unwrap();
    assert_eq!(by_machine.len(), 1);
    assert_eq!(by_machine[0].id, id);
}

/// An EC2 whose instances take `boot` to run after a launch or a start (moto's run at once):
/// what a replacement's launch step waits with a running spare, a stopped one, and none.
#[tokio::test]
async fn a_running_spare_is_taken_without_waiting_for_a_boot() {
    let w = world().await;
    let boot = Duration::from_secs(3);
    let cloud = Faulty::new(
        w.ec2.clone(),
        Faults {
            pending_for: boot,
            ..Faults::default()
        },
    );
    let running = spare(&cloud, &w, "prep-r", false).await;
    let launch_step = |spec: LaunchSpec| {
        let cloud = &cloud;
        async move {
            let t = Instant::now();
            let l = match claim(cloud, &spec).await.unwrap() {
                Some(l) => l,
                None => cloud.launch(&spec).await.unwrap(),
            };
            wait_running(
                cloud,
                &l.instance.id,
                Duration::from_secs(30),
                Duration::from_millis(20),
            )
            .await
            .unwrap();
            (l, t.elapsed())
        }
    };
    let (a, with_running) = launch_step(replacement(&w, "rec-a", 16)).await;
    assert_eq!(a.instance.id, running);
    assert!(a.spare);
    let stopped = spare(&cloud, &w, "prep-s", true).await;
    let (b, with_stopped) = launch_step(replacement(&w, "rec-b", 16)).await;
    assert_eq!(b.instance.id, stopped);
    let (c, without) = launch_step(replacement(&w, "rec-c", 16)).await;
    assert!(!c.spare, "the pool was empty: launched");
    println!(
        "launch step with an instance boot of {boot:?}: a running spare {:.3} s, a stopped spare {:.3} s, no spare {:.3} s",
        with_running.as_secs_f64(),
        with_stopped.as_secs_f64(),
        without.as_secs_f64()
    );
}
