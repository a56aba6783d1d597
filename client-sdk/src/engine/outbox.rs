//! The outbox: sends waiting for their durable ack. Each keeps its client_msg_id for
//! life; on every new connection the unacknowledged ones are sent again, in their original
//! order, at most `window` in flight. A retryable refusal
//! ([`ErrorCode::is_retryable`], the rule in tern-proto) pauses all sending for
//! [`RETRY_DELAY`] or the server's `Error.retry_after_ms`, whichever is longer; then the
//! outbox is sent again from its oldest entry, in order. Never a later entry before an
//! earlier one: the server refuses the sends pipelined behind a refused one (its send
//! fence, PROTOCOL.md 8.2), and they go again behind it. Any other refusal leaves the
//! outbox as [`Event::SendFailed`].
//!
//! Expiring sends: an entry with a time-to-live (`ttl_secs`, counted from `created_ms`,
//! the wall-clock time it was queued) that has not been sent when its TTL passes (queued
//! offline, waiting for the window or a retry, or cut by a lost connection) is dropped
//! from the outbox and reported as [`Event::SendExpired`], never sent late. A (re)send
//! carries the TTL that is left, so the server drops it when the app meant it to. The
//! engine learns the wall-clock time from [`Engine::set_now_ms`]; until it is told one,
//! nothing expires.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tern_proto::pb::{self, ErrorCode};
use tern_proto::{Body, Frame};

use super::{Engine, Event, InFlight};

/// Retry delay for a send that failed with a transient error on a live connection.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// The 1:1 conversation with this user.
    User(String),
    /// An existing conversation (`g:…` or `d:…:…`).
    Conversation(String),
}

/// A message waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub client_msg_id: String,
    pub target: Target,
    pub body: Bytes,
    pub content_type: String,
    /// The seq (same conversation) this message answers; 0 = none.
    pub reply_to: u64,
    /// Members mentioned by name.
    pub mentions: Vec<String>,
    /// An @all (groups, owner/admin only).
    pub mention_all: bool,
    /// Time to live in seconds, from `created_ms`; 0 = never dropped.
    pub ttl_secs: u32,
    /// When it was queued (Unix ms, wall clock); 0 = unknown (its TTL then counts from
    /// each send).
    pub created_ms: u64,
    /// An image or file message: the uploaded blob and the file name to show (only
    /// `blob_id` and `name` are sent; the server fills in the rest).
    pub attachment: Option<pb::Attachment>,
}

impl Outgoing {
    /// Unix ms after which it must not be sent; None = never expires.
    pub fn expires_ms(&self) -> Option<u64> {
        (self.ttl_secs > 0 && self.created_ms > 0)
            .then(|| self.created_ms + u64::from(self.ttl_secs) * 1000)
    }

    /// The TTL to send at `now_ms`: what is left of it, rounded up (at least 1 s).
    fn ttl_left(&self, now_ms: u64) -> u32 {
        match self.expires_ms() {
            Some(end) if now_ms > 0 => {
                let left_ms = end.saturating_sub(now_ms);
                (left_ms.div_ceil(1000).max(1)).min(u64::from(self.ttl_secs)) as u32
            }
            _ => self.ttl_secs,
        }
    }

    fn to_frame(&self, req_id: u64, now_ms: u64) -> Frame {
        let (conversation, peer) = match &self.target {
            Target::User(u) => (String::new(), u.clone()),
            Target::Conversation(c) => (c.clone(), String::new()),
        };
        Frame {
            req_id,
            body: Some(Body::Send(pb::Send {
                client_msg_id: self.client_msg_id.clone(),
                conversation,
                peer,
                body: self.body.clone(),
                content_type: self.content_type.clone(),
                reply_to: self.reply_to,
                mentions: self.mentions.clone(),
                mention_all: self.mention_all,
                ttl_secs: self.ttl_left(now_ms),
                attachment: self.attachment.clone(),
            })),
        }
    }
}

#[derive(Debug)]
pub(super) struct Pending {
    pub(super) msg: Outgoing,
    /// req_id of the attempt on the current connection, if sent on it.
    pub(super) req_id: Option<u64>,
}

impl Pending {
    pub(super) fn new(msg: Outgoing) -> Self {
        Self { msg, req_id: None }
    }
}

impl Engine {
    /// Queues a message; it is sent now if connected (and the window allows), else on
    /// the next connection.
    pub fn send(&mut self, msg: Outgoing) {
        self.outbox.push_back(Pending::new(msg));
        self.fill_window();
    }

    /// Tells the engine the wall-clock time (Unix ms), for send TTLs. The event loop
    /// calls it before driving the engine; tests call it with the time they want.
    pub fn set_now_ms(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// Drops the unsent entries whose TTL has passed (at the time of
    /// [`Engine::set_now_ms`]), each reported as [`Event::SendExpired`]. An entry in
    /// flight is left to its answer. Called before every (re)send; the loop also calls it
    /// while offline so the app hears of an expiry without waiting for a connection.
    pub fn expire_outbox(&mut self) {
        let now = self.now_ms;
        if now == 0 {
            return;
        }
        let mut i = 0;
        while i < self.outbox.len() {
            let p = &self.outbox[i];
            if p.req_id.is_none() && p.msg.expires_ms().is_some_and(|end| end <= now) {
                let p = self.outbox.remove(i).expect("index in range");
                self.events.push_back(Event::SendExpired {
                    client_msg_id: p.msg.client_msg_id,
                    target: p.msg.target,
                    ttl_secs: p.msg.ttl_secs,
                });
            } else {
                i += 1;
            }
        }
    }

    /// The earliest TTL end (Unix ms) of an entry not in flight: when to call
    /// [`Engine::expire_outbox`] next.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.outbox
            .iter()
            .filter(|p| p.req_id.is_none())
            .filter_map(|p| p.msg.expires_ms())
            .min()
    }

    /// Transmits unsent outbox entries, in order, while the window has room (dropping
    /// expired ones first); nothing while paused after a refusal, and nothing past an
    /// entry still in flight behind one it sends again.
    pub(super) fn fill_window(&mut self) {
        self.expire_outbox();
        if !self.connected || self.send_paused_until.is_some() {
            return;
        }
        let now_ms = self.now_ms;
        let mut in_flight = self.outbox.iter().filter(|p| p.req_id.is_some()).count();
        let mut sent = false;
        for i in 0..self.outbox.len() {
            if in_flight >= self.window {
                break;
            }
            if self.outbox[i].req_id.is_some() {
                // Still in flight behind one just sent again (after a refusal): its
                // answer may be a refusal too, and then it must go before what follows.
                if sent {
                    break;
                }
                continue;
            }
            sent = true;
            let id = self.req_id();
            let p = &mut self.outbox[i];
            p.req_id = Some(id);
            self.transmit.push_back(p.msg.to_frame(id, now_ms));
            self.in_flight
                .insert(id, InFlight::Send(p.msg.client_msg_id.clone()));
            in_flight += 1;
        }
    }

    /// The answer to a Send.
    pub(super) fn on_send_response(&mut self, cmid: String, body: Body, now: Instant) {
        match body {
            Body::SendAck(ack) => {
                if let Some(i) = self.outbox.iter().position(|p| p.msg.client_msg_id == cmid) {
                    self.outbox.remove(i);
                }
                self.events.push_back(Event::Acked(ack));
                self.fill_window();
            }
            Body::Error(e) => {
                let code = ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Internal);
                if let Some(i) = self.outbox.iter().position(|p| p.msg.client_msg_id == cmid) {
                    if code.is_retryable() {
                        // Nothing more goes out until the pause ends: then the outbox is
                        // sent again from its oldest entry, so this one stays ahead of
                        // every later one (those in flight come back refused too).
                        let wait = RETRY_DELAY.max(Duration::from_millis(e.retry_after_ms));
                        self.outbox[i].req_id = None;
                        self.send_paused_until = self.send_paused_until.max(Some(now + wait));
                    } else {
                        self.outbox.remove(i);
                        self.events.push_back(Event::SendFailed {
                            client_msg_id: cmid,
                            code,
                            message: e.message,
                        });
                    }
                }
                self.fill_window();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Cursors;

    fn refused(e: &mut Engine, code: ErrorCode, retry_after_ms: u64, now: Instant) {
        let f = e.poll_transmit().unwrap();
        e.handle_frame(
            Frame {
                req_id: f.req_id,
                body: Some(Body::Error(pb::Error {
                    code: code as i32,
                    message: "later".into(),
                    retry_after_ms,
                })),
            },
            now,
        );
    }

    fn outgoing(id: &str) -> Outgoing {
        Outgoing {
            client_msg_id: id.into(),
            target: Target::User("bob".into()),
            body: Bytes::from_static(b"hi"),
            content_type: String::new(),
            reply_to: 0,
            mentions: vec![],
            mention_all: false,
            ttl_secs: 0,
            created_ms: 0,
            attachment: None,
        }
    }

    fn engine_with_one_send() -> Engine {
        let mut e = Engine::new("alice", Cursors::default(), vec![]);
        e.set_receive(false);
        e.on_connected("ep");
        e.send(outgoing("m"));
        e
    }

    /// The (req_id, client_msg_id) of every Send transmitted since the last call.
    fn transmitted(e: &mut Engine) -> Vec<(u64, String)> {
        std::iter::from_fn(|| e.poll_transmit())
            .filter_map(|f| match f.body {
                Some(Body::Send(s)) => Some((f.req_id, s.client_msg_id)),
                _ => None,
            })
            .collect()
    }

    fn answer_error(e: &mut Engine, req_id: u64, code: ErrorCode, now: Instant) {
        e.handle_frame(
            Frame {
                req_id,
                body: Some(Body::Error(pb::Error {
                    code: code as i32,
                    message: "no".into(),
                    retry_after_ms: 0,
                })),
            },
            now,
        );
    }

    fn ids(sent: &[(u64, String)]) -> Vec<&str> {
        sent.iter().map(|(_, id)| id.as_str()).collect()
    }

    #[test]
    fn after_a_retryable_refusal_nothing_overtakes_the_refused_send() {
        let now = Instant::now();
        let mut e = Engine::new("alice", Cursors::default(), vec![]);
        e.set_receive(false);
        e.on_connected("ep");
        for id in ["m1", "m2", "m3"] {
            e.send(outgoing(id));
        }
        let first = transmitted(&mut e);
        assert_eq!(ids(&first), ["m1", "m2", "m3"]);
        answer_error(&mut e, first[0].0, ErrorCode::RateLimited, now);
        // Queued after the refusal: it waits behind m1.
        e.send(outgoing("m4"));
        assert!(transmitted(&mut e).is_empty(), "paused");
        // The server's fence refused what was pipelined behind m1.
        answer_error(&mut e, first[1].0, ErrorCode::Unavailable, now);
        answer_error(&mut e, first[2].0, ErrorCode::Unavailable, now);
        e.handle_timeout(now + RETRY_DELAY - Duration::from_millis(1));
        assert!(transmitted(&mut e).is_empty(), "not before the pause ends");
        e.handle_timeout(now + RETRY_DELAY);
        assert_eq!(ids(&transmitted(&mut e)), ["m1", "m2", "m3", "m4"]);
    }

    #[test]
    fn a_resend_stops_at_a_send_whose_answer_has_not_come() {
        let now = Instant::now();
        let mut e = Engine::new("alice", Cursors::default(), vec![]);
        e.set_receive(false);
        e.on_connected("ep");
        for id in ["m1", "m2", "m3"] {
            e.send(outgoing(id));
        }
        let first = transmitted(&mut e);
        answer_error(&mut e, first[0].0, ErrorCode::Internal, now);
        answer_error(&mut e, first[1].0, ErrorCode::Unavailable, now);
        e.send(outgoing("m4"));
        // m3's answer is late: m1 and m2 go again, m4 must wait for m3's fate.
        e.handle_timeout(now + RETRY_DELAY);
        assert_eq!(ids(&transmitted(&mut e)), ["m1", "m2"]);
        let later = now + RETRY_DELAY;
        answer_error(&mut e, first[2].0, ErrorCode::Unavailable, later);
        e.handle_timeout(later + RETRY_DELAY);
        assert_eq!(ids(&transmitted(&mut e)), ["m3", "m4"]);
    }

    #[test]
    fn a_new_connection_resends_at_once_in_order() {
        let now = Instant::now();
        let mut e = Engine::new("alice", Cursors::default(), vec![]);
        e.set_receive(false);
        e.on_connected("ep");
        e.send(outgoing("m1"));
        e.send(outgoing("m2"));
        let first = transmitted(&mut e);
        answer_error(&mut e, first[0].0, ErrorCode::RateLimited, now);
        e.on_disconnected();
        e.on_connected("ep");
        assert_eq!(ids(&transmitted(&mut e)), ["m1", "m2"]);
    }

    #[test]
    fn a_rate_limited_send_waits_as_long_as_the_server_asks() {
        let now = Instant::now();
        let mut e = engine_with_one_send();
        refused(&mut e, ErrorCode::RateLimited, 4_000, now);
        assert_eq!(e.poll_timeout(), Some(now + Duration::from_secs(4)));
        e.handle_timeout(now + Duration::from_millis(3_999));
        assert!(e.poll_transmit().is_none(), "not before retry_after_ms");
        e.handle_timeout(now + Duration::from_secs(4));
        let again = e.poll_transmit().expect("sent again");
        assert!(matches!(again.body, Some(Body::Send(s)) if s.client_msg_id == "m"));
    }

    #[test]
    fn a_short_or_missing_retry_after_still_waits_the_retry_delay() {
        for retry_after_ms in [0, 10] {
            let now = Instant::now();
            let mut e = engine_with_one_send();
            refused(&mut e, ErrorCode::Unavailable, retry_after_ms, now);
            assert_eq!(e.poll_timeout(), Some(now + RETRY_DELAY));
        }
    }

    #[test]
    fn only_retryable_codes_are_retried() {
        for code in ErrorCode::ALL {
            let now = Instant::now();
            let mut e = engine_with_one_send();
            refused(&mut e, code, 0, now);
            assert_eq!(e.outbox_len() == 1, code.is_retryable(), "{code:?}");
        }
    }
}
