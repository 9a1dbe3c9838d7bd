//! A monit control file (`monitrc`), read into what medic can use: the poll cycle, each
//! `check` with its address or pid file and its `if ... then ...` tests. What is not
//! understood is kept with its line, for the report — never silently dropped.
//!
//! The grammar is monit's (its manual, "Service checks" and "Service tests"), reduced to the
//! statements a failover setup of seed 003's kind uses: `set daemon`, `check host|process|...`,
//! `with address`, `with pidfile`, `if failed [host H] port N [type T] [protocol P] [with
//! timeout N seconds] [for N cycles | N times within M cycles] then ACTION`, `if failed icmp`,
//! `start|stop program = "..."`. Keywords are case-insensitive, `#` starts a comment, strings
//! are quoted with `"` or `'`.

use thiserror::Error;

/// What makes a control file unreadable.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct MonitrcError {
    pub line: usize,
    pub message: String,
}

/// A word or a quoted string, with the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    text: String,
    quoted: bool,
    line: usize,
}

impl Token {
    fn is(&self, word: &str) -> bool {
        !self.quoted && self.text.eq_ignore_ascii_case(word)
    }
}

fn lex(text: &str) -> Result<Vec<Token>, MonitrcError> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            '#' => {
                while chars.peek().is_some_and(|d| *d != '\n') {
                    chars.next();
                }
            }
            c if c.is_whitespace() || c == ',' || c == ';' => {}
            '"' | '\'' => {
                let mut s = String::new();
                let mut closed = false;
                while let Some(d) = chars.next_if(|d| *d != '\n') {
                    if d == c {
                        closed = true;
                        break;
                    }
                    s.push(d);
                }
                if !closed {
                    return Err(MonitrcError {
                        line,
                        message: format!("a string opened with {c} is not closed on its line"),
                    });
                }
                out.push(Token {
                    text: s,
                    quoted: true,
                    line,
                });
            }
            // A block (`set mail-format { ... }`): free text, one token, never a keyword.
            '{' => {
                let from = line;
                let mut s = String::new();
                let mut depth = 1;
                for d in chars.by_ref() {
                    match d {
                        '\n' => line += 1,
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    if depth == 0 {
                        break;
                    }
                    s.push(d);
                }
                if depth > 0 {
                    return Err(MonitrcError {
                        line: from,
                        message: "a block opened with { is not closed".into(),
                    });
                }
                out.push(Token {
                    text: s,
                    quoted: true,
                    line: from,
                });
            }
            c => {
                // A word; a quote inside it (`it's`) is part of it.
                let mut s = String::from(c);
                while let Some(d) =
                    chars.next_if(|d| !d.is_whitespace() && !matches!(d, '#' | ',' | ';' | '{'))
                {
                    s.push(d);
                }
                out.push(Token {
                    text: s,
                    quoted: false,
                    line,
                });
            }
        }
    }
    Ok(out)
}

/// A monit control file, as medic reads it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Monitrc {
    /// `set daemon N`: seconds between two polls, and its line.
    pub daemon: Option<(u64, usize)>,
    /// `set ...` statements other than `daemon`, and `include`: line and text.
    pub settings: Vec<(usize, String)>,
    pub checks: Vec<Check>,
}

/// One `check TYPE NAME ...` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub line: usize,
    /// `host`, `process`, `system`, `filesystem`, ...
    pub kind: String,
    pub name: String,
    /// `with address A` (a host).
    pub address: Option<String>,
    /// `with pidfile P` or `matching "R"` (a process).
    pub process: Option<String>,
    /// `every N cycles`: the check runs every N-th poll.
    pub every: Option<u32>,
    pub tests: Vec<Test>,
    /// Clauses medic has no use for (`start program`, `group`, `depends on`, ...): line, text.
    pub other: Vec<(usize, String)>,
}

/// One `if ... then ACTION` of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Test {
    pub line: usize,
    pub condition: Condition,
    /// `for N cycles` or `N times within M cycles`: failures needed in a row (monit's default:
    /// 1).
    pub cycles: u32,
    /// `with timeout N seconds`.
    pub timeout_s: Option<u64>,
    pub action: Action,
    /// `else if succeeded then ACTION`, as written.
    pub otherwise: Option<String>,
    /// Words after the action medic does not read (`repeat every 3 cycles`, ...), as written.
    pub rest: Option<String>,
    /// The test as written, for the report.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `failed [host H] port N [type T] [protocol P]`.
    Port {
        port: u16,
        host: Option<String>,
        protocol: Option<String>,
    },
    /// `failed ping` / `failed icmp type echo`.
    Ping,
    /// Anything else (`cpu > 80%`, `space usage > 90%`, `5 restarts within 5 cycles`, ...).
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Alert,
    Restart,
    Start,
    Stop,
    Unmonitor,
    /// `exec "COMMAND"`.
    Exec(String),
    Other(String),
}

/// Words that begin a statement.
fn starts_statement(t: &Token) -> bool {
    t.is("set") || t.is("check") || t.is("include")
}

/// Reads a control file.
pub fn parse(text: &str) -> Result<Monitrc, MonitrcError> {
    let tokens = lex(text)?;
    let mut rc = Monitrc::default();
    let mut i = 0;
    while i < tokens.len() {
        let start = i;
        i += 1;
        while i < tokens.len() && !starts_statement(&tokens[i]) {
            i += 1;
        }
        let st = &tokens[start..i];
        let head = &st[0];
        if head.is("check") {
            rc.checks.push(check(st)?);
        } else if head.is("set") && st.get(1).is_some_and(|t| t.is("daemon")) {
            let n = st
                .get(2)
                .and_then(|t| t.text.parse().ok())
                .ok_or_else(|| MonitrcError {
                    line: head.line,
                    message:
                        "set daemon: expected the seconds between two polls, like `set daemon 5`"
                            .into(),
                })?;
            rc.daemon = Some((n, head.line));
        } else if head.is("set") || head.is("include") {
            rc.settings.push((head.line, join(st)));
        } else {
            return Err(MonitrcError {
                line: head.line,
                message: format!(
                    "`{}`: expected a statement (set, check or include)",
                    head.text
                ),
            });
        }
    }
    Ok(rc)
}

fn join(ts: &[Token]) -> String {
    ts.iter()
        .map(|t| {
            if t.quoted {
                format!("\"{}\"", t.text)
            } else {
                t.text.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn check(st: &[Token]) -> Result<Check, MonitrcError> {
    let line = st[0].line;
    let (Some(kind), Some(name)) = (st.get(1), st.get(2)) else {
        return Err(MonitrcError {
            line,
            message:
                "check: expected a type and a name, like `check host redis1 with address 10.0.1.10`"
                    .into(),
        });
    };
    let mut c = Check {
        line,
        kind: kind.text.to_ascii_lowercase(),
        name: name.text.clone(),
        address: None,
        process: None,
        every: None,
        tests: Vec::new(),
        other: Vec::new(),
    };
    let mut i = 3;
    while i < st.len() {
        let t = &st[i];
        if t.is("if") {
            let end = (i + 1..st.len())
                .find(|&j| clause_starts(st, j))
                .unwrap_or(st.len());
            c.tests.push(test(&st[i..end])?);
            i = end;
        } else if t.is("with") || t.is("and") || t.is("using") {
            i += 1;
        } else if t.is("address") {
            c.address = Some(value(st, i, "address")?);
            i += 2;
        } else if t.is("every")
            && let Some(n) = st.get(i + 1).and_then(|n| n.text.parse::<u32>().ok())
            && st
                .get(i + 2)
                .is_some_and(|c| c.is("cycles") || c.is("cycle"))
        {
            c.every = Some(n.max(1));
            i += 3;
        } else if t.is("pidfile") || t.is("matching") {
            c.process = Some(value(st, i, &t.text)?);
            i += 2;
        } else {
            // A clause medic does not use: up to the next one.
            let end = (i + 1..st.len())
                .find(|&j| clause_starts(st, j) || st[j].is("with"))
                .unwrap_or(st.len());
            c.other.push((t.line, join(&st[i..end])));
            i = end;
        }
    }
    Ok(c)
}

/// Whether a check's next clause starts at `st[j]`: a test (`if`, not `else if`), `group`,
/// `depends`, `every` (not `repeat every`), `mode`, `noalert`, `onreboot`, `alert` (not an
/// action: `then alert`), or `start|stop|restart program`.
fn clause_starts(st: &[Token], j: usize) -> bool {
    let t = &st[j];
    let after = |w: &str| st[j - 1].is(w);
    (t.is("if") && !after("else"))
        || (t.is("every") && !after("repeat"))
        || (t.is("alert") && !after("then"))
        || ["group", "depends", "mode", "noalert", "onreboot"]
            .iter()
            .any(|k| t.is(k))
        || (["start", "stop", "restart"].iter().any(|k| t.is(k))
            && st.get(j + 1).is_some_and(|n| n.is("program")))
}

fn value(st: &[Token], i: usize, what: &str) -> Result<String, MonitrcError> {
    st.get(i + 1)
        .map(|t| t.text.clone())
        .ok_or_else(|| MonitrcError {
            line: st[i].line,
            message: format!("{what}: expected a value after it"),
        })
}

fn test(ts: &[Token]) -> Result<Test, MonitrcError> {
    let line = ts[0].line;
    let Some(then) = ts.iter().position(|t| t.is("then")) else {
        return Err(MonitrcError {
            line,
            message: format!("`{}`: expected `then ACTION`", join(ts)),
        });
    };
    let cond = &ts[1..then];
    let num = |j: usize| cond.get(j).and_then(|t| t.text.parse::<u64>().ok());
    let pos = |w: &str| cond.iter().position(|t| t.is(w));
    let failed = cond.first().is_some_and(|t| t.is("failed"));
    let condition = match pos("port") {
        Some(p) if failed => {
            let port = num(p + 1)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| MonitrcError {
                    line,
                    message: "port: expected a port number (1 to 65535)".into(),
                })?;
            Condition::Port {
                port,
                host: pos("host")
                    .and_then(|h| cond.get(h + 1))
                    .map(|t| t.text.clone()),
                protocol: pos("protocol")
                    .or_else(|| pos("proto"))
                    .and_then(|h| cond.get(h + 1))
                    .map(|t| t.text.to_ascii_lowercase()),
            }
        }
        _ if failed && (pos("ping").is_some() || pos("icmp").is_some()) => Condition::Ping,
        _ => Condition::Other,
    };
    let timeout_s = pos("timeout").and_then(|p| num(p + 1));
    let cycles = match (pos("for"), pos("times"), pos("within")) {
        (Some(f), _, _)
            if cond
                .get(f + 2)
                .is_some_and(|t| t.is("cycles") || t.is("cycle")) =>
        {
            num(f + 1)
        }
        (_, Some(t), Some(_)) if t > 0 => num(t - 1),
        _ => None,
    }
    .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX).max(1));
    let after_then = &ts[then + 1..];
    let (act, otherwise) = match after_then.iter().position(|t| t.is("else")) {
        Some(e) => (&after_then[..e], Some(join(&after_then[e..]))),
        None => (after_then, None),
    };
    let used = if act.first().is_some_and(|a| a.is("exec")) {
        2
    } else {
        1
    };
    let rest = (act.len() > used).then(|| join(&act[used..]));
    let action = match act.first() {
        Some(a) if a.is("alert") => Action::Alert,
        Some(a) if a.is("restart") => Action::Restart,
        Some(a) if a.is("start") => Action::Start,
        Some(a) if a.is("stop") => Action::Stop,
        Some(a) if a.is("unmonitor") => Action::Unmonitor,
        Some(a) if a.is("exec") => Action::Exec(act.get(1).map(|t| t.text.clone()).ok_or_else(
            || MonitrcError {
                line,
                message: "exec: expected the command, quoted".into(),
            },
        )?),
        Some(a) => Action::Other(a.text.clone()),
        None => {
            return Err(MonitrcError {
                line,
                message: "then: expected an action (alert, restart, exec \"...\", ...)".into(),
            });
        }
    };
    Ok(Test {
        line,
        condition,
        cycles,
        timeout_s,
        action,
        otherwise,
        rest,
        text: join(ts),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_check_with_its_tests() {
        let rc = parse(
            "set daemon 5   # poll every 5 s\n\
             set logfile /var/log/monit.log\n\
             check host redis1 with address 10.0.1.10\n\
             \x20 if failed port 9001 protocol redis with timeout 2 seconds for 3 cycles\n\
             \x20    then exec \"/usr/local/sbin/failover redis redis1\"\n\
             \x20 if failed icmp type echo count 3 3 times within 5 cycles then alert\n\
             \x20 group redis\n",
        )
        .unwrap();
        assert_eq!(rc.daemon, Some((5, 1)));
        assert_eq!(rc.settings, [(2, "set logfile /var/log/monit.log".into())]);
        let c = &rc.checks[0];
        assert_eq!(
            (c.kind.as_str(), c.name.as_str(), c.line),
            ("host", "redis1", 3)
        );
        assert_eq!(c.address.as_deref(), Some("10.0.1.10"));
        assert_eq!(
            c.tests[0].condition,
            Condition::Port {
                port: 9001,
                host: None,
                protocol: Some("redis".into())
            }
        );
        assert_eq!((c.tests[0].cycles, c.tests[0].timeout_s), (3, Some(2)));
        assert_eq!(
            c.tests[0].action,
            Action::Exec("/usr/local/sbin/failover redis redis1".into())
        );
        assert_eq!(
            (&c.tests[1].condition, c.tests[1].cycles, c.tests[1].line),
            (&Condition::Ping, 3, 6)
        );
        assert_eq!(c.other, [(7, "group redis".into())]);
    }

    #[test]
    fn a_process_check_and_what_medic_does_not_use() {
        let rc = parse(
            "check process sshd with pidfile /var/run/sshd.pid\n\
             \x20 start program = \"/etc/init.d/ssh start\"\n\
             \x20 if failed port 22 protocol ssh then restart\n\
             \x20 if 5 restarts within 5 cycles then timeout\n\
             check filesystem rootfs with path /\n\
             \x20 if space usage > 90% then alert\n",
        )
        .unwrap();
        let p = &rc.checks[0];
        assert_eq!(p.process.as_deref(), Some("/var/run/sshd.pid"));
        assert_eq!(
            p.other,
            [(2, "start program = \"/etc/init.d/ssh start\"".into())]
        );
        assert_eq!(p.tests[0].action, Action::Restart);
        assert_eq!(p.tests[1].condition, Condition::Other);
        assert_eq!(p.tests[1].action, Action::Other("timeout".into()));
        assert_eq!(rc.checks[1].tests[0].condition, Condition::Other);
        assert_eq!(rc.checks[1].other, [(5, "path /".into())]);
    }

    #[test]
    fn what_follows_an_action_is_kept_apart() {
        let rc = parse(
            "set mail-format { subject: it's down\n check this { nested } }\n\
             check host r1 with address 10.0.0.1 every 2 cycles\n\
             \x20 if failed port 6379 protocol redis for 3 cycles then exec \"/sbin/failover r1\" repeat every 3 cycles\n\
             \x20    else if succeeded then exec \"/sbin/failback r1\"\n\
             \x20 alert ops@example.com\n\
             \x20 if failed host 10.0.0.9 port 6380 then alert\n",
        )
        .unwrap();
        // The block is one setting: its words are no statements.
        assert_eq!(rc.settings.len(), 1, "{:?}", rc.settings);
        assert_eq!(rc.checks.len(), 1);
        let c = &rc.checks[0];
        assert_eq!((c.line, c.every), (3, Some(2)));
        let t = &c.tests[0];
        assert_eq!(t.action, Action::Exec("/sbin/failover r1".into()));
        assert_eq!(t.rest.as_deref(), Some("repeat every 3 cycles"));
        assert_eq!(
            t.otherwise.as_deref(),
            Some("else if succeeded then exec \"/sbin/failback r1\"")
        );
        assert_eq!(c.other, [(6, "alert ops@example.com".into())]);
        assert_eq!(
            c.tests[1].condition,
            Condition::Port {
                port: 6380,
                host: Some("10.0.0.9".into()),
                protocol: None
            }
        );
        assert_eq!(c.tests[1].action, Action::Alert);
    }

    #[test]
    fn mistakes_name_their_line() {
        let e = |t: &str| parse(t).unwrap_err().to_string();
        assert_eq!(
            e("set daemon\n"),
            "line 1: set daemon: expected the seconds between two polls, like `set daemon 5`"
        );
        assert_eq!(
            e("check host a with address b\n if failed port 99999 then alert\n"),
            "line 2: port: expected a port number (1 to 65535)"
        );
        assert_eq!(
            e("check host a with address b\n if failed port 1\n"),
            "line 2: `if failed port 1`: expected `then ACTION`"
        );
        assert_eq!(
            e("check host a\n then exec \"x\n"),
            "line 2: a string opened with \" is not closed on its line"
        );
        assert_eq!(
            e("set daemon 5\nset mail-format {\n subject: x\n"),
            "line 2: a block opened with { is not closed"
        );
        assert_eq!(
            e("poll 5\n"),
            "line 1: `poll`: expected a statement (set, check or include)"
        );
        assert_eq!(
            e("check host\n"),
            "line 1: check: expected a type and a name, like `check host redis1 with address 10.0.1.10`"
        );
    }
}
