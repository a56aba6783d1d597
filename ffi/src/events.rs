//! Events to the app: the [`FfiEvent`] enum (one variant per SDK [`Event`]) and the
//! [`EventListener`] foreign trait the app implements.
//!
//! Delivery: a forwarding task moves the SDK's events, in order, into a bounded queue
//! (`ClientOptions::event_queue`); one thread per client (`tern-ffi-events`) takes them
//! off and calls `on_event`, one at a time. So:
//! - a listener that throws (Python raises, Kotlin throws, Swift traps are not caught) or
//!   panics: the call is caught (`catch_unwind`), counted in
//!   `TernClient::listener_failures`, logged, and the next event is delivered; the event
//!   it failed on is not delivered again;
//! - a listener that blocks: only event delivery waits. Requests and sends go on (they do
//!   not pass through the listener thread); once the queue is full the forwarder waits,
//!   and the SDK keeps the following events in its own unbounded queue: nothing is
//!   dropped or reordered, memory grows until the listener returns;
//! - what "delivered" means for the server: the SDK acks (moves the server's cursor for
//!   this device) once it has put a message in its own queue, before the listener has
//!   seen it. An app killed with events still queued does not get them again on this
//!   device (they stay in the conversation's history). The SDK's confirm step, when it
//!   exists, is what closes that window.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tern_sdk::{Event, Events};
use tokio::sync::mpsc;

use crate::runtime::runtime;
use crate::types::{FfiMessage, FfiProfile, FfiSendAck, FfiTarget};

/// Implemented by the app: receives every event of one client, in order, on the client's
/// own event thread (never on the caller's thread). Return quickly; hand work to the UI
/// thread. Failures and blocking are handled as described in the crate docs.
#[uniffi::export(foreign)]
pub trait EventListener: Send + Sync {
    fn on_event(&self, event: FfiEvent);
}

/// What happens to a client, in order.
// Messages are the common event, and uniffi cannot pass a Box: no boxing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum FfiEvent {
    /// A message, exactly once and in order per conversation; `own` for this user's own
    /// (sent from this device or another).
    Message { message: FfiMessage, own: bool },
    /// `user` read `conversation` up to `read_seq`; `own`: one of this user's devices.
    Read {
        conversation: String,
        user: String,
        read_seq: u64,
        own: bool,
    },
    /// This user's mute/pin of `conversation` as they are now.
    SettingsChanged {
        conversation: String,
        muted: bool,
        pinned: bool,
    },
    /// `user` is typing in `conversation` (or stopped); ends by itself at `expires_ms`.
    Typing {
        conversation: String,
        user: String,
        typing: bool,
        expires_ms: u64,
    },
    /// Message `seq` now reads `text` (edited by `sender`).
    Edited {
        conversation: String,
        seq: u64,
        entry_seq: u64,
        sender: String,
        body: Vec<u8>,
        text: String,
        content_type: String,
        edited_ms: u64,
    },
    /// Message `seq` was recalled by `by`: show a placeholder.
    Recalled {
        conversation: String,
        seq: u64,
        entry_seq: u64,
        by: String,
    },
    /// Message `seq` reached this device after its time-to-live (a tombstone).
    Expired { conversation: String, seq: u64 },
    /// This user deleted message `seq` for themselves: stop showing it.
    Hidden { conversation: String, seq: u64 },
    /// `user` came online (first device) or went offline (last device).
    Presence {
        user: String,
        online: bool,
        server_time_ms: u64,
    },
    /// A profile changed (this user's, or a contact's).
    ProfileChanged { profile: FfiProfile },
    /// A send with a TTL was dropped unsent.
    SendExpired {
        client_msg_id: String,
        target: FfiTarget,
        ttl_secs: u32,
    },
    /// A send is durable on the server.
    Acked { ack: FfiSendAck },
    /// A send was refused for good (`code`: the protocol's ErrorCode name) and left the
    /// outbox.
    SendFailed {
        client_msg_id: String,
        code: String,
        reason: String,
    },
    /// Logged in (or resumed) on a new connection (`transport`: `quic` or `tcp`).
    Connected {
        transport: String,
        username: String,
        device: String,
    },
    /// The connection dropped or could not be made; retrying in `retry_in_ms`.
    Reconnecting {
        reason: String,
        attempt: u32,
        retry_in_ms: u64,
    },
    /// The credentials no longer work: the client has stopped (log in again).
    AuthLost { code: String, reason: String },
    /// The same device logged in elsewhere: this client has stopped.
    Replaced,
    /// Everything missed while offline has been delivered.
    CaughtUp,
    /// The client stopped after `close()`; the last event.
    Closed,
    /// An event this binding does not know yet (a newer SDK); `name` says which.
    Other { name: String },
}

fn text_of(body: &[u8], content_type: &str) -> String {
    if content_type.is_empty() || content_type.starts_with("text/") {
        String::from_utf8_lossy(body).into_owned()
    } else {
        String::new()
    }
}

impl From<Event> for FfiEvent {
    // A variant the SDK adds later arrives as `Other` until it is mapped here.
    #[allow(unreachable_patterns)]
    fn from(e: Event) -> Self {
        match e {
            Event::Message { message, own } => FfiEvent::Message {
                message: message.into(),
                own,
            },
            Event::Read {
                conversation,
                user,
                read_seq,
                own,
            } => FfiEvent::Read {
                conversation,
                user,
                read_seq,
                own,
            },
            Event::SettingsChanged {
                conversation,
                muted,
                pinned,
            } => FfiEvent::SettingsChanged {
                conversation,
                muted,
                pinned,
            },
            Event::Typing {
                conversation,
                user,
                typing,
                expires_ms,
            } => FfiEvent::Typing {
                conversation,
                user,
                typing,
                expires_ms,
            },
            Event::Edited {
                conversation,
                seq,
                entry_seq,
                sender,
                body,
                content_type,
                edited_ms,
            } => FfiEvent::Edited {
                text: text_of(&body, &content_type),
                conversation,
                seq,
                entry_seq,
                sender,
                body: body.to_vec(),
                content_type,
                edited_ms,
            },
            Event::Recalled {
                conversation,
                seq,
                entry_seq,
                by,
            } => FfiEvent::Recalled {
                conversation,
                seq,
                entry_seq,
                by,
            },
            Event::Expired { conversation, seq } => FfiEvent::Expired { conversation, seq },
            Event::Hidden { conversation, seq } => FfiEvent::Hidden { conversation, seq },
            Event::Presence {
                user,
                online,
                server_time_ms,
            } => FfiEvent::Presence {
                user,
                online,
                server_time_ms,
            },
            Event::ProfileChanged(p) => FfiEvent::ProfileChanged { profile: p.into() },
            Event::SendExpired {
                client_msg_id,
                target,
                ttl_secs,
            } => FfiEvent::SendExpired {
                client_msg_id,
                target: target.into(),
                ttl_secs,
            },
            Event::Acked(ack) => FfiEvent::Acked { ack: ack.into() },
            Event::SendFailed {
                client_msg_id,
                code,
                message,
            } => FfiEvent::SendFailed {
                client_msg_id,
                code: code.as_str_name().to_string(),
                reason: message,
            },
            Event::Connected {
                transport,
                username,
                device,
            } => FfiEvent::Connected {
                transport: transport.to_string(),
                username,
                device,
            },
            Event::Reconnecting {
                reason,
                attempt,
                retry_in,
            } => FfiEvent::Reconnecting {
                reason,
                attempt,
                retry_in_ms: retry_in.as_millis() as u64,
            },
            Event::AuthLost { code, message } => FfiEvent::AuthLost {
                code: code.as_str_name().to_string(),
                reason: message,
            },
            Event::Replaced => FfiEvent::Replaced,
            Event::CaughtUp => FfiEvent::CaughtUp,
            Event::Closed => FfiEvent::Closed,
            other => FfiEvent::Other {
                name: format!("{other:?}")
                    .split([' ', '(', '{'])
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            },
        }
    }
}

/// Starts the forwarding task and the listener thread of one client. Returns the counter
/// of listener calls that failed (threw or panicked).
pub(crate) fn start_delivery(
    mut events: Events,
    listener: Arc<dyn EventListener>,
    queue: usize,
    name: String,
) -> std::io::Result<Arc<AtomicU64>> {
    let failures = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = mpsc::channel::<FfiEvent>(queue.max(1));
    let counted = failures.clone();
    std::thread::Builder::new()
        .name("tern-ffi-events".into())
        .spawn(move || {
            while let Some(event) = rx.blocking_recv() {
                let result = catch_unwind(AssertUnwindSafe(|| listener.on_event(event)));
                if result.is_err() {
                    counted.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(client = %name, "event listener failed; delivery goes on");
                }
            }
        })?;
    runtime().spawn(async move {
        while let Some(event) = events.next().await {
            // Waits while the queue is full (the SDK keeps the rest in order meanwhile).
            if tx.send(event.into()).await.is_err() {
                break;
            }
        }
    });
    Ok(failures)
}
