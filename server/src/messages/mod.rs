//! Messages: the send path and the read paths over the conversation timelines and the
//! per-user inboxes.
//!
//!
//! Appends go through the [`Sequencer`] seam (seq and inbox-seq allocation, the atomic
//! batch, acks and pushes only once durable: D1).
//! - [`send`]: authorize -> dedup -> sequence -> (durable) -> ack + fan-out, and system
//!   messages (group events) on the same path.
//! - [`read`]: Sync (the user's inbox after a cursor) and Pull (a conversation's
//!   timeline range), each page within one frame.
//! - [`cursors`]: each device's server-side ack cursor.
//! - [`expiry`]: the sweeper that erases messages whose time to live passed.
//! - [`retention`]: the sweeper that trims old inbox and timeline entries (8.11).

pub(crate) mod admin;
pub(crate) mod cursors;
pub(crate) mod expiry;
pub(crate) mod read;
pub(crate) mod retention;
pub(crate) mod send;

use std::sync::Arc;

use crate::blobs::Blobs;
use crate::clock::Clock;
use crate::config::MessageLimits;
use crate::conversations::ConvCache;
use crate::delivery::router::Router;
use crate::error::ServiceResult;
use crate::push::Push;
use crate::store::Store;

use crate::sequencer::Sequencer;
pub(crate) use send::{AckCallback, AckInfo};

/// The messages service: what Send, Sync and Pull call.
pub struct Messages {
    store: Arc<dyn Store>,
    sequencer: Arc<dyn Sequencer>,
    convs: Arc<ConvCache>,
    router: Arc<dyn Router>,
    clock: Arc<dyn Clock>,
    limits: MessageLimits,
    push: Arc<Push>,
    /// Where attachments are checked; `None`: this instance stores no blobs (domain tests).
    blobs: Option<Arc<Blobs>>,
}

impl Messages {
    pub fn new(
        store: Arc<dyn Store>,
        sequencer: Arc<dyn Sequencer>,
        convs: Arc<ConvCache>,
        router: Arc<dyn Router>,
        clock: Arc<dyn Clock>,
        limits: MessageLimits,
        push: Arc<Push>,
    ) -> Self {
        Self {
            store,
            sequencer,
            convs,
            router,
            clock,
            limits,
            push,
            blobs: None,
        }
    }

    /// Lets messages carry attachments (image and file messages) stored in `blobs`.
    pub(crate) fn with_blobs(mut self, blobs: Arc<Blobs>) -> Self {
        self.blobs = Some(blobs);
        self
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
