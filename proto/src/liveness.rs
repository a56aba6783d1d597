//! Liveness: how long silence is tolerated before a connection counts as dead.
//!
//! `LoginOk.heartbeat_secs` tells the client how often to send a `Ping`. From there:
//!
//! - The **server** closes a session from which it has received no frame at all for
//!   [`heartbeat_timeout`] = [`HEARTBEAT_MISSES`] x heartbeat (`Closing{HEARTBEAT_TIMEOUT}`).
//! - The **QUIC idle timeout** and the **client's** rule ("no frame from the server, not even
//!   a `Pong`, for this long: the connection is dead, reconnect") are both
//!   [`liveness_timeout`] = [`HEARTBEAT_MISSES`] x heartbeat + [`LIVENESS_GRACE`]. The grace
//!   lets the server's own check fire first, so the client gets a `Closing` with a reason
//!   rather than a silent transport timeout, and absorbs a `Pong` delayed by a busy link.

use std::time::Duration;

/// Heartbeats a peer may miss: after this many heartbeat intervals of silence the
/// connection is dead.
pub const HEARTBEAT_MISSES: u32 = 3;

/// Added to `HEARTBEAT_MISSES` x heartbeat for the QUIC idle timeout and the client's
/// dead-server check.
pub const LIVENESS_GRACE: Duration = Duration::from_secs(2);

/// The server closes a session silent for this long: `heartbeat * HEARTBEAT_MISSES`.
pub fn heartbeat_timeout(heartbeat: Duration) -> Duration {
    heartbeat * HEARTBEAT_MISSES
}

/// The QUIC idle timeout, and how long a client waits without any frame from the server
/// before it drops the connection: `heartbeat * HEARTBEAT_MISSES + LIVENESS_GRACE`.
pub fn liveness_timeout(heartbeat: Duration) -> Duration {
    heartbeat_timeout(heartbeat) + LIVENESS_GRACE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_heartbeat() {
        let hb = Duration::from_secs(30);
        assert_eq!(heartbeat_timeout(hb), Duration::from_secs(90));
        assert_eq!(liveness_timeout(hb), Duration::from_secs(92));
        assert!(liveness_timeout(hb) > heartbeat_timeout(hb));
    }
}
