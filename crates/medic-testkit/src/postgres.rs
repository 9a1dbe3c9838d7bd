//! A real PostgreSQL server of its own (Debian's `postgresql-15`, started from its binaries),
//! on a loopback address, its data in a directory this handle owns; or a streaming standby of
//! one (`pg_basebackup -R`). PostgreSQL refuses to run as root: as root the server runs as the
//! package's `postgres` user. Dropping the handle stops it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Proc, wait_until};

/// The binaries of the one PostgreSQL scripts/deps installs.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

#[derive(Debug)]
pub struct Postgres {
    pub addr: SocketAddr,
    pub data: PathBuf,
    pub proc: Option<Proc>,
    _dir: tempfile::TempDir,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `bin` as the user PostgreSQL runs as (`postgres` when the test is root).
fn pg(bin: &str) -> Command {
    let path = Path::new(PG_BIN).join(bin);
    assert!(
        path.exists(),
        "{} is not installed: scripts/deps installs postgresql-15",
        path.display()
    );
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn run(what: &str, mut cmd: Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Postgres {
    /// A new primary (`initdb`, trust authentication) listening on `ip:port`.
    pub fn start(ip: Ipv4Addr, port: u16) -> Postgres {
        let (dir, data) = Self::dirs();
        let mut init = pg("initdb");
        init.args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data);
        run("initdb", init);
        // Every loopback address trusted, for clients and for a standby's copy (initdb's
        // defaults name 127.0.0.1 alone).
        let hba = data.join("pg_hba.conf");
        let mut lines = std::fs::read_to_string(&hba).expect("initdb writes pg_hba.conf");
        lines.push_str("host all all 127.0.0.0/8 trust\nhost replication all 127.0.0.0/8 trust\n");
        std::fs::write(&hba, lines).expect("pg_hba.conf written");
        Self::serve(ip, port, dir, data)
    }

    /// A streaming standby of `primary`, listening on `ip:port`.
    pub fn standby_of(primary: &Postgres, ip: Ipv4Addr, port: u16) -> Postgres {
        let (dir, data) = Self::dirs();
        let mut copy = pg("pg_basebackup");
        copy.args(["-h", &primary.addr.ip().to_string()])
            .args(["-p", &primary.addr.port().to_string()])
            .args(["-U", "postgres", "-R", "-X", "stream", "-D"])
            .arg(&data);
        run("pg_basebackup", copy);
        Self::serve(ip, port, dir, data)
    }

    fn dirs() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let data = dir.path().join("data");
        if is_root() {
            // The server's user must own its directories and reach them.
            run("chown", {
                let mut c = Command::new("chown");
                c.arg("postgres:postgres").arg(dir.path());
                c
            });
            run("chmod", {
                let mut c = Command::new("chmod");
                c.arg("755").arg(dir.path());
                c
            });
        }
        (dir, data)
    }

    fn serve(ip: Ipv4Addr, port: u16, dir: tempfile::TempDir, data: PathBuf) -> Postgres {
        let addr = SocketAddr::new(ip.into(), port);
        let mut cmd = pg("postgres");
        cmd.arg("-D")
            .arg(&data)
            .args(["-c", &format!("listen_addresses={ip}")])
            .args(["-c", &format!("port={port}")])
            .args([
                "-c",
                &format!("unix_socket_directories={}", dir.path().display()),
            ])
            .args(["-c", "fsync=off"]);
        // Local and loopback connections trusted (initdb's default for the primary; the
        // standby's copy has the same file).
        let proc = Proc::spawn("postgres", cmd, dir.path().join("log"));
        let mut pg = Postgres {
            addr,
            data,
            proc: Some(proc),
            _dir: dir,
        };
        pg.wait_ready();
        pg
    }

    /// `pg_isready` answers `accepting connections`.
    fn wait_ready(&mut self) {
        let addr = self.addr;
        let log = self.proc.as_ref().map(|p| p.log.clone());
        wait_until(
            &format!("postgres at {addr} to accept connections"),
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                let out = Command::new(Path::new(PG_BIN).join("pg_isready"))
                    .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
                    .output()
                    .map_err(|e| e.to_string())?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "{} (log so far: {})",
                        String::from_utf8_lossy(&out.stdout).trim(),
                        log.as_ref()
                            .and_then(|l| std::fs::read_to_string(l).ok())
                            .unwrap_or_default()
                    ))
                }
            },
        );
    }

    /// `sql` run by `psql` as `postgres`; its output, unaligned and without headers.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(Path::new(PG_BIN).join("psql"))
            .args(["-h", &self.addr.ip().to_string()])
            .args(["-p", &self.addr.port().to_string()])
            .args(["-U", "postgres", "-tAc", sql])
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Stops the server at once (SIGKILL to its process group).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }
}
