//! [`FfiError`]: every failure a binding call can return, one exception class per variant
//! in Kotlin/Swift/Python. A server refusal keeps the protocol's error code (its
//! `ErrorCode` name, e.g. `FORBIDDEN`, and number; docs/PROTOCOL.md) and message.
//!
//! Field names avoid `message`: it would clash with `Throwable.message` in Kotlin.

use tern_sdk::ClientError;

#[derive(Debug, Clone, PartialEq, thiserror::Error, uniffi::Error)]
pub enum FfiError {
    /// The server answered with an error: `code` is the protocol's `ErrorCode` name
    /// (`FORBIDDEN`, `NOT_FOUND`, `INVALID_ARGUMENT`...), `code_number` its number.
    #[error("{reason} ({code})")]
    Server {
        code: String,
        code_number: i32,
        reason: String,
    },
    /// The connection dropped while the request was in flight (not resent: it may or may
    /// not have taken effect). Sends are not affected: they are resent until acked.
    #[error("connection lost before the answer came")]
    ConnectionLost,
    /// The client has stopped (closed, replaced by another login of the device, or its
    /// credentials no longer work).
    #[error("client stopped: {reason}")]
    Stopped { reason: String },
    /// The server answered something this SDK did not expect.
    #[error("unexpected answer from server: {detail}")]
    Protocol { detail: String },
    /// No connection could be made (register/login, which do not retry).
    #[error("cannot connect: {detail}")]
    Connect { detail: String },
    /// A send with a time-to-live was dropped unsent when its TTL passed.
    #[error("message {client_msg_id} expired before it could be sent")]
    Expired { client_msg_id: String },
    /// The caller passed something unusable (an address that does not parse or resolve,
    /// a CA file that cannot be read...): nothing was sent.
    #[error("invalid argument: {detail}")]
    InvalidArgument { detail: String },
    /// The local store (the state file) could not be read.
    #[error("local store: {detail}")]
    Storage { detail: String },
    /// A bug in the binding (a task panicked); the client may still work.
    #[error("internal error: {detail}")]
    Internal { detail: String },
}

impl From<ClientError> for FfiError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Server { code, message } => FfiError::Server {
                code: code.as_str_name().to_string(),
                code_number: code as i32,
                reason: message,
            },
            ClientError::ConnectionLost => FfiError::ConnectionLost,
            ClientError::Stopped(reason) => FfiError::Stopped { reason },
            ClientError::Protocol(detail) => FfiError::Protocol { detail },
            ClientError::Connect(detail) => FfiError::Connect { detail },
            ClientError::Expired { client_msg_id } => FfiError::Expired { client_msg_id },
        }
    }
}

pub(crate) fn invalid(detail: impl std::fmt::Display) -> FfiError {
    FfiError::InvalidArgument {
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_proto::pb::ErrorCode;

    #[test]
    fn a_server_refusal_keeps_the_protocols_code_name_number_and_message() {
        let e = FfiError::from(ClientError::Server {
            code: ErrorCode::Forbidden,
            message: "not a member of g:1".into(),
        });
        assert_eq!(
            e,
            FfiError::Server {
                code: "FORBIDDEN".into(),
                code_number: ErrorCode::Forbidden as i32,
                reason: "not a member of g:1".into(),
            }
        );
        assert_eq!(e.to_string(), "not a member of g:1 (FORBIDDEN)");
        assert_eq!(
            FfiError::from(ClientError::Expired {
                client_msg_id: "ab".into()
            }),
            FfiError::Expired {
                client_msg_id: "ab".into()
            }
        );
    }
}
