//! Starting the checks: how a HAProxy check reaches its runtime API and a `command` check runs
//! its command (through the controller's SSH sessions), and where every result goes (the
//! core, through [`Controller::on_result`]). A reload starts them again.

use std::sync::Arc;

use medic_cloud::{Cloud, Dns};

use super::{Controller, lock};
use crate::checks;

impl<C: Cloud + 'static, D: Dns + 'static> Controller<C, D> {
    pub(super) fn spawn_checks(&self) {
        let loaded = self.top();
        let rt = lock(&self.inner.checks_rt)
            .clone()
            .unwrap_or_else(tokio::runtime::Handle::current);
        let redis = self.inner.redis.clone();
        let api: checks::ApiFor = {
            let c = self.clone();
            Arc::new(move |machine: String, ip, port| {
                let c = c.clone();
                Box::pin(async move {
                    let loaded = c.top();
                    medic_exec::proxy_api(&c.inner.ssh, &loaded.topology, &machine, ip, port).await
                })
            })
        };
        let run: checks::RunFor = {
            let c = self.clone();
            Arc::new(move |machine: String, ip, command: String, within| {
                let c = c.clone();
                Box::pin(async move {
                    use medic_ssh::Remote as _;
                    let host = medic_exec::ssh_host(&c.top().topology, &machine, ip);
                    // Bounded on the machine too: a command stuck (storage in D state) is not
                    // left running beside the next check's.
                    let secs = within.as_secs_f64().max(0.1);
                    let bounded = format!(
                        "timeout -k 1 {secs:.1} sh -c {}",
                        crate::service_check::shell_quote(&command)
                    );
                    match c.inner.ssh.run(&host, &bounded, within).await {
                        Ok(out) if out.status == Some(0) => Ok(None),
                        // `timeout`'s own exit: it ran, and did not finish.
                        Ok(out) if matches!(out.status, Some(124 | 137)) => Ok(Some(format!(
                            "the command did not finish within {}",
                            medic_playbook::human_ms(within.as_millis() as u64)
                        ))),
                        Ok(out) => {
                            let said: String = out.stderr.trim().chars().take(200).collect();
                            Ok(Some(format!(
                                "the command exits {}: {said}",
                                out.status
                                    .map_or("by a signal".to_owned(), |c| c.to_string())
                            )))
                        }
                        // Started and not finished: the machine answers, the command hangs.
                        Err(medic_ssh::SshError::Timeout { .. }) => Ok(Some(format!(
                            "the command did not finish within {}",
                            medic_playbook::human_ms(within.as_millis() as u64)
                        ))),
                        Err(e) => Err(e.to_string()),
                    }
                })
            })
        };
        let handles = checks::spawn(
            &rt,
            &loaded.topology,
            redis,
            api,
            run,
            self.inner.book.clone(),
            {
                let c = self.clone();
                Arc::new(move |r| c.on_result(r))
            },
        );
        let mut old = lock(&self.inner.checks);
        for h in old.drain(..) {
            h.abort();
        }
        *old = handles;
    }
}
