//! The shell script a `pg-rejoin` step runs on a machine (as root, over SSH): one text, so
//! that `medic plan` prints exactly what `medic run` sends.
//!
//! In order, each part a no-op when already done, so a step run again after a controller's
//! restart goes on from where it stopped:
//! 1. one rejoin at a time on the machine (a lock);
//! 2. the server stopped if it runs (a stop that leaves it running fails the step);
//! 3. `pg_rewind` from the primary, `-R` writing `standby.signal` and `primary_conninfo` (a
//!    server that needs no rewind, a standby that was only behind, gets them too);
//! 4. with `rewind_or_copy`, if that failed: the data directory moved aside (never deleted)
//!    and copied afresh with `pg_basebackup -R`;
//! 5. the server started.
//!
//! Lines on standard output starting `medic: ` say what was done; the step's summary is made
//! of them.

use medic_topology::pg_rejoin::{PgRejoin, RejoinMethod};

/// Where the lock is: one rejoin of any server at a time on a machine.
const LOCK: &str = "/run/medic-pg-rejoin.lock";

/// The script that makes the server in `r.data_dir` a standby of the primary at
/// `primary_ip:port`, logging in to `database` there as `r.user`.
pub fn rejoin_script(r: &PgRejoin, primary_ip: &str, port: u16, database: &str) -> String {
    let q = shell_quote;
    let copy = r.method == RejoinMethod::RewindOrCopy;
    let source = format!(
        "host={primary_ip} port={port} user={} dbname={} connect_timeout=10",
        r.user,
        conninfo_value(database)
    );
    format!(
        r#"set -u
D={d}; B={b}; U={u}; SRC={src}
as_u() {{ runuser -u "$U" -- "$@"; }}
exec 9>{lock}
flock -n 9 || {{ echo "medic: another rejoin runs on this machine" >&2; exit 8; }}
if as_u "$B/pg_ctl" -D "$D" status >/dev/null 2>&1; then
  {stop} >&2 || {{ echo "medic: the stop command failed" >&2; exit 3; }}
  if as_u "$B/pg_ctl" -D "$D" status >/dev/null 2>&1; then echo "medic: the server still runs after the stop command" >&2; exit 3; fi
  echo "medic: stopped the server"
fi
if [ -f "$D/PG_VERSION" ]; then
  if out=$(as_u "$B/pg_rewind" -D "$D" --source-server="$SRC" -R 2>&1); then
    case "$out" in *"no rewind required"*) echo "medic: no rewind needed";; *) echo "medic: rewound from the primary";; esac
  elif [ {copy} = yes ]; then
    echo "$out" | tail -n 3 >&2
    aside="$D.medic-$(date -u +%Y%m%dT%H%M%SZ)"
    mv "$D" "$aside" || {{ echo "medic: pg_rewind failed and $D could not be moved aside" >&2; exit 5; }}
    echo "medic: pg_rewind failed; the old data moved aside to $aside"
  else
    echo "$out" | tail -n 3 >&2
    echo "medic: pg_rewind failed; the server is left stopped (method rewind copies nothing: rebuild it from the primary with pg_basebackup, or set rejoin.method: rewind_or_copy)" >&2
    exit 4
  fi
fi
if [ ! -f "$D/PG_VERSION" ]; then
  [ {copy} = yes ] || {{ echo "medic: no PostgreSQL data in $D (method rewind: nothing copied)" >&2; exit 4; }}
  install -d -o "$U" -m 700 "$D" || exit 6
  as_u "$B/pg_basebackup" -D "$D" -d "$SRC" -R -X stream -c fast >&2 || {{ echo "medic: pg_basebackup from the primary failed" >&2; exit 6; }}
  echo "medic: copied afresh from the primary"
fi
{start} >&2 || {{ echo "medic: the start command failed" >&2; exit 7; }}
echo "medic: started as a standby"
"#,
        d = q(&r.data_dir.display().to_string()),
        b = q(&r.bin_dir.display().to_string()),
        u = q(&r.os_user),
        src = q(&source),
        lock = LOCK,
        stop = r.stop_command(),
        start = r.start_command(),
        copy = if copy { "yes" } else { "no" },
    )
}

/// Quotes `s` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A libpq conninfo value: as it is if plain, else single-quoted with `\` and `'` escaped.
fn conninfo_value(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        v.to_owned()
    } else {
        format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(method: RejoinMethod) -> PgRejoin {
        serde_json::from_value(serde_json::json!({
            "method": method.as_str(),
            "data_dir": "/var/lib/pg",
            "bin_dir": "/usr/lib/postgresql/15/bin",
        }))
        .unwrap()
    }

    #[test]
    fn the_script_rewinds_from_the_primary_and_starts_the_server() {
        let s = rejoin_script(&settings(RejoinMethod::Rewind), "10.0.0.2", 5432, "app");
        assert!(
            s.contains("SRC='host=10.0.0.2 port=5432 user=postgres dbname=app connect_timeout=10'")
        );
        assert!(s.contains(r#"as_u "$B/pg_rewind" -D "$D" --source-server="$SRC" -R"#));
        assert!(s.contains("runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D /var/lib/pg -m fast -w -t 120 stop"));
        assert!(s.contains("-l /var/lib/pg/medic-start.log -w -t 120 start"));
        // Never a copy without rewind_or_copy, and never a removal of the data.
        assert!(s.contains("[ no = yes ]"));
        assert!(!s.contains("rm "));
    }

    #[test]
    fn rewind_or_copy_moves_the_old_data_aside_then_copies() {
        let s = rejoin_script(
            &settings(RejoinMethod::RewindOrCopy),
            "10.0.0.2",
            5433,
            "my db",
        );
        assert_eq!(conninfo_value("my db"), "'my db'");
        assert_eq!(conninfo_value(r"it's\"), r"'it\'s\\'");
        assert!(s.contains(r"dbname='\''my db'\''"), "{s}");
        assert!(s.contains("[ yes = yes ]"));
        assert!(s.contains(r#"mv "$D" "$aside""#));
        assert!(s.contains(r#"pg_basebackup" -D "$D" -d "$SRC" -R -X stream"#));
    }

    #[test]
    fn the_script_is_valid_shell() {
        for m in [RejoinMethod::Rewind, RejoinMethod::RewindOrCopy] {
            let s = rejoin_script(&settings(m), "10.0.0.2", 5432, "it's");
            let out = std::process::Command::new("sh")
                .args(["-n", "-c", &s])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
