//! `show servers state` and `show stat`, typed.

use std::collections::HashMap;

use serde::Serialize;

/// Admin state bits of `srv_admin_state` (HAProxy's SRV_ADMF_*).
pub mod admin {
    /// Forced into maintenance (runtime API).
    pub const FMAINT: u32 = 0x01;
    /// Inherited maintenance from a tracked server.
    pub const IMAINT: u32 = 0x02;
    /// `disabled` in the configuration. HAProxy keeps this bit after `state ready` while the
    /// server runs normally, so it does not count as maintenance on its own.
    pub const CMAINT: u32 = 0x04;
    /// Forced drain.
    pub const FDRAIN: u32 = 0x08;
    /// Inherited drain.
    pub const IDRAIN: u32 = 0x10;
    /// Maintenance because its name does not resolve.
    pub const RMAINT: u32 = 0x20;
    /// Maintenance from a hostname change.
    pub const HMAINT: u32 = 0x40;
    pub const MAINT: u32 = FMAINT | IMAINT | RMAINT | HMAINT;
    pub const DRAIN: u32 = FDRAIN | IDRAIN;
}

/// `srv_op_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpState {
    Stopped,
    Starting,
    Running,
    Stopping,
}

/// One server of `show servers state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerState {
    pub backend: String,
    pub server: String,
    pub addr: String,
    pub port: u16,
    pub op_state: OpState,
    pub admin_state: u32,
}

impl ServerState {
    pub fn in_maint(&self) -> bool {
        self.admin_state & admin::MAINT != 0
    }

    pub fn in_drain(&self) -> bool {
        self.admin_state & admin::DRAIN != 0
    }

    /// Neither in maintenance nor draining: it takes traffic when its checks pass.
    pub fn is_ready(&self) -> bool {
        !self.in_maint() && !self.in_drain()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unexpected `{command}` reply: {detail}")]
pub struct ParseError {
    pub command: &'static str,
    pub detail: String,
}

/// Parses `show servers state` (format version 1).
pub fn parse_servers_state(text: &str) -> Result<Vec<ServerState>, ParseError> {
    let err = |detail: String| ParseError {
        command: "show servers state",
        detail,
    };
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    match lines.next() {
        Some("1") => {}
        other => return Err(err(format!("format version {other:?}, expected 1"))),
    }
    let header = lines.next().ok_or_else(|| err("no header".into()))?;
    let names: Vec<&str> = header.trim_start_matches('#').split_whitespace().collect();
    let col = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| err(format!("no column {name}")))
    };
    let (be, srv, addr, op, adm, port) = (
        col("be_name")?,
        col("srv_name")?,
        col("srv_addr")?,
        col("srv_op_state")?,
        col("srv_admin_state")?,
        col("srv_port")?,
    );
    let mut out = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        let get = |i: usize| {
            f.get(i)
                .copied()
                .ok_or_else(|| err(format!("short line: {line}")))
        };
        let num = |i: usize| {
            get(i).and_then(|v| {
                v.parse::<u32>()
                    .map_err(|_| err(format!("not a number: {v}")))
            })
        };
        out.push(ServerState {
            backend: get(be)?.to_owned(),
            server: get(srv)?.to_owned(),
            addr: get(addr)?.to_owned(),
            port: get(port)?
                .parse()
                .map_err(|_| err(format!("bad port in: {line}")))?,
            op_state: match num(op)? {
                0 => OpState::Stopped,
                1 => OpState::Starting,
                2 => OpState::Running,
                3 => OpState::Stopping,
                n => return Err(err(format!("op state {n}"))),
            },
            admin_state: num(adm)?,
        });
    }
    Ok(out)
}

/// One row of `show stat`: a frontend, backend or server, with the fields medic reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatRow {
    pub proxy: String,
    /// `FRONTEND`, `BACKEND`, or the server's name.
    pub name: String,
    /// Current sessions.
    pub scur: u64,
    /// `UP`, `DOWN`, `MAINT`, `OPEN`, `no check`, ...
    pub status: String,
    pub check_status: String,
    /// Every column by name, as HAProxy wrote it.
    pub fields: HashMap<String, String>,
}

/// Parses `show stat` (CSV with a `# pxname,svname,...` header).
pub fn parse_stat(text: &str) -> Result<Vec<StatRow>, ParseError> {
    let err = |detail: String| ParseError {
        command: "show stat",
        detail,
    };
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().ok_or_else(|| err("empty".into()))?;
    let names: Vec<String> = header
        .trim_start_matches('#')
        .trim()
        .split(',')
        .map(str::to_owned)
        .collect();
    if names.first().map(String::as_str) != Some("pxname") {
        return Err(err(format!("header {header}")));
    }
    let mut out = Vec::new();
    for line in lines {
        let fields: HashMap<String, String> = names
            .iter()
            .cloned()
            .zip(line.split(',').map(str::to_owned))
            .filter(|(k, _)| !k.is_empty())
            .collect();
        let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
        out.push(StatRow {
            proxy: get("pxname"),
            name: get("svname"),
            scur: get("scur").parse().unwrap_or(0),
            status: get("status"),
            check_status: get("check_status"),
            fields: fields.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Copied from HAProxy 2.6.12 on this kind of machine.
    const STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n2 be1 1 s1 127.9.9.10 0 1 1 1 0 8 2 0 6 0 0 0 - 9001 - 0 0 - - 0\n2 be1 2 s2 127.9.9.11 2 4 1 1 0 1 0 0 14 0 0 0 - 9001 - 0 0 - - 0\n2 be1 3 s3 127.9.9.12 2 8 1 1 0 1 0 2 0 0 0 0 - 9002 - 0 0 - - 0\n\n";

    #[test]
    fn servers_state() {
        let s = parse_servers_state(STATE).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s[0].server.as_str(), s[0].op_state, s[0].in_maint()),
            ("s1", OpState::Stopped, true)
        );
        // `disabled` in the config, then `state ready`: CMAINT stays, the server is ready.
        assert_eq!(
            (s[1].admin_state, s[1].is_ready(), s[1].op_state),
            (4, true, OpState::Running)
        );
        assert!(s[2].in_drain() && !s[2].is_ready());
        assert_eq!(s[2].port, 9002);
    }

    #[test]
    fn stat_csv() {
        let text = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status\nbe1,s1,0,0,3,5,,9,0,0,,0,,0,0,0,0,MAINT,1,1,0,1,1,3,3,,1,2,1,,0,,2,0,,0,L4CON\n";
        let rows = parse_stat(text).unwrap();
        assert_eq!(rows[0].scur, 3);
        assert_eq!(rows[0].status, "MAINT");
        assert_eq!(rows[0].check_status, "L4CON");
        assert_eq!(rows[0].fields["smax"], "5");
    }

    #[test]
    fn garbage() {
        assert!(parse_servers_state("No such backend.\n").is_err());
        assert!(parse_servers_state("1\n# be_name\n").is_err());
        assert!(parse_stat("").is_err());
        assert!(parse_stat("hello,world\n").is_err());
    }
}
