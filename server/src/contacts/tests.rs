//! The contact rules without I/O.

use tern_proto::pb::{ContactEventKind as Ev, ContactState as S, ErrorCode};

use super::{plan, Op, MAX_REQUEST_MESSAGE};

fn code(op: Op, mine: Option<S>, theirs: Option<S>) -> ErrorCode {
    plan("bob", &op, mine, theirs, 1).unwrap_err().code
}

#[test]
fn a_request_writes_both_sides_and_an_event() {
    let p = plan("bob", &Op::Request("hi".into()), None, None, 7).unwrap();
    let mine = p.mine.unwrap().unwrap();
    let theirs = p.theirs.unwrap().unwrap();
    assert_eq!(
        (mine.state, mine.message.as_str()),
        (S::Outgoing as i32, "hi")
    );
    assert_eq!((theirs.state, theirs.since_ms), (S::Incoming as i32, 7));
    assert_eq!(p.event, Some((Ev::Requested, "hi".to_string())));
}

#[test]
fn asking_back_accepts() {
    let p = plan(
        "bob",
        &Op::Request(String::new()),
        Some(S::Incoming),
        Some(S::Outgoing),
        1,
    );
    let p = p.unwrap();
    assert_eq!(p.mine.unwrap().unwrap().state, S::Friend as i32);
    assert_eq!(p.event.unwrap().0, Ev::Accepted);
}

#[test]
fn bad_requests_get_their_codes() {
    let req = || Op::Request(String::new());
    assert_eq!(
        code(req(), Some(S::Friend), Some(S::Friend)),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(req(), Some(S::Outgoing), Some(S::Incoming)),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(req(), Some(S::BlockedUser), None),
        ErrorCode::Forbidden
    );
    // Blocked by them: the answer a request to an unknown user gets.
    let e = plan("bob", &req(), None, Some(S::BlockedUser), 1).unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (ErrorCode::NotFound, "no user bob")
    );
    let long = Op::Request("x".repeat(MAX_REQUEST_MESSAGE + 1));
    assert_eq!(code(long, None, None), ErrorCode::InvalidArgument);
    assert_eq!(code(Op::Accept, None, None), ErrorCode::NotFound);
    assert_eq!(
        code(Op::Accept, Some(S::Outgoing), None),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(Op::Decline, Some(S::Friend), None),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(Op::Cancel, Some(S::Incoming), None),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(Op::Remove, Some(S::Outgoing), None),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(Op::Unblock, Some(S::Friend), None),
        ErrorCode::NotFound
    );
}

#[test]
fn ending_a_relation_deletes_both_sides() {
    for (op, mine, kind) in [
        (Op::Decline, S::Incoming, Ev::Declined),
        (Op::Cancel, S::Outgoing, Ev::Canceled),
        (Op::Remove, S::Friend, Ev::Removed),
    ] {
        let p = plan("bob", &op, Some(mine), None, 1).unwrap();
        assert_eq!((p.mine, p.theirs), (Some(None), Some(None)), "{op:?}");
        assert_eq!(p.event.unwrap().0, kind);
    }
}

#[test]
fn a_block_ends_the_relation_like_an_ordinary_change_and_keeps_their_block() {
    let p = plan("bob", &Op::Block, Some(S::Friend), Some(S::Friend), 1).unwrap();
    assert_eq!(p.mine.unwrap().unwrap().state, S::BlockedUser as i32);
    assert_eq!(p.theirs, Some(None));
    assert_eq!(p.event.unwrap().0, Ev::Removed);
    let p = plan("bob", &Op::Block, None, Some(S::BlockedUser), 1).unwrap();
    assert_eq!(p.theirs, None, "their own block stays");
    assert_eq!(p.event, None, "nothing the blocked user could see");
    let p = plan("bob", &Op::Block, Some(S::BlockedUser), None, 1).unwrap();
    assert_eq!((p.mine, p.theirs, p.event), (None, None, None));
    let p = plan("bob", &Op::Unblock, Some(S::BlockedUser), None, 1).unwrap();
    assert_eq!((p.mine, p.event), (Some(None), None));
}
