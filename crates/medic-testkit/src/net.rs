//! Network stand-ins for the tests.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// A listener on `ip` whose accept queue is full: new connections' SYNs are dropped, as a
/// machine that is gone would drop them. Keep both halves alive while it is used.
pub fn full_listener(ip: IpAddr) -> (TcpListener, Vec<TcpStream>) {
    let l = TcpListener::bind(SocketAddr::new(ip, 0)).expect("a loopback listener");
    let at = l.local_addr().expect("its address");
    let mut held = Vec::new();
    while held.len() < 4096 {
        match TcpStream::connect_timeout(&at, Duration::from_millis(200)) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    assert!(held.len() < 4096, "the accept queue never filled");
    (l, held)
}
