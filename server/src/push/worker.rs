//! The push worker: sends each device's pending notifications to the gateway.
//!
//! Per device at most one request is in flight, and after a notification the next waits
//! `interval`: whatever arrives meanwhile is coalesced into one notification naming the
//! latest message and the unread count at sending time. A failure (no connection,
//! timeout, 5xx, garbage) retries after an exponential backoff with jitter; a device whose
//! latest pending message is older than `max_age` is given up (counted as dropped). An
//! entry leaves the store only once the gateway took its notification (or it was given
//! up): a crash in between sends it again after the restart (at least once).

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::gateway::{self, Failure, HttpClient, Notification};
use super::{del_mutations, update_depth, Push};
use crate::store::{Mutation, PushQueueRecord};

/// Requests in flight at once (over all devices).
const MAX_IN_FLIGHT: usize = 32;
/// How long the worker sleeps when nothing is due (a new entry wakes it earlier).
const IDLE: Duration = Duration::from_secs(5);

type Key = (String, String);

/// What one attempt for one device came to.
enum Outcome {
    /// Sent (or nothing left to send): these entries are done.
    Done(Vec<(String, u64)>),
    Failed(Failure),
}

impl Push {
    /// Runs until `stop`: loads the queue left in the store, then sends. Returns at once
    /// when push is off.
    pub async fn run_worker(self: Arc<Self>, stop: CancellationToken) {
        let Some(uri) = self.config.gateway.clone() else {
            return;
        };
        // Entries left by the previous run (merged with any queued since the start).
        loop {
            match self.store.push_queue() {
                Ok(entries) => {
                    self.add(entries);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the push queue; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        tracing::info!(gateway = %uri, "push worker started");
        // Checked at startup (`Server::bind`): this only fails if the CA file went away.
        let client = match gateway::client(self.config.gateway_ca.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "push worker cannot start: no notification is sent");
                return;
            }
        };
        let mut tasks: JoinSet<()> = JoinSet::new();
        loop {
            while tasks.try_join_next().is_some() {}
            let (due, next) = self.due(MAX_IN_FLIGHT.saturating_sub(tasks.len()));
            for key in due {
                let (push, client, uri) = (self.clone(), client.clone(), uri.clone());
                tasks.spawn(async move { push.attempt(&client, &uri, key).await });
            }
            let sleep = next.map_or(IDLE, |t| t.saturating_duration_since(Instant::now()));
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        // Requests still in flight are abandoned: their entries stay in the store and are
        // sent after the next start.
        tasks.abort_all();
    }

    /// Marks up to `room` due devices in flight; returns them and when the next waiting
    /// device is due.
    fn due(&self, room: usize) -> (Vec<Key>, Option<Instant>) {
        let now = Instant::now();
        let mut queue = self.queue.lock().unwrap();
        let mut out = Vec::new();
        let mut next: Option<Instant> = None;
        queue.retain(|_, q| {
            !q.entries.is_empty() || q.in_flight || q.not_before.is_some_and(|t| t > now)
        });
        for (key, q) in queue.iter_mut() {
            if q.in_flight || q.entries.is_empty() {
                continue;
            }
            match q.not_before {
                Some(t) if t > now => next = Some(next.map_or(t, |n| n.min(t))),
                _ if out.len() < room => {
                    q.in_flight = true;
                    out.push(key.clone());
                }
                _ => {}
            }
        }
        (out, next)
    }

    /// One attempt for one device, then its state updated and the worker woken.
    async fn attempt(self: Arc<Self>, client: &HttpClient, uri: &hyper::Uri, key: Key) {
        let snapshot: Vec<((String, u64), PushQueueRecord)> = {
            let queue = self.queue.lock().unwrap();
            queue
                .get(&key)
                .map(|q| {
                    q.entries
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let outcome = self.send_latest(client, uri, &key, snapshot).await;
        let now = Instant::now();
        let m = crate::metrics::get();
        let mut queue = self.queue.lock().unwrap();
        let Some(q) = queue.get_mut(&key) else {
            return; // forgotten meanwhile (unregister, logout)
        };
        q.in_flight = false;
        match outcome {
            Outcome::Done(done) => {
                for k in &done {
                    q.entries.remove(k);
                }
                q.attempts = 0;
                q.not_before = Some(now + self.config.interval);
                let muts = del_mutations(&key.0, &key.1, done.iter());
                update_depth(&queue);
                drop(queue);
                if !muts.is_empty() {
                    // Not waited for: a delete lost in a crash only sends a notification again.
                    if let Err(e) = self.store.commit(&muts) {
                        tracing::warn!(error = %e, "could not remove sent push entries");
                    }
                    self.sequencer.wrote();
                }
            }
            Outcome::Failed(f) => {
                m.push_failed.inc();
                match f {
                    Failure::Retry(why) => {
                        q.attempts = q.attempts.saturating_add(1);
                        let delay =
                            backoff(self.config.retry_min, self.config.retry_max, q.attempts);
                        q.not_before = Some(now + delay);
                        m.push_retried.inc();
                        tracing::debug!(user = %key.0, device = %key.1, %why, ?delay, "push failed; retrying");
                    }
                    Failure::Permanent(why) => {
                        // Given up: the gateway refuses this request itself.
                        let done: Vec<(String, u64)> = q.entries.keys().cloned().collect();
                        q.entries.clear();
                        q.attempts = 0;
                        m.push_dropped.inc();
                        tracing::warn!(user = %key.0, device = %key.1, %why, "push refused by the gateway; dropped");
                        let muts = del_mutations(&key.0, &key.1, done.iter());
                        update_depth(&queue);
                        drop(queue);
                        if let Err(e) = self.store.commit(&muts) {
                            tracing::warn!(error = %e, "could not remove dropped push entries");
                        }
                        self.sequencer.wrote();
                    }
                }
            }
        }
        self.wake.notify_one();
    }

    /// Sends one notification for the latest of `entries`, unless the device no longer
    /// needs one (target gone, device online) or it is too old.
    async fn send_latest(
        &self,
        client: &HttpClient,
        uri: &hyper::Uri,
        (user, device): &Key,
        entries: Vec<((String, u64), PushQueueRecord)>,
    ) -> Outcome {
        let all: Vec<(String, u64)> = entries.iter().map(|(k, _)| k.clone()).collect();
        let Some(((conversation, seq), latest)) = entries
            .iter()
            .max_by_key(|((_, seq), r)| (r.enqueued_ms, *seq))
            .cloned()
        else {
            return Outcome::Done(all);
        };
        let target = match self.target(user, device) {
            Ok(Some(t)) => t,
            Ok(None) => return Outcome::Done(all), // unregistered, logged out, rejected
            Err(e) => return Outcome::Failed(Failure::Retry(e.message)),
        };
        match self.revoked(user, device, &target) {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(%user, %device, "push target of a revoked device removed");
                if let Err(e) = self.forget_rejected(user, device, &target.token) {
                    tracing::warn!(error = %e.message, "could not remove a revoked push target");
                }
                return Outcome::Done(all);
            }
            Err(e) => return Outcome::Failed(Failure::Retry(e.message)),
        }
        if self.router.online_devices(user).contains(device) {
            // Connected since: the device syncs the messages itself.
            return Outcome::Done(all);
        }
        let now_ms = self.clock.now_ms();
        if now_ms.saturating_sub(latest.enqueued_ms) > self.config.max_age_ms {
            crate::metrics::get().push_dropped.inc();
            tracing::warn!(%user, %device, "push notification older than push_max_age_secs; dropped");
            return Outcome::Done(all);
        }
        let unread = match self.unread.get() {
            Some(f) => f(user.clone()).await,
            None => 0,
        };
        let preview = match target.include_preview {
            true => match self.store.message(&conversation, seq) {
                Ok(Some(m)) => gateway::preview_text(&m, now_ms),
                Ok(None) => None,
                Err(e) => return Outcome::Failed(Failure::Retry(e.to_string())),
            },
            false => None,
        };
        let body = gateway::body(&Notification {
            conversation: &conversation,
            seq,
            sender: &latest.sender,
            high_priority: latest.direct || latest.mention,
            unread,
            messages: all.len(),
            app_id: &self.config.app_id,
            target: &target,
            preview,
        });
        match gateway::send(client, uri, &body, self.config.timeout).await {
            Ok(rejected) => {
                let m = crate::metrics::get();
                m.push_sent.inc();
                if rejected.contains(&target.token) {
                    m.push_rejected.inc();
                    tracing::info!(%user, %device, "the gateway rejected the pushkey; target removed");
                    if let Err(e) = self.forget_rejected(user, device, &target.token) {
                        tracing::warn!(error = %e.message, "could not remove a rejected push target");
                    }
                }
                Outcome::Done(all)
            }
            Err(f) => Outcome::Failed(f),
        }
    }

    /// Removes a target the gateway rejected, unless it was replaced meanwhile.
    fn forget_rejected(
        &self,
        user: &str,
        device: &str,
        token: &str,
    ) -> crate::error::ServiceResult<()> {
        self.with_targets(|t| -> crate::error::ServiceResult<()> {
            let Some(d) = t.get_mut(user) else {
                return Ok(());
            };
            if d.get(device).is_none_or(|r| r.token != token) {
                return Ok(());
            }
            self.store.commit(&[Mutation::DelPushTarget {
                user: user.to_string(),
                device: device.to_string(),
            }])?;
            self.sequencer.wrote();
            d.remove(device);
            if d.is_empty() {
                t.remove(user);
            }
            Ok(())
        })?
    }
}

/// The delay before retry number `attempts` (1 = the first): `min * 2^(attempts-1)`,
/// capped at `max`, times a random factor in [0.5, 1.0] (full backoff, half jitter).
pub(crate) fn backoff(min: Duration, max: Duration, attempts: u32) -> Duration {
    let exp = min.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let capped = exp.min(max);
    capped.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for _ in 0..50 {
            let b1 = backoff(min, max, 1);
            assert!(b1 >= min / 2 && b1 <= min, "{b1:?}");
            let b3 = backoff(min, max, 3);
            assert!(b3 >= min * 2 && b3 <= min * 4, "{b3:?}");
            let b30 = backoff(min, max, 30);
            assert!(b30 >= max / 2 && b30 <= max, "{b30:?}");
        }
    }
}
