//! The records the store keeps, as protobuf messages (timeline entries are the wire
//! `Message` itself).

/// An account.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UserRecord {
    /// argon2id PHC string.
    #[prost(string, tag = "1")]
    pub password_hash: String,
    #[prost(uint64, tag = "2")]
    pub created_ms: u64,
    /// Bumped to revoke every token of the user.
    #[prost(uint64, tag = "3")]
    pub token_epoch: u64,
    /// The user turned read receipts off: nobody else hears of their read positions.
    #[prost(bool, tag = "4")]
    pub receipts_off: bool,
    /// An operator disabled the account (admin API): no Login, no Resume.
    #[prost(bool, tag = "5")]
    pub disabled: bool,
}

/// One device of a user: its token epoch, its token rotation state and its server-side
/// ack cursor.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeviceRecord {
    /// Bumped to revoke this device's tokens.
    #[prost(uint64, tag = "1")]
    pub token_epoch: u64,
    /// Cumulative ack: the device has the user's inbox up to here.
    #[prost(uint64, tag = "2")]
    pub acked_inbox_seq: u64,
    #[prost(uint64, tag = "3")]
    pub last_login_ms: u64,
    /// Token rotation (accounts/rotation.rs): the generation of the newest token issued to
    /// this device (0: none since rotation exists).
    #[prost(uint64, tag = "4")]
    pub token_issued: u64,
    /// The generation of the token this device last authenticated with by Resume (0: none).
    #[prost(uint64, tag = "5")]
    pub token_used: u64,
    /// When `token_used` was first accepted, Unix ms: its grace window starts here.
    #[prost(uint64, tag = "6")]
    pub token_used_ms: u64,
}

/// A conversation's metadata (not its messages).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConversationRecord {
    /// `pb::ConversationKind`.
    #[prost(int32, tag = "1")]
    pub kind: i32,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(uint64, tag = "3")]
    pub created_ms: u64,
    /// Sticky: once a group passed the fan-out threshold its messages are not copied into
    /// inboxes any more; devices follow it with a per-conversation cursor.
    #[prost(bool, tag = "4")]
    pub read_diffusion: bool,
    #[prost(string, tag = "5")]
    pub topic: String,
    /// Only the owner and admins may send.
    #[prost(bool, tag = "6")]
    pub mute_all: bool,
    /// This group's member cap (0: the server's).
    #[prost(uint32, tag = "7")]
    pub max_members: u32,
    /// `pb::HistoryVisibility` (0: made before the setting existed, read as SHARED).
    #[prost(int32, tag = "8")]
    pub visibility: i32,
    /// A public channel: listed in the directory, joined by users themselves.
    #[prost(bool, tag = "9")]
    pub channel: bool,
}

/// A member of a conversation.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberRecord {
    /// `pb::Role`.
    #[prost(int32, tag = "1")]
    pub role: i32,
    #[prost(uint64, tag = "2")]
    pub joined_ms: u64,
    /// The seq of the event that (last) added the member: where their history starts in a
    /// JOINED group (0: added before this was kept, read as 1).
    #[prost(uint64, tag = "3")]
    pub visible_from: u64,
}

/// An inbox entry: a pointer to a timeline entry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InboxRecord {
    #[prost(string, tag = "1")]
    pub conversation: String,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    /// The message's `expires_ms` (0 = never), so Sync can tell an expired entry without
    /// decoding the message.
    #[prost(uint64, tag = "3")]
    pub expires_ms: u64,
}

/// What a (sender, client_msg_id) was answered with the first time.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DedupRecord {
    #[prost(string, tag = "1")]
    pub conversation: String,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    #[prost(uint64, tag = "3")]
    pub server_time_ms: u64,
    #[prost(uint64, tag = "4")]
    pub inbox_seq: u64,
}

/// How far a user has read a conversation.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ReadRecord {
    #[prost(uint64, tag = "1")]
    pub read_seq: u64,
}

/// A user's own settings of one conversation.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SettingsRecord {
    #[prost(bool, tag = "1")]
    pub muted: bool,
    #[prost(bool, tag = "2")]
    pub pinned: bool,
}

/// One side of a contact relation: what `user` has with `other` (`data` `k`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContactRecord {
    /// A wire `ContactState` (friend, incoming, outgoing, blocked).
    #[prost(int32, tag = "1")]
    pub state: i32,
    /// The request's message (incoming and outgoing only).
    #[prost(string, tag = "2")]
    pub message: String,
    /// Server time the relation took this state.
    #[prost(uint64, tag = "3")]
    pub since_ms: u64,
}

/// A device's push target (offline push, docs/PUSH.md).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushTargetRecord {
    /// "apns", "fcm", "webpush" or "webhook".
    #[prost(string, tag = "1")]
    pub platform: String,
    /// The pushkey: the platform's device token or the endpoint URL.
    #[prost(string, tag = "2")]
    pub token: String,
    /// Notifications carry a preview of the message text.
    #[prost(bool, tag = "3")]
    pub include_preview: bool,
    #[prost(uint64, tag = "4")]
    pub registered_ms: u64,
    /// The user's and the device's token epochs at registration: once either moved (a
    /// revoke, a logout), the target is stale and removed instead of notified.
    #[prost(uint64, tag = "5")]
    pub user_epoch: u64,
    #[prost(uint64, tag = "6")]
    pub device_epoch: u64,
}

/// A pending notification of one message to one device (written in the message's batch).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushQueueRecord {
    #[prost(string, tag = "1")]
    pub sender: String,
    /// When the message was stored, Unix ms: the notification is given up past the
    /// configured age.
    #[prost(uint64, tag = "2")]
    pub enqueued_ms: u64,
    /// The message mentions the device's user (by name or @all).
    #[prost(bool, tag = "3")]
    pub mention: bool,
    /// A 1:1 conversation.
    #[prost(bool, tag = "4")]
    pub direct: bool,
}

/// A user's profile (the `profiles` space; the account itself stays in `users`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProfileRecord {
    #[prost(string, tag = "1")]
    pub display_name: String,
    #[prost(string, tag = "2")]
    pub status: String,
    /// The avatar's blob id ("" until blob upload exists).
    #[prost(string, tag = "3")]
    pub avatar: String,
    #[prost(uint64, tag = "4")]
    pub updated_ms: u64,
}

/// A stored blob (the `blobs` space): what the server learned of its content when the
/// upload finished. The bytes live in a file under `<data-dir>/blobs/` named by the id.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BlobRecord {
    #[prost(uint64, tag = "1")]
    pub size: u64,
    #[prost(string, tag = "2")]
    pub mime: String,
    /// Images: pixels (0 for other files).
    #[prost(uint32, tag = "3")]
    pub width: u32,
    #[prost(uint32, tag = "4")]
    pub height: u32,
    /// Images: the server-made JPEG thumbnail.
    #[prost(bytes = "vec", tag = "5")]
    pub thumbnail: Vec<u8>,
    #[prost(uint32, tag = "6")]
    pub thumbnail_width: u32,
    #[prost(uint32, tag = "7")]
    pub thumbnail_height: u32,
    /// When the first upload finished, Unix ms: the unreferenced grace period starts here.
    #[prost(uint64, tag = "8")]
    pub created_ms: u64,
    /// The users who uploaded this content (each is charged its size).
    #[prost(string, repeated, tag = "9")]
    pub uploaders: Vec<String>,
}

/// A user's claim on a blob they uploaded (the `blob_grants` space): counts against
/// their quota and lets them read and send it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BlobGrantRecord {
    #[prost(uint64, tag = "1")]
    pub size: u64,
    #[prost(uint64, tag = "2")]
    pub created_ms: u64,
}

/// An upload in progress (the `uploads` space); its bytes so far are in a part file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UploadRecord {
    #[prost(uint64, tag = "1")]
    pub size: u64,
    #[prost(string, tag = "2")]
    pub mime: String,
    #[prost(uint64, tag = "3")]
    pub created_ms: u64,
}
