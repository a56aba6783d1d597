//! The expiry sweeper: once a message's time to live has passed, its content is erased
//! from the store (the entry becomes an `expired` tombstone in place, so seqs stay
//! contiguous), its mention records go, and it stops counting as unread.
//!
//! Readers never depend on the sweeper: Pull, Sync and the conversation list serve an
//! expired entry as a tombstone from the moment `expires_ms` passes
//! ([`crate::conversations::view`]). The sweeper makes the erasure real on disk, at most
//! [`SWEEP_EVERY`] later (and after a restart, on its first pass).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Messages;
use crate::conversations::view;
use crate::error::ServiceResult;
use crate::store::Mutation;

/// How often the sweeper looks for expired messages.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Messages erased per store commit.
const SWEEP_BATCH: usize = 256;

impl Messages {
    /// Erases expired messages every [`SWEEP_EVERY`] until `stop`.
    pub async fn run_expiry_sweeper(&self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
            }
            if let Err(e) = self.sweep_expired() {
                tracing::warn!(error = %e.message, "expiry sweep failed; retrying later");
            }
        }
    }

    /// One pass: erases every message expired by now. Returns how many were erased.
    pub(crate) fn sweep_expired(&self) -> ServiceResult<usize> {
        let now = self.clock.now_ms();
        let mut erased = 0;
        loop {
            let due = self.store.expired_until(now, SWEEP_BATCH)?;
            if due.is_empty() {
                break;
            }
            let n = due.len();
            for e in due {
                // Under the conversation's lock, so an edit or recall of the same message
                // cannot interleave with the rewrite.
                let st = self.convs.get(&e.conversation)?;
                let _g = st.lock().unwrap();
                let mut muts = vec![Mutation::DelExpiry(e.clone())];
                if let Some(m) = self.store.message(&e.conversation, e.seq)? {
                    if !m.recalled && view::is_expired(m.expires_ms, now) {
                        for u in &m.mentions {
                            muts.push(Mutation::Unmention {
                                user: u.clone(),
                                conversation: e.conversation.clone(),
                                seq: e.seq,
                            });
                        }
                        if m.mention_all {
                            muts.push(Mutation::UnmentionAll {
                                conversation: e.conversation.clone(),
                                seq: e.seq,
                            });
                        }
                        muts.push(Mutation::NotCounted {
                            conversation: e.conversation.clone(),
                            seq: e.seq,
                        });
                        muts.push(Mutation::Message(view::tombstone(&m, true, false)));
                        erased += 1;
                    }
                }
                self.store.commit(&muts)?;
                self.sequencer.wrote();
            }
            if n < SWEEP_BATCH {
                break;
            }
        }
        Ok(erased)
    }
}
