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
//! - what "delivered" means for the server ([`FfiConfirmMode`](crate::FfiConfirmMode)):
//!   by default (`Listener`) the binding confirms a message to the SDK only after
//!   `on_event` has returned (or thrown) for it, so the SDK acks it to the server and
//!   saves cursors past it only then: an app killed while messages wait in the queue or
//!   inside `on_event` gets them again, once, after its restart. Confirms are batched
//!   (when the queue runs empty, or every [`CONFIRM_EVERY`] messages). With `Delivered`
//!   the SDK acks as soon as it has a message, before the listener.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tern_sdk::{Client, Event, Events};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, watch};

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

/// Set by [`shutdown`]: no listener is called any more, in the whole process.
static SHUT_DOWN: AtomicBool = AtomicBool::new(false);

/// [`shutdown`] was called: no foreign callback (listener, transfer progress) may run.
pub(crate) fn shut_down() -> bool {
    SHUT_DOWN.load(Ordering::SeqCst)
}
/// Listener calls in progress, in the whole process.
static IN_CALL: AtomicUsize = AtomicUsize::new(0);
/// How long [`shutdown`] waits for listener calls in progress.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

enum Call {
    Returned,
    Failed,
    ShutDown,
}

fn call_listener(listener: &dyn EventListener, event: FfiEvent) -> Call {
    // Counted before the flag is read, so `shutdown` sees every call that may still start.
    IN_CALL.fetch_add(1, Ordering::SeqCst);
    let call = if SHUT_DOWN.load(Ordering::SeqCst) {
        Call::ShutDown
    } else if catch_unwind(AssertUnwindSafe(|| listener.on_event(event))).is_ok() {
        Call::Returned
    } else {
        Call::Failed
    };
    IN_CALL.fetch_sub(1, Ordering::SeqCst);
    call
}

/// Stops every client's calls to its listener, for good (for the process's exit), and
/// waits (at most 2 s) for the calls in progress to return. Call it before the host
/// language's runtime shuts down, e.g. Python `atexit.register(tern_ffi.shutdown)`: a
/// call from a Rust thread into an interpreter that is finalizing can abort the process.
/// Events not handed to a listener are not confirmed: they come again after a restart.
/// Do not call it from inside `on_event` (it would wait for itself).
#[uniffi::export]
pub fn shutdown() {
    SHUT_DOWN.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + SHUTDOWN_WAIT;
    while IN_CALL.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// With `FfiConfirmMode::Listener`, confirm at the latest after this many messages.
pub const CONFIRM_EVERY: usize = 64;

/// conversation -> the highest seq the listener has had there and that is not confirmed yet.
pub(crate) type Unconfirmed = Arc<Mutex<BTreeMap<String, u64>>>;

/// What the client keeps of its delivery thread.
pub(crate) struct Delivery {
    /// Listener calls that threw or panicked.
    pub(crate) failures: Arc<AtomicU64>,
    /// Shared so that `close()` confirms what the listener has had before it stops.
    pub(crate) unconfirmed: Unconfirmed,
    /// Becomes true when the listener thread has delivered the last event and ended.
    pub(crate) finished: watch::Receiver<bool>,
    /// The listener thread (a `close()` called from inside `on_event` must not wait for it).
    pub(crate) thread: std::thread::ThreadId,
}

/// Starts the forwarding task and the listener thread of one client. With `confirmer`,
/// messages are confirmed to it once the listener has had them.
pub(crate) fn start_delivery(
    mut events: Events,
    listener: Arc<dyn EventListener>,
    queue: usize,
    name: String,
    confirmer: Option<Client>,
) -> std::io::Result<Delivery> {
    let failures = Arc::new(AtomicU64::new(0));
    let unconfirmed = Unconfirmed::default();
    let (tx, mut rx) = mpsc::channel::<FfiEvent>(queue.max(1));
    let counted = failures.clone();
    let pending = unconfirmed.clone();
    let (finished_tx, finished) = watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("tern-ffi-events".into())
        .spawn(move || {
            let mut since_confirm = 0;
            loop {
                let event = match rx.try_recv() {
                    Ok(e) => e,
                    Err(TryRecvError::Empty) => {
                        confirm_blocking(&confirmer, &pending, &name);
                        since_confirm = 0;
                        match rx.blocking_recv() {
                            Some(e) => e,
                            None => break,
                        }
                    }
                    Err(TryRecvError::Disconnected) => break,
                };
                let position = match &event {
                    FfiEvent::Message { message, .. } => {
                        Some((message.conversation.clone(), message.seq))
                    }
                    _ => None,
                };
                match call_listener(&*listener, event) {
                    Call::Returned => {}
                    Call::Failed => {
                        counted.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(client = %name, "event listener failed; delivery goes on");
                    }
                    // Not handed to the app: not confirmed, so delivered again after a restart.
                    Call::ShutDown => continue,
                }
                if let (Some((conversation, seq)), Some(_)) = (position, &confirmer) {
                    let mut map = pending.lock().unwrap_or_else(|p| p.into_inner());
                    let top = map.entry(conversation).or_default();
                    *top = (*top).max(seq);
                    drop(map);
                    since_confirm += 1;
                    if since_confirm >= CONFIRM_EVERY {
                        confirm_blocking(&confirmer, &pending, &name);
                        since_confirm = 0;
                    }
                }
            }
            confirm_blocking(&confirmer, &pending, &name);
            if SHUT_DOWN.load(Ordering::SeqCst) {
                // Dropping a foreign listener calls into the foreign runtime (to release
                // its object), which may be finalizing now: the process is exiting, leak it.
                std::mem::forget(listener);
            } else {
                drop(listener);
            }
            // The listener is never called again (`close()` waits for this).
            let _ = finished_tx.send(true);
        })?;
    runtime().spawn(async move {
        while let Some(event) = events.next().await {
            // Waits while the queue is full (the SDK keeps the rest in order meanwhile).
            if tx.send(event.into()).await.is_err() {
                break;
            }
        }
    });
    Ok(Delivery {
        failures,
        unconfirmed,
        finished,
        thread: thread.thread().id(),
    })
}

fn confirm_blocking(client: &Option<Client>, unconfirmed: &Unconfirmed, name: &str) {
    if let Some(client) = client {
        runtime().block_on(confirm(client, unconfirmed, name));
    }
}

/// Confirms what the listener has had; returns once the SDK has saved the cursors.
pub(crate) async fn confirm(client: &Client, unconfirmed: &Unconfirmed, name: &str) {
    let positions = std::mem::take(&mut *unconfirmed.lock().unwrap_or_else(|p| p.into_inner()));
    for (conversation, seq) in positions {
        if let Err(e) = client.confirm(&conversation, seq).await {
            // Stopped: nothing more will be acked; what was not is delivered again later.
            tracing::debug!(client = %name, error = %e, "confirm failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_proto::pb;

    #[test]
    fn a_message_event_carries_its_text_and_position() {
        let event = FfiEvent::from(Event::Message {
            message: pb::Message {
                conversation: "d:alice:bob".into(),
                seq: 7,
                sender: "alice".into(),
                body: "héllo".as_bytes().to_vec().into(),
                kind: pb::MessageKind::Edit as i32,
                ..Default::default()
            },
            own: false,
        });
        let FfiEvent::Message { message, own } = event else {
            panic!("not a message: {event:?}");
        };
        assert!(!own);
        assert_eq!(
            (message.conversation.as_str(), message.seq),
            ("d:alice:bob", 7)
        );
        assert_eq!(message.text, "héllo");
        assert_eq!(message.kind, "EDIT");
        let binary = FfiMessage::from(pb::Message {
            body: vec![0xff, 0].into(),
            content_type: "image/png".into(),
            ..Default::default()
        });
        assert_eq!((binary.text.as_str(), binary.body.len()), ("", 2));
    }

    #[test]
    fn reconnecting_and_send_failed_cross_as_plain_values() {
        let e = FfiEvent::from(Event::Reconnecting {
            reason: "server closed".into(),
            attempt: 2,
            retry_in: std::time::Duration::from_millis(250),
        });
        assert_eq!(
            e,
            FfiEvent::Reconnecting {
                reason: "server closed".into(),
                attempt: 2,
                retry_in_ms: 250
            }
        );
        let e = FfiEvent::from(Event::SendFailed {
            client_msg_id: "x".into(),
            code: pb::ErrorCode::NotFound,
            message: "no user zed".into(),
        });
        assert_eq!(
            e,
            FfiEvent::SendFailed {
                client_msg_id: "x".into(),
                code: "NOT_FOUND".into(),
                reason: "no user zed".into()
            }
        );
    }
}
