//! `policy.spares`: machines launched ahead of need, so that a lost machine's replacement
//! does not wait for a boot (as an EC2 Auto Scaling warm pool does).
//!
//! A spare is an instance of a role, launched from that role's AMI, prepared by the steps of
//! the role's playbook marked `spare: true` (those that need nothing of the machine it will
//! become), then left running or stopped (`policy.spare_state`) and tagged ready. A
//! replacement of a machine of that role takes a ready spare instead of launching: it re-tags
//! it as the machine, starts it if it is stopped and runs the whole playbook on it.

use serde::{Deserialize, Serialize};

pub use crate::model::Role;

/// What a prepared spare is left as.
#[derive(
    Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SpareState {
    /// Running: taken in the time of a re-tag and the playbook's remaining steps.
    #[default]
    Running,
    /// Stopped (EC2 bills only its volume): taking it adds a start, tens of seconds on EC2
    /// but no boot from scratch of a fresh image.
    Stopped,
}

impl SpareState {
    pub fn as_str(self) -> &'static str {
        match self {
            SpareState::Running => "running",
            SpareState::Stopped => "stopped",
        }
    }
}

/// The most spares of one role medic keeps.
pub const MAX_SPARES: u32 = 5;

/// Tag of a spare instance: the role it is a spare of. Removed when it is taken.
pub const TAG_SPARE: &str = "medic:spare";
/// Tag of a spare whose preparation has finished (`yes`): only these are taken.
pub const TAG_SPARE_READY: &str = "medic:spare-ready";
/// Tag of a prepared spare: the SSH host key medic learned from the cloud when it prepared it
/// (a stopped instance started again may not print its keys to the console again).
pub const TAG_SPARE_HOST_KEY: &str = "medic:spare-host-key";
/// Tag of a spare: what it was launched as ([`fit`]): only a machine launched the same way
/// takes it.
pub const TAG_SPARE_FIT: &str = "medic:spare-fit";

/// A short, stable digest of how an instance is launched — its AMI, image id, subnet and
/// instance types — so that a replacement takes only a spare it could have launched itself
/// (the same AMI, in the same subnet and zone, of the same types). FNV-1a, 64 bits, in hex.
pub fn fit(ami: &str, image_id: Option<&str>, subnet: Option<&str>, types: &[String]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let text = format!(
        "{ami}|{}|{}|{}",
        image_id.unwrap_or(""),
        subnet.unwrap_or(""),
        types.join(",")
    );
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}
