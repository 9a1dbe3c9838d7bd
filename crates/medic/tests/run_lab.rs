//! `medic run` end to end on the lab of examples/lab.yaml (each test on a subnet and bridge of
//! its own): real redis servers, HAProxies, sshd and named in network namespaces, a client
//! writing through the app proxy, faults injected with `medic lab fault`. Needs root.
//!
//! The tests run one at a time (a lock): each has a whole deployment to itself, and the
//! machine has two cores.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use medic_testkit::wait_until;
use serde_json::Value;

/// Machines in file order: redis1 .10, redis2 .11, haproxy1 .12, haproxy2 .13, app .14; the
/// first replacement gets .15.
#[test]
fn a_crashed_redis_machine_is_failed_over_and_replaced_while_a_client_writes() {
    let Some(mut env) = Env::new(1, |t| t) else {
        return;
    };
    env.start(&[]);
    let app = env.ip(14);
    let writer = Writer::start(format!("{app}:7001").parse().unwrap());
    writer.wait_acked("the client's first writes", Instant::now(), 50);
    let crashed_at = Instant::now();
    env.fault("redis1", "crash", &[]);
    env.wait("the recovery of redis1", RECOVERY, |e| {
        e.ended("machine redis1 lost", "completed")
    });
    let restored = crashed_at.elapsed();
    env.wait("both shards ok again", RECOVERY, |e| {
        ["r9001", "r9002"].iter().all(|s| {
            let sh = e.shard(s);
            sh["state"] == "ok"
                && sh["master"] == "redis2"
                && sh["replicas"][0]["machine"] == "redis1"
        })
    });
    // Writes resumed through the app proxy, and none acknowledged was lost.
    let settled = Instant::now();
    writer.wait_acked("writes through the app proxy", settled, 20);
    let log = writer.finish();
    assert_no_acknowledged_write_lost(&app, &log, crashed_at, settled);
    // The replacement is a replica of redis2, synced, at its new address.
    let new = env.machine("redis1");
    assert_eq!(new["address"], env.ip(15), "{new}");
    assert_eq!(new["state"], "up", "monitored again: {new}");
    let last_ok = log.iter().rev().find(|(_, _, ok)| *ok).unwrap().1;
    wait_replicated(
        &env.ip(15),
        9001,
        &format!("w:{last_ok}"),
        &last_ok.to_string(),
    );
    assert!(cli(&env.ip(15), 9001, &["ROLE"]).starts_with("slave"));
    // Registered on both proxies at the new address, and the proxies' files say so too.
    for proxy in ["haproxy1", "haproxy2"] {
        let servers = env.haproxy_servers(proxy, 9999, Some("redis-r9001"));
        let r1 = servers.iter().find(|s| s.server == "redis1").unwrap();
        let r2 = servers.iter().find(|s| s.server == "redis2").unwrap();
        assert_eq!(r1.addr, env.ip(15));
        assert!(r1.in_maint(), "a replica stays out of rotation");
        assert!(r2.is_ready());
    }
    // ... and so does each proxy's haproxy.cfg, which a reload or restart reads.
    for proxy in ["haproxy1", "haproxy2"] {
        let line = |backend: &str, server: &str| env.haproxy_cfg_line(proxy, backend, server);
        let r1 = line("redis-r9001", "redis1");
        assert!(
            r1.contains(&format!("{}:9001", env.ip(15))) && r1.ends_with("disabled"),
            "{proxy}: {r1}"
        );
        let r2 = line("redis-r9001", "redis2");
        assert!(
            r2.starts_with("server redis2 ") && !r2.contains("disabled"),
            "{proxy}: {r2}"
        );
    }
    // What the replacement's steps took (docs/BENCHMARKS.md compares it with a spare's).
    let recovery = env.recovery("machine redis1 lost").unwrap();
    let ms = |kind: &str| -> u64 {
        recovery["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["kind"] == kind)
            .filter_map(|s| s["duration_ms"].as_u64())
            .sum()
    };
    println!(
        "crash to the recovery's end (redundancy back): {:.2} s; launch {} ms, wait-ssh {} ms, playbook {} ms",
        restored.as_secs_f64(),
        ms("launch"),
        ms("wait-ssh"),
        ms("playbook"),
    );
    // Exactly one replacement; the old instance is terminated.
    let inst = env.instances("redis1");
    assert_eq!(inst.len(), 2, "{inst:?}");
    assert_eq!(inst.iter().filter(|(_, s)| s == "running").count(), 1);
    // Prometheus sees it; `medic status` and `medic history` tell it.
    wait_until(
        "the completed recovery in /metrics",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let metrics = http_text(env.port, "/metrics");
            if metrics.contains("medic_recoveries_total{outcome=\"completed\"} 1") {
                Ok(())
            } else {
                Err(metrics)
            }
        },
    );
    // ... in a scrape Prometheus takes as it is, announcing every metric the alerting rules and
    // the dashboard use; the shards are back to ok and no proxy needed a repair.
    let metrics = http_text(env.port, "/metrics");
    common::prometheus::check_scrape(&metrics);
    for line in [
        "medic_shard_state{shard=\"r9001\",state=\"ok\"} 1",
        "medic_shard_state{shard=\"r9001\",state=\"down\"} 0",
        "medic_recoveries_total{outcome=\"held\"} 0",
        "medic_proxy_repairs_total{proxy=\"haproxy2\",result=\"failed\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    let status = text(&medic(&["status", "-t", env.f()]));
    let r9001 = status
        .lines()
        .find(|l| l.starts_with("r9001"))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(r9001, "r9001 9001 redis2 redis1 (in sync) ok", "{status}");
    let history = text(&medic(&["history", "-t", env.f()]));
    assert!(
        history.contains("machine redis1 lost  completed"),
        "{history}"
    );
    assert!(history.contains("launch"), "{history}");
    // `--since` and `--limit`: the last hour holds this one recovery; after now, none.
    let out = medic(&[
        "history",
        "--since",
        "1h",
        "--limit",
        "1",
        "--format",
        "json",
        "-t",
        env.f(),
    ]);
    let recent: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let recent = recent.as_array().unwrap();
    assert_eq!(recent.len(), 1, "{recent:?}");
    assert_eq!(recent[0]["event"], "machine redis1 lost", "{recent:?}");
    let later = text(&medic(&[
        "history",
        "--since",
        "2099-01-01T00:00:00Z",
        "-t",
        env.f(),
    ]));
    assert_eq!(later.trim(), "no recoveries since 2099-01-01T00:00:00Z");
    wait_until(
        "every kind of event in `medic events`",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let events = text(&medic(&["events", "-t", env.f()]));
            let all = ["detection", "recovery_start", "step_start", "recovery_done"]
                .iter()
                .all(|kind| events.contains(kind));
            if all && events.contains("16/29 launch") {
                Ok(())
            } else {
                Err(events)
            }
        },
    );
    // The webhook heard about it.
    for e in ["detection", "recovery_start", "recovery_done"] {
        env.hook.wait_for(e);
    }
}

#[test]
fn a_dead_master_process_is_failed_over_and_comes_back_as_a_replica() {
    let Some(mut env) = Env::new(2, |t| t) else {
        return;
    };
    env.start(&[]);
    let app = env.ip(14);
    common::failover::kill_r9001_master_under_a_client(&env);
    assert!(cli(&env.ip(10), 9001, &["ROLE"]).starts_with("slave"));
    assert_eq!(cli(&app, 7001, &["SET", "after", "2"]), "OK");
    wait_replicated(&env.ip(10), 9001, "after", "2");
    // The other shard on the machine was not touched, and nothing was replaced.
    assert_eq!(env.shard("r9002")["master"], "redis1");
    assert_eq!(env.instances("redis1").len(), 1);
}

#[test]
fn a_crashed_haproxy_is_replaced_its_dns_record_updated_and_app_proxies_repointed() {
    let Some(mut env) = Env::new(3, |t| t) else {
        return;
    };
    env.start(&[]);
    let app = env.ip(14);
    let writer = Writer::start(format!("{app}:7001").parse().unwrap());
    writer.wait_acked("the client's first writes", Instant::now(), 50);
    let crashed_at = Instant::now();
    env.fault("haproxy1", "crash", &[]);
    env.wait("the recovery of haproxy1", RECOVERY, |e| {
        e.ended("machine haproxy1 lost", "completed")
    });
    let settled = Instant::now();
    writer.wait_acked("writes go on", settled, 20);
    let log = writer.finish();
    assert_no_acknowledged_write_lost(&app, &log, crashed_at, settled);
    let new = env.ip(15);
    // The lab's DNS server answers with the replacement's address.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let secret = medic_rfc2136::read_secret(&env._dir.path().join("lab/tsig.key")).unwrap();
    let dns = medic_rfc2136::Rfc2136::new(
        format!("{}:53", env.ip(2)).parse().unwrap(),
        "barton.lab",
        "medic",
        "hmac-sha256",
        secret,
    )
    .unwrap();
    use medic_cloud::Dns;
    let rs = rt
        .block_on(dns.read("haproxy1.barton.lab"))
        .unwrap()
        .unwrap();
    assert_eq!(rs.values, vec![new.parse::<std::net::IpAddr>().unwrap()]);
    // The app proxy points at it and takes it as its primary again.
    let servers = env.haproxy_servers("app", 9998, Some("app-r9001"));
    let h1 = servers.iter().find(|s| s.server == "haproxy1").unwrap();
    assert_eq!(h1.addr, new);
    assert!(h1.is_ready());
    // The new proxy routes to the current master.
    assert_eq!(cli(&new, 8001, &["SET", "via", "new"]), "OK");
}

#[test]
fn a_monitor_cut_off_from_a_healthy_master_alerts_and_does_not_fail_over() {
    let Some(mut env) = Env::new(4, |t| t) else {
        return;
    };
    env.start(&[]);
    env.fault("redis1", "partition", &["--from", "monitor"]);
    env.wait("the cut-off alert", Duration::from_secs(30), |e| {
        e.alerts()
            .iter()
            .any(|a| a.contains("monitor host cannot reach redis1"))
    });
    assert!(env.history().is_empty(), "{:?}", env.history());
    assert_eq!(env.shard("r9001")["master"], "redis1");
    // Clients never noticed.
    assert_eq!(cli(&env.ip(14), 7001, &["SET", "k", "v"]), "OK");
    env.fault("redis1", "heal", &[]);
    env.wait("redis1 up again", Duration::from_secs(20), |e| {
        e.machine("redis1")["state"] == "up"
    });
    assert!(env.history().is_empty());
}

#[test]
fn a_hung_master_is_failed_over_and_never_takes_writes_again() {
    let Some(mut env) = Env::new(5, |t| t) else {
        return;
    };
    env.start(&[]);
    let app = env.ip(14);
    let old = env.instances("redis1")[0].0.clone();
    let writer = Writer::start(format!("{app}:7001").parse().unwrap());
    writer.wait_acked("the client's first writes", Instant::now(), 50);
    let hung_at = Instant::now();
    env.fault("redis1", "hang", &[]);
    env.wait("the recovery of redis1", RECOVERY, |e| {
        e.ended("machine redis1 lost", "completed")
    });
    let settled = Instant::now();
    writer.wait_acked("writes through the app proxy", settled, 20);
    let log = writer.finish();
    assert_no_acknowledged_write_lost(&app, &log, hung_at, settled);
    env.fault("redis1", "heal", &[]);
    // The hung instance was terminated, not resumed: it can never take a write again.
    let inst = env.instances("redis1");
    assert!(inst.contains(&(old, "terminated".to_owned())), "{inst:?}");
    assert!(
        TcpStream::connect_timeout(
            &format!("{}:9001", env.ip(10)).parse().unwrap(),
            Duration::from_millis(300)
        )
        .is_err()
    );
    assert_eq!(cli(&env.ip(14), 7001, &["SET", "k", "v"]), "OK");
    assert_eq!(env.shard("r9001")["master"], "redis2");
}

/// SIGKILL-equivalent aborts after every step of a redis machine's recovery in turn; each
/// restart rolls forward from the journal. At the launch step the abort comes after the
/// instance was launched but before the journal heard of it.
#[test]
fn a_controller_killed_after_every_step_resumes_and_launches_exactly_one_replacement() {
    let Some(mut env) = Env::new(6, |t| t) else {
        return;
    };
    env.start(&[("MEDIC_FAILPOINT", "after-done:1")]);
    env.fault("redis1", "crash", &[]);
    assert!(env.wait_exit(RECOVERY), "{}", tail(&env.logs(), 30));
    let journal_dir = env._dir.path().join("lab/controller/journal");
    let plan_steps = || -> Vec<String> {
        let f = std::fs::read_dir(&journal_dir)
            .unwrap()
            .flatten()
            .next()
            .unwrap()
            .path();
        let first = std::fs::read_to_string(f).unwrap();
        let begin: Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
        begin["plan"]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["action"].as_str().unwrap().to_owned())
            .collect()
    };
    let steps = plan_steps();
    assert!(steps.len() > 10, "{steps:?}");
    for n in 2..=steps.len() {
        let point = if steps[n - 1] == "launch_instance" {
            format!("after-exec:{n}")
        } else {
            format!("after-done:{n}")
        };
        env.start(&[("MEDIC_FAILPOINT", &point)]);
        assert!(
            env.wait_exit(RECOVERY),
            "{point}: did not reach the failpoint\n{}",
            tail(&env.logs(), 30)
        );
    }
    env.start(&[]);
    env.wait("the recovery's end", RECOVERY, |e| {
        e.ended("machine redis1 lost", "completed")
    });
    let r = env.recovery("machine redis1 lost").unwrap();
    // One restart per step: the last one only finds every step done and closes the recovery.
    assert_eq!(r["resumed"], steps.len(), "{r}");
    assert_eq!(
        env.history().len(),
        1,
        "one recovery, resumed, not restarted"
    );
    let inst = env.instances("redis1");
    assert_eq!(inst.len(), 2, "exactly one replacement: {inst:?}");
    assert_eq!(inst.iter().filter(|(_, s)| s == "running").count(), 1);
    env.wait("both shards ok", RECOVERY, |e| {
        ["r9001", "r9002"]
            .iter()
            .all(|s| e.shard(s)["state"] == "ok")
    });
    assert_eq!(cli(&env.ip(14), 7001, &["SET", "k", "v"]), "OK");
}

#[test]
fn a_crash_beyond_the_replacement_limit_fails_over_and_holds_the_replacement() {
    let Some(mut env) = Env::new(7, |t| {
        t.replace(
            "max_replacements_per_hour: 3",
            "max_replacements_per_hour: 1",
        )
    }) else {
        return;
    };
    env.start(&[]);
    env.fault("redis1", "crash", &[]);
    env.wait("the first recovery", RECOVERY, |e| {
        e.ended("machine redis1 lost", "completed")
    });
    env.wait("redis1 in sync", RECOVERY, |e| {
        e.shard("r9001")["state"] == "ok" && e.shard("r9002")["state"] == "ok"
    });
    env.fault("redis2", "crash", &[]);
    env.wait("the second recovery, held", RECOVERY, |e| {
        e.ended("machine redis2 lost", "held")
    });
    // Failover happened: the replacement redis1 is master of both; redis2 is not replaced.
    env.wait(
        "redis1 master of both, redis2 unmonitored, the alert",
        RECOVERY,
        |e| {
            e.shard("r9001")["master"] == "redis1"
                && e.shard("r9002")["master"] == "redis1"
                && e.machine("redis2")["state"] == "unmonitored"
                && e.alerts().iter().any(|a| a.contains("replacement held"))
        },
    );
    assert_eq!(env.instances("redis2").len(), 1);
    env.hook.wait_for("held");
    assert_eq!(cli(&env.ip(14), 7001, &["SET", "k", "v"]), "OK");
    // The page says so too (`MEDIC_SCREENSHOTS=docs` redraws docs/status-page-held.png).
    let page = common::page::page_text(env.port);
    assert!(page.contains("machine redis2 lost — held"), "{page}");
    common::page::screenshot(env.port, "status-page-held");
}

#[test]
fn a_switchover_under_load_loses_no_acknowledged_write() {
    let Some(mut env) = Env::new(8, |t| t) else {
        return;
    };
    env.start(&[]);
    let app = env.ip(14);
    let writer = Writer::start(format!("{app}:7001").parse().unwrap());
    writer.wait_acked("the client's first writes", Instant::now(), 50);
    let asked_at = Instant::now();
    let out = medic(&["switchover", "r9001", "--format", "json", "-t", env.f()]);
    assert!(out.status.success(), "{}", text(&out));
    let said: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(said["ok"], true, "{said}");
    assert_eq!(said["command"], "switchover", "{said}");
    assert_eq!(said["status"], 202, "{said}");
    assert!(
        said["message"]
            .as_str()
            .unwrap()
            .starts_with("switchover of r9001 queued"),
        "{said}"
    );
    env.wait("the switchover", RECOVERY, |e| {
        e.ended("switchover of r9001", "completed")
    });
    let settled = Instant::now();
    writer.wait_acked("writes go on", settled, 20);
    let log = writer.finish();
    assert_no_acknowledged_write_lost(&app, &log, asked_at, settled);
    // ... and every one of them is on the new master itself.
    let acked: Vec<String> = log
        .iter()
        .filter(|w| w.2)
        .map(|w| format!("w:{}", w.1))
        .collect();
    let on_redis2 = get_many(&format!("{}:9001", env.ip(11)), &acked);
    let missing = on_redis2.iter().filter(|v| v.is_none()).count();
    assert_eq!(missing, 0, "acknowledged writes missing on redis2");
    let sh = env.shard("r9001");
    assert_eq!(sh["master"], "redis2", "{sh}");
    env.wait("redis1 a replica in sync", RECOVERY, |e| {
        e.shard("r9001")["state"] == "ok"
    });
    assert!(cli(&env.ip(10), 9001, &["ROLE"]).starts_with("slave"));
    // The pause, as the journal measured it: from holding writes to routing to redis2.
    let r = env.recovery("switchover of r9001").unwrap();
    eprintln!("switchover steps: {}", r["steps"]);
}

#[test]
fn sighup_reloads_a_valid_topology_keeps_the_running_one_on_error_and_mutations_need_the_token() {
    let Some(mut env) = Env::new(9, |t| t) else {
        return;
    };
    env.start(&[]);
    assert_eq!(
        post_without_token(env.port, "/api/unmonitor/redis2"),
        "HTTP/1.1 401 Unauthorized"
    );
    let pid = env.run.as_ref().unwrap().id().to_string();
    let good = std::fs::read_to_string(&env.file).unwrap();
    std::fs::write(
        &env.file,
        good.replace("fall: 3, rise: 2", "fall: zero, rise: 2"),
    )
    .unwrap();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    env.wait("the refusal", Duration::from_secs(10), |e| {
        e.logs().contains("the topology was not reloaded")
    });
    assert!(env.status().is_some(), "still running on the old topology");
    assert_eq!(
        env.status().unwrap()["dns"].as_array().map(Vec::len),
        Some(2),
        "the running topology is unchanged"
    );
    // A valid topology that differs: one more DNS record, and webhooks to another receiver.
    let hook2 = Hook::start();
    let changed = good
        .replace(
            &format!("http://127.0.0.1:{}/hook", env.hook.port),
            &format!("http://127.0.0.1:{}/hook", hook2.port),
        )
        .replace(
            "    - {name: haproxy2.barton.lab, machines: [haproxy2]}\n",
            "    - {name: haproxy2.barton.lab, machines: [haproxy2]}\n    - {name: redis2.barton.lab, machines: [redis2]}\n",
        );
    assert_ne!(changed, good);
    std::fs::write(&env.file, &changed).unwrap();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    env.wait("the reload", Duration::from_secs(10), |e| {
        e.logs().contains("Topology reloaded")
    });
    // Applied: the status lists the new record, and the next notification goes to the new
    // receiver, not the old one.
    let dns = env.status().unwrap()["dns"].clone();
    assert!(
        dns.as_array().is_some_and(|d| d
            .iter()
            .any(|r| r["name"] == "redis2.barton.lab" && r["values"][0] == env.ip(11))),
        "{dns}"
    );
    let before = env.hook.events().len();
    env.fault("redis1", "partition", &["--from", "monitor"]);
    hook2.wait_for("alert");
    env.fault("redis1", "heal", &[]);
    env.wait("redis1 up again", Duration::from_secs(20), |e| {
        e.machine("redis1")["state"] == "up"
    });
    assert_eq!(
        env.hook.events()[before..],
        [] as [String; 0],
        "the old receiver heard nothing after the reload"
    );
    // Maintenance through the CLI (with the token from the state directory) is persisted;
    // `--format json` says so in one object, and a refusal too.
    let out = medic(&["unmonitor", "redis2", "--format", "json", "-t", env.f()]);
    assert!(out.status.success(), "{}", text(&out));
    let said: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            &said["ok"],
            &said["command"],
            &said["name"],
            &said["status"]
        ),
        (
            &Value::from(true),
            &Value::from("unmonitor"),
            &Value::from("redis2"),
            &Value::from(202)
        ),
        "{said}"
    );
    assert!(
        said["message"].as_str().unwrap().contains("maintenance"),
        "{said}"
    );
    let out = medic(&["recover", "nosuch", "--format", "json", "-t", env.f()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&said["ok"], &said["status"]),
        (&Value::from(false), &Value::from(404)),
        "{said}"
    );
    assert_eq!(
        said["error"], "no machine `nosuch` in the topology",
        "{said}"
    );
    assert_eq!(env.machine("redis2")["state"], "maintenance");
    env.stop();
    env.start(&[]);
    assert_eq!(env.machine("redis2")["state"], "maintenance");
    let out = medic(&["monitor", "redis2", "--format", "json", "-t", env.f()]);
    assert!(out.status.success(), "{}", text(&out));
    let said: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(said["message"], "redis2 is monitored", "{said}");
    env.wait("redis2 watched again", Duration::from_secs(10), |e| {
        e.machine("redis2")["state"] == "up"
    });
}

/// Health as the clients see it: redis1 holds every write to r9001 (`CLIENT PAUSE WRITE`) while
/// it answers every check and every proxy routes to it. The write probe through each proxy
/// fails: the status calls r9001 `unwritable` (never `ok`) and a critical alert says so, with
/// nothing failed over; once writes pass again, the status says `ok`.
#[test]
fn a_shard_that_takes_no_writes_is_unwritable_in_the_status_and_alerted() {
    let Some(mut env) = Env::new(11, |t| t) else {
        return;
    };
    env.start(&[]);
    env.wait("r9001 ok", RECOVERY, |e| e.shard("r9001")["state"] == "ok");
    assert_eq!(
        cli(&env.ip(10), 9001, &["CLIENT", "PAUSE", "30000", "WRITE"]),
        "OK"
    );
    env.wait("r9001 unwritable", RECOVERY, |e| {
        e.shard("r9001")["state"] == "unwritable"
    });
    env.wait("the alert", RECOVERY, |e| {
        e.alerts()
            .iter()
            .any(|a| a.contains("writes to r9001 through haproxy1 fail"))
    });
    let sh = env.shard("r9001");
    assert_eq!(sh["master"], "redis1", "{sh}");
    assert!(
        sh["writes"]
            .as_array()
            .is_some_and(|w| w.len() == 2 && w.iter().all(|x| x["ok"] == false)),
        "{sh}"
    );
    assert_eq!(
        env.shard("r9002")["state"],
        "ok",
        "the other shard takes writes"
    );
    assert_eq!(env.history(), Vec::<Value>::new(), "nothing to recover");
    assert_eq!(cli(&env.ip(10), 9001, &["CLIENT", "UNPAUSE"]), "OK");
    env.wait("r9001 ok again", RECOVERY, |e| {
        e.shard("r9001")["state"] == "ok"
    });
    env.wait("writes pass again", RECOVERY, |e| {
        text(&medic(&["events", "-t", e.f()]))
            .contains("writes to r9001 through haproxy1 pass again")
    });
}
