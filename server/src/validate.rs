//! Checks on client-supplied names and fields, at the edge, with messages that say what
//! is wrong. Names never contain 0x00, which the store's key layout relies on.

use crate::error::{ServiceError, ServiceResult};

/// 1-32 of [a-z0-9_.-], starting with a letter or digit.
pub fn username(s: &str) -> ServiceResult<()> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(ServiceError::invalid(format!(
            "username {:?} must be 1-32 of a-z 0-9 _ . - starting with a letter or digit",
            s.chars().take(40).collect::<String>()
        )))
    }
}

/// 1-64 of [A-Za-z0-9_.-].
pub fn device(s: &str) -> ServiceResult<()> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            "device must be 1-64 of A-Z a-z 0-9 _ . -",
        ))
    }
}

pub fn password(s: &str) -> ServiceResult<()> {
    if s.len() < 8 || s.len() > 1024 {
        return Err(ServiceError::invalid("password must be 8-1024 bytes"));
    }
    Ok(())
}

/// 1-64 bytes, no control characters.
pub fn client_msg_id(s: &str) -> ServiceResult<()> {
    if s.is_empty() || s.len() > 64 || s.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            "client_msg_id must be 1-64 bytes without control characters",
        ));
    }
    Ok(())
}

pub fn content_type(s: &str) -> ServiceResult<()> {
    if s.len() > 128 || s.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            "content_type must be at most 128 printable bytes",
        ));
    }
    Ok(())
}

pub fn group_name(s: &str) -> ServiceResult<()> {
    if s.trim().is_empty() || s.len() > 128 || s.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            "group name must be 1-128 printable bytes",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["alice", "a", "bob.smith-2", "0day", &"x".repeat(32)] {
            assert!(username(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Alice",
            "-a",
            "a b",
            "a\0b",
            "é",
            &"x".repeat(33),
            "a:b",
        ] {
            assert!(username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn message_ids() {
        assert!(client_msg_id("0f3c-1").is_ok());
        assert!(client_msg_id("").is_err());
        assert!(client_msg_id("a\nb").is_err());
        assert!(client_msg_id(&"x".repeat(65)).is_err());
    }
}
