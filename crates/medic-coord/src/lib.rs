//! Controllers in a group, coordinated by etcd: a lease per controller, one leader holding
//! the leader key under its lease, and a **fencing token** (the leader key's creation
//! revision) that every side effect of the leader is checked against in an etcd transaction.
//!
//! - [`etcd`]: the client — etcd's v3 API through its JSON gateway (`/v3/...`, HTTP/1.1): no
//!   gRPC toolchain, the same requests `curl` can make.
//! - [`tenure`]: pure: how long a leader may act after a renewal of its lease, so that it stops
//!   before etcd can let another take over (the timing argument is in its documentation).
//!
//! Not yet wired into `medic run` (the group, the state in etcd and the takeover mid-recovery
//! come next); this is the engine they stand on, tested against a real etcd.

pub mod etcd;
pub mod tenure;
