//! medic's planner: decide, then act.
//!
//! [`plan_recovery`] is a pure function from a topology, the observed state and an event to a
//! [`Plan`]: an ordered list of typed [`Step`]s, each carrying its concrete target. `medic plan`
//! prints a plan; `medic run` executes the very same values. [`describe`] renders a step as
//! the exact commands it sends (HAProxy runtime API, redis, EC2, Route 53, SSH playbook).

mod commands;
pub mod describe;
mod describe_pg;
pub mod event;
pub mod planner;
pub mod rejoin;
mod resume;
pub mod state;
pub mod step;
pub mod vars;

/// `policy.spares`: its tags and settings, for the crates that take spares.
pub use medic_topology::spares;
pub use planner::{
    Hints, KEPT, PlanError, client_token, plan_recovery, plan_with, plan_without_restart,
    spare_fits,
};
pub use state::{MachineState, ObservedState, ReplicaState, ServiceState, ShardState, StepOutput};
pub use step::*;
