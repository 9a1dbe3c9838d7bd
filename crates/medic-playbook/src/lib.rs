//! Playbooks: ordered, idempotent steps that configure a machine over SSH.
//!
//! A playbook is YAML (`playbooks/*.yaml`). Each step does exactly one thing:
//!
//! - `command`: a shell command, skipped when its `creates` path exists or its `unless`
//!   command succeeds, so running it again is harmless;
//! - `file`: write a file from a template; the runner rewrites it only if its content differs;
//! - `wait_for_port`: wait until a TCP port accepts connections.
//!
//! Every string is a [minijinja] template filled from the playbook's variables; `for_each`
//! repeats a step for every element of a list variable, bound to `item`, and `when` skips a step
//! whose expression is false. Rendering is pure: [`Playbook::render`] turns a playbook and its
//! variables into [`RenderedStep`]s, which `medic plan` prints and the runner executes.
//!
//! # Errors
//! Loading reports every problem of a file at once, located ([`load_playbook`]). Rendering
//! fails on a variable that is missing or undefined — templates run in strict mode, so a typo
//! never renders as an empty string.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use minijinja::{Environment, UndefinedBehavior, Value};
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};

use medic_topology::diag::{Diagnostic, Diagnostics};
use medic_topology::duration::Dur;
use medic_topology::load::parse_file;

const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Playbook {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    pub description: String,
    /// The variables the playbook needs; each must be given when it runs.
    #[serde(default)]
    #[schemars(with = "Vec<VarDecl>")]
    pub vars: Vec<Spanned<VarDecl>>,
    #[schemars(with = "Vec<Step>")]
    pub steps: Vec<Spanned<Step>>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VarDecl {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    pub description: String,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Repeat the step for each element of this list variable, bound to `item`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub for_each: Option<Spanned<String>>,
    /// A template expression; the step is skipped where it is false.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub when: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub command: Option<Spanned<String>>,
    /// Skip `command` if this path exists.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub creates: Option<Spanned<String>>,
    /// Skip `command` if this command exits 0.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub unless: Option<Spanned<String>>,
    /// How long `command` may run.
    #[serde(default)]
    pub timeout: Option<Dur>,
    #[serde(default)]
    #[schemars(with = "Option<FileSpec>")]
    pub file: Option<Spanned<FileSpec>>,
    #[serde(default)]
    #[schemars(with = "Option<WaitSpec>")]
    pub wait_for_port: Option<Spanned<WaitSpec>>,
    /// Run also when a spare of the role is prepared (`policy.spares`): the step needs
    /// nothing of the machine the spare will become — only `host.address`, `host.role` and
    /// `host.topology`; every other variable is null then.
    #[serde(default)]
    pub spare: bool,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    #[schemars(with = "String")]
    pub path: Spanned<String>,
    /// Octal permission bits, `"0644"`.
    #[serde(default = "default_mode")]
    #[schemars(with = "String")]
    pub mode: Spanned<String>,
    #[schemars(with = "String")]
    pub content: Spanned<String>,
}

fn default_mode() -> Spanned<String> {
    medic_topology::model::unspanned("0644".to_owned())
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitSpec {
    /// Defaults to the machine's own address, `{{ host.address }}`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub host: Option<Spanned<String>>,
    #[schemars(with = "String")]
    pub port: Spanned<String>,
    #[serde(default)]
    pub timeout: Option<Dur>,
}

/// One step with its templates filled in: exactly what the runner does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RenderedStep {
    pub name: String,
    #[serde(flatten)]
    pub action: RenderedAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum RenderedAction {
    Command {
        command: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        creates: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        unless: Option<String>,
        timeout_ms: u64,
    },
    File {
        path: String,
        mode: u32,
        content: String,
    },
    WaitForPort {
        host: String,
        port: u16,
        timeout_ms: u64,
    },
}

impl RenderedAction {
    /// A sha256 of a file's content, short, for showing which version a plan writes.
    pub fn content_digest(content: &str) -> String {
        let d = Sha256::digest(content.as_bytes());
        d.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for RenderedAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenderedAction::Command {
                command,
                creates,
                unless,
                ..
            } => {
                write!(f, "$ {command}")?;
                if let Some(c) = creates {
                    write!(f, "    (skipped if {c} exists)")?;
                }
                if let Some(u) = unless {
                    write!(f, "    (skipped if `{u}` succeeds)")?;
                }
                Ok(())
            }
            RenderedAction::File {
                path,
                mode,
                content,
            } => write!(
                f,
                "write {path} mode {mode:04o} ({} lines, sha256 {}…)",
                content.lines().count(),
                Self::content_digest(content)
            ),
            RenderedAction::WaitForPort {
                host,
                port,
                timeout_ms,
            } => {
                write!(
                    f,
                    "wait until {host}:{port} accepts connections (up to {})",
                    human_ms(*timeout_ms)
                )
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("playbook {playbook}: variable `{var}` is not given; expected it in the step's vars")]
    MissingVar { playbook: String, var: String },
    #[error("playbook {playbook}, step `{step}`: {field}: {source}")]
    Template {
        playbook: String,
        step: String,
        field: &'static str,
        #[source]
        source: minijinja::Error,
    },
    #[error("playbook {playbook}, step `{step}`: `for_each: {var}` is not a list")]
    NotAList {
        playbook: String,
        step: String,
        var: String,
    },
    #[error(
        "playbook {playbook}, step `{step}`: {field} rendered as `{value}`; expected {expected}"
    )]
    BadValue {
        playbook: String,
        step: String,
        field: &'static str,
        value: String,
        expected: &'static str,
    },
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Playbooks write config files and shell commands, never HTML.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_keep_trailing_newline(true);
    // `{{ value | shell_quote }}`: one shell word whatever the value holds.
    env.add_filter("shell_quote", shell_quote);
    env
}

/// A value as one single-quoted shell word (`'` written as `'\''`).
fn shell_quote(value: String) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

impl Playbook {
    pub fn name(&self) -> &str {
        &self.name.value
    }

    pub fn var_names(&self) -> impl Iterator<Item = &str> {
        self.vars.iter().map(|v| v.value.name.value.as_str())
    }

    /// The steps marked `spare: true`, rendered for a spare being prepared: the variables not
    /// in `vars` are null.
    pub fn render_spare(&self, vars: &serde_json::Value) -> Result<Vec<RenderedStep>, RenderError> {
        self.spare_only().render(&self.spare_vars(vars))
    }

    /// This playbook with only its steps marked `spare: true`.
    pub fn spare_only(&self) -> Playbook {
        let mut only = self.clone();
        only.steps.retain(|s| s.value.spare);
        only
    }

    /// `vars` with every variable the playbook declares and `vars` lacks set to null.
    pub fn spare_vars(&self, vars: &serde_json::Value) -> serde_json::Value {
        let mut vars = vars.clone();
        if let Some(o) = vars.as_object_mut() {
            for v in self.var_names() {
                o.entry(v.to_owned()).or_insert(serde_json::Value::Null);
            }
        }
        vars
    }

    /// Fills in every step with `vars` (a JSON object) and expands `for_each`.
    pub fn render(&self, vars: &serde_json::Value) -> Result<Vec<RenderedStep>, RenderError> {
        let playbook = self.name.value.clone();
        for v in self.var_names() {
            if vars.get(v).is_none() {
                return Err(RenderError::MissingVar {
                    playbook,
                    var: v.to_owned(),
                });
            }
        }
        let env = environment();
        let base = Value::from_serialize(vars);
        let mut out = Vec::new();
        for step in &self.steps {
            let step = &step.value;
            let sname = step.name.value.clone();
            let items: Vec<Option<Value>> = match &step.for_each {
                None => vec![None],
                Some(var) => {
                    let list =
                        vars.get(&var.value)
                            .and_then(|v| v.as_array())
                            .ok_or_else(|| RenderError::NotAList {
                                playbook: playbook.clone(),
                                step: sname.clone(),
                                var: var.value.clone(),
                            })?;
                    list.iter()
                        .map(|i| Some(Value::from_serialize(i)))
                        .collect()
                }
            };
            for item in items {
                let ctx = match &item {
                    Some(i) => minijinja::context! { item => i.clone(), ..base.clone() },
                    None => base.clone(),
                };
                let tmpl = |field: &'static str, src: &str| -> Result<String, RenderError> {
                    env.render_str(src, &ctx)
                        .map_err(|source| RenderError::Template {
                            playbook: playbook.clone(),
                            step: sname.clone(),
                            field,
                            source,
                        })
                };
                if let Some(when) = &step.when {
                    let expr = compile_when(&env, &when.value).map_err(|source| {
                        RenderError::Template {
                            playbook: playbook.clone(),
                            step: sname.clone(),
                            field: "when",
                            source,
                        }
                    })?;
                    let keep = expr.eval(&ctx).map_err(|source| RenderError::Template {
                        playbook: playbook.clone(),
                        step: sname.clone(),
                        field: "when",
                        source,
                    })?;
                    if !keep.is_true() {
                        continue;
                    }
                }
                let name = tmpl("name", &step.name.value)?;
                let action = if let Some(cmd) = &step.command {
                    RenderedAction::Command {
                        command: tmpl("command", &cmd.value)?.trim().to_owned(),
                        creates: step
                            .creates
                            .as_ref()
                            .map(|c| tmpl("creates", &c.value))
                            .transpose()?,
                        unless: step
                            .unless
                            .as_ref()
                            .map(|u| tmpl("unless", &u.value))
                            .transpose()?,
                        timeout_ms: step
                            .timeout
                            .map_or(DEFAULT_COMMAND_TIMEOUT, Dur::as_duration)
                            .as_millis() as u64,
                    }
                } else if let Some(file) = &step.file {
                    let file = &file.value;
                    let mode =
                        parse_mode(&file.mode.value).ok_or_else(|| RenderError::BadValue {
                            playbook: playbook.clone(),
                            step: sname.clone(),
                            field: "file.mode",
                            value: file.mode.value.clone(),
                            expected: "octal permission bits like \"0644\"",
                        })?;
                    RenderedAction::File {
                        path: tmpl("file.path", &file.path.value)?,
                        mode,
                        content: tmpl("file.content", &file.content.value)?,
                    }
                } else if let Some(wait) = &step.wait_for_port {
                    let wait = &wait.value;
                    let host = match &wait.host {
                        Some(h) => tmpl("wait_for_port.host", &h.value)?,
                        None => tmpl("wait_for_port.host", "{{ host.address }}")?,
                    };
                    let port_text = tmpl("wait_for_port.port", &wait.port.value)?;
                    let port = port_text
                        .trim()
                        .parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| RenderError::BadValue {
                            playbook: playbook.clone(),
                            step: sname.clone(),
                            field: "wait_for_port.port",
                            value: port_text.clone(),
                            expected: "a port from 1 to 65535",
                        })?;
                    RenderedAction::WaitForPort {
                        host,
                        port,
                        timeout_ms: wait
                            .timeout
                            .map_or(DEFAULT_WAIT_TIMEOUT, Dur::as_duration)
                            .as_millis() as u64,
                    }
                } else {
                    // load_playbook rejects a step without an action; nothing to run.
                    continue;
                };
                out.push(RenderedStep { name, action });
            }
        }
        Ok(out)
    }

    fn validate(&self, d: &mut Diagnostics) {
        if !medic_topology::validate::is_name(&self.name.value) {
            d.error(
                self.name.referenced,
                "name",
                format!(
                    "`{}` is not a valid name; expected lowercase letters, digits and '-'",
                    self.name.value
                ),
            );
        }
        let env = environment();
        let declared: Vec<&str> = self.var_names().collect();
        if self.steps.is_empty() {
            d.error(
                self.name.referenced,
                "steps",
                "no steps; expected at least one",
            );
        }
        let syntax = |d: &mut Diagnostics, s: &Spanned<String>, path: String| {
            if let Err(e) = env.template_from_str(&s.value) {
                d.error(
                    s.referenced,
                    path,
                    format!("template error: {}", e.detail().unwrap_or(&e.to_string())),
                );
            }
        };
        for (i, st) in self.steps.iter().enumerate() {
            let s = &st.value;
            let p = format!("steps[{i}]");
            syntax(d, &s.name, format!("{p}.name"));
            let actions: Vec<&str> = [
                s.command.as_ref().map(|_| "command"),
                s.file.as_ref().map(|_| "file"),
                s.wait_for_port.as_ref().map(|_| "wait_for_port"),
            ]
            .into_iter()
            .flatten()
            .collect();
            if actions.len() != 1 {
                d.error(
                    st.referenced,
                    p.clone(),
                    format!(
                        "step `{}` has {}; expected exactly one of command, file, wait_for_port",
                        s.name.value,
                        if actions.is_empty() {
                            "no action".to_owned()
                        } else {
                            actions.join(" and ")
                        }
                    ),
                );
            }
            if s.command.is_none() {
                for (field, v) in [("creates", &s.creates), ("unless", &s.unless)] {
                    if let Some(v) = v {
                        d.error(
                            v.referenced,
                            format!("{p}.{field}"),
                            format!(
                                "`{field}` guards a command; expected it only on a `command` step"
                            ),
                        );
                    }
                }
            }
            if let Some(fe) = &s.for_each
                && !declared.contains(&fe.value.as_str())
            {
                d.error(
                    fe.referenced,
                    format!("{p}.for_each"),
                    format!(
                        "`{}` is not a declared variable; expected one of {}",
                        fe.value,
                        declared.join(", ")
                    ),
                );
            }
            if let Some(w) = &s.when
                && let Err(e) = compile_when(&env, &w.value)
            {
                d.error(
                    w.referenced,
                    format!("{p}.when"),
                    format!("expression error: {}", e.detail().unwrap_or(&e.to_string())),
                );
            }
            for (field, v) in [
                ("command", &s.command),
                ("creates", &s.creates),
                ("unless", &s.unless),
            ] {
                if let Some(v) = v {
                    syntax(d, v, format!("{p}.{field}"));
                }
            }
            if let Some(f) = &s.file {
                syntax(d, &f.value.path, format!("{p}.file.path"));
                syntax(d, &f.value.content, format!("{p}.file.content"));
                if parse_mode(&f.value.mode.value).is_none() {
                    d.error(
                        f.value.mode.referenced,
                        format!("{p}.file.mode"),
                        format!(
                            "`{}` is not a mode; expected octal permission bits like \"0644\"",
                            f.value.mode.value
                        ),
                    );
                }
            }
            if let Some(w) = &s.wait_for_port {
                syntax(d, &w.value.port, format!("{p}.wait_for_port.port"));
                if let Some(h) = &w.value.host {
                    syntax(d, h, format!("{p}.wait_for_port.host"));
                }
            }
        }
    }
}

/// `1500ms`, `10s`: durations as the topology writes them.
pub fn human_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn parse_mode(s: &str) -> Option<u32> {
    let m = u32::from_str_radix(s.trim(), 8).ok()?;
    (m <= 0o7777).then_some(m)
}

/// Loads and validates one playbook file; every problem is reported.
pub fn load_playbook(path: &Path) -> Result<Playbook, Vec<Diagnostic>> {
    let parsed = parse_file::<Playbook>(path, "a playbook (see docs/playbooks.md)");
    let Some(pb) = parsed.value else {
        return Err(parsed.diagnostics);
    };
    let mut d = Diagnostics::new(path);
    d.extend(parsed.diagnostics);
    pb.validate(&mut d);
    if d.has_errors() {
        Err(d.into_sorted())
    } else {
        Ok(pb)
    }
}

/// The playbooks a deployment uses, by name.
#[derive(Debug, Clone, Default)]
pub struct Playbooks {
    pub dir: PathBuf,
    pub by_name: BTreeMap<String, Playbook>,
}

impl Playbooks {
    /// Loads `DIR/NAME.yaml` for each name; reports every problem of every file.
    pub fn load<'n>(
        dir: &Path,
        names: impl IntoIterator<Item = &'n str>,
    ) -> Result<Self, Vec<Diagnostic>> {
        let mut by_name = BTreeMap::new();
        let mut all = Vec::new();
        for name in names {
            let path = dir.join(format!("{name}.yaml"));
            match load_playbook(&path) {
                Ok(pb) => {
                    if pb.name() != name {
                        all.push(Diagnostic {
                            severity: medic_topology::diag::Severity::Error,
                            file: path.clone(),
                            pos: pb.name.referenced.into(),
                            path: "name".into(),
                            message: format!("the playbook is named `{}`; expected `{name}`, as its file name says", pb.name()),
                        });
                    }
                    by_name.insert(name.to_owned(), pb);
                }
                Err(d) => all.extend(d),
            }
        }
        if all.is_empty() {
            Ok(Playbooks {
                dir: dir.to_path_buf(),
                by_name,
            })
        } else {
            Err(all)
        }
    }

    pub fn get(&self, name: &str) -> Option<&Playbook> {
        self.by_name.get(name)
    }
}

/// A step's `when:` compiled. It is an expression, never a template: a template's delimiters
/// in it are refused here (minijinja's expression lexer panics on a stray `}}`), and a panic
/// of the compiler on any other input is an error too, never medic's.
fn compile_when<'env, 'source>(
    env: &'env minijinja::Environment<'source>,
    src: &'source str,
) -> Result<minijinja::Expression<'env, 'source>, minijinja::Error> {
    if ["{{", "}}", "{%", "%}", "{#", "#}"]
        .iter()
        .any(|d| src.contains(d))
    {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::SyntaxError,
            "a `when` is an expression (e.g. `item.role == \"replica\"`), without {{ }} or {% %}",
        ));
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| env.compile_expression(src)))
        .unwrap_or_else(|_| {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::SyntaxError,
                "the expression cannot be parsed",
            ))
        })
}

/// A playbook file's JSON Schema, generated from [`Playbook`] (`medic schema playbook`).
pub fn schema() -> serde_json::Value {
    medic_topology::schema::titled(
        schemars::schema_for!(Playbook),
        "medic playbook",
        "Steps that configure a machine over SSH, with their variables (docs/playbooks.md).",
    )
}

#[cfg(test)]
mod tests;
