//! The planner's recoveries run step by step against the simulated world, with the clients
//! writing all along and the invariants checked after every step.

use std::collections::BTreeMap;
use std::path::Path;

use medic_plan::{Action, Event, ObservedState, Plan, Step, plan_recovery};
use medic_sim::exec::{SimExec, execute};
use medic_sim::invariants::{check, converged, lost_writes};
use medic_sim::world::World;
use medic_topology::Topology;

fn lab() -> (Topology, ObservedState) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lab.yaml");
    let top = medic_topology::load_topology(&path)
        .expect("lab.yaml loads")
        .topology;
    let observed = ObservedState::assumed(&top);
    (top, observed)
}

fn lost(machine: &str) -> Event {
    Event::MachineLost {
        machine: machine.into(),
    }
}

/// Runs a plan as the controller would: each step tried again 100 ms later while it fails
/// retryably, the state and the addresses updated from each output, the invariants checked
/// after each step. Returns the plan and what was skipped.
fn run(w: &mut World, state: &mut ObservedState, event: Event) -> (Plan, Vec<String>) {
    let (top, _) = lab();
    let plan = plan_recovery(&top, state, &event, "rec-1").expect("plan");
    let (mut ex, mut addrs, mut now) = (SimExec::default(), w.addresses(), 1_000);
    let mut skipped = Vec::new();
    for s in &plan.steps {
        let out = loop {
            now += 100;
            w.advance(now);
            w.client_writes(now);
            match execute(w, &mut ex, &addrs, s, now) {
                Ok(out) => break out,
                Err(e) if e.retryable && now < 60_000 => continue,
                Err(e) => panic!("{e}"),
            }
        };
        check(w, now).unwrap_or_else(|v| panic!("after step {}: {v}", s.index));
        if let (Action::LaunchInstance { spec }, Some(ip)) = (&s.action, out.address) {
            addrs.insert(spec.machine.clone(), ip);
        }
        skipped.extend(out.skipped.clone());
        state.apply(&s.action, &out);
    }
    w.advance(now + 100);
    (plan, skipped)
}

#[test]
fn a_lost_master_is_failed_over_and_replaced() {
    let (top, mut state) = lab();
    let mut w = World::new(&top, &state);
    w.client_writes(10);
    w.advance(20);
    w.crash("redis1");
    let (plan, skipped) = run(&mut w, &mut state, lost("redis1"));
    assert!(skipped.is_empty(), "{skipped:?}");
    converged(&w).expect("converged");
    assert_eq!(state.shards["r9001"].master, "redis2");
    let new = w.instance("redis1").expect("redis1");
    assert_eq!(
        (new.id.as_str(), new.address.to_string().as_str()),
        ("i-redis1-2", "10.77.1.1")
    );
    assert!(lost_writes(&w).is_empty());
    assert_eq!(w.terminations.len(), 1);
    // Launched again (a resumed recovery): the same instance.
    let spec = plan.steps.iter().find_map(|s| match &s.action {
        Action::LaunchInstance { spec } => Some(spec.clone()),
        _ => None,
    });
    let again = Step {
        index: 99,
        action: Action::LaunchInstance {
            spec: spec.expect("a launch"),
        },
    };
    let out = execute(
        &mut w,
        &mut SimExec::default(),
        &BTreeMap::new(),
        &again,
        99_000,
    );
    assert_eq!(
        out.expect("launch").instance_id.as_deref(),
        Some("i-redis1-2")
    );
    assert_eq!(w.running_ids("redis1"), ["i-redis1-2"]);
}

#[test]
fn a_proxy_cut_off_from_the_monitor_is_fenced_at_the_source_and_left_to_repair() {
    let (top, mut state) = lab();
    let mut w = World::new(&top, &state);
    w.hang("redis1");
    w.cut_both("monitor", "haproxy2");
    let (_, skipped) = run(&mut w, &mut state, lost("redis1"));
    // Both shards' fences, activations and new addresses on haproxy2.
    assert_eq!(skipped.len(), 6, "{skipped:?}");
    assert!(skipped.iter().all(|s| s.starts_with("haproxy2: skipped")));
    // The hung old master was terminated before any promotion; it was not healthy.
    assert_eq!(w.terminations.len(), 1);
    assert!(!w.terminations[0].was_healthy);
    // The app writes through haproxy1; haproxy2 waits for the controller's repair.
    let e = converged(&w).expect_err("haproxy2 not repaired");
    assert_eq!(e, "haproxy2: r9001 is not routed to redis2 alone");
    assert!(lost_writes(&w).is_empty());
}

#[test]
fn a_lost_proxy_is_replaced_and_the_app_routes_through_it_again() {
    let (top, mut state) = lab();
    let mut w = World::new(&top, &state);
    w.crash("haproxy1");
    let hp2 = w.current_idx("haproxy2");
    assert_eq!(w.route("app", "r9001").map(|r| Some(r.0)), Ok(hp2));
    let (_, skipped) = run(&mut w, &mut state, lost("haproxy1"));
    assert!(skipped.is_empty(), "{skipped:?}");
    converged(&w).expect("converged");
    let hp1 = w.current_idx("haproxy1");
    assert_eq!(w.route("app", "r9001").map(|r| Some(r.0)), Ok(hp1));
    assert_eq!(
        w.dns["haproxy1.barton.lab"],
        [w.instance("haproxy1").expect("hp1").address]
    );
}

/// A replica pointed at another server by hand (or left following an old master): the
/// recovery the controller asks for when its INFO names another master makes it follow the
/// master again, with no write lost.
#[test]
fn a_replica_following_another_server_is_made_to_follow_its_master() {
    let (top, mut state) = lab();
    let mut w = World::new(&top, &state);
    w.client_writes(10);
    w.advance(20);
    let i = w.current_idx("redis2").expect("redis2");
    let astray: std::net::IpAddr = "10.77.1.99".parse().expect("an address");
    w.instances[i]
        .redis
        .get_mut("r9001")
        .expect("redis2's server of r9001")
        .role = medic_sim::world::RedisRole::Replica {
        of: "elsewhere".into(),
        addr: astray,
    };
    let before = converged(&w).expect_err("redis2 follows another server");
    assert!(before.contains("r9001"), "{before}");
    let (_, skipped) = run(
        &mut w,
        &mut state,
        Event::FollowMaster {
            shard: "r9001".into(),
            machine: "redis2".into(),
        },
    );
    assert!(skipped.is_empty(), "{skipped:?}");
    converged(&w).expect("converged");
    assert!(lost_writes(&w).is_empty());
    assert!(w.terminations.is_empty(), "nothing terminated");
}
