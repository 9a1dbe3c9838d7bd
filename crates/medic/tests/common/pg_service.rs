//! examples/dryad.yaml's database as a service of its own on the lab, for pg_lab.rs and
//! pg_fence_lab.rs: the topology's edits, the service's primary from the status, and a client
//! writing through the name.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

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
