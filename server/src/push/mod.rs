//! Offline push (docs/PUSH.md): devices that register a push target get a notification
//! through the operator's push gateway when a message arrives while they have no live
//! session.
//!
//! - Targets (`RegisterPushTarget`) are stored per device (`push_targets`) and kept in
//!   memory, loaded on first use.
//! - [`Push::plan`] decides, under the conversation's lock while a message is appended,
//!   which devices get a notification; the send path writes those queue entries
//!   (`push_queue`) in the message's own atomic batch, so a message that is durable has
//!   its notifications durable too (kill -9 loses none), and hands them to the worker once
//!   the batch is durable ([`Push::queued`]).
//! - [`worker`]: one task that sends each device's pending notifications to the gateway,
//!   one request at a time per device, coalescing what accumulated meanwhile into one
//!   notification with the latest unread count; retries with backoff and jitter; gives up
//!   past the configured age; removes targets the gateway rejects.
//! - [`gateway`]: the Matrix push gateway request and response (JSON over HTTP/1).
//!
//! Layer: beside `delivery` (it talks to the router and the store, never to a session);
//! the domains call it. The unread count comes from the conversations domain through a
//! function set by `services` ([`Push::set_unread`]).

pub(crate) mod gateway;
pub(crate) mod worker;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::Clock;
use crate::config::Config;
use crate::delivery::router::Router;
use crate::error::{ServiceError, ServiceResult};
use crate::sequencer::{BoxFuture, Sequencer};
use crate::store::{Mutation, PushEntry, PushQueueRecord, PushTarget, PushTargetRecord, Store};

/// The platforms a target may name.
pub(crate) const PLATFORMS: &[&str] = &["apns", "fcm", "webpush", "webhook"];
/// Longest token (pushkey) or endpoint URL.
pub(crate) const MAX_TOKEN: usize = 4096;

/// The push settings, from the config.
#[derive(Debug, Clone)]
pub(crate) struct PushConfig {
    /// None: push is off (nothing is queued).
    pub gateway: Option<hyper::Uri>,
    /// Extra CA (PEM) to trust for an https gateway.
    pub gateway_ca: Option<std::path::PathBuf>,
    pub app_id: String,
    pub max_age_ms: u64,
    pub timeout: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub interval: Duration,
}

impl PushConfig {
    pub(crate) fn from_config(c: &Config) -> Self {
        let p = &c.push;
        Self {
            // `Config::validate` rejected a bad URL before the server started.
            gateway: c.push_gateway().ok().flatten(),
            gateway_ca: p.push_gateway_ca.clone(),
            app_id: p.push_app_id.clone(),
            max_age_ms: p.push_max_age_secs.saturating_mul(1000),
            timeout: Duration::from_millis(p.push_timeout_ms.max(1)),
            retry_min: Duration::from_millis(p.push_retry_min_ms.max(1)),
            retry_max: Duration::from_millis(p.push_retry_max_ms.max(p.push_retry_min_ms).max(1)),
            interval: Duration::from_millis(p.push_interval_ms),
        }
    }

    /// Push off (domain tests).
    #[cfg(test)]
    pub(crate) fn off() -> Self {
        Self::from_config(&Config::default())
    }
}

/// The unread count of a user (all conversations that are not muted).
pub(crate) type UnreadFn = Box<dyn Fn(String) -> BoxFuture<'static, u64> + Send + Sync>;

/// What is known of a message when its notifications are planned.
pub(crate) struct Cause<'a> {
    pub conversation: &'a str,
    pub seq: u64,
    pub sender: &'a str,
    pub now_ms: u64,
    pub direct: bool,
    pub read_diffusion: bool,
    pub mentions: &'a [String],
    pub mention_all: bool,
}

/// One device's pending notifications (in memory; the store has the same entries).
#[derive(Default)]
pub(crate) struct DeviceQueue {
    /// (conversation, seq) -> entry.
    pub entries: BTreeMap<(String, u64), PushQueueRecord>,
    /// Failed attempts in a row.
    pub attempts: u32,
    /// Not sent before this (backoff after a failure, the interval after a success).
    pub not_before: Option<tokio::time::Instant>,
    pub in_flight: bool,
}

/// Offline push: the targets, the pending notifications and the worker's wake-up.
pub struct Push {
    store: Arc<dyn Store>,
    sequencer: Arc<dyn Sequencer>,
    router: Arc<dyn Router>,
    clock: Arc<dyn Clock>,
    config: PushConfig,
    /// user -> device -> target; None until first loaded from the store.
    targets: Mutex<Option<HashMap<String, BTreeMap<String, PushTargetRecord>>>>,
    /// (user, device) -> pending notifications.
    queue: Mutex<HashMap<(String, String), DeviceQueue>>,
    wake: Notify,
    unread: OnceLock<UnreadFn>,
}

impl Push {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        sequencer: Arc<dyn Sequencer>,
        router: Arc<dyn Router>,
        clock: Arc<dyn Clock>,
        config: PushConfig,
    ) -> Self {
        Self {
            store,
            sequencer,
            router,
            clock,
            config,
            targets: Mutex::new(None),
            queue: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            unread: OnceLock::new(),
        }
    }

    /// Whether a gateway is configured (otherwise nothing is queued).
    pub(crate) fn enabled(&self) -> bool {
        self.config.gateway.is_some()
    }

    pub(crate) fn set_unread(&self, f: UnreadFn) {
        let _ = self.unread.set(f);
    }

    /// Runs `f` over the targets, loading them from the store on first use.
    fn with_targets<T>(
        &self,
        f: impl FnOnce(&mut HashMap<String, BTreeMap<String, PushTargetRecord>>) -> T,
    ) -> ServiceResult<T> {
        let mut g = self.targets.lock().unwrap();
        if g.is_none() {
            let mut all: HashMap<String, BTreeMap<String, PushTargetRecord>> = HashMap::new();
            for t in self.store.push_targets()? {
                all.entry(t.user).or_default().insert(t.device, t.record);
            }
            *g = Some(all);
        }
        Ok(f(g.as_mut().expect("loaded above")))
    }

    /// The target of one device.
    pub(crate) fn target(
        &self,
        user: &str,
        device: &str,
    ) -> ServiceResult<Option<PushTargetRecord>> {
        self.with_targets(|t| t.get(user).and_then(|d| d.get(device)).cloned())
    }

    /// Sets the device's push target (replacing one it had). Durable before it returns.
    pub(crate) async fn register(
        &self,
        user: &str,
        device: &str,
        platform: &str,
        token: &str,
        include_preview: bool,
    ) -> ServiceResult<()> {
        if !PLATFORMS.contains(&platform) {
            return Err(ServiceError::invalid(format!(
                "platform must be one of {}",
                PLATFORMS.join(", ")
            )));
        }
        if token.is_empty() || token.len() > MAX_TOKEN {
            return Err(ServiceError::invalid(format!(
                "token must be 1-{MAX_TOKEN} characters"
            )));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ServiceError::invalid(
                "token must be printable ASCII without spaces",
            ));
        }
        let (user_epoch, device_epoch) = self.epochs(user, device)?;
        let record = PushTargetRecord {
            platform: platform.to_string(),
            token: token.to_string(),
            include_preview,
            registered_ms: self.clock.now_ms(),
            user_epoch,
            device_epoch,
        };
        self.with_targets(|t| -> ServiceResult<()> {
            // Under the targets lock, so two registrations land in the store and in memory
            // in the same order.
            self.store.commit(&[Mutation::PushTarget(PushTarget {
                user: user.to_string(),
                device: device.to_string(),
                record: record.clone(),
            })])?;
            t.entry(user.to_string())
                .or_default()
                .insert(device.to_string(), record);
            Ok(())
        })??;
        self.durable().await
    }

    /// The user's and the device's token epochs now.
    fn epochs(&self, user: &str, device: &str) -> ServiceResult<(u64, u64)> {
        let u = self.store.user(user)?.map_or(0, |r| r.token_epoch);
        let d = self
            .store
            .device(user, device)?
            .map_or(0, |r| r.token_epoch);
        Ok((u, d))
    }

    /// Whether the target's tokens were revoked since it was registered (Logout, Revoke,
    /// the admin API): such a target gets no more notifications and is removed.
    pub(crate) fn revoked(
        &self,
        user: &str,
        device: &str,
        t: &PushTargetRecord,
    ) -> ServiceResult<bool> {
        Ok(self.epochs(user, device)? != (t.user_epoch, t.device_epoch))
    }

    /// Removes the device's target (every device's when `device` is None) and their
    /// pending notifications, without waiting for durability (callers do).
    pub(crate) fn forget(&self, user: &str, device: Option<&str>) -> ServiceResult<()> {
        self.with_targets(|t| -> ServiceResult<()> {
            let devices: Vec<String> = match (t.get(user), device) {
                (None, _) => Vec::new(),
                (Some(d), None) => d.keys().cloned().collect(),
                (Some(d), Some(one)) => d
                    .contains_key(one)
                    .then(|| one.to_string())
                    .into_iter()
                    .collect(),
            };
            let mut muts: Vec<Mutation> = devices
                .iter()
                .map(|d| Mutation::DelPushTarget {
                    user: user.to_string(),
                    device: d.clone(),
                })
                .collect();
            // A device without a target may still have entries (queued before a rejection).
            let mut queue = self.queue.lock().unwrap();
            let keys: Vec<(String, String)> = queue
                .keys()
                .filter(|(u, d)| u == user && device.is_none_or(|one| one == d))
                .cloned()
                .collect();
            for k in keys {
                if let Some(q) = queue.remove(&k) {
                    muts.extend(del_mutations(&k.0, &k.1, q.entries.keys()));
                }
            }
            update_depth(&queue);
            drop(queue);
            if !muts.is_empty() {
                self.store.commit(&muts)?;
                self.sequencer.wrote();
            }
            if let Some(d) = t.get_mut(user) {
                match device {
                    None => d.clear(),
                    Some(one) => {
                        d.remove(one);
                    }
                }
                if d.is_empty() {
                    t.remove(user);
                }
            }
            Ok(())
        })?
    }

    /// Removes the device's target and pending notifications; durable before it returns.
    pub(crate) async fn unregister(&self, user: &str, device: &str) -> ServiceResult<()> {
        self.forget(user, Some(device))?;
        self.durable().await
    }

    async fn durable(&self) -> ServiceResult<()> {
        self.sequencer.wrote();
        self.sequencer.barrier().await
    }

    /// The notifications a new message causes: one entry per device of each recipient
    /// (not the sender) that has a push target and no live session, unless the recipient
    /// muted the conversation and is not mentioned. Read-diffusion groups notify only the
    /// users mentioned by name. The caller writes them in the message's batch and hands
    /// them to [`Push::queued`] once durable. Empty when push is off.
    pub(crate) fn plan(
        &self,
        cause: &Cause<'_>,
        recipients: &[String],
    ) -> ServiceResult<Vec<PushEntry>> {
        if !self.enabled() {
            return Ok(Vec::new());
        }
        let with_target: Vec<(String, Vec<String>)> = self.with_targets(|t| {
            recipients
                .iter()
                .filter(|u| u.as_str() != cause.sender)
                .filter_map(|u| t.get(u).map(|d| (u.clone(), d.keys().cloned().collect())))
                .collect()
        })?;
        let mut out = Vec::new();
        for (user, devices) in with_target {
            let named = cause.mentions.contains(&user);
            if cause.read_diffusion && !named {
                continue;
            }
            let mention = named || cause.mention_all;
            let online = self.router.online_devices(&user);
            let offline: Vec<String> = devices
                .into_iter()
                .filter(|d| !online.contains(d))
                .collect();
            if offline.is_empty() {
                continue;
            }
            if !mention
                && self
                    .store
                    .conversation_settings(&user, cause.conversation)?
                    .muted
            {
                continue;
            }
            for device in offline {
                out.push(PushEntry {
                    user: user.clone(),
                    device,
                    conversation: cause.conversation.to_string(),
                    seq: cause.seq,
                    record: PushQueueRecord {
                        sender: cause.sender.to_string(),
                        enqueued_ms: cause.now_ms,
                        mention,
                        direct: cause.direct,
                    },
                });
            }
        }
        Ok(out)
    }

    /// Entries now durable in the store: the worker picks them up.
    pub(crate) fn queued(&self, entries: Vec<PushEntry>) {
        if entries.is_empty() {
            return;
        }
        crate::metrics::get()
            .push_queued
            .inc_by(entries.len() as u64);
        self.add(entries);
        self.wake.notify_one();
    }

    fn add(&self, entries: Vec<PushEntry>) {
        let mut queue = self.queue.lock().unwrap();
        for e in entries {
            queue
                .entry((e.user, e.device))
                .or_default()
                .entries
                .insert((e.conversation, e.seq), e.record);
        }
        update_depth(&queue);
    }

    /// Pending notifications in memory (tests).
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.queue
            .lock()
            .unwrap()
            .values()
            .map(|q| q.entries.len())
            .sum()
    }
}

/// The store deletions of one device's entries.
fn del_mutations<'a>(
    user: &str,
    device: &str,
    keys: impl Iterator<Item = &'a (String, u64)>,
) -> Vec<Mutation> {
    keys.map(|(c, s)| Mutation::DelPushQueue {
        user: user.to_string(),
        device: device.to_string(),
        conversation: c.clone(),
        seq: *s,
    })
    .collect()
}

fn update_depth(queue: &HashMap<(String, String), DeviceQueue>) {
    let n: usize = queue.values().map(|q| q.entries.len()).sum();
    crate::metrics::get().push_queue_depth.set(n as i64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::delivery::durability::Durability;
    use crate::sequencer::LocalSequencer;
    use crate::store::{MemoryStore, SettingsRecord};

    /// A router where bob's tablet is online.
    struct Online;

    impl Router for Online {
        fn deliver(&self, _: &str, _: &bytes::Bytes) -> usize {
            0
        }
        fn is_online(&self, user: &str) -> bool {
            user == "bob"
        }
        fn online_devices(&self, user: &str) -> Vec<String> {
            match user {
                "bob" => vec!["tablet".to_string()],
                _ => Vec::new(),
            }
        }
    }

    fn push(store: Arc<dyn Store>, gateway: bool) -> Arc<Push> {
        let durability = Durability::new(store.clone());
        tokio::spawn(
            durability
                .clone()
                .run(tokio_util::sync::CancellationToken::new()),
        );
        let seq = Arc::new(LocalSequencer::new(store.clone(), durability));
        let config = PushConfig {
            gateway: gateway.then(|| "http://127.0.0.1:9/notify".parse().unwrap()),
            ..PushConfig::off()
        };
        Arc::new(Push::new(
            store,
            seq,
            Arc::new(Online),
            ManualClock::new(1_000),
            config,
        ))
    }

    fn cause(mentions: &[String], read_diffusion: bool) -> Cause<'_> {
        Cause {
            conversation: "g:0000000000000001",
            seq: 7,
            sender: "alice",
            now_ms: 1_000,
            direct: false,
            read_diffusion,
            mentions,
            mention_all: false,
        }
    }

    fn devices(entries: &[PushEntry]) -> Vec<String> {
        let mut out: Vec<String> = entries
            .iter()
            .map(|e| format!("{}/{}", e.user, e.device))
            .collect();
        out.sort();
        out
    }

    #[tokio::test]
    async fn offline_devices_with_a_target_are_planned_not_the_sender_online_or_muted() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let p = push(store.clone(), true);
        for (u, d) in [
            ("alice", "phone"),
            ("bob", "phone"),
            ("bob", "tablet"),
            ("carol", "phone"),
        ] {
            p.register(u, d, "fcm", &format!("tok-{u}-{d}"), false)
                .await
                .unwrap();
        }
        store
            .commit(&[Mutation::Settings {
                user: "carol".into(),
                conversation: "g:0000000000000001".into(),
                record: SettingsRecord {
                    muted: true,
                    pinned: false,
                },
            }])
            .unwrap();
        let all: Vec<String> = ["alice", "bob", "carol", "dave"].map(String::from).to_vec();
        let plan = p.plan(&cause(&[], false), &all).unwrap();
        assert_eq!(devices(&plan), ["bob/phone"]);
        assert_eq!(plan[0].record.sender, "alice");
        assert!(!plan[0].record.mention);
        // A mention passes the mute.
        let carol = vec!["carol".to_string()];
        let plan = p.plan(&cause(&carol, false), &all).unwrap();
        assert_eq!(devices(&plan), ["bob/phone", "carol/phone"]);
        assert!(plan.iter().all(|e| e.record.mention == (e.user == "carol")));
        p.queued(plan);
        assert_eq!(p.pending(), 2);
        // Read diffusion: only those mentioned by name.
        let plan = p.plan(&cause(&carol, true), &all).unwrap();
        assert_eq!(devices(&plan), ["carol/phone"]);
        // Unregistered: no target, and its pending entry is gone too.
        p.unregister("bob", "phone").await.unwrap();
        assert_eq!(p.pending(), 1);
        assert!(p.plan(&cause(&[], false), &all).unwrap().is_empty());
        // Targets survive a restart (loaded from the store).
        let again = push(store.clone(), true);
        let plan = again.plan(&cause(&carol, false), &all).unwrap();
        assert_eq!(devices(&plan), ["carol/phone"]);
        // Without a gateway nothing is queued.
        let off = push(store, false);
        assert!(off.plan(&cause(&carol, false), &all).unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_revoke_elsewhere_makes_the_target_stale() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let p = push(store.clone(), true);
        p.register("bob", "phone", "apns", "tok", true)
            .await
            .unwrap();
        let t = p.target("bob", "phone").unwrap().unwrap();
        assert!(!p.revoked("bob", "phone", &t).unwrap());
        let mut dev = store.device("bob", "phone").unwrap().unwrap_or_default();
        dev.token_epoch += 1;
        store.put_device("bob", "phone", &dev).unwrap();
        assert!(p.revoked("bob", "phone", &t).unwrap());
    }
}
