//! Messages: the send path and the read paths over the conversation timelines and the
//! per-user inboxes.
//!
//! - [`sequencer`]: the seam that assigns seqs and inbox seqs, commits atomically and
//!   runs acks and pushes only once durable (D1); [`sequencer::LocalSequencer`] is the
//!   one-node implementation.
//! - [`send`]: authorize -> dedup -> sequence -> (durable) -> ack + fan-out, and system
//!   messages (group events) on the same path.
//! - [`read`]: Sync (the user's inbox after a cursor) and Pull (a conversation's
//!   timeline range), each page within one frame.
//! - [`cursors`]: each device's server-side ack cursor.

pub mod cursors;
pub mod read;
pub mod send;
pub mod sequencer;

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::MessageLimits;
use crate::conversations::ConvCache;
use crate::delivery::router::Router;
use crate::error::ServiceResult;
use crate::store::Store;

pub use send::{AckCallback, AckInfo};
pub use sequencer::Sequencer;

/// The messages service: what Send, Sync and Pull call.
pub struct Messages {
    store: Arc<dyn Store>,
    sequencer: Arc<dyn Sequencer>,
    convs: Arc<ConvCache>,
    router: Arc<dyn Router>,
    clock: Arc<dyn Clock>,
    limits: MessageLimits,
}

impl Messages {
    pub fn new(
        store: Arc<dyn Store>,
        sequencer: Arc<dyn Sequencer>,
        convs: Arc<ConvCache>,
        router: Arc<dyn Router>,
        clock: Arc<dyn Clock>,
        limits: MessageLimits,
    ) -> Self {
        Self {
            store,
            sequencer,
            convs,
            router,
            clock,
            limits,
        }
    }

    /// The user's highest inbox seq (committed; durable once a barrier passed).
    pub fn current_inbox_head(&self, user: &str) -> ServiceResult<u64> {
        self.sequencer.inbox_head(user)
    }

    pub(crate) async fn barrier(&self) -> ServiceResult<()> {
        self.sequencer.barrier().await
    }
}

#[cfg(test)]
mod tests;
