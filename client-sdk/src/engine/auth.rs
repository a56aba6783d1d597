//! Authentication on each new connection: the first frame the engine sends, and what it
//! does with the answer.
//!
//! - With a saved token not yet tried on this connection: `Resume`. Otherwise, with a
//!   password: `Login`. With neither: [`Event::AuthLost`], stop.
//! - `LoginOk`: keep the new token, size the send window from `max_pending`, start the
//!   heartbeat, sync and resend ([`Engine::on_connected`]), [`Event::Connected`].
//! - An error: see [`AuthAction::for_error`].
//! - No answer within [`AUTH_TIMEOUT`]: reconnect.

use std::time::{Duration, Instant};

use tern_proto::pb::{self, ErrorCode};
use tern_proto::{body_name, Body, Frame, PROTOCOL_VERSION};

use super::{Disconnect, Engine, Event};
use crate::connect::Transport;

/// How long the engine waits for the answer to Login or Resume before reconnecting.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(15);

/// Who the client is.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    /// Used when there is no valid token; without it an expired token ends the client.
    pub password: Option<String>,
    pub device: String,
}

/// What a login error means for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthAction {
    /// The token is no good but there is a password: drop the token, `Login` now on the
    /// same connection.
    LoginWithPassword,
    /// The credentials will not work however often they are tried: drop the token,
    /// [`Event::AuthLost`], stop.
    GiveUp,
    /// Something passing (the server is busy, rate limits): reconnect later.
    RetryLater,
}

impl AuthAction {
    /// The policy for an `Error` answer to Login/Resume.
    pub fn for_error(code: ErrorCode, have_password: bool) -> Self {
        let token_bad = matches!(
            code,
            ErrorCode::InvalidToken | ErrorCode::TokenExpired | ErrorCode::TokenRevoked
        );
        if token_bad && have_password {
            return AuthAction::LoginWithPassword;
        }
        if token_bad
            || matches!(
                code,
                ErrorCode::InvalidCredentials
                    | ErrorCode::InvalidArgument
                    | ErrorCode::UnsupportedVersion
            )
        {
            return AuthAction::GiveUp;
        }
        AuthAction::RetryLater
    }
}

/// The engine's authentication state.
#[derive(Debug, Default)]
pub(super) struct Auth {
    /// None: the caller authenticates by itself and calls `on_connected`.
    pub(super) credentials: Option<Credentials>,
    pub(super) token: Option<String>,
    /// Resume was tried on this connection (so the next attempt is Login).
    tried_token: bool,
    /// The Login/Resume in flight: its req_id and when to give up on it.
    pending: Option<(u64, Instant)>,
    transport: Option<Transport>,
}

impl Auth {
    pub(super) fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        self.pending.map(|(_, at)| at)
    }

    pub(super) fn on_disconnected(&mut self) {
        self.pending = None;
        self.transport = None;
    }
}

impl Engine {
    /// Lets the engine authenticate each connection itself, with these credentials and
    /// the token saved from last time.
    pub fn set_credentials(&mut self, credentials: Credentials, token: Option<String>) {
        self.auth.credentials = Some(credentials);
        self.auth.token = token;
    }

    /// The session token to save (from the last LoginOk; None once it was refused).
    pub fn token(&self) -> Option<&str> {
        self.auth.token.as_deref()
    }

    /// True while the Login/Resume on this connection awaits its answer.
    pub fn is_authenticating(&self) -> bool {
        self.auth.is_pending()
    }

    /// A new connection is up: authenticate on it (the first frame is ready in
    /// [`Engine::poll_transmit`]). Without credentials this only notes the transport.
    pub fn handle_connect(&mut self, transport: Transport, now: Instant) {
        self.disconnect = None;
        self.keepalive = None;
        self.auth.transport = Some(transport);
        self.auth.tried_token = false;
        self.auth.pending = None;
        if self.auth.credentials.is_some() {
            self.send_auth(now);
        }
    }

    /// Queues Resume (saved token, not yet tried here) or Login (password).
    fn send_auth(&mut self, now: Instant) {
        let Some(creds) = &self.auth.credentials else {
            return;
        };
        let body = match (&self.auth.token, &creds.password) {
            (Some(t), _) if !self.auth.tried_token => {
                self.auth.tried_token = true;
                Body::Resume(pb::Resume {
                    protocol_version: PROTOCOL_VERSION,
                    token: t.clone(),
                })
            }
            (_, Some(pw)) => Body::Login(pb::Login {
                protocol_version: PROTOCOL_VERSION,
                username: creds.username.clone(),
                password: pw.clone(),
                device: creds.device.clone(),
            }),
            (_, None) => {
                self.auth.pending = None;
                self.stop(Event::AuthLost {
                    code: ErrorCode::InvalidToken,
                    message: "no valid token and no password: log in again".into(),
                });
                return;
            }
        };
        let id = self.req_id();
        self.auth.pending = Some((id, now + AUTH_TIMEOUT));
        self.transmit.push_back(Frame {
            req_id: id,
            body: Some(body),
        });
    }

    /// A frame while authenticating: only the answer to Login/Resume counts.
    pub(super) fn on_auth_frame(&mut self, frame: Frame, now: Instant) {
        match self.auth.pending {
            Some((id, _)) if id == frame.req_id => {}
            _ => return,
        }
        self.auth.pending = None;
        match frame.body {
            Some(Body::LoginOk(ok)) => self.on_login_ok(ok, now),
            Some(Body::Error(e)) => {
                let code = ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Internal);
                let have_password = self
                    .auth
                    .credentials
                    .as_ref()
                    .is_some_and(|c| c.password.is_some());
                match AuthAction::for_error(code, have_password) {
                    AuthAction::LoginWithPassword => {
                        self.auth.token = None;
                        self.send_auth(now);
                    }
                    AuthAction::GiveUp => {
                        self.auth.token = None;
                        self.stop(Event::AuthLost {
                            code,
                            message: e.message,
                        });
                    }
                    AuthAction::RetryLater => self.retry(e.message),
                }
            }
            Some(other) => self.retry(format!("unexpected {}", body_name(&other))),
            None => self.retry("unexpected answer from server: empty response".into()),
        }
    }

    fn on_login_ok(&mut self, ok: pb::LoginOk, now: Instant) {
        self.auth.token = Some(ok.token.clone());
        self.set_window((ok.max_pending as usize / 2).max(1));
        self.on_connected(&ok.store_epoch);
        self.start_keepalive(Duration::from_secs(ok.heartbeat_secs.max(1) as u64), now);
        if let Some(transport) = self.auth.transport {
            self.events.push_back(Event::Connected {
                transport,
                username: ok.username,
                device: ok.device,
            });
        }
    }

    /// No answer to Login/Resume in time.
    pub(super) fn auth_timeout(&mut self, now: Instant) {
        if self.auth.deadline().is_some_and(|t| t <= now) {
            self.auth.pending = None;
            self.retry("no answer to login".into());
        }
    }

    fn retry(&mut self, reason: String) {
        self.end(Disconnect::Retry {
            reason,
            retry_after: Duration::ZERO,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Cursors;

    fn creds(password: Option<&str>) -> Credentials {
        Credentials {
            username: "alice".into(),
            password: password.map(Into::into),
            device: "phone".into(),
        }
    }

    fn engine(password: Option<&str>, token: Option<&str>) -> Engine {
        let mut e = Engine::new("alice", Cursors::default(), vec![]);
        e.set_credentials(creds(password), token.map(Into::into));
        e
    }

    fn sent(e: &mut Engine) -> Vec<Frame> {
        std::iter::from_fn(|| e.poll_transmit()).collect()
    }

    fn error(req_id: u64, code: ErrorCode) -> Frame {
        Frame {
            req_id,
            body: Some(Body::Error(pb::Error {
                code: code as i32,
                message: format!("{code:?}"),
                ..Default::default()
            })),
        }
    }

    fn login_ok(req_id: u64) -> Frame {
        Frame {
            req_id,
            body: Some(Body::LoginOk(pb::LoginOk {
                username: "alice".into(),
                device: "phone".into(),
                token: "new-token".into(),
                heartbeat_secs: 10,
                max_pending: 64,
                store_epoch: "ep".into(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn resume_with_the_saved_token_first_with_a_fresh_req_id() {
        let now = Instant::now();
        let mut e = engine(Some("pw"), Some("old-token"));
        e.handle_connect(Transport::Tcp, now);
        let f = sent(&mut e);
        assert_eq!(f.len(), 1);
        assert_ne!(f[0].req_id, 0);
        assert!(matches!(&f[0].body, Some(Body::Resume(r)) if r.token == "old-token"));
        assert!(e.is_authenticating());
    }

    #[test]
    fn login_with_the_password_when_there_is_no_token() {
        let mut e = engine(Some("pw"), None);
        e.handle_connect(Transport::Quic, Instant::now());
        let f = sent(&mut e);
        assert!(
            matches!(&f[0].body, Some(Body::Login(l)) if l.password == "pw" && l.device == "phone")
        );
    }

    #[test]
    fn neither_token_nor_password_loses_auth_and_stops() {
        let mut e = engine(None, None);
        e.handle_connect(Transport::Tcp, Instant::now());
        assert!(sent(&mut e).is_empty());
        assert!(matches!(
            e.poll_event(),
            Some(Event::AuthLost {
                code: ErrorCode::InvalidToken,
                ..
            })
        ));
        assert_eq!(e.poll_disconnect(), Some(Disconnect::Stop));
    }

    #[test]
    fn login_ok_connects_syncs_resends_and_keeps_the_token() {
        let now = Instant::now();
        let mut e = engine(Some("pw"), None);
        e.send(crate::engine::Outgoing {
            client_msg_id: "m1".into(),
            target: crate::engine::Target::User("bob".into()),
            body: bytes::Bytes::from_static(b"hi"),
            content_type: String::new(),
            reply_to: 0,
            mentions: vec![],
            mention_all: false,
            ttl_secs: 0,
            created_ms: 0,
            attachment: None,
        });
        e.handle_connect(Transport::Tcp, now);
        let login = sent(&mut e).remove(0);
        assert!(
            sent(&mut e).is_empty(),
            "nothing but the login before LoginOk"
        );
        e.handle_frame(login_ok(login.req_id), now);
        assert!(e.is_connected() && !e.is_authenticating());
        assert_eq!(e.token(), Some("new-token"));
        assert_eq!(
            e.poll_event(),
            Some(Event::Connected {
                transport: Transport::Tcp,
                username: "alice".into(),
                device: "phone".into()
            })
        );
        let kinds: Vec<&str> = sent(&mut e)
            .iter()
            .map(|f| body_name(f.body.as_ref().unwrap()))
            .collect();
        assert!(
            kinds.contains(&"Sync") && kinds.contains(&"Send"),
            "{kinds:?}"
        );
        assert_eq!(e.window, 32, "half of max_pending");
    }

    #[test]
    fn a_bad_token_falls_back_to_the_password_on_the_same_connection() {
        let now = Instant::now();
        let mut e = engine(Some("pw"), Some("old"));
        e.handle_connect(Transport::Tcp, now);
        let resume = sent(&mut e).remove(0);
        e.handle_frame(error(resume.req_id, ErrorCode::TokenExpired), now);
        let login = sent(&mut e).remove(0);
        assert!(matches!(login.body, Some(Body::Login(_))));
        assert_ne!(login.req_id, resume.req_id);
        assert_eq!(e.token(), None);
        assert_eq!(e.poll_disconnect(), None);
        e.handle_frame(login_ok(login.req_id), now);
        assert!(e.is_connected());
    }

    #[test]
    fn a_bad_token_without_a_password_loses_auth() {
        let now = Instant::now();
        let mut e = engine(None, Some("old"));
        e.handle_connect(Transport::Tcp, now);
        let resume = sent(&mut e).remove(0);
        e.handle_frame(error(resume.req_id, ErrorCode::TokenRevoked), now);
        assert!(matches!(
            e.poll_event(),
            Some(Event::AuthLost {
                code: ErrorCode::TokenRevoked,
                ..
            })
        ));
        assert_eq!(e.poll_disconnect(), Some(Disconnect::Stop));
        assert_eq!(e.token(), None);
    }

    #[test]
    fn wrong_password_gives_up_but_a_busy_server_is_retried() {
        let now = Instant::now();
        let mut e = engine(Some("pw"), None);
        e.handle_connect(Transport::Tcp, now);
        let login = sent(&mut e).remove(0);
        e.handle_frame(error(login.req_id, ErrorCode::InvalidCredentials), now);
        assert_eq!(e.poll_disconnect(), Some(Disconnect::Stop));

        let mut e = engine(Some("pw"), None);
        e.handle_connect(Transport::Tcp, now);
        let login = sent(&mut e).remove(0);
        e.handle_frame(error(login.req_id, ErrorCode::RateLimited), now);
        assert!(e.poll_event().is_none());
        assert!(matches!(
            e.poll_disconnect(),
            Some(Disconnect::Retry { .. })
        ));
    }

    #[test]
    fn the_error_policy_table() {
        use AuthAction::*;
        use ErrorCode::*;
        for (code, with_pw, without_pw) in [
            (InvalidToken, LoginWithPassword, GiveUp),
            (TokenExpired, LoginWithPassword, GiveUp),
            (TokenRevoked, LoginWithPassword, GiveUp),
            (InvalidCredentials, GiveUp, GiveUp),
            (InvalidArgument, GiveUp, GiveUp),
            (UnsupportedVersion, GiveUp, GiveUp),
            (RateLimited, RetryLater, RetryLater),
            (Internal, RetryLater, RetryLater),
            (Unavailable, RetryLater, RetryLater),
        ] {
            assert_eq!(AuthAction::for_error(code, true), with_pw, "{code:?}");
            assert_eq!(AuthAction::for_error(code, false), without_pw, "{code:?}");
        }
    }

    #[test]
    fn no_answer_within_the_auth_timeout_reconnects() {
        let now = Instant::now();
        let mut e = engine(Some("pw"), None);
        e.handle_connect(Transport::Tcp, now);
        sent(&mut e);
        assert_eq!(e.poll_timeout(), Some(now + AUTH_TIMEOUT));
        e.handle_timeout(now + AUTH_TIMEOUT - Duration::from_millis(1));
        assert_eq!(e.poll_disconnect(), None);
        e.handle_timeout(now + AUTH_TIMEOUT);
        assert_eq!(
            e.poll_disconnect(),
            Some(Disconnect::Retry {
                reason: "no answer to login".into(),
                retry_after: Duration::ZERO
            })
        );
    }

    #[test]
    fn other_frames_while_authenticating_are_ignored() {
        let now = Instant::now();
        let mut e = engine(Some("pw"), None);
        e.handle_connect(Transport::Tcp, now);
        let login = sent(&mut e).remove(0);
        e.handle_frame(error(login.req_id + 7, ErrorCode::Internal), now);
        assert!(e.is_authenticating());
        assert_eq!(e.poll_disconnect(), None);
    }
}
