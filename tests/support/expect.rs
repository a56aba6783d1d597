//! Assertions on what the server answered: each returns the part a test goes on with, or
//! panics naming what came instead.

use tern_proto::pb::{self, ErrorCode};
use tern_proto::{Body, Frame};

/// The SendAck in a response, or a panic naming what came instead.
pub fn ack_of(f: &Frame) -> pb::SendAck {
    match &f.body {
        Some(Body::SendAck(a)) => a.clone(),
        other => panic!("expected SendAck, got {other:?}"),
    }
}

/// Asserts the frame is an Error with `code`; returns its message.
pub fn expect_error(f: &Frame, code: ErrorCode) -> String {
    match &f.body {
        Some(Body::Error(e)) => {
            assert_eq!(
                e.code,
                code as i32,
                "expected {code:?}, got {:?}: {}",
                ErrorCode::try_from(e.code),
                e.message
            );
            assert!(!e.message.is_empty(), "errors carry a message");
            e.message.clone()
        }
        other => panic!("expected Error {code:?}, got {other:?}"),
    }
}

/// A message's body as text.
pub fn text(m: &pb::Message) -> String {
    String::from_utf8_lossy(&m.body).into_owned()
}

/// The payload of a `Body::$variant` frame (cloned), or a panic naming what came instead:
/// `let r = expect_body!(c.request(..).await, MemberList);`.
#[macro_export]
macro_rules! expect_body {
    ($frame:expr, $variant:ident) => {{
        let frame: &$crate::tern_proto::Frame = &$frame;
        match &frame.body {
            Some($crate::tern_proto::Body::$variant(x)) => x.clone(),
            other => panic!(
                concat!("expected ", stringify!($variant), ", got {:?}"),
                other
            ),
        }
    }};
}

/// The PullResult in a response, or a panic naming what came instead.
pub fn expect_pull(f: &Frame) -> pb::PullResult {
    crate::expect_body!(f, PullResult)
}

/// Asserts the frame is `Ok`.
pub fn expect_ok(f: &Frame) {
    crate::expect_body!(f, Ok);
}
