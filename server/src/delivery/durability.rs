//! Group commit: many writes become durable with one store flush, and nothing that names
//! a seq leaves the server before that flush has returned (invariant D1).
//!
//! Writers commit to the store, then call [`Durability::applied`] and hand the work that
//! must wait (acks, pushes) to [`Durability::after_durable`] in commit order. The flusher
//! task takes everything queued, notes the applied generation, flushes once, publishes
//! the new durable generation, then runs the queued completions in order. Readers that
//! answer with stored data call [`Durability::barrier`] first.
//!
//! A failed flush latches: from then on no flush is tried, every completion and barrier
//! fails, and [`Durability::failed`] tells writers to refuse before they write. After a
//! failed fsync the kernel may have dropped the dirty pages and marked them clean, so a
//! later flush that "succeeds" proves nothing about the earlier writes (the fsyncgate
//! lesson); only a restart, which reads back what is really on disk, is safe.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{watch, Notify};

use crate::store::Store;

/// Work to run once the writes before it are durable. `Err` means the flush failed and
/// durability is unknown: nothing that names the write may be sent.
pub(crate) type Completion = Box<dyn FnOnce(Result<(), ()>) + Send>;

pub struct Durability {
    store: Arc<dyn Store>,
    queue: Mutex<Vec<Completion>>,
    wake: Notify,
    applied: AtomicU64,
    durable: watch::Sender<u64>,
    failures: watch::Sender<u64>,
    /// False: one flush per queued completion (only to measure what group commit buys).
    group_commit: bool,
    /// The store's commit count as of the last successful flush (for the watermark).
    durable_commits: AtomicU64,
    /// Set by the first failed flush; never cleared (see the module doc).
    failed: AtomicBool,
}

impl Durability {
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        Self::with_group_commit(store, true)
    }

    pub fn with_group_commit(store: Arc<dyn Store>, group_commit: bool) -> Arc<Self> {
        Arc::new(Self {
            store,
            queue: Mutex::new(Vec::new()),
            wake: Notify::new(),
            applied: AtomicU64::new(0),
            durable: watch::channel(0).0,
            failures: watch::channel(0).0,
            group_commit,
            durable_commits: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        })
    }

    /// The store's commit count as of the last successful flush.
    pub fn durable_commits(&self) -> u64 {
        self.durable_commits.load(Ordering::SeqCst)
    }

    /// True once a flush failed: nothing more is made durable or acknowledged until the
    /// server restarts.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Records that a write was applied to the store; returns its generation.
    pub fn applied(&self) -> u64 {
        self.applied.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Queues work to run after the next flush. Call it in commit order (under the lock
    /// that orders the commits) so completions run in that order too.
    pub fn after_durable(&self, completion: Completion) {
        self.queue.lock().unwrap().push(completion);
        self.wake.notify_one();
    }

    /// Waits until every write applied before this call is durable.
    pub async fn barrier(&self) -> Result<(), ()> {
        if self.failed() {
            return Err(());
        }
        let target = self.applied.load(Ordering::SeqCst);
        let mut rx = self.durable.subscribe();
        if *rx.borrow() >= target {
            return Ok(());
        }
        self.wake.notify_one();
        let mut failures = self.failures.subscribe();
        loop {
            tokio::select! {
                r = rx.changed() => {
                    if r.is_err() { return Err(()); }
                    if *rx.borrow() >= target { return Ok(()); }
                }
                // A failed flush: durability of what we read is unknown.
                _ = failures.changed() => return Err(()),
            }
        }
    }

    fn pending(&self) -> bool {
        let unflushed = self.applied.load(Ordering::SeqCst) > *self.durable.borrow();
        (unflushed && !self.failed()) || !self.queue.lock().unwrap().is_empty()
    }

    /// Flushes once if anything is waiting; returns how many completions ran.
    pub async fn flush_once(&self) -> usize {
        let batch = {
            let mut q = self.queue.lock().unwrap();
            if self.group_commit || q.len() <= 1 {
                std::mem::take(&mut *q)
            } else {
                vec![q.remove(0)]
            }
        };
        let generation = self.applied.load(Ordering::SeqCst);
        if batch.is_empty() && generation <= *self.durable.borrow() {
            return 0;
        }
        if self.failed() {
            // Latched: fail what waits, try nothing (see the module doc).
            let n = batch.len();
            for completion in batch {
                completion(Err(()));
            }
            return n;
        }
        let store = self.store.clone();
        let started = Instant::now();
        let res = tokio::task::spawn_blocking(move || {
            let commits = store.commit_count()?;
            store.flush().map(|_| commits)
        })
        .await;
        let ok = matches!(res, Ok(Ok(_)));
        if let Ok(Ok(commits)) = res {
            self.durable_commits.fetch_max(commits, Ordering::SeqCst);
        }
        tracing::trace!(
            completions = batch.len(),
            micros = started.elapsed().as_micros() as u64,
            ok,
            "group commit"
        );
        if ok {
            self.durable.send_if_modified(|d| {
                let moved = generation > *d;
                *d = (*d).max(generation);
                moved
            });
        } else {
            tracing::error!(
                ?res,
                "store flush failed: the writes it covered are not acknowledged, and no write \
                 will be until the server is restarted (fix the disk: full? failing?)"
            );
            self.failed.store(true, Ordering::SeqCst);
            crate::metrics::get().store_failed.set(1);
            self.failures.send_modify(|n| *n += 1);
        }
        let n = batch.len();
        if ok {
            crate::metrics::get().flushed(started.elapsed(), n);
        }
        for completion in batch {
            completion(if ok { Ok(()) } else { Err(()) });
        }
        n
    }

    /// The flusher task: runs until `stop` resolves, then drains what is queued.
    pub async fn run(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            if !self.pending() {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = stop.cancelled() => break,
                }
            }
            self.flush_once().await;
        }
        // Final drain: everything applied so far becomes durable and is completed.
        while self.pending() {
            self.flush_once().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{conformance, SledStore};
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn completions_run_in_order_after_one_flush() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 8 << 20).unwrap());
        let d = Durability::new(store.clone());
        let order = Arc::new(Mutex::new(Vec::new()));
        for i in 1..=50u64 {
            conformance::append(&*store, "d:a:b", i, "a", &format!("m{i}"));
            d.applied();
            let order = order.clone();
            d.after_durable(Box::new(move |r| {
                assert!(r.is_ok());
                order.lock().unwrap().push(i);
            }));
        }
        // Nothing completes before the flush.
        assert!(order.lock().unwrap().is_empty());
        assert_eq!(
            d.flush_once().await,
            50,
            "one flush covers all queued writes"
        );
        assert_eq!(*order.lock().unwrap(), (1..=50).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn without_group_commit_each_completion_gets_its_own_flush() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 8 << 20).unwrap());
        let d = Durability::with_group_commit(store, false);
        for _ in 0..3 {
            d.applied();
            d.after_durable(Box::new(|r| assert!(r.is_ok())));
        }
        assert_eq!(d.flush_once().await, 1);
        assert_eq!(d.flush_once().await, 1);
        assert_eq!(d.flush_once().await, 1);
        assert_eq!(d.flush_once().await, 0);
    }

    #[tokio::test]
    async fn barrier_waits_for_the_flusher() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 8 << 20).unwrap());
        let d = Durability::new(store);
        let stop = tokio_util::sync::CancellationToken::new();
        let flusher = tokio::spawn(d.clone().run(stop.clone()));
        d.applied();
        let ran = Arc::new(AtomicUsize::new(0));
        let r2 = ran.clone();
        d.after_durable(Box::new(move |_| {
            r2.fetch_add(1, Ordering::SeqCst);
        }));
        d.barrier().await.unwrap();
        assert!(*d.durable.borrow() >= 1);
        stop.cancel();
        flusher.await.unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }
}
