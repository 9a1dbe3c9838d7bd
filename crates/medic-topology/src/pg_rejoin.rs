//! A service's `rejoin`: how medic makes a PostgreSQL server that was failed away from a
//! standby of the primary again — stopped, rewound with `pg_rewind` (else, if allowed, copied
//! afresh with `pg_basebackup`, the old data directory moved aside, never deleted), and
//! started as a standby streaming from the primary (docs/topology.md, "Services").

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::duration::Dur;

/// How an old PostgreSQL primary (or a standby back from a loss) is made a standby again,
/// over SSH on its machine, as root.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PgRejoin {
    /// `rewind` (default): `pg_rewind` only; a server it cannot rewind stays out, alerted.
    /// `rewind_or_copy`: if `pg_rewind` fails, the data directory is moved aside (renamed
    /// `DATA_DIR.medic-YYYYmmddTHHMMSSZ`, never deleted) and copied from the primary with
    /// `pg_basebackup`.
    #[serde(default)]
    pub method: RejoinMethod,
    /// The server's data directory on the machine (`/var/lib/postgresql/15/main`).
    pub data_dir: PathBuf,
    /// Where PostgreSQL's programs are on the machine (`/usr/lib/postgresql/15/bin`).
    pub bin_dir: PathBuf,
    /// The operating-system user that owns the data directory and runs the server.
    #[serde(default = "default_os_user")]
    pub os_user: String,
    /// The database role `pg_rewind` and `pg_basebackup` log in to the primary as, which the
    /// standby then replicates as: a superuser, or a role with REPLICATION and the rights
    /// pg_rewind needs. Its password, if the primary asks for one, is in `os_user`'s
    /// `~/.pgpass` on the machine (medic sends none).
    #[serde(default = "default_user")]
    pub user: String,
    /// The command (run as root) that starts the server (none: `pg_ctl start` as `os_user`,
    /// its output in `DATA_DIR/medic-start.log`). `systemctl start postgresql@15-main` for a
    /// Debian cluster.
    #[serde(default)]
    pub start: Option<String>,
    /// The command (run as root) that stops it, if it runs (none: `pg_ctl stop -m fast` as
    /// `os_user`).
    #[serde(default)]
    pub stop: Option<String>,
    /// The server's configuration file, where it is not in the data directory (Debian:
    /// `/etc/postgresql/15/main/postgresql.conf`): given to `pg_rewind --config-file`, which
    /// may have to start the server alone to finish a crash recovery first.
    #[serde(default)]
    pub config_file: Option<PathBuf>,
    /// How long the whole step may take on the machine (a copy of a large database takes
    /// long).
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
}

/// What is done when `pg_rewind` cannot rewind the server.
#[derive(
    Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RejoinMethod {
    /// Nothing more: the server stays out and the step's failure says why.
    #[default]
    Rewind,
    /// A fresh copy from the primary (`pg_basebackup`), the old data moved aside.
    RewindOrCopy,
}

impl RejoinMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            RejoinMethod::Rewind => "rewind",
            RejoinMethod::RewindOrCopy => "rewind_or_copy",
        }
    }
}

fn default_os_user() -> String {
    "postgres".to_owned()
}

fn default_user() -> String {
    "postgres".to_owned()
}

fn default_timeout() -> Dur {
    Dur::from_secs(600)
}

impl PgRejoin {
    /// The start command: the one given, else `pg_ctl start` as `os_user`.
    pub fn start_command(&self) -> String {
        self.start.clone().unwrap_or_else(|| {
            format!(
                "runuser -u {u} -- {b}/pg_ctl -D {d} -l {d}/medic-start.log -w -t 120 start",
                u = self.os_user,
                b = self.bin_dir.display(),
                d = self.data_dir.display()
            )
        })
    }

    /// The stop command: the one given, else `pg_ctl stop -m fast` as `os_user`.
    pub fn stop_command(&self) -> String {
        self.stop.clone().unwrap_or_else(|| {
            format!(
                "runuser -u {u} -- {b}/pg_ctl -D {d} -m fast -w -t 120 stop",
                u = self.os_user,
                b = self.bin_dir.display(),
                d = self.data_dir.display()
            )
        })
    }
}

/// Whether `p` is an absolute path of plain characters, safe in a shell command and in
/// medic's messages: letters, digits and `/._-+@`.
pub fn is_plain_path(p: &Path) -> bool {
    let s = p.to_string_lossy();
    p.is_absolute()
        && s.len() > 1
        && !s.ends_with('/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+@".contains(c))
        && !s.split('/').any(|part| part == "..")
}

/// Whether `s` is a user name safe unquoted in a shell command and a conninfo string.
pub fn is_plain_user(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !s.starts_with('-')
}
