//! Persistence of what a device must not forget across app restarts: its token, its
//! cursors (so it does not download again what it has) and, optionally, its outbox (so
//! unacknowledged sends are sent again after a restart); for a store that keeps more, the
//! messages delivered too ([`StateStore::commit`]).
//!
//! Stores that come with the SDK: [`MemoryStore`] (tests), [`FileStore`] (one JSON file)
//! and [`SqliteStore`] (the device's local copy in SQLite: conversations, history, read
//! state, with schema migrations; [`sqlite`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tern_proto::pb;

use crate::engine::{Cursors, Outgoing, Target};

pub mod sqlite;
pub use sqlite::{SqliteStore, StoredConversation};

/// Everything a [`StateStore`] keeps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SavedState {
    pub token: Option<String>,
    pub cursors: Cursors,
    pub outbox: Vec<Outgoing>,
}

/// Where a client keeps its [`SavedState`]. Implement it over your app's own storage;
/// [`MemoryStore`] and [`FileStore`] come with the SDK.
pub trait StateStore: Send + 'static {
    fn load(&mut self) -> std::io::Result<SavedState>;
    fn save(&mut self, state: &SavedState) -> std::io::Result<()>;

    /// Keeps `messages` (just delivered, in order) together with `state`, whose cursors
    /// cover them, in one atomic write: after a crash either both are there or neither.
    /// The default keeps no messages and saves `state`.
    ///
    /// With [`ConfirmMode::Store`](crate::ConfirmMode::Store) the client calls this before
    /// the app sees the messages, and a successful commit is their confirmation; an error
    /// leaves them unconfirmed (they come again after a restart).
    fn commit(&mut self, state: &SavedState, messages: &[pb::Message]) -> std::io::Result<()> {
        let _ = messages;
        self.save(state)
    }

    /// True for a store whose [`StateStore::commit`] keeps messages (the client then
    /// commits every delivery, whatever its confirm mode). Default false.
    fn keeps_messages(&self) -> bool {
        false
    }

    /// This user has read `conversation` up to `read_seq` (on any of their devices). The
    /// default keeps nothing.
    fn record_read(&mut self, conversation: &str, read_seq: u64) -> std::io::Result<()> {
        let _ = (conversation, read_seq);
        Ok(())
    }

    /// This user deleted message `seq` of `conversation` for themselves (on any of their
    /// devices; [`Event::Hidden`](crate::Event::Hidden)): a store that keeps messages drops
    /// its content. The default keeps nothing.
    fn record_hidden(&mut self, conversation: &str, seq: u64) -> std::io::Result<()> {
        let _ = (conversation, seq);
        Ok(())
    }
}

/// Keeps state for the life of the process only.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    state: SavedState,
}

impl StateStore for MemoryStore {
    fn load(&mut self) -> std::io::Result<SavedState> {
        Ok(self.state.clone())
    }
    fn save(&mut self, state: &SavedState) -> std::io::Result<()> {
        self.state = state.clone();
        Ok(())
    }
}

/// Keeps state in a JSON file, replaced atomically (write to a temp file, then rename).
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[derive(Serialize, Deserialize, Default)]
struct FileState {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    store_epoch: String,
    #[serde(default)]
    inbox: u64,
    #[serde(default)]
    conversations: BTreeMap<String, u64>,
    /// Per conversation, the highest seq delivered (absent in files of older SDKs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    delivered: BTreeMap<String, u64>,
    #[serde(default)]
    outbox: Vec<FileOutgoing>,
}

#[derive(Serialize, Deserialize)]
struct FileOutgoing {
    client_msg_id: String,
    #[serde(default)]
    to_user: Option<String>,
    #[serde(default)]
    conversation: Option<String>,
    /// Raw bytes (bodies need not be UTF-8).
    body: Vec<u8>,
    #[serde(default)]
    content_type: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    reply_to: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    mentions: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    mention_all: bool,
    /// Time to live (s) from `created_ms`; absent = never dropped.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    ttl_secs: u32,
    /// When it was queued (Unix ms), so a TTL keeps counting across restarts.
    #[serde(default, skip_serializing_if = "is_zero")]
    created_ms: u64,
    /// An image or file message: the blob id and the file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attachment: Option<(String, String)>,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl StateStore for FileStore {
    fn load(&mut self) -> std::io::Result<SavedState> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SavedState::default()),
            Err(e) => return Err(e),
        };
        let f: FileState = serde_json::from_str(&text).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", self.path.display()),
            )
        })?;
        Ok(SavedState {
            token: f.token,
            cursors: Cursors {
                store_epoch: f.store_epoch,
                inbox: f.inbox,
                conversations: f.conversations,
                delivered: f.delivered,
            },
            outbox: f
                .outbox
                .into_iter()
                .filter_map(|o| {
                    let target = match (o.to_user, o.conversation) {
                        (Some(u), None) => Target::User(u),
                        (None, Some(c)) => Target::Conversation(c),
                        _ => return None,
                    };
                    Some(Outgoing {
                        client_msg_id: o.client_msg_id,
                        target,
                        body: Bytes::from(o.body),
                        content_type: o.content_type,
                        reply_to: o.reply_to,
                        mentions: o.mentions,
                        mention_all: o.mention_all,
                        ttl_secs: o.ttl_secs,
                        created_ms: o.created_ms,
                        attachment: o.attachment.map(|(blob_id, name)| pb::Attachment {
                            blob_id,
                            name,
                            ..Default::default()
                        }),
                    })
                })
                .collect(),
        })
    }

    fn save(&mut self, s: &SavedState) -> std::io::Result<()> {
        let f = FileState {
            token: s.token.clone(),
            store_epoch: s.cursors.store_epoch.clone(),
            inbox: s.cursors.inbox,
            conversations: s.cursors.conversations.clone(),
            delivered: s.cursors.delivered.clone(),
            outbox: s
                .outbox
                .iter()
                .map(|o| FileOutgoing {
                    client_msg_id: o.client_msg_id.clone(),
                    to_user: match &o.target {
                        Target::User(u) => Some(u.clone()),
                        _ => None,
                    },
                    conversation: match &o.target {
                        Target::Conversation(c) => Some(c.clone()),
                        _ => None,
                    },
                    body: o.body.to_vec(),
                    content_type: o.content_type.clone(),
                    reply_to: o.reply_to,
                    mentions: o.mentions.clone(),
                    mention_all: o.mention_all,
                    ttl_secs: o.ttl_secs,
                    created_ms: o.created_ms,
                    attachment: o
                        .attachment
                        .as_ref()
                        .map(|a| (a.blob_id.clone(), a.name.clone())),
                })
                .collect(),
        };
        let text = serde_json::to_string_pretty(&f).map_err(std::io::Error::other)?;
        if let Some(dir) = self.path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut fs = FileStore::new(dir.path().join("sub/state.json"));
        assert_eq!(fs.load().unwrap(), SavedState::default());
        let s = SavedState {
            token: Some("t".into()),
            cursors: Cursors {
                store_epoch: "e".into(),
                inbox: 12,
                conversations: [("g:1".to_string(), 3)].into_iter().collect(),
                delivered: [("d:a:b".to_string(), 5)].into_iter().collect(),
            },
            outbox: vec![Outgoing {
                client_msg_id: "m".into(),
                target: Target::Conversation("g:1".into()),
                body: Bytes::from_static(b"hello"),
                content_type: String::new(),
                reply_to: 2,
                mentions: vec!["carol".into()],
                mention_all: true,
                ttl_secs: 30,
                created_ms: 1_700_000_000_000,
                attachment: None,
            }],
        };
        fs.save(&s).unwrap();
        assert_eq!(FileStore::new(fs.path()).load().unwrap(), s);
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_silent_reset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        std::fs::write(&p, "{not json").unwrap();
        assert!(FileStore::new(&p).load().is_err());
    }
}
