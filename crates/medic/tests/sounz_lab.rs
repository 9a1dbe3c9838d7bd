//! Seed 001 ("SOUNZ") on the lab, examples/sounz.yaml: Production (slayer) and Standby
//! (megadeth), clients reaching the service at 10.75.K.100, an address that moves. The
//! runbook's EMERGENCY switch when Production's search daemon dies (step 5's checks fail while
//! its web server answers): its status set to `down`, the address taken down there and brought
//! up (announced) on the Standby, which becomes `production_alone`. Production mended: it
//! rejoins as `production_as_standby`. The RECOVERY procedure, `medic switchover sounz --to
//! slayer`: the roles and the address go back. At every stage the role states in `medic status`
//! and each machine's status file are the runbook's (/metrics and the status page say so too);
//! a client asking the address follows along, and at no sample do two machines hold it. Needs
//! root.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::web::*;
use common::*;
use medic_testkit::wait_until;

/// How many of `netns` hold `ip` on an interface.
fn holders(netns: &[String], ip: &str) -> usize {
    netns
        .iter()
        .filter(|ns| {
            let out = Command::new("ip")
                .args(["netns", "exec", ns, "ip", "-o", "-4", "addr", "show"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).contains(&format!(" {ip}/"))
        })
        .count()
}

/// A stand-in for the search daemon (Apollo, port 8983), its pid in /run/search.pid.
fn start_search(env: &Env, ip: &str) {
    on(
        env,
        ip,
        "setsid python3 -m http.server 8983 >/dev/null 2>&1 < /dev/null & echo $! > /run/search.pid",
    );
    let at: std::net::SocketAddr = format!("{ip}:8983").parse().unwrap();
    wait_until(
        &format!("the search daemon on {ip}"),
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            std::net::TcpStream::connect_timeout(&at, Duration::from_millis(200))
                .map(drop)
                .map_err(|e| e.to_string())
        },
    );
}

fn status_file(env: &Env, ip: &str) -> String {
    on(env, ip, "cat /etc/sounz/sounz.status").trim().to_owned()
}

/// The role states of slayer and megadeth, as `medic status` shows them.
fn states(env: &Env) -> (String, String) {
    (state_of(env, "slayer"), state_of(env, "megadeth"))
}

#[test]
fn the_emergency_switch_and_the_recovery_move_the_roles_and_the_address() {
    let Some(mut env) = Env::of_example("sounz.yaml", 13, |t| t) else {
        return;
    };
    let (slayer, megadeth, vip) = (env.ip(10), env.ip(11), env.ip(100));
    // The operator's servers: each serves the front page and says who it is at /role.
    for (ip, name, status) in [
        (&slayer, "slayer", "production"),
        (&megadeth, "megadeth", "standby"),
    ] {
        on(
            &env,
            ip,
            &format!(
                "mkdir -p /etc/web /etc/sounz && printf '%s' '{NGINX_CONF}' > /etc/web/nginx.conf && printf '%s' '{}' > /etc/web/role.conf && echo {status} > /etc/sounz/sounz.status",
                role_conf(name)
            ),
        );
        start_nginx(&env, ip);
        start_search(&env, ip);
    }
    let netns = vec![env.netns("slayer"), env.netns("megadeth")];
    assert_eq!(
        holders(&netns, &vip),
        1,
        "`medic lab up` brings the address up on slayer"
    );
    assert_eq!(get(&vip, "/role"), "slayer");
    env.start(&[]);
    env.wait("the nominal states", Duration::from_secs(20), |e| {
        states(e) == ("production".into(), "standby".into())
    });

    // A client of the address; beside it, how many machines hold the address.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(Instant, String, usize)>>> = Arc::default();
    let client = {
        let (stop, seen, vip, netns) = (stop.clone(), seen.clone(), vip.clone(), netns.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let who = get(&vip, "/role");
                let n = holders(&netns, &vip);
                seen.lock().unwrap().push((Instant::now(), who, n));
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // EMERGENCY: slayer's search daemon dies (its web server and the machine answer): step 5
    // of the runbook no longer passes.
    let t_kill = Instant::now();
    on(&env, &slayer, "kill $(cat /run/search.pid)");
    env.wait(
        "megadeth to serve at the address",
        Duration::from_secs(30),
        |_| get(&vip, "/role") == "megadeth",
    );
    let switched = t_kill.elapsed();
    env.wait("down / production_alone", Duration::from_secs(10), |e| {
        states(e) == ("down".into(), "production_alone".into())
    });
    assert_eq!(
        status_file(&env, &slayer),
        "down",
        "step 1: switch-to-standby EMERGENCY"
    );
    assert_eq!(status_file(&env, &megadeth), "production_alone", "step 3");
    assert_eq!(holders(&netns, &vip), 1);
    // What failed is named: the search port, not the front page.
    env.wait(
        "slayer's failure named: the search port",
        Duration::from_secs(10),
        |e| {
            let detail = service(e)["machines"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["machine"] == "slayer")
                .map(|m| {
                    m["health"]["detail"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .unwrap_or_default();
            detail.starts_with("tcp check at port 8983: ") && detail.contains("connection refused")
        },
    );
    // The same states in /metrics, and on the status page as a browser renders it.
    let metrics = http_text(env.port, "/metrics");
    for line in [
        r#"medic_service_role_state{service="sounz",machine="slayer",state="down"} 1"#,
        r#"medic_service_role_state{service="sounz",machine="megadeth",state="production_alone"} 1"#,
        r#"medic_service_role_state{service="sounz",machine="slayer",state="production"} 0"#,
        r#"medic_service_primary{service="sounz",machine="megadeth"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    let page = common::page::page_text(env.port);
    for row in [
        "sounz slayer primary out down",
        "sounz megadeth standby primary production_alone",
    ] {
        assert!(page.contains(row), "{row} in: {page}");
    }

    // Production mended: it comes back as a standby (RECOVERY step 1).
    start_search(&env, &slayer);
    env.wait(
        "production_as_standby / standby_as_production",
        Duration::from_secs(20),
        |e| {
            states(e)
                == (
                    "production_as_standby".into(),
                    "standby_as_production".into(),
                )
        },
    );
    assert_eq!(status_file(&env, &slayer), "production_as_standby");
    assert_eq!(
        get(&vip, "/role"),
        "megadeth",
        "the address stays where it is"
    );

    // RECOVERY steps 3 to 5: the roles and the address go back.
    let out = medic(&["switchover", "sounz", "--to", "slayer", "-t", env.f()]);
    assert!(out.status.success(), "{}", text(&out));
    env.wait(
        "slayer to serve at the address",
        Duration::from_secs(20),
        |e| get(&vip, "/role") == "slayer" && e.ended("switchover of sounz to slayer", "completed"),
    );
    env.wait("the nominal states again", Duration::from_secs(10), |e| {
        states(e) == ("production".into(), "standby".into())
    });
    assert_eq!(status_file(&env, &slayer), "production");
    assert_eq!(status_file(&env, &megadeth), "standby");

    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let seen = seen.lock().unwrap();
    let two = seen.iter().filter(|s| s.2 > 1).count();
    assert_eq!(
        two,
        0,
        "samples with the address on two machines: {two} of {}",
        seen.len()
    );
    let failed = seen
        .iter()
        .filter(|s| s.0 >= t_kill && s.1 != "slayer" && s.1 != "megadeth")
        .count();
    eprintln!(
        "web server killed: the address answered from megadeth {switched:?} later; {failed} of {} client samples failed over the whole run",
        seen.len()
    );
    env.stop();
}
