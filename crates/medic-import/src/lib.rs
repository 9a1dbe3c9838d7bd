//! From monit to medic: `medic import monit MONITRC` reads a monit control file of the kind
//! seed 003 ran on its monitor host (`check host` per machine, `if failed port ... for N
//! cycles then exec "failover ..."`) and writes a draft topology, with a report of what it
//! mapped, what it assumed and what it could not map ([`draft`]). Pure: the caller reads the
//! files and writes the draft.

pub mod draft;
pub mod monitrc;
mod render;

pub use draft::{Draft, Note, Options, Verdict, draft, parse_hosts};
pub use monitrc::{Monitrc, MonitrcError, parse};
