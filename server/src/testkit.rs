//! Test wiring for domain unit tests: the domains over the in-memory store (or any
//! store), a manual clock and a router that records what it is given. No sockets.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tern_proto::pb;
use tokio::sync::oneshot;

use crate::accounts::credentials::HashCost;
use crate::accounts::devices::Devices;
use crate::accounts::Accounts;
use crate::changes::Changes;
use crate::clock::ManualClock;
use crate::config::MessageLimits;
use crate::conversations::ConvCache;
use crate::conversations::Conversations;
use crate::delivery::durability::Durability;
use crate::delivery::router::Router;
use crate::error::ServiceResult;
use crate::groups::Groups;
use crate::messages::{AckInfo, Messages};
use crate::presence::Presence;
use crate::receipts::Receipts;
use crate::sequencer::LocalSequencer;
use crate::store::{MemoryStore, Store, UserRecord};

/// A router that records what it was given and says everyone in `online` is online.
#[derive(Default)]
pub(crate) struct Recorder {
    pub(crate) online: Mutex<Vec<String>>,
    pub(crate) delivered: Mutex<Vec<(String, Bytes)>>,
}

impl Recorder {
    /// What was delivered so far, decoded: (user, frame body).
    pub(crate) fn bodies(&self) -> Vec<(String, tern_proto::Body)> {
        self.delivered
            .lock()
            .unwrap()
            .iter()
            .map(|(to, f)| {
                let frame = tern_proto::codec::decode_frame(&mut f.as_ref().into(), 1 << 20)
                    .expect("a whole frame")
                    .expect("one frame")
                    .expect("a valid Frame");
                (to.clone(), frame.body.expect("a body"))
            })
            .collect()
    }
}

impl Router for Recorder {
    fn deliver(&self, user: &str, frame: &Bytes) -> usize {
        self.delivered
            .lock()
            .unwrap()
            .push((user.to_string(), frame.clone()));
        1
    }
    fn is_online(&self, user: &str) -> bool {
        self.online.lock().unwrap().iter().any(|u| u == user)
    }
    fn online_devices(&self, user: &str) -> Vec<String> {
        if self.is_online(user) {
            vec!["d".into()]
        } else {
            vec![]
        }
    }
}

pub(crate) struct World {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) seq: Arc<LocalSequencer>,
    pub(crate) convs: Arc<ConvCache>,
    pub(crate) messages: Arc<Messages>,
    pub(crate) changes: Changes,
    pub(crate) groups: Groups,
    pub(crate) conversations: Conversations,
    pub(crate) receipts: Receipts,
    pub(crate) presence: Presence,
    pub(crate) accounts: Accounts,
    pub(crate) router: Arc<Recorder>,
    pub(crate) clock: Arc<ManualClock>,
    stop: tokio_util::sync::CancellationToken,
    flusher: tokio::task::JoinHandle<()>,
}

pub(crate) const LIMITS: MessageLimits = MessageLimits {
    fanout_threshold: 500,
    max_group_members: 1000,
    max_frame_bytes: 1 << 20,
    edit_window_ms: 48 * 3600 * 1000,
    recall_window_ms: 120 * 1000,
    max_ttl_secs: 7 * 24 * 3600,
    friends_only_dm: false,
};

/// The domains over `store`, with caches of the given sizes.
pub(crate) fn world_on(store: Arc<dyn Store>, conv_cache: usize, head_cache: usize) -> World {
    let durability = Durability::new(store.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let flusher = tokio::spawn(durability.clone().run(stop.clone()));
    let seq = Arc::new(LocalSequencer::with_head_cache(
        store.clone(),
        durability,
        head_cache,
    ));
    let convs = Arc::new(ConvCache::with_capacity(store.clone(), conv_cache));
    let router = Arc::new(Recorder::default());
    let clock = ManualClock::new(1_000_000);
    let push = Arc::new(crate::push::Push::new(
        store.clone(),
        seq.clone(),
        router.clone(),
        clock.clone(),
        crate::push::PushConfig::off(),
    ));
    let messages = Arc::new(Messages::new(
        store.clone(),
        seq.clone(),
        convs.clone(),
        router.clone(),
        clock.clone(),
        LIMITS,
        push.clone(),
    ));
    let groups = Groups::new(store.clone(), convs.clone(), messages.clone(), LIMITS);
    let changes = Changes::new(
        store.clone(),
        convs.clone(),
        messages.clone(),
        seq.clone(),
        router.clone(),
        clock.clone(),
        LIMITS,
    );
    let conversations = Conversations::new(
        store.clone(),
        convs.clone(),
        seq.clone(),
        router.clone(),
        clock.clone(),
    );
    let receipts = Receipts::new(store.clone(), convs.clone(), seq.clone(), router.clone());
    let presence = Presence::new(
        store.clone(),
        convs.clone(),
        router.clone(),
        clock.clone(),
        std::time::Duration::from_secs(2),
    );
    let accounts = Accounts::new(
        store.clone(),
        seq.clone(),
        Arc::new(Devices::new(store.clone())),
        clock.clone(),
        3600,
        300,
        // The cheapest argon2id: these tests are about rules, not hashing cost.
        HashCost {
            memory_kib: 8,
            iterations: 1,
        },
    );
    World {
        store,
        seq,
        convs,
        messages,
        changes,
        groups,
        conversations,
        receipts,
        presence,
        accounts,
        router,
        clock,
        stop,
        flusher,
    }
}

impl World {
    /// The domains over a fresh in-memory store.
    pub(crate) fn new() -> Self {
        world_on(Arc::new(MemoryStore::new()), 1024, 1024)
    }

    /// Creates users (records only, no password).
    pub(crate) fn users(&self, names: &[&str]) {
        for u in names {
            self.store.put_user(u, &UserRecord::default()).unwrap();
        }
    }

    /// Sends `cmid` from `from` to the 1:1 conversation with `to`; waits for the ack.
    pub(crate) async fn send(&self, from: &str, to: &str, cmid: &str) -> ServiceResult<AckInfo> {
        let (tx, rx) = oneshot::channel();
        let req = pb::Send {
            client_msg_id: cmid.into(),
            peer: to.into(),
            body: cmid.as_bytes().to_vec().into(),
            ..Default::default()
        };
        self.messages.send(
            from,
            "d",
            req,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        rx.await.unwrap()
    }

    /// Runs a send-like call (Send, Edit, Recall) and waits for its ack.
    pub(crate) async fn acked(
        &self,
        call: impl FnOnce(crate::messages::AckCallback) -> ServiceResult<()>,
    ) -> ServiceResult<AckInfo> {
        let (tx, rx) = oneshot::channel();
        call(Box::new(move |r| {
            let _ = tx.send(r);
        }))?;
        rx.await.unwrap()
    }

    /// Stops the flusher (after draining it).
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        self.flusher.await.unwrap();
    }
}
