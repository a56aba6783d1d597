//! How a connection ends: a `Closing` from the server, the engine's own decision (auth
//! refused, server silent), or the transport failing. Each ends as one [`Disconnect`],
//! which the event loop acts on: reconnect (after its backoff, and at least `retry_after`)
//! or stop for good.
//!
//! `Closing` reasons (docs/PROTOCOL.md, "Close reasons"):
//! - `REPLACED`: the same device logged in elsewhere. Do not reconnect (two clients with
//!   one device name would evict each other forever): [`Event::Replaced`], stop.
//! - `REVOKED`, `LOGGED_OUT`: the token is void. Drop it, [`Event::AuthLost`], stop.
//! - anything else (`SHUTDOWN`, `SLOW_CONSUMER`, `HEARTBEAT_TIMEOUT`, ...): reconnect,
//!   waiting at least the server's `retry_after_ms`.

use std::time::Duration;

use tern_proto::pb::{self, CloseReason, ErrorCode};

use super::{Engine, Event};

/// Why the engine wants the connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disconnect {
    /// Reconnect after the usual backoff, and not before `retry_after`.
    Retry {
        reason: String,
        retry_after: Duration,
    },
    /// Stop for good (the event that says why has been emitted).
    Stop,
}

impl Engine {
    /// Ends the connection (the first reason wins).
    pub(super) fn end(&mut self, d: Disconnect) {
        if self.disconnect.is_none() {
            self.disconnect = Some(d);
        }
    }

    /// Emits `event` and ends the connection for good.
    pub(super) fn stop(&mut self, event: Event) {
        self.events.push_back(event);
        self.end(Disconnect::Stop);
    }

    pub(super) fn on_closing(&mut self, c: &pb::Closing) {
        match CloseReason::try_from(c.reason).unwrap_or(CloseReason::Unspecified) {
            CloseReason::Replaced => self.stop(Event::Replaced),
            CloseReason::Revoked | CloseReason::LoggedOut => {
                self.auth.token = None;
                self.stop(Event::AuthLost {
                    code: ErrorCode::TokenRevoked,
                    message: c.message.clone(),
                });
            }
            _ => self.end(Disconnect::Retry {
                reason: format!("server closed: {}", c.message),
                retry_after: Duration::from_millis(u64::from(c.retry_after_ms)),
            }),
        }
    }

    /// The transport failed or the server ended the stream (`reason` says how). Returns
    /// what to do; a decision the engine made before (e.g. after a `Closing`) wins.
    pub fn handle_connection_lost(&mut self, reason: String) -> Disconnect {
        let reason = if self.auth.is_pending() {
            "connection lost during login".to_string()
        } else {
            reason
        };
        self.end(Disconnect::Retry {
            reason,
            retry_after: Duration::ZERO,
        });
        self.disconnect.take().unwrap_or(Disconnect::Stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Cursors;
    use tern_proto::{Body, Frame};

    fn closing(reason: CloseReason, retry_after_ms: u32) -> Frame {
        Frame {
            req_id: 0,
            body: Some(Body::Closing(pb::Closing {
                reason: reason as i32,
                message: "bye".into(),
                retry_after_ms,
            })),
        }
    }

    fn engine() -> Engine {
        let mut e = Engine::new("alice", Cursors::default(), vec![]);
        e.set_credentials(
            crate::engine::Credentials {
                username: "alice".into(),
                password: Some("pw".into()),
                device: "d".into(),
            },
            Some("tok".into()),
        );
        e.on_connected("ep");
        e
    }

    #[test]
    fn replaced_stops_without_reconnecting() {
        let mut e = engine();
        e.handle_frame(closing(CloseReason::Replaced, 0), std::time::Instant::now());
        assert_eq!(e.poll_event(), Some(Event::Replaced));
        assert_eq!(e.poll_disconnect(), Some(Disconnect::Stop));
        assert_eq!(e.token(), Some("tok"), "the token is still good");
    }

    #[test]
    fn revoked_and_logged_out_drop_the_token_and_stop() {
        for reason in [CloseReason::Revoked, CloseReason::LoggedOut] {
            let mut e = engine();
            e.handle_frame(closing(reason, 0), std::time::Instant::now());
            assert_eq!(
                e.poll_event(),
                Some(Event::AuthLost {
                    code: ErrorCode::TokenRevoked,
                    message: "bye".into()
                })
            );
            assert_eq!(e.poll_disconnect(), Some(Disconnect::Stop));
            assert_eq!(e.token(), None);
        }
    }

    #[test]
    fn shutdown_and_the_rest_reconnect_after_the_servers_retry_after() {
        let mut e = engine();
        e.handle_frame(
            closing(CloseReason::Shutdown, 1000),
            std::time::Instant::now(),
        );
        assert_eq!(e.poll_event(), None);
        assert_eq!(
            e.poll_disconnect(),
            Some(Disconnect::Retry {
                reason: "server closed: bye".into(),
                retry_after: Duration::from_secs(1)
            })
        );
        for reason in [
            CloseReason::Unspecified,
            CloseReason::SlowConsumer,
            CloseReason::HeartbeatTimeout,
            CloseReason::ProtocolError,
            CloseReason::AuthTimeout,
        ] {
            let mut e = engine();
            e.handle_frame(closing(reason, 0), std::time::Instant::now());
            assert!(
                matches!(e.poll_disconnect(), Some(Disconnect::Retry { retry_after, .. }) if retry_after.is_zero()),
                "{reason:?}"
            );
        }
    }

    #[test]
    fn a_lost_connection_reconnects_unless_the_engine_decided_otherwise() {
        let mut e = engine();
        assert_eq!(
            e.handle_connection_lost("connection closed by server".into()),
            Disconnect::Retry {
                reason: "connection closed by server".into(),
                retry_after: Duration::ZERO
            }
        );
        let mut e = engine();
        e.handle_frame(closing(CloseReason::Replaced, 0), std::time::Instant::now());
        assert_eq!(e.handle_connection_lost("eof".into()), Disconnect::Stop);
    }

    #[test]
    fn a_connection_lost_during_login_says_so() {
        let mut e = engine();
        e.on_disconnected();
        e.handle_connect(crate::connect::Transport::Tcp, std::time::Instant::now());
        assert!(e.is_authenticating());
        assert!(matches!(
            e.handle_connection_lost("eof".into()),
            Disconnect::Retry { reason, .. } if reason == "connection lost during login"
        ));
    }
}
