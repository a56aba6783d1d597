//! Online/offline pushes: when a user's first device comes online or their last device
//! goes offline, the people who share a direct conversation with them and are online get
//! a `PresenceEvent`. Nobody subscribes; nothing is stored.
//!
//! A member of a group may also watch its members for a while (`GroupOnlineQuery.watch`,
//! [`WATCH_FOR`], renewed by asking again): they hear of every member's change the same
//! way, as long as they are still a member.
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

/// How long a group watch lasts without being renewed.
pub(crate) const WATCH_FOR: Duration = Duration::from_secs(600);
/// Groups one user may watch at once.
pub(crate) const MAX_WATCHES_PER_USER: usize = 64;

#[derive(Default)]
pub(crate) struct Announcer {
    /// User -> when to look at them (one entry however often they flap meanwhile).
    pending: Mutex<HashMap<String, Instant>>,
    /// Users last announced as online (absent: offline, the start state).
    announced: Mutex<HashSet<String>>,
    /// Group -> the users watching its members' presence, each until a deadline.
    watches: Mutex<HashMap<String, HashMap<String, Instant>>>,
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
        let convs = match self.store.user_conversations(user) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(%user, error = %e, "presence: cannot read the user's conversations");
                return;
            }
        };
        let now = Instant::now();
        let mut peers: HashSet<String> = HashSet::new();
        {
            let watches = self.announcer.watches.lock().unwrap();
            for id in &convs {
                match parse_conversation(id) {
                    Ok(ConvId::Direct(a, b)) => {
                        peers.insert(if a == user { b } else { a });
                    }
                    _ => {
                        let Some(w) = watches.get(id) else { continue };
                        // Only watchers who are still members hear of it.
                        let Ok(st) = self.convs.get(id) else { continue };
                        let g = st.lock().unwrap();
                        peers.extend(
                            w.iter()
                                .filter(|(u, until)| **until > now && g.members.contains_key(*u))
                                .map(|(u, _)| u.clone()),
                        );
                    }
                }
            }
        }
        let mut peers: Vec<String> = peers
            .into_iter()
            .filter(|p| p != user && self.router.is_online(p) && !self.hidden_from(user, p))
            .collect();
        peers.sort();
        if !peers.is_empty() {
            fanout::presence(&*self.router, user, online, self.clock.now_ms(), &peers);
        }
    }
}

impl Presence {
    /// `user` (a member of `conv`: checked by the caller) watches the presence of `conv`'s
    /// members until `WATCH_FOR` from now, or stops watching.
    pub(crate) fn watch_group(
        &self,
        user: &str,
        conv: &str,
        watch: bool,
    ) -> crate::error::ServiceResult<()> {
        let now = Instant::now();
        let mut watches = self.announcer.watches.lock().unwrap();
        // Forget what has lapsed, so the map holds only live watches.
        watches.retain(|_, w| {
            w.retain(|_, until| *until > now);
            !w.is_empty()
        });
        if !watch {
            if let Some(w) = watches.get_mut(conv) {
                w.remove(user);
            }
            return Ok(());
        }
        let already = watches.get(conv).is_some_and(|w| w.contains_key(user));
        let count = watches.values().filter(|w| w.contains_key(user)).count();
        if !already && count >= MAX_WATCHES_PER_USER {
            return Err(crate::error::ServiceError::new(
                tern_proto::pb::ErrorCode::ResourceExhausted,
                format!("at most {MAX_WATCHES_PER_USER} groups watched at once"),
            ));
        }
        watches
            .entry(conv.to_string())
            .or_default()
            .insert(user.to_string(), now + WATCH_FOR);
        Ok(())
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
