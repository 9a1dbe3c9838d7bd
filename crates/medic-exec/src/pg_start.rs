//! A service's old PostgreSQL primary started again as the primary (`StartPostgres`, when
//! its switchover failed before the other server was promoted): the script of
//! `medic_plan::rejoin::start_script` run on its machine over SSH, then what the step claims
//! read back — the server answers out of recovery.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use medic_cloud::{Cloud, Dns};
use medic_plan::Action;

use crate::postgres::{Failed, in_recovery, login, session};
use crate::{ExecError, Executor};

/// How long the script may take: a stop of a server something restarted read-only (up to
/// 90 s, as `pg-stop`'s), then its start.
const START_WITHIN: Duration = Duration::from_secs(240);
/// How long the started server has to answer out of recovery.
const ANSWER_WITHIN: Duration = Duration::from_secs(medic_plan::PG_PROMOTE_WAIT_SECS);
/// How often it is asked meanwhile.
const ASK_EVERY: Duration = Duration::from_millis(250);

impl<C: Cloud, D: Dns> Executor<'_, C, D> {
    /// A `StartPostgres` step: its summary.
    pub(crate) async fn start_postgres(
        &self,
        index: usize,
        kind: &'static str,
        action: &Action,
    ) -> Result<String, ExecError> {
        let Action::StartPostgres {
            service,
            machine,
            address,
            port,
            user,
            database,
            password_file,
            rejoin,
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
        let at = SocketAddr::new(ip, *port);
        let config = login(
            ip,
            *port,
            user,
            database,
            password_file.as_deref().map(Path::new),
        )
        .map_err(|message| failed(Failed::passing(message)))?;
        let script = medic_plan::rejoin::start_script(rejoin);
        let out = self
            .remote_script(index, kind, machine, ip, &script, START_WITHIN)
            .await?;
        let done: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("medic: "))
            .collect();
        // Read back: it answers, out of recovery (a server just started may refuse
        // connections for a moment; a refused login is not asked again).
        let start = Instant::now();
        let mut last = String::from("not asked yet");
        while start.elapsed() < ANSWER_WITHIN {
            let asked = session(&config, at, ASK_EVERY * 8, |client| async move {
                in_recovery(&client, at).await
            })
            .await;
            match asked {
                Ok(false) => {
                    return Ok(format!(
                        "{service}@{machine}: {}; it answers as the primary (not in recovery)",
                        done.join("; ")
                    ));
                }
                Ok(true) => last = "in recovery".to_owned(),
                Err(f) if f.lasting => return Err(failed(f)),
                Err(f) => last = f.message,
            }
            tokio::time::sleep(ASK_EVERY).await;
        }
        Err(failed(Failed::passing(format!(
            "{} on {machine}, but it does not answer out of recovery within {} s (last seen: {last}); its log says why",
            done.join("; "),
            ANSWER_WITHIN.as_secs()
        ))))
    }
}
