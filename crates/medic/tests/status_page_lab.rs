//! The status page during a real recovery on the lab of examples/lab.yaml, as headless
//! Chromium renders it, both drawn once and live (following its event stream), and the
//! event stream it follows. Needs root.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The status page during a real recovery, as headless Chromium renders it: the failure, then
/// the routing graph pointing both proxies at the new master, the recovery's steps on a
/// timeline, the checks' latency; and the updates the live page follows, pushed by the
/// controller as server-sent events (read here as the page reads them: a headless browser
/// cannot keep a stream open and still finish its page). `MEDIC_SCREENSHOTS=docs` redraws the
/// screenshots in docs/.
#[test]
fn the_status_page_shows_the_failure_then_the_recovered_state() {
    let Some(mut env) = Env::new(10, |t| t) else {
        return;
    };
    env.start(&[]);
    let before = common::page::page_text(env.port);
    assert!(
        before.contains("r9001 9001 ok redis1 redis2 in sync"),
        "{before}"
    );
    let dom = common::page::page_dom(env.port);
    for route in [
        "haproxy1 r9001 redis1",
        "haproxy2 r9002 redis1",
        "app primary haproxy1",
    ] {
        assert!(
            dom.contains(&format!("data-route=\"{route}\"")),
            "{route} in:\n{dom}"
        );
    }
    // The stream the page reads: the first status comes at once, then each change.
    let stream = common::page::EventStream::open(env.port);
    assert_eq!(stream.status(), "HTTP/1.1 200 OK");
    stream.wait("the first status event", Duration::from_secs(5), |n, v| {
        n == "status" && v["topology"] == "barton"
    });
    stream.wait("the first latency event", Duration::from_secs(5), |n, v| {
        n == "latency" && v["redis"].as_array().is_some_and(|p| !p.is_empty())
    });
    // At most 16 streams: the 17th is refused; one closed (a tab closed) frees its place.
    let more: Vec<_> = (0..15)
        .map(|_| common::page::EventStream::open(env.port))
        .collect();
    for s in &more {
        assert_eq!(s.status(), "HTTP/1.1 200 OK");
    }
    // One producer for all of them: over a window with 16 streams open, one snapshot a
    // second at most (a snapshot per stream would be 16 a second).
    let snapshots = || -> u64 {
        http_text(env.port, "/metrics")
            .lines()
            .find_map(|l| l.strip_prefix("medic_status_snapshots_total "))
            .and_then(|n| n.trim().parse().ok())
            .expect("medic_status_snapshots_total in /metrics")
    };
    let (from, since) = (snapshots(), Instant::now());
    for s in &more {
        s.wait("a status event", Duration::from_secs(5), |n, _| {
            n == "status"
        });
    }
    std::thread::sleep(Duration::from_secs(2));
    let made = snapshots() - from;
    let most = since.elapsed().as_secs() + 2;
    assert!(
        made <= most,
        "{made} snapshots in {:?} with 16 streams: more than one a second",
        since.elapsed()
    );
    let refused = common::page::EventStream::open(env.port);
    assert!(
        refused.status().starts_with("HTTP/1.1 503"),
        "{}",
        refused.status()
    );
    more[0].close();
    medic_testkit::wait_until(
        "a stream's place freed by a closed one",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || {
            let s = common::page::EventStream::open(env.port);
            let line = s.status();
            s.close();
            if line == "HTTP/1.1 200 OK" {
                Ok(())
            } else {
                Err(line)
            }
        },
    );
    for s in &more {
        s.close();
    }
    // The live page itself, in the browser: opened before the failure, it follows the
    // stream until it draws haproxy1's route for r9001 to redis2 — which only a pushed
    // update can bring it. Its stream counted open (ours and the page's) before the fault.
    let moved = "[data-route=\"haproxy1 r9001 redis2\"]";
    let live = common::page::LivePage::open(env.port, moved);
    medic_testkit::wait_until(
        "the live page's stream open (medic_status_streams_open 2)",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let m = http_text(env.port, "/metrics");
            let open = m
                .lines()
                .find(|l| l.starts_with("medic_status_streams_open "))
                .unwrap_or("no medic_status_streams_open")
                .to_owned();
            if open == "medic_status_streams_open 2" {
                Ok(())
            } else {
                Err(open)
            }
        },
    );
    env.fault("redis1", "crash", &[]);
    // The failure: redis1 down (before or while it is recovered).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    while Instant::now() < deadline {
        seen = common::page::page_text(env.port);
        if seen.contains("redis1 redis down") || seen.contains("Recovery in flight") {
            break;
        }
    }
    assert!(
        seen.contains("redis1 redis down") || seen.contains("Recovery in flight"),
        "{seen}"
    );
    common::page::screenshot(env.port, "status-page-failure");
    env.wait("the recovery", RECOVERY, |e| {
        e.ended("machine redis1 lost", "completed")
    });
    env.wait("both shards ok", RECOVERY, |e| {
        e.shard("r9001")["state"] == "ok" && e.shard("r9002")["state"] == "ok"
    });
    // Pushed, not polled: the stream told of redis1's failure and of the finished recovery.
    stream.wait("redis1 down or recovering, pushed", RECOVERY, |n, v| {
        n == "status" && !v["in_flight"].is_null()
    });
    stream.wait("the completed recovery, pushed", RECOVERY, |n, v| {
        n == "history"
            && v[0]["event"] == "machine redis1 lost"
            && v[0]["outcome"]["outcome"] == "completed"
    });
    // The browser's page drew the new route from the stream (opened before the crash, so its
    // first events showed redis1 as master), and closed it.
    let pushed = live.dom(RECOVERY);
    assert!(pushed.contains("data-matched=\"stream\""), "{pushed}");
    let events: u32 = pushed
        .split("data-events=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    eprintln!(
        "the live page: {events} events; {}",
        pushed
            .split("id=\"live\"")
            .nth(1)
            .unwrap_or("")
            .chars()
            .take(200)
            .collect::<String>()
    );
    assert!(
        pushed.contains("data-route=\"haproxy1 r9001 redis2\""),
        "{pushed}"
    );
    let after = common::page::page_text(env.port);
    assert!(
        after.contains("r9001 9001 ok redis2 redis1 in sync"),
        "{after}"
    );
    // The graph routes both shards through both proxies to redis2 and nothing to redis1; the
    // recovery's steps are bars on its timeline; the checks' latency is drawn.
    let dom = common::page::page_dom(env.port);
    for proxy in ["haproxy1", "haproxy2"] {
        for shard in ["r9001", "r9002"] {
            // (Drawn as a route to the master that is up: not the red of a `dead` edge.)
            let to = format!("class=\"edge \" data-route=\"{proxy} {shard} redis2\"");
            assert!(dom.contains(&to), "{to} in:\n{dom}");
            assert!(
                !dom.contains(&format!("data-route=\"{proxy} {shard} redis1\"")),
                "{dom}"
            );
        }
    }
    let steps = env.history()[0]["steps"].as_array().unwrap().len();
    assert_eq!(
        dom.matches("data-step=\"").count(),
        steps,
        "a bar per step:\n{dom}"
    );
    assert!(dom.contains("data-step=\"1 unmonitor\""), "{dom}");
    let redis_line = dom
        .split("<polyline ")
        .find(|p| p.contains("data-kind=\"redis\""))
        .unwrap_or_else(|| panic!("no redis latency line in:\n{dom}"));
    assert!(
        !redis_line.starts_with("points=\"\""),
        "an empty line: {redis_line}"
    );
    common::page::screenshot(env.port, "status-page-recovered");
    assert!(after.contains("machine redis1 lost"), "{after}");
    assert!(after.contains("completed"), "{after}");
    assert!(
        after.contains(&format!("redis1 redis up {}", env.ip(15))),
        "{after}"
    );
}
