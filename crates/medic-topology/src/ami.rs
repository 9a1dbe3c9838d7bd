//! AMI definitions (`amis/*.yaml`): what a machine image has baked in.
//!
//! The AWS image id lives in the topology (it differs per region and account); the definition
//! says what any image of that name must contain, so the lab can build an equivalent machine and
//! the playbooks can rely on it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::diag::Diagnostics;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AmiDefinition {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    pub description: String,
    /// The base system the image is built from, `debian-12`.
    pub base: String,
    /// The user a fresh instance accepts SSH logins for (the cloud's key pair goes to it).
    pub login_user: String,
    /// Packages installed in the image.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Programs the playbooks call; the lab requires each to exist on the host.
    #[serde(default)]
    #[schemars(with = "Vec<PathBuf>")]
    pub binaries: Vec<Spanned<PathBuf>>,
    /// Packaged services that are installed but disabled: medic's playbooks start their own.
    #[serde(default)]
    pub disabled_services: Vec<String>,
}

/// The parts of a definition the rest of medic reads, without positions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AmiSummary {
    pub name: String,
    pub base: String,
    pub login_user: String,
    pub binaries: Vec<PathBuf>,
}

impl AmiDefinition {
    pub fn summary(&self) -> AmiSummary {
        AmiSummary {
            name: self.name.value.clone(),
            base: self.base.clone(),
            login_user: self.login_user.clone(),
            binaries: self.binaries.iter().map(|b| b.value.clone()).collect(),
        }
    }

    pub(crate) fn validate(&self, diags: &mut Diagnostics) {
        if !crate::validate::is_name(&self.name.value) {
            diags.error(
                self.name.referenced,
                "name",
                format!(
                    "`{}` is not a valid name; expected lowercase letters, digits and '-'",
                    self.name.value
                ),
            );
        }
        for (i, b) in self.binaries.iter().enumerate() {
            if !b.value.is_absolute() {
                diags.error(
                    b.referenced,
                    format!("binaries[{i}]"),
                    format!(
                        "`{}` is not an absolute path; expected /usr/bin/...",
                        b.value.display()
                    ),
                );
            }
        }
    }
}
