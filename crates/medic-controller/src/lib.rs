//! `medic run`: the controller on the monitor host.
//!
//! [`checks`] runs every target's health check on its own schedule; [`controller`] turns the
//! results into verdicts, asks the witnesses before acting on silence, and runs the planner's
//! recoveries through the executor one step at a time with the [`journal`]; [`api`] serves the
//! operator commands, `/metrics` and the status page.

pub mod api;
pub mod checks;
pub mod controller;
pub mod http;
pub mod journal;
pub mod notify;
mod page;
pub mod store;

pub use controller::{Controller, ControllerError, Reload, Setup, api_token, history_entry};
