//! Asking a silent machine's witnesses, all at once (the controller's I/O; who they are is
//! [`crate::witness::observers`]).

use std::net::{IpAddr, SocketAddr};

use medic_cloud::{Cloud, Dns};
use medic_detect::Witnesses;
use medic_haproxy::{OpState, ProxyApi as _, RuntimeApi};
use medic_redis::{LinkStatus, Role};

use super::{Controller, WITNESS_WITHIN, lock, replication_now};

/// How long the last look's knocks may take (see [`Controller::answers`]) when no check of the
/// machine knocked: else as long as its checks' latest knock.
const LAST_KNOCK: std::time::Duration = std::time::Duration::from_millis(150);
use crate::checks::Target;
use crate::core::LINK_SILENT_SECS;
use crate::witness::{Passive, Probe, merge, observers};

impl<C: Cloud + 'static, D: Dns + 'static> Controller<C, D> {
    /// Asks every configured observer of `target`'s machine, all at once. The flag says whether
    /// every observer answered first-hand (asked to probe it now, over its SSH session) rather
    /// than from its own, slower, checks. A machine whose address is unknown has every
    /// observer unknown. With `knock`, each is asked to knock at the machine instead (a TCP
    /// connection to the port it would probe, any answer counting) within that long, at least
    /// [`crate::knock::WITNESS_FLOOR`]; one that cannot be asked is unknown (its own checks
    /// are too slow to say anything this early).
    pub(super) async fn witnesses(
        &self,
        target: &Target,
        knock: Option<std::time::Duration>,
    ) -> (Witnesses, bool) {
        self.ask_witnesses(target, knock, true).await
    }

    /// [`Controller::witnesses`]; `hearsay`: an observer that cannot probe first-hand answers
    /// from its own checks, and the group's other members count. Without: first-hand only.
    async fn ask_witnesses(
        &self,
        target: &Target,
        knock: Option<std::time::Duration>,
        hearsay: bool,
    ) -> (Witnesses, bool) {
        let loaded = self.top();
        let top = &loaded.topology;
        let observed = lock(&self.inner.st).core.saved.observed.clone();
        let Some(silent_ip) = observed.address(target.machine()) else {
            let asks = observers(top, &observed, target, IpAddr::from([0, 0, 0, 0]));
            return (merge(&asks, &vec![None; asks.len()]), false);
        };
        let asks = observers(top, &observed, target, silent_ip);
        // Every witness at once: a silent target makes each probe wait its whole bound.
        let mut set = tokio::task::JoinSet::new();
        for (i, a) in asks.iter().enumerate() {
            let c = self.clone();
            let (observer, probe) = (a.observer.clone(), a.probe);
            let how = match knock {
                Some(within) => Probe::Knock(within.max(crate::knock::WITNESS_FLOOR)),
                None => a.how,
            };
            set.spawn(async move { (i, c.ask_from(&observer, probe, how).await) });
        }
        let mut first_hand = vec![None; asks.len()];
        while let Some(Ok((i, v))) = set.join_next().await {
            first_hand[i] = v;
        }
        let mut all_first_hand = true;
        let mut seen = Vec::with_capacity(asks.len());
        for (a, v) in asks.iter().zip(first_hand) {
            seen.push(match v {
                Some(v) => Some(v),
                None => {
                    all_first_hand = false;
                    match &a.passive {
                        Some(p) if knock.is_none() && hearsay => {
                            self.passive_view(p, target.machine()).await
                        }
                        _ => None,
                    }
                }
            });
        }
        let mut w = merge(&asks, &seen);
        if hearsay {
            self.add_members(target, &mut w);
        }
        (w, all_first_hand)
    }

    /// In a group, the other members are observers too, through the views they publish: one
    /// whose checks fail says it is gone; one that saw it answer after this member's checks
    /// began to fail sees it; one silent, or that has not checked it since, could not be asked.
    fn add_members(&self, target: &Target, w: &mut Witnesses) {
        let Some(g) = self.inner.group.as_ref() else {
            return;
        };
        let first_fail = lock(&self.inner.st)
            .core
            .health
            .get(target)
            .and_then(|h| h.first_fail_ms);
        let views = g.fresh_views(crate::journal::now_ms());
        for v in views {
            let seen = super::group::member_says(&v, target.machine(), first_fail);
            w.answers.push((format!("controller {}", v.member), seen));
        }
    }

    /// Asks `observer` to probe `at` itself, now, over its SSH session: a redis PING, or a
    /// HAProxy runtime API command, bounded at 0.4 s. `None`: the observer could not be asked
    /// (no session, no bash), so its answer says nothing about `at`.
    pub(super) async fn ask_from(
        &self,
        observer: &str,
        at: SocketAddr,
        how: Probe,
    ) -> Option<bool> {
        let loaded = self.top();
        let top = &loaded.topology;
        let observed_ip = lock(&self.inner.st).core.saved.observed.address(observer)?;
        let host = medic_exec::ssh_host(top, observer, observed_ip);
        let script = probe_script(at, how, self.inner.redis.tls.is_some());
        let bound = match how {
            Probe::Knock(within) => format!("{:.3}", within.as_secs_f64()),
            _ => "0.4".to_owned(),
        };
        let command = format!(
            "LC_ALL=C timeout {bound} bash -c {}",
            medic_ssh::shell_quote(&script)
        );
        let out = tokio::time::timeout(
            std::time::Duration::from_millis(1500),
            self.inner
                .ssh
                .run_unprivileged(&host, &command, std::time::Duration::from_secs(1)),
        )
        .await
        .ok()?
        .ok()?;
        probe_answer(out.status)
    }
}

impl<C: Cloud + 'static, D: Dns + 'static> Controller<C, D> {
    /// An observer's own view of `machine`, through what it already knows: `None` if it
    /// cannot be reached either, or says nothing of it.
    async fn passive_view(&self, p: &Passive, machine: &str) -> Option<bool> {
        let client = &self.inner.redis;
        match p {
            Passive::Proxy(proxy, ip, port, backend) => {
                let loaded = self.top();
                let read = async {
                    let mut rt =
                        medic_exec::proxy_api(&self.inner.ssh, &loaded.topology, proxy, *ip, *port)
                            .await?;
                    rt.timeout = WITNESS_WITHIN;
                    rt.servers(Some(backend)).await
                };
                match tokio::time::timeout(WITNESS_WITHIN, read).await {
                    Ok(Ok(servers)) => servers
                        .iter()
                        .find(|s| s.server == machine)
                        .filter(|s| !s.in_maint())
                        .map(|s| s.op_state == OpState::Running),
                    _ => None,
                }
            }
            Passive::ReplicaLink(at) => replication_now(client, *at).await.map(|info| {
                info.role == Role::Replica
                    && info.master_link_status == Some(LinkStatus::Up)
                    && info
                        .master_last_io_secs
                        .is_some_and(|s| s <= LINK_SILENT_SECS)
            }),
            Passive::MasterSees(master, replica) => {
                replication_now(client, *master).await.map(|info| {
                    info.replicas
                        .iter()
                        .any(|c| c.is_at(replica.ip(), replica.port()) && c.lag <= LINK_SILENT_SECS)
                })
            }
        }
    }

    /// The last look before fencing at the source or terminating a lost machine: does any of
    /// its servers (a few of its redis servers, or its HAProxy: a frontend, or the runtime API
    /// where it is on the network) answer the monitor host now? First a knock at each
    /// ([`crate::knock`], [`LAST_KNOCK`]): a machine whose kernel answers none of them has no
    /// server that could, and the recovery goes on at once instead of after every probe's
    /// bound.
    pub(super) async fn answers(&self, machine: &str) -> bool {
        let loaded = self.top();
        let top = &loaded.topology;
        let (ip, knock_within) = {
            let st = lock(&self.inner.st);
            let knocked = st
                .core
                .health
                .iter()
                .filter(|(t, _)| t.machine() == machine)
                .filter_map(|(_, h)| h.knocked)
                .max();
            (st.core.saved.observed.address(machine), knocked)
        };
        let Some(ip) = ip else {
            return false;
        };
        let knock_within = knock_within.unwrap_or(LAST_KNOCK);
        let redis_ports: Vec<u16> = top
            .shards
            .iter()
            .map(|s| &s.value)
            .filter(|s| medic_topology::Topology::shard_machines(s).any(|m| m == machine))
            .map(|s| s.port.value)
            .take(crate::witness::WITNESS_SHARDS)
            .collect();
        let frontends: Vec<u16> = if top.proxy_machines().any(|p| p == machine) {
            top.proxies
                .value
                .frontends
                .iter()
                .map(|f| f.value.listen.value)
                .collect()
        } else {
            top.app_proxies
                .iter()
                .filter(|a| a.value.machine.value == machine)
                .flat_map(|a| a.value.frontends.iter().map(|f| f.value.listen.value))
                .collect()
        };
        let frontends: Vec<u16> = frontends
            .into_iter()
            .take(crate::witness::WITNESS_SHARDS)
            .collect();
        let api = top
            .runtime_api_of(machine)
            .filter(|r| r.reach == medic_topology::Reach::Network)
            .and_then(|r| r.tcp_port());
        // Its SSH port too: a service's full accept queue drops connections silently, sshd's
        // does not.
        let ssh_port = top.machine(machine).map_or(22, |m| top.ssh_for(m).port);
        let doors: Vec<u16> = redis_ports
            .iter()
            .chain(&frontends)
            .chain(&api)
            .chain(std::iter::once(&ssh_port))
            .copied()
            .collect();
        let mut knocks = tokio::task::JoinSet::new();
        for port in doors {
            knocks.spawn(crate::knock::knock(SocketAddr::new(ip, port), knock_within));
        }
        let mut any_knock = false;
        let mut silent = true;
        while let Some(k) = knocks.join_next().await {
            any_knock = true;
            silent &= matches!(k, Ok(crate::knock::Knocked::Silent(_)));
        }
        if any_knock && silent {
            return false;
        }
        let mut probes = tokio::task::JoinSet::new();
        for port in redis_ports {
            // Any reply is an answer: a server that refuses medic's login runs.
            let redis = self.inner.redis.clone();
            probes.spawn(async move {
                let addr = medic_redis::RedisAddr::new(ip, port);
                let mut probe = redis.probe(addr, None, WITNESS_WITHIN);
                matches!(
                    probe.check().await,
                    medic_redis::ProbeResult::Up { .. }
                        | medic_redis::ProbeResult::ErrorReply { .. }
                        | medic_redis::ProbeResult::WrongRole { .. }
                )
            });
        }
        for port in frontends {
            probes.spawn(async move {
                matches!(
                    tokio::time::timeout(
                        WITNESS_WITHIN,
                        tokio::net::TcpStream::connect(SocketAddr::new(ip, port))
                    )
                    .await,
                    Ok(Ok(_))
                )
            });
        }
        if let Some(port) = api {
            probes.spawn(async move {
                let mut rt = RuntimeApi::tcp(SocketAddr::new(ip, port));
                rt.timeout = WITNESS_WITHIN;
                matches!(
                    tokio::time::timeout(WITNESS_WITHIN, rt.servers(None)).await,
                    Ok(Ok(_))
                )
            });
        }
        while let Some(r) = probes.join_next().await {
            if matches!(r, Ok(true)) {
                return true;
            }
        }
        false
    }

    /// The whole last look: the monitor host's own ([`Controller::answers`]) and, when that
    /// finds nothing, the machine's observers, each probing it first-hand now. The monitor
    /// host may be the one cut off from the machine — its observers overruled it while the
    /// machine hung, and the hang is over since — so what they see now decides
    /// ([`crate::witness::holds_back`]: any one of them for a terminate, a majority for a fence
    /// at the source; hearsay — an observer's own checks, a group member's view — never). A
    /// machine really gone costs the observers' probes, up to about 2 s over SSH, after the
    /// traffic has moved: a terminate step comes after the promotion; a fence at the source,
    /// rare, before it.
    pub(super) async fn answers_again(&self, look: &crate::core::LastLook) -> bool {
        if self.answers(&look.machine).await {
            return true;
        }
        let Some(target) = crate::checks::target_of(&self.top().topology, &look.machine) else {
            return false;
        };
        let (w, _) = self.ask_witnesses(&target, None, false).await;
        crate::witness::holds_back(&w, look.terminate)
    }
}

/// The witness's probe of `at` (bash, run as the login user): exit 0 if it answered, 3 if it
/// refused or said nothing in time; `timeout` ends it with 124. A redis server under TLS
/// (`tls`) is sent the same clear-text PING: a running one rejects it as a TLS hello and closes
/// the connection at once (that closing is its answer), while a hung one, whose connection the
/// kernel accepted, says nothing. No TLS client is needed on the witness, and no secret or
/// certificate is involved.
fn probe_script(at: SocketAddr, how: Probe, tls: bool) -> String {
    if let (Probe::Ping, true) = (how, tls) {
        return format!(
            "exec 3<>/dev/tcp/{}/{} 2>/dev/null || exit 3; printf 'PING\\r\\n' >&3 || exit 3; IFS= read -r -t 0.3 l <&3; r=$?; [ -n \"$l\" ] || [ $r -le 128 ] || exit 3",
            at.ip(),
            at.port()
        );
    }
    let send = match how {
        // Any answer of the kernel: accepted, or refused.
        Probe::Knock(_) => {
            return format!(
                "e=$(exec 2>&1 3<>/dev/tcp/{}/{}) && exit 0; case $e in *refused*) exit 0;; esac; exit 3",
                at.ip(),
                at.port()
            );
        }
        Probe::Ping => "PING\\r\\n",
        Probe::RuntimeApi => "show info\\n",
        Probe::Http => "GET / HTTP/1.0\\r\\nUser-Agent: medic-witness\\r\\n\\r\\n",
        Probe::Connect => {
            return format!(
                "exec 3<>/dev/tcp/{}/{} 2>/dev/null || exit 3",
                at.ip(),
                at.port()
            );
        }
    };
    format!(
        "exec 3<>/dev/tcp/{}/{} 2>/dev/null || exit 3; printf '{send}' >&3 || exit 3; IFS= read -r -t 0.3 l <&3 && [ -n \"$l\" ] || exit 3",
        at.ip(),
        at.port()
    )
}

/// What the probe's exit status says of the machine: it answered (0); it did not (3, or 124
/// when `timeout` ended it); anything else (no bash, a shell error, SSH's 255) says nothing.
fn probe_answer(status: Option<i32>) -> Option<bool> {
    match status {
        Some(0) => Some(true),
        Some(3 | 124) => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_probes_own_codes_count_as_an_answer() {
        assert_eq!(probe_answer(Some(0)), Some(true));
        assert_eq!(probe_answer(Some(3)), Some(false));
        assert_eq!(probe_answer(Some(124)), Some(false));
        // sudo's refusal, bash missing, SSH failing: not evidence that the machine is gone.
        for other in [Some(1), Some(2), Some(127), Some(255), None] {
            assert_eq!(probe_answer(other), None, "{other:?}");
        }
    }

    #[test]
    fn the_probe_script_answers_with_its_own_codes() {
        let s = probe_script("10.0.0.5:9001".parse().unwrap(), Probe::Ping, false);
        assert!(
            s.starts_with("exec 3<>/dev/tcp/10.0.0.5/9001 2>/dev/null || exit 3;"),
            "{s}"
        );
        assert!(s.contains("printf 'PING\\r\\n'"), "{s}");
        assert!(s.ends_with("|| exit 3"), "{s}");
    }

    /// The script as a witness runs it (`timeout 0.4 bash -c`): its exit status.
    fn run(script: &str) -> Option<i32> {
        std::process::Command::new("timeout")
            .args(["0.4", "bash", "-c", script])
            .status()
            .unwrap()
            .code()
    }

    #[test]
    fn a_witness_knock_counts_any_answer_of_the_kernel_and_only_that() {
        let within = std::time::Duration::from_millis(100);
        let knock = |at: SocketAddr| {
            let status = std::process::Command::new("timeout")
                .args([
                    "0.1",
                    "bash",
                    "-c",
                    &probe_script(at, Probe::Knock(within), false),
                ])
                .env("LC_ALL", "C")
                .status()
                .unwrap()
                .code();
            probe_answer(status)
        };
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = open.local_addr().unwrap();
        assert_eq!(knock(at), Some(true), "accepted");
        drop(open);
        assert_eq!(knock(at), Some(true), "refused: the kernel is there");
        // A full accept queue drops SYNs: silent, as a crashed machine.
        let (full, _held) = medic_testkit::full_listener([127, 0, 0, 1].into());
        let silent = full.local_addr().unwrap();
        assert_eq!(knock(silent), Some(false), "no answer within the bound");
    }

    #[test]
    fn over_tls_a_live_server_answers_a_hung_one_does_not() {
        let certs = medic_testkit::Certs::issue("redis.medic.test");
        let server = medic_testkit::RedisServer::start_with_config(
            medic_testkit::unique_loopback(),
            9001,
            &certs.redis_conf(9001),
        );
        let script = probe_script(server.addr, Probe::Ping, true);
        let live = run(&script);
        assert_eq!(probe_answer(live), Some(true), "exit {live:?}: {script}");
        server.proc.signal("STOP");
        let hung = run(&script);
        server.proc.signal("CONT");
        assert_eq!(
            probe_answer(hung),
            Some(false),
            "a hung server: exit {hung:?}"
        );
        let refused = SocketAddr::new(server.addr.ip(), 9002);
        let none = run(&probe_script(refused, Probe::Ping, true));
        assert_eq!(
            probe_answer(none),
            Some(false),
            "nobody listens: exit {none:?}"
        );
        // The clear-text script would take the TLS server's closing for silence.
        let plain = run(&probe_script(server.addr, Probe::Ping, false));
        assert_eq!(probe_answer(plain), Some(false), "exit {plain:?}");
    }
}
