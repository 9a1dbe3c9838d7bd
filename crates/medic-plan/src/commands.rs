//! The exact commands a step sends: HAProxy's runtime API, a service address's shell
//! command, redis's — what `medic plan` prints and the executors send.

use crate::step::Action;

impl Action {
    /// The HAProxy runtime API commands this step sends, one per connection, in order, with
    /// the servers named as HAProxy names them (`aliases`). The HAProxy driver sends exactly
    /// these strings.
    pub fn haproxy_commands(&self, aliases: &medic_haproxy::Aliases) -> Vec<String> {
        use medic_haproxy::{AdminState, cmd};
        match self {
            Action::FenceServer { server, .. } => {
                let server = aliases.to_haproxy(server);
                vec![
                    cmd::set_state(&server, AdminState::Maint),
                    cmd::shutdown_sessions(&server),
                ]
            }
            Action::ActivateServer { server, .. } => {
                vec![cmd::set_state(
                    &aliases.to_haproxy(server),
                    AdminState::Ready,
                )]
            }
            Action::SetServerAddress {
                server,
                address,
                port,
                ..
            } => vec![cmd::set_addr(&aliases.to_haproxy(server), address, *port)],
            _ => Vec::new(),
        }
    }

    /// The shell command a `ServiceAddress` step runs on its machine (as root).
    pub fn address_command(&self) -> Option<String> {
        let Action::ServiceAddress {
            ip,
            interface,
            up,
            detect_duplicate,
            ..
        } = self
        else {
            return None;
        };
        let bare = ip.split('/').next().unwrap_or(ip);
        // Whether any interface of this machine holds the address now.
        let held = format!("ip -o -4 addr show | grep -qF ' inet {bare}/'");
        Some(if *up {
            // Never brought up while another host answers for it (duplicate address
            // detection), unless it is this machine's already; then announced (gratuitous
            // ARP, three times, in the background: the step does not wait for them).
            let detect = if *detect_duplicate {
                format!(
                    "if ! {held}; then arping -q -D -c 1 -w 1 -I {interface} {bare} || {{ echo '{bare} is answered by another host (arping -D): not brought up' >&2; exit 1; }}; fi; "
                )
            } else {
                String::new()
            };
            format!(
                "command -v arping >/dev/null || {{ echo 'arping (iputils-arping) is missing' >&2; exit 1; }}; \
                 ip link show dev {interface} >/dev/null || exit 1; \
                 {detect}ip addr replace {ip} dev {interface} && {{ setsid arping -q -U -c 3 -I {interface} {bare} </dev/null >/dev/null 2>&1 & }}"
            )
        } else {
            format!("ip addr del {ip} dev {interface} 2>/dev/null; ! {held}")
        })
    }

    /// The redis commands this step sends, as redis-cli would show them.
    pub fn redis_commands(&self) -> Vec<String> {
        match self {
            Action::PromoteReplica { .. } => vec!["REPLICAOF NO ONE".to_owned()],
            Action::ReplicaOf {
                master,
                master_port,
                ..
            } => vec![format!("REPLICAOF {master} {master_port}")],
            Action::WaitInSync { .. } => vec!["INFO replication".to_owned()],
            Action::PauseWrites { timeout_ms, .. } => {
                vec![format!("CLIENT PAUSE {timeout_ms} WRITE")]
            }
            Action::Unpause { .. } => vec!["CLIENT UNPAUSE".to_owned()],
            _ => Vec::new(),
        }
    }
}
