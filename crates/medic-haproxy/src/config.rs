//! Making runtime changes stick: rewriting a `server` line of haproxy.cfg.
//!
//! HAProxy forgets runtime changes when it reloads. Its `server-state-file` restores admin
//! states and ports but not the address of a server configured with a static IP (HAProxy's
//! configuration manual says so, and a test here shows it), and a stale state file silently
//! overrides later configuration changes. So medic keeps the configuration the truth: after a
//! runtime change it rewrites the server's line in the file the playbook wrote — its address,
//! and the `disabled` keyword for maintenance — and uploads it. No reload is needed for that;
//! whenever HAProxy next reloads, it starts where the runtime API left it.

use std::net::SocketAddr;

use crate::cmd::ServerName;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigEditError {
    #[error("haproxy.cfg has no backend `{0}`")]
    NoBackend(String),
    #[error("haproxy.cfg has no line `server {}` in backend `{}`", .0.server, .0.backend)]
    NoServer(ServerName),
}

/// What to change on a server line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerEdit {
    pub addr: Option<SocketAddr>,
    /// `Some(false)`: add `disabled` (starts in maintenance); `Some(true)`: remove it.
    pub enabled: Option<bool>,
}

const SECTIONS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "resolvers",
    "peers",
    "userlist",
    "cache",
    "program",
    "ring",
    "http-errors",
    "mailers",
];

/// Rewrites the `server` line of `s` in `cfg`; every other byte stays as it was.
pub fn edit_server(cfg: &str, s: &ServerName, edit: ServerEdit) -> Result<String, ConfigEditError> {
    let mut in_backend = false;
    let mut saw_backend = false;
    let mut out = Vec::new();
    let mut done = false;
    for line in cfg.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let ending = &line[body.len()..];
        let trimmed = body.trim_start();
        let first = trimmed.split_whitespace().next().unwrap_or("");
        let at_column_0 = !body.starts_with([' ', '\t']) && !trimmed.is_empty();
        if at_column_0 && SECTIONS.contains(&first) {
            let name = trimmed.split_whitespace().nth(1).unwrap_or("");
            in_backend = matches!(first, "backend" | "listen") && name == s.backend;
            saw_backend |= in_backend;
        }
        let tokens: Vec<&str> = trimmed
            .split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if in_backend
            && !done
            && tokens.len() >= 3
            && tokens[0] == "server"
            && tokens[1] == s.server
        {
            let indent = &body[..body.len() - trimmed.len()];
            let mut t: Vec<String> = tokens.iter().map(|x| (*x).to_owned()).collect();
            if let Some(a) = edit.addr {
                t[2] = a.to_string();
            }
            // `disabled` is a keyword among the options, after `server NAME ADDRESS`: a server
            // may be named `disabled` (a valid machine name).
            let mut options = t.split_off(3);
            match edit.enabled {
                Some(true) => options.retain(|x| x != "disabled"),
                Some(false) if !options.iter().any(|x| x == "disabled") => {
                    options.push("disabled".to_owned())
                }
                _ => {}
            }
            t.extend(options);
            out.push(format!("{indent}{}{ending}", t.join(" ")));
            done = true;
        } else {
            out.push(line.to_owned());
        }
    }
    if !saw_backend {
        return Err(ConfigEditError::NoBackend(s.backend.clone()));
    }
    if !done {
        return Err(ConfigEditError::NoServer(s.clone()));
    }
    Ok(out.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "global\n    daemon\n\nbackend redis-r9001\n    option tcp-check\n    server redis1 10.0.1.11:9001 check\n    server redis2 10.0.2.11:9001 check disabled\n\nbackend redis-r9002\n    server redis1 10.0.1.11:9002 check\n";

    fn s(b: &str, n: &str) -> ServerName {
        ServerName::new(b, n)
    }

    #[test]
    fn moves_and_disables_one_line_only() {
        let addr = "10.0.1.99:9001".parse().unwrap();
        let out = edit_server(
            CFG,
            &s("redis-r9001", "redis1"),
            ServerEdit {
                addr: Some(addr),
                enabled: Some(false),
            },
        )
        .unwrap();
        assert_eq!(
            out,
            CFG.replace(
                "server redis1 10.0.1.11:9001 check\n",
                "server redis1 10.0.1.99:9001 check disabled\n"
            )
        );
        // The other backend's redis1 is untouched.
        assert!(out.contains("server redis1 10.0.1.11:9002 check\n"));
    }

    #[test]
    fn enabling_removes_disabled_and_is_idempotent() {
        let e = ServerEdit {
            addr: None,
            enabled: Some(true),
        };
        let once = edit_server(CFG, &s("redis-r9001", "redis2"), e).unwrap();
        assert!(once.contains("    server redis2 10.0.2.11:9001 check\n"));
        assert_eq!(
            edit_server(&once, &s("redis-r9001", "redis2"), e).unwrap(),
            once
        );
        let off = ServerEdit {
            addr: None,
            enabled: Some(false),
        };
        let twice = edit_server(
            &edit_server(CFG, &s("redis-r9001", "redis2"), off).unwrap(),
            &s("redis-r9001", "redis2"),
            off,
        )
        .unwrap();
        assert_eq!(twice, CFG);
    }

    #[test]
    fn unknown_backend_or_server() {
        let e = ServerEdit::default();
        assert_eq!(
            edit_server(CFG, &s("nope", "redis1"), e),
            Err(ConfigEditError::NoBackend("nope".into()))
        );
        assert_eq!(
            edit_server(CFG, &s("redis-r9002", "redis2"), e)
                .unwrap_err()
                .to_string(),
            "haproxy.cfg has no line `server redis2` in backend `redis-r9002`"
        );
    }
}
