//! Free loopback ports.

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to :0, read, release).
///
/// # Panics
/// Panics if no port can be bound.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}
