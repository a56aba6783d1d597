//! How a stored timeline entry is served to one reader, and how many unread messages a
//! reader has.
//!
//! An entry the reader deleted for themselves, or one whose time to live has passed, goes
//! out as a tombstone: its seq, sender, time, kind and flags, no content. Seqs stay
//! contiguous (D3), so no client loops on a gap. Pull, Sync, the conversation list and
//! the pushes of later changes all go through [`for_reader`].

use tern_proto::pb;

use crate::error::ServiceResult;
use crate::store::Store;

/// Whether a message with this `expires_ms` has expired at `now` (0 = never expires).
pub(crate) fn is_expired(expires_ms: u64, now_ms: u64) -> bool {
    expires_ms != 0 && now_ms >= expires_ms
}

/// The entry without its content (body, content type, mentions, reply, edits).
pub(crate) fn tombstone(m: &pb::Message, expired: bool, deleted: bool) -> pb::Message {
    pb::Message {
        conversation: m.conversation.clone(),
        seq: m.seq,
        sender: m.sender.clone(),
        client_msg_id: m.client_msg_id.clone(),
        server_time_ms: m.server_time_ms,
        kind: m.kind,
        sender_device: m.sender_device.clone(),
        target_seq: m.target_seq,
        recalled: m.recalled,
        expires_ms: m.expires_ms,
        expired,
        deleted,
        ..Default::default()
    }
}

/// `m` as a reader sees it at `now_ms`; `hidden`: the reader deleted it for themselves.
pub(crate) fn for_reader(m: pb::Message, now_ms: u64, hidden: bool) -> pb::Message {
    let expired = is_expired(m.expires_ms, now_ms);
    if expired || hidden {
        tombstone(&m, expired, hidden)
    } else {
        m
    }
}

/// Unread messages of a reader at `read_seq` in a conversation whose last seq is
/// `last_seq`: the entries after `read_seq`, less those that are not messages to read
/// (EDIT and RECALL entries, recalled messages). One's own messages and the group events
/// one caused are never unread: sending moves the sender's read position.
pub(crate) fn unread(
    store: &dyn Store,
    conversation: &str,
    last_seq: u64,
    read_seq: u64,
) -> ServiceResult<u64> {
    let read_seq = read_seq.min(last_seq);
    let not_counted = store.not_counted_after(conversation, read_seq)?;
    Ok((last_seq - read_seq).saturating_sub(not_counted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_and_deleted_entries_lose_their_content_not_their_seq() {
        let m = pb::Message {
            conversation: "d:a:b".into(),
            seq: 7,
            sender: "a".into(),
            body: b"secret".to_vec().into(),
            mentions: vec!["b".into()],
            reply_to: 3,
            expires_ms: 1000,
            ..Default::default()
        };
        let live = for_reader(m.clone(), 999, false);
        assert_eq!(live, m);
        let gone = for_reader(m.clone(), 1000, false);
        assert!(gone.expired && !gone.deleted);
        assert!(gone.body.is_empty() && gone.mentions.is_empty() && gone.reply_to == 0);
        assert_eq!((gone.seq, gone.sender.as_str()), (7, "a"));
        let hidden = for_reader(pb::Message { expires_ms: 0, ..m }, u64::MAX, true);
        assert!(hidden.deleted && !hidden.expired && hidden.body.is_empty());
        assert!(!is_expired(0, u64::MAX));
    }
}
