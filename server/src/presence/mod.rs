//! Presence: which devices of a user are online, how many members of a group are, and
//! who is typing ([`typing`]). Answered from the delivery router; nothing is stored.

pub(crate) mod typing;

use std::sync::Arc;

use tern_proto::pb;

use crate::clock::Clock;
use crate::conversations::ConvCache;
use crate::delivery::router::Router;
use crate::error::{ServiceError, ServiceResult};

/// Users one presence query may name.
const MAX_USERS_PER_QUERY: usize = 100;

pub struct Presence {
    convs: Arc<ConvCache>,
    router: Arc<dyn Router>,
    clock: Arc<dyn Clock>,
    typing_gate: typing::TypingGate,
}

impl Presence {
    pub(crate) fn new(
        convs: Arc<ConvCache>,
        router: Arc<dyn Router>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            convs,
            router,
            clock,
            typing_gate: typing::TypingGate::default(),
        }
    }

    pub fn presence(&self, users: &[String]) -> ServiceResult<pb::PresenceResult> {
        if users.len() > MAX_USERS_PER_QUERY {
            return Err(ServiceError::invalid(
                "at most 100 users per presence query",
            ));
        }
        Ok(pb::PresenceResult {
            users: users
                .iter()
                .map(|u| pb::UserPresence {
                    username: u.clone(),
                    online_devices: self.router.online_devices(u),
                })
                .collect(),
        })
    }

    pub fn group_online(&self, user: &str, conv: &str) -> ServiceResult<pb::GroupOnlineResult> {
        let st = self.convs.member(conv, user)?;
        let g = st.lock().unwrap();
        Ok(pb::GroupOnlineResult {
            conversation: conv.to_string(),
            members: g.members.len() as u32,
            online_members: g
                .members
                .keys()
                .filter(|u| self.router.is_online(u))
                .count() as u32,
        })
    }
}

#[cfg(test)]
mod tests;
