//! The outbox: sends waiting for their durable ack. Each keeps its client_msg_id for
//! life; on every new connection the unacknowledged ones are sent again, in their original
//! order, at most `window` in flight. A transient refusal is retried after
//! [`RETRY_DELAY`]; a permanent one leaves the outbox as [`Event::SendFailed`].

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
}

impl Outgoing {
    fn to_frame(&self, req_id: u64) -> Frame {
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
            })),
        }
    }
}

#[derive(Debug)]
pub(super) struct Pending {
    pub(super) msg: Outgoing,
    /// req_id of the attempt on the current connection, if sent on it.
    pub(super) req_id: Option<u64>,
    pub(super) retry_at: Option<Instant>,
}

impl Pending {
    pub(super) fn new(msg: Outgoing) -> Self {
        Self {
            msg,
            req_id: None,
            retry_at: None,
        }
    }
}

/// A refusal worth retrying: the same Send (same client_msg_id) may succeed later.
fn is_transient(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Internal
            | ErrorCode::RateLimited
            | ErrorCode::Unavailable
            | ErrorCode::ResourceExhausted
    )
}

impl Engine {
    /// Queues a message; it is sent now if connected (and the window allows), else on
    /// the next connection.
    pub fn send(&mut self, msg: Outgoing) {
        self.outbox.push_back(Pending::new(msg));
        self.fill_window();
    }

    /// Transmits unsent outbox entries, in order, while the window has room.
    pub(super) fn fill_window(&mut self) {
        if !self.connected {
            return;
        }
        let mut in_flight = self.outbox.iter().filter(|p| p.req_id.is_some()).count();
        for i in 0..self.outbox.len() {
            if in_flight >= self.window {
                break;
            }
            if self.outbox[i].req_id.is_some() || self.outbox[i].retry_at.is_some() {
                continue;
            }
            let id = self.req_id();
            let p = &mut self.outbox[i];
            p.req_id = Some(id);
            self.transmit.push_back(p.msg.to_frame(id));
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
                    if is_transient(code) {
                        let p = &mut self.outbox[i];
                        p.req_id = None;
                        p.retry_at = Some(now + RETRY_DELAY);
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
