//! What the core needs to know of single steps: which it does itself, which machine a step
//! acts on, and what a finished step skipped.

use medic_plan::{Action, StepOutput};

/// Steps the core does itself (the adapter journals them like any other, and reports them
/// done with an empty output).
pub fn is_internal(action: &Action) -> bool {
    matches!(
        action,
        Action::Unmonitor { .. } | Action::Monitor { .. } | Action::Alert { .. }
    )
}

/// What an internal step says it did.
pub fn internal_summary(action: &Action) -> String {
    match action {
        Action::Unmonitor { target } => format!("{target}: no longer watched"),
        Action::Monitor { target } => format!("{target}: watched again"),
        Action::Alert { message, .. } => message.clone(),
        other => other.kind().to_owned(),
    }
}

/// The machine a step acts on, when it acts on one.
pub(super) fn step_machine(action: &Action) -> Option<&str> {
    match action {
        Action::PromoteReplica { server, .. }
        | Action::ReplicaOf { server, .. }
        | Action::PauseWrites { server, .. }
        | Action::Unpause { server }
        | Action::WaitInSync { server, .. } => Some(&server.machine),
        Action::FenceServer { proxy, .. }
        | Action::ActivateServer { proxy, .. }
        | Action::SetServerAddress { proxy, .. }
        | Action::PersistProxyConfig { proxy, .. } => Some(&proxy.machine),
        Action::FenceAtSource { machine, .. }
        | Action::TerminateInstance { machine, .. }
        | Action::WaitReachable { machine, .. }
        | Action::RunPlaybook { machine, .. } => Some(machine),
        Action::LaunchInstance { spec } => Some(&spec.machine),
        _ => None,
    }
}

/// A step that waits for a last look at a machine judged lost ([`Core::last_look`](super::Core::last_look)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastLook {
    pub machine: String,
    /// A terminate (any observer reaching it holds it back), else a fence at the source (a
    /// majority does): [`crate::witness::holds_back`].
    pub terminate: bool,
}

/// The error of a step refused because its machine answered at the last look.
pub fn last_look_failed(look: &LastLook) -> String {
    let (not, who) = if look.terminate {
        ("not terminated", "one of its observers reaches")
    } else {
        (
            "not fenced at the source",
            "a majority of its observers reach",
        )
    };
    format!(
        "{} answers again: {not} (it was judged lost, but the monitor host or {who} it now: its hang or partition is over); it is watched again and what is still wrong is acted on afresh",
        look.machine
    )
}

/// What a done step skipped: into the ledger of unmade fences (a resumed recovery's) and the
/// list that makes the recovery `incomplete`.
pub fn note_skips(
    unfenced: &mut medic_exec::Unfenced,
    skipped: &mut Vec<String>,
    action: &Action,
    output: &StepOutput,
) {
    if let Some(why) = &output.skipped {
        skipped.push(why.clone());
        if let Action::FenceServer { proxy, server, .. } = action {
            unfenced.fences.push((proxy.clone(), server.clone()));
        }
    }
    if let (Action::FenceAtSource { machine, .. }, true) = (action, output.terminated) {
        unfenced.at_source.insert(machine.clone());
    }
}
