//! tern-proto: the tern wire protocol.
//!
//! - [`pb`]: the prost types generated from `tern.proto` (built with protox, so no `protoc`).
//! - [`codec`]: the length-prefixed frame codec, a pure function over a byte buffer, and its
//!   `tokio_util::codec` wrapper for sockets.
//! - [`raw`]: wire twins of `SyncResult` that carry already encoded messages (the server
//!   answers catch-up pages from stored bytes without re-encoding them).
//! - [`names`]: the rules for user and device names, passwords, group names,
//!   `client_msg_id` and `content_type`, with the exact texts the server sends.
//! - [`body`]: [`BodyKind`] (request, response or push) and [`body_name`] for each
//!   `Frame.body`, checked against the compiled descriptor.
//! - [`errors`]: [`error_frame`], [`error_frame_retry`] and, on [`pb::ErrorCode`],
//!   `is_retryable()` and `closes_connection()`.
//! - [`request_errors`]: the error codes each request may be answered with (the Errors
//!   column of PROTOCOL.md's request table, checked against it by a test and against the
//!   server's answers by the server).
//! - [`liveness`]: [`HEARTBEAT_MISSES`] and the timeouts derived from the heartbeat.
//! - constants: the protocol version, the ALPN id and the default limits.
//!
//! The web SDK cannot link this crate; it reads the same rules from
//! `web/src/protocol-rules.json`, which a unit test here keeps equal to the Rust values,
//! and its wire schema from `web/src/schema.js` ([`web_schema`], likewise kept current).
//!
//! `docs/PROTOCOL.md` at the repository root is the full text of the contract.

pub mod body;
pub mod codec;
pub mod errors;
pub mod liveness;
pub mod names;
pub mod raw;
pub mod request_errors;
#[cfg(test)]
mod rules_table;
pub mod web_schema;

/// Generated protobuf types (package `tern.v1`).
#[allow(clippy::all, missing_docs, rustdoc::invalid_html_tags)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/tern.v1.rs"));
}

pub use body::{body_kind, body_name, BodyKind};
pub use codec::{decode_frame, encode_frame, CodecError, FrameCodec};
pub use errors::{closing_frame, error_frame, error_frame_retry};
pub use liveness::{heartbeat_timeout, liveness_timeout, HEARTBEAT_MISSES, LIVENESS_GRACE};
pub use names::NameError;
pub use pb::frame::Body;
pub use pb::Frame;
pub use web_schema::web_schema;

/// The protocol version a client states in Register, Login and Resume.
pub const PROTOCOL_VERSION: u32 = 1;
/// ALPN protocol id on QUIC and TLS.
pub const ALPN: &[u8] = b"tern/1";
/// Default maximum size of one frame's protobuf payload, in bytes.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;
/// Bytes of the big-endian length prefix.
pub const LEN_PREFIX: usize = 4;

/// Builds the conversation id of the 1:1 conversation between two users.
pub fn direct_conversation(a: &str, b: &str) -> String {
    if a <= b {
        format!("d:{a}:{b}")
    } else {
        format!("d:{b}:{a}")
    }
}

/// How an image or file message reads in a conversation list or a notification:
/// `[photo] caption`, or `[file NAME] caption` (just the label without a caption).
pub fn attachment_label(a: &pb::Attachment, caption: &str) -> String {
    let label = if a.width > 0 {
        "[photo]".to_string()
    } else {
        format!("[file {}]", a.name)
    };
    if caption.is_empty() {
        label
    } else {
        format!("{label} {caption}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_conversation_is_symmetric() {
        assert_eq!(direct_conversation("bob", "alice"), "d:alice:bob");
        assert_eq!(direct_conversation("alice", "bob"), "d:alice:bob");
    }
}
