//! Typing signals: transient, never stored, fanned out only to the members of the
//! conversation who are online now (the typist's own devices excluded), and ending by
//! themselves after [`TYPING_TTL_MS`] if no stop arrives. A user's "typing" in one
//! conversation is forwarded at most once per [`TYPING_MIN_GAP_MS`]; the repeats in
//! between are answered Ok and dropped, so a client that sends one per keystroke floods
//! nobody. A stop is always forwarded.

use std::collections::HashMap;
use std::sync::Mutex;

use tern_proto::pb;

use super::Presence;
use crate::delivery::fanout;
use crate::error::ServiceResult;

/// How long a "typing" lasts without a repeat.
pub(crate) const TYPING_TTL_MS: u64 = 6_000;
/// The shortest gap between two forwarded "typing" of one user in one conversation.
pub(crate) const TYPING_MIN_GAP_MS: u64 = 2_000;
/// Entries kept for the gap check; past it the oldest half is forgotten.
const TYPING_MEMORY: usize = 65_536;

/// When each (user, conversation) last had a "typing" forwarded.
#[derive(Default)]
pub(crate) struct TypingGate(Mutex<HashMap<(String, String), u64>>);

impl TypingGate {
    /// Whether a "typing" at `now` is forwarded (and if so, records it).
    fn admit(&self, user: &str, conv: &str, now: u64) -> bool {
        let mut m = self.0.lock().unwrap();
        let key = (user.to_string(), conv.to_string());
        if let Some(last) = m.get(&key) {
            if now < last + TYPING_MIN_GAP_MS {
                return false;
            }
        }
        if m.len() >= TYPING_MEMORY {
            let cutoff = now.saturating_sub(TYPING_TTL_MS);
            m.retain(|_, t| *t >= cutoff);
        }
        m.insert(key, now);
        true
    }

    fn forget(&self, user: &str, conv: &str) {
        self.0
            .lock()
            .unwrap()
            .remove(&(user.to_string(), conv.to_string()));
    }
}

impl Presence {
    /// `user` is typing (or stopped) in `conv`; returns whether it was forwarded.
    pub(crate) fn typing(&self, user: &str, conv: &str, typing: bool) -> ServiceResult<bool> {
        let st = self.convs.member(conv, user)?;
        let now = self.clock.now_ms();
        if typing && !self.typing_gate.admit(user, conv, now) {
            return Ok(false);
        }
        if !typing {
            self.typing_gate.forget(user, conv);
        }
        let online: Vec<String> = {
            let g = st.lock().unwrap();
            g.members
                .keys()
                .filter(|m| m.as_str() != user && self.router.is_online(m))
                .cloned()
                .collect()
        };
        fanout::typing(
            &*self.router,
            &pb::TypingEvent {
                conversation: conv.to_string(),
                user: user.to_string(),
                typing,
                expires_ms: if typing { now + TYPING_TTL_MS } else { now },
            },
            &online,
        );
        Ok(true)
    }
}
