//! The registry of live sessions: user -> the sessions of that user's online devices.
//!
//! Sharded by user so registering, looking up and fanning out never contend on one lock;
//! each lock is held only to clone a few `Arc`s (never across an `.await`). The hub is the
//! local [`Router`]: domains reach it only through that trait.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tern_proto::pb::CloseReason;
use tokio_util::sync::CancellationToken;

use super::router::Router;
use super::send_order::SendFence;
use super::send_queue::{PushError, SendQueue};

const SHARDS: usize = 32;

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

/// The part of a session other tasks may touch: its outbound queue and its close switch.
pub struct SessionHandle {
    pub id: u64,
    /// (user, device), set once at login.
    identity: OnceLock<(String, String)>,
    queue: Arc<SendQueue>,
    close: CancellationToken,
    reason: OnceLock<(CloseReason, String)>,
    /// Keeps this connection's `Send`s in order across retryable refusals.
    pub send_fence: SendFence,
}

impl SessionHandle {
    /// A handle for a new, not yet authenticated connection.
    pub fn new(queue: Arc<SendQueue>) -> Arc<Self> {
        Arc::new(Self {
            id: NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed),
            identity: OnceLock::new(),
            queue,
            close: CancellationToken::new(),
            reason: OnceLock::new(),
            send_fence: SendFence::default(),
        })
    }

    /// Sets who this session is; once.
    pub fn set_identity(&self, user: &str, device: &str) -> bool {
        self.identity
            .set((user.to_string(), device.to_string()))
            .is_ok()
    }

    pub fn user(&self) -> &str {
        self.identity.get().map(|(u, _)| u.as_str()).unwrap_or("")
    }

    pub fn device(&self) -> &str {
        self.identity.get().map(|(_, d)| d.as_str()).unwrap_or("")
    }

    /// Queues an encoded frame without waiting. A full queue means the device cannot keep
    /// up: it is disconnected (it will resume and sync) instead of slowing anyone else.
    pub fn push(&self, frame: Bytes) -> bool {
        match self.queue.push(frame) {
            Ok(()) => {
                crate::metrics::get().frames_out.inc();
                true
            }
            Err(PushError::Full) => {
                crate::metrics::get().slow_consumer_disconnects.inc();
                self.close(
                    CloseReason::SlowConsumer,
                    "outbound queue full; resume and sync",
                );
                false
            }
            Err(PushError::Closed) => false,
        }
    }

    /// Asks the session to close with a reason (the first reason wins).
    pub fn close(&self, reason: CloseReason, message: &str) {
        let _ = self.reason.set((reason, message.to_string()));
        self.close.cancel();
    }

    pub fn close_reason(&self) -> Option<&(CloseReason, String)> {
        self.reason.get()
    }

    pub async fn closed(&self) {
        self.close.cancelled().await
    }

    #[cfg(test)]
    fn is_closed(&self) -> bool {
        self.close.is_cancelled()
    }
}

/// Told the name of a user whose first device came online or whose last device went
/// offline (called under the registry's lock: it must be quick and must not call back).
pub(crate) type PresenceListener = Box<dyn Fn(&str) + Send + Sync>;

#[derive(Default)]
pub struct Hub {
    shards: Vec<Mutex<HashMap<String, Vec<Arc<SessionHandle>>>>>,
    presence_listener: std::sync::OnceLock<PresenceListener>,
}

impl Hub {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            presence_listener: std::sync::OnceLock::new(),
        }
    }

    /// Sets who hears of online/offline changes (once; later calls are ignored).
    pub fn set_presence_listener(&self, listener: PresenceListener) {
        let _ = self.presence_listener.set(listener);
    }

    fn presence_changed(&self, user: &str) {
        if let Some(l) = self.presence_listener.get() {
            l(user);
        }
    }

    fn shard(&self, user: &str) -> &Mutex<HashMap<String, Vec<Arc<SessionHandle>>>> {
        let mut h = DefaultHasher::new();
        user.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    /// Registers an authenticated session. A device has one session: of two, the one
    /// whose connection started later (the higher id) stays. Returns the session that
    /// must close as replaced: the device's previous one, or `session` itself when the
    /// device already has a session from a newer connection. So a Login/Resume that
    /// arrives late on a stale connection (held up in the network while the client
    /// reconnected and resumed) cannot evict the connection the device uses now.
    pub fn register(&self, session: Arc<SessionHandle>) -> Option<Arc<SessionHandle>> {
        let mut map = self.shard(session.user()).lock().unwrap();
        let list = map.entry(session.user().to_string()).or_default();
        match list.iter().position(|s| s.device() == session.device()) {
            Some(i) if list[i].id > session.id => Some(session),
            Some(i) => Some(std::mem::replace(&mut list[i], session)),
            None => {
                let first = list.is_empty();
                let user = session.user().to_string();
                list.push(session);
                if first {
                    self.presence_changed(&user);
                }
                None
            }
        }
    }

    /// Removes the session if it is still the registered one.
    pub fn unregister(&self, session: &SessionHandle) {
        let user = session.user();
        let mut map = self.shard(user).lock().unwrap();
        if let Some(list) = map.get_mut(user) {
            list.retain(|s| s.id != session.id);
            if list.is_empty() {
                map.remove(user);
                self.presence_changed(user);
            }
        }
    }

    /// Every user with a live session, sorted (a snapshot; for operators).
    pub fn online_users(&self) -> Vec<String> {
        let mut users: Vec<String> = self
            .shards
            .iter()
            .flat_map(|s| s.lock().unwrap().keys().cloned().collect::<Vec<_>>())
            .collect();
        users.sort();
        users
    }

    /// The user's live sessions (a snapshot).
    pub fn sessions(&self, user: &str) -> Vec<Arc<SessionHandle>> {
        self.shard(user)
            .lock()
            .unwrap()
            .get(user)
            .cloned()
            .unwrap_or_default()
    }

    /// Queues `frame` to every live session of `user`; returns how many took it.
    pub fn push_to_user(&self, user: &str, frame: &Bytes) -> usize {
        let n = self
            .sessions(user)
            .iter()
            .filter(|s| s.push(frame.clone()))
            .count();
        crate::metrics::get().pushes.inc_by(n as u64);
        n
    }

    pub fn online_devices(&self, user: &str) -> Vec<String> {
        let mut d: Vec<String> = self
            .sessions(user)
            .iter()
            .map(|s| s.device().to_string())
            .collect();
        d.sort();
        d
    }

    pub fn is_online(&self, user: &str) -> bool {
        self.shard(user).lock().unwrap().contains_key(user)
    }
}

impl Router for Hub {
    fn deliver(&self, user: &str, frame: &Bytes) -> usize {
        self.push_to_user(user, frame)
    }
    fn is_online(&self, user: &str) -> bool {
        Hub::is_online(self, user)
    }
    fn online_devices(&self, user: &str) -> Vec<String> {
        Hub::online_devices(self, user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_device_replaces_other_devices_coexist() {
        let hub = Hub::new();
        let q = Arc::new(SendQueue::new(4, 1 << 20));
        let mk = |d: &str| {
            let s = SessionHandle::new(q.clone());
            assert!(s.set_identity("a", d));
            assert!(!s.set_identity("b", d), "identity is set once");
            s
        };
        let (a1, a2, a3) = (mk("phone"), mk("laptop"), mk("phone"));
        assert!(hub.register(a1.clone()).is_none());
        assert!(hub.register(a2).is_none());
        let old = hub.register(a3.clone()).unwrap();
        assert_eq!(old.id, a1.id);
        assert_eq!(hub.online_devices("a"), vec!["laptop", "phone"]);
        // Unregistering the replaced session must not remove its successor.
        hub.unregister(&a1);
        assert_eq!(hub.sessions("a").len(), 2);
        hub.unregister(&a3);
        assert_eq!(hub.online_devices("a"), vec!["laptop"]);
    }

    #[test]
    fn a_session_from_an_older_connection_never_evicts_a_newer_one() {
        let hub = Hub::new();
        let q = Arc::new(SendQueue::new(4, 1 << 20));
        let stale = SessionHandle::new(q.clone());
        let live = SessionHandle::new(q);
        assert!(stale.set_identity("a", "phone") && live.set_identity("a", "phone"));
        assert!(hub.register(live.clone()).is_none());
        // The stale connection's Resume arrives late: it is the one to close.
        let loser = hub.register(stale.clone()).unwrap();
        assert_eq!(loser.id, stale.id);
        let now: Vec<u64> = hub.sessions("a").iter().map(|s| s.id).collect();
        assert_eq!(now, vec![live.id]);
        hub.unregister(&stale);
        assert_eq!(hub.sessions("a").len(), 1);
    }

    #[test]
    fn full_queue_closes_the_slow_session() {
        let s = SessionHandle::new(Arc::new(SendQueue::new(1, 1 << 20)));
        assert!(s.push(Bytes::from_static(b"1")));
        assert!(!s.is_closed());
        assert!(!s.push(Bytes::from_static(b"2")));
        assert!(s.is_closed());
        assert_eq!(s.close_reason().unwrap().0, CloseReason::SlowConsumer);
    }
}
