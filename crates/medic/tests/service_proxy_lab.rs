//! A web service behind HAProxy on the lab: examples/domino.yaml's two nginx machines with a
//! proxy machine (`lb1`) in front, the service routed through it in HTTP mode (`proxy`). The
//! proxy sends clients to the primary alone. When the primary's nginx dies, medic puts it in
//! maintenance on the proxy before its fencing hook runs and makes the standby ready there
//! after its promotion hook; the old primary rejoins as a standby and stays in maintenance; a
//! switchover moves the proxy back. A client asking through the proxy which machine answers,
//! and as what, never reaches a standby, nor the old primary once the new one has answered;
//! HAProxy's runtime state and its haproxy.cfg are read back at each stage. Needs root.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::web::*;
use common::*;

/// The proxy's port for the service.
const LISTEN: u16 = 8080;

/// examples/domino.yaml with `lb1` (role haproxy) in front of the web servers.
fn behind_proxy(playbooks: &std::path::Path) -> impl Fn(String) -> String {
    let playbooks = playbooks.display().to_string();
    move |t: String| {
        let t: String = t
            .lines()
            .map(|l| match l.strip_prefix("playbooks: ") {
                Some(_) => format!("playbooks: {playbooks}\n"),
                None => format!("{l}\n"),
            })
            .collect();
        let amis = t
            .lines()
            .find_map(|l| l.trim().strip_prefix("definition: "))
            .and_then(|d| d.strip_suffix("/web.yaml"))
            .unwrap()
            .to_owned();
        t.replace(
            "amis:\n",
            &format!("amis:\n  - name: haproxy\n    definition: {amis}/haproxy.yaml\n"),
        )
        .replace(
            "  - {name: monitor, role: monitor}\n",
            "  - {name: lb1, role: haproxy, ami: haproxy}\n  - {name: monitor, role: monitor}\n\nproxies:\n  machines: [lb1]\n  runtime_api: {port: 9999}\n  frontends: []\n",
        )
        .replace(
            "    port: 80\n",
            &format!("    port: 80\n    proxy: {{listen: {LISTEN}, mode: http}}\n"),
        )
    }
}

/// The service's servers on the proxy at `lb`, from its runtime API: (name, ready), where
/// ready means not in maintenance (by any cause) and up.
fn servers(env: &Env, lb: &str) -> Vec<(String, bool)> {
    let out = on(
        env,
        lb,
        "bash -c 'exec 3<>/dev/tcp/127.0.0.1/9999 && echo \"show servers state service-www\" >&3 && cat <&3'",
    );
    out.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ...; in
            // maintenance: forced, inherited or by resolution (SRV_ADMF_MAINT); `disabled` in
            // the configuration (CMAINT) is kept as a bit of its own once made ready.
            let (op, admin): (u32, u32) = (f.get(5)?.parse().ok()?, f.get(6)?.parse().ok()?);
            Some((f[3].to_owned(), op == 2 && admin & 0x23 == 0))
        })
        .collect()
}

/// The `server` lines of the service's backend in lb's haproxy.cfg: (name, disabled).
fn persisted(env: &Env, lb: &str) -> Vec<(String, bool)> {
    let cfg = on(env, lb, "cat /etc/haproxy/haproxy.cfg");
    cfg.split("\nbackend service-www\n")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.strip_prefix("server "))
        .map(|l| {
            let name = l.split_whitespace().next().unwrap_or_default().to_owned();
            (name, l.split_whitespace().any(|w| w == "disabled"))
        })
        .collect()
}

fn ready(names: &[(&str, bool)]) -> Vec<(String, bool)> {
    names.iter().map(|(n, r)| ((*n).to_owned(), *r)).collect()
}

#[test]
fn the_proxy_sends_clients_to_the_primary_alone_through_a_failover_a_rejoin_and_a_switchover() {
    let playbooks = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for from in [
        "examples/domino/primary-include.yaml",
        "examples/domino/standby-include.yaml",
        "playbooks/haproxy.yaml",
    ] {
        let from = root.join(from);
        std::fs::copy(&from, playbooks.path().join(from.file_name().unwrap())).unwrap();
    }
    let Some(mut env) = Env::of_example("domino.yaml", 23, behind_proxy(playbooks.path())) else {
        return;
    };
    let (web1, web2, lb1) = (env.ip(10), env.ip(11), env.ip(12));
    for (ip, role) in [(&web1, "primary"), (&web2, "standby")] {
        on(
            &env,
            ip,
            &format!(
                "mkdir -p /etc/web && printf '%s' '{NGINX_CONF}' > /etc/web/nginx.conf && printf '%s' '{}' > /etc/web/role.conf",
                role_conf(role)
            ),
        );
        start_nginx(&env, ip);
    }
    // `medic lab up` configured the proxy: web1 ready, web2 in maintenance.
    assert_eq!(
        persisted(&env, &lb1),
        ready(&[("web1", false), ("web2", true)])
    );
    env.wait("the proxy to send to web1", Duration::from_secs(10), |_| {
        get_at(&lb1, LISTEN, "/address") == web1
    });
    env.start(&[]);
    env.wait(
        "both machines in their nominal states",
        Duration::from_secs(20),
        |e| state_of(e, "web1") == "production" && state_of(e, "web2") == "standby",
    );

    // A client through the proxy: which machine answered, and its role there.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(Instant, String, String)>>> = Arc::default();
    let client = {
        let (stop, seen, lb1) = (stop.clone(), seen.clone(), lb1.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let who = get_at(&lb1, LISTEN, "/address");
                let role = get_at(&lb1, LISTEN, "/role");
                seen.lock().unwrap().push((Instant::now(), who, role));
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    // 1. web1's nginx dies; its machine answers. Off the proxy, fenced, web2 promoted and
    //    made ready there.
    on(&env, &web1, "kill $(cat /run/web-nginx.pid)");
    env.wait(
        "web2 recorded as the primary",
        Duration::from_secs(30),
        |e| service(e)["primary"] == "web2" && e.ended("service www@web1 failed", "completed"),
    );
    env.wait(
        "the client to reach web2 through the proxy",
        Duration::from_secs(10),
        |_| get_at(&lb1, LISTEN, "/address") == web2,
    );
    assert_eq!(get_at(&lb1, LISTEN, "/role"), "primary");
    assert_eq!(
        servers(&env, &lb1),
        ready(&[("web1", false), ("web2", true)])
    );
    assert_eq!(
        persisted(&env, &lb1),
        ready(&[("web1", true), ("web2", false)]),
        "the runtime changes are in haproxy.cfg"
    );
    let failover = env.recovery("service www@web1 failed").unwrap().to_string();
    let at = |what: &str| {
        failover
            .find(what)
            .unwrap_or_else(|| panic!("no `{what}` in {failover}"))
    };
    assert!(
        at("service-www/web1") < at("on_fenced") && at("on_promote") < at("service-www/web2"),
        "off the proxy before the fence, on after the promotion: {failover}"
    );

    // 2. web1's nginx restarted: it rejoins as a standby and stays in maintenance.
    start_nginx(&env, &web1);
    env.wait(
        "web1 to rejoin as a standby",
        Duration::from_secs(20),
        |e| state_of(e, "web1") == "production_as_standby",
    );
    assert_eq!(
        servers(&env, &lb1),
        ready(&[("web1", false), ("web2", true)])
    );
    assert_eq!(get_at(&lb1, LISTEN, "/address"), web2);

    // 3. The operator moves the role back: the proxy follows.
    let out = medic(&["switchover", "www", "--to", "web1", "-t", env.f()]);
    assert!(out.status.success(), "{}", text(&out));
    env.wait("the switchover to end", Duration::from_secs(20), |e| {
        e.ended("switchover of www to web1", "completed")
    });
    env.wait(
        "the client to reach web1 through the proxy",
        Duration::from_secs(10),
        |_| get_at(&lb1, LISTEN, "/address") == web1,
    );
    assert_eq!(
        servers(&env, &lb1),
        ready(&[("web1", true), ("web2", false)])
    );
    assert_eq!(
        persisted(&env, &lb1),
        ready(&[("web1", false), ("web2", true)])
    );
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    env.stop();

    // Through the proxy, never a standby; and once the new primary had answered, never the
    // old one until the switchover (every answer is the address and the role of one machine).
    let seen = seen.lock().unwrap();
    let answered: Vec<&(Instant, String, String)> =
        seen.iter().filter(|s| s.1 == web1 || s.1 == web2).collect();
    assert!(
        seen.iter().all(|s| s.2 != "standby"),
        "a client reached a standby through the proxy: {:?}",
        seen.iter().filter(|s| s.2 == "standby").collect::<Vec<_>>()
    );
    let first_web2 = answered.iter().position(|s| s.1 == web2).unwrap();
    let back = answered[first_web2..]
        .iter()
        .position(|s| s.1 == web1)
        .map(|i| i + first_web2);
    assert!(
        back.is_some_and(|b| answered[first_web2..b].iter().all(|s| s.1 == web2)),
        "between the failover and the switchover only web2 answered: {answered:?}"
    );
    eprintln!(
        "{} samples through the proxy, {} answered by a machine",
        seen.len(),
        answered.len()
    );
}
