//! Wire twins of the `SyncResult` response whose messages are already encoded.
//!
//! A stored timeline entry is the encoded wire `Message`. In protobuf an embedded message
//! and a `bytes` field holding its encoding are the same bytes on the wire, so the server
//! can put stored entries into a `SyncResult` frame as they are instead of decoding and
//! re-encoding every message of a catch-up page. The structs below mirror the field tags
//! of `Frame` (`req_id` = 1, `sync_result` = 105), `SyncResult` and `InboxItem` in
//! `tern.proto`; the test at the bottom checks that both encodings are byte for byte equal,
//! so clients decode these frames with the ordinary generated types.

use bytes::{BufMut, Bytes, BytesMut};

use crate::pb;

/// `InboxItem` with its `message` already encoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawInboxItem {
    #[prost(uint64, tag = "1")]
    pub inbox_seq: u64,
    /// An encoded `Message`.
    #[prost(bytes = "bytes", tag = "2")]
    pub message: Bytes,
}

/// `SyncResult` whose items carry encoded messages.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawSyncResult {
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<RawInboxItem>,
    #[prost(uint64, tag = "2")]
    pub from_inbox_seq: u64,
    #[prost(uint64, tag = "3")]
    pub to_inbox_seq: u64,
    #[prost(uint64, tag = "4")]
    pub inbox_head: u64,
    #[prost(bool, tag = "5")]
    pub complete: bool,
    #[prost(message, repeated, tag = "6")]
    pub read_diffusion: Vec<pb::ConversationHead>,
}

/// `Frame` with `body = sync_result`.
#[derive(Clone, PartialEq, prost::Message)]
struct RawSyncFrame {
    #[prost(uint64, tag = "1")]
    req_id: u64,
    #[prost(message, optional, tag = "105")]
    sync_result: Option<RawSyncResult>,
}

/// The length-prefixed frame answering request `req_id` with `result`, as
/// [`crate::encode_frame`] would encode the equivalent `Frame`.
pub fn encode_sync_result_frame(req_id: u64, result: RawSyncResult) -> Bytes {
    use prost::Message as _;
    let frame = RawSyncFrame {
        req_id,
        sync_result: Some(result),
    };
    let len = frame.encoded_len();
    let mut out = BytesMut::with_capacity(crate::LEN_PREFIX + len);
    out.put_u32(len as u32);
    frame
        .encode(&mut out)
        .expect("BytesMut grows, so encoding cannot run out of space");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode_frame, Body, Frame};
    use prost::Message as _;

    fn message(seq: u64) -> pb::Message {
        pb::Message {
            conversation: "d:alice:bob".into(),
            seq,
            sender: "alice".into(),
            sender_device: "phone".into(),
            client_msg_id: format!("c-{seq}"),
            server_time_ms: 1_700_000_000_000 + seq,
            body: format!("hello {seq}").into_bytes().into(),
            ..Default::default()
        }
    }

    #[test]
    fn raw_sync_frames_are_byte_for_byte_the_typed_ones() {
        for (req_id, n, complete, heads) in
            [(7, 3, true, 1), (0, 0, false, 0), (u64::MAX, 1, true, 2)]
        {
            let msgs: Vec<pb::Message> = (1..=n).map(message).collect();
            let heads: Vec<pb::ConversationHead> = (0..heads)
                .map(|i| pb::ConversationHead {
                    conversation: format!("g:{i:016x}"),
                    last_seq: 40 + i,
                })
                .collect();
            let typed = encode_frame(&Frame {
                req_id,
                body: Some(Body::SyncResult(pb::SyncResult {
                    items: msgs
                        .iter()
                        .enumerate()
                        .map(|(i, m)| pb::InboxItem {
                            inbox_seq: 10 + i as u64,
                            message: Some(m.clone()),
                        })
                        .collect(),
                    from_inbox_seq: 9,
                    to_inbox_seq: 9 + n,
                    inbox_head: 20,
                    complete,
                    read_diffusion: heads.clone(),
                })),
            });
            let raw = encode_sync_result_frame(
                req_id,
                RawSyncResult {
                    items: msgs
                        .iter()
                        .enumerate()
                        .map(|(i, m)| RawInboxItem {
                            inbox_seq: 10 + i as u64,
                            message: m.encode_to_vec().into(),
                        })
                        .collect(),
                    from_inbox_seq: 9,
                    to_inbox_seq: 9 + n,
                    inbox_head: 20,
                    complete,
                    read_diffusion: heads,
                },
            );
            assert_eq!(raw, typed, "req_id {req_id}, {n} items");
        }
    }
}
