//! `policy.spares`: only roles medic launches and configures, on a provider that launches,
//! in a deployment medic manages.

use super::Ctx;
use crate::spares::MAX_SPARES;

impl Ctx<'_, '_> {
    pub(super) fn spares(&mut self) {
        let top = self.top;
        for (role, n) in &top.policy.spares {
            let p = format!("policy.spares.{}", role.as_str());
            if n.value > MAX_SPARES {
                self.d.error(
                    n.referenced,
                    &p,
                    format!("{} spares; expected 0 to {MAX_SPARES}", n.value),
                );
            }
            if n.value == 0 {
                continue;
            }
            let why_not = if !top.provider.value.can_launch() {
                Some(
                    "the static provider launches nothing; expected provider aws or local"
                        .to_owned(),
                )
            } else if !top.managed() {
                Some(
                    "medic launches nothing in a deployment it adopted (`managed: false`)"
                        .to_owned(),
                )
            } else if role.playbook().is_none() {
                Some(format!(
                    "medic does not configure machines of role {}; expected redis, haproxy or app",
                    role.as_str()
                ))
            } else if !top
                .machines
                .iter()
                .any(|m| m.value.role.value == *role && m.value.ami.is_some())
            {
                Some(format!(
                    "no machine of role {} has an `ami` to launch a spare from",
                    role.as_str()
                ))
            } else {
                None
            };
            if let Some(why) = why_not {
                self.d.error(n.referenced, &p, why);
            } else if !top.policy.allows(crate::model::Remedy::ReplaceMachine) {
                self.d.warning(
                    n.referenced,
                    &p,
                    "replace_machine is not in policy.remediation: no replacement takes a spare; expected it there, or no spares",
                );
            }
        }
    }
}
