//! [`Event`]: what the app sees, in order. Declared once: the engine emits most of these
//! ([`Engine::poll_event`](crate::engine::Engine::poll_event)), the event loop adds the two
//! that only it knows (`Reconnecting`, `Closed`) and hands all of them to the app through
//! [`Events`](crate::Events). A new kind of event is added here and nowhere else.

use std::time::Duration;

use bytes::Bytes;
use tern_proto::pb::{self, ErrorCode};

use crate::connect::Transport;
use crate::engine::Target;

/// Connection state changes and incoming traffic, in order.
// Messages are by far the most frequent event: boxing them to shrink the rare variants
// would cost an allocation per message delivered.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A message, exactly once and in order per conversation; `own` for this user's
    /// (sent from this device or another).
    Message { message: pb::Message, own: bool },
    /// Someone's read position in `conversation` moved to `read_seq` (a `ReadReceipt`
    /// push; docs/PROTOCOL.md 9.2). `own` when `user` is this client's user: one of the
    /// user's devices read up to there (another device, or this one after
    /// [`Client::mark_read`](crate::Client::mark_read)): clear the badge up to
    /// `read_seq`. Otherwise a read receipt: `user`, another member, has read up to
    /// `read_seq`. Transient: a client that was offline learns read positions from
    /// [`Client::conversation_list`](crate::Client::conversation_list), not from events.
    Read {
        conversation: String,
        user: String,
        read_seq: u64,
        own: bool,
    },
    /// This user's settings of `conversation` changed, on this device or another (a
    /// `settings_changed` push; docs/PROTOCOL.md 9.3): `muted` (stay quiet, leave its
    /// unread out of the total) and `pinned` (list it first) as they are now. Transient:
    /// a client that was offline learns them from
    /// [`Client::conversation_list`](crate::Client::conversation_list).
    SettingsChanged {
        conversation: String,
        muted: bool,
        pinned: bool,
    },
    /// `user`, another member of `conversation`, is typing (`typing`) or stopped (a
    /// `TypingEvent` push; docs/PROTOCOL.md 10). Without a later event, the typing ends by
    /// itself at `expires_ms` (server time, Unix ms). Transient: never stored or synced.
    Typing {
        conversation: String,
        user: String,
        typing: bool,
        expires_ms: u64,
    },
    /// Message `seq` of `conversation` now reads `body`: `sender` edited it at
    /// `edited_ms` (server time). Follows the [`Event::Message`] of the EDIT entry
    /// `entry_seq` that says so (docs/PROTOCOL.md, edit). Show the new text in place of
    /// the old one, marked edited; a history or pull from now on gives the new text.
    Edited {
        conversation: String,
        seq: u64,
        entry_seq: u64,
        sender: String,
        body: Bytes,
        content_type: String,
        edited_ms: u64,
    },
    /// Message `seq` of `conversation` was recalled by `by` (its sender, or a group owner
    /// or admin): drop its content and show a "recalled" placeholder. Follows the
    /// [`Event::Message`] of the RECALL entry `entry_seq`.
    Recalled {
        conversation: String,
        seq: u64,
        entry_seq: u64,
        by: String,
    },
    /// Message `seq` of `conversation` reached this device only after its time-to-live:
    /// its [`Event::Message`] (just before this one) is a tombstone with `expired` set and
    /// no content. Nothing to show; the seq is accounted for.
    Expired { conversation: String, seq: u64 },
    /// This user deleted message `seq` of `conversation` for themselves (on this device or
    /// another; a `MessageHidden` push, or a tombstone with `deleted` set delivered just
    /// before): stop showing it. Nobody else is affected.
    Hidden { conversation: String, seq: u64 },
    /// `user`, who shares a direct conversation with this user, came online (first
    /// device) or went offline (last device) at `server_time_ms` (a `PresenceEvent` push,
    /// coalesced by the server). Transient: ask [`Client::presence`](crate::Client::presence)
    /// for the state now.
    Presence {
        user: String,
        online: bool,
        server_time_ms: u64,
    },
    /// A user's profile changed (a `ProfileChanged` push): this user's own (from any
    /// device), or that of someone who shares a direct conversation or a (not large)
    /// group with this user. Transient: fetch with
    /// [`Client::get_profiles`](crate::Client::get_profiles) for the state now.
    ProfileChanged(pb::Profile),
    /// A send with a time-to-live was still unsent when the TTL passed (offline, or
    /// waiting to be resent): it left the outbox and was never sent after that. Its
    /// ticket resolves with [`ClientError::Expired`](crate::ClientError::Expired).
    SendExpired {
        client_msg_id: String,
        target: Target,
        ttl_secs: u32,
    },
    /// A send became durable (also resolves the `send` future). `duplicate` when an
    /// earlier attempt had already landed.
    Acked(pb::SendAck),
    /// A send was refused for good (not a member, no such user, invalid) and left the
    /// outbox.
    SendFailed {
        client_msg_id: String,
        code: ErrorCode,
        message: String,
    },
    /// Logged in (or resumed) on a new connection.
    Connected {
        transport: Transport,
        username: String,
        device: String,
    },
    /// The connection dropped or could not be made; retrying after `retry_in`.
    Reconnecting {
        reason: String,
        attempt: u32,
        retry_in: Duration,
    },
    /// The credentials no longer work (revoked, wrong password, expired without a
    /// password): the client has stopped.
    AuthLost { code: ErrorCode, message: String },
    /// The same device logged in elsewhere: this client has stopped.
    Replaced,
    /// Everything missed while offline has been delivered (after each (re)connect's
    /// sync, and after later gap repairs).
    CaughtUp,
    /// The client stopped after `close()`.
    Closed,
}
