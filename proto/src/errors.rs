//! Error frames and what a client does with each error code.

use crate::pb::{self, ErrorCode};
use crate::{Body, Frame};

impl ErrorCode {
    /// Every code, in value order (`ERROR_CODE_UNSPECIFIED` first).
    pub const ALL: [ErrorCode; 22] = [
        ErrorCode::Unspecified,
        ErrorCode::Internal,
        ErrorCode::MalformedFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::UnknownRequest,
        ErrorCode::UnsupportedVersion,
        ErrorCode::Unauthenticated,
        ErrorCode::AlreadyAuthenticated,
        ErrorCode::InvalidCredentials,
        ErrorCode::InvalidToken,
        ErrorCode::TokenExpired,
        ErrorCode::TokenRevoked,
        ErrorCode::InvalidArgument,
        ErrorCode::NotFound,
        ErrorCode::Forbidden,
        ErrorCode::UserExists,
        ErrorCode::RateLimited,
        ErrorCode::ResourceExhausted,
        ErrorCode::Unavailable,
        ErrorCode::CursorTrimmed,
        ErrorCode::WindowExpired,
        ErrorCode::Blocked,
    ];

    /// Transient: the same request (a `Send` with the same `client_msg_id`) may succeed
    /// if sent again later, so a client retries it instead of failing it. `RATE_LIMITED`
    /// says how long to wait in `Error.retry_after_ms`.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Internal
                | ErrorCode::RateLimited
                | ErrorCode::Unavailable
                | ErrorCode::ResourceExhausted
        )
    }

    /// The server closes the connection after sending this error (it follows it with
    /// `Closing{PROTOCOL_ERROR}`). Every other error leaves the connection open.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            ErrorCode::FrameTooLarge | ErrorCode::UnsupportedVersion
        )
    }
}

/// Shorthand for building an error frame (no retry-after).
pub fn error_frame(req_id: u64, code: ErrorCode, message: impl Into<String>) -> Frame {
    error_frame_retry(req_id, code, message, 0)
}

/// An error frame that tells the client how long to wait before retrying
/// (`Error.retry_after_ms`, 0 = not given). The server sets it on `RATE_LIMITED`.
pub fn error_frame_retry(
    req_id: u64,
    code: ErrorCode,
    message: impl Into<String>,
    retry_after_ms: u64,
) -> Frame {
    Frame {
        req_id,
        body: Some(Body::Error(pb::Error {
            code: code as i32,
            message: message.into(),
            retry_after_ms,
        })),
    }
}

/// The last frame of a connection the server closes (`Closing`, req_id 0).
pub fn closing_frame(
    reason: pb::CloseReason,
    message: impl Into<String>,
    retry_after_ms: u32,
) -> Frame {
    Frame {
        req_id: 0,
        body: Some(Body::Closing(pb::Closing {
            reason: reason as i32,
            message: message.into(),
            retry_after_ms,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_every_value_in_order() {
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(*c as i32, i as i32);
        }
        let next = ErrorCode::ALL.len() as i32;
        assert!(
            ErrorCode::try_from(next).is_err(),
            "ErrorCode {next} is new: add it to ErrorCode::ALL and decide is_retryable"
        );
    }

    #[test]
    fn retryable_and_closing_sets() {
        let retryable: Vec<_> = ErrorCode::ALL
            .into_iter()
            .filter(|c| c.is_retryable())
            .collect();
        assert_eq!(
            retryable,
            [
                ErrorCode::Internal,
                ErrorCode::RateLimited,
                ErrorCode::ResourceExhausted,
                ErrorCode::Unavailable
            ]
        );
        for c in [
            ErrorCode::Forbidden,
            ErrorCode::InvalidArgument,
            ErrorCode::NotFound,
            ErrorCode::TokenExpired,
            ErrorCode::CursorTrimmed,
        ] {
            assert!(!c.is_retryable(), "{c:?}");
        }
        let closing: Vec<_> = ErrorCode::ALL
            .into_iter()
            .filter(|c| c.closes_connection())
            .collect();
        assert_eq!(
            closing,
            [ErrorCode::FrameTooLarge, ErrorCode::UnsupportedVersion]
        );
    }

    #[test]
    fn error_frames() {
        let f = error_frame_retry(7, ErrorCode::RateLimited, "slow down", 250);
        assert_eq!(f.req_id, 7);
        let Some(Body::Error(e)) = f.body else {
            panic!("{f:?}")
        };
        assert_eq!(e.code, ErrorCode::RateLimited as i32);
        assert_eq!(e.message, "slow down");
        assert_eq!(e.retry_after_ms, 250);
        let Some(Body::Error(e)) = error_frame(1, ErrorCode::Forbidden, "no").body else {
            panic!()
        };
        assert_eq!(e.retry_after_ms, 0);
    }
}
