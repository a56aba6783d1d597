//! Presence: which devices of a user are online, how many members of a group are, who
//! is typing ([`typing`]), and online/offline pushes to direct peers ([`announce`]).
//! Answered from the delivery router; nothing is stored.

pub(crate) mod announce;
pub(crate) mod typing;

use std::sync::Arc;

use tern_proto::pb;

use crate::clock::Clock;
use crate::conversations::ConvCache;
use crate::delivery::router::Router;
use crate::error::{ServiceError, ServiceResult};
use crate::store::Store;

/// Users one presence query may name.
const MAX_USERS_PER_QUERY: usize = 100;

pub struct Presence {
    store: Arc<dyn Store>,
    convs: Arc<ConvCache>,
    router: Arc<dyn Router>,
    clock: Arc<dyn Clock>,
    typing_gate: typing::TypingGate,
    announcer: announce::SharedAnnouncer,
    /// How long an online/offline change must hold before it is announced.
    settle: std::time::Duration,
}

impl Presence {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        convs: Arc<ConvCache>,
        router: Arc<dyn Router>,
        clock: Arc<dyn Clock>,
        settle: std::time::Duration,
    ) -> Self {
        Self {
            store,
            convs,
            router,
            clock,
            typing_gate: typing::TypingGate::default(),
            announcer: Default::default(),
            settle,
        }
    }

    /// `user` blocked `viewer`: `viewer` sees `user` offline everywhere (queries, pushes,
    /// group counts). A store error hides nothing (presence is not durable data).
    pub(crate) fn hidden_from(&self, user: &str, viewer: &str) -> bool {
        matches!(
            self.store.contact(user, viewer),
            Ok(Some(r)) if r.state == pb::ContactState::BlockedUser as i32
        )
    }

    /// The presence of `users` as `asker` may see it.
    pub fn presence(&self, asker: &str, users: &[String]) -> ServiceResult<pb::PresenceResult> {
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
                    online_devices: if self.hidden_from(u, asker) {
                        Default::default()
                    } else {
                        self.router.online_devices(u)
                    },
                })
                .collect(),
        })
    }

    /// The group's online count; with `watch`/`unwatch`, also starts (renews) or stops
    /// the caller's watch of its members' presence ([`announce`]).
    pub fn group_online(
        &self,
        user: &str,
        conv: &str,
        watch: bool,
        unwatch: bool,
    ) -> ServiceResult<pb::GroupOnlineResult> {
        let st = self.convs.member(conv, user)?;
        if watch || unwatch {
            self.watch_group(user, conv, watch && !unwatch)?;
        }
        let g = st.lock().unwrap();
        Ok(pb::GroupOnlineResult {
            conversation: conv.to_string(),
            members: g.members.len() as u32,
            online_members: g
                .members
                .keys()
                .filter(|u| self.router.is_online(u) && !self.hidden_from(u, user))
                .count() as u32,
        })
    }
}

#[cfg(test)]
mod tests;
