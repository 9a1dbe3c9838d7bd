//! `services[i].rejoin`: only where medic promotes PostgreSQL itself, with paths and names
//! that are safe in the commands it runs on the machine.

use super::Ctx;
use crate::pg_rejoin::{is_plain_path, is_plain_user};
use crate::service::Service;

impl Ctx<'_, '_> {
    pub(super) fn rejoin(&mut self, p: &str, s: &Service) {
        let Some(r) = &s.rejoin else {
            return;
        };
        let at = r.referenced;
        let rp = format!("{p}.rejoin");
        if !s.has_postgres_check() {
            self.d.error(
                at,
                rp.clone(),
                "rejoin makes a PostgreSQL server a standby again; expected a check (or one of more_checks) of kind postgres",
            );
        }
        if s.standbys_read_only {
            self.d.error(
                at,
                rp.clone(),
                "with `standbys_read_only: true` medic never promotes a standby's database, so there is nothing to rewind; expected no rejoin here",
            );
        }
        for (field, path) in [
            ("data_dir", &r.value.data_dir),
            ("bin_dir", &r.value.bin_dir),
        ] {
            if !is_plain_path(path) {
                self.d.error(
                    at,
                    format!("{rp}.{field}"),
                    format!("`{}` is not a plain absolute path; expected one of letters, digits and /._-+@ (like /var/lib/postgresql/15/main)", path.display().to_string().escape_debug()),
                );
            }
        }
        if let Some(c) = &r.value.config_file
            && !is_plain_path(c)
        {
            self.d.error(
                at,
                format!("{rp}.config_file"),
                format!(
                    "`{}` is not a plain absolute path; expected one of letters, digits and /._-+@",
                    c.display().to_string().escape_debug()
                ),
            );
        }
        for (field, user) in [("os_user", &r.value.os_user), ("user", &r.value.user)] {
            if !is_plain_user(user) {
                self.d.error(
                    at,
                    format!("{rp}.{field}"),
                    format!("`{}` is not a plain user name; expected 1 to 63 letters, digits, '_' and '-'", user.escape_debug()),
                );
            }
        }
        for (field, command) in [("start", &r.value.start), ("stop", &r.value.stop)] {
            if command.as_ref().is_some_and(|c| c.trim().is_empty()) {
                self.d.error(
                    at,
                    format!("{rp}.{field}"),
                    "an empty command; expected a shell command, or no field for medic's own",
                );
            }
        }
        if r.value.timeout.as_millis() < 10_000 {
            self.d.error(
                at,
                format!("{rp}.timeout"),
                format!(
                    "{} is too short to stop, rewind and start a server; expected at least 10s",
                    r.value.timeout
                ),
            );
        } else if r.value.timeout.as_millis() < 360_000 {
            // A server not shut down cleanly is first recovered in standby mode, privately
            // (up to 5 minutes), before its rewind.
            self.d.warning(
                at,
                format!("{rp}.timeout"),
                format!(
                    "{} may not leave room for a server that was not shut down cleanly: it is first recovered in standby mode (up to 5 minutes), then rewound and started; expected 6m or more",
                    r.value.timeout
                ),
            );
        }
    }
}
