//! HAProxy's admin runtime API off the network (`runtime_api.reach: ssh`, the default): it
//! listens on each proxy's loopback, medic reaches it through its SSH session, and no other
//! machine can change a backend. Without a `port` there is no TCP API at all: medic reaches
//! the admin unix socket through SSH, as it would an HAProxy configured as Debian ships it.
//! Needs root.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

/// `command` sent to `at` from inside `netns`: the connection's error, or the answer.
fn admin_command(netns: &str, at: SocketAddr, command: &str) -> Result<String, std::io::Error> {
    in_netns(netns, || {
        let mut s = TcpStream::connect_timeout(&at, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(format!("{command}\n").as_bytes())?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    })
}

#[test]
fn the_admin_api_is_off_the_network_and_medic_fails_over_through_ssh() {
    let Some(mut env) = Env::new(6, |t| t) else {
        return;
    };
    env.start(&[]);
    // Reading the proxies' routing goes through SSH: a shard is `ok` only once medic has read
    // every proxy's servers.
    env.wait("both shards ok, the proxies' routing read", RECOVERY, |e| {
        ["r9001", "r9002"]
            .iter()
            .all(|s| e.shard(s)["state"] == "ok")
    });

    // From another lab machine (the app host) and from the monitor host's own network, the
    // admin API of each proxy cannot even be connected to; a `set server` cannot be sent.
    let attack = "set server redis-r9001/redis2 addr 10.66.66.66 port 9001";
    for proxy in [12u8, 13] {
        let at: SocketAddr = format!("{}:9999", env.ip(proxy)).parse().unwrap();
        for from in [env.netns("app"), env.netns("redis2")] {
            match admin_command(&from, at, attack) {
                Err(e) => assert_eq!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused,
                    "{from} -> {at}: {e}"
                ),
                Ok(answer) => panic!("{from} reached the admin API at {at}: {answer:?}"),
            }
        }
        let direct = TcpStream::connect_timeout(&at, Duration::from_secs(2));
        assert!(direct.is_err(), "the monitor host reached {at} directly");
    }
    for proxy in ["haproxy1", "haproxy2"] {
        let servers = env.haproxy_servers(proxy, 9999, Some("redis-r9001"));
        let r2 = servers.iter().find(|s| s.server == "redis2").unwrap();
        assert_eq!(r2.addr, env.ip(11), "{proxy}: the attack changed nothing");
    }

    // A dead master is failed over: every fence and activation goes through SSH.
    common::failover::kill_r9001_master_under_a_client(&env);
    for proxy in ["haproxy1", "haproxy2"] {
        let servers = env.haproxy_servers(proxy, 9999, Some("redis-r9001"));
        let ready: Vec<&str> = servers
            .iter()
            .filter(|s| s.is_ready())
            .map(|s| s.server.as_str())
            .collect();
        assert_eq!(ready, ["redis2"], "{proxy} routes r9001 to {ready:?}");
    }
    // The fences' summaries say where they went; none was skipped for an unreachable API.
    let history = env.history();
    let steps = history[0]["steps"].as_array().unwrap();
    let fences: Vec<&str> = steps
        .iter()
        .filter(|s| s["kind"] == "fence")
        .filter_map(|s| s["summary"].as_str())
        .collect();
    assert!(!fences.is_empty(), "{history:#?}");
    for f in &fences {
        assert!(!f.contains("skipped"), "a fence was skipped: {f}");
    }
    env.stop();
}

#[test]
fn without_a_port_the_admin_socket_is_the_api_and_medic_fails_over_through_it() {
    let Some(mut env) = Env::new(25, |t| {
        t.replace("runtime_api: {port: 9999}", "runtime_api: {}")
            .replace("runtime_api: {port: 9998}", "runtime_api: {}")
    }) else {
        return;
    };
    env.start(&[]);
    env.wait("both shards ok, the proxies' routing read", RECOVERY, |e| {
        ["r9001", "r9002"]
            .iter()
            .all(|s| e.shard(s)["state"] == "ok")
    });
    // No proxy listens for the API on TCP, on its loopback or elsewhere: the admin socket is
    // all there is.
    for (proxy, port) in [("haproxy1", 9999u16), ("haproxy2", 9999), ("app", 9998)] {
        let at = SocketAddr::from(([127, 0, 0, 1], port));
        match admin_command(&env.netns(proxy), at, "show info") {
            Err(e) => assert_eq!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused,
                "{proxy}: {e}"
            ),
            Ok(answer) => panic!("{proxy} has a TCP runtime API at {at}: {answer:?}"),
        }
        assert!(
            !env.haproxy_socket_servers(proxy, None).is_empty(),
            "{proxy}: its admin socket lists no server"
        );
        // The socket is made the SSH login's own (the lab's login is `medic`).
        let cfg = env.haproxy_cfg(proxy);
        assert!(
            cfg.contains("stats socket /run/haproxy/admin.sock mode 600 level admin user medic")
                && !cfg.contains("stats socket ipv4@"),
            "{proxy}'s haproxy.cfg:\n{cfg}"
        );
    }

    // A dead master is failed over: every fence and activation goes through the socket.
    common::failover::kill_r9001_master_under_a_client(&env);
    for proxy in ["haproxy1", "haproxy2"] {
        let servers = env.haproxy_socket_servers(proxy, Some("redis-r9001"));
        let ready: Vec<&str> = servers
            .iter()
            .filter(|s| s.is_ready())
            .map(|s| s.server.as_str())
            .collect();
        assert_eq!(ready, ["redis2"], "{proxy} routes r9001 to {ready:?}");
    }
    let history = env.history();
    let steps = history[0]["steps"].as_array().unwrap();
    let fences: Vec<&str> = steps
        .iter()
        .filter(|s| s["kind"] == "fence")
        .filter_map(|s| s["summary"].as_str())
        .collect();
    assert!(!fences.is_empty(), "{history:#?}");
    for f in &fences {
        assert!(!f.contains("skipped"), "a fence was skipped: {f}");
    }
    env.stop();
}
