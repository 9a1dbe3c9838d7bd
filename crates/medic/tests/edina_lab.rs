//! Seed 004 ("EDINA") on the lab, examples/edina.yaml: two active instances, rjb-a and rjb-b,
//! both writing through /etc/edina/filestore, a link to the SAN in use (/srv/edina/san-rjb-a,
//! data center A's). Each checks it can write to its own SAN (a `command` check over SSH).
//! SAN A fails: the link is swapped to SAN B on both sides (the fenced side's hook, the
//! promoted side's), and what the instances write lands on SAN B. SAN A back: rjb-a rejoins,
//! its link stays on B. `medic switchover filestore --to rjb-a` swaps both back. Needs root.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::web::*;
use common::*;

const SANS: &str = "/srv/edina";

fn link(env: &Env, ip: &str) -> String {
    on(env, ip, "readlink /etc/edina/filestore")
        .trim()
        .to_owned()
}

/// Both instances' links, rjb-a's first.
fn links(env: &Env, a: &str, b: &str) -> (String, String) {
    (link(env, a), link(env, b))
}

fn san(name: &str) -> String {
    format!("{SANS}/san-{name}")
}

#[test]
fn a_failed_san_swaps_the_link_on_both_instances_and_the_writes_follow() {
    let Some(mut env) = Env::of_example("edina.yaml", 14, |t| t) else {
        return;
    };
    // The SANs, as every machine of the lab sees them.
    let _ = std::fs::remove_dir_all(SANS);
    for m in ["rjb-a", "rjb-b"] {
        std::fs::create_dir_all(san(m)).unwrap();
    }
    let (a, b) = (env.ip(10), env.ip(11));
    // The operator's setup: each machine's own SAN, the link on SAN A, the instance running.
    for (ip, own) in [(&a, "rjb-a"), (&b, "rjb-b")] {
        on(
            &env,
            ip,
            &format!(
                "mkdir -p /etc/web /etc/edina && printf '%s' '{NGINX_CONF}' > /etc/web/nginx.conf && printf '%s' '{}' > /etc/web/role.conf && ln -sfn {} /etc/edina/own-san && ln -sfn {} /etc/edina/filestore",
                role_conf(own),
                san(own),
                san("rjb-a")
            ),
        );
        start_nginx(&env, ip);
    }
    env.start(&[]);
    env.wait("the nominal states", Duration::from_secs(20), |e| {
        (state_of(e, "rjb-a"), state_of(e, "rjb-b")) == ("production".into(), "standby".into())
    });
    for (ip, m) in [(&a, "rjb-a"), (&b, "rjb-b")] {
        on(
            &env,
            ip,
            &format!("echo before > /etc/edina/filestore/{m}-before"),
        );
    }
    assert!(Path::new(&format!("{}/rjb-b-before", san("rjb-a"))).exists());

    // SAN A fails (its mount gone): rjb-a cannot write to it.
    std::fs::rename(san("rjb-a"), format!("{}.failed", san("rjb-a"))).unwrap();
    env.wait("both links on SAN B", Duration::from_secs(30), |e| {
        links(e, &a, &b) == (san("rjb-b"), san("rjb-b"))
    });
    env.wait("down / production_alone", Duration::from_secs(10), |e| {
        (state_of(e, "rjb-a"), state_of(e, "rjb-b")) == ("down".into(), "production_alone".into())
    });
    assert!(env.ended("service filestore@rjb-a failed", "completed"));
    // The application is none the wiser: the same path, now on SAN B.
    for (ip, m) in [(&a, "rjb-a"), (&b, "rjb-b")] {
        on(
            &env,
            ip,
            &format!("echo after > /etc/edina/filestore/{m}-after"),
        );
        assert!(
            Path::new(&format!("{}/{m}-after", san("rjb-b"))).exists(),
            "{m} wrote to SAN B"
        );
    }

    // SAN A back: rjb-a rejoins as a standby; the links stay on B.
    std::fs::rename(format!("{}.failed", san("rjb-a")), san("rjb-a")).unwrap();
    env.wait("rjb-a to rejoin", Duration::from_secs(20), |e| {
        state_of(e, "rjb-a") == "production_as_standby"
    });
    assert_eq!(links(&env, &a, &b), (san("rjb-b"), san("rjb-b")));

    // The way back, by hand (failback: manual).
    let out = medic(&["switchover", "filestore", "--to", "rjb-a", "-t", env.f()]);
    assert!(out.status.success(), "{}", text(&out));
    env.wait("both links on SAN A again", Duration::from_secs(20), |e| {
        links(e, &a, &b) == (san("rjb-a"), san("rjb-a"))
            && e.ended("switchover of filestore to rjb-a", "completed")
    });
    env.wait("the nominal states again", Duration::from_secs(10), |e| {
        (state_of(e, "rjb-a"), state_of(e, "rjb-b")) == ("production".into(), "standby".into())
    });
    env.stop();
    let _ = std::fs::remove_dir_all(SANS);
}
