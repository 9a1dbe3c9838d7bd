//! A service's PostgreSQL server stopped (`StopPostgres`, the fence of an old primary) or made
//! a standby of the primary again (`RejoinPostgres`): for the latter the primary asked first
//! (it must be one), the server itself (one in recovery is not touched), then the script of
//! `medic_plan::rejoin` run on its machine over SSH (stop, `pg_rewind -R`, else a fresh
//! `pg_basebackup` if allowed, start), and what the step claims read back: the server streams
//! from the primary.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use medic_cloud::{Cloud, Dns};
use medic_plan::Action;

use crate::postgres::{Failed, in_recovery, login, one_row, session, sql_failed};
use crate::{ExecError, Executor};

/// How long a started standby may take to stream from the primary.
const STREAM_WITHIN: Duration = Duration::from_secs(60);
/// How long a `pg-stop` may take on the machine: its `stop` command's 30 s, then an
/// immediate shutdown's 20 s, then up to 10 s for SIGKILL to be seen.
const PG_STOP_WITHIN: Duration = Duration::from_secs(90);
/// How long each of the primary and the server has to answer medic's first questions.
const ASK_WITHIN: Duration = Duration::from_secs(5);

impl<C: Cloud, D: Dns> Executor<'_, C, D> {
    /// A `RejoinPostgres` step: its summary.
    pub(crate) async fn rejoin_postgres(
        &self,
        index: usize,
        kind: &'static str,
        action: &Action,
    ) -> Result<String, ExecError> {
        let Action::RejoinPostgres {
            service,
            machine,
            address,
            port,
            user,
            database,
            password_file,
            primary,
            primary_address,
            rejoin,
            ..
        } = action
        else {
            return Err(ExecError::Unsupported { index, kind });
        };
        let failed = |f: Failed| ExecError::Postgres {
            index,
            kind,
            service: service.clone(),
            machine: machine.clone(),
            message: f.message,
            lasting: f.lasting,
        };
        let ip = self.resolve(index, kind, address)?;
        let pip = self.resolve(index, kind, primary_address)?;
        let (at, source) = (SocketAddr::new(ip, *port), SocketAddr::new(pip, *port));
        let config = |ip| {
            login(
                ip,
                *port,
                user,
                database,
                password_file.as_deref().map(Path::new),
            )
            .map_err(|message| failed(Failed::passing(message)))
        };
        // The source must be the primary: a server rewound from a standby would follow a
        // copy, and one rewound from an old primary would lose the new one's writes.
        let primary_config = config(pip)?;
        let writable = session(&primary_config, source, ASK_WITHIN, |client| async move {
            in_recovery(&client, source).await.map(|r| !r)
        })
        .await
        .map_err(|f| {
            failed(Failed::passing(format!(
                "the primary {primary} ({source}) did not answer, so {machine} was not touched: {}",
                f.message
            )))
        })?;
        if !writable {
            return Err(failed(Failed::passing(format!(
                "{primary} ({source}) is in recovery, not a primary: {machine} was not touched"
            ))));
        }
        // What the server says of itself. In recovery and streaming: done (one following
        // another server is pg-follow's to re-point). In recovery and streaming from
        // nothing: the script, which goes on only if medic fenced it (an old primary that
        // something restarted after pg-stop); any other standby is not touched (one on a
        // timeline of its own must be rebuilt by hand). A login refused: not touched either
        // (medic could not tell a healthy standby from an old primary). Writable, or no
        // answer (stopped, or not up yet): the script, which looks at the data itself.
        let own = config(ip)?;
        let standby = session(&own, at, STREAM_WITHIN, |client| async move {
            if !in_recovery(&client, at).await? {
                return Ok(None);
            }
            receiving(&client, at, None, ASK_WITHIN * 4).await.map(Some)
        })
        .await;
        // In recovery without a visible upstream: (what it was seen doing, whether the
        // check user may see its WAL receiver at all).
        let mut adrift = None;
        match standby {
            Ok(Some(Ok(Upstream::Streams(from)))) => {
                return Ok(format!(
                    "{service}@{machine}: its PostgreSQL is a standby already ({from}): left as it is"
                ));
            }
            Ok(Some(Ok(Upstream::Hidden(what)))) => adrift = Some((what, true)),
            Ok(Some(Err(last))) => adrift = Some((last, false)),
            Err(f) if f.lasting => {
                return Err(failed(Failed {
                    message: format!(
                        "medic cannot log in to {at} to tell what it is, so it was not touched: {}",
                        f.message
                    ),
                    lasting: true,
                }));
            }
            Ok(None) | Err(_) => {}
        }
        let script = medic_plan::rejoin::rejoin_script(rejoin, &pip.to_string(), *port, database);
        let out = self
            .remote_script(
                index,
                kind,
                machine,
                ip,
                &script,
                rejoin.timeout.as_duration(),
            )
            .await?;
        let done: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("medic: "))
            .collect();
        // Not fenced by medic (the script said so and left it): a standby whose receiver
        // medic may not see is taken for one, as before; one that streams from nothing is
        // not touched, and the step fails.
        match adrift.filter(|_| done.contains(&medic_plan::rejoin::A_STANDBY)) {
            Some((what, true)) => {
                return Ok(format!(
                    "{service}@{machine}: its PostgreSQL is {what}; medic did not fence it: left as it is"
                ));
            }
            Some((last, false)) => {
                return Err(failed(Failed::passing(format!(
                    "{at} is in recovery but streams from nothing (last seen: {last}), and medic did not fence it: not touched; its log says why (one on a timeline of its own must be rebuilt from {primary})"
                ))));
            }
            None => {}
        }
        // Read back: it streams from the primary.
        let last = session(&own, at, STREAM_WITHIN + ASK_WITHIN, |client| async move {
            if !in_recovery(&client, at).await? {
                return Ok(Err("not in recovery".to_owned()));
            }
            receiving(&client, at, Some(source), STREAM_WITHIN).await
        })
        .await
        .map_err(|f| {
            failed(Failed::passing(format!(
                "{} on {machine}, but its server does not answer: {}",
                done.join("; "),
                f.message
            )))
        })?;
        let from = match last {
            Ok(Upstream::Streams(from) | Upstream::Hidden(from)) => from,
            Err(last) => {
                return Err(failed(Failed::passing(format!(
                    "{} on {machine}, but it does not stream from {primary} ({source}) within {} s (last seen: {last}); its log says why",
                    done.join("; "),
                    STREAM_WITHIN.as_secs()
                ))));
            }
        };
        Ok(format!("{service}@{machine}: {}; {from}", done.join("; ")))
    }

    /// A `StopPostgres` step (the fence of an old primary): its summary.
    pub(crate) async fn stop_postgres(
        &self,
        index: usize,
        kind: &'static str,
        action: &Action,
    ) -> Result<String, ExecError> {
        let Action::StopPostgres {
            service,
            machine,
            address,
            port,
            rejoin,
            skip_unreachable,
            caught_up,
        } = action
        else {
            return Err(ExecError::Unsupported { index, kind });
        };
        let ip = self.resolve(index, kind, address)?;
        if let Some(why) = self.unreachable(machine, ip, *skip_unreachable).await {
            return Ok(format!(
                "skipped: {why}; a majority of its observers found it silent: it is demoted when it answers again"
            ));
        }
        let script = medic_plan::rejoin::stop_script(rejoin, *port);
        let out = self
            .remote_script(index, kind, machine, ip, &script, PG_STOP_WITHIN)
            .await?;
        let mut done: Vec<String> = out
            .lines()
            .filter_map(|l| l.strip_prefix("medic: "))
            .map(str::to_owned)
            .collect();
        if let Some(next) = caught_up {
            // `lasting`: asking again cannot help, or costs more than it may win. A server
            // that did not stop cleanly reads the same on every retry; a refused login is
            // refused again; a standby that did not catch up within the wait is not waited
            // for again: the service has no primary meanwhile, and the switchover is
            // switched back at once (the old primary started again). (An unread
            // pg_controldata is asked again.)
            let failed = |message: String, lasting: bool| ExecError::Postgres {
                index,
                kind,
                service: service.clone(),
                machine: next.machine.clone(),
                message,
                lasting,
            };
            let (end, at) = crate::pg_catch_up::wal_end(&out).map_err(|unknown| {
                failed(
                    format!(
                        "{machine}: {}, so {} is not promoted (a standby that lacks its last writes would lose them)",
                        unknown.why(),
                        next.machine
                    ),
                    unknown.lasting(),
                )
            })?;
            let nip = self.resolve(index, kind, &next.address)?;
            let within = crate::pg_catch_up::CATCH_UP_WITHIN;
            match crate::pg_catch_up::caught_up(next, nip, *port, end, within)
                .await
                .map_err(|f| failed(f.message, f.lasting))?
            {
                Ok(reached) => done.push(format!(
                    "{} has received its WAL up to {reached} (it ended at {at})",
                    next.machine
                )),
                Err(last) => {
                    return Err(failed(
                        format!(
                            "{} has received WAL only up to {last} within {} s, not {at} where {machine}'s ended: not promoted",
                            next.machine,
                            within.as_secs()
                        ),
                        true,
                    ));
                }
            }
        }
        Ok(format!("{service}@{machine}: {}", done.join("; ")))
    }

    /// Runs `script` on `machine` as root within `within`: its standard output, or its
    /// failure with the last lines it wrote on standard error.
    pub(crate) async fn remote_script(
        &self,
        index: usize,
        kind: &'static str,
        machine: &str,
        ip: std::net::IpAddr,
        script: &str,
        within: Duration,
    ) -> Result<String, ExecError> {
        use medic_ssh::Remote as _;
        let out = self
            .ssh
            .run(&self.host(machine, ip), script, within)
            .await
            .map_err(|source| ExecError::Ssh {
                index,
                kind,
                source: Box::new(source),
            })?;
        if out.status == Some(0) {
            return Ok(out.stdout);
        }
        let said: Vec<&str> = out.stdout.lines().chain(out.stderr.lines()).collect();
        Err(ExecError::Command {
            index,
            kind,
            machine: machine.to_owned(),
            status: out.status,
            stderr: said[said.len().saturating_sub(6)..].join(" | "),
        })
    }
}

/// What a server in recovery says of its WAL receiver.
enum Upstream {
    /// Streaming (from the server wanted, if one was).
    Streams(String),
    /// There is one, but medic's user may not see it (neither a superuser nor
    /// `pg_read_all_stats`).
    Hidden(String),
}

/// Waits (up to `within`) until the standby `client` is connected to (at `at`) streams — from
/// `from` if given, else from anywhere: what it said (`streams from HOST:PORT`), or
/// `Err(last)` with what it last did. A WAL receiver whose status medic's user may not see
/// (neither a superuser nor `pg_read_all_stats`) is taken as it is, saying so: medic cannot
/// tell more, and the service's check judges the server from then on.
async fn receiving(
    client: &tokio_postgres::Client,
    at: SocketAddr,
    from: Option<SocketAddr>,
    within: Duration,
) -> Result<Result<Upstream, String>, Failed> {
    let start = std::time::Instant::now();
    let mut last = String::from("no WAL receiver");
    while start.elapsed() < within {
        let rows = client
            .simple_query("SELECT status, sender_host, sender_port::text FROM pg_stat_wal_receiver")
            .await
            .map_err(|e| sql_failed(&e, at))?;
        if let Some(row) = one_row(&rows) {
            let [status, host, port] = [0, 1, 2].map(|i| row.get(i).cloned().flatten());
            let Some(status) = status else {
                return Ok(Ok(Upstream::Hidden(
                    "in recovery; its WAL receiver is not visible to medic's user (grant it pg_read_all_stats)".to_owned(),
                )));
            };
            let (host, port) = (host.unwrap_or_default(), port.unwrap_or_default());
            let wanted =
                from.is_none_or(|f| host == f.ip().to_string() && port == f.port().to_string());
            if status == "streaming" && wanted {
                return Ok(Ok(Upstream::Streams(format!("streams from {host}:{port}"))));
            }
            last = format!("{status} from {host}:{port}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(Err(last))
}
