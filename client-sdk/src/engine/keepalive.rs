//! Keep-alive: once logged in, a `Ping` every heartbeat (`LoginOk.heartbeat_secs`), the
//! first one at once. Each Ping carries a fresh non-zero req_id, so its `Pong` is matched
//! like any response (docs/PROTOCOL.md: requests SHOULD carry a non-zero req_id). Any frame
//! from the server counts as a sign of life; when a Ping is due and nothing has come for
//! longer than [`liveness_timeout`], the server is taken for dead and the connection is
//! dropped for a reconnect.

use std::time::{Duration, Instant};

use tern_proto::pb;
use tern_proto::{Body, Frame};

use super::{Disconnect, Engine, InFlight};

/// The rule is tern-proto's, shared with the server and the web SDK:
/// `heartbeat * HEARTBEAT_MISSES + LIVENESS_GRACE`.
pub use tern_proto::{liveness_timeout, HEARTBEAT_MISSES, LIVENESS_GRACE};

#[derive(Debug)]
pub(super) struct KeepAlive {
    every: Duration,
    next_ping: Instant,
    last_rx: Instant,
}

impl KeepAlive {
    pub(super) fn on_receive(&mut self, now: Instant) {
        self.last_rx = self.last_rx.max(now);
    }

    pub(super) fn due(&self) -> Instant {
        self.next_ping
    }
}

impl Engine {
    /// Starts the heartbeat of an authenticated connection.
    pub(super) fn start_keepalive(&mut self, every: Duration, now: Instant) {
        self.keepalive = Some(KeepAlive {
            every,
            next_ping: now,
            last_rx: now,
        });
    }

    /// The heartbeat in use on this connection (None before LoginOk).
    pub fn heartbeat(&self) -> Option<Duration> {
        self.keepalive.as_ref().map(|k| k.every)
    }

    pub(super) fn keepalive_timeout(&mut self, now: Instant) {
        let Some(k) = &mut self.keepalive else { return };
        if now < k.next_ping {
            return;
        }
        if now.saturating_duration_since(k.last_rx) > liveness_timeout(k.every) {
            self.keepalive = None;
            self.end(Disconnect::Retry {
                reason: format!("server silent for {HEARTBEAT_MISSES} heartbeats"),
                retry_after: Duration::ZERO,
            });
            return;
        }
        k.next_ping = now + k.every;
        let id = self.req_id();
        self.in_flight.insert(id, InFlight::Ping);
        self.transmit.push_back(Frame {
            req_id: id,
            body: Some(Body::Ping(pb::Ping::default())),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::Transport;
    use crate::engine::{Credentials, Cursors};

    const HB: Duration = Duration::from_secs(10);

    /// An engine logged in at `now` with a 10 s heartbeat, its first frames drained.
    fn live(now: Instant) -> Engine {
        let mut e = Engine::new("alice", Cursors::default(), vec![]);
        e.set_credentials(
            Credentials {
                username: "alice".into(),
                password: Some("pw".into()),
                device: "d".into(),
            },
            None,
        );
        e.set_receive(false);
        e.handle_connect(Transport::Tcp, now);
        let login = e.poll_transmit().unwrap();
        e.handle_frame(
            Frame {
                req_id: login.req_id,
                body: Some(Body::LoginOk(pb::LoginOk {
                    heartbeat_secs: 10,
                    max_pending: 8,
                    ..Default::default()
                })),
            },
            now,
        );
        while e.poll_event().is_some() {}
        e
    }

    fn pings(e: &mut Engine) -> Vec<u64> {
        std::iter::from_fn(|| e.poll_transmit())
            .filter(|f| matches!(f.body, Some(Body::Ping(_))))
            .map(|f| f.req_id)
            .collect()
    }

    #[test]
    fn the_rule_is_three_heartbeats_and_a_grace() {
        assert_eq!(
            liveness_timeout(Duration::from_secs(30)),
            Duration::from_secs(92)
        );
    }

    #[test]
    fn pings_at_once_then_every_heartbeat_with_fresh_non_zero_req_ids() {
        let t0 = Instant::now();
        let mut e = live(t0);
        assert_eq!(e.heartbeat(), Some(HB));
        assert_eq!(e.poll_timeout(), Some(t0), "first ping is due at once");
        e.handle_timeout(t0);
        let first = pings(&mut e);
        assert_eq!(first.len(), 1);
        assert_ne!(first[0], 0);
        assert_eq!(e.poll_timeout(), Some(t0 + HB));
        e.handle_timeout(t0 + HB / 2);
        assert!(pings(&mut e).is_empty(), "not due yet");
        e.handle_timeout(t0 + HB);
        let second = pings(&mut e);
        assert_eq!(second.len(), 1);
        assert!(second[0] > first[0]);
    }

    #[test]
    fn the_pong_is_accepted_as_the_answer_to_its_ping() {
        let t0 = Instant::now();
        let mut e = live(t0);
        e.handle_timeout(t0);
        let id = pings(&mut e)[0];
        assert!(e.in_flight.contains_key(&id));
        e.handle_frame(
            Frame {
                req_id: id,
                body: Some(Body::Pong(pb::Pong::default())),
            },
            t0 + Duration::from_millis(5),
        );
        assert!(!e.in_flight.contains_key(&id), "the Pong settled the Ping");
        assert!(e.poll_event().is_none() && e.poll_response().is_none());
        assert_eq!(e.poll_disconnect(), None);
    }

    #[test]
    fn a_server_silent_past_the_liveness_timeout_is_dead() {
        let t0 = Instant::now();
        let mut e = live(t0);
        let mut t = t0;
        // Pings go out every heartbeat while the server says nothing...
        while t <= t0 + liveness_timeout(HB) {
            e.handle_timeout(t);
            assert_eq!(e.poll_disconnect(), None, "still alive at {:?}", t - t0);
            assert_eq!(pings(&mut e).len(), 1);
            t += HB;
        }
        // ...until the first tick after 3 heartbeats + 2 s of silence.
        e.handle_timeout(t);
        assert_eq!(
            e.poll_disconnect(),
            Some(Disconnect::Retry {
                reason: "server silent for 3 heartbeats".into(),
                retry_after: Duration::ZERO
            })
        );
        assert!(pings(&mut e).is_empty());
    }

    #[test]
    fn any_frame_from_the_server_keeps_it_alive() {
        let t0 = Instant::now();
        let mut e = live(t0);
        let mut t = t0;
        for _ in 0..20 {
            e.handle_timeout(t);
            assert_eq!(e.poll_disconnect(), None);
            // A push (ignored by this send-only engine) still counts as life.
            e.handle_frame(
                Frame {
                    req_id: 0,
                    body: Some(Body::Push(pb::MessagePush::default())),
                },
                t + HB / 2,
            );
            t += HB;
        }
    }

    #[test]
    fn no_heartbeat_before_login_or_after_disconnect() {
        let t0 = Instant::now();
        let mut e = Engine::new("alice", Cursors::default(), vec![]);
        e.on_connected("ep"); // authenticated by the caller: no heartbeat of its own
        assert_eq!(e.heartbeat(), None);
        let mut e = live(t0);
        e.on_disconnected();
        assert_eq!(e.heartbeat(), None);
        assert_eq!(e.poll_timeout(), None);
    }
}
