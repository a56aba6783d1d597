//! The rules for client-supplied names and fields: user and device names, passwords,
//! group names, `client_msg_id` and `content_type`. Pure functions, no I/O.
//!
//! The server checks them at its edge (`INVALID_ARGUMENT` with [`NameError`]'s message);
//! clients check before sending, with their own wording around [`NameError::rule`]. The
//! web SDK reads the same limits from `web/src/protocol-rules.json`, which a test in
//! `rules_table.rs` keeps equal to the constants here.
//!
//! User and device names are ASCII and never contain 0x00, which the server's store key
//! layout relies on.

/// Longest user name, in bytes (= characters: user names are ASCII).
pub const USERNAME_MAX: usize = 32;
/// Longest device name, in bytes (= characters: device names are ASCII).
pub const DEVICE_MAX: usize = 64;
/// Shortest password, in bytes.
pub const PASSWORD_MIN: usize = 8;
/// Longest password, in bytes.
pub const PASSWORD_MAX: usize = 1024;
/// Longest group name, in bytes.
pub const GROUP_NAME_MAX: usize = 128;
/// Longest `client_msg_id`, in bytes.
pub const CLIENT_MSG_ID_MAX: usize = 64;
/// Longest `content_type`, in bytes.
pub const CONTENT_TYPE_MAX: usize = 128;

/// The user name rule as a regular expression (JavaScript and Rust `regex` syntax alike).
pub const USERNAME_PATTERN: &str = "^[a-z0-9][a-z0-9_.-]{0,31}$";
/// The device name rule as a regular expression.
pub const DEVICE_PATTERN: &str = "^[A-Za-z0-9_.-]{1,64}$";

/// How many characters of a bad user name an error message repeats.
const SHOWN_CHARS: usize = 40;

/// A name or field that breaks its rule. `to_string()` (= [`NameError::message`]) is the
/// text the server sends with `INVALID_ARGUMENT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A bad user name (its first 40 characters are kept, to repeat in the message).
    #[error("username {0:?} must be {rule}", rule = Self::USERNAME_RULE)]
    Username(String),
    /// A bad device name.
    #[error("device must be {rule}", rule = Self::DEVICE_RULE)]
    Device,
    /// A password that is too short or too long (the password itself is not kept).
    #[error("password must be {rule}", rule = Self::PASSWORD_RULE)]
    Password,
    /// A bad `client_msg_id`.
    #[error("client_msg_id must be {rule}", rule = Self::CLIENT_MSG_ID_RULE)]
    ClientMsgId,
    /// A bad `content_type`.
    #[error("content_type must be {rule}", rule = Self::CONTENT_TYPE_RULE)]
    ContentType,
    /// A bad group name.
    #[error("group name must be {rule}", rule = Self::GROUP_NAME_RULE)]
    GroupName,
}

impl NameError {
    const USERNAME_RULE: &'static str = "1-32 of a-z 0-9 _ . - starting with a letter or digit";
    const DEVICE_RULE: &'static str = "1-64 of A-Z a-z 0-9 _ . -";
    const PASSWORD_RULE: &'static str = "8-1024 bytes";
    const CLIENT_MSG_ID_RULE: &'static str = "1-64 bytes without control characters";
    const CONTENT_TYPE_RULE: &'static str = "at most 128 printable bytes";
    const GROUP_NAME_RULE: &'static str = "1-128 printable bytes";

    /// The message for `INVALID_ARGUMENT`, e.g. `device must be 1-64 of A-Z a-z 0-9 _ . -`.
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// The rule alone, e.g. `1-64 of A-Z a-z 0-9 _ . -`, for a client's own wording.
    pub fn rule(&self) -> &'static str {
        match self {
            NameError::Username(_) => Self::USERNAME_RULE,
            NameError::Device => Self::DEVICE_RULE,
            NameError::Password => Self::PASSWORD_RULE,
            NameError::ClientMsgId => Self::CLIENT_MSG_ID_RULE,
            NameError::ContentType => Self::CONTENT_TYPE_RULE,
            NameError::GroupName => Self::GROUP_NAME_RULE,
        }
    }
}

/// A byte a user name may contain: a-z 0-9 _ . -
pub fn is_username_byte(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-')
}

/// A byte a device name may contain: A-Z a-z 0-9 _ . -
pub fn is_device_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-')
}

/// 1-32 of [a-z0-9_.-], starting with a letter or digit.
pub fn username(s: &str) -> Result<(), NameError> {
    let ok = !s.is_empty()
        && s.len() <= USERNAME_MAX
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes().all(is_username_byte);
    if ok {
        Ok(())
    } else {
        Err(NameError::Username(s.chars().take(SHOWN_CHARS).collect()))
    }
}

/// 1-64 of [A-Za-z0-9_.-].
pub fn device(s: &str) -> Result<(), NameError> {
    if !s.is_empty() && s.len() <= DEVICE_MAX && s.bytes().all(is_device_byte) {
        Ok(())
    } else {
        Err(NameError::Device)
    }
}

/// 8-1024 bytes, anything else allowed.
pub fn password(s: &str) -> Result<(), NameError> {
    if s.len() < PASSWORD_MIN || s.len() > PASSWORD_MAX {
        return Err(NameError::Password);
    }
    Ok(())
}

/// 1-64 bytes, no control characters.
pub fn client_msg_id(s: &str) -> Result<(), NameError> {
    if s.is_empty() || s.len() > CLIENT_MSG_ID_MAX || s.chars().any(char::is_control) {
        return Err(NameError::ClientMsgId);
    }
    Ok(())
}

/// At most 128 bytes, no control characters; empty means `text/plain; charset=utf-8`.
pub fn content_type(s: &str) -> Result<(), NameError> {
    if s.len() > CONTENT_TYPE_MAX || s.chars().any(char::is_control) {
        return Err(NameError::ContentType);
    }
    Ok(())
}

/// 1-128 bytes, not only whitespace, no control characters.
pub fn group_name(s: &str) -> Result<(), NameError> {
    if s.trim().is_empty() || s.len() > GROUP_NAME_MAX || s.chars().any(char::is_control) {
        return Err(NameError::GroupName);
    }
    Ok(())
}

/// Names each rule must accept and refuse. The unit tests below run them through the Rust
/// functions; `web/src/protocol-rules.json` carries them too, and the web SDK's tests run
/// them through its regular expressions.
#[cfg(test)]
pub(crate) mod examples {
    pub(crate) const USERNAME_OK: &[&str] = &[
        "alice",
        "a",
        "bob.smith-2",
        "0day",
        "x_",
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    ];
    pub(crate) const USERNAME_BAD: &[&str] = &[
        "",
        "Alice",
        "-a",
        "_a",
        ".a",
        "a b",
        "a\0b",
        "é",
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "a:b",
        "a\n",
    ];
    pub(crate) const DEVICE_OK: &[&str] = &[
        "phone",
        "Laptop-1",
        "_",
        ".x",
        "cli-host.example",
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    ];
    pub(crate) const DEVICE_BAD: &[&str] = &[
        "",
        "my phone",
        "a/b",
        "a:b",
        "é",
        "a\0",
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    ];
}

#[cfg(test)]
mod tests {
    use super::examples::*;
    use super::*;

    #[test]
    fn usernames() {
        for ok in USERNAME_OK {
            assert!(username(ok).is_ok(), "{ok}");
        }
        for bad in USERNAME_BAD {
            assert!(username(bad).is_err(), "{bad:?}");
        }
        assert_eq!(USERNAME_OK.last().unwrap().len(), USERNAME_MAX);
    }

    #[test]
    fn devices() {
        for ok in DEVICE_OK {
            assert!(device(ok).is_ok(), "{ok}");
        }
        for bad in DEVICE_BAD {
            assert!(device(bad).is_err(), "{bad:?}");
        }
        assert_eq!(DEVICE_OK.last().unwrap().len(), DEVICE_MAX);
    }

    #[test]
    fn passwords_count_bytes() {
        assert!(password("12345678").is_ok());
        assert!(password("1234567").is_err());
        assert!(password("éééé").is_ok(), "4 characters, 8 bytes");
        assert!(password(&"x".repeat(PASSWORD_MAX)).is_ok());
        assert!(password(&"x".repeat(PASSWORD_MAX + 1)).is_err());
    }

    #[test]
    fn message_ids_types_and_group_names() {
        assert!(client_msg_id("0f3c-1").is_ok());
        assert!(client_msg_id("").is_err());
        assert!(client_msg_id("a\nb").is_err());
        assert!(client_msg_id(&"x".repeat(64)).is_ok());
        assert!(client_msg_id(&"x".repeat(65)).is_err());
        assert!(content_type("").is_ok());
        assert!(content_type("text/markdown; charset=utf-8").is_ok());
        assert!(content_type(&"x".repeat(129)).is_err());
        assert!(content_type("a\tb").is_err());
        assert!(group_name("team").is_ok());
        assert!(group_name("  ").is_err());
        assert!(group_name(&"x".repeat(129)).is_err());
        assert!(group_name("a\u{7}").is_err());
    }

    /// The exact texts the server sends with INVALID_ARGUMENT (tests and clients compare them).
    #[test]
    fn messages_are_the_wire_texts() {
        assert_eq!(
            username("Alice").unwrap_err().message(),
            "username \"Alice\" must be 1-32 of a-z 0-9 _ . - starting with a letter or digit"
        );
        let long = "X".repeat(50);
        assert_eq!(
            username(&long).unwrap_err().message(),
            format!(
                "username {:?} must be 1-32 of a-z 0-9 _ . - starting with a letter or digit",
                "X".repeat(40)
            )
        );
        assert_eq!(
            device("a b").unwrap_err().message(),
            "device must be 1-64 of A-Z a-z 0-9 _ . -"
        );
        assert_eq!(
            password("short").unwrap_err().message(),
            "password must be 8-1024 bytes"
        );
        assert_eq!(
            client_msg_id("").unwrap_err().message(),
            "client_msg_id must be 1-64 bytes without control characters"
        );
        assert_eq!(
            content_type("\n").unwrap_err().message(),
            "content_type must be at most 128 printable bytes"
        );
        assert_eq!(
            group_name("").unwrap_err().message(),
            "group name must be 1-128 printable bytes"
        );
        assert_eq!(device("").unwrap_err().rule(), "1-64 of A-Z a-z 0-9 _ . -");
    }

    /// The rule texts and patterns state the numbers the constants hold.
    #[test]
    fn texts_agree_with_the_constants() {
        assert!(NameError::USERNAME_RULE.starts_with(&format!("1-{USERNAME_MAX} ")));
        assert!(NameError::DEVICE_RULE.starts_with(&format!("1-{DEVICE_MAX} ")));
        assert_eq!(
            NameError::PASSWORD_RULE,
            format!("{PASSWORD_MIN}-{PASSWORD_MAX} bytes")
        );
        assert!(NameError::CLIENT_MSG_ID_RULE.starts_with(&format!("1-{CLIENT_MSG_ID_MAX} ")));
        assert!(NameError::CONTENT_TYPE_RULE.contains(&format!(" {CONTENT_TYPE_MAX} ")));
        assert!(NameError::GROUP_NAME_RULE.starts_with(&format!("1-{GROUP_NAME_MAX} ")));
        assert!(USERNAME_PATTERN.ends_with(&format!("{{0,{}}}$", USERNAME_MAX - 1)));
        assert!(DEVICE_PATTERN.ends_with(&format!("{{1,{DEVICE_MAX}}}$")));
    }

    /// The patterns say what the functions do: a small matcher for exactly their two
    /// shapes (`^[class]...{m,n}$`) run over every byte and the examples.
    #[test]
    fn patterns_match_the_functions() {
        for c in 0u8..=127 {
            let s = (c as char).to_string();
            assert_eq!(
                username(&s).is_ok(),
                c.is_ascii_alphanumeric() && !c.is_ascii_uppercase(),
                "{c}"
            );
            assert_eq!(is_username_byte(c), in_class("a-z0-9_.-", c), "{c}");
            assert_eq!(is_device_byte(c), in_class("A-Za-z0-9_.-", c), "{c}");
            assert_eq!(device(&s).is_ok(), in_class("A-Za-z0-9_.-", c), "{c}");
        }
        assert_eq!(
            USERNAME_PATTERN,
            format!("^[a-z0-9][a-z0-9_.-]{{0,{}}}$", USERNAME_MAX - 1)
        );
        assert_eq!(
            DEVICE_PATTERN,
            format!("^[A-Za-z0-9_.-]{{1,{DEVICE_MAX}}}$")
        );
    }

    /// Membership in a regex character class written as ranges and single characters
    /// (`-` last is literal).
    fn in_class(class: &str, c: u8) -> bool {
        let b = class.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if i + 2 < b.len() && b[i + 1] == b'-' {
                if (b[i]..=b[i + 2]).contains(&c) {
                    return true;
                }
                i += 3;
            } else {
                if b[i] == c {
                    return true;
                }
                i += 1;
            }
        }
        false
    }
}
