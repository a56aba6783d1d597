//! tern-server: the tern instant-messaging server as a library (the `tern-server` binary is
//! a thin wrapper around [`cli::main`]).
//!
//! How the modules fit, from the wire inwards:
//! - [`server`]: opens the store, binds QUIC (quinn) and TLS-over-TCP (tokio-rustls) on one
//!   port number, accepts connections, shuts down in order. [`certs`] makes the dev CA.
//! - [`ws`]: the WebSocket bridge for browsers (and the web page), same sessions.
//! - [`session`]: one task per connection, identical for every transport: frames in,
//!   auth state machine, request dispatch, heartbeat, a bounded outbound queue
//!   ([`outbox`]).
//! - [`accounts`] (register/login/resume/revoke, with [`auth`] for argon2id and tokens) and
//!   [`chat`] (authorize -> dedup -> sequence -> store, groups, sync, pull, presence).
//! - [`durability`]: group commit; acks and pushes leave only after the store flush.
//! - [`hub`]: sharded registry of live sessions; fan-out of encoded frames.
//! - [`store`]: the `Store` trait and its sled implementation; [`watermark`] detects a
//!   store that came back from damage missing acknowledged writes.
//! - [`limits`]: request rate limits, login throttling, connection and session caps.
//! - [`config`], [`error`] (the one mapping to wire error codes), [`validate`].

pub mod accounts;
pub mod auth;
pub mod certs;
pub mod chat;
pub mod cli;
pub mod config;
pub mod durability;
pub mod error;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod outbox;
pub mod server;
pub mod session;
pub mod store;
pub mod validate;
pub mod watermark;
pub mod ws;

pub use config::Config;
pub use server::Server;
