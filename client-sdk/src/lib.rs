//! tern-sdk: the client library apps link to talk to a tern server.
//!
//! It is where "never lose, never duplicate, always in order" becomes true for a user on
//! a flaky network: the SDK reconnects, resumes, resends what was not acknowledged (with
//! the same `client_msg_id`, so the server never stores it twice), drops duplicates,
//! repairs gaps with exact pulls, and acks what it delivered.
//!
//! How the modules fit (the app talks to the first; each one below it knows nothing of
//! those above it):
//! - [`client`]: the [`Client`] handle, its configuration and errors, and the event
//!   loop task that does the I/O: connect (QUIC, TLS-TCP or `Auto`), move frames between
//!   the socket and the engine, keep the engine's timer, reconnect with backoff and
//!   jitter. Also the one-off [`register`] and [`login`]. Start here. Its request
//!   methods include history ([`Client::history`]) and full-text history search
//!   ([`Client::search`] with [`SearchOptions`]).
//! - [`state`]: where token, cursors and outbox are kept across restarts
//!   ([`MemoryStore`], [`FileStore`], or your own [`StateStore`]), and the device's local
//!   copy of its conversations and history ([`SqliteStore`], SQLite with migrations).
//! - [`engine`]: every protocol decision, as a sans-IO state machine driven with an
//!   explicit `now` (`handle_*` in, `poll_*` out, as in quinn-proto): authentication
//!   (Resume, else Login, and what each error means), keep-alive and the dead-server
//!   rule, close reasons, the outbox (resend in order, same ids), the inbox (dedup,
//!   order, gap repair), acks. Unit-tested without sockets or sleeping.
//! - [`event`]: the one [`Event`] enum the engine and the loop emit to the app.
//! - [`model`]: [`ConversationListModel`], the conversation list ("red dot") a UI binds
//!   to: loaded once ([`Client::conversation_model`]), then kept current from the events
//!   (new messages, reads on any device, mute/pin, edits, recalls, deletes), no polling.
//! - [`raw`]: a bare request/response connection (send a frame, await the frame with
//!   its req_id, keep pushes), for one-off calls, tests and load generators.
//! - [`connect`](mod@connect): one framed connection over QUIC or TLS-over-TCP, under
//!   both the loop and [`raw`].
//!
//! The wire contract is `docs/PROTOCOL.md` in the repository.
//!
//! # Example
//!
//! ```no_run
//! use tern_sdk::{Client, ClientConfig, ClientError, Credentials, Event, FileStore, SendOptions};
//! use tern_sdk::{Target, Trust};
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
//! // The conversation list ("red dot"): unread counts are the server's.
//! let list = client.conversation_list(50, 0).await?;
//! for c in &list.conversations {
//!     println!("{} ({} unread): {}", c.name, c.unread, c.last_preview);
//! }
//! println!("{} unread in all", list.total_unread);
//! // Read up to the latest message; the user's other devices hear of it.
//! let state = client.mark_read(&ack.conversation, 0).await?;
//! println!("{} unread left in {}", state.unread, state.conversation);
//! // Pin it (listed first) on all of alice's devices; mute would leave it out of the total.
//! let settings = client.pin(&ack.conversation, true).await?;
//! println!("pinned {}: {}", settings.conversation, settings.pinned);
//! // Fix a typo (the sender, within 48 h); every device shows the new text, marked edited.
//! client.edit(&ack.conversation, ack.seq, "hello, bob").await?;
//! // A message that is worthless after a minute: dropped (and reported) if it cannot be
//! // sent by then; a device that comes online later gets an "expired" tombstone.
//! let options = SendOptions { ttl_secs: 60, ..Default::default() };
//! let ticket = client.send_with_options(Target::User("bob".into()), "ping".into(), options);
//! match ticket.await?.await {
//!     Ok(ack) => println!("ping is seq {}", ack.seq),
//!     Err(ClientError::Expired { .. }) => println!("ping expired unsent"),
//!     Err(e) => return Err(e.into()),
//! }
//!
//! // A conversation list to bind a UI to: loaded once, then kept current from the events.
//! let mut model = client.conversation_model().await?;
//! while let Some(event) = events.next().await {
//!     if model.apply(&event) {
//!         println!("redraw: {} unread in all", model.total_unread());
//!     }
//!     match event {
//!         Event::Message { message, own: false } => {
//!             println!("{}: {}", message.sender, String::from_utf8_lossy(&message.body));
//!         }
//!         // One of alice's devices read: clear the badge up to read_seq.
//!         Event::Read { conversation, read_seq, own: true, .. } => {
//!             println!("{conversation}: read up to {read_seq}");
//!         }
//!         // A receipt: bob has read alice's messages up to read_seq.
//!         Event::Read { conversation, user, read_seq, own: false } => {
//!             println!("{user} read {conversation} up to {read_seq}");
//!         }
//!         // Pinned or muted on one of alice's devices (this one too): re-sort, re-total.
//!         Event::SettingsChanged { conversation, muted, pinned } => {
//!             println!("{conversation}: muted {muted}, pinned {pinned}");
//!         }
//!         // Message seq now reads body (its EDIT entry came just before as a Message).
//!         Event::Edited { conversation, seq, body, .. } => {
//!             println!("{conversation} #{seq} edited: {}", String::from_utf8_lossy(&body));
//!         }
//!         // Show a "recalled" placeholder instead of message seq.
//!         Event::Recalled { conversation, seq, by, .. } => {
//!             println!("{conversation} #{seq} recalled by {by}");
//!         }
//!         Event::Presence { user, online, .. } => println!("{user} online: {online}"),
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
//!
//! # A local store, and exactly once to the app
//!
//! [`SqliteStore`] keeps the conversations, messages, cursors, outbox and read state on
//! the device, so an app that starts offline shows its list and history at once. With
//! [`ConfirmMode::Store`] each batch of messages is committed with the cursors that cover
//! it in one transaction before the app sees it; with [`ConfirmMode::App`] the app says
//! when it is done with a message ([`Client::confirm`]). Either way the SDK acks the
//! server and moves its saved cursors only past confirmed messages: if the app dies
//! between receiving and confirming, the message comes again after the restart, once.
//!
//! ```no_run
//! use tern_sdk::{Client, ClientConfig, ConfirmMode, Credentials, Event, SqliteStore, Trust};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // A corrupt file, or one a newer SDK wrote, is an error here (and left untouched).
//! let store = SqliteStore::open("alice/tern.db")?;
//! // The app's own view opens the same file a second time (WAL: it reads while the
//! // client writes): the conversation list and history, even with no network.
//! let local = SqliteStore::open("alice/tern.db")?;
//! for c in local.conversations()? {
//!     let unread = c.last_seq.saturating_sub(c.read_seq);
//!     println!("{}: up to #{} ({unread} after the read position)", c.conversation, c.last_seq);
//! }
//! for m in local.history("d:alice:bob", 0, 50)? {
//!     println!("#{} {}: {}", m.seq, m.sender, String::from_utf8_lossy(&m.body));
//! }
//!
//! let creds = Credentials {
//!     username: "alice".into(),
//!     password: Some("correct horse battery".into()),
//!     device: "phone".into(),
//! };
//! let trust = Trust::from_pem_file("tern-data/certs/ca.pem".as_ref())?;
//! let mut config = ClientConfig::new("127.0.0.1:7443".parse()?, trust, creds, Box::new(store));
//! // The app confirms each message once it has handled it (shown it, written it to its
//! // own database...). `ConfirmMode::Store` would make the store's commit the
//! // confirmation instead, and `confirm` unnecessary.
//! config.confirm = ConfirmMode::App;
//! let (client, mut events) = Client::start(config);
//! while let Some(event) = events.next().await {
//!     if let Event::Message { message, .. } = event {
//!         println!("{}: {}", message.sender, String::from_utf8_lossy(&message.body));
//!         // Cumulative per conversation, like an ack; resolves once it is durable.
//!         client.confirm(&message.conversation, message.seq).await?;
//!     }
//! }
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod connect;
pub mod engine;
pub mod event;
pub mod model;
pub mod raw;
pub mod state;

pub use client::blobs::{blob_id_of, AttachmentRef};
pub use client::requests::SearchOptions;
pub use client::{
    login, new_client_msg_id, register, Client, ClientConfig, ClientError, ConfirmMode,
    Credentials, Event, Events, SendOptions, SendTicket, TransportMode,
};
pub use connect::{connect, ConnectError, ConnectOptions, Connection, Transport, Trust};
pub use engine::{Cursors, Outgoing, Target};
pub use model::ConversationListModel;
pub use raw::{RawConnection, RawError};
pub use state::{FileStore, MemoryStore, SavedState, SqliteStore, StateStore, StoredConversation};
pub use tern_proto as proto;
