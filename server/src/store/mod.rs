//! Storage behind a small trait with domain operations.
//!
//! Everything above this module talks to [`Store`]; sled types never leave
//! [`sled_store`]. Values are protobuf (the records below, and the wire `Message` for
//! timeline entries). Writes that belong together go through [`Store::commit`] as one atomic
//! unit; nothing is durable until [`Store::flush`] returns (the group-commit flusher in
//! `durability.rs` calls it).
//!
//! `conformance` (test builds only) is the test suite every backend must pass.

pub mod sled_store;

#[cfg(test)]
pub mod conformance;

use tern_proto::pb;

pub use sled_store::SledStore;

/// A storage failure. Details are logged; clients only ever see `INTERNAL`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(String),
    #[error("corrupt record in {tree}: {detail}")]
    Corrupt { tree: &'static str, detail: String },
    #[error("data dir was made by schema version {found}, this server knows {expected}")]
    Schema { found: u32, expected: u32 },
}

pub type StoreResult<T> = Result<T, StoreError>;

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
}

/// One device of a user: its token epoch and its server-side ack cursor.
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
}

/// A member of a conversation.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberRecord {
    /// `pb::Role`.
    #[prost(int32, tag = "1")]
    pub role: i32,
    #[prost(uint64, tag = "2")]
    pub joined_ms: u64,
}

/// An inbox entry: a pointer to a timeline entry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InboxRecord {
    #[prost(string, tag = "1")]
    pub conversation: String,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
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

/// One write of an atomic [`Store::commit`].
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

    /// Highest seq in the conversation's timeline (0 if empty).
    fn last_seq(&self, conversation: &str) -> StoreResult<u64>;
    /// Highest inbox seq of the user (0 if empty).
    fn last_inbox_seq(&self, user: &str) -> StoreResult<u64>;
    fn dedup(&self, sender: &str, client_msg_id: &str) -> StoreResult<Option<DedupRecord>>;

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

/// Builds `a ++ 0x00 ++ b`. Names and conversation ids never contain 0x00 (validated at
/// the edge), so a prefix scan over `a ++ 0x00` yields exactly a's entries.
pub(crate) fn key2(a: &str, b: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + 1 + b.len());
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b);
    k
}

/// Builds `a ++ 0x00 ++ big-endian seq`, so scans come back in seq order.
pub(crate) fn key_seq(a: &str, seq: u64) -> Vec<u8> {
    key2(a, &seq.to_be_bytes())
}

pub(crate) fn prefix(a: &str) -> Vec<u8> {
    key2(a, &[])
}
