//! The sequencer seam: who assigns seqs and inbox seqs, writes a message and everything
//! that belongs with it in one atomic batch, and runs what must wait until that batch is
//! durable, in append order.
//!
//! The domains call [`Sequencer`]; they never see how seqs are allocated or how
//! durability is reached. [`LocalSequencer`] is the one-node implementation over any
//! [`Store`]: inbox heads in memory under one short lock, one store commit, group commit
//! by the [`Durability`] flusher. A clustered backend (JetStream) would implement the same
//! trait with expected-last-sequence publishes: that is why a batch carries the
//! conversation's last seq as the caller knows it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tern_proto::pb::{self, ErrorCode};

use crate::delivery::durability::{Completion, Durability};
use crate::error::{ServiceError, ServiceResult};
use crate::store::{CommitOutcome, DedupRecord, InboxRecord, Mutation, Store};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One message to append, with what commits atomically beside it.
pub struct Batch {
    /// The message; its `seq` is assigned by the sequencer.
    pub msg: pb::Message,
    /// The conversation's last seq as the caller (holding the conversation's lock) knows
    /// it: the new message gets `expected_last_seq + 1`.
    pub expected_last_seq: u64,
    /// Users who get an inbox entry (write diffusion); empty for read diffusion.
    pub inboxes: Vec<String>,
    /// Other writes that commit atomically with the message (membership, metadata).
    pub extra: Vec<Mutation>,
    /// (sender, client_msg_id) for dedup; none for system messages.
    pub dedup: Option<(String, String)>,
}

/// What an append did.
#[derive(Debug, Clone)]
pub enum Appended {
    /// Stored: the message's seq and each inbox recipient's new inbox seq.
    New {
        seq: u64,
        inboxes: Vec<(String, u64)>,
    },
    /// A racing retry: the (sender, client_msg_id) was already stored; nothing written.
    Duplicate(DedupRecord),
}

/// Builds the work to run once an append is durable; called with what was assigned,
/// inside the sequencer's ordering, so completions run in append order.
pub(crate) type Then<'a> = Box<dyn FnOnce(&Appended) -> Completion + Send + 'a>;

pub trait Sequencer: Send + Sync + 'static {
    /// Appends `batch` atomically (message, inbox entries, dedup record, extra writes) and
    /// queues `then(&appended)` to run once the batch is durable (or its flush failed).
    fn append(&self, batch: Batch, then: Then<'_>) -> ServiceResult<Appended>;
    /// The user's highest allocated inbox seq.
    fn inbox_head(&self, user: &str) -> ServiceResult<u64>;
    /// Queues work to run once everything appended or written so far is durable.
    fn after_durable(&self, completion: Completion);
    /// Records that a write was made outside `append` (accounts, cursors): the next
    /// barrier covers it.
    fn wrote(&self);
    /// Waits until everything appended or written before the call is durable.
    fn barrier(&self) -> BoxFuture<'_, ServiceResult<()>>;
}

/// Told of every appended entry once it is durable: the search index follows the
/// timelines through it ([`LocalSequencer::set_tap`]). It runs in the flusher's completion
/// loop, so it must be cheap and never block (note the position, do the work elsewhere).
pub(crate) trait DurableTap: Send + Sync {
    /// Entry `seq` of `conversation` (a message, an edit, a recall, an event) is durable.
    fn durable(&self, conversation: &str, seq: u64);
}

/// The message every failed flush answers with.
pub(crate) fn flush_failed() -> ServiceError {
    ServiceError::new(ErrorCode::Internal, "storage flush failed; retry")
}

/// Inbox heads kept in memory; beyond it some are dropped and re-read from the store.
const INBOX_HEAD_CACHE: usize = 262_144;

/// One node's sequencer over a local [`Store`].
///
/// The one shared step of every append is `heads`: it owns every user's inbox head and
/// holds allocation of inbox seqs, the atomic store commit and the queueing of
/// completions together, so that each user's inbox becomes visible in seq order and
/// pushes leave in that order. It is a short, synchronous section (an in-memory batch;
/// never an `.await`, never the disk flush): the flush happens afterwards, for many
/// appends at once, in [`Durability`].
pub(crate) struct LocalSequencer {
    store: Arc<dyn Store>,
    durability: Arc<Durability>,
    heads: Mutex<HashMap<String, u64>>,
    head_cache: usize,
    /// Told of each durable append (the search index); unset: nobody is. Weak: the
    /// listener may itself hold the sequencer.
    tap: OnceLock<Weak<dyn DurableTap>>,
}

impl LocalSequencer {
    pub(crate) fn new(store: Arc<dyn Store>, durability: Arc<Durability>) -> Self {
        Self::with_head_cache(store, durability, INBOX_HEAD_CACHE)
    }

    /// With a smaller inbox-head cache (tests of eviction).
    pub(crate) fn with_head_cache(
        store: Arc<dyn Store>,
        durability: Arc<Durability>,
        head_cache: usize,
    ) -> Self {
        Self {
            store,
            durability,
            heads: Mutex::new(HashMap::new()),
            head_cache,
            tap: OnceLock::new(),
        }
    }

    /// Sets who is told of every durable append from now on (once; later calls are
    /// ignored).
    pub(crate) fn set_tap(&self, tap: &Arc<dyn DurableTap>) {
        let _ = self.tap.set(Arc::downgrade(tap));
    }

    fn head(&self, heads: &mut HashMap<String, u64>, user: &str) -> ServiceResult<u64> {
        if let Some(h) = heads.get(user) {
            return Ok(*h);
        }
        let h = self.store.last_inbox_seq(user)?;
        if heads.len() >= self.head_cache {
            // Any head can go: under this lock the store has every allocated inbox seq.
            let drop: Vec<String> = heads.keys().take(heads.len() / 4 + 1).cloned().collect();
            for u in drop {
                heads.remove(&u);
            }
        }
        heads.insert(user.to_string(), h);
        Ok(h)
    }

    /// Inbox heads held in memory now (tests check the bound).
    #[cfg(test)]
    pub(crate) fn cached_heads(&self) -> usize {
        self.heads.lock().unwrap().len()
    }
}

impl Sequencer for LocalSequencer {
    fn append(&self, batch: Batch, then: Then<'_>) -> ServiceResult<Appended> {
        let Batch {
            mut msg,
            expected_last_seq,
            inboxes,
            extra,
            dedup,
        } = batch;
        let seq = expected_last_seq + 1;
        msg.seq = seq;
        let mut muts = extra;
        let mut heads = self.heads.lock().unwrap();
        let mut alloc: Vec<(String, u64)> = Vec::with_capacity(inboxes.len());
        for user in inboxes {
            let h = self.head(&mut heads, &user)? + 1;
            muts.push(Mutation::Inbox {
                user: user.clone(),
                inbox_seq: h,
                entry: InboxRecord {
                    conversation: msg.conversation.clone(),
                    seq,
                    expires_ms: msg.expires_ms,
                },
            });
            alloc.push((user, h));
        }
        if let Some((sender, client_msg_id)) = &dedup {
            let sender_inbox_seq = alloc
                .iter()
                .find(|(u, _)| u == sender)
                .map(|(_, h)| *h)
                .unwrap_or(0);
            muts.push(Mutation::Dedup {
                sender: sender.clone(),
                client_msg_id: client_msg_id.clone(),
                record: DedupRecord {
                    conversation: msg.conversation.clone(),
                    seq,
                    server_time_ms: msg.server_time_ms,
                    inbox_seq: sender_inbox_seq,
                },
            });
        }
        let conversation = self.tap.get().map(|_| msg.conversation.clone());
        muts.push(Mutation::Message(msg));
        let appended = match self.store.commit(&muts)? {
            CommitOutcome::Duplicate(rec) => Appended::Duplicate(rec),
            CommitOutcome::Applied => {
                if dedup.is_some() {
                    crate::metrics::get().sends.inc();
                }
                for (u, h) in &alloc {
                    heads.insert(u.clone(), *h);
                }
                self.durability.applied();
                Appended::New {
                    seq,
                    inboxes: alloc,
                }
            }
        };
        // Still under `heads`: completions are queued in commit order.
        let done = then(&appended);
        let tap = self.tap.get().and_then(Weak::upgrade);
        let done: Completion = match (tap, conversation, &appended) {
            (Some(tap), Some(conv), Appended::New { seq, .. }) => {
                let seq = *seq;
                Box::new(move |r| {
                    // First: whoever hears of the ack may then look for the entry.
                    if r.is_ok() {
                        tap.durable(&conv, seq);
                    }
                    done(r);
                })
            }
            _ => done,
        };
        self.durability.after_durable(done);
        Ok(appended)
    }

    fn inbox_head(&self, user: &str) -> ServiceResult<u64> {
        let mut heads = self.heads.lock().unwrap();
        self.head(&mut heads, user)
    }

    fn after_durable(&self, completion: Completion) {
        self.durability.after_durable(completion);
    }

    fn wrote(&self) {
        self.durability.applied();
    }

    fn barrier(&self) -> BoxFuture<'_, ServiceResult<()>> {
        Box::pin(async move { self.durability.barrier().await.map_err(|_| flush_failed()) })
    }
}
