//! What every session shares: the domain services, the session registry, the limits and
//! the shutdown switch, built from the config over a store. No sockets: the fuzz target
//! and the tests run sessions over in-memory streams with this.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::accounts::devices::Devices;
use crate::accounts::{credentials::HashCost, Accounts};
use crate::blobs::{BlobLimits, Blobs};
use crate::changes::Changes;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, SessionLimits};
use crate::contacts::Contacts;
use crate::conversations::{ConvCache, Conversations};
use crate::delivery::durability::Durability;
use crate::delivery::hub::Hub;
use crate::delivery::router::Router;
use crate::groups::Groups;
use crate::messages::cursors::Cursors;
use crate::messages::Messages;
use crate::presence::Presence;
use crate::profiles::Profiles;
use crate::push::{Push, PushConfig};
use crate::ratelimit::Limiter;
use crate::receipts::Receipts;
use crate::search::Search;
use crate::sequencer::{LocalSequencer, Sequencer};
use crate::store::Store;

pub struct Services {
    pub accounts: Accounts,
    pub messages: Arc<Messages>,
    pub changes: Changes,
    pub(crate) contacts: Contacts,
    pub cursors: Cursors,
    pub groups: Groups,
    pub conversations: Conversations,
    pub presence: Presence,
    pub receipts: Receipts,
    pub(crate) profiles: Profiles,
    /// History search: the index (opened by the app over the data dir) and its queries.
    pub(crate) search: Arc<Search>,
    /// Image and file blobs: uploads, downloads, signed URLs, the collector.
    pub(crate) blobs: Arc<Blobs>,
    /// Offline push: targets, the notification queue, the gateway worker.
    pub push: Arc<Push>,
    /// The local session registry (sessions register here; domains see it as a router).
    pub hub: Arc<Hub>,
    pub limits: SessionLimits,
    pub store_epoch: String,
    /// Cancelled when the server stops: sessions close with reason SHUTDOWN.
    pub shutdown: CancellationToken,
    pub limiter: Limiter,
    /// The retention rules the sweeper applies (docs/PROTOCOL.md 8.11).
    pub retention: crate::config::RetentionPolicy,
}

impl Services {
    /// Everything sessions share, over a store, on the system clock. The returned
    /// [`Durability`] must be run (its flusher) for writes to be acknowledged.
    pub fn new(config: &Config, store: Arc<dyn Store>) -> (Arc<Services>, Arc<Durability>) {
        Self::with_clock(config, store, Arc::new(SystemClock))
    }

    pub fn with_clock(
        config: &Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> (Arc<Services>, Arc<Durability>) {
        let durability = Durability::with_group_commit(store.clone(), config.store.group_commit);
        let local = Arc::new(LocalSequencer::new(store.clone(), durability.clone()));
        let sequencer: Arc<dyn Sequencer> = local.clone();
        let hub = Arc::new(Hub::new());
        let router: Arc<dyn Router> = hub.clone();
        let convs = Arc::new(ConvCache::new(store.clone()));
        let devices = Arc::new(Devices::new(store.clone()));
        let limits = config.message_limits();
        let push = Arc::new(Push::new(
            store.clone(),
            sequencer.clone(),
            router.clone(),
            clock.clone(),
            PushConfig::from_config(config),
        ));
        let blobs = Arc::new(Blobs::new(
            store.clone(),
            sequencer.clone(),
            convs.clone(),
            clock.clone(),
            BlobLimits {
                max_blob_bytes: config.blobs.max_blob_bytes,
                quota_bytes: config.blobs.blob_quota_bytes,
                grace_ms: config.blobs.blob_grace_secs.saturating_mul(1000),
                url_ttl_ms: config.blobs.blob_url_ttl_secs.saturating_mul(1000),
            },
            &config.store.data_dir,
        ));
        let messages = Arc::new(
            Messages::new(
                store.clone(),
                sequencer.clone(),
                convs.clone(),
                router.clone(),
                clock.clone(),
                limits.clone(),
                push.clone(),
            )
            .with_blobs(blobs.clone()),
        );
        let changes = Changes::new(
            store.clone(),
            convs.clone(),
            messages.clone(),
            sequencer.clone(),
            router.clone(),
            clock.clone(),
            limits.clone(),
        );
        let contacts = Contacts::new(
            store.clone(),
            convs.clone(),
            messages.clone(),
            sequencer.clone(),
            router.clone(),
            clock.clone(),
        );
        let search = Arc::new(Search::new(
            store.clone(),
            convs.clone(),
            sequencer.clone(),
            clock.clone(),
            config.search.clone(),
        ));
        local.set_tap(&(search.clone() as Arc<dyn crate::sequencer::DurableTap>));
        let services = Arc::new(Services {
            search,
            changes,
            contacts,
            accounts: Accounts::new(
                store.clone(),
                sequencer.clone(),
                devices.clone(),
                clock.clone(),
                config.accounts.token_ttl_secs,
                config.accounts.token_rotation_grace_secs,
                HashCost {
                    memory_kib: config.accounts.password_hash_memory_kib,
                    iterations: config.accounts.password_hash_iterations,
                },
            ),
            cursors: Cursors::new(devices, sequencer.clone()),
            groups: Groups::new(store.clone(), convs.clone(), messages.clone(), limits),
            conversations: Conversations::new(
                store.clone(),
                convs.clone(),
                sequencer.clone(),
                router.clone(),
                clock.clone(),
            ),
            receipts: Receipts::new(
                store.clone(),
                convs.clone(),
                sequencer.clone(),
                router.clone(),
            ),
            profiles: Profiles::new(
                store.clone(),
                sequencer,
                convs.clone(),
                router.clone(),
                clock.clone(),
            )
            .with_blobs(blobs.clone()),
            blobs,
            presence: Presence::new(
                store.clone(),
                convs,
                router,
                clock.clone(),
                std::time::Duration::from_millis(config.messages.presence_settle_ms),
            ),
            messages,
            push,
            hub,
            store_epoch: store.store_epoch(),
            shutdown: CancellationToken::new(),
            limits: config.session_limits(),
            limiter: Limiter::new(config.rate_limits()),
            retention: config.retention_policy(),
        });
        services
            .hub
            .set_presence_listener(services.presence.presence_listener());
        // The unread count of a notification: the conversation list's total (muted
        // conversations left out). Weak: the services own the push worker's state.
        let weak = Arc::downgrade(&services);
        services.push.set_unread(Box::new(move |user: String| {
            let weak = weak.clone();
            Box::pin(async move {
                let Some(svc) = weak.upgrade() else { return 0 };
                match svc.conversations.list(&user, 0, 1).await {
                    Ok(l) => l.total_unread,
                    Err(_) => 0,
                }
            })
        }));
        (services, durability)
    }
}
