//! Web machines on the lab, for the services' tests (service_lab.rs, sounz_lab.rs): nginx
//! started and configured the way an operator's own tooling would, over SSH; a client's GET;
//! the services' role states as `medic status` gives them.

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use super::Env;

/// The web server each machine runs: `/health` for medic's check, the role include.
pub const NGINX_CONF: &str = r#"pid /run/web-nginx.pid;
worker_processes 1;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path /run/web-body;
    proxy_temp_path /run/web-proxy;
    fastcgi_temp_path /run/web-fastcgi;
    uwsgi_temp_path /run/web-uwsgi;
    scgi_temp_path /run/web-scgi;
    server {
        listen 80;
        location = /health { default_type text/plain; return 200 "ok\n"; }
        location = /address { default_type text/plain; return 200 "$server_addr\n"; }
        include /etc/web/role.conf;
    }
}
"#;

/// A client's sample: when, the address the name gave, what `/role` answered there, and how
/// many machines answered `primary` themselves.
pub type Sample = (Instant, String, String, usize);

pub fn role_conf(role: &str) -> String {
    format!(
        "location = /role {{ default_type text/plain; return 200 \"{role}\\n\"; }}\n\
         location = / {{ default_type text/html; return 200 \"<h1>front page ({role})</h1>\\n\"; }}\n"
    )
}

/// Runs `cmd` as root on the lab machine at `ip` over SSH (the operator's own tooling).
pub fn on(env: &Env, ip: &str, cmd: &str) -> String {
    on_with(&env._dir.path().join("lab/id_ed25519"), ip, cmd)
}

/// Runs `cmd` as root on the lab machine at `ip` over SSH with the private key `key`.
pub fn on_with(key: &std::path::Path, ip: &str, cmd: &str) -> String {
    let out = Command::new("ssh")
        .arg("-i")
        .arg(key)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=3",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("medic@{ip}"))
        .arg(cmd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh {ip} {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn start_nginx(env: &Env, ip: &str) {
    on(
        env,
        ip,
        "nginx -e /run/web-error.log -c /etc/web/nginx.conf && echo started",
    );
}

/// `GET path` from `ip:80`: the body's first line, or what went wrong.
pub fn get(ip: &str, path: &str) -> String {
    get_at(ip, 80, path)
}

/// `GET path` from `ip:port`: the body's first line, or what went wrong (a status other than
/// 200 is `status N`).
pub fn get_at(ip: &str, port: u16, path: &str) -> String {
    let Ok(addr) = format!("{ip}:{port}").parse() else {
        return format!("no address ({ip:?})");
    };
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return "no connection".to_owned();
    };
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let _ = s.write_all(format!("GET {path} HTTP/1.0\r\nHost: www\r\n\r\n").as_bytes());
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    match reply.split_once("\r\n\r\n") {
        Some((head, _))
            if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") =>
        {
            format!("status {}", head.split_whitespace().nth(1).unwrap_or("?"))
        }
        Some((_, body)) => body.lines().next().unwrap_or_default().to_owned(),
        None => "no reply".to_owned(),
    }
}

pub fn service(env: &Env) -> serde_json::Value {
    env.status()
        .and_then(|s| s["services"].get(0).cloned())
        .unwrap_or_default()
}

/// `machine`'s role state in the status (production, standby, ...).
pub fn state_of(env: &Env, machine: &str) -> String {
    service(env)["machines"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["machine"] == machine)
        .and_then(|m| m["state"].as_str())
        .unwrap_or("-")
        .to_owned()
}

/// What the DNS server at `server` answers for `name` (`dig +short`, one try within 1 s): the
/// address a client would be sent to, or nothing.
pub fn dig(server: &str, name: &str) -> String {
    Command::new("dig")
        .args(["+short", "+time=1", "+tries=1", &format!("@{server}"), name])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// What the lab's DNS server answers for `name`.
pub fn resolve(env: &Env, name: &str) -> String {
    dig(&env.ip(2), name)
}
