//! The shell scripts the `pg-stop` and `pg-rejoin` steps run on a machine (as root, over
//! SSH): one text each, so that `medic plan` prints exactly what `medic run` sends.
//!
//! `pg-stop` (the fence of a PostgreSQL primary, when the service has `rejoin`): the server
//! stopped if it runs — the `stop` command within 30 s (2 s after its shutdown checkpoint if
//! it then only waits for its WAL senders), else `pg_ctl stop -m immediate`, else SIGKILL —
//! and read back stopped (`pg_ctl status`, nothing on the port); then
//! `standby.signal` and medic's mark written, so that a restart brings it back read-only.
//!
//! `pg-rejoin`, in order, each part a no-op when already done, so a step run again after a
//! controller's restart goes on from where it stopped:
//! 1. one rejoin at a time on the machine (a lock); a server in recovery medic did not fence
//!    left as it is;
//! 2. the server stopped as above; one with a `standby.signal` not shut down cleanly recovered
//!    in standby mode, privately, so that nothing is written past the fork;
//! 3. `pg_rewind` from the primary, `-R` writing `standby.signal` and `primary_conninfo` (a
//!    server that needs no rewind, a standby that was only behind, gets them too), with the
//!    `application_name` of the server's earlier `primary_conninfo`;
//! 4. with `rewind_or_copy`, if that failed: the data directory moved aside (never deleted)
//!    and copied afresh with `pg_basebackup -R`;
//! 5. the server started.
//!
//! `pg-start` undoes `pg-stop` when a switchover failed before its promotion: the old
//! primary, still the recorded one, started again as the primary — only if it is the server
//! medic fenced, still on its timeline.
//!
//! Lines on standard output starting `medic: ` say what was done; the step's summary is made
//! of them.

use medic_topology::pg_rejoin::{PgRejoin, RejoinMethod};

/// Where the lock is: one rejoin of any server at a time on a machine.
const LOCK: &str = "/run/medic-pg-rejoin.lock";
/// What the rejoin script says (after `medic: `) of a server it leaves as it is: a standby,
/// running (or in a recovery of any kind), that medic did not fence.
pub const A_STANDBY: &str = "the server runs as a standby already";
/// The file `pg-stop` leaves in the data directory beside the `standby.signal` it writes: the
/// server is an old primary medic fenced, not a standby, even when something restarted it.
const FENCED: &str = "medic-fenced";

/// A shell function: the `application_name` of the connection string given (the last one,
/// as libpq takes it), or nothing if it has none, or if the string has a backslash anywhere
/// (an escape the pattern cannot follow) or the name a quote (then `cluster_name`, else
/// `walreceiver`, names the standby).
const APP_OF: &str = r#"app_of() { case "$1" in *\\*) return 0;; esac; printf '%s\n' "$1" | sed -n -E "s/^(.*[[:space:]])?application_name[[:space:]]*=[[:space:]]*('([^'\\\\]+)'|([^'\\\\[:space:]]+))([[:space:]].*)?$/\3\4/p" | head -n 1; }
"#;

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
    let config = r
        .config_file
        .as_ref()
        .map(|c| format!(" --config-file={}", q(&c.display().to_string())))
        .unwrap_or_default();
    format!(
        r#"{prelude}SRC={src}
exec 9>{lock}
flock -n 9 || {{ echo "medic: another rejoin runs on this machine" >&2; exit 8; }}
# The primary's system identifier: the data must be a copy of the same cluster.
SYSID=$(as_u "$B/psql" "$SRC replication=database" -AtXc IDENTIFY_SYSTEM 2>/dev/null | cut -d'|' -f1)
[ -n "$SYSID" ] || {{ echo "medic: the primary did not answer IDENTIFY_SYSTEM as $(printf %s "$SRC" | sed 's/.*user=\([^ ]*\).*/\1/') (a role with REPLICATION, allowed by its pg_hba.conf): nothing done" >&2; exit 10; }}
if [ -f "$D/PG_VERSION" ]; then
  have=$(controldata 'Database system identifier')
  [ "$have" = "$SYSID" ] || {{ echo "medic: $D holds another cluster (system identifier ${{have:-unreadable}}, the primary's $SYSID): nothing done" >&2; exit 10; }}
fi
# A server in recovery is left as it is, unless it is an old primary medic fenced and
# something restarted (its standby.signal is pg-stop's: it follows no primary).
if ! fenced && {{ [ -f "$D/standby.signal" ] || [ -f "$D/recovery.signal" ]; }} && running; then rm -f "$D.medic-application-name"; echo "medic: {a_standby}"; exit 0; fi
{stop}done=no
MARK="$SYSID {primary_ip}:{port}"
# The name the server streamed under (`synchronous_standby_names` may name it): its earlier
# primary_conninfo's application_name, read once, before a rewind or a copy replaces its
# configuration with the primary's, and kept beside the data directory until the server runs
# as a standby (a step run again after a failure finds it there, not in what a rewind cut
# short left); given to the primary_conninfo the rewind or the copy writes.
{app_of}NAMEF="$D.medic-application-name"
APP=
if [ -f "$NAMEF" ]; then
  APP=$(head -n 1 "$NAMEF")
elif [ -f "$D/PG_VERSION" ]; then
  if was=$(as_u "$B/postgres" -D "$D" -C primary_conninfo{pg_config} 2>/dev/null); then
    APP=$(app_of "$was")
    # (Created afresh, never through a link someone left there: noclobber opens it O_EXCL.)
    rm -f "$NAMEF" && (set -C; printf '%s\n' "$APP" > "$NAMEF") || {{ echo "medic: could not write $NAMEF" >&2; exit 6; }}
  else
    echo "medic: its earlier primary_conninfo could not be read (postgres -C): no application_name kept"
  fi
fi
case "$APP" in *"'"*|*\\*) APP=;; esac
[ -z "$APP" ] || echo "medic: its application_name $APP kept"
RSRC=$SRC; [ -z "$APP" ] || RSRC="$SRC application_name='$APP'"
# A server not shut down cleanly (an immediate shutdown, a crash) is recovered before
# pg_rewind reads it. With a standby.signal (pg-stop's, or a standby's) in standby mode,
# privately (no network, no upstream, no archive), started and stopped: a standby writes no
# WAL, so nothing is added past the fork, and the signal never leaves (pg_rewind's own crash
# recovery would need it gone). Not one a rewind left unfinished (its backup_label).
if [ -f "$D/PG_VERSION" ] && [ -f "$D/standby.signal" ] && [ ! -f "$D/backup_label" ]; then
  case "$(controldata 'Database cluster state')" in
    "shut down"|"shut down in recovery") ;;
    *)
      P=/run/medic-pg-recover
      install -d -o "$U" -m 700 "$P" || exit 6
      # (Its own recovery targets overridden: it must neither stop short nor promote.)
      if ! {{ as_u "$B/pg_ctl" -D "$D" -o "-c listen_addresses= -c unix_socket_directories=$P -c hot_standby=on -c primary_conninfo= -c restore_command= -c archive_mode=off -c recovery_target= -c recovery_target_lsn= -c recovery_target_name= -c recovery_target_time= -c recovery_target_xid= -c recovery_target_action=pause{config_opt}" -l "$P/log" -w -t 240 start 9>&- >&2 </dev/null \
        && as_u "$B/pg_ctl" -D "$D" -m fast -w -t 60 stop 9>&- >&2; }}; then
        as_u "$B/pg_ctl" -D "$D" -m immediate -w -t 20 stop 9>&- >/dev/null 2>&1
        tail -n 5 "$P/log" >&2
        echo "medic: the server was not shut down cleanly and could not be recovered in standby mode within 5 minutes: nothing rewound" >&2
        exit 4
      fi
      echo "medic: recovered in standby mode first (it was not shut down cleanly)";;
  esac
fi
if [ -f "$D/PG_VERSION" ] && [ -f "$D/standby.signal" ] && ! fenced && [ "$(cat "$D/medic-rejoined" 2>/dev/null)" = "$MARK" ]; then
  case "$(controldata 'Database cluster state')" in
    "in archive recovery"|"shut down in recovery") echo "medic: made a standby of the primary before (its start did not happen)"; done=yes;;
  esac
fi
if [ $done = no ] && [ -f "$D/PG_VERSION" ]; then
  # The old primary's WAL is kept before anything rewinds it (its last writes, never
  # replicated, are there), once per checkpoint: unless the dry run says no rewind is needed
  # (a copy made in vain is dropped when the rewind says so).
  kept_note=; made=no
  if dry=$(as_u env LC_ALL=C "$B/pg_rewind" -D "$D" --source-server="$SRC"{config} --dry-run 2>&1) && case "$dry" in *"no rewind required"*) true;; *) false;; esac; then
    :
  else
    fork=$(printf '%s\n' "$dry" | sed -n 's/.*servers diverged at WAL location \([0-9A-Fa-f/]*\) on timeline \([0-9]*\).*/ at \1 on timeline \2/p' | tail -n 1)
    kept="$D.medic-wal-tl$(controldata "Latest checkpoint's TimeLineID")-$(controldata 'Latest checkpoint location' | tr / -)"
    if [ -d "$kept" ]; then
      kept_note="its WAL kept in $kept before"
    else
      mkdir "$kept" && cp -a "$D/pg_wal/." "$kept/" || {{ rm -rf "$kept"; echo "medic: could not keep $D/pg_wal in $kept: nothing rewound" >&2; exit 5; }}
      made=yes; kept_note="diverged from the primary$fork; its WAL kept in $kept"
    fi
  fi
  if out=$(as_u env LC_ALL=C "$B/pg_rewind" -D "$D" --source-server="$RSRC"{config} -R 2>&1); then
    printf '%s\n' "$MARK" > "$D/medic-rejoined" && chown "$U" "$D/medic-rejoined" && rm -f "$D/{fenced}"
    case "$out" in
      *"no rewind required"*) if [ $made = yes ]; then rm -rf "$kept"; fi; echo "medic: no rewind needed";;
      *) if [ -n "$kept_note" ]; then echo "medic: $kept_note"; fi; echo "medic: rewound from the primary";;
    esac
    done=yes
  elif [ -n "$kept_note" ]; then echo "medic: $kept_note"; fi
  if [ $done = yes ]; then
    :
  elif [ {copy} = yes ]; then
    printf '%s\n' "$out" | tail -n 3 >&2
    [ "$(as_u "$B/psql" "$SRC" -AtXc 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ] || {{ echo "medic: pg_rewind failed and the primary does not answer as one now: nothing moved" >&2; exit 4; }}
    [ -z "$(ls -A "$D/pg_tblspc" 2>/dev/null)" ] || {{ echo "medic: pg_rewind failed, and $D has tablespaces, which medic does not copy: rebuild the server by hand" >&2; exit 5; }}
    if running; then echo "medic: the server runs again: nothing moved" >&2; exit 3; fi
    aside="$D.medic-$(date -u +%Y%m%dT%H%M%SZ)"
    mv "$D" "$aside" || {{ echo "medic: pg_rewind failed and $D could not be moved aside" >&2; exit 5; }}
    echo "medic: pg_rewind failed; the old data moved aside to $aside"
  else
    printf '%s\n' "$out" | tail -n 3 >&2
    echo "medic: pg_rewind failed; the server is left stopped (method rewind copies nothing: rebuild it from the primary with pg_basebackup, or set rejoin.method: rewind_or_copy)" >&2
    exit 4
  fi
fi
if [ $done = no ] && [ ! -f "$D/PG_VERSION" ]; then
  [ {copy} = yes ] || {{ echo "medic: no PostgreSQL data in $D (method rewind: nothing copied)" >&2; exit 4; }}
  install -d -o "$U" -m 700 "$D" || exit 6
  # (Not under its name: the copy's WAL stream would take a synchronous standby's place, and
  # hold the primary's commits, for as long as it runs. The name is added once it is done.)
  as_u "$B/pg_basebackup" -D "$D" -d "$SRC" -R -X stream -c fast >&2 || {{ echo "medic: pg_basebackup from the primary failed" >&2; exit 6; }}
  echo "medic: copied afresh from the primary"
  if [ -n "$APP" ]; then
    got=$(as_u "$B/postgres" -D "$D" -C primary_conninfo{pg_config} 2>/dev/null) && [ -n "$got" ] \
      && printf "primary_conninfo = '%s'\n" "$(printf '%s' "$got application_name='$APP'" | sed -e 's/\\/\\\\/g' -e "s/'/''/g")" >> "$D/postgresql.auto.conf" \
      || echo "medic: could not add application_name $APP to the copy's primary_conninfo: it streams as cluster_name or walreceiver names it"
  fi
fi
printf '%s\n' "$MARK" > "$D/medic-rejoined" && chown "$U" "$D/medic-rejoined" && rm -f "$D/{fenced}"
# Replication slots are the operator's: a slot name copied with the primary's configuration
# would keep the server from streaming.
sed -i '/^[[:space:]]*primary_slot_name[[:space:]]*=/d' "$D/postgresql.auto.conf" 2>/dev/null
LOG=/run/medic-pg-start.log
sh -c {start} 9>&- </dev/null >"$LOG" 2>&1 || {{ tail -n 5 "$LOG" >&2; echo "medic: the start command failed" >&2; exit 7; }}
rm -f "$NAMEF"
echo "medic: started as a standby"
"#,
        prelude = prelude(r),
        src = q(&source),
        lock = LOCK,
        stop = stop_block(r),
        start = q(&r.start_command()),
        copy = if copy { "yes" } else { "no" },
        fenced = FENCED,
        a_standby = A_STANDBY,
        app_of = APP_OF,
        pg_config = r
            .config_file
            .as_ref()
            .map(|c| format!(" -c config_file={}", q(&c.display().to_string())))
            .unwrap_or_default(),
        config_opt = r
            .config_file
            .as_ref()
            .map(|c| format!(" -c config_file={}", c.display()))
            .unwrap_or_default(),
    )
}

/// The script that stops the server in `r.data_dir` if it runs (the fence of a primary), and
/// reads back that nothing listens on `port` any more: a `data_dir` that is not the serving
/// server's (a typo, an old cluster beside an upgraded one) never passes for a fence. The
/// fence outlasts a restart (systemd, a reboot): a `standby.signal` written beside medic's
/// mark brings the server back in recovery, read-only, until `pg-rejoin` makes it a standby
/// of the primary.
pub fn stop_script(r: &PgRejoin, port: u16) -> String {
    format!(
        r#"{prelude}[ -f "$D/PG_VERSION" ] || {{ echo "medic: no PostgreSQL data in $D: it cannot be the server's, which is not stopped" >&2; exit 9; }}
command -v ss >/dev/null || {{ echo "medic: ss (iproute2) is needed to see that port {port} is free" >&2; exit 9; }}
if running; then
{stop}else
  echo "medic: the server was not running"
fi
if ss -Hltn "sport = :{port}" | grep -q .; then echo "medic: the server in $D is stopped but something still listens on port {port} (is data_dir the serving server's?)" >&2; exit 3; fi
# Where its WAL ends, for a switchover's standby to catch up to: after a clean shutdown, its
# checkpoint, which the fence mark records. A server fenced so and started since came back
# read-only; stopped again ("shut down in recovery"), it still ends there only if its
# checkpoint is still the recorded one. (The mark read is an earlier run's: this run's is
# written below. After a stop that was not clean, no end is recorded: nobody knows it.)
st=$(controldata "Database cluster state"); at=$(controldata "Latest checkpoint location")
prior=$(fenced && sed -n 's/^tl [0-9]* end \([0-9A-Fa-f]*\/[0-9A-Fa-f]*\)$/\1/p' "$D/{fenced}")
echo "medic-wal: $st|$at|$prior"
end=
if [ -z "$at" ]; then :; elif [ "$st" = "shut down" ]; then end=" end $at"; elif [ "$st" = "shut down in recovery" ] && [ -n "$prior" ] && [ "$prior" = "$at" ]; then end=" end $at"; fi
tl=$(controldata "Latest checkpoint's TimeLineID")
# Not a standby medic made, whatever it was: the next rejoin rewinds it, under the name its
# configuration gives now (not one an earlier rejoin kept).
rm -f "$D/medic-rejoined" "$D.medic-application-name"
if [ -f "$D/standby.signal" ] && ! fenced; then
  echo "medic: its data is a standby's (standby.signal)"
elif [ -z "$tl" ]; then
  # No timeline to name: no new mark (one naming none would pass for any). An earlier run's
  # mark keeps its timeline: a read that failed now says nothing against it, and `fenced`
  # honours it only while the server is still on its timeline. But not its end: where the
  # WAL ends now is not known, and a later stop must not take that old end for it. The
  # signal keeps it read-only.
  # (Written by the server's user, so that it owns the new mark, then moved over the old.)
  if [ -s "$D/{fenced}" ]; then {{ m=$(sed 's/ end .*//' "$D/{fenced}") && as_u sh -c 'printf "%s\n" "$1" > "$2"' sh "$m" "$D/{fenced}.new" && mv "$D/{fenced}.new" "$D/{fenced}"; }} || {{ rm -f "$D/{fenced}.new"; echo "medic: could not take the recorded end off the fence mark: a later stop may take it for where the WAL ends" >&2; }}; fi
  if : > "$D/standby.signal" && chown "$U" "$D/standby.signal"; then
    echo "medic: standby.signal written (pg_controldata named no timeline, so no new fence mark): restarted, it comes back read-only"
  else
    echo "medic: could not write $D/standby.signal: restarted, it would come back writable"
  fi
elif printf 'tl %s%s\n' "$tl" "$end" > "$D/{fenced}" && : > "$D/standby.signal" && chown "$U" "$D/{fenced}" "$D/standby.signal"; then
  echo "medic: standby.signal written: restarted, it comes back read-only"
else
  echo "medic: could not write $D/standby.signal: restarted, it would come back writable"
fi
"#,
        prelude = prelude(r),
        stop = stop_block(r),
        fenced = FENCED,
    )
}

/// The script that undoes `pg-stop` on the server in `r.data_dir` when its switchover failed
/// before anything was promoted (`pg-start`): a server that runs out of recovery is the
/// primary already and is left as it is (a stale mark removed); one medic fenced (its mark,
/// on the timeline it is still on: nothing was promoted from it, nor has it followed anything
/// since — asked again once it is stopped, when its control file is current) loses its
/// `standby.signal` and is started, and its mark goes only once it has started, so a start
/// that fails can be tried again; any other is not touched (exit 4): a server medic did not
/// fence is not made a primary by medic.
pub fn start_script(r: &PgRejoin) -> String {
    let refuse = format!(
        r#"{{ echo "medic: the server in $D is not an old primary medic fenced on the timeline it is on (no {FENCED} mark naming it): it is not started as a primary; start it by hand if it should be one" >&2; exit 4; }}"#
    );
    format!(
        r#"{prelude}[ -f "$D/PG_VERSION" ] || {{ echo "medic: no PostgreSQL data in $D: nothing started" >&2; exit 9; }}
if running && [ ! -f "$D/standby.signal" ] && [ ! -f "$D/recovery.signal" ]; then
  rm -f "$D/{fenced}"
  echo "medic: the server runs as the primary already"; exit 0
fi
fenced || {refuse}
{stop}fenced || {refuse}
rm -f "$D/standby.signal" || {{ echo "medic: could not remove $D/standby.signal: nothing started" >&2; exit 5; }}
LOG=$(mktemp) || exit 6
sh -c {start} 9>&- </dev/null >"$LOG" 2>&1 || {{ tail -n 5 "$LOG" >&2; rm -f "$LOG"; echo "medic: the start command failed (its fence mark is kept: the step may be tried again)" >&2; exit 7; }}
rm -f "$LOG" "$D/{fenced}"
echo "medic: its fence undone (standby.signal and mark removed), started as the primary again"
"#,
        prelude = prelude(r),
        stop = stop_block(r),
        start = shell_quote(&r.start_command()),
        fenced = FENCED,
    )
}

/// The variables and functions both scripts start with. `running` exits (9) when
/// `pg_ctl status` can tell neither way (the data directory unreadable by `os_user`): medic
/// never goes on taking a server for stopped that it could not see.
fn prelude(r: &PgRejoin) -> String {
    let q = shell_quote;
    format!(
        r#"set -u
trap '' PIPE
D={}; B={}; U={}
as_u() {{ runuser -u "$U" -- "$@"; }}
running() {{
  [ -f "$D/PG_VERSION" ] || [ -f "$D/postmaster.pid" ] || return 1
  as_u "$B/pg_ctl" -D "$D" status >/dev/null 2>&1
  case $? in 0) return 0;; 3) return 1;; esac
  echo "medic: pg_ctl status cannot tell whether a server runs in $D (is it readable by $U?): nothing done" >&2
  exit 9
}}
controldata() {{ as_u env LC_ALL=C "$B/pg_controldata" "$D" 2>/dev/null | sed -n "s/^$1: *//p"; }}
# An old primary medic fenced (pg-stop's mark, naming the timeline it was on then and, after a
# clean stop, where its WAL ended): still on it, so neither promoted since nor made to follow
# anything.
# Its postmaster stopped by a signal (state T or t): no shutdown can begin until something
# continues it; SIGKILL ends it at once.
frozen() {{ f=$(head -n 1 "$D/postmaster.pid" 2>/dev/null); case "$f" in ''|*[!0-9]*) return 1;; esac; case "$(sed -E 's/^[0-9]+ \(.*\) (.) .*/\1/' "/proc/$f/stat" 2>/dev/null)" in T|t) return 0;; esac; return 1; }}
fenced() {{ t=$(controldata "Latest checkpoint's TimeLineID"); [ -n "$t" ] || return 1; case "$(cat "$D/{fenced}" 2>/dev/null)" in "tl $t"|"tl $t end "*) return 0;; esac; return 1; }}
"#,
        q(&r.data_dir.display().to_string()),
        q(&r.bin_dir.display().to_string()),
        q(&r.os_user),
        fenced = FENCED,
    )
}

/// Stops the server if it runs: the `stop` command within 30 s, else an immediate shutdown
/// (a server that does not stop cleanly is a primary that could still take writes), else
/// SIGKILL to the postmaster and its children; exits 3 if it still runs. A postmaster seen
/// stopped by a signal for 1 s (it can begin no shutdown) is killed at once, without the
/// waits: a hung primary no longer delays its standby's promotion by 50 s. A server whose
/// shutdown checkpoint is written (its data clean, where its WAL ends known) but that still
/// runs 2 s later is waiting for its WAL senders to reach standbys that do not answer — a
/// standby cut off holds a fast shutdown up to `wal_sender_timeout` (a minute by default) —
/// and is shut down at once instead: nothing is lost, the checkpoint is its last record.
fn stop_block(r: &PgRejoin) -> String {
    format!(
        r#"if running; then
  sr=$(mktemp) || exit 6
  ( timeout 30 sh -c {stop} >&2 </dev/null; echo $? > "$sr" ) 9>&- &
  sp=$!
  i=0; clean=0; still=0
  while running && [ ! -s "$sr" ] && [ $i -lt 300 ] && [ $clean -lt 20 ] && [ $still -lt 10 ]; do
    sleep 0.1; i=$((i+1))
    case "$(controldata 'Database cluster state')" in "shut down"|"shut down in recovery") clean=$((clean+1));; *) clean=0;; esac
    if frozen; then still=$((still+1)); else still=0; fi
  done
  if running; then
    # (Its `timeout` passes the signal on to the stop command.)
    [ -s "$sr" ] || {{ pkill -TERM -P "$sp" 2>/dev/null; kill "$sp" 2>/dev/null; }}
    if [ $still -ge 10 ]; then
      echo "medic: its postmaster was stopped by a signal (SIGSTOP, a debugger) for 1 s: it can neither stop nor shut down"
    elif [ $clean -ge 20 ]; then
      echo "medic: its shutdown checkpoint was written 2 s ago, but it still waits for its WAL senders (a standby that does not answer?)" >&2
    else
      echo "medic: the stop command failed or took over 30 s" >&2
    fi
  fi
  rm -f "$sr"
  if running; then
    if [ $still -lt 10 ] && frozen && sleep 0.2 && frozen; then
      still=10; echo "medic: its postmaster is stopped by a signal (SIGSTOP, a debugger): it cannot shut down"
    fi
    [ $still -ge 10 ] || as_u "$B/pg_ctl" -D "$D" -m immediate -w -t 20 stop 9>&- >&2
    if running; then
      # It does not even stop at once (its processes stopped by a signal, or stuck): killed,
      # the postmaster and every process it started, as a crash would.
      pid=$(head -n 1 "$D/postmaster.pid" 2>/dev/null)
      case "$pid" in ''|*[!0-9]*) ;; *) pkill -KILL -P "$pid"; kill -KILL "$pid";; esac
      i=0; while running && [ $i -lt 20 ]; do sleep 0.5; i=$((i+1)); done
      if running; then echo "medic: the server still runs after an immediate shutdown and SIGKILL" >&2; exit 3; fi
      echo "medic: killed the server (SIGKILL: it did not stop)"
    else
      echo "medic: stopped the server (immediate shutdown)"
    fi
  else
    echo "medic: stopped the server"
  fi
fi
"#,
        stop = shell_quote(&r.stop_command())
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
mod tests;
