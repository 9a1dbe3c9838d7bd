//! The lab's failover under a client, as several tests make it: r9001's master process on
//! redis1 shut down while a client writes through the app proxy, and what every such test
//! checks afterwards.

use std::time::Instant;

use super::{Env, RECOVERY, Writer, assert_no_acknowledged_write_lost, cli};

/// Kills r9001's master process (redis1) under a client writing through the app proxy; waits
/// until medic's recovery of it completed and r9001 is `ok` with redis2 its master, then for
/// writes to flow through the app proxy again, and reads back every acknowledged write there.
pub fn kill_r9001_master_under_a_client(env: &Env) {
    let app = env.ip(14);
    let writer = Writer::start(format!("{app}:7001").parse().unwrap());
    writer.wait_acked("the client's first writes", Instant::now(), 50);
    // The process exits; the machine stays: connections are refused.
    let killed_at = Instant::now();
    let _ = cli(&env.ip(10), 9001, &["SHUTDOWN", "NOSAVE"]);
    env.wait("the recovery of r9001@redis1", RECOVERY, |e| {
        e.ended("r9001@redis1 died", "completed")
    });
    env.wait("r9001 ok with redis2 its master", RECOVERY, |e| {
        let sh = e.shard("r9001");
        sh["state"] == "ok" && sh["master"] == "redis2"
    });
    let settled = Instant::now();
    writer.wait_acked("writes through the app proxy", settled, 20);
    let log = writer.finish();
    assert_no_acknowledged_write_lost(&app, &log, killed_at, settled);
}
