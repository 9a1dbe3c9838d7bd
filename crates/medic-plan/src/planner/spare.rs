//! Preparing a spare (`policy.spares`): one step, [`Action::PrepareSpare`].

use serde_json::json;

use medic_topology::Role;
use medic_topology::spares::SpareState;

use super::Planner;
use crate::step::{Action, Addr, AlertLevel};

impl Planner<'_> {
    /// A spare of `role` named `name`, launched as the machine `like` would be (its AMI,
    /// subnet, instance types). Its playbook's spare steps get `host` (the spare's name,
    /// address, role and topology) and nothing else.
    pub(super) fn prepare_spare(&mut self, role: Role, name: &str, like_name: &str) {
        let top = self.top;
        let like = top
            .machine(like_name)
            .filter(|m| m.role.value == role && m.ami.is_some());
        let (Some(like), Some(playbook)) = (like, role.playbook()) else {
            self.alert(
                AlertLevel::Warning,
                format!(
                    "no spare of role {} is prepared as {like_name}: it is no machine of that role with an AMI medic launches and configures",
                    role.as_str()
                ),
            );
            return;
        };
        let index = self.steps.len() + 1;
        let mut spec = self.launch_spec(name, &like.name.value, index);
        spec.tags.insert(
            medic_topology::spares::TAG_SPARE.to_owned(),
            role.as_str().to_owned(),
        );
        spec.tags
            .insert(medic_topology::spares::TAG_SPARE_FIT.to_owned(), spec.fit());
        let address = Addr::Of(name.to_owned());
        let vars = json!({
            "host": {
                "name": name,
                "address": address.to_string(),
                "role": role.as_str(),
                "topology": top.name.value,
            }
        });
        self.push(Action::PrepareSpare {
            spec,
            like: like.name.value.clone(),
            playbook: playbook.to_owned(),
            vars,
            stop: top.policy.spare_state.value == SpareState::Stopped,
            timeout_ms: top.policy.boot_timeout.value.as_millis() as u64,
        });
    }
}

/// The ways `role`'s machines are launched now ([`crate::LaunchSpec::fit`]): on aws one per
/// subnet, AMI and instance types among them. Each with the first machine launched so, which a
/// spare of that fit copies. A replacement takes only a spare of its own fit; a ready spare of
/// none of them (the AMI, a subnet or the instance types changed since) is retired.
pub fn spare_fits(top: &medic_topology::Topology, role: Role) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for m in top
        .machines
        .iter()
        .map(|m| &m.value)
        .filter(|m| m.role.value == role && m.ami.is_some())
    {
        let event = crate::Event::Spare {
            role,
            name: "fit".into(),
            like: m.name.value.clone(),
        };
        let Ok(plan) = crate::plan_recovery(top, &crate::ObservedState::empty(top), &event, "fit")
        else {
            continue;
        };
        let fit = plan.steps.iter().find_map(|s| match &s.action {
            Action::PrepareSpare { spec, .. } => Some(spec.fit()),
            _ => None,
        });
        if let Some(f) = fit
            && !out.iter().any(|(x, _)| *x == f)
        {
            out.push((f, m.name.value.clone()));
        }
    }
    out
}
