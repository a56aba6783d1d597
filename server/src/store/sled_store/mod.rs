//! The sled implementation of [`Store`], the default backend (the one that
//! persists; [`super::MemoryStore`] is for tests).
//!
//! Everything [`Store::commit`] writes lives in one tree, `data`, with a one-byte space tag
//! in front of each key, so a commit is a single `apply_batch`: sled writes it as one
//! atomic unit in its log (recovery keeps all of a batch or none of it). That is several
//! times cheaper than a multi-tree transaction, which is what the first version used
//! (see docs/BENCHMARKS.md). Keys use big-endian integers so range scans come back in seq
//! order.
//!
//! The key spaces are catalogued in [`crate::store::keys`].
//!
//! sled caveats handled here on purpose: only `flush` makes writes durable (callers wait
//! for it before acking); `cache_capacity` is set explicitly; commits are serialized by a
//! mutex so the dedup check and the batch that follows it are one step.
//!
//! Power loss: sled's own flush makes its log writes stable with `sync_file_range`, which
//! persists neither the metadata of a growing file nor the disk's write cache, so a flush
//! that returned could still lose its writes when the power fails. [`FileSync`] closes
//! that: after sled's flush it fdatasyncs the log file, fsyncs blob files sled wrote since
//! the last flush, and fsyncs the directories (sled renames snapshots without syncing
//! them). Only then does `flush` return, and only then are acks sent.
//!
//! The commit count is kept in memory and written to `meta` by every `flush`, after the
//! commits it counts, so a log cut short anywhere before a flushed count loses that count
//! too: the watermark check at startup then sees fewer commits than were durable.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

mod file_sync;
use file_sync::FileSync;

use prost::Message as _;
use rand::RngCore;
use tern_proto::pb;

use crate::store::keys::*;
use crate::store::*;

/// 2: one `data` tree for everything a commit writes (1 had a tree per kind).
const SCHEMA_VERSION: u32 = 2;
const COMMIT_COUNT: &str = "commit_count";

pub struct SledStore {
    db: sled::Db,
    meta: sled::Tree,
    users: sled::Tree,
    devices: sled::Tree,
    data: sled::Tree,
    /// Held across the dedup check and the batch of one commit.
    commit_lock: Mutex<()>,
    commits: AtomicU64,
    epoch: String,
    signing_key: [u8; 32],
    /// The fsync step after sled's flush.
    files: FileSync,
    /// Set when a flush failed: writes are refused from then on (see `Store::flush`).
    failed: std::sync::atomic::AtomicBool,
}

fn engine(e: sled::Error) -> StoreError {
    StoreError::Engine(e.to_string())
}

fn io_engine(e: std::io::Error) -> StoreError {
    StoreError::Engine(format!("syncing the store files: {e}"))
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
        let commits = match meta.get(COMMIT_COUNT).map_err(engine)? {
            Some(v) => u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| corrupt_meta(COMMIT_COUNT))?,
            ),
            None => 0,
        };
        let tree = |name: &str| db.open_tree(name).map_err(engine);
        // Everything sled wrote while opening (config, a new log, a recovery snapshot)
        // becomes durable before the store serves anything.
        let files = FileSync::open(dir).map_err(io_engine)?;
        files.sync().map_err(io_engine)?;
        Ok(Self {
            meta: meta.clone(),
            users: tree("users")?,
            devices: tree("devices")?,
            data: tree("data")?,
            commit_lock: Mutex::new(()),
            commits: AtomicU64::new(commits),
            db,
            epoch,
            signing_key,
            files,
            failed: std::sync::atomic::AtomicBool::new(false),
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

    fn get_in<T: prost::Message + Default>(
        &self,
        space: Space,
        key: &[u8],
    ) -> StoreResult<Option<T>> {
        Self::get(&self.data, space.name, &space.key(key))
    }

    /// `(name after the prefix, value)` of every entry of `space` under `owner ++ 0x00`.
    fn scan_names(&self, space: Space, owner: &str) -> StoreResult<Vec<(String, sled::IVec)>> {
        let p = space.key(&prefix(owner));
        let mut out = Vec::new();
        for kv in self.data.scan_prefix(&p) {
            let (k, v) = kv.map_err(engine)?;
            out.push((name_after_prefix(space.name, &k, p.len())?, v));
        }
        Ok(out)
    }

    /// A first-retained position (`y` / `z`): 1 when nothing was trimmed.
    fn retained(&self, space: Space, owner: &str) -> StoreResult<u64> {
        match self.data.get(space.key(owner.as_bytes())).map_err(engine)? {
            Some(v) => Ok(seq_of(space.name, &v)?.max(1)),
            None => Ok(1),
        }
    }

    /// Every record of `space` under `owner ++ 0x00`, by the name after the prefix.
    fn scan_records<T: prost::Message + Default>(
        &self,
        space: Space,
        owner: &str,
    ) -> StoreResult<Vec<(String, T)>> {
        self.scan_names(space, owner)?
            .into_iter()
            .map(|(name, v)| Ok((name, decode(space.name, &v)?)))
            .collect()
    }

    fn last_in_prefix(&self, space: Space, owner: &str) -> StoreResult<u64> {
        match self.data.scan_prefix(space.key(&prefix(owner))).next_back() {
            Some(kv) => {
                let (k, _) = kv.map_err(engine)?;
                seq_of(space.name, &k)
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
        self.writable()?;
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
        self.writable()?;
        self.users
            .insert(name.as_bytes(), record.encode_to_vec())
            .map_err(engine)?;
        Ok(())
    }

    fn device(&self, user: &str, device: &str) -> StoreResult<Option<DeviceRecord>> {
        Self::get(&self.devices, "devices", &key2(user, device.as_bytes()))
    }

    fn put_device(&self, user: &str, device: &str, record: &DeviceRecord) -> StoreResult<()> {
        self.writable()?;
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
        self.get_in(CONVERSATIONS, conversation.as_bytes())
    }

    fn members(&self, conversation: &str) -> StoreResult<Vec<(String, MemberRecord)>> {
        self.scan_records(MEMBERS, conversation)
    }

    fn user_conversations(&self, user: &str) -> StoreResult<Vec<String>> {
        Ok(self
            .scan_names(USER_CONVS, user)?
            .into_iter()
            .map(|(conv, _)| conv)
            .collect())
    }

    fn last_seq(&self, conversation: &str) -> StoreResult<u64> {
        let last = self.last_in_prefix(TIMELINE, conversation)?;
        Ok(last.max(self.first_retained_seq(conversation)? - 1))
    }

    fn last_inbox_seq(&self, user: &str) -> StoreResult<u64> {
        let last = self.last_in_prefix(INBOX, user)?;
        Ok(last.max(self.first_retained_inbox_seq(user)? - 1))
    }

    fn first_retained_seq(&self, conversation: &str) -> StoreResult<u64> {
        self.retained(TIMELINE_RETAINED, conversation)
    }

    fn first_retained_inbox_seq(&self, user: &str) -> StoreResult<u64> {
        self.retained(INBOX_RETAINED, user)
    }

    fn dedup(&self, sender: &str, client_msg_id: &str) -> StoreResult<Option<DedupRecord>> {
        self.get_in(DEDUP, &key2(sender, client_msg_id.as_bytes()))
    }

    fn conversation_settings(&self, user: &str, conversation: &str) -> StoreResult<SettingsRecord> {
        Ok(self
            .get_in(SETTINGS, &key2(user, conversation.as_bytes()))?
            .unwrap_or_default())
    }

    fn mentions_after(&self, user: &str, conversation: &str, after: u64) -> StoreResult<u64> {
        if after == u64::MAX {
            return Ok(0);
        }
        let mut named = std::collections::BTreeSet::new();
        for kv in self.data.range(
            MENTIONS.key(&user_conv_seq(user, conversation, after + 1))
                ..=MENTIONS.key(&user_conv_seq(user, conversation, u64::MAX)),
        ) {
            let (k, _) = kv.map_err(engine)?;
            named.insert(seq_of(MENTIONS.name, &k)?);
        }
        // An @all that also names the user is one mention, not two.
        let mut all = 0;
        for kv in self.data.range(
            MENTION_ALL.key(&key_seq(conversation, after + 1))
                ..=MENTION_ALL.key(&key_seq(conversation, u64::MAX)),
        ) {
            let (k, sender) = kv.map_err(engine)?;
            if sender.as_ref() != user.as_bytes() && !named.contains(&seq_of(MENTION_ALL.name, &k)?)
            {
                all += 1;
            }
        }
        Ok(named.len() as u64 + all)
    }

    fn not_counted_after(&self, conversation: &str, after: u64) -> StoreResult<u64> {
        if after == u64::MAX {
            return Ok(0);
        }
        let mut n = 0;
        for kv in self.data.range(
            NOT_COUNTED.key(&key_seq(conversation, after + 1))
                ..=NOT_COUNTED.key(&key_seq(conversation, u64::MAX)),
        ) {
            kv.map_err(engine)?;
            n += 1;
        }
        Ok(n)
    }

    fn hidden(&self, user: &str, conversation: &str, from: u64, to: u64) -> StoreResult<Vec<u64>> {
        if from > to {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for kv in self.data.range(
            HIDDEN.key(&user_conv_seq(user, conversation, from))
                ..=HIDDEN.key(&user_conv_seq(user, conversation, to)),
        ) {
            let (k, _) = kv.map_err(engine)?;
            out.push(seq_of(HIDDEN.name, &k)?);
        }
        Ok(out)
    }

    fn expired_until(&self, now_ms: u64, limit: usize) -> StoreResult<Vec<ExpiryEntry>> {
        let lo = EXPIRY.key(&[]);
        let hi = EXPIRY.key(&(now_ms.saturating_add(1)).to_be_bytes());
        let mut out = Vec::new();
        for kv in self.data.range(lo..hi).take(limit) {
            let (k, _) = kv.map_err(engine)?;
            out.push(parse_expiry_key(&k[1..]).ok_or(StoreError::Corrupt {
                tree: EXPIRY.name,
                detail: "malformed key".into(),
            })?);
        }
        Ok(out)
    }

    fn read_positions(&self, user: &str) -> StoreResult<Vec<(String, u64)>> {
        self.scan_names(READ, user)?
            .into_iter()
            .map(|(c, v)| Ok((c, decode::<ReadRecord>(READ.name, &v)?.read_seq)))
            .collect()
    }

    fn all_conversation_settings(&self, user: &str) -> StoreResult<Vec<(String, SettingsRecord)>> {
        self.scan_records(SETTINGS, user)
    }

    fn contact(&self, user: &str, other: &str) -> StoreResult<Option<ContactRecord>> {
        self.get_in(CONTACTS, &key2(user, other.as_bytes()))
    }

    fn contacts(&self, user: &str) -> StoreResult<Vec<(String, ContactRecord)>> {
        self.scan_records(CONTACTS, user)
    }

    fn channels(&self, prefix: &str, limit: usize) -> StoreResult<Vec<String>> {
        self.data
            .scan_prefix(CHANNELS.key(prefix.as_bytes()))
            .take(limit)
            .map(|kv| name_after_last_separator(CHANNELS, &kv.map_err(engine)?.0))
            .collect()
    }

    fn profile(&self, user: &str) -> StoreResult<Option<ProfileRecord>> {
        self.get_in(PROFILES, user.as_bytes())
    }

    fn blob(&self, id: &str) -> StoreResult<Option<BlobRecord>> {
        self.get_in(BLOBS, id.as_bytes())
    }

    fn blobs_after(&self, after: &str, limit: usize) -> StoreResult<Vec<(String, BlobRecord)>> {
        let p = BLOBS.key(&[]);
        let mut start = BLOBS.key(after.as_bytes());
        start.push(0);
        let mut out = Vec::new();
        for kv in self.data.range(start..).take(limit) {
            let (k, v) = kv.map_err(engine)?;
            if !k.starts_with(&p) {
                break;
            }
            out.push((
                name_after_prefix(BLOBS.name, &k, p.len())?,
                decode(BLOBS.name, &v)?,
            ));
        }
        Ok(out)
    }

    fn blob_refs(&self, id: &str, limit: usize) -> StoreResult<Vec<(String, u64)>> {
        let p = BLOB_REFS.key(&prefix(id));
        let mut out = Vec::new();
        for kv in self.data.scan_prefix(&p).take(limit) {
            let (k, _) = kv.map_err(engine)?;
            out.push(parse_blob_ref(&k[p.len()..]).ok_or(StoreError::Corrupt {
                tree: BLOB_REFS.name,
                detail: "malformed key".into(),
            })?);
        }
        Ok(out)
    }

    fn blob_grants(&self, user: &str) -> StoreResult<Vec<(String, BlobGrantRecord)>> {
        self.scan_records(BLOB_GRANTS, user)
    }

    fn blob_grant(&self, user: &str, id: &str) -> StoreResult<Option<BlobGrantRecord>> {
        self.get_in(BLOB_GRANTS, &key2(user, id.as_bytes()))
    }

    fn upload(&self, user: &str, id: &str) -> StoreResult<Option<UploadRecord>> {
        self.get_in(UPLOADS, &key2(user, id.as_bytes()))
    }

    fn uploads(&self) -> StoreResult<Vec<(String, String, UploadRecord)>> {
        let p = UPLOADS.key(&[]);
        let mut out = Vec::new();
        for kv in self.data.scan_prefix(&p) {
            let (k, v) = kv.map_err(engine)?;
            let (user, id) = parse_key2(&k[p.len()..]).ok_or(StoreError::Corrupt {
                tree: UPLOADS.name,
                detail: "malformed key".into(),
            })?;
            out.push((user, id, decode(UPLOADS.name, &v)?));
        }
        Ok(out)
    }

    fn display_name_prefix(&self, prefix: &str, limit: usize) -> StoreResult<Vec<String>> {
        self.data
            .scan_prefix(DISPLAY_NAMES.key(prefix.as_bytes()))
            .take(limit)
            .map(|kv| name_after_last_separator(DISPLAY_NAMES, &kv.map_err(engine)?.0))
            .collect()
    }

    fn users_page(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> StoreResult<Vec<(String, UserRecord)>> {
        // Strictly after `after` (its key ++ 0x00 is the next possible key), from `prefix`.
        let start = [after.as_bytes(), &[0]]
            .concat()
            .max(prefix.as_bytes().to_vec());
        let mut out = Vec::new();
        for kv in self.users.range(start..) {
            let (k, v) = kv.map_err(engine)?;
            if !k.starts_with(prefix.as_bytes()) || out.len() >= limit {
                break;
            }
            out.push((name_after_prefix("users", &k, 0)?, decode("users", &v)?));
        }
        Ok(out)
    }

    fn conversations_page(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> StoreResult<Vec<(String, ConversationRecord)>> {
        let p = CONVERSATIONS.key(prefix.as_bytes());
        let start = [CONVERSATIONS.key(after.as_bytes()), vec![0]]
            .concat()
            .max(p.clone());
        let mut out = Vec::new();
        for kv in self.data.range(start..) {
            let (k, v) = kv.map_err(engine)?;
            if !k.starts_with(&p) || out.len() >= limit {
                break;
            }
            out.push((
                name_after_prefix(CONVERSATIONS.name, &k, 1)?,
                decode(CONVERSATIONS.name, &v)?,
            ));
        }
        Ok(out)
    }

    fn push_targets(&self) -> StoreResult<Vec<PushTarget>> {
        let mut out = Vec::new();
        for kv in self.data.scan_prefix(PUSH_TARGETS.key(&[])) {
            let (k, v) = kv.map_err(engine)?;
            out.push(push_target_from(&k, &v)?);
        }
        Ok(out)
    }

    fn push_queue(&self) -> StoreResult<Vec<PushEntry>> {
        let mut out = Vec::new();
        for kv in self.data.scan_prefix(PUSH_QUEUE.key(&[])) {
            let (k, v) = kv.map_err(engine)?;
            out.push(push_entry_from(&k, &v)?);
        }
        Ok(out)
    }

    fn read_seq(&self, user: &str, conversation: &str) -> StoreResult<u64> {
        Ok(self
            .get_in::<ReadRecord>(READ, &key2(user, conversation.as_bytes()))?
            .map(|r| r.read_seq)
            .unwrap_or(0))
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
        let range =
            TIMELINE.key(&key_seq(conversation, from))..=TIMELINE.key(&key_seq(conversation, to));
        for kv in self.data.range(range).take(limit) {
            let (_, v) = kv.map_err(engine)?;
            out.push(decode(TIMELINE.name, &v)?);
        }
        Ok(out)
    }

    fn message(&self, conversation: &str, seq: u64) -> StoreResult<Option<pb::Message>> {
        self.get_in(TIMELINE, &key_seq(conversation, seq))
    }

    fn message_bytes(&self, conversation: &str, seq: u64) -> StoreResult<Option<bytes::Bytes>> {
        // Values are checksummed by sled's log; they were encoded by `commit` above.
        let v = self
            .data
            .get(TIMELINE.key(&key_seq(conversation, seq)))
            .map_err(engine)?;
        Ok(v.map(|v| bytes::Bytes::copy_from_slice(&v)))
    }

    fn inbox(&self, user: &str, after: u64, limit: usize) -> StoreResult<Vec<(u64, InboxRecord)>> {
        if after == u64::MAX || limit == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let range = INBOX.key(&key_seq(user, after + 1))..=INBOX.key(&key_seq(user, u64::MAX));
        for kv in self.data.range(range).take(limit) {
            let (k, v) = kv.map_err(engine)?;
            out.push((seq_of(INBOX.name, &k)?, decode(INBOX.name, &v)?));
        }
        Ok(out)
    }

    fn commit(&self, mutations: &[Mutation]) -> StoreResult<CommitOutcome> {
        self.writable()?;
        let _serial = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = sled::Batch::default();
        let mut all = Vec::with_capacity(mutations.len() + 2);
        for m in mutations {
            if let Some(k) = dedup_key(m) {
                if let Some(v) = self.data.get(&k).map_err(engine)? {
                    return Ok(CommitOutcome::Duplicate(decode(DEDUP.name, &v)?));
                }
            }
            writes(m, &mut all);
        }
        for w in all {
            match w {
                Write::Put(k, v) => batch.insert(k, v),
                Write::Delete(k) => batch.remove(k),
            }
        }
        self.data.apply_batch(batch).map_err(engine)?;
        self.commits.fetch_add(1, Ordering::SeqCst);
        Ok(CommitOutcome::Applied)
    }

    fn flush(&self) -> StoreResult<usize> {
        self.writable()?;
        let res = self.flush_and_sync();
        if res.is_err() {
            // Latched: after a failed fsync the kernel may have dropped dirty pages and
            // marked them clean, so no later write or flush may be trusted.
            self.failed.store(true, Ordering::SeqCst);
        }
        res
    }

    fn commit_count(&self) -> StoreResult<u64> {
        Ok(self.commits.load(Ordering::SeqCst))
    }
}

impl SledStore {
    fn writable(&self) -> StoreResult<()> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(StoreError::Failed);
        }
        Ok(())
    }

    fn flush_and_sync(&self) -> StoreResult<usize> {
        // The count goes into the log after every commit it counts (a commit bumps it only
        // once its batch is in), so the flush below makes both durable together.
        let count = self.commits.load(Ordering::SeqCst);
        self.meta
            .insert(COMMIT_COUNT, &count.to_be_bytes())
            .map_err(engine)?;
        let flushed = self.db.flush().map_err(engine)?;
        self.files.sync().map_err(io_engine)?;
        Ok(flushed)
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

    /// The count is persisted by `flush`: after a reopen it is what the last flush saw,
    /// never less (the startup watermark check compares against it).
    #[test]
    fn the_commit_count_is_persisted_by_flush() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path(), 8 << 20).unwrap();
            for seq in 1..=3 {
                crate::store::conformance::append(&s, "d:a:b", seq, "a", &format!("m{seq}"));
            }
            assert_eq!(s.commit_count().unwrap(), 3);
            s.flush().unwrap();
        }
        let s = SledStore::open(dir.path(), 8 << 20).unwrap();
        assert_eq!(s.commit_count().unwrap(), 3);
        crate::store::conformance::append(&s, "d:a:b", 4, "a", "m4");
        assert_eq!(
            s.commit_count().unwrap(),
            4,
            "counting goes on from the persisted value"
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
