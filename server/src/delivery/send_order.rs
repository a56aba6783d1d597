//! Send order under retries: a session's `Send`s are sequenced in the order they arrive,
//! so a pipelined run of messages keeps its order — unless one of them is refused with a
//! retryable error (rate limited, a store fault) while those behind it are accepted. The
//! client would then resend the refused one after the ones sent after it were stored.
//!
//! The fence closes that gap (PROTOCOL.md 8.2): once a `Send` of a session is refused
//! with a retryable code, every later `Send` of that session is refused too, with the
//! same error, until the client sends again one of the `Send`s the fence refused (by
//! `client_msg_id`). A client that resends its outbox from the oldest unacknowledged entry,
//! in order, after such a refusal (as the SDKs do) gets its messages stored in the order
//! it sent them. Any refused id reopens the fence, not only the first: a client may have
//! dropped the first for good (its TTL passed), and its next resend must not wait forever.
//!
//! Only this connection is fenced: a new connection starts open (the client resends its
//! whole outbox in order on it anyway). Nothing is stored.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::error::ServiceError;

/// Refused ids remembered per session; past it, a refused id is not remembered (its
/// resend is refused once more and remembered then). A client has at most `max_pending`
/// sends in flight, far below this.
const MAX_REMEMBERED: usize = 4096;

/// One session's fence (closed = some ids were refused).
#[derive(Default)]
pub struct SendFence {
    // Boxed: every connection carries a fence, nearly always open (8 bytes, not ~100).
    closed: Mutex<Option<Box<Closed>>>,
}

struct Closed {
    /// The ids refused since the fence closed.
    refused: HashSet<String>,
    /// The latest refusal's error: what a fenced Send is answered with.
    error: ServiceError,
}

impl SendFence {
    /// Whether a `Send` with `client_msg_id` may go on: an open fence passes everything;
    /// a closed one passes (and opens on) an id it refused, and refuses any other id
    /// with the error that closed it (so a client reads one cause, e.g. the store's
    /// fault, not a second one).
    pub fn admit(&self, client_msg_id: &str) -> Result<(), ServiceError> {
        let mut closed = self.closed.lock().unwrap();
        let Some(c) = closed.as_mut() else {
            return Ok(());
        };
        if c.refused.contains(client_msg_id) {
            *closed = None;
            return Ok(());
        }
        if c.refused.len() < MAX_REMEMBERED {
            c.refused.insert(client_msg_id.to_string());
        }
        Err(c.error.clone())
    }

    /// A `Send` was refused with `error`: a retryable code closes the fence.
    pub fn refused(&self, client_msg_id: &str, error: &ServiceError) {
        if !error.code.is_retryable() {
            return;
        }
        let mut closed = self.closed.lock().unwrap();
        let c = closed.get_or_insert_with(|| {
            Box::new(Closed {
                refused: HashSet::new(),
                error: error.clone(),
            })
        });
        c.error = error.clone();
        if c.refused.len() < MAX_REMEMBERED {
            c.refused.insert(client_msg_id.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use tern_proto::pb::ErrorCode;

    use super::*;

    fn err(code: ErrorCode) -> ServiceError {
        ServiceError::new(code, "no")
    }

    #[test]
    fn an_open_fence_passes_everything_and_permanent_refusals_keep_it_open() {
        let f = SendFence::default();
        f.refused("a", &err(ErrorCode::InvalidArgument));
        f.refused("b", &err(ErrorCode::Blocked));
        for id in ["a", "b", "c"] {
            assert!(f.admit(id).is_ok());
        }
    }

    #[test]
    fn after_a_retryable_refusal_only_a_refused_id_passes_and_reopens_the_fence() {
        let f = SendFence::default();
        f.refused("m1", &err(ErrorCode::RateLimited));
        // m2 and m3 were pipelined behind m1: refused, and remembered.
        let e = f.admit("m2").unwrap_err();
        assert_eq!(e.code, ErrorCode::RateLimited, "the same answer as m1");
        assert!(f.admit("m3").is_err());
        // The client resends from the oldest: m1 passes and the fence opens.
        assert!(f.admit("m1").is_ok());
        assert!(f.admit("m2").is_ok());
        assert!(f.admit("m3").is_ok());
    }

    #[test]
    fn a_client_that_dropped_the_first_refused_send_is_not_fenced_forever() {
        let f = SendFence::default();
        f.refused("m1", &err(ErrorCode::Internal));
        assert!(f.admit("m2").is_err());
        // m1's TTL passed on the client: it resends m2 first.
        assert!(f.admit("m2").is_ok());
        assert!(f.admit("m4").is_ok());
    }

    #[test]
    fn a_new_id_behind_a_closed_fence_passes_on_its_own_resend() {
        let f = SendFence::default();
        f.refused("m1", &err(ErrorCode::RateLimited));
        assert!(f.admit("new").is_err());
        assert!(f.admit("new").is_ok());
    }
}
