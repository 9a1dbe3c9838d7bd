//! Driver costs on real servers: the redis probe's CPU per check, one HAProxy runtime API call,
//! one command over an open SSH session. `bench/drivers.sh` runs it; docs/BENCHMARKS.md has
//! the figures.

#![allow(
    clippy::unwrap_used,
    reason = "a benchmark that cannot set up should stop loudly"
)]

use std::time::{Duration, Instant};

use medic_bench::{cpu_time, summarize, us};
use medic_haproxy::{AdminState, Endpoint, ProxyApi, RuntimeApi, ServerName};
use medic_redis::{Probe, RedisAddr};
use medic_ssh::{Host, HostKeys, Remote, Ssh};
use medic_testkit::{Haproxy, RedisServer, Sshd, unique_loopback};

fn arg(name: &str, default: usize) -> usize {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // One thread: the probe's cost is measured without a pool's idle spinning.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let n_probe = arg("--probes", 20_000);
    let n_api = arg("--api", 2_000);
    let n_ssh = arg("--ssh", 500);
    rt.block_on(async {
        // --- redis probe -------------------------------------------------------------------
        let redis = RedisServer::start(unique_loopback(), 9001);
        let mut probe = Probe::new(RedisAddr::from(redis.addr), None, Duration::from_secs(1));
        assert!(probe.check().await.is_up());
        let mut lat = Vec::with_capacity(n_probe);
        let cpu0 = cpu_time();
        let t0 = Instant::now();
        for _ in 0..n_probe {
            let t = Instant::now();
            assert!(probe.check().await.is_up());
            lat.push(t.elapsed());
        }
        let wall = t0.elapsed();
        let cpu = cpu_time() - cpu0;
        let s = summarize(lat);
        let per_check = cpu / n_probe as u32;
        println!(
            "redis probe (INFO replication, kept connection): {} checks in {:.2} s; latency median {}, p90 {}, max {}; \
             medic's CPU {} per check, i.e. {:.1} % of one core per 10,000 checks a second",
            s.n,
            wall.as_secs_f64(),
            us(s.median),
            us(s.p90),
            us(s.max),
            us(per_check),
            per_check.as_secs_f64() * 10_000.0 * 100.0,
        );

        // --- HAProxy runtime API ------------------------------------------------------------
        let ip = unique_loopback();
        let hp = Haproxy::start(ip, &format!("backend be\n    server r1 {} check inter 1s\n", redis.addr));
        let api = RuntimeApi::tcp(hp.api_tcp);
        let mut show = Vec::with_capacity(n_api);
        for _ in 0..n_api {
            let t = Instant::now();
            api.servers(Some("be")).await.unwrap();
            show.push(t.elapsed());
        }
        let s = summarize(show);
        println!("haproxy `show servers state be` over TCP: {} calls; median {}, p90 {}, max {}", s.n, us(s.median), us(s.p90), us(s.max));
        let mut set = Vec::with_capacity(n_api / 2);
        let r1 = ServerName::new("be", "r1");
        for i in 0..n_api / 2 {
            let state = if i % 2 == 0 { AdminState::Maint } else { AdminState::Ready };
            let t = Instant::now();
            api.set_state(&r1, state).await.unwrap();
            set.push(t.elapsed());
        }
        let s = summarize(set);
        println!("haproxy `set server be/r1 state ...` with read-back (2 calls): {} changes; median {}, p90 {}, max {}", s.n, us(s.median), us(s.p90), us(s.max));

        // --- SSH ------------------------------------------------------------------------------
        let sshd = Sshd::start(unique_loopback(), &[]);
        let ssh = Ssh::new(&sshd.known_hosts_file()).unwrap();
        let host = Host {
            name: "bench".into(),
            addr: sshd.addr.ip(),
            port: 22,
            user: sshd.user.clone(),
            key: Some(sshd.client_key.clone()),
            host_keys: HostKeys::Strict,
        };
        let t = Instant::now();
        ssh.run(&host, "true", Duration::from_secs(10)).await.unwrap();
        let connect = t.elapsed();
        let mut cmd = Vec::with_capacity(n_ssh);
        for _ in 0..n_ssh {
            let t = Instant::now();
            ssh.run(&host, "true", Duration::from_secs(10)).await.unwrap();
            cmd.push(t.elapsed());
        }
        let s = summarize(cmd);
        println!(
            "ssh: first command (connect + `id -u` + command) {}; then `true` over the open session: {} commands; median {}, p90 {}, max {}",
            us(connect),
            s.n,
            us(s.median),
            us(s.p90),
            us(s.max)
        );

        // --- the runtime API through the SSH session (`reach: ssh`) -------------------------
        // The API as the machine itself sees it, through a socket forwarded by the session:
        // what a fence costs when the API is not on the network.
        let path = ssh.forward(&host, medic_ssh::ForwardTo::Tcp(hp.api_tcp)).await.unwrap();
        let tunneled = RuntimeApi::new(Endpoint::Unix(path));
        let mut show = Vec::with_capacity(n_api);
        for _ in 0..n_api {
            let t = Instant::now();
            tunneled.servers(Some("be")).await.unwrap();
            show.push(t.elapsed());
        }
        let s = summarize(show);
        println!(
            "haproxy `show servers state be` over SSH (forwarded socket): {} calls; median {}, p90 {}, max {}",
            s.n,
            us(s.median),
            us(s.p90),
            us(s.max)
        );
        let mut set = Vec::with_capacity(n_api / 2);
        for i in 0..n_api / 2 {
            let state = if i % 2 == 0 { AdminState::Maint } else { AdminState::Ready };
            let t = Instant::now();
            tunneled.set_state(&r1, state).await.unwrap();
            set.push(t.elapsed());
        }
        let s = summarize(set);
        println!(
            "haproxy `set server be/r1 state ...` with read-back over SSH: {} changes; median {}, p90 {}, max {}",
            s.n,
            us(s.median),
            us(s.p90),
            us(s.max)
        );
    });
}
