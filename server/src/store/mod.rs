//! Storage behind a small trait with domain operations.
//!
//! Everything above this module talks to [`Store`]; sled types never leave [`sled_store`].
//! [`keys`] is the catalogue of every key space (what maps to what), shared by the
//! backends; [`records`] are the stored values; [`memory`] is an in-memory backend for
//! fast domain tests, held to the same [`conformance`] suite as sled; [`watermark`]
//! detects a store that came back from damage missing acknowledged writes;
//! [`durable_file`] writes small files (watermark, dev certificates) so that a crash or a
//! power cut leaves them whole or absent. Values are protobuf (the records below, and the
//! wire `Message` for timeline entries). Writes that belong together go through [`Store::commit`] as one atomic
//! unit; nothing is durable until [`Store::flush`] returns (the group-commit flusher in
//! `durability.rs` calls it).
//!
//! `conformance` (test builds only) is the test suite every backend must pass.

pub(crate) mod durable_file;
pub(crate) mod keys;
pub(crate) mod memory;
pub(crate) mod records;
pub(crate) mod sled_store;
pub(crate) mod watermark;

#[cfg(test)]
pub(crate) mod conformance;

use tern_proto::pb;

pub use memory::MemoryStore;
pub(crate) use records::*;
pub use sled_store::SledStore;

/// A storage failure. Details are logged; clients only ever see `INTERNAL` (retryable).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(String),
    #[error("corrupt record in {tree}: {detail}")]
    Corrupt { tree: &'static str, detail: String },
    #[error("data dir was made by schema version {found}, this server knows {expected}")]
    Schema { found: u32, expected: u32 },
    /// A flush failed earlier: the store refuses writes until the server restarts.
    #[error(
        "the store refuses writes since a flush failed; restart the server once the disk is fixed"
    )]
    Failed,
}

pub(crate) type StoreResult<T> = Result<T, StoreError>;

/// One write of an atomic [`Store::commit`].
// `Message` is the big one and the common one: boxing it would add an allocation per
// message for the sake of the rare small variants.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Mutation {
    /// timeline: conversation ++ seq -> Message
    Message(pb::Message),
    /// inbox: user ++ inbox_seq -> InboxRecord
    Inbox {
        user: String,
        inbox_seq: u64,
        entry: InboxRecord,
    },
    /// dedup: sender ++ client_msg_id -> DedupRecord. The commit fails with
    /// [`CommitOutcome::Duplicate`] (and writes nothing) if the key exists.
    Dedup {
        sender: String,
        client_msg_id: String,
        record: DedupRecord,
    },
    /// conversations: conversation -> ConversationRecord
    Conversation {
        conversation: String,
        record: ConversationRecord,
    },
    /// members + user_conversations
    PutMember {
        conversation: String,
        user: String,
        record: MemberRecord,
    },
    /// members + user_conversations
    DelMember { conversation: String, user: String },
    /// settings: user ++ conversation -> SettingsRecord
    Settings {
        user: String,
        conversation: String,
        record: SettingsRecord,
    },
    /// contacts: user ++ other -> ContactRecord (`None` deletes it)
    Contact {
        user: String,
        other: String,
        record: Option<ContactRecord>,
    },
    /// mentions: user ++ conversation ++ seq -> () (message `seq` mentions `user`)
    Mention {
        user: String,
        conversation: String,
        seq: u64,
    },
    /// mention_all: conversation ++ seq -> sender (message `seq` is an @all)
    MentionAll {
        conversation: String,
        seq: u64,
        sender: String,
    },
    /// mentions: removes `user`'s mention at `seq` (a recalled message)
    Unmention {
        user: String,
        conversation: String,
        seq: u64,
    },
    /// mention_all: removes the @all at `seq` (a recalled message)
    UnmentionAll { conversation: String, seq: u64 },
    /// not_counted: conversation ++ seq (an entry that is not an unread message: EDIT and
    /// RECALL entries, recalled messages)
    NotCounted { conversation: String, seq: u64 },
    /// hidden: user ++ conversation ++ seq (deleted for that user)
    Hide {
        user: String,
        conversation: String,
        seq: u64,
    },
    /// channels: the directory entry of a public channel (by its name, lowercased)
    ListChannel { name: String, conversation: String },
    /// channels: removes a directory entry (renamed or dissolved)
    UnlistChannel { name: String, conversation: String },
    /// expiry: a message with a time to live, to be erased once it expires
    Expiry(ExpiryEntry),
    /// expiry: the sweeper erased it
    DelExpiry(ExpiryEntry),
    /// read: user ++ conversation -> ReadRecord (callers only ever move it forward)
    Read {
        user: String,
        conversation: String,
        read_seq: u64,
    },
    /// push_targets: user ++ device -> PushTargetRecord (replaces the device's target)
    PushTarget(PushTarget),
    /// push_targets: removes a device's target
    DelPushTarget { user: String, device: String },
    /// push_queue: user ++ device ++ conversation ++ seq -> PushQueueRecord
    PushQueue(PushEntry),
    /// profiles: user -> ProfileRecord
    Profile { user: String, record: ProfileRecord },
    /// display_names: lowercased display name ++ user (the user-search index)
    ListDisplayName { name: String, user: String },
    /// display_names: removes an index entry (the display name changed or was cleared)
    UnlistDisplayName { name: String, user: String },
    /// dedup: removes a (sender, client_msg_id) record (its message was trimmed by
    /// retention, past the retry window)
    DelDedup {
        sender: String,
        client_msg_id: String,
    },
    /// inbox retention: deletes `user`'s inbox entries `from..below` and records `below`
    /// as the first retained inbox seq (`inbox_retained`). Callers keep `below - from`
    /// bounded (one batch) and never pass `below` past the inbox head + 1.
    TrimInbox { user: String, from: u64, below: u64 },
    /// timeline retention: deletes the timeline entries `from..below` of `conversation`
    /// with their not_counted and mention_all records, and records `below` as the first
    /// retained seq (`timeline_retained`). Mentions, expiries and pending notifications
    /// are keyed by user or time: the caller removes them with their own mutations.
    TrimTimeline {
        conversation: String,
        from: u64,
        below: u64,
    },
    /// blobs: blob id -> BlobRecord (`None` deletes it)
    Blob {
        id: String,
        record: Option<BlobRecord>,
    },
    /// blob_refs: blob id ++ holder ++ seq -> () (message `seq` of conversation `holder`
    /// carries the blob; holder `avatar:<user>` with seq 0: a user's avatar)
    BlobRef {
        blob: String,
        holder: String,
        seq: u64,
        present: bool,
    },
    /// blob_grants: user ++ blob id -> BlobGrantRecord (`None` deletes it)
    BlobGrant {
        user: String,
        blob: String,
        record: Option<BlobGrantRecord>,
    },
    /// uploads: user ++ blob id -> UploadRecord (`None` deletes it)
    Upload {
        user: String,
        blob: String,
        record: Option<UploadRecord>,
    },
    /// push_queue: removes one pending notification (sent, given up, or its target gone)
    DelPushQueue {
        user: String,
        device: String,
        conversation: String,
        seq: u64,
    },
}

/// One device's push target.
#[derive(Debug, Clone, PartialEq)]
pub struct PushTarget {
    pub user: String,
    pub device: String,
    pub record: PushTargetRecord,
}

/// One pending notification: message `seq` of `conversation` for `user`'s `device`.
#[derive(Debug, Clone, PartialEq)]
pub struct PushEntry {
    pub user: String,
    pub device: String,
    pub conversation: String,
    pub seq: u64,
    pub record: PushQueueRecord,
}

/// A message with a time to live, in the expiry index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryEntry {
    pub expires_ms: u64,
    pub conversation: String,
    pub seq: u64,
}

/// Result of a commit.
#[derive(Debug, Clone, PartialEq)]
pub enum CommitOutcome {
    Applied,
    /// A `Mutation::Dedup` key already existed: nothing was written.
    Duplicate(DedupRecord),
}

/// The storage a tern server runs on. Implementations must make `commit` atomic (all or
/// nothing, also across a crash) and make everything committed before a `flush` call
/// durable when it returns.
pub trait Store: Send + Sync + 'static {
    /// Random id made when the data dir was created.
    fn store_epoch(&self) -> String;
    /// Secret key for signing tokens, made when the data dir was created.
    fn signing_key(&self) -> [u8; 32];

    fn user(&self, name: &str) -> StoreResult<Option<UserRecord>>;
    /// Creates the user if the name is free; `false` if it was taken.
    fn create_user(&self, name: &str, record: &UserRecord) -> StoreResult<bool>;
    fn put_user(&self, name: &str, record: &UserRecord) -> StoreResult<()>;

    fn device(&self, user: &str, device: &str) -> StoreResult<Option<DeviceRecord>>;
    fn put_device(&self, user: &str, device: &str, record: &DeviceRecord) -> StoreResult<()>;
    fn devices(&self, user: &str) -> StoreResult<Vec<(String, DeviceRecord)>>;

    fn conversation(&self, conversation: &str) -> StoreResult<Option<ConversationRecord>>;
    fn members(&self, conversation: &str) -> StoreResult<Vec<(String, MemberRecord)>>;
    fn user_conversations(&self, user: &str) -> StoreResult<Vec<String>>;

    /// Highest seq in the conversation's timeline (0 if empty). Retention never lowers
    /// it: with every entry trimmed it is the first retained seq - 1.
    fn last_seq(&self, conversation: &str) -> StoreResult<u64>;
    /// Highest inbox seq of the user (0 if empty). Retention never lowers it: with every
    /// entry trimmed it is the first retained inbox seq - 1.
    fn last_inbox_seq(&self, user: &str) -> StoreResult<u64>;
    /// The lowest seq of `conversation` that timeline retention kept (1: nothing trimmed).
    fn first_retained_seq(&self, conversation: &str) -> StoreResult<u64>;
    /// The lowest inbox seq of `user` that inbox retention kept (1: nothing trimmed).
    fn first_retained_inbox_seq(&self, user: &str) -> StoreResult<u64>;
    fn dedup(&self, sender: &str, client_msg_id: &str) -> StoreResult<Option<DedupRecord>>;
    /// `user`'s settings of `conversation` (default: not muted, not pinned).
    fn conversation_settings(&self, user: &str, conversation: &str) -> StoreResult<SettingsRecord>;
    /// Messages of `conversation` after `after` that mention `user` by name or are an
    /// @all from someone else.
    fn mentions_after(&self, user: &str, conversation: &str, after: u64) -> StoreResult<u64>;
    /// Entries of `conversation` after `after` that are not counted as unread messages
    /// (see [`Mutation::NotCounted`]).
    fn not_counted_after(&self, conversation: &str, after: u64) -> StoreResult<u64>;
    /// The seqs in `from..=to` of `conversation` that `user` deleted for themselves.
    fn hidden(&self, user: &str, conversation: &str, from: u64, to: u64) -> StoreResult<Vec<u64>>;
    /// Messages whose time to live ended at or before `now_ms`, soonest first, at most
    /// `limit`.
    fn expired_until(&self, now_ms: u64, limit: usize) -> StoreResult<Vec<ExpiryEntry>>;
    /// Every read position of `user` (conversations never read are absent).
    fn read_positions(&self, user: &str) -> StoreResult<Vec<(String, u64)>>;
    /// Every conversation setting of `user` (conversations with default settings may be
    /// absent).
    fn all_conversation_settings(&self, user: &str) -> StoreResult<Vec<(String, SettingsRecord)>>;
    /// What `user` has with `other` (none: no relation).
    fn contact(&self, user: &str, other: &str) -> StoreResult<Option<ContactRecord>>;
    /// Every contact relation of `user`, in name order.
    fn contacts(&self, user: &str) -> StoreResult<Vec<(String, ContactRecord)>>;
    /// Public channels whose lowercased name starts with `prefix` (lowercase), in name
    /// order, at most `limit`.
    fn channels(&self, prefix: &str, limit: usize) -> StoreResult<Vec<String>>;
    /// Users whose name starts with `prefix` and sorts after `after`, in name order, at
    /// most `limit` (the admin API's paged listing).
    fn users_page(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> StoreResult<Vec<(String, UserRecord)>>;
    /// Conversations whose id starts with `prefix` (`g:` for the groups) and sorts after
    /// `after`, in id order, at most `limit`.
    fn conversations_page(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> StoreResult<Vec<(String, ConversationRecord)>>;
    /// How far `user` has read `conversation` (0: nothing yet).
    fn read_seq(&self, user: &str, conversation: &str) -> StoreResult<u64>;
    /// `user`'s profile (`None`: never set).
    fn profile(&self, user: &str) -> StoreResult<Option<ProfileRecord>>;
    /// Users whose lowercased display name starts with `prefix` (lowercase), in display
    /// name order, at most `limit`: a range scan of the display-name index.
    fn display_name_prefix(&self, prefix: &str, limit: usize) -> StoreResult<Vec<String>>;
    /// Every device's push target, in (user, device) order.
    fn push_targets(&self) -> StoreResult<Vec<PushTarget>>;
    /// Every pending notification, in (user, device, conversation, seq) order.
    fn push_queue(&self) -> StoreResult<Vec<PushEntry>>;

    /// A stored blob's record.
    fn blob(&self, id: &str) -> StoreResult<Option<BlobRecord>>;
    /// Blob records with an id after `after`, in id order, at most `limit` (the sweeper).
    fn blobs_after(&self, after: &str, limit: usize) -> StoreResult<Vec<(String, BlobRecord)>>;
    /// What holds blob `id`: (conversation or `avatar:<user>`, seq), at most `limit`.
    fn blob_refs(&self, id: &str, limit: usize) -> StoreResult<Vec<(String, u64)>>;
    /// Every blob `user` uploaded, in id order.
    fn blob_grants(&self, user: &str) -> StoreResult<Vec<(String, BlobGrantRecord)>>;
    /// `user`'s grant on blob `id` (a point read: who may read it, on every download).
    fn blob_grant(&self, user: &str, id: &str) -> StoreResult<Option<BlobGrantRecord>>;
    /// `user`'s upload in progress of blob `id`.
    fn upload(&self, user: &str, id: &str) -> StoreResult<Option<UploadRecord>>;
    /// Every upload in progress: (user, blob id, record), in (user, id) order.
    fn uploads(&self) -> StoreResult<Vec<(String, String, UploadRecord)>>;

    /// Timeline entries with `from <= seq <= to`, ascending, at most `limit`.
    fn timeline(
        &self,
        conversation: &str,
        from: u64,
        to: u64,
        limit: usize,
    ) -> StoreResult<Vec<pb::Message>>;
    fn message(&self, conversation: &str, seq: u64) -> StoreResult<Option<pb::Message>>;
    /// The timeline entry as encoded wire `Message` bytes (what catch-up pages carry).
    fn message_bytes(&self, conversation: &str, seq: u64) -> StoreResult<Option<bytes::Bytes>> {
        use prost::Message as _;
        Ok(self
            .message(conversation, seq)?
            .map(|m| m.encode_to_vec().into()))
    }
    /// Inbox entries with `inbox_seq > after`, ascending, at most `limit`.
    fn inbox(&self, user: &str, after: u64, limit: usize) -> StoreResult<Vec<(u64, InboxRecord)>>;

    /// Applies all mutations atomically.
    fn commit(&self, mutations: &[Mutation]) -> StoreResult<CommitOutcome>;
    /// Makes everything committed so far durable. Blocking.
    fn flush(&self) -> StoreResult<usize>;
    /// How many commits were applied since the store was created. Kept with the data, so
    /// a store that lost writes (damaged files) reports fewer than it once did.
    fn commit_count(&self) -> StoreResult<u64>;
}
