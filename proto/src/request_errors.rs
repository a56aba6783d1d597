//! Which error codes each request may be answered with: the contract behind the "Errors"
//! column of docs/PROTOCOL.md's "Requests at a glance".
//!
//! It is held to both sides: a test below requires the PROTOCOL.md column to list exactly
//! these codes for every request, and the server checks every error it sends against
//! [`may_answer`] (a debug assertion, so any test or fuzz run that makes a handler answer
//! with an unlisted code fails; release builds log it). The text and the code can then
//! not drift apart silently.

use crate::pb::ErrorCode::{self, *};

/// Codes any request may get, listed once in the prose above the table rather than in
/// every row: a server fault or a failed disk (`INTERNAL`), flood limits
/// (`RATE_LIMITED`), shutdown (`UNAVAILABLE`).
pub const ANY_REQUEST: [ErrorCode; 3] = [Internal, RateLimited, Unavailable];

/// The codes `request` (a request body's name, as [`crate::body_name`] gives it) may get
/// besides [`ANY_REQUEST`] and, before login, `UNAUTHENTICATED`. `None`: not a request.
pub fn request_errors(request: &str) -> Option<&'static [ErrorCode]> {
    Some(match request {
        "Register" => &[
            UnsupportedVersion,
            InvalidArgument,
            UserExists,
            AlreadyAuthenticated,
        ],
        "Login" => &[
            UnsupportedVersion,
            InvalidArgument,
            InvalidCredentials,
            ResourceExhausted,
            AlreadyAuthenticated,
        ],
        "Resume" => &[
            UnsupportedVersion,
            InvalidToken,
            TokenExpired,
            TokenRevoked,
            ResourceExhausted,
            AlreadyAuthenticated,
        ],
        "Ping" | "Logout" | "ListConversations" | "SetUserSettings" | "UnregisterPushTarget" => &[],
        "Revoke" => &[InvalidArgument, NotFound],
        "Send" => &[InvalidArgument, NotFound, Forbidden, Blocked],
        "SendFriendRequest" => &[InvalidArgument, NotFound, Forbidden],
        "AcceptFriendRequest"
        | "DeclineFriendRequest"
        | "CancelFriendRequest"
        | "RemoveFriend"
        | "BlockUser"
        | "UnblockUser" => &[InvalidArgument, NotFound],
        "ListContacts" => &[],
        "Ack" => &[InvalidArgument],
        "Sync" => &[InvalidArgument, CursorTrimmed],
        "Pull" => &[Forbidden, InvalidArgument, CursorTrimmed],
        "CreateGroup" => &[InvalidArgument, NotFound, ResourceExhausted],
        "AddMembers" => &[Forbidden, NotFound, InvalidArgument, ResourceExhausted],
        "RemoveMembers" => &[Forbidden, InvalidArgument],
        "LeaveGroup" | "ListMembers" | "Typing" | "DissolveGroup" => &[Forbidden],
        "MarkRead" | "ReceiptsQuery" | "SetConversationSettings" | "UpdateGroup" => {
            &[Forbidden, InvalidArgument]
        }
        "PresenceQuery" | "CreateChannel" | "ListChannels" | "RegisterPushTarget" => {
            &[InvalidArgument]
        }
        "GroupOnlineQuery" => &[Forbidden, ResourceExhausted],
        "SetMemberRole" | "TransferOwnership" => &[Forbidden, NotFound, InvalidArgument],
        "JoinChannel" => &[Forbidden, ResourceExhausted],
        "Edit" => &[
            Forbidden,
            NotFound,
            InvalidArgument,
            WindowExpired,
            ResourceExhausted,
        ],
        "Recall" => &[Forbidden, NotFound, InvalidArgument, WindowExpired],
        "DeleteForMe" => &[Forbidden, NotFound],
        "SetProfile" => &[InvalidArgument, NotFound],
        "GetProfiles" | "SearchUsers" => &[InvalidArgument],
        "SearchMessages" => &[InvalidArgument, Forbidden],
        "UploadBegin" => &[InvalidArgument, ResourceExhausted],
        "UploadChunk" | "UploadFinish" | "Download" | "GetBlobUrl" => &[InvalidArgument, NotFound],
        _ => return None,
    })
}

/// Requests allowed before login (every other request gets `UNAUTHENTICATED` then).
pub fn allowed_before_login(request: &str) -> bool {
    matches!(request, "Register" | "Login" | "Resume" | "Ping")
}

/// Whether the server may answer the body named `request` with `code`. A body that is
/// not a request may only get `UNKNOWN_REQUEST`.
pub fn may_answer(request: &str, code: ErrorCode) -> bool {
    match request_errors(request) {
        None => code == UnknownRequest,
        Some(own) => {
            own.contains(&code)
                || ANY_REQUEST.contains(&code)
                || (code == Unauthenticated && !allowed_before_login(request))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{BodyKind, FRAME_BODY_FIELDS};
    use std::collections::{BTreeSet, HashMap};

    /// `request name -> the cells of its row` of PROTOCOL.md's "Requests at a glance".
    fn protocol_table() -> HashMap<String, Vec<String>> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md");
        let text = std::fs::read_to_string(path).expect("docs/PROTOCOL.md");
        let start = text
            .find("### Requests at a glance")
            .expect("the table's heading");
        text[start..]
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2)
            .map(|line| {
                let cells: Vec<String> = line.split('|').map(|c| c.trim().to_string()).collect();
                (cells[1].trim_matches('`').to_string(), cells)
            })
            .collect()
    }

    /// The upper-case code names quoted in a cell (`NOT_FOUND` ...), ignoring other words.
    fn codes_in(cell: &str) -> BTreeSet<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .filter(|c| !c.is_empty() && c.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .map(str::to_string)
            .collect()
    }

    /// docs/PROTOCOL.md's request table has a row for every request body, and its Errors
    /// column names exactly the codes [`request_errors`] allows (each a real ErrorCode).
    #[test]
    fn the_protocol_table_lists_exactly_each_requests_error_codes() {
        let rows = protocol_table();
        for f in FRAME_BODY_FIELDS {
            if BodyKind::of_field_number(f.number) != Some(BodyKind::Request) {
                continue;
            }
            let row = rows.get(f.message).unwrap_or_else(|| {
                panic!("PROTOCOL.md's request table has no row for {}", f.message)
            });
            let allowed = request_errors(f.message).unwrap_or_else(|| {
                panic!("{} is a request but has no request_errors entry", f.message)
            });
            let in_text = codes_in(&row[4]);
            for code in &in_text {
                assert!(
                    ErrorCode::from_str_name(code).is_some(),
                    "{}: `{code}` is not an ErrorCode",
                    f.message
                );
            }
            let in_code: BTreeSet<String> = allowed
                .iter()
                .map(|c| c.as_str_name().to_string())
                .collect();
            assert_eq!(
                in_text, in_code,
                "{}: PROTOCOL.md's Errors column (left) and tern_proto::request_errors (right) differ",
                f.message
            );
        }
        for name in rows.keys() {
            assert!(
                request_errors(name).is_some(),
                "PROTOCOL.md's table has a row for {name}, which is not a request"
            );
        }
    }

    #[test]
    fn may_answer_covers_the_common_codes_and_unauthenticated() {
        assert!(may_answer("Send", Forbidden));
        assert!(may_answer("Send", Internal), "any request");
        assert!(may_answer("Send", Unauthenticated), "before login");
        assert!(
            !may_answer("Login", Unauthenticated),
            "allowed before login"
        );
        assert!(!may_answer("Send", WindowExpired));
        assert!(may_answer("MessagePush", UnknownRequest), "not a request");
        assert!(!may_answer("MessagePush", Forbidden));
    }
}
