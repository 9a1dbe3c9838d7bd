//! The steps on a redis server: a replica promoted (once in sync, with its offset), made a
//! replica of another, waited on until in sync, and a master's writes held and let go for a
//! switchover.

use std::time::Duration;

use medic_cloud::{Cloud, Dns};
use medic_plan::{Action, StepOutput};
use medic_redis::{RedisAddr, RedisAdmin as _, RedisError};

use crate::{ExecError, Executor, redis_err};

impl<C: Cloud, D: Dns> Executor<'_, C, D> {
    /// Runs `action`, one of the redis steps above: its summary; a promotion's and a sync's
    /// offset go into `output`.
    pub(crate) async fn redis_step(
        &mut self,
        index: usize,
        kind: &'static str,
        action: &Action,
        output: &mut StepOutput,
    ) -> Result<String, ExecError> {
        Ok(match action {
            Action::PromoteReplica { server, .. } => {
                let backend = medic_plan::vars::proxy_backend(self.topology, &server.shard);
                self.ensure_fenced(index, kind, &backend, &server.machine)
                    .await?;
                self.ensure_backend_clear(index, kind, &backend, &server.machine)
                    .await?;
                let at = RedisAddr::new(self.resolve(index, kind, &server.address)?, server.port);
                let redis_err = redis_err(index, kind);
                self.redis.replicaof(at, None).await.map_err(&redis_err)?;
                // Read back: it must say master now.
                let info = self.redis.replication(at).await.map_err(&redis_err)?;
                if info.role != medic_redis::Role::Master {
                    return Err(redis_err(RedisError::NotInSync {
                        replica: at,
                        master: at,
                        after: Duration::ZERO,
                        state: "still a replica after REPLICAOF NO ONE".to_owned(),
                    }));
                }
                output.offset = Some(info.offset);
                // Into its config file too, or a restart brings it back as a replica of the
                // old master. The promotion itself is done (read back): a rewrite that fails
                // does not undo it, so the step goes on and says so.
                let persisted = match self.redis.config_rewrite(at).await {
                    Ok(()) => "config rewritten".to_owned(),
                    Err(e) => {
                        tracing::warn!(step = index, server = %at, error = %e, "Promoted, but the role is not in its config file.");
                        format!("role not persisted: {e}")
                    }
                };
                format!(
                    "{}@{} is master at offset {}, {persisted}",
                    server.shard, server.machine, info.offset
                )
            }
            Action::ReplicaOf {
                server,
                master,
                master_port,
            } => {
                let at = RedisAddr::new(self.resolve(index, kind, &server.address)?, server.port);
                let to = RedisAddr::new(self.resolve(index, kind, master)?, *master_port);
                self.redis
                    .replicaof(at, Some(to))
                    .await
                    .map_err(redis_err(index, kind))?;
                // Into its config file too, or a restart brings it back in its old role (an old
                // master as a second master). As with a promotion, a failed rewrite is reported.
                let persisted = match self.redis.config_rewrite(at).await {
                    Ok(()) => "config rewritten".to_owned(),
                    Err(e) => {
                        tracing::warn!(step = index, server = %at, error = %e, "Made a replica, but the role is not in its config file.");
                        format!("role not persisted: {e}")
                    }
                };
                format!(
                    "{}@{} replicates {to}, {persisted}",
                    server.shard, server.machine
                )
            }
            Action::WaitInSync {
                server,
                master,
                master_port,
                timeout_ms,
            } => {
                let at = RedisAddr::new(self.resolve(index, kind, &server.address)?, server.port);
                let to = RedisAddr::new(self.resolve(index, kind, master)?, *master_port);
                let info = medic_redis::wait_in_sync(
                    &self.redis,
                    at,
                    to,
                    Duration::from_millis(*timeout_ms),
                )
                .await
                .map_err(redis_err(index, kind))?;
                let offset = info.replica_offset.unwrap_or(info.offset);
                output.offset = Some(offset);
                format!(
                    "{}@{} in sync with {to} at offset {offset}",
                    server.shard, server.machine
                )
            }
            Action::PauseWrites { server, timeout_ms } => {
                let at = RedisAddr::new(self.resolve(index, kind, &server.address)?, server.port);
                self.redis
                    .pause_writes(at, Duration::from_millis(*timeout_ms))
                    .await
                    .map_err(redis_err(index, kind))?;
                format!(
                    "{}@{}: writes held (for at most {} ms)",
                    server.shard, server.machine, timeout_ms
                )
            }
            Action::Unpause { server } => {
                let at = RedisAddr::new(self.resolve(index, kind, &server.address)?, server.port);
                self.redis
                    .unpause(at)
                    .await
                    .map_err(redis_err(index, kind))?;
                format!("{}@{}: writes let go", server.shard, server.machine)
            }
            _ => return Err(ExecError::Unsupported { index, kind }),
        })
    }
}
