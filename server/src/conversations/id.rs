//! Conversation ids: `d:<a>:<b>` (a 1:1 pair, names sorted) and `g:<16 hex>` (a group).

use crate::error::{ServiceError, ServiceResult};
use crate::validate;

pub(crate) enum ConvId {
    Direct(String, String),
    Group,
}

/// Parses and validates a conversation id.
pub(crate) fn parse_conversation(id: &str) -> ServiceResult<ConvId> {
    if let Some(rest) = id.strip_prefix("d:") {
        if let Some((a, b)) = rest.split_once(':') {
            if validate::username(a).is_ok() && validate::username(b).is_ok() && a <= b {
                return Ok(ConvId::Direct(a.to_string(), b.to_string()));
            }
        }
    } else if let Some(g) = id.strip_prefix("g:") {
        if g.len() == 16
            && g.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            return Ok(ConvId::Group);
        }
    }
    Err(ServiceError::invalid(format!(
        "conversation id {:?} is not d:<user>:<user> or g:<16 hex>",
        truncate(id, 80)
    )))
}

/// At most `n` characters of `s` (for echoing client input in messages).
pub(crate) fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(
            matches!(parse_conversation("d:a:b"), Ok(ConvId::Direct(a, b)) if a == "a" && b == "b")
        );
        assert!(parse_conversation("d:b:a").is_err(), "names sorted");
        assert!(matches!(
            parse_conversation("g:0123456789abcdef"),
            Ok(ConvId::Group)
        ));
        assert!(parse_conversation("g:0123456789ABCDEF").is_err());
        assert!(parse_conversation("x").is_err());
        assert_eq!(truncate("héllo", 2), "hé");
    }
}
