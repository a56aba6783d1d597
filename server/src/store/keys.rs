//! The key catalogue: every key space of the store, what it maps to, and how keys are
//! built. Both backends use these layouts (sled on disk, [`super::memory`] in memory), so
//! this page answers "where is X kept".
//!
//! Keys use big-endian integers so range scans come back in seq order; `++` is
//! concatenation with a 0x00 separator after the variable-length part (names and
//! conversation ids never contain 0x00: validated at the edge).
//!
//! | tree / space         | key                          | value                  |
//! |----------------------|------------------------------|------------------------|
//! | `meta`               | name                         | schema version, store epoch, signing key, commit count |
//! | `users`              | user                         | `UserRecord`           |
//! | `devices`            | user ++ device               | `DeviceRecord`         |
//! | `data` `c`           | conversation                 | `ConversationRecord`   |
//! | `data` `m`           | conversation ++ user         | `MemberRecord`         |
//! | `data` `u`           | user ++ conversation         | empty                  |
//! | `data` `t`           | conversation ++ seq(be64)    | wire `Message`         |
//! | `data` `i`           | user ++ inbox_seq(be64)      | `InboxRecord`          |
//! | `data` `d`           | sender ++ client_msg_id      | `DedupRecord`          |
//! | `data` `r`           | user ++ conversation         | `ReadRecord`           |
//! | `data` `s`           | user ++ conversation         | `SettingsRecord`       |
//! | `data` `n`           | user ++ conversation ++ seq  | empty (a mention of user) |
//! | `data` `a`           | conversation ++ seq          | sender (an @all)       |
//! | `data` `x`           | conversation ++ seq          | empty (not counted as unread: EDIT/RECALL entries, recalled messages) |
//! | `data` `h`           | user ++ conversation ++ seq  | empty (deleted for that user) |
//! | `data` `p`           | lowercase name ++ conversation | empty (the public channel directory) |
//! | `data` `e`           | expires_ms(be64) conversation ++ seq | empty (a message with a time to live, until the sweeper erased it) |
//! | `data` `w`           | user ++ device               | `PushTargetRecord` (a device's push target) |
//! | `data` `q`           | user ++ device ++ conversation ++ seq | `PushQueueRecord` (a pending notification) |
//! | `data` `o`           | user                         | `ProfileRecord` (display name, status, avatar) |
//! | `data` `l`           | lowercase display name ++ user | empty (the user-search index by display name) |
//! | `data` `k`           | user ++ other user           | `ContactRecord` (friend, incoming, outgoing, blocked) |
//! | `data` `b`           | blob id (hex sha256)         | `BlobRecord` (size, type, thumbnail; the bytes are a file) |
//! | `data` `f`           | blob id ++ holder ++ seq     | empty (message seq of conversation holder, or `avatar:<user>` 0, carries the blob) |
//! | `data` `g`           | user ++ blob id              | `BlobGrantRecord` (the user uploaded it: quota, may read) |
//! | `data` `v`           | user ++ blob id              | `UploadRecord` (an upload in progress; bytes in a part file) |
//! | `data` `y`           | conversation                 | be64 first retained seq (timeline retention trimmed below it) |
//! | `data` `z`           | user                         | be64 first retained inbox seq (inbox retention trimmed below it) |
//!
//! Everything one [`super::Store::commit`] writes lives in the `data` tree, under a one-byte
//! space tag, so a commit is one atomic batch. New domains add a space here (one tag per
//! line, never reused) and bump the sled schema version when an existing layout changes.

use prost::Message as _;

use super::Mutation;

/// A key space inside the `data` tree: its tag byte and its name for error messages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Space {
    pub tag: u8,
    pub name: &'static str,
}

pub(crate) const CONVERSATIONS: Space = Space::new(b'c', "conversations");
pub(crate) const MEMBERS: Space = Space::new(b'm', "members");
pub(crate) const USER_CONVS: Space = Space::new(b'u', "user_convs");
pub(crate) const TIMELINE: Space = Space::new(b't', "timeline");
pub(crate) const INBOX: Space = Space::new(b'i', "inbox");
pub(crate) const DEDUP: Space = Space::new(b'd', "dedup");
pub(crate) const READ: Space = Space::new(b'r', "read");
pub(crate) const SETTINGS: Space = Space::new(b's', "settings");
pub(crate) const MENTIONS: Space = Space::new(b'n', "mentions");
pub(crate) const MENTION_ALL: Space = Space::new(b'a', "mention_all");
pub(crate) const NOT_COUNTED: Space = Space::new(b'x', "not_counted");
pub(crate) const HIDDEN: Space = Space::new(b'h', "hidden");
pub(crate) const EXPIRY: Space = Space::new(b'e', "expiry");
pub(crate) const CHANNELS: Space = Space::new(b'p', "channels");
pub(crate) const PUSH_TARGETS: Space = Space::new(b'w', "push_targets");
pub(crate) const PUSH_QUEUE: Space = Space::new(b'q', "push_queue");
pub(crate) const PROFILES: Space = Space::new(b'o', "profiles");
pub(crate) const DISPLAY_NAMES: Space = Space::new(b'l', "display_names");
pub(crate) const CONTACTS: Space = Space::new(b'k', "contacts");
pub(crate) const BLOBS: Space = Space::new(b'b', "blobs");
pub(crate) const BLOB_REFS: Space = Space::new(b'f', "blob_refs");
pub(crate) const BLOB_GRANTS: Space = Space::new(b'g', "blob_grants");
pub(crate) const UPLOADS: Space = Space::new(b'v', "uploads");
pub(crate) const TIMELINE_RETAINED: Space = Space::new(b'y', "timeline_retained");
pub(crate) const INBOX_RETAINED: Space = Space::new(b'z', "inbox_retained");

impl Space {
    const fn new(tag: u8, name: &'static str) -> Self {
        Self { tag, name }
    }

    /// `tag ++ key`.
    pub(crate) fn key(self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(1 + key.len());
        k.push(self.tag);
        k.extend_from_slice(key);
        k
    }
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

/// `user ++ conversation ++ seq`: the mentions of one user in one conversation, in seq
/// order.
pub(crate) fn user_conv_seq(user: &str, conversation: &str, seq: u64) -> Vec<u8> {
    let mut k = key2(user, conversation.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `expires_ms(be64) ++ conversation ++ seq`: the expiry index, in expiry order.
pub(crate) fn expiry_key(expires_ms: u64, conversation: &str, seq: u64) -> Vec<u8> {
    let mut k = expires_ms.to_be_bytes().to_vec();
    k.extend_from_slice(&key_seq(conversation, seq));
    k
}

/// The parts of an [`expiry_key`] (without the space tag); `None` if malformed.
pub(crate) fn parse_expiry_key(k: &[u8]) -> Option<super::ExpiryEntry> {
    let expires_ms = u64::from_be_bytes(k.get(..8)?.try_into().ok()?);
    let rest = k.get(8..)?;
    let sep = rest.iter().position(|b| *b == 0)?;
    let conversation = std::str::from_utf8(&rest[..sep]).ok()?.to_string();
    let seq = u64::from_be_bytes(rest.get(sep + 1..)?.try_into().ok()?);
    Some(super::ExpiryEntry {
        expires_ms,
        conversation,
        seq,
    })
}

/// `user ++ device ++ conversation ++ seq`: a device's pending notifications.
pub(crate) fn push_queue_key(user: &str, device: &str, conversation: &str, seq: u64) -> Vec<u8> {
    let mut k = key2(user, device.as_bytes());
    k.push(0);
    k.extend_from_slice(&key_seq(conversation, seq));
    k
}

fn corrupt(space: Space, detail: &str) -> super::StoreError {
    super::StoreError::Corrupt {
        tree: space.name,
        detail: detail.to_string(),
    }
}

/// The `n` 0x00-separated names at the start of `k`, and what follows the last separator.
fn names(space: Space, k: &[u8], n: usize) -> super::StoreResult<(Vec<String>, &[u8])> {
    let mut out = Vec::with_capacity(n);
    let mut rest = k;
    for _ in 0..n {
        let at = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| corrupt(space, "key without a separator"))?;
        let name =
            std::str::from_utf8(&rest[..at]).map_err(|_| corrupt(space, "key is not UTF-8"))?;
        out.push(name.to_string());
        rest = &rest[at + 1..];
    }
    Ok((out, rest))
}

/// A push target from its `data` key (with the space tag) and value.
pub(crate) fn push_target_from(k: &[u8], v: &[u8]) -> super::StoreResult<super::PushTarget> {
    let (mut n, device) = names(PUSH_TARGETS, &k[1..], 1)?;
    let device =
        std::str::from_utf8(device).map_err(|_| corrupt(PUSH_TARGETS, "key is not UTF-8"))?;
    Ok(super::PushTarget {
        user: n.remove(0),
        device: device.to_string(),
        record: super::PushTargetRecord::decode(v)
            .map_err(|e| corrupt(PUSH_TARGETS, &e.to_string()))?,
    })
}

/// A pending notification from its `data` key (with the space tag) and value.
pub(crate) fn push_entry_from(k: &[u8], v: &[u8]) -> super::StoreResult<super::PushEntry> {
    let (mut n, seq) = names(PUSH_QUEUE, &k[1..], 3)?;
    let seq: [u8; 8] = seq
        .try_into()
        .map_err(|_| corrupt(PUSH_QUEUE, "malformed seq"))?;
    let (user, device, conversation) = (n.remove(0), n.remove(0), n.remove(0));
    Ok(super::PushEntry {
        user,
        device,
        conversation,
        seq: u64::from_be_bytes(seq),
        record: super::PushQueueRecord::decode(v)
            .map_err(|e| corrupt(PUSH_QUEUE, &e.to_string()))?,
    })
}

/// One write to the `data` tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Write {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

fn put_or_delete<T: prost::Message>(key: Vec<u8>, record: Option<&T>) -> Write {
    match record {
        Some(r) => Write::Put(key, r.encode_to_vec()),
        None => Write::Delete(key),
    }
}

/// The (holder, seq) of a `blob_refs` key after `blob id ++ 0x00`; `None` if malformed.
pub(crate) fn parse_blob_ref(rest: &[u8]) -> Option<(String, u64)> {
    let sep = rest.iter().position(|b| *b == 0)?;
    let holder = std::str::from_utf8(&rest[..sep]).ok()?.to_string();
    let seq = u64::from_be_bytes(rest.get(sep + 1..)?.try_into().ok()?);
    Some((holder, seq))
}

/// The (user, blob id) of a key `user ++ 0x00 ++ id` (no space tag); `None` if malformed.
pub(crate) fn parse_key2(k: &[u8]) -> Option<(String, String)> {
    let sep = k.iter().position(|b| *b == 0)?;
    let a = std::str::from_utf8(&k[..sep]).ok()?.to_string();
    let b = std::str::from_utf8(&k[sep + 1..]).ok()?.to_string();
    Some((a, b))
}

/// The name after the last 0x00 of an index key `.. ++ 0x00 ++ name` of `space` (channel
/// names and display names index their conversation or user this way; none of those hold
/// a 0x00).
pub(crate) fn name_after_last_separator(
    space: Space,
    key: &[u8],
) -> Result<String, super::StoreError> {
    let corrupt = |detail: &str| super::StoreError::Corrupt {
        tree: space.name,
        detail: detail.into(),
    };
    let at = key
        .iter()
        .rposition(|b| *b == 0)
        .ok_or_else(|| corrupt("key without a separator"))?;
    String::from_utf8(key[at + 1..].to_vec()).map_err(|_| corrupt("key is not UTF-8"))
}

/// The key a `Dedup` mutation claims: a commit that finds it taken writes nothing.
pub(crate) fn dedup_key(m: &Mutation) -> Option<Vec<u8>> {
    match m {
        Mutation::Dedup {
            sender,
            client_msg_id,
            ..
        } => Some(DEDUP.key(&key2(sender, client_msg_id.as_bytes()))),
        _ => None,
    }
}

/// The `data`-tree writes of one mutation: the same for every backend.
pub(crate) fn writes(m: &Mutation, out: &mut Vec<Write>) {
    match m {
        Mutation::Message(msg) => out.push(Write::Put(
            TIMELINE.key(&key_seq(&msg.conversation, msg.seq)),
            msg.encode_to_vec(),
        )),
        Mutation::Inbox {
            user,
            inbox_seq,
            entry,
        } => out.push(Write::Put(
            INBOX.key(&key_seq(user, *inbox_seq)),
            entry.encode_to_vec(),
        )),
        Mutation::Dedup { record, .. } => out.push(Write::Put(
            dedup_key(m).expect("a dedup mutation"),
            record.encode_to_vec(),
        )),
        Mutation::Conversation {
            conversation,
            record,
        } => out.push(Write::Put(
            CONVERSATIONS.key(conversation.as_bytes()),
            record.encode_to_vec(),
        )),
        Mutation::PutMember {
            conversation,
            user,
            record,
        } => {
            out.push(Write::Put(
                MEMBERS.key(&key2(conversation, user.as_bytes())),
                record.encode_to_vec(),
            ));
            out.push(Write::Put(
                USER_CONVS.key(&key2(user, conversation.as_bytes())),
                Vec::new(),
            ));
        }
        Mutation::Read {
            user,
            conversation,
            read_seq,
        } => out.push(Write::Put(
            READ.key(&key2(user, conversation.as_bytes())),
            super::ReadRecord {
                read_seq: *read_seq,
            }
            .encode_to_vec(),
        )),
        Mutation::Settings {
            user,
            conversation,
            record,
        } => out.push(Write::Put(
            SETTINGS.key(&key2(user, conversation.as_bytes())),
            record.encode_to_vec(),
        )),
        Mutation::Contact {
            user,
            other,
            record,
        } => {
            let key = CONTACTS.key(&key2(user, other.as_bytes()));
            out.push(match record {
                Some(r) => Write::Put(key, r.encode_to_vec()),
                None => Write::Delete(key),
            })
        }
        Mutation::Mention {
            user,
            conversation,
            seq,
        } => out.push(Write::Put(
            MENTIONS.key(&user_conv_seq(user, conversation, *seq)),
            Vec::new(),
        )),
        Mutation::MentionAll {
            conversation,
            seq,
            sender,
        } => out.push(Write::Put(
            MENTION_ALL.key(&key_seq(conversation, *seq)),
            sender.as_bytes().to_vec(),
        )),
        Mutation::Unmention {
            user,
            conversation,
            seq,
        } => out.push(Write::Delete(MENTIONS.key(&user_conv_seq(
            user,
            conversation,
            *seq,
        )))),
        Mutation::UnmentionAll { conversation, seq } => {
            out.push(Write::Delete(MENTION_ALL.key(&key_seq(conversation, *seq))))
        }
        Mutation::NotCounted { conversation, seq } => out.push(Write::Put(
            NOT_COUNTED.key(&key_seq(conversation, *seq)),
            Vec::new(),
        )),
        Mutation::Hide {
            user,
            conversation,
            seq,
        } => out.push(Write::Put(
            HIDDEN.key(&user_conv_seq(user, conversation, *seq)),
            Vec::new(),
        )),
        Mutation::Expiry(e) => out.push(Write::Put(
            EXPIRY.key(&expiry_key(e.expires_ms, &e.conversation, e.seq)),
            Vec::new(),
        )),
        Mutation::DelExpiry(e) => out.push(Write::Delete(EXPIRY.key(&expiry_key(
            e.expires_ms,
            &e.conversation,
            e.seq,
        )))),
        Mutation::ListChannel { name, conversation } => out.push(Write::Put(
            CHANNELS.key(&key2(&name.to_lowercase(), conversation.as_bytes())),
            Vec::new(),
        )),
        Mutation::UnlistChannel { name, conversation } => out.push(Write::Delete(
            CHANNELS.key(&key2(&name.to_lowercase(), conversation.as_bytes())),
        )),
        Mutation::PushTarget(t) => out.push(Write::Put(
            PUSH_TARGETS.key(&key2(&t.user, t.device.as_bytes())),
            t.record.encode_to_vec(),
        )),
        Mutation::DelPushTarget { user, device } => out.push(Write::Delete(
            PUSH_TARGETS.key(&key2(user, device.as_bytes())),
        )),
        Mutation::PushQueue(e) => out.push(Write::Put(
            PUSH_QUEUE.key(&push_queue_key(&e.user, &e.device, &e.conversation, e.seq)),
            e.record.encode_to_vec(),
        )),
        Mutation::DelPushQueue {
            user,
            device,
            conversation,
            seq,
        } => out.push(Write::Delete(PUSH_QUEUE.key(&push_queue_key(
            user,
            device,
            conversation,
            *seq,
        )))),
        Mutation::Blob { id, record } => {
            out.push(put_or_delete(BLOBS.key(id.as_bytes()), record.as_ref()))
        }
        Mutation::BlobRef {
            blob,
            holder,
            seq,
            present,
        } => {
            let key = BLOB_REFS.key(&user_conv_seq(blob, holder, *seq));
            out.push(if *present {
                Write::Put(key, Vec::new())
            } else {
                Write::Delete(key)
            });
        }
        Mutation::BlobGrant { user, blob, record } => out.push(put_or_delete(
            BLOB_GRANTS.key(&key2(user, blob.as_bytes())),
            record.as_ref(),
        )),
        Mutation::Upload { user, blob, record } => out.push(put_or_delete(
            UPLOADS.key(&key2(user, blob.as_bytes())),
            record.as_ref(),
        )),
        Mutation::Profile { user, record } => out.push(Write::Put(
            PROFILES.key(user.as_bytes()),
            record.encode_to_vec(),
        )),
        Mutation::ListDisplayName { name, user } => out.push(Write::Put(
            DISPLAY_NAMES.key(&key2(&name.to_lowercase(), user.as_bytes())),
            Vec::new(),
        )),
        Mutation::UnlistDisplayName { name, user } => out.push(Write::Delete(
            DISPLAY_NAMES.key(&key2(&name.to_lowercase(), user.as_bytes())),
        )),
        Mutation::DelDedup {
            sender,
            client_msg_id,
        } => out.push(Write::Delete(
            DEDUP.key(&key2(sender, client_msg_id.as_bytes())),
        )),
        Mutation::TrimInbox { user, from, below } => {
            for seq in *from..*below {
                out.push(Write::Delete(INBOX.key(&key_seq(user, seq))));
            }
            out.push(Write::Put(
                INBOX_RETAINED.key(user.as_bytes()),
                below.to_be_bytes().to_vec(),
            ));
        }
        Mutation::TrimTimeline {
            conversation,
            from,
            below,
        } => {
            for seq in *from..*below {
                let k = key_seq(conversation, seq);
                out.push(Write::Delete(TIMELINE.key(&k)));
                out.push(Write::Delete(NOT_COUNTED.key(&k)));
                out.push(Write::Delete(MENTION_ALL.key(&k)));
            }
            out.push(Write::Put(
                TIMELINE_RETAINED.key(conversation.as_bytes()),
                below.to_be_bytes().to_vec(),
            ));
        }
        Mutation::DelMember { conversation, user } => {
            out.push(Write::Delete(
                MEMBERS.key(&key2(conversation, user.as_bytes())),
            ));
            out.push(Write::Delete(
                USER_CONVS.key(&key2(user, conversation.as_bytes())),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_tags_are_distinct() {
        let all = [
            CONVERSATIONS,
            MEMBERS,
            USER_CONVS,
            TIMELINE,
            INBOX,
            DEDUP,
            READ,
            SETTINGS,
            MENTIONS,
            MENTION_ALL,
            NOT_COUNTED,
            HIDDEN,
            EXPIRY,
            CHANNELS,
            PUSH_TARGETS,
            PUSH_QUEUE,
            PROFILES,
            DISPLAY_NAMES,
            CONTACTS,
            TIMELINE_RETAINED,
            INBOX_RETAINED,
        ];
        let mut tags: Vec<u8> = all.iter().map(|s| s.tag).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), all.len());
    }

    #[test]
    fn expiry_keys_sort_by_time_and_parse_back() {
        assert!(expiry_key(9, "z", 9) < expiry_key(10, "a", 1));
        let e = parse_expiry_key(&expiry_key(1234, "d:a:b", 77)).unwrap();
        assert_eq!(
            (e.expires_ms, e.conversation.as_str(), e.seq),
            (1234, "d:a:b", 77)
        );
        assert!(parse_expiry_key(b"short").is_none());
    }

    #[test]
    fn seq_keys_sort_in_seq_order_within_their_owner() {
        assert!(key_seq("a", 2) < key_seq("a", 10));
        assert!(
            key_seq("a", u64::MAX) < key_seq("a.", 0),
            "a's prefix holds only a"
        );
    }
}
