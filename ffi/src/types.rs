//! The records and enums that cross the FFI: plain copies of the SDK's protobuf types with
//! the fields an app shows, and their conversions. Protocol enums (message kind, role,
//! contact state) cross as their `ErrorCode`-style upper-case names (`"EDIT"`, `"ADMIN"`,
//! `"FRIEND"`), so a value added to the protocol later reaches old apps as a new string
//! instead of failing to decode.

use tern_proto::pb;
use tern_sdk::{AttachmentRef, ConfirmMode, SendOptions, Target, TransportMode};

/// A protocol enum value as its upper-case name (`"FORBIDDEN"`, `"ADMIN"`...), or
/// `UNKNOWN_<n>` for a value newer than this build: apps compare strings, so a new value
/// never breaks them.
macro_rules! enum_name {
    ($enum:ty, $value:expr) => {{
        let v: i32 = $value;
        <$enum>::try_from(v)
            .map(|e| e.as_str_name().to_string())
            .unwrap_or_else(|_| format!("UNKNOWN_{v}"))
    }};
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum FfiTarget {
    /// The 1:1 conversation with this user (created on first message).
    User { username: String },
    /// An existing conversation: `g:…` (group) or `d:…:…` (1:1).
    Conversation { id: String },
}

impl From<FfiTarget> for Target {
    fn from(t: FfiTarget) -> Self {
        match t {
            FfiTarget::User { username } => Target::User(username),
            FfiTarget::Conversation { id } => Target::Conversation(id),
        }
    }
}

impl From<Target> for FfiTarget {
    fn from(t: Target) -> Self {
        match t {
            Target::User(username) => FfiTarget::User { username },
            Target::Conversation(id) => FfiTarget::Conversation { id },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum FfiTransport {
    /// QUIC first, TLS over TCP when UDP does not get through.
    Auto,
    Quic,
    Tcp,
}

impl From<FfiTransport> for TransportMode {
    fn from(t: FfiTransport) -> Self {
        match t {
            FfiTransport::Auto => TransportMode::Auto,
            FfiTransport::Quic => TransportMode::Quic,
            FfiTransport::Tcp => TransportMode::Tcp,
        }
    }
}

/// When a received message counts as processed: the SDK acks it to the server and saves
/// its cursors past it only then. Not processed = delivered again (once) after the app
/// restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum FfiConfirmMode {
    /// When the listener's `on_event` has returned for it (or thrown: the app had it). The
    /// binding confirms in batches: when the event queue runs empty, or every 64 messages.
    /// An app killed while a message waits in the queue or is inside `on_event` gets it
    /// again after the restart. The default.
    Listener,
    /// When the app calls `TernClient::confirm(conversation, seq)` (cumulative per
    /// conversation), e.g. after writing the message to its own database.
    App,
    /// When the state store has kept it, before the listener sees it (needs
    /// `sqlite_state`: the SQLite store keeps the messages).
    Store,
    /// As soon as the SDK has it, before the listener (the SDK's own default; an app
    /// killed with events still queued does not get them again on this device).
    Delivered,
}

impl From<FfiConfirmMode> for ConfirmMode {
    fn from(m: FfiConfirmMode) -> Self {
        match m {
            // The binding calls `Client::confirm` itself after the listener.
            FfiConfirmMode::Listener | FfiConfirmMode::App => ConfirmMode::App,
            FfiConfirmMode::Store => ConfirmMode::Store,
            FfiConfirmMode::Delivered => ConfirmMode::Delivered,
        }
    }
}

/// A role given to members added to a group (owners are made by a transfer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum FfiRole {
    Member,
    Admin,
}

impl From<FfiRole> for pb::Role {
    fn from(r: FfiRole) -> Self {
        match r {
            FfiRole::Member => pb::Role::Member,
            FfiRole::Admin => pb::Role::Admin,
        }
    }
}

/// Who of a group's members reads its history (`FfiGroupUpdate::visibility`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum FfiHistoryVisibility {
    /// A member reads from the message at which they were (last) added.
    Joined,
    /// Members read the whole history.
    Shared,
}

impl From<FfiHistoryVisibility> for pb::HistoryVisibility {
    fn from(v: FfiHistoryVisibility) -> Self {
        match v {
            FfiHistoryVisibility::Joined => pb::HistoryVisibility::Joined,
            FfiHistoryVisibility::Shared => pb::HistoryVisibility::Shared,
        }
    }
}

/// A change of a group's profile by its owner or an admin (`update_group`); `None`
/// fields keep their value.
#[derive(Debug, Clone, Default, PartialEq, Eq, uniffi::Record)]
pub struct FfiGroupUpdate {
    /// 1-128 bytes.
    #[uniffi(default = None)]
    pub name: Option<String>,
    /// At most 1024 bytes; "" clears it.
    #[uniffi(default = None)]
    pub topic: Option<String>,
    /// While set, only the owner and admins may send.
    #[uniffi(default = None)]
    pub mute_all: Option<bool>,
    /// 0 = the server's cap; at least the current member count.
    #[uniffi(default = None)]
    pub max_members: Option<u32>,
    #[uniffi(default = None)]
    pub visibility: Option<FfiHistoryVisibility>,
}

impl FfiGroupUpdate {
    pub(crate) fn into_pb(self, conversation: String) -> pb::UpdateGroup {
        pb::UpdateGroup {
            conversation,
            name: self.name,
            topic: self.topic,
            mute_all: self.mute_all,
            max_members: self.max_members,
            visibility: self
                .visibility
                .map(|v| pb::HistoryVisibility::from(v) as i32),
        }
    }
}

/// A user found by `search_users`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiUserMatch {
    pub user: String,
    pub display_name: String,
}

/// How to reach the server and who to be. `TernClient::new` takes it.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ClientOptions {
    /// `host:port` of the server (TLS over TCP, and QUIC unless `quic_server` is set).
    pub server: String,
    /// The PEM file of the CA that signed the server's certificate (a dev server writes
    /// its own: `tern-data/certs/ca.pem`).
    pub ca_cert_path: String,
    pub username: String,
    /// Used when there is no saved token (first login, or the token expired); `None` with
    /// no valid saved token ends the client with an `AuthLost` event.
    #[uniffi(default = None)]
    pub password: Option<String>,
    /// This device's name; one connection per user and device.
    #[uniffi(default = "default")]
    pub device: String,
    /// JSON file for the token, cursors and unacknowledged sends, so that a restarted app
    /// resumes where it stopped and resends what was not acked. `None` = memory only.
    #[uniffi(default = None)]
    pub state_path: Option<String>,
    /// `state_path` is an SQLite database (the SDK's `SqliteStore`: state and received
    /// messages in one file, each delivery one transaction) instead of a JSON file.
    #[uniffi(default = false)]
    pub sqlite_state: bool,
    /// `None` = `Listener` (see [`FfiConfirmMode`]).
    #[uniffi(default = None)]
    pub confirm: Option<FfiConfirmMode>,
    /// `None` = `Auto`.
    #[uniffi(default = None)]
    pub transport: Option<FfiTransport>,
    /// QUIC `host:port` when the server listens for QUIC elsewhere than for TCP.
    #[uniffi(default = None)]
    pub quic_server: Option<String>,
    /// The name the server's certificate must carry.
    #[uniffi(default = "localhost")]
    pub server_name: String,
    /// False: a client that only sends and asks (no messages, no cursors moved).
    #[uniffi(default = true)]
    pub receive: bool,
    /// Events waiting for the listener at most; when full, the SDK keeps further events
    /// in its own (unbounded) queue until the listener catches up: nothing is dropped.
    /// 0 = 1024.
    #[uniffi(default = 0)]
    pub event_queue: u32,
}

/// What a message carries besides its target and body (docs/PROTOCOL.md 8.1).
#[derive(Debug, Clone, Default, uniffi::Record)]
pub struct FfiSendOptions {
    /// MIME type of the body; "" = `text/plain; charset=utf-8`.
    #[uniffi(default = "")]
    pub content_type: String,
    /// The seq (same conversation) this message answers; 0 = none.
    #[uniffi(default = 0)]
    pub reply_to: u64,
    /// Members mentioned by name.
    #[uniffi(default = [])]
    pub mentions: Vec<String>,
    /// @all (groups; owners and admins only).
    #[uniffi(default = false)]
    pub mention_all: bool,
    /// Seconds to live from now; 0 = forever.
    #[uniffi(default = 0)]
    pub ttl_secs: u32,
    /// An image or file message: a blob uploaded with `upload_file` / `upload_bytes` and
    /// the file name to show; `body` is then an optional caption.
    #[uniffi(default = None)]
    pub attachment: Option<FfiAttachmentRef>,
}

/// What a message names of its attachment; the server fills in size, type, dimensions
/// and thumbnail (the receiver's [`FfiAttachment`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, uniffi::Record)]
pub struct FfiAttachmentRef {
    /// The id `upload_file` / `upload_bytes` returned (the content's sha256, hex).
    pub blob_id: String,
    /// The file name to show: at most 255 bytes, no `/` or control characters.
    pub name: String,
}

impl From<FfiSendOptions> for SendOptions {
    fn from(o: FfiSendOptions) -> Self {
        SendOptions {
            content_type: o.content_type,
            reply_to: o.reply_to,
            mentions: o.mentions,
            mention_all: o.mention_all,
            ttl_secs: o.ttl_secs,
            attachment: o.attachment.map(|a| AttachmentRef {
                blob_id: a.blob_id,
                name: a.name,
            }),
        }
    }
}

/// A send made durable by the server.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiSendAck {
    pub conversation: String,
    pub seq: u64,
    pub server_time_ms: u64,
    pub client_msg_id: String,
    /// An earlier attempt with the same client_msg_id had already landed.
    pub duplicate: bool,
}

impl From<pb::SendAck> for FfiSendAck {
    fn from(a: pb::SendAck) -> Self {
        FfiSendAck {
            conversation: a.conversation,
            seq: a.seq,
            server_time_ms: a.server_time_ms,
            client_msg_id: a.client_msg_id,
            duplicate: a.duplicate,
        }
    }
}

/// The image or file a received message carries (download it with `download`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiAttachment {
    /// The content's sha256 (hex).
    pub blob_id: String,
    /// The file name the sender gave.
    pub name: String,
    /// Bytes.
    pub size: u64,
    pub mime: String,
    /// Images only: pixels (0 for other files).
    pub width: u32,
    pub height: u32,
    /// Images only: a JPEG the server made, longest side at most 320 (empty otherwise).
    pub thumbnail: Vec<u8>,
    pub thumbnail_width: u32,
    pub thumbnail_height: u32,
}

impl From<pb::Attachment> for FfiAttachment {
    fn from(a: pb::Attachment) -> Self {
        FfiAttachment {
            blob_id: a.blob_id,
            name: a.name,
            size: a.size,
            mime: a.mime,
            width: a.width,
            height: a.height,
            thumbnail: a.thumbnail.to_vec(),
            thumbnail_width: a.thumbnail_width,
            thumbnail_height: a.thumbnail_height,
        }
    }
}

/// A blob the server stored (`upload_file` / `upload_bytes`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiBlobInfo {
    /// The id to attach or to set as avatar: the content's sha256 (hex).
    pub blob_id: String,
    pub size: u64,
    pub mime: String,
    /// Images only: pixels (0 for other files).
    pub width: u32,
    pub height: u32,
    /// Images only: the server-made JPEG thumbnail (empty otherwise).
    pub thumbnail: Vec<u8>,
    pub thumbnail_width: u32,
    pub thumbnail_height: u32,
}

impl From<pb::BlobInfo> for FfiBlobInfo {
    fn from(b: pb::BlobInfo) -> Self {
        FfiBlobInfo {
            blob_id: b.blob_id,
            size: b.size,
            mime: b.mime,
            width: b.width,
            height: b.height,
            thumbnail: b.thumbnail.to_vec(),
            thumbnail_width: b.thumbnail_width,
            thumbnail_height: b.thumbnail_height,
        }
    }
}

/// A blob written to a file by `download`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiDownloaded {
    pub size: u64,
    pub mime: String,
}

/// A short-lived URL of a blob for a plain HTTP GET on the server's web listener.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiBlobUrl {
    /// Path and query (`/blob/<id>?…`), relative to `http(s)://HOST:WEBPORT`.
    pub path: String,
    /// Server time (Unix ms) after which the URL is refused.
    pub expires_ms: u64,
}

impl From<pb::BlobUrl> for FfiBlobUrl {
    fn from(u: pb::BlobUrl) -> Self {
        FfiBlobUrl {
            path: u.path,
            expires_ms: u.expires_ms,
        }
    }
}

/// Who has read one message (`receipts`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiReceipts {
    pub conversation: String,
    pub seq: u64,
    /// Sorted; empty in read-diffusion (large) groups, which give the counts only.
    pub read_by: Vec<String>,
    /// How many members other than the message's sender have read it.
    pub read_count: u32,
    /// Members other than the sender.
    pub members: u32,
}

impl From<pb::ReceiptsResult> for FfiReceipts {
    fn from(r: pb::ReceiptsResult) -> Self {
        FfiReceipts {
            conversation: r.conversation,
            seq: r.seq,
            read_by: r.read_by,
            read_count: r.read_count,
            members: r.members,
        }
    }
}

/// A public channel of the directory (`list_channels`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiChannel {
    /// `g:<id>`: send to it, leave it with `leave_group`.
    pub conversation: String,
    pub name: String,
    pub topic: String,
    pub member_count: u32,
    /// Only the owner and admins post.
    pub broadcast_only: bool,
    /// Who reads the history: `JOINED`, `SHARED` or `PUBLIC` (the protocol's
    /// `HistoryVisibility` names).
    pub visibility: String,
    /// The caller is a member.
    pub joined: bool,
}

impl From<pb::ChannelInfo> for FfiChannel {
    fn from(c: pb::ChannelInfo) -> Self {
        FfiChannel {
            visibility: enum_name!(pb::HistoryVisibility, c.visibility),
            conversation: c.conversation,
            name: c.name,
            topic: c.topic,
            member_count: c.member_count,
            broadcast_only: c.broadcast_only,
            joined: c.joined,
        }
    }
}

/// How many of a group's members are online (`group_online`, `watch_group`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiGroupOnline {
    pub conversation: String,
    pub members: u32,
    /// Members with at least one online device.
    pub online_members: u32,
}

impl From<pb::GroupOnlineResult> for FfiGroupOnline {
    fn from(r: pb::GroupOnlineResult) -> Self {
        FfiGroupOnline {
            conversation: r.conversation,
            members: r.members,
            online_members: r.online_members,
        }
    }
}

/// One timeline entry of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiMessage {
    pub conversation: String,
    /// Contiguous per conversation, from 1.
    pub seq: u64,
    pub sender: String,
    pub sender_device: String,
    pub client_msg_id: String,
    pub server_time_ms: u64,
    pub body: Vec<u8>,
    /// `body` as text when the content type is text ("" or `text/…`), else "".
    pub text: String,
    pub content_type: String,
    /// `MESSAGE_KIND_UNSPECIFIED` (an ordinary message), `SYSTEM`, `EDIT` or `RECALL`.
    pub kind: String,
    pub reply_to: u64,
    pub mentions: Vec<String>,
    pub mention_all: bool,
    /// EDIT and RECALL entries: the message they change.
    pub target_seq: u64,
    pub edited: bool,
    pub edited_ms: u64,
    pub recalled: bool,
    /// Reached this device after its time-to-live: no content.
    pub expired: bool,
    /// Deleted by this user for themselves: no content.
    pub deleted: bool,
    pub attachment: Option<FfiAttachment>,
}

fn kind_name(k: i32) -> String {
    enum_name!(pb::MessageKind, k)
}

fn role_name(r: i32) -> String {
    enum_name!(pb::Role, r)
}

impl From<pb::Message> for FfiMessage {
    fn from(m: pb::Message) -> Self {
        let text = if m.content_type.is_empty() || m.content_type.starts_with("text/") {
            String::from_utf8_lossy(&m.body).into_owned()
        } else {
            String::new()
        };
        FfiMessage {
            conversation: m.conversation,
            seq: m.seq,
            sender: m.sender,
            sender_device: m.sender_device,
            client_msg_id: m.client_msg_id,
            server_time_ms: m.server_time_ms,
            body: m.body.to_vec(),
            text,
            content_type: m.content_type,
            kind: kind_name(m.kind),
            reply_to: m.reply_to,
            mentions: m.mentions,
            mention_all: m.mention_all,
            target_seq: m.target_seq,
            edited: m.edited,
            edited_ms: m.edited_ms,
            recalled: m.recalled,
            expired: m.expired,
            deleted: m.deleted,
            attachment: m.attachment.map(Into::into),
        }
    }
}

/// A page of history, in ascending seq order.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiHistoryPage {
    pub conversation: String,
    pub messages: Vec<FfiMessage>,
    pub from_seq: u64,
    pub to_seq: u64,
    /// The conversation's last seq when read.
    pub last_seq: u64,
    /// The first seq this user may read.
    pub first_seq: u64,
    pub complete: bool,
}

impl From<pb::PullResult> for FfiHistoryPage {
    fn from(r: pb::PullResult) -> Self {
        FfiHistoryPage {
            conversation: r.conversation,
            messages: r.messages.into_iter().map(Into::into).collect(),
            from_seq: r.from_seq,
            to_seq: r.to_seq,
            last_seq: r.last_seq,
            first_seq: r.first_seq,
            complete: r.complete,
        }
    }
}

/// A row of the conversation list.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiConversation {
    pub conversation: String,
    /// `DIRECT` or `GROUP`.
    pub kind: String,
    /// The group's name, or the peer's for a 1:1.
    pub name: String,
    pub last_seq: u64,
    pub member_count: u32,
    /// This user's role (`MEMBER`, `ADMIN`, `OWNER`; groups).
    pub role: String,
    pub read_seq: u64,
    pub unread: u64,
    pub mentions: u64,
    pub last_time_ms: u64,
    pub last_sender: String,
    pub last_preview: String,
    pub muted: bool,
    pub pinned: bool,
    pub topic: String,
    pub channel: bool,
}

impl From<pb::ConversationInfo> for FfiConversation {
    fn from(c: pb::ConversationInfo) -> Self {
        FfiConversation {
            kind: enum_name!(pb::ConversationKind, c.kind),
            role: role_name(c.role),
            conversation: c.conversation,
            name: c.name,
            last_seq: c.last_seq,
            member_count: c.member_count,
            read_seq: c.read_seq,
            unread: c.unread,
            mentions: c.mentions,
            last_time_ms: c.last_time_ms,
            last_sender: c.last_sender,
            last_preview: c.last_preview,
            muted: c.muted,
            pinned: c.pinned,
            topic: c.topic,
            channel: c.channel,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiConversationList {
    pub conversations: Vec<FfiConversation>,
    /// Over all the user's conversations (muted ones left out), not only this page.
    pub total_unread: u64,
    pub total: u32,
}

impl From<pb::ConversationList> for FfiConversationList {
    fn from(l: pb::ConversationList) -> Self {
        FfiConversationList {
            conversations: l.conversations.into_iter().map(Into::into).collect(),
            total_unread: l.total_unread,
            total: l.total,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiReadState {
    pub conversation: String,
    pub read_seq: u64,
    pub unread: u64,
}

impl From<pb::ReadState> for FfiReadState {
    fn from(r: pb::ReadState) -> Self {
        FfiReadState {
            conversation: r.conversation,
            read_seq: r.read_seq,
            unread: r.unread,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiConversationSettings {
    pub conversation: String,
    pub muted: bool,
    pub pinned: bool,
}

impl From<pb::ConversationSettings> for FfiConversationSettings {
    fn from(s: pb::ConversationSettings) -> Self {
        FfiConversationSettings {
            conversation: s.conversation,
            muted: s.muted,
            pinned: s.pinned,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiGroupCreated {
    /// `g:<id>`
    pub conversation: String,
    /// The seq of its CREATED system message.
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiMember {
    pub username: String,
    /// `MEMBER`, `ADMIN` or `OWNER`.
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiPresence {
    pub username: String,
    /// Empty = offline.
    pub online_devices: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiProfile {
    pub user: String,
    pub display_name: String,
    pub status: String,
    /// The avatar's blob id ("" = none).
    pub avatar: String,
    pub updated_ms: u64,
}

impl From<pb::Profile> for FfiProfile {
    fn from(p: pb::Profile) -> Self {
        FfiProfile {
            user: p.user,
            display_name: p.display_name,
            status: p.status,
            avatar: p.avatar,
            updated_ms: p.updated_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiContact {
    pub user: String,
    /// `FRIEND`, `INCOMING`, `OUTGOING` or `BLOCKED_USER`.
    pub state: String,
    /// A request's message.
    pub message: String,
    pub since_ms: u64,
}

impl From<pb::Contact> for FfiContact {
    fn from(c: pb::Contact) -> Self {
        FfiContact {
            state: enum_name!(pb::ContactState, c.state),
            user: c.user,
            message: c.message,
            since_ms: c.since_ms,
        }
    }
}

pub(crate) fn member(m: pb::Member) -> FfiMember {
    FfiMember {
        role: role_name(m.role),
        username: m.username,
    }
}

/// A conversation of the device's local copy (`sqlite_state`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiStoredConversation {
    pub conversation: String,
    /// The highest seq kept.
    pub last_seq: u64,
    pub last_time_ms: u64,
    /// This user's read position as last heard of; 0 = none known.
    pub read_seq: u64,
    /// The newest message kept.
    pub last: Option<FfiMessage>,
}

impl From<tern_sdk::StoredConversation> for FfiStoredConversation {
    fn from(c: tern_sdk::StoredConversation) -> Self {
        FfiStoredConversation {
            conversation: c.conversation,
            last_seq: c.last_seq,
            last_time_ms: c.last_time_ms,
            read_seq: c.read_seq,
            last: c.last.map(Into::into),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attachment_crosses_with_its_thumbnail_and_goes_out_by_reference() {
        let m = FfiMessage::from(pb::Message {
            content_type: "text/plain".into(),
            body: b"a caption".to_vec().into(),
            attachment: Some(pb::Attachment {
                blob_id: "ab".into(),
                name: "p.png".into(),
                size: 10,
                mime: "image/png".into(),
                width: 640,
                height: 480,
                thumbnail: vec![0xff, 0xd8].into(),
                thumbnail_width: 320,
                thumbnail_height: 240,
            }),
            ..Default::default()
        });
        let a = m.attachment.expect("the attachment");
        assert_eq!(m.text, "a caption");
        assert_eq!(
            (
                a.thumbnail.as_slice(),
                a.thumbnail_width,
                a.thumbnail_height
            ),
            (&[0xff, 0xd8][..], 320, 240)
        );
        let options = SendOptions::from(FfiSendOptions {
            attachment: Some(FfiAttachmentRef {
                blob_id: "ab".into(),
                name: "p.png".into(),
            }),
            ..Default::default()
        });
        assert_eq!(
            options.attachment,
            Some(AttachmentRef {
                blob_id: "ab".into(),
                name: "p.png".into()
            })
        );
        assert_eq!(
            SendOptions::from(FfiSendOptions::default()).attachment,
            None
        );
    }

    #[test]
    fn a_channel_names_its_history_visibility() {
        let c = FfiChannel::from(pb::ChannelInfo {
            conversation: "g:1".into(),
            visibility: pb::HistoryVisibility::Public as i32,
            joined: true,
            ..Default::default()
        });
        assert_eq!((c.visibility.as_str(), c.joined), ("PUBLIC", true));
        assert!(FfiChannel::from(pb::ChannelInfo {
            visibility: 99,
            ..Default::default()
        })
        .visibility
        .starts_with("UNKNOWN_"));
    }
}
