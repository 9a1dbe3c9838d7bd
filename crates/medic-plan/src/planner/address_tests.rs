//! The service address that moves (examples/sounz.yaml): on the lab, brought up over SSH after
//! a duplicate check; on EC2, moved at the VPC first, then brought up without one.

use std::path::Path;

use medic_topology::Topology;

use super::*;

const SOUNZ: &str = include_str!("../../../../examples/sounz.yaml");

const AWS: &str = "provider:
  aws:
    region: us-east-1
    subnets: [subnet-0a1b2c3d4e5f60718]
    security_groups: [sg-0123456789abcdef0]
    key_pair: medic
";

fn sounz(aws: bool, elastic: Option<&str>) -> Topology {
    let mut text = SOUNZ.to_owned();
    if aws {
        let start = text.find("provider:\n").unwrap_or_default();
        let end = text.find("playbooks:").unwrap_or_default();
        text.replace_range(start..end, AWS);
    }
    if let Some(e) = elastic {
        text = text.replace(
            "interface: eth0}",
            &format!("interface: eth0, elastic_ip: {e}}}"),
        );
    }
    medic_topology::load::parse_str(Path::new("t.yaml"), &text, "a topology")
        .into_result()
        .unwrap()
}

fn kinds(plan: &Plan) -> Vec<(&'static str, String)> {
    plan.steps
        .iter()
        .map(|s| {
            let target = match &s.action {
                Action::ServiceAddress { machine, up, .. } => {
                    format!("{machine} {}", if *up { "up" } else { "down" })
                }
                Action::CloudAddress { machine, up, .. } => {
                    format!("{machine} {}", if *up { "up" } else { "down" })
                }
                _ => String::new(),
            };
            (s.action.kind(), target)
        })
        .filter(|(k, _)| k.contains("address"))
        .collect()
}

fn down(m: &str) -> Event {
    Event::ServiceDown {
        service: "sounz".into(),
        machine: m.into(),
    }
}

#[test]
fn on_the_lab_the_address_moves_over_ssh_after_a_duplicate_check() {
    let top = sounz(false, None);
    let state = ObservedState::assumed(&top);
    let plan = plan_recovery(&top, &state, &down("slayer"), "r1").unwrap();
    assert_eq!(
        kinds(&plan),
        [
            ("address", "slayer down".to_owned()),
            ("address", "megadeth up".to_owned())
        ]
    );
    let up = plan
        .steps
        .iter()
        .find(|s| matches!(s.action, Action::ServiceAddress { up: true, .. }))
        .unwrap();
    let command = up.action.address_command().unwrap();
    assert!(command.contains("arping -q -D"), "{command}");
}

#[test]
fn on_ec2_the_address_and_its_elastic_ip_move_at_the_vpc_before_the_interface() {
    let top = sounz(true, Some("eipalloc-0123456789abcdef0"));
    let mut state = ObservedState::assumed(&top);
    if let Some(m) = state.machines.get_mut("megadeth") {
        m.instance_id = Some("i-0b".into());
    }
    let plan = plan_recovery(&top, &state, &down("slayer"), "r1").unwrap();
    assert_eq!(
        kinds(&plan),
        [
            ("cloud-address", "slayer down".to_owned()),
            ("address", "slayer down".to_owned()),
            ("cloud-address", "megadeth up".to_owned()),
            ("address", "megadeth up".to_owned())
        ]
    );
    // Taken from the old primary's instance before its fence hook and the promotion (the
    // fence that needs no answer from it), given to the new one's after the promotion.
    let at = |f: &dyn Fn(&Action) -> bool| plan.steps.iter().position(|s| f(&s.action)).unwrap();
    let release = at(&|a| matches!(a, Action::CloudAddress { up: false, .. }));
    let fenced = at(&|a| matches!(a, Action::RunHook { hook, .. } if hook == "on_fenced"));
    let role = at(&|a| matches!(a, Action::ServiceRole { .. }));
    let moved = at(&|a| matches!(a, Action::CloudAddress { up: true, .. }));
    assert!(
        release < fenced && fenced < role && role < moved,
        "{:?}",
        kinds(&plan)
    );
    assert!(matches!(
        &plan.steps[release].action,
        Action::CloudAddress { machine, elastic_ip: Some(_), up: false, .. } if machine == "slayer"
    ));
    let cloud = &plan.steps[moved];
    assert_eq!(
        cloud.action,
        Action::CloudAddress {
            service: "sounz".into(),
            machine: "megadeth".into(),
            instance_id: Some("i-0b".into()),
            ip: "10.77.0.100".parse().unwrap(),
            elastic_ip: Some("eipalloc-0123456789abcdef0".into()),
            up: true,
        }
    );
    // The VPC answers ARP itself: no duplicate check, only the announcement.
    let up = plan
        .steps
        .iter()
        .find(|s| matches!(s.action, Action::ServiceAddress { up: true, .. }))
        .unwrap();
    let command = up.action.address_command().unwrap();
    assert!(!command.contains("arping -q -D"), "{command}");
    assert!(
        command.contains("ip addr replace 10.77.0.100/24 dev eth0"),
        "{command}"
    );
    // A plan journaled before this field existed (as one with the check on is written now)
    // reads back with the duplicate check on.
    let lab = sounz(false, None);
    let lab_plan =
        plan_recovery(&lab, &ObservedState::assumed(&lab), &down("slayer"), "r1").unwrap();
    let step = lab_plan
        .steps
        .iter()
        .find(|s| matches!(s.action, Action::ServiceAddress { up: true, .. }))
        .unwrap();
    let json = serde_json::to_string(&step.action).unwrap();
    assert!(!json.contains("detect_duplicate"), "{json}");
    let read: Result<Action, _> = serde_json::from_str(&json);
    assert!(
        matches!(
            read,
            Ok(Action::ServiceAddress {
                detect_duplicate: true,
                ..
            })
        ),
        "{read:?}"
    );
}

#[test]
fn a_switchover_on_ec2_moves_the_address_too() {
    let top = sounz(true, None);
    let state = ObservedState::assumed(&top);
    let to = Event::Switchover {
        shard: "sounz".into(),
        to: Some("megadeth".into()),
    };
    let plan = plan_recovery(&top, &state, &to, "r1").unwrap();
    assert_eq!(
        kinds(&plan),
        [
            ("cloud-address", "slayer down".to_owned()),
            ("address", "slayer down".to_owned()),
            ("cloud-address", "megadeth up".to_owned()),
            ("address", "megadeth up".to_owned())
        ]
    );
}
