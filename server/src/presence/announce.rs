//! Online/offline pushes: when a user's first device comes online or their last device
//! goes offline, the people who share a direct conversation with them and are online get
//! a `PresenceEvent`. Nobody subscribes; nothing is stored.
//!
//! Coalesced so a flapping mobile connection floods nobody: a change is looked at only
//! after it has settled for `settle` (the `presence_settle_ms` setting), and then only
//! the state at that moment is compared with the last one announced. A phone that drops
//! and comes back within the settle time announces nothing; one that flaps for a minute
//! announces at most one change per settle time.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Presence;
use crate::conversations::id::{parse_conversation, ConvId};
use crate::delivery::fanout;
use crate::delivery::hub::PresenceListener;

/// Users waiting to be looked at; past it new changes are not announced (a server whose
/// announcer is not running, such as the fuzz target, stays bounded).
const MAX_PENDING: usize = 1 << 20;

#[derive(Default)]
pub(crate) struct Announcer {
    /// User -> when to look at them (one entry however often they flap meanwhile).
    pending: Mutex<HashMap<String, Instant>>,
    /// Users last announced as online (absent: offline, the start state).
    announced: Mutex<HashSet<String>>,
}

impl Presence {
    /// What the session registry calls on each online/offline change.
    pub(crate) fn presence_listener(&self) -> PresenceListener {
        let announcer = self.announcer.clone();
        let settle = self.settle;
        Box::new(move |user: &str| announcer.changed(user, Instant::now() + settle))
    }

    /// Announces settled changes until `stop`.
    pub async fn run_announcer(&self, stop: CancellationToken) {
        let tick = (self.settle / 4).max(Duration::from_millis(20));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            self.announce_due(Instant::now());
        }
    }

    /// Announces every pending user whose settle time has passed at `now` and whose
    /// state differs from the one last announced.
    pub(crate) fn announce_due(&self, now: Instant) {
        let due: Vec<String> = {
            let mut pending = self.announcer.pending.lock().unwrap();
            let due = pending
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(u, _)| u.clone())
                .collect::<Vec<_>>();
            for u in &due {
                pending.remove(u);
            }
            due
        };
        for user in due {
            let online = self.router.is_online(&user);
            let changed = {
                let mut announced = self.announcer.announced.lock().unwrap();
                if online {
                    announced.insert(user.clone())
                } else {
                    announced.remove(&user)
                }
            };
            if changed {
                self.announce(&user, online);
            }
        }
    }

    fn announce(&self, user: &str, online: bool) {
        let peers = match self.store.user_conversations(user) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(%user, error = %e, "presence: cannot read the user's conversations");
                return;
            }
        };
        let peers: Vec<String> = peers
            .iter()
            .filter_map(|id| match parse_conversation(id) {
                Ok(ConvId::Direct(a, b)) => Some(if a == user { b } else { a }),
                _ => None,
            })
            .filter(|p| p != user && self.router.is_online(p))
            .collect();
        if !peers.is_empty() {
            fanout::presence(&*self.router, user, online, self.clock.now_ms(), &peers);
        }
    }
}

impl Announcer {
    fn changed(&self, user: &str, at: Instant) {
        let mut pending = self.pending.lock().unwrap();
        if pending.len() < MAX_PENDING || pending.contains_key(user) {
            pending.entry(user.to_string()).or_insert(at);
        }
    }
}

/// Shared by the registry's listener and the announcer task.
pub(crate) type SharedAnnouncer = Arc<Announcer>;
