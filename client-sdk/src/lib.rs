//! tern-sdk: the client library apps link to talk to a tern server.
//!
//! Today it provides [`connect`]: a framed connection over QUIC or TLS-over-TCP, trusting
//! a given CA. The reconnecting client (login/resume, outbox with resend, dedup, gap
//! pulls, cursor persistence) is built on top of it next; the wire contract it follows
//! is `docs/PROTOCOL.md`.

pub mod connect;

pub use connect::{connect, ConnectError, ConnectOptions, Connection, Transport, Trust};
pub use tern_proto as proto;
