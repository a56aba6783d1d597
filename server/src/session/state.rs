//! The session's state machine, without I/O: connected -> authenticated, its deadline
//! (log in within `auth_timeout`; then a frame at least every 3 heartbeats), and the
//! class of each request (what is allowed before login, what costs rate budget).
//!
//! Time is passed in, so the rules are unit-tested with paused tokio time.

use std::time::Duration;

use tern_proto::pb::CloseReason;
use tern_proto::{Body, BodyKind};
use tokio::time::Instant;

pub(crate) struct SessionState {
    started: Instant,
    last_rx: Instant,
    authenticated: bool,
    heartbeat: Duration,
    auth_timeout: Duration,
}

/// What the driver does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestClass {
    /// Answered at once in any state.
    Ping,
    /// Register, Login, Resume: only before login.
    Auth,
    /// A response or push type sent by a client.
    NotARequest,
    /// Needs a logged-in session; `rate_limited` tells whether it spends rate budget.
    Authed { rate_limited: bool },
}

/// The class of a request body.
pub(crate) fn classify(body: &Body) -> RequestClass {
    match body {
        Body::Ping(_) => RequestClass::Ping,
        Body::Register(_) | Body::Login(_) | Body::Resume(_) => RequestClass::Auth,
        b if tern_proto::body_kind(b) != BodyKind::Request => RequestClass::NotARequest,
        // Acks are free: they only move a cursor and must never be refused.
        Body::Ack(_) => RequestClass::Authed {
            rate_limited: false,
        },
        _ => RequestClass::Authed { rate_limited: true },
    }
}

impl SessionState {
    pub(crate) fn new(now: Instant, heartbeat: Duration, auth_timeout: Duration) -> Self {
        Self {
            started: now,
            last_rx: now,
            authenticated: false,
            heartbeat,
            auth_timeout,
        }
    }

    pub(crate) fn frame_received(&mut self, now: Instant) {
        self.last_rx = now;
    }

    pub(crate) fn authenticated(&mut self) {
        self.authenticated = true;
    }

    #[cfg(test)]
    pub(crate) fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// When the session ends unless a frame (or a login) comes first.
    pub(crate) fn deadline(&self) -> Instant {
        if self.authenticated {
            self.last_rx + tern_proto::heartbeat_timeout(self.heartbeat)
        } else {
            self.started + self.auth_timeout
        }
    }

    /// At a timer tick: the reason to close, if the deadline has passed.
    pub(crate) fn timed_out(&self, now: Instant) -> Option<(CloseReason, &'static str)> {
        if now < self.deadline() {
            return None;
        }
        Some(if self.authenticated {
            (CloseReason::HeartbeatTimeout, "no frame for 3 heartbeats")
        } else {
            (CloseReason::AuthTimeout, "no login in time")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_proto::pb;

    const HB: Duration = Duration::from_secs(30);
    const AUTH: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_logs_in_times_out_after_auth_timeout() {
        let mut s = SessionState::new(Instant::now(), HB, AUTH);
        tokio::time::advance(Duration::from_secs(9)).await;
        // Frames (pings) before login do not extend the login deadline.
        s.frame_received(Instant::now());
        assert_eq!(s.timed_out(Instant::now()), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            s.timed_out(Instant::now()).map(|(r, _)| r),
            Some(CloseReason::AuthTimeout)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn after_login_three_missed_heartbeats_close_and_any_frame_resets_it() {
        let mut s = SessionState::new(Instant::now(), HB, AUTH);
        s.authenticated();
        assert!(s.is_authenticated());
        tokio::time::advance(Duration::from_secs(89)).await;
        assert_eq!(s.timed_out(Instant::now()), None);
        s.frame_received(Instant::now());
        tokio::time::advance(Duration::from_secs(89)).await;
        assert_eq!(
            s.timed_out(Instant::now()),
            None,
            "the frame reset the clock"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            s.timed_out(Instant::now()).map(|(r, _)| r),
            Some(CloseReason::HeartbeatTimeout)
        );
        assert_eq!(s.deadline(), Instant::now());
    }

    #[test]
    fn request_classes() {
        assert_eq!(
            classify(&Body::Ping(pb::Ping::default())),
            RequestClass::Ping
        );
        assert_eq!(
            classify(&Body::Login(pb::Login::default())),
            RequestClass::Auth
        );
        assert_eq!(
            classify(&Body::SendAck(pb::SendAck::default())),
            RequestClass::NotARequest
        );
        assert_eq!(
            classify(&Body::Push(pb::MessagePush::default())),
            RequestClass::NotARequest
        );
        assert_eq!(
            classify(&Body::Ack(pb::Ack::default())),
            RequestClass::Authed {
                rate_limited: false
            }
        );
        assert_eq!(
            classify(&Body::Send(pb::Send::default())),
            RequestClass::Authed { rate_limited: true }
        );
    }
}
