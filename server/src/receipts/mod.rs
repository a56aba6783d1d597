//! Read positions and read receipts: `MarkRead` moves a user's read position in a
//! conversation forward (never back), durably; then the user's devices (to clear their
//! badges) and the other members (as a receipt: "read up to seq N") get a `ReadReceipt`.
//! Receipts go to the members of 1:1 conversations and write-diffusion groups; in a
//! read-diffusion group (above the fan-out threshold), or when the user turned receipts
//! off (their account setting), only the user's own devices are told, and
//! `ReceiptsQuery` never counts such a user as having read.

use std::sync::Arc;

use tern_proto::pb;

use crate::conversations::ConvCache;
use crate::delivery::fanout;
use crate::delivery::router::Router;
use crate::error::{ServiceError, ServiceResult};
use crate::sequencer::Sequencer;
use crate::store::{Mutation, Store};

pub struct Receipts {
    store: Arc<dyn Store>,
    convs: Arc<ConvCache>,
    sequencer: Arc<dyn Sequencer>,
    router: Arc<dyn Router>,
}

impl Receipts {
    pub fn new(
        store: Arc<dyn Store>,
        convs: Arc<ConvCache>,
        sequencer: Arc<dyn Sequencer>,
        router: Arc<dyn Router>,
    ) -> Self {
        Self {
            store,
            convs,
            sequencer,
            router,
        }
    }

    /// Marks `conv` read by `user` up to `seq` (0: up to its last message).
    pub async fn mark_read(
        &self,
        user: &str,
        conv: &str,
        seq: u64,
    ) -> ServiceResult<pb::ReadState> {
        let st = self.convs.member(conv, user)?;
        let receipts_off = self.receipts_off(user)?;
        let (read_seq, last_seq, notify) = {
            // Under the conversation's lock: two devices marking read at once, or a
            // message arriving meanwhile, never move the position back.
            let g = st.lock().unwrap();
            let last = g.last_seq;
            let want = if seq == 0 { last } else { seq };
            if want > last {
                return Err(ServiceError::invalid(format!(
                    "seq {want} is beyond the conversation's last seq {last}"
                )));
            }
            let current = self.store.read_seq(user, conv)?;
            if want <= current {
                (current, last, None)
            } else {
                self.store.commit(&[Mutation::Read {
                    user: user.to_string(),
                    conversation: conv.to_string(),
                    read_seq: want,
                }])?;
                self.sequencer.wrote();
                let to: Vec<String> = if g.read_diffusion || receipts_off {
                    vec![user.to_string()]
                } else {
                    g.members.keys().cloned().collect()
                };
                (want, last, Some(to))
            }
        };
        // Durable (and so is every message up to `read_seq`) before anyone hears of it.
        self.sequencer.barrier().await?;
        if let Some(to) = notify {
            fanout::read_receipt(&*self.router, conv, user, read_seq, &to);
        }
        Ok(pb::ReadState {
            conversation: conv.to_string(),
            read_seq,
            unread: crate::conversations::view::unread(&*self.store, conv, last_seq, read_seq)?,
        })
    }

    /// Whether `user` turned read receipts off (their account setting).
    fn receipts_off(&self, user: &str) -> ServiceResult<bool> {
        Ok(self.store.user(user)?.is_some_and(|u| u.receipts_off))
    }

    /// Who of the other members has read message `seq` of `conv` (names only where
    /// receipts are sent: 1:1 and write-diffusion groups; counts everywhere).
    pub(crate) async fn who_read(
        &self,
        user: &str,
        conv: &str,
        seq: u64,
    ) -> ServiceResult<pb::ReceiptsResult> {
        let st = self.convs.member(conv, user)?;
        let (members, last, read_diffusion) = {
            let g = st.lock().unwrap();
            (
                g.members.keys().cloned().collect::<Vec<_>>(),
                g.last_seq,
                g.read_diffusion,
            )
        };
        if seq == 0 || seq > last {
            return Err(ServiceError::invalid(format!(
                "seq {seq} is not a message of this conversation (1..={last})"
            )));
        }
        let Some(msg) = self.store.message(conv, seq)? else {
            tracing::error!(%conv, seq, "timeline entry missing below the last seq");
            return Err(ServiceError::internal());
        };
        let mut read_by = Vec::new();
        let mut others = 0u32;
        for m in members.iter().filter(|m| **m != msg.sender) {
            others += 1;
            // A member who turned receipts off never shows as having read.
            if self.store.read_seq(m, conv)? >= seq && !self.receipts_off(m)? {
                read_by.push(m.clone());
            }
        }
        self.sequencer.barrier().await?;
        let read_count = read_by.len() as u32;
        if read_diffusion {
            read_by.clear();
        }
        Ok(pb::ReceiptsResult {
            conversation: conv.to_string(),
            seq,
            read_by,
            read_count,
            members: others,
        })
    }
}

#[cfg(test)]
mod tests;
