//! The scripts' text, and their shell functions run by sh.

use std::time::Duration;

use super::*;

/// `app_of` run by sh on `conninfo`.
fn app_of(conninfo: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{APP_OF}app_of \"$1\""))
        .arg("sh")
        .arg(conninfo)
        .output()
        .expect("sh runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

/// The prelude's `frozen` on a data directory whose postmaster.pid names a process that
/// runs, then is stopped by SIGSTOP, then is continued.
#[test]
fn frozen_is_a_postmaster_stopped_by_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = settings(RejoinMethod::Rewind);
    r.data_dir = dir.path().to_path_buf();
    let mut child = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    std::fs::write(
        dir.path().join("postmaster.pid"),
        format!("{}\n/var/lib/pg\n", child.id()),
    )
    .unwrap();
    let frozen = || {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{}if frozen; then echo yes; else echo no; fi",
                prelude(&r)
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let signal = |s: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([s, &child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    };
    assert_eq!(frozen(), "no", "running");
    signal("-STOP");
    // The kernel marks it stopped as the signal is delivered: asked until it says so.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut last = frozen();
    while last != "yes" && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        last = frozen();
    }
    assert_eq!(last, "yes", "stopped by SIGSTOP");
    signal("-CONT");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while last != "no" && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        last = frozen();
    }
    assert_eq!(last, "no", "continued");
    let _ = child.kill();
    let _ = child.wait();
    std::fs::write(dir.path().join("postmaster.pid"), "not a pid\n").unwrap();
    assert_eq!(frozen(), "no", "no pid");
}

#[test]
fn the_application_name_is_read_from_a_connection_string_as_libpq_reads_it() {
    let cases = [
        (
            "user=postgres host=10.0.0.1 application_name=secundus",
            "secundus",
        ),
        ("application_name=secundus port=5432", "secundus"),
        (
            "host=a application_name = 'my app' sslmode=prefer",
            "my app",
        ),
        (
            "user=postgres passfile='/var/lib/postgresql/.pgpass' channel_binding=prefer host=10.77.0.21 port=5432 sslmode=prefer application_name='tertius'",
            "tertius",
        ),
        ("application_name=a host=h application_name=b", "b"),
        ("host=h fallback_application_name=x", ""),
        ("host=h application_name='it\\'s'", ""),
        ("host=h application_name=a\\b", ""),
        ("application_name=a host=h application_name='it\\'s'", ""),
        ("passfile='/x\\y' application_name=b", ""),
        ("", ""),
    ];
    for (conninfo, want) in cases {
        assert_eq!(app_of(conninfo), want, "{conninfo}");
    }
}

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
    assert!(
        s.contains(r#"if was=$(as_u "$B/postgres" -D "$D" -C primary_conninfo 2>/dev/null); then"#)
            && s.contains(r#"NAMEF="$D.medic-application-name""#),
        "the old application_name is read before the rewind: {s}"
    );
    assert!(s.contains(r#"as_u env LC_ALL=C "$B/pg_rewind" -D "$D" --source-server="$RSRC" -R"#));
    assert!(s.contains(
            "( timeout 30 sh -c 'runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D /var/lib/pg -m fast -w -t 120 stop' >&2 </dev/null; echo $? > \"$sr\" ) 9>&- &"
        ));
    assert!(s.contains("-m immediate"));
    assert!(s.contains("-l /var/lib/pg/medic-start.log -w -t 120 start' 9>&-"));
    // Its own cluster only, and the old primary's WAL kept before a rewind.
    assert!(s.contains("IDENTIFY_SYSTEM"));
    assert!(s.contains(r#"cp -a "$D/pg_wal/." "$kept/""#));
    // Never a copy without rewind_or_copy, and never a removal of the data.
    assert!(s.contains("[ no = yes ]"));
    // (the only removals: medic's own copy of the WAL, cut short or made in vain,
    // pg-stop's mark once the server is a standby, the stop's own temporary file, and the
    // kept application_name once the server runs as a standby; never a standby.signal)
    assert_eq!(s.matches("rm ").count(), 8, "{s}");
    assert_eq!(s.matches(r#"rm -f "$NAMEF""#).count(), 2);
    assert_eq!(s.matches(r#"rm -f "$D.medic-application-name""#).count(), 1);
    assert_eq!(s.matches(r#"rm -f "$sr""#).count(), 1);
    assert_eq!(s.matches(r#"rm -rf "$kept";"#).count(), 2);
    assert_eq!(s.matches(r#"rm -f "$D/medic-fenced""#).count(), 2);
    // A server not shut down cleanly is recovered in standby mode, privately, first.
    assert!(s.contains(r#"-o "-c listen_addresses= -c unix_socket_directories=$P -c hot_standby=on -c primary_conninfo= -c restore_command= -c archive_mode=off"#), "{s}");
    assert!(
        s.contains(r#"-c recovery_target_action=pause" -l "$P/log" -w -t 240 start"#),
        "{s}"
    );
    assert!(
        s.contains(r#""$B/pg_ctl" -D "$D" -m immediate -w -t 20 stop 9>&- >/dev/null 2>&1"#),
        "{s}"
    );
    // A server in recovery medic did not fence is left as it is.
    assert!(s.contains(&format!("medic: {A_STANDBY}\"; exit 0")));
}

#[test]
fn the_fence_outlasts_a_restart() {
    let s = stop_script(&settings(RejoinMethod::Rewind), 5432);
    assert!(s.contains(r#"> "$D/medic-fenced" && : > "$D/standby.signal""#));
    assert!(s.contains(r#"rm -f "$D/medic-rejoined""#));
    // Marked only once nothing listens on the port: the data is the server's.
    let port_free = s.find(r#"ss -Hltn "sport = :5432""#).unwrap();
    assert!(port_free < s.find(r#"> "$D/medic-fenced""#).unwrap());
    // A mark names a timeline, and an end only with a position: one pg_controldata did
    // not name is never recorded (a mark "tl " would pass for a fence on any timeline).
    let no_tl = s.find(r#"elif [ -z "$tl" ]; then"#).unwrap();
    assert!(no_tl < s.find(r#"printf 'tl %s%s\n' "$tl" "$end""#).unwrap());
    assert!(s.contains(r#"if [ -z "$at" ]; then :; elif [ "$st" = "shut down" ]"#));
    assert!(s.contains(
        r#"t=$(controldata "Latest checkpoint's TimeLineID"); [ -n "$t" ] || return 1;"#
    ));
}

/// With no timeline read, an earlier run's mark keeps its timeline but loses its end:
/// where the WAL ends now is not known, and the next stop must not take the old end for
/// it. Run by `sh` on a mark in a directory of its own.
#[test]
fn a_kept_mark_loses_its_end() {
    let s = stop_script(&settings(RejoinMethod::Rewind), 5432);
    let no_tl = s.find(r#"elif [ -z "$tl" ]; then"#).unwrap();
    let at = s.find("m=$(sed 's/ end .*//'").unwrap();
    assert!(no_tl < at && at < s.find(r#"printf 'tl %s%s\n'"#).unwrap());
    let line = s[at..].lines().next().unwrap();
    let line = s[..at].rsplit_once('\n').map_or("", |(_, l)| l).to_owned() + line;
    let dir = std::env::temp_dir().join(format!("medic-kept-mark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (before, after) in [("tl 3 end 0/3000028\n", "tl 3\n"), ("tl 3\n", "tl 3\n")] {
        std::fs::write(dir.join(FENCED), before).unwrap();
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("D='{}'; as_u() {{ \"$@\"; }}\n{line}", dir.display()),
            ])
            .output()
            .unwrap();
        assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
        assert_eq!(std::fs::read_to_string(dir.join(FENCED)).unwrap(), after);
        assert!(!dir.join(format!("{FENCED}.new")).exists());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A fake PostgreSQL in a fresh directory for the scripts run under `sh`: `pg_ctl status`
/// says whether `data/running` exists and `pg_ctl ... stop` (the immediate shutdown)
/// removes it; `pg_controldata` names timeline 1 and the state in `data/state`
/// (`in production` if absent); `runuser` runs its command as the caller. Its data
/// directory, and a function running a script there: (exit code, what it said).
struct FakePg {
    dir: std::path::PathBuf,
    data: std::path::PathBuf,
}

impl FakePg {
    fn new(name: &str) -> FakePg {
        let dir = std::env::temp_dir().join(format!("medic-{name}-{}", std::process::id()));
        let (data, bin, path) = (dir.join("data"), dir.join("bin"), dir.join("path"));
        for d in [&data, &bin, &path] {
            std::fs::create_dir_all(d).unwrap();
        }
        let exe = |p: std::path::PathBuf, body: &str| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        exe(path.join("runuser"), "shift 3; exec \"$@\"");
        let d = data.display();
        exe(
            bin.join("pg_ctl"),
            &format!(
                "case \"$*\" in *status*) [ -f {d}/running ] || exit 3;; *stop*) rm -f {d}/running;; esac"
            ),
        );
        exe(
            bin.join("pg_controldata"),
            &format!(
                "echo \"Latest checkpoint's TimeLineID:       1\"; echo \"Database cluster state:               $(cat {d}/state 2>/dev/null || echo 'in production')\""
            ),
        );
        std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
        FakePg { dir, data }
    }

    fn settings(&self, start: &str, stop: &str) -> PgRejoin {
        serde_json::from_value(serde_json::json!({
            "data_dir": self.data, "bin_dir": self.dir.join("bin"), "os_user": "nobody",
            "start": start, "stop": stop,
        }))
        .unwrap()
    }

    fn run(&self, script: &str) -> (Option<i32>, String) {
        let path = self.dir.join("path");
        let out = std::process::Command::new("sh")
            .args(["-c", script])
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    path.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    fn has(&self, f: &str) -> bool {
        self.data.join(f).exists()
    }

    fn set(&self, f: &str, text: Option<&str>) {
        match text {
            Some(t) => std::fs::write(self.data.join(f), t).unwrap(),
            None => {
                let _ = std::fs::remove_file(self.data.join(f));
            }
        }
    }
}

impl Drop for FakePg {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn only_a_server_medic_fenced_is_started_as_the_primary_and_a_failed_start_is_retried() {
    let pg = FakePg::new("pg-start");
    let d = pg.data.display().to_string();
    let started = format!("touch {d}/running");
    let stop = format!("rm -f {d}/running");
    let run = |start: &str| pg.run(&start_script(&pg.settings(start, &stop)));
    // Not medic's fence (no mark, or a mark of another timeline): not touched.
    pg.set("standby.signal", Some(""));
    for mark in [None, Some("tl 2 end 0/3000028\n")] {
        pg.set(FENCED, mark);
        let (code, said) = run(&started);
        assert_eq!(code, Some(4), "{said}");
        assert!(pg.has("standby.signal") && !pg.has("running"), "{said}");
    }
    // Fenced by medic: a start that fails keeps the mark, and the step tried again starts it.
    pg.set(FENCED, Some("tl 1 end 0/3000028\n"));
    let (code, said) = run("false");
    assert_eq!(code, Some(7), "{said}");
    assert!(pg.has(FENCED) && !pg.has("running"), "{said}");
    let (code, said) = run(&started);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("started as the primary again"), "{said}");
    assert!(
        pg.has("running") && !pg.has(FENCED) && !pg.has("standby.signal"),
        "{said}"
    );
    // Restarted read-only by something else (its signal back): stopped, then started.
    pg.set("standby.signal", Some(""));
    pg.set(FENCED, Some("tl 1\n"));
    let (code, said) = run(&started);
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("medic: stopped the server") && pg.has("running"),
        "{said}"
    );
    assert!(!pg.has(FENCED) && !pg.has("standby.signal"), "{said}");
    // Running as the primary: left as it is.
    let (code, said) = run("false");
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("runs as the primary already"), "{said}");
}

/// The stop: a stop command that fails is followed by an immediate shutdown at once; one
/// that hangs after the shutdown checkpoint (its WAL senders waiting for a standby cut
/// off) is cut short 2 s after the checkpoint, not 30 s after the stop began.
#[test]
fn a_stop_waiting_only_for_its_wal_senders_is_cut_short() {
    let pg = FakePg::new("pg-stop");
    let d = pg.data.display().to_string();
    let script = |stop: &str| {
        let r = pg.settings("true", stop);
        format!("{}{}", prelude(&r), stop_block(&r))
    };
    // (What cut it short is in what it said: the checkpoint's 2 s rule prints its own line,
    // never printed when the stop command's 30 s ran out.)
    for (stop, state, said_why) in [
        ("false", None, "the stop command failed"),
        (
            "sleep 60",
            Some("shut down"),
            "its shutdown checkpoint was written 2 s ago",
        ),
    ] {
        pg.set("running", Some(""));
        pg.set("state", state);
        let (code, said) = pg.run(&script(stop));
        assert_eq!(code, Some(0), "{said}");
        assert!(said.contains(said_why), "{said}");
        assert!(
            said.contains("stopped the server (immediate shutdown)"),
            "{said}"
        );
        assert!(!pg.has("running"), "{said}");
    }
    // A stop command that stops the server: no immediate shutdown.
    pg.set("running", Some(""));
    pg.set("state", None);
    let (code, said) = pg.run(&script(&format!("rm -f {d}/running")));
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("medic: stopped the server") && !said.contains("immediate"),
        "{said}"
    );
}

/// Waits up to 5 s for `cond`, asking every 20 ms; fails naming `what`.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited 5 s for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A postmaster stopped by a signal can begin no shutdown: it is killed without the stop
/// command's 30 s or the immediate shutdown's 20 s, whether the stop command hangs or fails
/// at once. (The fake server is a `sleep` whose pid is in postmaster.pid: `pg_ctl status`
/// says it runs while that process lives and is not a zombie; the immediate shutdown does
/// nothing to it.)
#[test]
fn a_postmaster_stopped_by_a_signal_is_killed_at_once() {
    let pg = FakePg::new("pg-frozen");
    let d = pg.data.display().to_string();
    {
        use std::os::unix::fs::PermissionsExt;
        let status = pg.dir.join("bin/pg_ctl");
        std::fs::write(
            &status,
            format!(
                "#!/bin/sh\necho \"$*\" >> {d}/../pg_ctl.log\ncase \"$*\" in *status*) p=$(head -n 1 {d}/postmaster.pid); s=$(sed -E 's/^[0-9]+ \\(.*\\) (.) .*/\\1/' /proc/$p/stat 2>/dev/null); case \"$s\" in \"\"|Z) exit 3;; esac;; esac\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&status, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for stop in ["false", "sleep 60"] {
        let mut server = std::process::Command::new("sleep")
            .arg("120")
            .spawn()
            .unwrap();
        pg.set("postmaster.pid", Some(&format!("{}\n{d}\n", server.id())));
        let signal = |s: &str| {
            std::process::Command::new("kill")
                .args([s, &server.id().to_string()])
                .status()
                .unwrap()
        };
        assert!(signal("-STOP").success());
        // The kernel marks it stopped as the signal is delivered: asked until it says so.
        let stat = format!("/proc/{}/stat", server.id());
        wait_for("the server stopped by SIGSTOP", || {
            std::fs::read_to_string(&stat).is_ok_and(|t| {
                t.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('T'))
            })
        });
        let _ = std::fs::remove_file(pg.dir.join("pg_ctl.log"));
        let r = pg.settings("true", stop);
        let (code, said) = pg.run(&format!("{}{}", prelude(&r), stop_block(&r)));
        let gone = server.try_wait().unwrap();
        if gone.is_none() {
            let _ = server.kill();
            let _ = server.wait();
        }
        assert_eq!(code, Some(0), "{stop}: {said}");
        assert!(said.contains("stopped by a signal"), "{stop}: {said}");
        assert!(
            said.contains("killed the server (SIGKILL"),
            "{stop}: {said}"
        );
        let asked = std::fs::read_to_string(pg.dir.join("pg_ctl.log")).unwrap_or_default();
        assert!(
            !asked.contains("immediate"),
            "{stop}: an immediate shutdown was tried:\n{asked}\n{said}"
        );
        assert!(gone.is_some(), "{stop}: the server still runs\n{said}");
    }
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
    // The copy streams under no standby's name; the name is added afterwards.
    assert!(s.contains(r#"pg_basebackup" -D "$D" -d "$SRC" -R -X stream"#));
    assert!(s.contains(r#"printf "primary_conninfo = '%s'\n""#), "{s}");
    let with_config = rejoin_script(
        &PgRejoin {
            config_file: Some("/etc/postgresql/15/main/postgresql.conf".into()),
            ..settings(RejoinMethod::RewindOrCopy)
        },
        "10.0.0.2",
        5433,
        "db",
    );
    assert!(
        with_config.contains(
            "-C primary_conninfo -c config_file='/etc/postgresql/15/main/postgresql.conf' 2>/dev/null"
        ),
        "{with_config}"
    );
}

#[test]
fn the_scripts_are_valid_shell() {
    for m in [RejoinMethod::Rewind, RejoinMethod::RewindOrCopy] {
        for s in [
            rejoin_script(&settings(m), "10.0.0.2", 5432, "it's"),
            rejoin_script(
                &PgRejoin {
                    config_file: Some("/etc/postgresql/15/main/postgresql.conf".into()),
                    ..settings(m)
                },
                "10.0.0.2",
                5432,
                "db",
            ),
            stop_script(&settings(m), 5432),
            start_script(&settings(m)),
        ] {
            let out = std::process::Command::new("sh")
                .args(["-n", "-c", &s])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{err}");
        }
    }
}
