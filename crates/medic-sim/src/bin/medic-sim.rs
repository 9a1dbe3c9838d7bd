//! `medic-sim --seeds N [--from S]`: runs N seeds and reports every invariant violation with
//! its one-line replay; `medic-sim --seed S [--trace]` replays one seed. `--three` runs the
//! second deployment (three redis machines, three shards with two replicas each).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| -> Option<u64> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    let trace = args.iter().any(|a| a == "--trace");
    let (from, count) = match (value("--seed"), value("--seeds")) {
        (Some(s), _) => (s, 1),
        (None, Some(n)) => (value("--from").unwrap_or(0), n),
        (None, None) => {
            eprintln!("usage: medic-sim [--three] --seeds N [--from S] | --seed S [--trace]");
            return ExitCode::from(2);
        }
    };
    let three = args.iter().any(|a| a == "--three");
    let loaded = match if three {
        medic_sim::three()
    } else {
        medic_sim::lab()
    } {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let (mut failed, mut recoveries, mut human) = (0u64, 0usize, 0u64);
    let started = std::time::Instant::now();
    for seed in from..from + count {
        match medic_sim::run_seed(&loaded, seed) {
            Ok(r) => {
                recoveries += r.recoveries;
                if let Some(why) = &r.needs_human {
                    human += 1;
                    if trace || count <= 100 {
                        println!("seed {seed}: ends waiting for a human, as designed: {why}");
                    }
                }
                if trace {
                    for l in &r.trace {
                        println!("  {l}");
                    }
                    println!(
                        "seed {seed}: ok — {} recoveries, {} writes acknowledged, {} lost within a promotion's replication window, healthy at {} ms",
                        r.recoveries, r.acked, r.lost_in_window, r.converged_ms
                    );
                }
            }
            Err(f) => {
                failed += 1;
                println!("{f}");
            }
        }
        if count > 1 && (seed - from + 1) % 10_000 == 0 {
            eprintln!("{} seeds, {failed} failed", seed - from + 1);
        }
    }
    println!(
        "seeds {from}..{}: {count} run, {failed} violated an invariant, {human} ended waiting for a human (as designed), {recoveries} recoveries, {:.1} s",
        from + count,
        started.elapsed().as_secs_f64()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
