//! Acks: cumulative over the inbox, batched, so a burst of messages costs one Ack. With
//! confirmation on ([`Engine::require_confirm`]) they stop before the first message the app
//! has not confirmed.

use std::time::{Duration, Instant};

use tern_proto::pb;
use tern_proto::{Body, Frame};

use super::Engine;

/// Ack after this many new messages...
pub const ACK_EVERY: u64 = 50;
/// ...or this long after the first unacked one.
pub const ACK_DELAY: Duration = Duration::from_millis(300);

impl Engine {
    pub(super) fn schedule_ack(&mut self, now: Instant) {
        let inbox = self.ackable_inbox();
        if inbox >= self.acked_sent + ACK_EVERY {
            self.send_ack();
        } else if inbox > self.acked_sent && self.ack_due.is_none() {
            self.ack_due = Some(now + ACK_DELAY);
        }
    }

    pub(super) fn send_ack(&mut self) {
        self.ack_due = None;
        // With confirmation on, only what the app confirmed (the server keeps the rest
        // for the next sync).
        let inbox = self.ackable_inbox();
        if !self.connected || inbox <= self.acked_sent {
            return;
        }
        self.acked_sent = inbox;
        let id = self.req_id();
        // The Ok response needs no handling; an error only means it is sent again later.
        self.transmit.push_back(Frame {
            req_id: id,
            body: Some(Body::Ack(pb::Ack { inbox_seq: inbox })),
        });
    }

    /// Acks everything delivered so far, now (e.g. before a clean exit).
    pub fn flush_ack(&mut self) {
        self.send_ack();
    }
}
