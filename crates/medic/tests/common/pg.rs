//! PostgreSQL on lab machines, for the services' tests (dryad_lab.rs, pg_lab.rs): Debian's
//! server started the way an operator's own tooling would, over SSH: a primary, and a
//! streaming standby copied from it; `psql` there; a database service's machine in the status.

use super::Env;
use super::web::on;

pub const PG: &str = "/usr/lib/postgresql/15/bin";

/// Where the lab's machines and the host (the controller, the tests' clients) are: trusted.
const NET: &str = "10.75.0.0/16";

/// A primary on the machine at `ip` with the database `db` and its table `items (id int
/// primary key, title text)`.
pub fn start_primary(env: &Env, ip: &str, db: &str) {
    start_primary_with(env, ip, db, "--data-checksums");
}

/// [`start_primary`], `initdb` given `initdb_flags`.
pub fn start_primary_with(env: &Env, ip: &str, db: &str, initdb_flags: &str) {
    prepare(env, ip);
    on(
        env,
        ip,
        &format!(
            "runuser -u postgres -- {PG}/initdb -D /var/lib/pg -A trust {initdb_flags} >/dev/null && \
             echo \"listen_addresses = '*'\" >> /var/lib/pg/postgresql.conf && \
             echo 'host all all {NET} trust' >> /var/lib/pg/pg_hba.conf && \
             echo 'host replication all {NET} trust' >> /var/lib/pg/pg_hba.conf && \
             runuser -u postgres -- {PG}/pg_ctl -D /var/lib/pg -l /var/lib/pg/log -o '-k /run/pg' -w start >/dev/null && \
             runuser -u postgres -- psql -h /run/pg -c 'create database {db}' >/dev/null && \
             runuser -u postgres -- psql -h /run/pg -d {db} -c 'create table items (id int primary key, title text)' >/dev/null"
        ),
    );
}

/// A streaming standby of the primary at `primary` on the machine at `ip`.
pub fn start_standby(env: &Env, ip: &str, primary: &str) {
    prepare(env, ip);
    on(
        env,
        ip,
        &format!(
            "runuser -u postgres -- {PG}/pg_basebackup -h {primary} -U postgres -D /var/lib/pg -R -X stream && \
             runuser -u postgres -- {PG}/pg_ctl -D /var/lib/pg -l /var/lib/pg/log -o '-k /run/pg' -w start >/dev/null"
        ),
    );
}

fn prepare(env: &Env, ip: &str) {
    on(
        env,
        ip,
        "mkdir -p /var/lib/pg /run/pg && chown postgres:postgres /var/lib/pg /run/pg && chmod 700 /var/lib/pg",
    );
}

/// `sql` through psql on the machine at `ip`, as the database's owner: its output, or its
/// error (not a failed test: a refused write is what a read-only copy must answer).
pub fn psql(env: &Env, ip: &str, db: &str, sql: &str) -> String {
    on(
        env,
        ip,
        &format!("runuser -u postgres -- psql -h /run/pg -d {db} -tAc \"{sql}\" 2>&1; true"),
    )
    .trim()
    .to_owned()
}

/// A number psql printed.
pub fn wal_bytes(out: &str) -> u64 {
    out.parse()
        .unwrap_or_else(|e| panic!("not a WAL position in bytes: {out:?}: {e}"))
}

/// `machine` in the status of the service `service`.
pub fn service_machine(env: &Env, service: &str, machine: &str) -> serde_json::Value {
    env.status()
        .and_then(|s| {
            s["services"]
                .as_array()?
                .iter()
                .find(|sv| sv["name"] == service)?["machines"]
                .as_array()?
                .iter()
                .find(|m| m["machine"] == machine)
                .cloned()
        })
        .unwrap_or_default()
}
