//! Presence: which devices of a user are online, and how many members of a group are.
//! Answered from the delivery router (never stored).

use std::sync::Arc;

use tern_proto::pb;

use crate::conversations::ConvCache;
use crate::delivery::router::Router;
use crate::error::{ServiceError, ServiceResult};

/// Users one presence query may name.
const MAX_USERS_PER_QUERY: usize = 100;

pub struct Presence {
    convs: Arc<ConvCache>,
    router: Arc<dyn Router>,
}

impl Presence {
    pub fn new(convs: Arc<ConvCache>, router: Arc<dyn Router>) -> Self {
        Self { convs, router }
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
