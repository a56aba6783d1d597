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
//!   sync/pull, ack cursors), [`groups`], [`presence`].
//! - [`sequencer`]: the seam every append goes through: seq and inbox-seq allocation,
//!   the atomic batch, "act after durable". One node: over the store and group commit.
//! - [`delivery`]: group commit (nothing names a seq before it is durable, D1), the
//!   router seam the domains push through, the one place a push is encoded, the session
//!   registry ([`delivery::hub`]) and the per-session send queue.
//! - [`store`]: the `Store` trait, the key catalogue, the sled backend, an in-memory
//!   backend for tests, the conformance suite, the lost-writes watermark.
//!
//! docs/ARCHITECTURE.md has the same map with the data flow, the invariants and the lock
//! order.

#![warn(unreachable_pub)]

pub mod accounts;
pub mod api;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conversations;
pub mod delivery;
pub mod error;
pub mod groups;
pub mod http;
pub mod messages;
pub mod metrics;
pub mod presence;
pub mod ratelimit;
pub mod sequencer;
pub mod services;
pub mod session;
pub mod store;
pub mod transport;
pub mod validate;

/// Where the dev certificates are made (kept at its old path for the test harness).
pub mod certs {
    pub use crate::transport::tls::*;
}

pub use app::Server;
pub use config::Config;
