//! tern-sdk: the client library apps link to talk to a tern server.
//!
//! It is where "never lose, never duplicate, always in order" becomes true for a user on
//! a flaky network: the SDK reconnects, resumes, resends what was not acknowledged (with
//! the same `client_msg_id`, so the server never stores it twice), drops duplicates,
//! repairs gaps with exact pulls, and acks what it delivered.
//!
//! How the modules fit:
//! - [`client`]: the [`Client`] handle and its event loop (connect, auth, reconnect with
//!   backoff and jitter, heartbeat). Start here.
//! - [`engine`]: the delivery logic as a sans-IO state machine (outbox, dedup, gaps,
//!   cursors, ack batching), unit-tested without sockets.
//! - [`cursor`]: where token, cursors and outbox are kept across restarts
//!   ([`MemoryStore`], [`FileStore`], or your own [`StateStore`]).
//! - [`connect`](mod@connect): one framed connection over QUIC or TLS-over-TCP.
//! - [`raw`]: a bare request/response connection over it (one-off calls, tests, load
//!   generators).
//!
//! The wire contract is `docs/PROTOCOL.md` in the repository.
//!
//! # Example
//!
//! ```no_run
//! use tern_sdk::{Client, ClientConfig, Credentials, Event, FileStore, Target, Trust};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let trust = Trust::from_pem_file("tern-data/certs/ca.pem".as_ref())?;
//! let creds = Credentials {
//!     username: "alice".into(),
//!     password: Some("correct horse battery".into()),
//!     device: "laptop".into(),
//! };
//! let config = ClientConfig::new(
//!     "127.0.0.1:7443".parse()?,
//!     trust,
//!     creds,
//!     Box::new(FileStore::new("alice.json")),
//! );
//! let (client, mut events) = Client::start(config);
//!
//! // Resolves once the message is durable on the server; survives reconnects.
//! let ack = client.send_text(Target::User("bob".into()), "hello bob").await?;
//! println!("stored as seq {} in {}", ack.seq, ack.conversation);
//!
//! while let Some(event) = events.next().await {
//!     match event {
//!         Event::Message { message, own: false } => {
//!             println!("{}: {}", message.sender, String::from_utf8_lossy(&message.body));
//!         }
//!         Event::Reconnecting { reason, .. } => eprintln!("reconnecting: {reason}"),
//!         Event::AuthLost { message, .. } => {
//!             eprintln!("log in again: {message}");
//!             break;
//!         }
//!         _ => {}
//!     }
//! }
//! client.close().await;
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod connect;
pub mod cursor;
pub mod engine;
pub mod raw;

pub use client::{
    login, new_client_msg_id, register, Client, ClientConfig, ClientError, Credentials, Event,
    Events, SendTicket, TransportMode,
};
pub use connect::{connect, ConnectError, ConnectOptions, Connection, Transport, Trust};
pub use cursor::{FileStore, MemoryStore, SavedState, StateStore};
pub use engine::{Cursors, Outgoing, Target};
pub use tern_proto as proto;
