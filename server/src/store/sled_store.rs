//! The sled implementation of [`Store`], the default and for now the only backend.
//!
//! Trees (keys use big-endian integers so range scans come back in seq order; `++` is
//! concatenation with a 0x00 separator after the variable-length part):
//!
//! | tree            | key                          | value                  |
//! |-----------------|------------------------------|------------------------|
//! | `meta`          | name                         | schema version, store epoch, signing key, commit count |
//! | `users`         | user                         | `UserRecord`           |
//! | `devices`       | user ++ device               | `DeviceRecord`         |
//! | `conversations` | conversation                 | `ConversationRecord`   |
//! | `members`       | conversation ++ user         | `MemberRecord`         |
//! | `user_convs`    | user ++ conversation         | empty                  |
//! | `timeline`      | conversation ++ seq(be64)    | wire `Message`         |
//! | `inbox`         | user ++ inbox_seq(be64)      | `InboxRecord`          |
//! | `dedup`         | sender ++ client_msg_id      | `DedupRecord`          |
//!
//! sled caveats handled here on purpose: only `flush` makes writes durable (callers wait
//! for it before acking); `cache_capacity` is set explicitly; multi-tree writes go in one
//! transaction, which sled applies atomically.

use std::path::Path;

use prost::Message as _;
use rand::RngCore;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use tern_proto::pb;

use super::*;

const SCHEMA_VERSION: u32 = 1;
const COMMIT_COUNT: &str = "commit_count";

pub struct SledStore {
    db: sled::Db,
    meta: sled::Tree,
    users: sled::Tree,
    devices: sled::Tree,
    conversations: sled::Tree,
    members: sled::Tree,
    user_convs: sled::Tree,
    timeline: sled::Tree,
    inbox: sled::Tree,
    dedup: sled::Tree,
    epoch: String,
    signing_key: [u8; 32],
}

fn engine(e: sled::Error) -> StoreError {
    StoreError::Engine(e.to_string())
}

fn decode<T: prost::Message + Default>(tree: &'static str, bytes: &[u8]) -> StoreResult<T> {
    T::decode(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        detail: e.to_string(),
    })
}

fn seq_of(tree: &'static str, key: &[u8]) -> StoreResult<u64> {
    let tail: [u8; 8] = key
        .get(key.len().saturating_sub(8)..)
        .and_then(|s| s.try_into().ok())
        .ok_or(StoreError::Corrupt {
            tree,
            detail: "short key".into(),
        })?;
    Ok(u64::from_be_bytes(tail))
}

fn name_after_prefix(tree: &'static str, key: &[u8], prefix_len: usize) -> StoreResult<String> {
    String::from_utf8(key[prefix_len..].to_vec()).map_err(|_| StoreError::Corrupt {
        tree,
        detail: "key is not UTF-8".into(),
    })
}

/// Why a commit transaction stopped early.
enum Abort {
    Duplicate(DedupRecord),
    Corrupt(String),
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. `cache_bytes` bounds sled's page cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> StoreResult<Self> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(500))
            .open()
            .map_err(engine)?;
        let meta = db.open_tree("meta").map_err(engine)?;
        let schema = match meta.get("schema_version").map_err(engine)? {
            Some(v) => {
                let b: [u8; 4] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    tree: "meta",
                    detail: "schema_version".into(),
                })?;
                u32::from_be_bytes(b)
            }
            None => {
                // A new data dir: make its identity, durably, before anything else.
                let mut epoch = [0u8; 8];
                let mut key = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut epoch);
                rand::thread_rng().fill_bytes(&mut key);
                let epoch_hex: String = epoch.iter().map(|b| format!("{b:02x}")).collect();
                meta.insert("store_epoch", epoch_hex.as_bytes())
                    .map_err(engine)?;
                meta.insert("signing_key", &key[..]).map_err(engine)?;
                meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())
                    .map_err(engine)?;
                db.flush().map_err(engine)?;
                SCHEMA_VERSION
            }
        };
        if schema != SCHEMA_VERSION {
            return Err(StoreError::Schema {
                found: schema,
                expected: SCHEMA_VERSION,
            });
        }
        let corrupt_meta = |what: &str| StoreError::Corrupt {
            tree: "meta",
            detail: format!("{what} missing or malformed"),
        };
        let epoch = meta
            .get("store_epoch")
            .map_err(engine)?
            .and_then(|v| String::from_utf8(v.to_vec()).ok())
            .ok_or_else(|| corrupt_meta("store_epoch"))?;
        let signing_key: [u8; 32] = meta
            .get("signing_key")
            .map_err(engine)?
            .and_then(|v| v.as_ref().try_into().ok())
            .ok_or_else(|| corrupt_meta("signing_key"))?;
        let tree = |name: &str| db.open_tree(name).map_err(engine);
        Ok(Self {
            meta: meta.clone(),
            users: tree("users")?,
            devices: tree("devices")?,
            conversations: tree("conversations")?,
            members: tree("members")?,
            user_convs: tree("user_convs")?,
            timeline: tree("timeline")?,
            inbox: tree("inbox")?,
            dedup: tree("dedup")?,
            db,
            epoch,
            signing_key,
        })
    }

    fn get<T: prost::Message + Default>(
        tree: &sled::Tree,
        name: &'static str,
        key: &[u8],
    ) -> StoreResult<Option<T>> {
        match tree.get(key).map_err(engine)? {
            Some(v) => Ok(Some(decode(name, &v)?)),
            None => Ok(None),
        }
    }

    fn last_in_prefix(tree: &sled::Tree, name: &'static str, p: &[u8]) -> StoreResult<u64> {
        match tree.scan_prefix(p).next_back() {
            Some(kv) => {
                let (k, _) = kv.map_err(engine)?;
                seq_of(name, &k)
            }
            None => Ok(0),
        }
    }
}

impl Store for SledStore {
    fn store_epoch(&self) -> String {
        self.epoch.clone()
    }

    fn signing_key(&self) -> [u8; 32] {
        self.signing_key
    }

    fn user(&self, name: &str) -> StoreResult<Option<UserRecord>> {
        Self::get(&self.users, "users", name.as_bytes())
    }

    fn create_user(&self, name: &str, record: &UserRecord) -> StoreResult<bool> {
        let res = self
            .users
            .compare_and_swap(
                name.as_bytes(),
                None as Option<&[u8]>,
                Some(record.encode_to_vec()),
            )
            .map_err(engine)?;
        Ok(res.is_ok())
    }

    fn put_user(&self, name: &str, record: &UserRecord) -> StoreResult<()> {
        self.users
            .insert(name.as_bytes(), record.encode_to_vec())
            .map_err(engine)?;
        Ok(())
    }

    fn device(&self, user: &str, device: &str) -> StoreResult<Option<DeviceRecord>> {
        Self::get(&self.devices, "devices", &key2(user, device.as_bytes()))
    }

    fn put_device(&self, user: &str, device: &str, record: &DeviceRecord) -> StoreResult<()> {
        self.devices
            .insert(key2(user, device.as_bytes()), record.encode_to_vec())
            .map_err(engine)?;
        Ok(())
    }

    fn devices(&self, user: &str) -> StoreResult<Vec<(String, DeviceRecord)>> {
        let p = prefix(user);
        let mut out = Vec::new();
        for kv in self.devices.scan_prefix(&p) {
            let (k, v) = kv.map_err(engine)?;
            out.push((
                name_after_prefix("devices", &k, p.len())?,
                decode("devices", &v)?,
            ));
        }
        Ok(out)
    }

    fn conversation(&self, conversation: &str) -> StoreResult<Option<ConversationRecord>> {
        Self::get(
            &self.conversations,
            "conversations",
            conversation.as_bytes(),
        )
    }

    fn members(&self, conversation: &str) -> StoreResult<Vec<(String, MemberRecord)>> {
        let p = prefix(conversation);
        let mut out = Vec::new();
        for kv in self.members.scan_prefix(&p) {
            let (k, v) = kv.map_err(engine)?;
            out.push((
                name_after_prefix("members", &k, p.len())?,
                decode("members", &v)?,
            ));
        }
        Ok(out)
    }

    fn user_conversations(&self, user: &str) -> StoreResult<Vec<String>> {
        let p = prefix(user);
        let mut out = Vec::new();
        for kv in self.user_convs.scan_prefix(&p) {
            let (k, _) = kv.map_err(engine)?;
            out.push(name_after_prefix("user_convs", &k, p.len())?);
        }
        Ok(out)
    }

    fn last_seq(&self, conversation: &str) -> StoreResult<u64> {
        Self::last_in_prefix(&self.timeline, "timeline", &prefix(conversation))
    }

    fn last_inbox_seq(&self, user: &str) -> StoreResult<u64> {
        Self::last_in_prefix(&self.inbox, "inbox", &prefix(user))
    }

    fn dedup(&self, sender: &str, client_msg_id: &str) -> StoreResult<Option<DedupRecord>> {
        Self::get(
            &self.dedup,
            "dedup",
            &key2(sender, client_msg_id.as_bytes()),
        )
    }

    fn timeline(
        &self,
        conversation: &str,
        from: u64,
        to: u64,
        limit: usize,
    ) -> StoreResult<Vec<pb::Message>> {
        if from > to || limit == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for kv in self
            .timeline
            .range(key_seq(conversation, from)..=key_seq(conversation, to))
            .take(limit)
        {
            let (_, v) = kv.map_err(engine)?;
            out.push(decode("timeline", &v)?);
        }
        Ok(out)
    }

    fn message(&self, conversation: &str, seq: u64) -> StoreResult<Option<pb::Message>> {
        Self::get(&self.timeline, "timeline", &key_seq(conversation, seq))
    }

    fn inbox(&self, user: &str, after: u64, limit: usize) -> StoreResult<Vec<(u64, InboxRecord)>> {
        if after == u64::MAX || limit == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for kv in self
            .inbox
            .range(key_seq(user, after + 1)..=key_seq(user, u64::MAX))
            .take(limit)
        {
            let (k, v) = kv.map_err(engine)?;
            out.push((seq_of("inbox", &k)?, decode("inbox", &v)?));
        }
        Ok(out)
    }

    fn commit(&self, mutations: &[Mutation]) -> StoreResult<CommitOutcome> {
        let trees = (
            &self.timeline,
            &self.inbox,
            &self.dedup,
            &self.conversations,
            &self.members,
            &self.user_convs,
            &self.meta,
        );
        let res = trees.transaction(
            |(timeline, inbox, dedup, convs, members, user_convs, meta)| {
                let count = match meta.get(COMMIT_COUNT)? {
                    Some(v) => match <[u8; 8]>::try_from(v.as_ref()) {
                        Ok(b) => u64::from_be_bytes(b),
                        Err(_) => {
                            return Err(ConflictableTransactionError::Abort(Abort::Corrupt(
                                "commit_count".into(),
                            )))
                        }
                    },
                    None => 0,
                };
                meta.insert(COMMIT_COUNT, &(count + 1).to_be_bytes())?;
                for m in mutations {
                    match m {
                        Mutation::Message(msg) => {
                            timeline
                                .insert(key_seq(&msg.conversation, msg.seq), msg.encode_to_vec())?;
                        }
                        Mutation::Inbox {
                            user,
                            inbox_seq,
                            entry,
                        } => {
                            inbox.insert(key_seq(user, *inbox_seq), entry.encode_to_vec())?;
                        }
                        Mutation::Dedup {
                            sender,
                            client_msg_id,
                            record,
                        } => {
                            let k = key2(sender, client_msg_id.as_bytes());
                            if let Some(v) = dedup.get(&k)? {
                                let abort = match DedupRecord::decode(v.as_ref()) {
                                    Ok(rec) => Abort::Duplicate(rec),
                                    Err(e) => Abort::Corrupt(e.to_string()),
                                };
                                return Err(ConflictableTransactionError::Abort(abort));
                            }
                            dedup.insert(k, record.encode_to_vec())?;
                        }
                        Mutation::Conversation {
                            conversation,
                            record,
                        } => {
                            convs.insert(conversation.as_bytes(), record.encode_to_vec())?;
                        }
                        Mutation::PutMember {
                            conversation,
                            user,
                            record,
                        } => {
                            members.insert(
                                key2(conversation, user.as_bytes()),
                                record.encode_to_vec(),
                            )?;
                            user_convs.insert(key2(user, conversation.as_bytes()), &[][..])?;
                        }
                        Mutation::DelMember { conversation, user } => {
                            members.remove(key2(conversation, user.as_bytes()))?;
                            user_convs.remove(key2(user, conversation.as_bytes()))?;
                        }
                    }
                }
                Ok(())
            },
        );
        match res {
            Ok(()) => Ok(CommitOutcome::Applied),
            Err(TransactionError::Abort(Abort::Duplicate(rec))) => {
                Ok(CommitOutcome::Duplicate(rec))
            }
            Err(TransactionError::Abort(Abort::Corrupt(detail))) => Err(StoreError::Corrupt {
                tree: "dedup/meta",
                detail,
            }),
            Err(TransactionError::Storage(e)) => Err(engine(e)),
        }
    }

    fn flush(&self) -> StoreResult<usize> {
        self.db.flush().map_err(engine)
    }

    fn commit_count(&self) -> StoreResult<u64> {
        match self.meta.get(COMMIT_COUNT).map_err(engine)? {
            Some(v) => {
                let b: [u8; 8] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    tree: "meta",
                    detail: "commit_count".into(),
                })?;
                Ok(u64::from_be_bytes(b))
            }
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sled_store_passes_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8 << 20).unwrap();
        crate::store::conformance::run_all(&store);
    }

    #[test]
    fn identity_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (epoch, key) = {
            let s = SledStore::open(dir.path(), 8 << 20).unwrap();
            (s.store_epoch(), s.signing_key())
        };
        let s = SledStore::open(dir.path(), 8 << 20).unwrap();
        assert_eq!(s.store_epoch(), epoch);
        assert_eq!(s.signing_key(), key);
        let other = tempfile::tempdir().unwrap();
        let s2 = SledStore::open(other.path(), 8 << 20).unwrap();
        assert_ne!(
            s2.store_epoch(),
            epoch,
            "two data dirs must differ in epoch"
        );
    }

    #[test]
    fn committed_and_flushed_data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path(), 8 << 20).unwrap();
            crate::store::conformance::append(&s, "d:a:b", 1, "a", "m1");
            s.flush().unwrap();
        }
        let s = SledStore::open(dir.path(), 8 << 20).unwrap();
        assert_eq!(s.last_seq("d:a:b").unwrap(), 1);
        assert_eq!(s.message("d:a:b", 1).unwrap().unwrap().client_msg_id, "m1");
    }
}
