//! `medic lab up` of examples/lab.yaml (on a subnet and bridge of its own): a working seed-003
//! deployment that a client writes to through the app proxy on 7001. Needs root.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn medic(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The status line of `machine`, as whitespace-separated fields.
fn status_of(status: &str, machine: &str) -> Vec<String> {
    status
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|f| f.first().is_some_and(|m| m == machine))
        .unwrap_or_default()
}

fn cli(host: &str, port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", host, "-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Tears the lab down even when the test fails.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = medic(&["lab", "down", "--topology", self.0.to_str().unwrap()]);
    }
}

/// The app proxy's current address for its server `haproxy1` of backend app-r9001, asked of
/// its admin API on the app machine's loopback (the lab's state being `lab`).
fn app_sees_haproxy1_at(lab: &Path) -> String {
    let netns = common::lab_netns(lab, "app");
    common::haproxy_servers_in(&netns, 9998, Some("app-r9001"))
        .into_iter()
        .find(|s| s.server == "haproxy1")
        .unwrap()
        .addr
}

#[test]
fn lab_up_gives_a_deployment_a_client_can_write_to_and_down_removes_it() {
    if !medic_testkit::root_or_skip(
        "lab_up_gives_a_deployment_a_client_can_write_to_and_down_removes_it",
    ) {
        return;
    }
    let root = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../..")
    .canonicalize()
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let net = 100 + std::process::id() % 100;
    let text_in = std::fs::read_to_string(root.join("examples/lab.yaml")).unwrap();
    let topo = text_in
        .replace("subnet: 10.77.0.0/24", &format!("subnet: 10.76.{net}.0/24"))
        .replace("bridge: medic0", &format!("bridge: mlu{net}"))
        .replace("server: 10.77.0.2:53", &format!("server: 10.76.{net}.2:53"))
        .replace(
            "/var/lib/medic/lab",
            &dir.path().join("lab").display().to_string(),
        )
        .replace(
            "../playbooks",
            &root.join("playbooks").display().to_string(),
        )
        .replace("../amis", &root.join("amis").display().to_string());
    let file = dir.path().join("lab.yaml");
    std::fs::write(&file, topo).unwrap();
    let f = file.to_str().unwrap();
    let _down = Down(file.clone());

    let out = medic(&["lab", "up", f]);
    assert!(out.status.success(), "{}", text(&out));
    let ip = |n: u8| format!("10.76.{net}.{n}");
    // Machines in file order: redis1 .10, redis2 .11, haproxy1 .12, haproxy2 .13, app .14.
    assert_eq!(
        status_of(&text(&out), "app"),
        ["app", "app", "lab-0005", &ip(14), "answers"],
        "{}",
        text(&out)
    );

    // app:7001 -> haproxy1:8001 -> redis1:9001, replicated to redis2.
    assert_eq!(cli(&ip(14), 7001, &["SET", "seed", "003"]), "OK");
    assert_eq!(cli(&ip(14), 7002, &["SET", "shard", "9002"]), "OK");
    assert_eq!(cli(&ip(10), 9001, &["GET", "seed"]), "003");
    assert_eq!(cli(&ip(10), 9002, &["GET", "shard"]), "9002");
    medic_testkit::wait_until(
        "the replica to have seed=003",
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(20),
        || match cli(&ip(11), 9001, &["GET", "seed"]) {
            v if v == "003" => Ok(()),
            v => Err(format!("GET seed on the replica: {v:?}")),
        },
    );
    assert!(cli(&ip(11), 9001, &["ROLE"]).starts_with("slave"));

    // The lab's DNS server has the proxies' records, and a DNS change reaches the app proxy
    // (HAProxy resolvers), for real.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let key = dir.path().join("lab/tsig.key");
    let dns = medic_rfc2136::Rfc2136::new(
        format!("{}:53", ip(2)).parse().unwrap(),
        "barton.lab",
        "medic",
        "hmac-sha256",
        medic_rfc2136::read_secret(&key).unwrap(),
    )
    .unwrap();
    use medic_cloud::Dns;
    let rs = rt
        .block_on(dns.read("haproxy1.barton.lab"))
        .unwrap()
        .unwrap();
    assert_eq!(rs.values, [ip(12).parse::<std::net::IpAddr>().unwrap()]);
    let lab = dir.path().join("lab");
    assert_eq!(app_sees_haproxy1_at(&lab), ip(12));
    rt.block_on(dns.upsert("haproxy1.barton.lab", 60, &[ip(13).parse().unwrap()]))
        .unwrap();
    medic_testkit::wait_until(
        "the app proxy to follow the DNS change",
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(200),
        || match app_sees_haproxy1_at(&lab) {
            a if a == ip(13) => Ok(()),
            a => Err(format!("the app proxy has haproxy1 at {a}")),
        },
    );
    rt.block_on(dns.upsert("haproxy1.barton.lab", 60, &[ip(12).parse().unwrap()]))
        .unwrap();

    // Again: every machine found, no playbook changes anything.
    let again = medic(&["lab", "up", f]);
    assert!(again.status.success(), "{}", text(&again));
    let t = text(&again);
    assert_eq!(t.matches("found lab-").count(), 5, "{t}");
    // No file is rewritten; on redis machines nothing runs at all (the haproxy playbooks run
    // their read-only `haproxy -c` check every time).
    assert_eq!(t.matches(": 0 files written").count(), 5, "{t}");
    assert_eq!(
        t.matches("11 steps: 0 files written, 0 commands ran")
            .count(),
        2,
        "{t}"
    );

    let out = medic(&["lab", "fault", "redis2", "crash", "--topology", f]);
    assert!(out.status.success(), "{}", text(&out));
    let st = text(&medic(&["lab", "status", "--topology", f]));
    assert_eq!(
        status_of(&st, "redis2"),
        ["redis2", "redis", "lab-0002", &ip(11), "silent"],
        "{st}"
    );

    // Without its bridge the lab sends nothing to its addresses (they would leave the host).
    assert!(
        Command::new("ip")
            .args(["link", "del", &format!("mlu{net}")])
            .status()
            .unwrap()
            .success()
    );
    let st = text(&medic(&["lab", "status", "--topology", f]));
    assert_eq!(st.matches("no bridge").count(), 5, "{st}");

    for _ in 0..2 {
        let out = medic(&["lab", "down", "--topology", f]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let ns = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!ns.contains(&format!("mlu{net}-")), "{ns}");
}
