//! tern-server: the tern instant-messaging server as a library (the `tern-server` binary is
//! a thin wrapper around [`cli::main`]).
//!
//! # Layout
//!
//! The modules form layers; imports only point down (checked by `tests/layers.rs`):
//!
//! ```text
//! app ──► transport/, http/ ──► session/ ──► api/ ──► domains ──► sequencer, delivery/ ──► store/
//!   (config, clock, error, metrics, ratelimit, validate: used by all, use none of them)
//! ```
//!
//! - [`app`]: [`Server::bind`] / [`Server::run`]: wiring and the shutdown order.
//!   [`services`] builds what sessions share from the [`config`].
//! - [`transport`]: bytes <-> frames: TLS over TCP, QUIC, WebSocket messages; one accept
//!   path for every listener. [`http`]: the web page + WebSocket upgrade, and metrics.
//! - [`session`]: one task per connection for every transport: a pure state machine
//!   (auth, deadlines, request classes), the driver, the writer.
//! - [`api`]: request handlers, one file per request family: a request -> a domain call
//!   -> a reply. The only place (with `http`) that turns requests into calls.
//! - Domains, which know no wire and no sockets: [`accounts`] (register, login, tokens,
//!   devices), [`conversations`] (ids, the state cache, the list), [`messages`] (send,
//!   sync/pull, ack cursors), [`changes`] (edit, recall, delete for me), [`groups`],
//!   [`contacts`] (friend requests, friends, blocks),
//!   [`presence`] (queries, typing, online/offline pushes), [`receipts`] (read
//!   positions), [`profiles`] (display name, status, user search), [`search`] (history
//!   search: a tantivy index that follows the timelines, queried with the caller's
//!   visibility rules).
//! - [`sequencer`]: the seam every append goes through: seq and inbox-seq allocation,
//!   the atomic batch, "act after durable". One node: over the store and group commit.
//! - [`delivery`]: group commit (nothing names a seq before it is durable, D1), the
//!   router seam the domains push through, the one place a push is encoded, the session
//!   registry ([`delivery::hub`]) and the per-session send queue.
//! - [`push`]: offline push: devices' push targets, the durable notification queue and
//!   the worker that sends it to the operator's push gateway (docs/PUSH.md).
//! - [`store`]: the `Store` trait, the key catalogue, the sled backend, an in-memory
//!   backend for tests, the conformance suite, the lost-writes watermark.
//!
//! docs/ARCHITECTURE.md has the same map with the data flow, the invariants and the lock
//! order.

#![warn(unreachable_pub)]

pub(crate) mod accounts;
pub(crate) mod api;
pub(crate) mod app;
pub(crate) mod blobs;
pub(crate) mod changes;
pub mod cli;
pub(crate) mod clock;
pub mod config;
pub(crate) mod contacts;
pub(crate) mod conversations;
pub(crate) mod delivery;
pub(crate) mod error;
pub(crate) mod groups;
pub(crate) mod http;
pub(crate) mod messages;
pub(crate) mod metrics;
pub(crate) mod presence;
pub(crate) mod profiles;
pub(crate) mod push;
pub(crate) mod ratelimit;
pub(crate) mod receipts;
pub(crate) mod search;
pub(crate) mod sequencer;
pub(crate) mod services;
pub(crate) mod session;
pub(crate) mod store;
#[cfg(test)]
mod testkit;
pub(crate) mod transport;
pub(crate) mod validate;

/// Dev certificates (the test harness makes its own CA with them).
pub mod certs {
    pub use crate::transport::tls::{dev_ca_path, make_dev_certs};
}

pub use app::Server;
pub use config::Config;
/// For running sessions without sockets (the fuzz target): the shared services over a
/// store, the session loop and its byte-stream writer.
pub use services::Services;
pub use session::{run_session, StreamWriter};
pub use store::{MemoryStore, SledStore, Store};

/// For the fuzz targets (fuzz/): decoders of untrusted uploads. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::blobs::image::{
        sniff_image, summarize_bytes, ImageError, ImageSummary, THUMBNAIL_MAX_SIDE,
    };
}
