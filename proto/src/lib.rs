//! tern-proto: the tern wire protocol.
//!
//! - [`pb`]: the prost types generated from `tern.proto` (built with protox, so no `protoc`).
//! - [`codec`]: the length-prefixed frame codec, a pure function over a byte buffer, and its
//!   `tokio_util::codec` wrapper for sockets.
//! - [`raw`]: wire twins of `SyncResult` that carry already encoded messages (the server
//!   answers catch-up pages from stored bytes without re-encoding them).
//! - constants: the protocol version, the ALPN id and the default limits.
//!
//! `docs/PROTOCOL.md` at the repository root is the full text of the contract.

pub mod codec;
pub mod raw;

/// Generated protobuf types (package `tern.v1`).
#[allow(clippy::all, missing_docs, rustdoc::invalid_html_tags)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/tern.v1.rs"));
}

pub use codec::{decode_frame, encode_frame, CodecError, FrameCodec};
pub use pb::frame::Body;
pub use pb::Frame;

/// The protocol version a client states in Register, Login and Resume.
pub const PROTOCOL_VERSION: u32 = 1;
/// ALPN protocol id on QUIC and TLS.
pub const ALPN: &[u8] = b"tern/1";
/// Default maximum size of one frame's protobuf payload, in bytes.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;
/// Bytes of the big-endian length prefix.
pub const LEN_PREFIX: usize = 4;

/// Shorthand for building an error frame.
pub fn error_frame(req_id: u64, code: pb::ErrorCode, message: impl Into<String>) -> Frame {
    Frame {
        req_id,
        body: Some(Body::Error(pb::Error {
            code: code as i32,
            message: message.into(),
        })),
    }
}

/// Builds the conversation id of the 1:1 conversation between two users.
pub fn direct_conversation(a: &str, b: &str) -> String {
    if a <= b {
        format!("d:{a}:{b}")
    } else {
        format!("d:{b}:{a}")
    }
}

/// The short name of a body kind, for logs and error messages.
pub fn body_name(body: &Body) -> &'static str {
    match body {
        Body::Register(_) => "Register",
        Body::Login(_) => "Login",
        Body::Resume(_) => "Resume",
        Body::Logout(_) => "Logout",
        Body::Revoke(_) => "Revoke",
        Body::Ping(_) => "Ping",
        Body::Send(_) => "Send",
        Body::Ack(_) => "Ack",
        Body::Sync(_) => "Sync",
        Body::Pull(_) => "Pull",
        Body::CreateGroup(_) => "CreateGroup",
        Body::AddMembers(_) => "AddMembers",
        Body::RemoveMembers(_) => "RemoveMembers",
        Body::LeaveGroup(_) => "LeaveGroup",
        Body::ListMembers(_) => "ListMembers",
        Body::ListConversations(_) => "ListConversations",
        Body::PresenceQuery(_) => "PresenceQuery",
        Body::GroupOnlineQuery(_) => "GroupOnlineQuery",
        Body::Error(_) => "Error",
        Body::Ok(_) => "Ok",
        Body::LoginOk(_) => "LoginOk",
        Body::Pong(_) => "Pong",
        Body::SendAck(_) => "SendAck",
        Body::SyncResult(_) => "SyncResult",
        Body::PullResult(_) => "PullResult",
        Body::GroupCreated(_) => "GroupCreated",
        Body::MemberList(_) => "MemberList",
        Body::ConversationList(_) => "ConversationList",
        Body::PresenceResult(_) => "PresenceResult",
        Body::GroupOnlineResult(_) => "GroupOnlineResult",
        Body::Push(_) => "MessagePush",
        Body::Closing(_) => "Closing",
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
