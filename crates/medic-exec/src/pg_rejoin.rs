//! A PostgreSQL server made a standby of the primary again (`RejoinPostgres`): the primary
//! asked first (it must be one), the server itself (one in recovery already is left alone),
//! then the script of `medic_plan::rejoin` run on its machine over SSH (stop, `pg_rewind -R`,
//! else a fresh `pg_basebackup` if allowed, start), and what the step claims read back: the
//! server streams from the primary.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use medic_cloud::{Cloud, Dns};
use medic_plan::Action;

use crate::pg_follow::streams_from;
use crate::postgres::{Failed, in_recovery, login, session};
use crate::{ExecError, Executor};

/// How long a started standby may take to stream from the primary.
const STREAM_WITHIN: Duration = Duration::from_secs(60);
/// How long a `pg-stop` may take on the machine: its `stop` command's 30 s, then an
/// immediate shutdown's 20 s.
pub(crate) const PG_STOP_WITHIN: Duration = Duration::from_secs(60);
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
        // What the server says of itself. In recovery: not touched — it is done if it
        // streams from the primary (one following another server is pg-follow's to re-point;
        // one on a timeline of its own must be rebuilt by hand). A login refused: not touched
        // either (medic could not tell a healthy standby from an old primary). Writable, or
        // no answer (stopped, or not up yet): the script, which looks at the data itself.
        let own = config(ip)?;
        let standby = session(&own, at, STREAM_WITHIN, |client| async move {
            if !in_recovery(&client, at).await? {
                return Ok(None);
            }
            streams_from(&client, at, source, ASK_WITHIN * 4)
                .await
                .map(Some)
        })
        .await;
        match standby {
            Ok(Some(Ok(()))) => {
                return Ok(format!(
                    "{service}@{machine}: its PostgreSQL is a standby streaming from {primary} ({source}) already: left as it is"
                ));
            }
            Ok(Some(Err(last))) => {
                return Err(failed(Failed::passing(format!(
                    "{at} is in recovery but does not stream from {primary} ({source}) (last seen: {last}): not touched; one that follows another server is re-pointed by pg-follow once it passes its checks, one on a timeline of its own must be rebuilt from {primary}"
                ))));
            }
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
        // Read back: it streams from the primary.
        let last = session(&own, at, STREAM_WITHIN + ASK_WITHIN, |client| async move {
            if !in_recovery(&client, at).await? {
                return Ok(Err("not in recovery".to_owned()));
            }
            streams_from(&client, at, source, STREAM_WITHIN).await
        })
        .await
        .map_err(|f| {
            failed(Failed::passing(format!(
                "{} on {machine}, but its server does not answer: {}",
                done.join("; "),
                f.message
            )))
        })?;
        if let Err(last) = last {
            return Err(failed(Failed::passing(format!(
                "{} on {machine}, but it does not stream from {primary} ({source}) within {} s (last seen: {last}); its log says why",
                done.join("; "),
                STREAM_WITHIN.as_secs()
            ))));
        }
        Ok(format!(
            "{service}@{machine}: {}; streams from {primary} ({source})",
            done.join("; ")
        ))
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
