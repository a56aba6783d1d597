//! An in-memory [`Store`]: the same key layout as sled ([`super::keys`]) in ordered maps
//! under one mutex. Nothing is ever durable beyond the process, so `flush` is a no-op.
//! It exists for fast domain unit tests and to keep the trait honest: it passes the same
//! [`super::conformance`] suite as sled.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

use rand::RngCore;
use tern_proto::pb;

use super::keys::*;
use super::*;

#[derive(Default)]
struct Maps {
    users: BTreeMap<String, UserRecord>,
    devices: BTreeMap<Vec<u8>, DeviceRecord>,
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    commits: u64,
}

pub struct MemoryStore {
    maps: Mutex<Maps>,
    epoch: String,
    signing_key: [u8; 32],
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

fn decode<T: prost::Message + Default>(tree: &'static str, bytes: &[u8]) -> StoreResult<T> {
    T::decode(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        detail: e.to_string(),
    })
}

fn seq_of(key: &[u8]) -> u64 {
    let tail: [u8; 8] = key[key.len() - 8..]
        .try_into()
        .expect("seq keys end in 8 bytes");
    u64::from_be_bytes(tail)
}

impl MemoryStore {
    pub fn new() -> Self {
        let mut epoch = [0u8; 8];
        let mut signing_key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut epoch);
        rand::thread_rng().fill_bytes(&mut signing_key);
        Self {
            maps: Mutex::new(Maps::default()),
            epoch: epoch.iter().map(|b| format!("{b:02x}")).collect(),
            signing_key,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Entries of `space` under `owner ++ 0x00`, as (rest of the key, value).
    fn scan(&self, space: Space, owner: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let p = space.key(&prefix(owner));
        let m = self.lock();
        m.data
            .range(p.clone()..)
            .take_while(|(k, _)| k.starts_with(&p))
            .map(|(k, v)| (k[p.len()..].to_vec(), v.clone()))
            .collect()
    }

    /// Every record of `space` under `owner ++ 0x00`, by the name after the prefix.
    fn scan_records<T: prost::Message + Default>(
        &self,
        space: Space,
        owner: &str,
    ) -> StoreResult<Vec<(String, T)>> {
        self.scan(space, owner)
            .into_iter()
            .map(|(k, v)| Ok((utf8(space.name, k)?, decode(space.name, &v)?)))
            .collect()
    }

    /// A first-retained position (`y` / `z`): 1 when nothing was trimmed.
    fn retained(&self, space: Space, owner: &str) -> u64 {
        self.lock()
            .data
            .get(&space.key(owner.as_bytes()))
            .filter(|v| v.len() == 8)
            .map_or(1, |v| seq_of(v).max(1))
    }

    fn last_in_prefix(&self, space: Space, owner: &str) -> u64 {
        let p = space.key(&prefix(owner));
        let mut end = p.clone();
        *end.last_mut().expect("prefix ends in 0x00") = 1;
        let m = self.lock();
        m.data
            .range(p..end)
            .next_back()
            .map(|(k, _)| seq_of(k))
            .unwrap_or(0)
    }

    fn get_in<T: prost::Message + Default>(
        &self,
        space: Space,
        key: &[u8],
    ) -> StoreResult<Option<T>> {
        match self.lock().data.get(&space.key(key)) {
            Some(v) => Ok(Some(decode(space.name, v)?)),
            None => Ok(None),
        }
    }
}

fn utf8(tree: &'static str, b: Vec<u8>) -> StoreResult<String> {
    String::from_utf8(b).map_err(|_| StoreError::Corrupt {
        tree,
        detail: "key is not UTF-8".into(),
    })
}

impl Store for MemoryStore {
    fn store_epoch(&self) -> String {
        self.epoch.clone()
    }

    fn signing_key(&self) -> [u8; 32] {
        self.signing_key
    }

    fn user(&self, name: &str) -> StoreResult<Option<UserRecord>> {
        Ok(self.lock().users.get(name).cloned())
    }

    fn create_user(&self, name: &str, record: &UserRecord) -> StoreResult<bool> {
        let mut m = self.lock();
        if m.users.contains_key(name) {
            return Ok(false);
        }
        m.users.insert(name.to_string(), record.clone());
        Ok(true)
    }

    fn put_user(&self, name: &str, record: &UserRecord) -> StoreResult<()> {
        self.lock().users.insert(name.to_string(), record.clone());
        Ok(())
    }

    fn device(&self, user: &str, device: &str) -> StoreResult<Option<DeviceRecord>> {
        Ok(self
            .lock()
            .devices
            .get(&key2(user, device.as_bytes()))
            .cloned())
    }

    fn put_device(&self, user: &str, device: &str, record: &DeviceRecord) -> StoreResult<()> {
        self.lock()
            .devices
            .insert(key2(user, device.as_bytes()), record.clone());
        Ok(())
    }

    fn devices(&self, user: &str) -> StoreResult<Vec<(String, DeviceRecord)>> {
        let p = prefix(user);
        let m = self.lock();
        m.devices
            .range(p.clone()..)
            .take_while(|(k, _)| k.starts_with(&p))
            .map(|(k, v)| Ok((utf8("devices", k[p.len()..].to_vec())?, v.clone())))
            .collect()
    }

    fn conversation(&self, conversation: &str) -> StoreResult<Option<ConversationRecord>> {
        self.get_in(CONVERSATIONS, conversation.as_bytes())
    }

    fn members(&self, conversation: &str) -> StoreResult<Vec<(String, MemberRecord)>> {
        self.scan(MEMBERS, conversation)
            .into_iter()
            .map(|(u, v)| Ok((utf8(MEMBERS.name, u)?, decode(MEMBERS.name, &v)?)))
            .collect()
    }

    fn user_conversations(&self, user: &str) -> StoreResult<Vec<String>> {
        self.scan(USER_CONVS, user)
            .into_iter()
            .map(|(c, _)| utf8(USER_CONVS.name, c))
            .collect()
    }

    fn last_seq(&self, conversation: &str) -> StoreResult<u64> {
        let last = self.last_in_prefix(TIMELINE, conversation);
        Ok(last.max(self.first_retained_seq(conversation)? - 1))
    }

    fn last_inbox_seq(&self, user: &str) -> StoreResult<u64> {
        let last = self.last_in_prefix(INBOX, user);
        Ok(last.max(self.first_retained_inbox_seq(user)? - 1))
    }

    fn first_retained_seq(&self, conversation: &str) -> StoreResult<u64> {
        Ok(self.retained(TIMELINE_RETAINED, conversation))
    }

    fn first_retained_inbox_seq(&self, user: &str) -> StoreResult<u64> {
        Ok(self.retained(INBOX_RETAINED, user))
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
        let m = self.lock();
        let named: std::collections::BTreeSet<u64> = m
            .data
            .range::<Vec<u8>, _>((
                Bound::Included(MENTIONS.key(&user_conv_seq(user, conversation, after + 1))),
                Bound::Included(MENTIONS.key(&user_conv_seq(user, conversation, u64::MAX))),
            ))
            .map(|(k, _)| seq_of(k))
            .collect();
        // An @all that also names the user is one mention, not two.
        let all = m
            .data
            .range::<Vec<u8>, _>((
                Bound::Included(MENTION_ALL.key(&key_seq(conversation, after + 1))),
                Bound::Included(MENTION_ALL.key(&key_seq(conversation, u64::MAX))),
            ))
            .filter(|(k, sender)| {
                sender.as_slice() != user.as_bytes() && !named.contains(&seq_of(k))
            })
            .count() as u64;
        Ok(named.len() as u64 + all)
    }

    fn not_counted_after(&self, conversation: &str, after: u64) -> StoreResult<u64> {
        if after == u64::MAX {
            return Ok(0);
        }
        let lo = NOT_COUNTED.key(&key_seq(conversation, after + 1));
        let hi = NOT_COUNTED.key(&key_seq(conversation, u64::MAX));
        let m = self.lock();
        Ok(m.data
            .range::<Vec<u8>, _>((Bound::Included(lo), Bound::Included(hi)))
            .count() as u64)
    }

    fn hidden(&self, user: &str, conversation: &str, from: u64, to: u64) -> StoreResult<Vec<u64>> {
        if from > to {
            return Ok(Vec::new());
        }
        let lo = HIDDEN.key(&user_conv_seq(user, conversation, from));
        let hi = HIDDEN.key(&user_conv_seq(user, conversation, to));
        let m = self.lock();
        Ok(m.data
            .range::<Vec<u8>, _>((Bound::Included(lo), Bound::Included(hi)))
            .map(|(k, _)| seq_of(k))
            .collect())
    }

    fn expired_until(&self, now_ms: u64, limit: usize) -> StoreResult<Vec<ExpiryEntry>> {
        let lo = EXPIRY.key(&[]);
        let hi = EXPIRY.key(&(now_ms.saturating_add(1)).to_be_bytes());
        let m = self.lock();
        m.data
            .range::<Vec<u8>, _>((Bound::Included(lo), Bound::Excluded(hi)))
            .take(limit)
            .map(|(k, _)| {
                parse_expiry_key(&k[1..]).ok_or(StoreError::Corrupt {
                    tree: EXPIRY.name,
                    detail: "malformed key".into(),
                })
            })
            .collect()
    }

    fn read_positions(&self, user: &str) -> StoreResult<Vec<(String, u64)>> {
        self.scan(READ, user)
            .into_iter()
            .map(|(c, v)| {
                let r: ReadRecord = decode(READ.name, &v)?;
                Ok((utf8(READ.name, c)?, r.read_seq))
            })
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
        let p = CHANNELS.key(prefix.as_bytes());
        let m = self.lock();
        m.data
            .range(p.clone()..)
            .take_while(|(k, _)| k.starts_with(&p))
            .take(limit)
            .map(|(k, _)| name_after_last_separator(CHANNELS, k))
            .collect()
    }

    fn profile(&self, user: &str) -> StoreResult<Option<ProfileRecord>> {
        self.get_in(PROFILES, user.as_bytes())
    }

    fn display_name_prefix(&self, prefix: &str, limit: usize) -> StoreResult<Vec<String>> {
        let p = DISPLAY_NAMES.key(prefix.as_bytes());
        let m = self.lock();
        m.data
            .range(p.clone()..)
            .take_while(|(k, _)| k.starts_with(&p))
            .take(limit)
            .map(|(k, _)| name_after_last_separator(DISPLAY_NAMES, k))
            .collect()
    }

    fn users_page(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> StoreResult<Vec<(String, UserRecord)>> {
        // Strictly after `after` (`after ++ 0x00` is the next possible name), from `prefix`.
        let start = format!("{after}\0").max(prefix.to_string());
        let m = self.lock();
        Ok(m.users
            .range(start..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn conversations_page(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> StoreResult<Vec<(String, ConversationRecord)>> {
        let start = CONVERSATIONS.key(prefix.as_bytes()).max(
            // strictly after `after`: its key ++ 0x00 is the next possible key
            [CONVERSATIONS.key(after.as_bytes()), vec![0]].concat(),
        );
        let p = CONVERSATIONS.key(prefix.as_bytes());
        let m = self.lock();
        m.data
            .range(start..)
            .take_while(|(k, _)| k.starts_with(&p))
            .take(limit)
            .map(|(k, v)| {
                Ok((
                    utf8(CONVERSATIONS.name, k[1..].to_vec())?,
                    decode(CONVERSATIONS.name, v)?,
                ))
            })
            .collect()
    }

    fn blob(&self, id: &str) -> StoreResult<Option<BlobRecord>> {
        self.get_in(BLOBS, id.as_bytes())
    }

    fn blobs_after(&self, after: &str, limit: usize) -> StoreResult<Vec<(String, BlobRecord)>> {
        let p = BLOBS.key(&[]);
        let mut start = BLOBS.key(after.as_bytes());
        start.push(0);
        let m = self.lock();
        m.data
            .range(start..)
            .take_while(|(k, _)| k.starts_with(&p))
            .take(limit)
            .map(|(k, v)| {
                Ok((
                    utf8(BLOBS.name, k[p.len()..].to_vec())?,
                    decode(BLOBS.name, v)?,
                ))
            })
            .collect()
    }

    fn blob_refs(&self, id: &str, limit: usize) -> StoreResult<Vec<(String, u64)>> {
        self.scan(BLOB_REFS, id)
            .into_iter()
            .take(limit)
            .map(|(rest, _)| {
                parse_blob_ref(&rest).ok_or(StoreError::Corrupt {
                    tree: BLOB_REFS.name,
                    detail: "malformed key".into(),
                })
            })
            .collect()
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
        let m = self.lock();
        m.data
            .range(p.clone()..)
            .take_while(|(k, _)| k.starts_with(&p))
            .map(|(k, v)| {
                let (user, id) = parse_key2(&k[p.len()..]).ok_or(StoreError::Corrupt {
                    tree: UPLOADS.name,
                    detail: "malformed key".into(),
                })?;
                Ok((user, id, decode(UPLOADS.name, v)?))
            })
            .collect()
    }

    fn push_targets(&self) -> StoreResult<Vec<PushTarget>> {
        let p = PUSH_TARGETS.key(&[]);
        let m = self.lock();
        m.data
            .range(p.clone()..)
            .take_while(|(k, _)| k.starts_with(&p))
            .map(|(k, v)| push_target_from(k, v))
            .collect()
    }

    fn push_queue(&self) -> StoreResult<Vec<PushEntry>> {
        let p = PUSH_QUEUE.key(&[]);
        let m = self.lock();
        m.data
            .range(p.clone()..)
            .take_while(|(k, _)| k.starts_with(&p))
            .map(|(k, v)| push_entry_from(k, v))
            .collect()
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
        let lo = TIMELINE.key(&key_seq(conversation, from));
        let hi = TIMELINE.key(&key_seq(conversation, to));
        let m = self.lock();
        m.data
            .range::<Vec<u8>, _>((Bound::Included(&lo), Bound::Included(&hi)))
            .take(limit)
            .map(|(_, v)| decode(TIMELINE.name, v))
            .collect()
    }

    fn message(&self, conversation: &str, seq: u64) -> StoreResult<Option<pb::Message>> {
        self.get_in(TIMELINE, &key_seq(conversation, seq))
    }

    fn inbox(&self, user: &str, after: u64, limit: usize) -> StoreResult<Vec<(u64, InboxRecord)>> {
        if after == u64::MAX || limit == 0 {
            return Ok(Vec::new());
        }
        let lo = INBOX.key(&key_seq(user, after + 1));
        let hi = INBOX.key(&key_seq(user, u64::MAX));
        let m = self.lock();
        m.data
            .range::<Vec<u8>, _>((Bound::Included(&lo), Bound::Included(&hi)))
            .take(limit)
            .map(|(k, v)| Ok((seq_of(k), decode(INBOX.name, v)?)))
            .collect()
    }

    fn commit(&self, mutations: &[Mutation]) -> StoreResult<CommitOutcome> {
        let mut m = self.lock();
        let mut all = Vec::with_capacity(mutations.len() + 2);
        for mu in mutations {
            if let Some(k) = dedup_key(mu) {
                if let Some(v) = m.data.get(&k) {
                    return Ok(CommitOutcome::Duplicate(decode(DEDUP.name, v)?));
                }
            }
            writes(mu, &mut all);
        }
        for w in all {
            match w {
                Write::Put(k, v) => m.data.insert(k, v),
                Write::Delete(k) => m.data.remove(&k),
            };
        }
        m.commits += 1;
        Ok(CommitOutcome::Applied)
    }

    fn flush(&self) -> StoreResult<usize> {
        Ok(0)
    }

    fn commit_count(&self) -> StoreResult<u64> {
        Ok(self.lock().commits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_passes_conformance() {
        crate::store::conformance::run_all(&MemoryStore::new());
    }
}
