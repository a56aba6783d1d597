//! Checks on client-supplied names and fields, at the edge. The rules themselves (and
//! their messages) are the protocol's, in `tern_proto::names`, shared with the SDK, the CLI
//! and the web client; here they become INVALID_ARGUMENT. Names never contain 0x00, which
//! the store's key layout relies on.

use tern_proto::names::{self, NameError};

use crate::error::{ServiceError, ServiceResult};

impl From<NameError> for ServiceError {
    fn from(e: NameError) -> Self {
        ServiceError::invalid(e.message())
    }
}

/// 1-32 of [a-z0-9_.-], starting with a letter or digit.
pub(crate) fn username(s: &str) -> ServiceResult<()> {
    Ok(names::username(s)?)
}

/// 1-64 of [A-Za-z0-9_.-].
pub(crate) fn device(s: &str) -> ServiceResult<()> {
    Ok(names::device(s)?)
}

/// 8-1024 bytes.
pub(crate) fn password(s: &str) -> ServiceResult<()> {
    Ok(names::password(s)?)
}

/// 1-64 bytes, no control characters.
pub(crate) fn client_msg_id(s: &str) -> ServiceResult<()> {
    Ok(names::client_msg_id(s)?)
}

/// At most 128 printable bytes.
pub(crate) fn content_type(s: &str) -> ServiceResult<()> {
    Ok(names::content_type(s)?)
}

/// 1-128 printable bytes.
pub(crate) fn group_name(s: &str) -> ServiceResult<()> {
    Ok(names::group_name(s)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server answers with the protocol's texts (clients and tests match on them).
    #[test]
    fn errors_are_invalid_argument_with_the_rule_in_the_text() {
        let e = username("Alice").unwrap_err();
        assert_eq!(e.code, tern_proto::pb::ErrorCode::InvalidArgument);
        assert_eq!(
            e.message,
            "username \"Alice\" must be 1-32 of a-z 0-9 _ . - starting with a letter or digit"
        );
        assert_eq!(
            device("a b").unwrap_err().message,
            "device must be 1-64 of A-Z a-z 0-9 _ . -"
        );
        assert!(client_msg_id("0f3c-1").is_ok());
        assert!(group_name(" ").is_err());
    }
}
