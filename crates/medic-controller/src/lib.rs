//! `medic run`: the controller on the monitor host.
//!
//! [`core`] makes every decision without I/O: verdicts from check results, silence judged by
//! the machine's observers, which recoveries start and which step comes next. [`checks`] runs
//! every target's health check on its own schedule; [`controller`] is the I/O around the core
//! — witnesses asked over SSH, each recovery run through the executor with the [`journal`],
//! the proxies' routing reconciled; [`api`] serves the operator commands, `/metrics` and the
//! status page.

pub mod api;
pub mod checks;
pub mod controller;
pub mod core;
pub mod http;
pub mod hygiene;
pub mod journal;
pub mod knock;
pub mod notify;
mod page;
pub mod pg_check;
mod redis_checks;
pub mod saver;
pub mod service_check;
pub mod store;
pub mod stream;
pub mod witness;

pub use controller::{
    Controller, ControllerError, Reload, Setup, api_token, history_entry, medic_credentials,
    medic_redis_client,
};
