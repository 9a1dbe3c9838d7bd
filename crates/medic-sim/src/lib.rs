//! A deterministic simulator of a medic deployment: the simulated *world* (machines, redis
//! servers, HAProxies, the network, the cloud, DNS and the clients), the execution of plan
//! steps against it as medic's executor would do them, the invariants checked after every
//! event, and the [`driver`] that runs medic's real controller core and planner against it.
//! No clock (time is virtual milliseconds), one seeded source of randomness, no I/O.

pub mod driver;
pub mod exec;
pub mod faults;
pub mod invariants;
pub mod rng;
pub mod world;

use std::path::Path;
use std::sync::Arc;

use medic_topology::LoadedTopology;

/// The deployment every seed runs: examples/lab.yaml (two redis machines with two shards, two
/// proxies, an app machine with its app proxy and a client, the lab cloud, DNS).
pub fn lab() -> Result<Arc<LoadedTopology>, String> {
    load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lab.yaml"))
}

/// The second deployment: three redis machines, three shards with two replicas each
/// (`topologies/three.yaml`).
pub fn three() -> Result<Arc<LoadedTopology>, String> {
    load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/three.yaml"))
}

fn load(path: &Path) -> Result<Arc<LoadedTopology>, String> {
    medic_topology::load_topology(path)
        .map(Arc::new)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs one seed: its faults drawn from it, medic's core against the world.
pub fn run_seed(
    loaded: &Arc<LoadedTopology>,
    seed: u64,
) -> Result<driver::Report, driver::Failure> {
    let top = &loaded.topology;
    let world = world::World::new(top, &medic_plan::ObservedState::assumed(top));
    let (faults, crash_after_exec) = faults::draw(seed, &world);
    driver::Sim::new(seed, loaded.clone(), faults, crash_after_exec).run()
}
