//! Against a real haproxy 2.6 with an admin runtime API, routing to a real redis.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use medic_haproxy::*;
use medic_testkit::{Haproxy, RedisServer, unique_loopback};

struct World {
    haproxy: Haproxy,
    redis: RedisServer,
    frontend: SocketAddr,
}

fn world() -> World {
    let redis = RedisServer::start(unique_loopback(), 9001);
    let ip = unique_loopback();
    let frontend = SocketAddr::from((ip, 8001));
    let body = format!(
        "frontend fe\n    bind {frontend}\n    default_backend be\n\nbackend be\n    \
         server r1 {} check inter 200ms\n    server r2 127.1.1.1:9001 check inter 200ms disabled\n",
        redis.addr
    );
    World {
        haproxy: Haproxy::start(ip, &body),
        redis,
        frontend,
    }
}

fn apis(w: &World) -> [RuntimeApi; 2] {
    [
        RuntimeApi::tcp(w.haproxy.api_tcp),
        RuntimeApi::new(Endpoint::Unix(w.haproxy.api_socket.clone())),
    ]
}

fn r1() -> ServerName {
    ServerName::new("be", "r1")
}

/// The admin state `show servers state` says a server is in: maintenance over drain over
/// ready, as `set_state` itself judges it.
fn admin_state(s: &ServerState) -> AdminState {
    if s.in_maint() {
        AdminState::Maint
    } else if s.in_drain() {
        AdminState::Drain
    } else {
        AdminState::Ready
    }
}

/// Reads every server of `be` back and asserts each is in the state `expected` says.
async fn assert_states(api: &RuntimeApi, expected: &[(ServerName, AdminState)], after: &str) {
    let st = api.servers(Some("be")).await.unwrap();
    assert_eq!(
        st.len(),
        expected.len(),
        "via {}, {after}: {st:?}",
        api.endpoint
    );
    for (server, state) in expected {
        let found = st.iter().find(|s| s.server == server.server).unwrap();
        assert_eq!(
            admin_state(found),
            *state,
            "via {}, {after}: {server} reads back as {found:?}",
            api.endpoint
        );
    }
}

#[tokio::test]
async fn states_are_set_and_read_back_over_tcp_and_unix_socket() {
    let w = world();
    let r2 = ServerName::new("be", "r2");
    for api in apis(&w) {
        // As configured (and as the first API left them): r1 ready, r2 `disabled`.
        let mut expected = [(r1(), AdminState::Ready), (r2.clone(), AdminState::Maint)];
        assert_states(&api, &expected, "at the start").await;
        for (i, state) in [
            (0, AdminState::Maint),
            (0, AdminState::Drain),
            (0, AdminState::Ready),
            (0, AdminState::Maint),
            (0, AdminState::Maint),
            // A server `disabled` in the config becomes ready (HAProxy keeps its CMAINT bit),
            // and drains like any other.
            (1, AdminState::Ready),
            (1, AdminState::Drain),
            (1, AdminState::Maint),
            (0, AdminState::Ready),
        ] {
            let server = expected[i].0.clone();
            api.set_state(&server, state).await.unwrap();
            expected[i].1 = state;
            let after = format!("after `{}`", cmd::set_state(&server, state));
            assert_states(&api, &expected, &after).await;
        }
    }
}

/// `medic_testkit::wait_until` for an async probe: polls `probe` every `every` until it
/// returns `Ok`, within `within`; on the deadline panics with what it saw last.
async fn wait_until_async<T, F>(
    what: &str,
    within: Duration,
    every: Duration,
    mut probe: impl FnMut() -> F,
) -> T
where
    F: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(seen) if tokio::time::Instant::now() >= deadline => {
                panic!("waited {within:?} for {what}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

#[tokio::test]
async fn fencing_cuts_a_live_client_off() {
    let w = world();
    let api = RuntimeApi::tcp(w.haproxy.api_tcp);
    // Wait for HAProxy's check to see r1 up, then hold a client session through it.
    let a = &api;
    wait_until_async(
        "HAProxy's check to see be/r1 UP",
        Duration::from_secs(10),
        Duration::from_millis(50),
        move || async move {
            let rows = a.stats().await.map_err(|e| e.to_string())?;
            match rows.iter().find(|r| r.proxy == "be" && r.name == "r1") {
                Some(r) if r.status == "UP" => Ok(()),
                Some(r) => Err(format!("be/r1 {}", r.status)),
                None => Err(format!("no be/r1 in {rows:?}")),
            }
        },
    )
    .await;
    let mut client = TcpStream::connect(w.frontend).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    client.write_all(b"PING\r\n").unwrap();
    let mut buf = [0u8; 7];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"+PONG\r\n");
    let scur = api
        .stats()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.proxy == "be" && r.name == "r1")
        .unwrap()
        .scur;
    assert_eq!(scur, 1);

    fence(&api, &r1()).await.unwrap();
    let mut rest = Vec::new();
    let n = client.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(n, 0, "the client's session was closed");
    assert!(api.servers(Some("be")).await.unwrap()[0].in_maint());
    // A new client gets nowhere while r1 is fenced.
    let mut c2 = TcpStream::connect(w.frontend).unwrap();
    c2.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = c2.write_all(b"PING\r\n");
    let mut out = Vec::new();
    let _ = c2.read_to_end(&mut out);
    assert!(!String::from_utf8_lossy(&out).contains("PONG"));
    drop(w.redis);
}

#[tokio::test]
async fn addresses_are_changed_and_read_back() {
    let w = world();
    let api = RuntimeApi::tcp(w.haproxy.api_tcp);
    let new: IpAddr = unique_loopback().into();
    api.set_addr(&r1(), new, 9002).await.unwrap();
    let st = api.servers(Some("be")).await.unwrap();
    assert_eq!(
        (st[0].addr.as_str(), st[0].port),
        (new.to_string().as_str(), 9002)
    );
    // The same again: HAProxy says there is nothing to change, which is success.
    api.set_addr(&r1(), new, 9002).await.unwrap();
}

#[tokio::test]
async fn servers_are_added_and_deleted() {
    let w = world();
    let api = RuntimeApi::tcp(w.haproxy.api_tcp);
    let r3 = ServerName::new("be", "r3");
    let check = CheckParams {
        inter_ms: 300,
        fall: 2,
        rise: 1,
    };
    api.add_server(&r3, w.redis.addr.ip(), 9001, Some(check))
        .await
        .unwrap();
    let st = api.servers(Some("be")).await.unwrap();
    let added = st.iter().find(|s| s.server == "r3").unwrap();
    assert!(added.is_ready());
    // Adding it again is refused in HAProxy's words.
    match api
        .add_server(&r3, w.redis.addr.ip(), 9001, None)
        .await
        .unwrap_err()
    {
        HaproxyError::Rejected {
            message, command, ..
        } => {
            assert_eq!(
                message,
                "Already exists a server with the same name in backend."
            );
            assert_eq!(command, format!("add server be/r3 {}", w.redis.addr));
        }
        other => panic!("{other:?}"),
    }
    api.del_server(&r3).await.unwrap();
    assert!(
        !api.servers(Some("be"))
            .await
            .unwrap()
            .iter()
            .any(|s| s.server == "r3")
    );
    api.del_server(&r3).await.unwrap(); // twice is harmless
}

#[tokio::test]
async fn unknown_backends_and_servers_are_haproxys_own_words() {
    let w = world();
    let api = RuntimeApi::tcp(w.haproxy.api_tcp);
    let e = api
        .set_state(&ServerName::new("nope", "r1"), AdminState::Maint)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "haproxy {}: `set server nope/r1 state maint` refused: No such backend.",
            w.haproxy.api_tcp
        )
    );
    let e = api
        .set_state(&ServerName::new("be", "nope"), AdminState::Ready)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "haproxy {}: `set server be/nope state ready` refused: No such server.",
            w.haproxy.api_tcp
        )
    );
    let e = api
        .set_addr(&ServerName::new("be", "nope"), w.redis.addr.ip(), 1)
        .await
        .unwrap_err();
    assert!(
        matches!(e, HaproxyError::Rejected { ref message, .. } if message == "No such server."),
        "{e}"
    );
    let e = api
        .shutdown_sessions(&ServerName::new("be", "nope"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, HaproxyError::Rejected { ref message, .. } if message == "No such server."),
        "{e}"
    );
}

#[tokio::test]
async fn an_unreachable_runtime_api_fails_within_its_bound() {
    let api = RuntimeApi {
        endpoint: Endpoint::Tcp(SocketAddr::from((unique_loopback(), 9999))),
        timeout: Duration::from_millis(500),
        aliases: Default::default(),
    };
    let t = std::time::Instant::now();
    let e = api.servers(None).await.unwrap_err();
    assert!(matches!(e, HaproxyError::Connect { .. }), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(2));
}

/// Why medic does not rely on HAProxy's server-state-file: it restores the admin state but
/// not the address of a server whose configured address is a static IP.
#[tokio::test]
async fn the_state_file_alone_keeps_admin_states_but_loses_static_addresses() {
    let mut w = world();
    let api = RuntimeApi::tcp(w.haproxy.api_tcp);
    let moved: IpAddr = unique_loopback().into();
    api.set_state(&r1(), AdminState::Maint).await.unwrap();
    api.set_addr(&ServerName::new("be", "r2"), moved, 9001)
        .await
        .unwrap();
    let state = api.dump_state().await.unwrap();
    std::fs::write(w.haproxy.dir.path().join("server-state"), state).unwrap();
    w.haproxy.restart();
    let st = api.servers(Some("be")).await.unwrap();
    assert!(st.iter().find(|s| s.server == "r1").unwrap().in_maint());
    assert_eq!(
        st.iter().find(|s| s.server == "r2").unwrap().addr,
        "127.1.1.1",
        "the address is the config's again"
    );
}

/// What medic does instead: after the runtime change, rewrite the server's line.
#[tokio::test]
async fn runtime_changes_survive_a_restart_through_the_rewritten_config() {
    let mut w = world();
    let api = RuntimeApi::tcp(w.haproxy.api_tcp);
    let moved = SocketAddr::from((unique_loopback(), 9003));
    let r2 = ServerName::new("be", "r2");
    api.set_state(&r1(), AdminState::Maint).await.unwrap();
    api.set_addr(&r2, moved.ip(), moved.port()).await.unwrap();
    api.set_state(&r2, AdminState::Ready).await.unwrap();

    let cfg = std::fs::read_to_string(&w.haproxy.config).unwrap();
    let cfg = edit_server(
        &cfg,
        &r1(),
        ServerEdit {
            addr: None,
            enabled: Some(false),
        },
    )
    .unwrap();
    let cfg = edit_server(
        &cfg,
        &r2,
        ServerEdit {
            addr: Some(moved),
            enabled: Some(true),
        },
    )
    .unwrap();
    std::fs::write(&w.haproxy.config, cfg).unwrap();
    let _ = std::fs::remove_file(w.haproxy.dir.path().join("server-state"));

    w.haproxy.restart();
    let st = api.servers(Some("be")).await.unwrap();
    let r1s = st.iter().find(|s| s.server == "r1").unwrap();
    let r2s = st.iter().find(|s| s.server == "r2").unwrap();
    assert!(
        r1s.in_maint(),
        "r1 stays in maint after the restart: {r1s:?}"
    );
    assert!(r2s.is_ready(), "r2 stays ready: {r2s:?}");
    assert_eq!((r2s.addr.clone(), r2s.port), (moved.ip().to_string(), 9003));
}

/// A server the operator named `r1` where medic knows the machine as `redis1`: every command
/// goes out under HAProxy's name and every reading comes back under medic's.
#[tokio::test]
async fn aliases_translate_every_command_and_reading() {
    let w = world();
    let mut api = RuntimeApi::tcp(w.haproxy.api_tcp);
    api.aliases = std::sync::Arc::new(Aliases::new([("redis1".to_owned(), "r1".to_owned())]));
    let redis1 = ServerName::new("be", "redis1");
    fence(&api, &redis1).await.unwrap();
    let seen = api.servers(Some("be")).await.unwrap();
    let names: Vec<&str> = seen.iter().map(|s| s.server.as_str()).collect();
    assert_eq!(names, ["redis1", "r2"]);
    assert!(seen[0].in_maint(), "{seen:?}");
    // HAProxy itself, asked without the aliases, has its own name in maintenance.
    let plain = RuntimeApi::tcp(w.haproxy.api_tcp);
    let r1 = plain.servers(Some("be")).await.unwrap();
    assert!(
        r1.iter().any(|s| s.server == "r1" && s.in_maint()),
        "{r1:?}"
    );
    api.set_addr(&redis1, w.redis.addr.ip(), w.redis.addr.port())
        .await
        .unwrap();
    api.set_state(&redis1, AdminState::Ready).await.unwrap();
    let back = api.servers(Some("be")).await.unwrap();
    assert!(
        back.iter().any(|s| s.server == "redis1" && s.is_ready()),
        "{back:?}"
    );
}
