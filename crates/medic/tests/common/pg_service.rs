//! examples/dryad.yaml's database as a service of its own on the lab, for pg_lab.rs and
//! pg_fence_lab.rs: the topology's edits, the service's primary from the status, and a client
//! writing through the name.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Env;
use super::pg::PG;
use super::web::dig;

/// examples/dryad.yaml with its database alone (the web tier is dryad_lab.rs's) on a third
/// machine too, writable once promoted, under a name of its own, checked as a user that is not
/// a superuser.
pub fn database_only(t: String) -> String {
    let web = t.find("services:\n  - name: dryad\n").unwrap() + "services:\n".len();
    let db = t.find("  # The database, watched").unwrap();
    let t = format!("{}{}", &t[..web], &t[db..]);
    let ro = "    standbys_read_only: true\n    failback: automatic\n    failback_after: 1m\n";
    assert!(t.contains(ro), "examples/dryad.yaml's database changed");
    t.replace(
        ro,
        "    dns: {name: db.dryad.lab, ttl: 1}\n    failback: manual\n",
    )
    .replace(
        "check: {kind: postgres, database: dryad,",
        "check: {kind: postgres, user: watcher, database: dryad,",
    )
    .replace(
        "  - {name: secundus, role: service, ami: dryad}\n",
        "  - {name: secundus, role: service, ami: dryad}\n  - {name: tertius, role: service, ami: dryad}\n",
    )
    .replace("standbys: [secundus]", "standbys: [secundus, tertius]")
}

/// The machine `medic status` gives as dryad-db's primary.
pub fn primary_of_db(env: &Env) -> String {
    env.status()
        .and_then(|s| {
            s["services"]
                .as_array()?
                .iter()
                .find(|sv| sv["name"] == "dryad-db")?["primary"]
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// `sql` on the server at `ip` from this host, as a client does: whether it was acknowledged.
pub fn client_sql(ip: &str, sql: &str) -> bool {
    Command::new("timeout")
        .arg("2")
        .arg(format!("{PG}/psql"))
        .args(["-h", ip, "-U", "postgres", "-d", "dryad", "-tAc", sql])
        .env("PGCONNECT_TIMEOUT", "1")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What the client saw: each write's id, when it was answered, whether it was acknowledged,
/// and where the name sent it.
pub type Writes = Arc<Mutex<Vec<(u32, Instant, bool, String)>>>;

/// A client writing one row at a time through the name, until `stop`: what it saw.
pub fn start_client(env: &Env) -> (Writes, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let writes: Writes = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (writes, stop) = (writes.clone(), stop.clone());
        let dns = env.ip(2);
        std::thread::spawn(move || {
            let mut id = 0;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                let out = dig(&dns, "db.dryad.lab");
                let acked = !out.is_empty()
                    && client_sql(&out, &format!("insert into items values ({id}, 'w')"));
                writes
                    .lock()
                    .unwrap()
                    .push((id, Instant::now(), acked, out));
            }
        })
    };
    (writes, stop, client)
}

/// The database of [`database_only`] with `rejoin` by `method` (medic's own start command:
/// the lab's servers keep their socket in /run/pg), checked as the superuser postgres (the
/// rights a lesser user needs are the other test's).
pub fn database_with_rejoin(method: &str) -> impl Fn(String) -> String {
    move |t| {
        database_only(t).replace("user: watcher, ", "").replace(
            "    dns: {name: db.dryad.lab, ttl: 1}\n",
            &format!(
                "    dns: {{name: db.dryad.lab, ttl: 1}}\n    rejoin:\n      method: {method}\n      data_dir: /var/lib/pg\n      bin_dir: {PG}\n      start: \"runuser -u postgres -- {PG}/pg_ctl -D /var/lib/pg -l /var/lib/pg/log -o '-k /run/pg' -w start\"\n"
            ),
        )
    }
}

/// primus (the machine at `.10`) a primary initialised with `initdb_flags` (keeping 256 MB of
/// WAL if `keep_wal`: pg_rewind reads the old primary's back to the fork), secundus and
/// tertius its standbys, replication synchronous to both, the name on primus; then
/// `medic run` started and seen to agree on the roles.
pub fn three_in_sync(env: &mut Env, initdb_flags: &str, keep_wal: bool) {
    let (primus, secundus, tertius) = (env.ip(10), env.ip(11), env.ip(12));
    super::pg::start_primary_with(env, &primus, "dryad", initdb_flags);
    if keep_wal {
        super::pg::psql(
            env,
            &primus,
            "dryad",
            "ALTER SYSTEM SET wal_keep_size = '256MB'",
        );
    }
    // As if primus had been a standby before: its name, which its rejoin must keep.
    super::pg::psql(
        env,
        &primus,
        "dryad",
        &format!(
            "ALTER SYSTEM SET primary_conninfo = 'host={secundus} user=postgres application_name=primus'"
        ),
    );
    super::pg::start_standby(env, &secundus, &primus);
    super::pg::start_standby(env, &tertius, &primus);
    super::pg::psql(
        env,
        &primus,
        "dryad",
        "ALTER SYSTEM SET synchronous_standby_names = 'ANY 2 (*)'",
    );
    super::pg::psql(env, &primus, "dryad", "SELECT pg_reload_conf()");
    env.wait("the name on primus", Duration::from_secs(10), |e| {
        super::web::resolve(e, "db.dryad.lab") == primus
    });
    env.start(&[]);
    env.wait(
        "dryad-db: primus primary, secundus and tertius standbys",
        Duration::from_secs(30),
        |e| {
            super::pg::service_machine(e, "dryad-db", "primus")["state"] == "production"
                && ["secundus", "tertius"]
                    .iter()
                    .all(|m| super::pg::service_machine(e, "dryad-db", m)["state"] == "standby")
        },
    );
}

/// Every step of every recovery in medic's history.
pub fn steps(env: &Env) -> Vec<serde_json::Value> {
    env.history()
        .into_iter()
        .flat_map(|r| r["steps"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The summary of the pg-rejoin step that made `machine` a standby ("started as a standby":
/// a rejoin once it passes its checks leaves it as it is), or "" if there is none.
pub fn rejoined(env: &Env, machine: &str) -> String {
    steps(env)
        .iter()
        .filter(|s| s["kind"] == "pg-rejoin")
        .filter_map(|s| s["summary"].as_str())
        .find(|t| {
            t.starts_with(&format!("dryad-db@{machine}:")) && t.contains("started as a standby")
        })
        .unwrap_or_default()
        .to_owned()
}

/// `old` (`old_name`), made a standby of `new` (`new_name`), read back: it streams from `new`
/// under the name its earlier `primary_conninfo` gave it, a write on `new` reaches it, every write the client saw acknowledged is on both, and none was
/// acknowledged by `old` after `new` acknowledged its first (two primaries).
pub fn read_back(
    env: &Env,
    writes: &[(u32, Instant, bool, String)],
    new_name: &str,
    new: &str,
    (old_name, old): (&str, &str),
) {
    use super::pg::psql;
    assert_eq!(
        psql(
            env,
            old,
            "dryad",
            "SELECT sender_host FROM pg_stat_wal_receiver"
        ),
        new
    );
    assert_eq!(
        psql(
            env,
            new,
            "dryad",
            &format!(
                "SELECT application_name FROM pg_stat_replication WHERE client_addr = '{old}'"
            )
        ),
        old_name,
        "the name {old_name} streamed under before its rejoin"
    );
    psql(
        env,
        new,
        "dryad",
        "INSERT INTO items VALUES (2000000, 'after')",
    );
    env.wait(
        &format!("{old} to replay the new primary's write"),
        Duration::from_secs(20),
        |e| {
            psql(
                e,
                old,
                "dryad",
                "SELECT count(*) FROM items WHERE id = 2000000",
            ) == "1"
        },
    );
    let acked: Vec<u32> = writes.iter().filter(|w| w.2).map(|w| w.0).collect();
    for ip in [new, old] {
        let rows: std::collections::BTreeSet<u32> = psql(env, ip, "dryad", "SELECT id FROM items")
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        let lost: Vec<&u32> = acked.iter().filter(|id| !rows.contains(id)).collect();
        assert!(lost.is_empty(), "acknowledged, not on {ip}: {lost:?}");
    }
    let first_new = writes
        .iter()
        .filter(|w| w.2 && w.3 == new)
        .map(|w| w.1)
        .min()
        .unwrap();
    assert!(
        writes
            .iter()
            .all(|w| !(w.2 && w.3 == old && w.1 > first_new)),
        "{old} acknowledged a write after {new_name} had: two primaries"
    );
}
