//! What happened, as the controller concluded: the event a plan recovers from.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What happened, as the controller concluded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A whole machine is gone (silent, or its instance terminated).
    MachineLost { machine: String },
    /// One redis process died on a machine that is otherwise alive.
    ProcessDied { shard: String, machine: String },
    /// A server answers as master while another machine is its shard's master (an old master
    /// that came back): it must never take writes again.
    StaleMaster { shard: String, machine: String },
    /// A replica replicates from another server than its shard's master (it was away when
    /// the master changed, or was pointed there by hand): its data may be another history,
    /// so it is made to follow the master again.
    FollowMaster { shard: String, machine: String },
    /// A planned change of master (an operator's `medic switchover`): no write is lost.
    Switchover {
        shard: String,
        /// The replica to promote; the most advanced one if not given.
        to: Option<String>,
    },
    /// Set the whole deployment up from nothing (the lab's `lab up`, a new deployment).
    Bootstrap,
    /// A service's machine answers, but the service fails its checks there.
    ServiceDown { service: String, machine: String },
    /// A machine a service was failed away from answers again: it rejoins as a standby.
    ServiceRejoin { service: String, machine: String },
    /// A standby's PostgreSQL streams from a server that is not the service's primary (it
    /// was away when the primary changed): it is made to follow the primary.
    ServiceFollow { service: String, machine: String },
    /// The spares of a role are fewer than `policy.spares` asks: prepare one, named `name`
    /// (unique: the name of its instance until a replacement takes it), launched as the
    /// machine `like` is (its AMI, subnet, instance types).
    Spare {
        role: medic_topology::Role,
        name: String,
        like: String,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::MachineLost { machine } => write!(f, "machine {machine} lost"),
            Event::ProcessDied { shard, machine } => write!(f, "redis {shard}@{machine} died"),
            Event::StaleMaster { shard, machine } => {
                write!(f, "redis {shard}@{machine} is a master that lost its role")
            }
            Event::FollowMaster { shard, machine } => {
                write!(
                    f,
                    "redis {shard}@{machine} replicates from another server than its master"
                )
            }
            Event::Switchover { shard, to } => match to {
                Some(m) => write!(f, "switchover of {shard} to {m}"),
                None => write!(f, "switchover of {shard}"),
            },
            Event::Bootstrap => write!(f, "set up from nothing"),
            Event::ServiceDown { service, machine } => {
                write!(f, "service {service}@{machine} failed")
            }
            Event::ServiceRejoin { service, machine } => {
                write!(f, "{machine} rejoins service {service}")
            }
            Event::ServiceFollow { service, machine } => {
                write!(
                    f,
                    "{machine} follows another primary than service {service}'s"
                )
            }
            Event::Spare { role, name, like } => {
                write!(
                    f,
                    "spare {name} of role {} prepared (launched as {like})",
                    role.as_str()
                )
            }
        }
    }
}
