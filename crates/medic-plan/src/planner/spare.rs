//! Preparing a spare (`policy.spares`): one step, [`Action::PrepareSpare`].

use serde_json::json;

use medic_topology::Role;
use medic_topology::spares::SpareState;

use super::Planner;
use crate::step::{Action, Addr, AlertLevel};

impl Planner<'_> {
    /// A spare of `role` named `name`, launched as a copy of the role's first machine with an
    /// AMI. Its playbook's spare steps get `host` (the spare's name, address, role and
    /// topology) and nothing else.
    pub(super) fn prepare_spare(&mut self, role: Role, name: &str) {
        let top = self.top;
        let like = top
            .machines
            .iter()
            .map(|m| &m.value)
            .find(|m| m.role.value == role && m.ami.is_some());
        let (Some(like), Some(playbook)) = (like, role.playbook()) else {
            self.alert(
                AlertLevel::Warning,
                format!(
                    "no spare of role {} is prepared: no machine of that role has an AMI medic launches and configures",
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

/// How a spare of `role` is launched now ([`crate::LaunchSpec::fit`]), as a preparation would
/// tag it; `None` when no spare of it can be prepared. A ready spare of another fit (the AMI,
/// subnet or instance types changed since) is taken by no replacement, and is retired.
pub fn spare_fit(top: &medic_topology::Topology, role: Role) -> Option<String> {
    let plan = crate::plan_recovery(
        top,
        &crate::ObservedState::empty(top),
        &crate::Event::Spare {
            role,
            name: "fit".into(),
        },
        "fit",
    )
    .ok()?;
    plan.steps.iter().find_map(|s| match &s.action {
        Action::PrepareSpare { spec, .. } => Some(spec.fit()),
        _ => None,
    })
}
