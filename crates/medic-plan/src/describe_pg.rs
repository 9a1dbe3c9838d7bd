//! PostgreSQL steps in words (see [`crate::describe`]): the SQL and the scripts they run.

use crate::step::Action;

/// A PostgreSQL step's target, summary and commands (nothing for any other step).
pub(crate) fn postgres(a: &Action) -> (String, String, Vec<String>) {
    match a {
        Action::PromotePostgres {
            service,
            machine,
            address,
            port,
            user,
            database,
            ..
        } => (
            format!("{service}@{machine}"),
            "promote its PostgreSQL standby to primary (nothing if it is one already)".into(),
            vec![
                format!(
                    "postgres {address}:{port} (user {user}, database {database}): SELECT pg_is_in_recovery()"
                ),
                format!(
                    "if in recovery: SELECT pg_promote(true, {}), then pg_is_in_recovery() is false",
                    crate::PG_PROMOTE_WAIT_SECS
                ),
            ],
        ),
        Action::FollowPostgres {
            service,
            machine,
            address,
            port,
            user,
            database,
            primary,
            primary_address,
            ..
        } => (
            format!("{service}@{machine}"),
            format!("make its PostgreSQL standby follow {primary}, the new primary"),
            vec![
                format!(
                    "postgres {address}:{port} (user {user}, database {database}): SELECT pg_is_in_recovery(); SHOW primary_conninfo"
                ),
                format!(
                    "if its host or port differ: ALTER SYSTEM SET primary_conninfo = '... host={primary_address} port={port} ...'; SELECT pg_reload_conf()"
                ),
                format!(
                    "until it streams from {primary_address}: SELECT status, sender_host, sender_port FROM pg_stat_wal_receiver"
                ),
            ],
        ),
        Action::StopPostgres {
            service,
            machine,
            port,
            rejoin,
            skip_unreachable,
            caught_up,
            ..
        } => {
            let mut c = vec![format!(
                "ssh {machine} (as root{}):",
                if *skip_unreachable {
                    "; skipped if its SSH port says nothing within 1 s"
                } else {
                    ""
                }
            )];
            c.extend(
                crate::rejoin::stop_script(rejoin, *port)
                    .lines()
                    .map(|l| format!("  {l}")),
            );
            if let Some(next) = caught_up {
                c.push(format!(
                    "postgres {}:{port} (user {}, database {}): until it has received WAL up to the stopped server's shutdown checkpoint (medic-wal above), within {} s: SELECT pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()",
                    next.address, next.user, next.database, crate::PG_CATCH_UP_SECS
                ));
            }
            (
                format!("{service}@{machine}"),
                match caught_up {
                    Some(next) => format!(
                        "fence: stop its PostgreSQL server (nothing if it is stopped), then wait until {} has received all its WAL",
                        next.machine
                    ),
                    None => "fence: stop its PostgreSQL server (nothing if it is stopped)".into(),
                },
                c,
            )
        }
        Action::RejoinPostgres {
            service,
            machine,
            address,
            port,
            user,
            database,
            primary,
            primary_address,
            rejoin,
            ..
        } => {
            let mut c = vec![
                format!(
                    "postgres {primary_address}:{port} (user {user}, database {database}): SELECT pg_is_in_recovery() is false (the primary)"
                ),
                format!(
                    "postgres {address}:{port}: SELECT pg_is_in_recovery(); if true, nothing more (a standby already)"
                ),
                format!("ssh {machine} (as root, within {}):", rejoin.timeout),
            ];
            c.extend(
                crate::rejoin::rejoin_script(rejoin, &primary_address.to_string(), *port, database)
                    .lines()
                    .map(|l| format!("  {l}")),
            );
            c.push(format!(
                "until it streams from {primary_address}: SELECT status, sender_host, sender_port FROM pg_stat_wal_receiver"
            ));
            (
                format!("{service}@{machine}"),
                format!(
                    "make its PostgreSQL a standby of {primary} again ({})",
                    rejoin.method.as_str()
                ),
                c,
            )
        }
        Action::StartPostgres {
            service,
            machine,
            address,
            port,
            user,
            database,
            rejoin,
            ..
        } => {
            let mut c = vec![format!("ssh {machine} (as root):")];
            c.extend(
                crate::rejoin::start_script(rejoin)
                    .lines()
                    .map(|l| format!("  {l}")),
            );
            c.push(format!(
                "postgres {address}:{port} (user {user}, database {database}): until SELECT pg_is_in_recovery() is false, within {} s",
                crate::PG_PROMOTE_WAIT_SECS
            ));
            (
                format!("{service}@{machine}"),
                "start its PostgreSQL as the primary again if medic's pg-stop fenced it (nothing if it runs as the primary)".to_owned(),
                c,
            )
        }
        _ => (String::new(), String::new(), Vec::new()),
    }
}
