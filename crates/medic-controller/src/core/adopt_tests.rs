//! A deployment medic adopted (`managed: false`): nothing writes its runtime changes into
//! haproxy.cfg, so a recovery resumed after a restart makes every one of them again (a proxy
//! reloaded meanwhile has forgotten them) before it goes on.

use std::sync::Arc;

use medic_plan::{Action, Event, StepOutput};

use super::*;

fn adopted() -> Core {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("examples/static.yaml"))
        .unwrap()
        .replace("provider: static\n", "provider: static\nmanaged: false\n")
        .replace(
            "runtime_api: {port: 9999}",
            "runtime_api: {port: 9999, reach: network}",
        );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("static.yaml");
    std::fs::write(&path, text).unwrap();
    let loaded = medic_topology::load_topology(&path).expect("the adopted topology loads");
    let saved = Saved::fresh(&loaded.topology);
    Core::new(Arc::new(loaded), saved)
}

#[test]
fn a_resumed_recovery_of_an_adopted_deployment_makes_its_proxy_changes_again() {
    let mut c = adopted();
    c.request(Request {
        event: Event::ProcessDied {
            shard: "r9001".into(),
            machine: "redis1".into(),
        },
        trigger: "test".into(),
        first_failure_ms: None,
        master_last_ok_ms: None,
        queued_ms: 0,
        detected: false,
        resume: None,
    });
    c.schedule(1_000);
    let (id, run) = c.running.pop_first().expect("started");
    let index_of = |f: fn(&Action) -> bool| {
        run.plan
            .steps
            .iter()
            .filter(|s| f(&s.action))
            .map(|s| s.index)
            .collect::<Vec<_>>()
    };
    let fences = index_of(|a| matches!(a, Action::FenceServer { .. }));
    let promote = index_of(|a| matches!(a, Action::PromoteReplica { .. }));
    assert_eq!((fences.len(), promote.len()), (2, 1), "{:#?}", run.plan);
    // Killed after the fences, before the promotion: resumed by a new core.
    let done: BTreeMap<usize, StepOutput> = (1..promote[0])
        .map(|i| (i, StepOutput::default()))
        .collect();
    let mut c2 = adopted();
    c2.resume(
        Resume {
            id: id.clone(),
            plan: run.plan.clone(),
            done,
            launched_ms: BTreeMap::new(),
            begun: Default::default(),
        },
        "test".into(),
        None,
        None,
        2_000,
    );
    c2.schedule(2_000);
    let resumed = c2.running.get(&id).expect("resumed");
    assert_eq!(
        resumed.redo,
        fences.iter().copied().collect(),
        "the fences are made again before the promotion"
    );
    let Next::Run(first) = c2.next_step(&id, 2_000) else {
        panic!("nothing to run");
    };
    assert!(
        matches!(first.action, Action::FenceServer { .. }),
        "{first:?}"
    );
}
