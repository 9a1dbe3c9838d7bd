//! Seed 000 ("Dryad") on the lab, examples/dryad.yaml: nginx and PostgreSQL on primus; on
//! secundus nginx configured read-only and PostgreSQL a streaming standby of primus's. The
//! primary's web server dies: the name answers secundus, which serves the data read-only (a
//! row written on primus is there; a write is refused). The primary mended: once it has passed
//! its checks for `failback_after` (3 s here), the name goes back by itself. Needs root.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::time::{Duration, Instant};

use common::pg::{self, PG, wal_bytes};
use common::web::*;
use common::*;

fn psql(env: &Env, ip: &str, sql: &str) -> String {
    pg::psql(env, ip, "dryad", sql)
}

fn db_machine(env: &Env, machine: &str) -> serde_json::Value {
    pg::service_machine(env, "dryad-db", machine)
}

fn front_page(text: &str) -> String {
    format!("location = / {{ default_type text/html; return 200 \"<h1>{text}</h1>\\n\"; }}\n")
}

#[test]
fn the_name_moves_to_the_read_only_secondary_and_comes_back_by_itself() {
    let Some(mut env) = Env::of_example("dryad.yaml", 15, |t| {
        t.replace("failback_after: 1m", "failback_after: 3s")
    }) else {
        return;
    };
    let (primus, secundus) = (env.ip(10), env.ip(11));
    // The operator's database: primus's, and secundus's streaming copy of it.
    pg::start_primary(&env, &primus, "dryad");
    pg::start_standby(&env, &secundus, &primus);
    // The web tier: secundus refuses logins and submissions (the seed's mod_rewrite).
    for (ip, page) in [
        (&primus, "Dryad"),
        (
            &secundus,
            "Dryad (read-only: submissions are currently disabled)",
        ),
    ] {
        on(
            &env,
            ip,
            &format!(
                "mkdir -p /etc/web && printf '%s' '{NGINX_CONF}' > /etc/web/nginx.conf && printf '%s' '{}' > /etc/web/role.conf",
                front_page(page)
            ),
        );
        start_nginx(&env, ip);
    }
    psql(&env, &primus, "insert into items values (1, 'a deposit')");
    let deadline = Instant::now() + Duration::from_secs(10);
    while psql(&env, &secundus, "select title from items where id = 1") != "a deposit" {
        assert!(Instant::now() < deadline, "the standby never got the row");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(resolve(&env, "datadryad.dryad.lab"), primus);
    let written = wal_bytes(&psql(
        &env,
        &primus,
        "select (pg_current_wal_lsn() - '0/0')::bigint",
    ));
    env.start(&[]);
    env.wait("the nominal states", Duration::from_secs(20), |e| {
        (state_of(e, "primus"), state_of(e, "secundus")) == ("production".into(), "standby".into())
    });
    // The database's own check: primus's PostgreSQL the primary, secundus's a standby that
    // has replayed the deposit.
    env.wait(
        "dryad-db: primus primary, secundus in recovery and replayed",
        Duration::from_secs(20),
        |e| {
            let (p, s) = (db_machine(e, "primus"), db_machine(e, "secundus"));
            p["state"] == "production"
                && p["health"]["role"] == "master"
                && s["state"] == "standby"
                && s["health"]["role"] == "replica"
                && s["wal_bytes"].as_u64().is_some_and(|b| b >= written)
        },
    );

    // The primary's web server dies.
    let t_kill = Instant::now();
    on(&env, &primus, "kill $(cat /run/web-nginx.pid)");
    env.wait("the name on secundus", Duration::from_secs(30), |e| {
        resolve(e, "datadryad.dryad.lab") == secundus
    });
    let moved = t_kill.elapsed();
    assert_eq!(
        get(&resolve(&env, "datadryad.dryad.lab"), "/"),
        "<h1>Dryad (read-only: submissions are currently disabled)</h1>"
    );
    // Read-only, with the data: the deposit is there, a new one is refused.
    assert_eq!(
        psql(&env, &secundus, "select title from items where id = 1"),
        "a deposit"
    );
    let refused = psql(&env, &secundus, "insert into items values (2, 'refused')");
    assert!(refused.contains("read-only transaction"), "{refused}");
    env.wait("down / production_alone", Duration::from_secs(10), |e| {
        (state_of(e, "primus"), state_of(e, "secundus"))
            == ("down".into(), "production_alone".into())
    });

    // The primary mended: it rejoins, and 3 s later the name goes back by itself.
    let t_back = Instant::now();
    start_nginx(&env, &primus);
    env.wait("the name back on primus", Duration::from_secs(30), |e| {
        resolve(e, "datadryad.dryad.lab") == primus && service(e)["primary"] == "primus"
    });
    let failback = t_back.elapsed();
    let back = env.recovery("switchover of dryad to primus").unwrap();
    assert!(
        back["trigger"]
            .as_str()
            .unwrap_or_default()
            .starts_with("failback:"),
        "{back}"
    );
    env.wait("the nominal states again", Duration::from_secs(10), |e| {
        (state_of(e, "primus"), state_of(e, "secundus")) == ("production".into(), "standby".into())
    });
    assert_eq!(get(&primus, "/"), "<h1>Dryad</h1>");
    // The copy made writable by hand: a second primary, told, and not a usable standby.
    on(
        &env,
        &secundus,
        &format!("runuser -u postgres -- {PG}/pg_ctl -D /var/lib/pg promote -w >/dev/null"),
    );
    env.wait(
        "the alert of a second primary, secundus down for dryad-db",
        Duration::from_secs(20),
        |e| {
            e.alerts().iter().any(|a| {
                a.contains("dryad-db@secundus: not in recovery (writable), but primus is dryad-db's primary: a second primary?")
            }) && db_machine(e, "secundus")["state"] == "down"
        },
    );
    eprintln!(
        "web server killed: the name answered secundus after {moved:?}; mended: back on primus after {failback:?} (failback_after 3s)"
    );
    env.stop();
}
