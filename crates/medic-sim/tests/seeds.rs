//! Thousands of seeds: medic's core and planner against the simulated world, each seed with
//! its own faults (crashes, hangs, dead processes, partitions one way or both, a refusing
//! runtime API, the controller killed at any point, two or three at once). Every invariant is
//! checked after every tick; a failure prints its seed and a one-line replay.
//!
//! `MEDIC_SIM_SEEDS=N` runs N seeds instead of 2 000 (the long runs use the `medic-sim` binary:
//! `scripts/simulate --seeds 1000000`).

use std::collections::BTreeMap;

fn known(list: &str) -> BTreeMap<u64, String> {
    list.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (seed, inv) = l.split_once(' ')?;
            Some((seed.parse().ok()?, inv.trim().to_owned()))
        })
        .collect()
}

#[test]
fn every_seed_keeps_every_invariant_but_the_known_ones() {
    let seeds: u64 = std::env::var("MEDIC_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let loaded = medic_sim::lab().expect("examples/lab.yaml loads");
    run_all(&loaded, seeds, &known(include_str!("known-violations.txt")));
}

/// Three redis machines, three shards with two replicas each: a failover leaves a replica
/// that must follow the new master.
#[test]
fn the_three_machine_deployment_keeps_every_invariant_but_the_known_ones() {
    let loaded = medic_sim::three().expect("topologies/three.yaml loads");
    run_all(
        &loaded,
        300,
        &known(include_str!("known-violations-three.txt")),
    );
}

fn run_all(
    loaded: &std::sync::Arc<medic_topology::LoadedTopology>,
    seeds: u64,
    known: &BTreeMap<u64, String>,
) {
    let (mut wrong, mut recoveries, mut ok, mut human) = (Vec::new(), 0, 0, 0);
    for seed in 0..seeds {
        match (medic_sim::run_seed(loaded, seed), known.get(&seed)) {
            (Ok(r), None) => {
                ok += 1;
                recoveries += r.recoveries;
                human += usize::from(r.needs_human.is_some());
            }
            (Ok(_), Some(inv)) => wrong.push(format!(
                "seed {seed} now keeps every invariant (listed as breaking {inv}): take it out of the known violations"
            )),
            (Err(f), Some(inv)) if f.violation.starts_with(inv.as_str()) => {}
            (Err(f), _) => wrong.push(f.to_string()),
        }
    }
    eprintln!(
        "{}: {seeds} seeds: {ok} kept every invariant ({recoveries} recoveries; {human} ended waiting for a human, as designed: a shard with no copy fit to promote), {} known violations",
        loaded.path.display(),
        known.range(..seeds).count()
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

/// Seeds that broke an invariant before their fix, kept as regressions.
#[test]
fn seeds_that_found_defects_now_pass() {
    let loaded = medic_sim::lab().expect("examples/lab.yaml loads");
    for (seed, defect) in [
        (
            561,
            "a redis process killed while the monitor was cut off from its machine was never restarted (silence, then refusals, gave no verdict)",
        ),
        (
            162,
            "a dead master whose replica the monitor could not reach: the failed promotion escalated to replacing the healthy machine, and the shard was left without a master for good",
        ),
        (
            62,
            "the write acknowledged in the same instant as the replica's last sync counted as outside the replication window",
        ),
        (
            274,
            "haproxy2's hang ended between the verdict and the terminate step: the machine was terminated although it answered again",
        ),
        (
            1746,
            "a replica's restart failed because its master had died meanwhile: it escalated to terminating the healthy replica machine",
        ),
        (
            749,
            "a failed recovery's retry lived only in memory: after a controller restart the machine stayed out of monitoring for good",
        ),
        (
            13,
            "a second loss of a machine within the cooldown is held for a human by design; the simulated operator's `medic recover` must then bring everything back",
        ),
        (
            6529,
            "two crashes at once left too few observers to confirm either loss: medic alerted instead of acting, and the operator's `medic recover` must bring everything back",
        ),
    ] {
        if let Err(f) = medic_sim::run_seed(&loaded, seed) {
            panic!("{defect}:\n{f}");
        }
    }
    // Found beyond the test's seeds; each still plays out as it did (what the trace must say).
    let three = medic_sim::three().expect("topologies/three.yaml loads");
    for (loaded, seed, happens, defect) in [
        (
            &loaded,
            3401,
            "redis1 is watched again after its recovery's backoff",
            "a recovery of one shard's server that ended well erased the retry of another shard's server on the same machine, whose failed recovery had left it out of monitoring: that shard kept no master for good",
        ),
        (
            &loaded,
            7049,
            "redis1 is watched again after its recovery's backoff",
            "the same: a successful recovery on the machine dropped the earlier failed one's watch-again",
        ),
        (
            &three,
            16049,
            "terminate: redis1 answers again, not terminated",
            "the monitor host cut off from a machine whose hang ended during its recovery: the last look, the monitor's alone, terminated the machine although every observer reached it again",
        ),
    ] {
        match medic_sim::run_seed(loaded, seed) {
            Ok(r) => assert!(
                r.trace.iter().any(|l| l.contains(happens)),
                "seed {seed} no longer plays out as it did ({happens:?} is not in its trace): {defect}"
            ),
            Err(f) => panic!("{defect}:\n{f}"),
        }
    }
    // All three redis machines crashed within 8 s: each recovery tried to promote a replica
    // on another lost machine, again and again, and never said that the shards' data was
    // only on machines that were down (the one answering replica had never synced). It ends
    // waiting for a human, with the copies still there (checked by the driver).
    match medic_sim::run_seed(&three, 18599) {
        Ok(r) => assert!(
            r.needs_human
                .as_deref()
                .is_some_and(|w| w.contains("the replica to promote, does not answer either")),
            "seed 18599 no longer waits for a human as it did: {:?}",
            r.needs_human
        ),
        Err(f) => panic!("seed 18599:\n{f}"),
    }
    // A lost machine holding a replica that may be the only copy of a shard whose master
    // does not answer either was replaced, and that copy with it: it is kept, and watched
    // again after a backoff. Lab seed 1864 ends waiting for a human with redis2 kept (r9001's
    // master process dead, its one replica's machine lost); `--three` seed 4630 keeps redis1
    // until r9003 has a master that answers, then replaces it and converges.
    let said = |r: &medic_sim::driver::Report, what: &str| r.trace.iter().any(|l| l.contains(what));
    match medic_sim::run_seed(&loaded, 1864) {
        Ok(r) => assert!(
            r.needs_human.as_deref().is_some_and(|w| {
                w.starts_with("shard r9001 lost its master redis1, and redis2, the replica to promote, does not answer either")
            }) && said(&r, "redis2 is left as it is (not terminated): the master")
                && said(
                    &r,
                    "redis2 stays out of monitoring, kept: it is watched again in"
                ),
            "seed 1864 no longer keeps redis2 for a human: {:?}",
            r.needs_human
        ),
        Err(f) => panic!("seed 1864:\n{f}"),
    }
    match medic_sim::run_seed(&three, 4630) {
        Ok(r) => assert!(
            r.needs_human.is_none()
                && said(
                    &r,
                    "redis1 is left as it is (not terminated): the master of shard r9003"
                )
                && said(&r, "redis1 is watched again after its recovery's backoff")
                && said(&r, "redis1 step 11 launch done"),
            "seed 4630 no longer keeps redis1, then replaces it: {:?}",
            r.needs_human
        ),
        Err(f) => panic!("seed 4630:\n{f}"),
    }
}

/// A proxy without a replica's server line (a replica its configuration does not have yet,
/// one of the drawn faults): the failover promotes a replica every proxy can route to; with
/// no other, the one it lacks is promoted with a critical alert, and that proxy's fence and
/// activation of it are no failures — it routes no client there.
#[test]
fn a_failover_prefers_a_replica_every_proxy_can_route_to() {
    let trace = |loaded: &std::sync::Arc<_>, seed| match medic_sim::run_seed(loaded, seed) {
        Ok(r) => r.trace.join("\n"),
        Err(f) => panic!("seed {seed}:\n{f}"),
    };
    let three = trace(
        &medic_sim::three().expect("topologies/three.yaml loads"),
        543,
    );
    for said in [
        "fault: haproxy2 has no server for redis2 in r9001's backend",
        "redis3 is promoted (3 bytes behind the newest data seen) rather than the more advanced redis2, which haproxy2 had no server for when last read",
    ] {
        assert!(three.contains(said), "no {said:?} in:\n{three}");
    }
    let lab = trace(&medic_sim::lab().expect("examples/lab.yaml loads"), 122);
    for said in [
        "redis2 is promoted though haproxy1 had no server for it when last read",
        "activate done (skipped: haproxy1: has no redis-r9001/redis2",
    ] {
        assert!(lab.contains(said), "no {said:?} in:\n{lab}");
    }
    assert!(!lab.contains("failed: step"), "{lab}");
}
