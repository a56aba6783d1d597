//! The read paths: Sync (a user's inbox after a cursor, one cursor for everything a device
//! missed) and Pull (a range of one conversation's timeline, for history and gap
//! repair). Each page fits in one frame, and neither ever serves a hole silently.

use std::collections::{HashMap, HashSet};

use prost::Message as _;
use tern_proto::pb;
use tern_proto::raw::{RawInboxItem, RawSyncResult};

use super::Messages;
use crate::conversations::view;
use crate::error::{ServiceError, ServiceResult};

impl Messages {
    /// History and gap repair; see PROTOCOL.md "Pull".
    pub async fn pull(&self, user: &str, req: pb::Pull) -> ServiceResult<pb::PullResult> {
        let st = self.convs.reader(&req.conversation, user)?;
        let (last, visible) = {
            let g = st.lock().unwrap();
            (g.last_seq, g.first_visible(user))
        };
        // Retention (8.11): below the first retained seq nothing is left. A forward pull
        // that continues from a position below it (after_seq > 0) lost messages it would
        // have read: CURSOR_TRIMMED. From 0, and backward, it is served from there.
        let retained = self.store.first_retained_seq(&req.conversation)?;
        let first = visible.max(retained);
        let forward = req.after_seq > 0 || req.before_seq == 0;
        if forward && req.after_seq > 0 && req.after_seq + 1 < retained && retained > visible {
            return Err(pull_trimmed(&req.conversation, retained));
        }
        let limit = match req.limit {
            0 => 100,
            n => n.min(1000),
        } as u64;
        let (from, to, forward) = if forward {
            let end = if req.until_seq > 0 {
                req.until_seq.min(last)
            } else {
                last
            };
            // History before `first` is not this reader's (history visibility): a
            // range that starts earlier is served from `first`.
            let from = req.after_seq.saturating_add(1).max(first);
            (from, end.min(from.saturating_add(limit - 1)), true)
        } else {
            // Any before_seq past the end means "the newest page".
            let to = (req.before_seq - 1).min(last);
            (to.saturating_sub(limit - 1).max(first), to, false)
        };
        let mut messages = if from <= to {
            self.store
                .timeline(&req.conversation, from, to, (to - from + 1) as usize)?
        } else {
            Vec::new()
        };
        // Never silently serve a hole: the timeline is contiguous by construction.
        for (i, m) in messages.iter().enumerate() {
            if m.seq != from + i as u64 {
                let retained = self.store.first_retained_seq(&req.conversation)?;
                if retained > from {
                    return Err(pull_trimmed(&req.conversation, retained));
                }
                tracing::error!(conv = %req.conversation, expected = from + i as u64, got = m.seq, "timeline hole");
                return Err(ServiceError::internal());
            }
        }
        if from <= to && messages.len() as u64 != to - from + 1 {
            // The retention sweeper may have trimmed the front of the range meanwhile.
            let retained = self.store.first_retained_seq(&req.conversation)?;
            if retained > from {
                return Err(pull_trimmed(&req.conversation, retained));
            }
            tracing::error!(conv = %req.conversation, from, to, got = messages.len(), "timeline shorter than its last seq");
            return Err(ServiceError::internal());
        }
        // As this reader sees them: expired and deleted-for-me entries lose their content.
        if let (Some(first), Some(last)) = (messages.first(), messages.last()) {
            let hidden = self
                .store
                .hidden(user, &req.conversation, first.seq, last.seq)?;
            let now = self.clock.now_ms();
            messages = messages
                .into_iter()
                .map(|m| {
                    let h = hidden.binary_search(&m.seq).is_ok();
                    view::for_reader(m, now, h)
                })
                .collect();
        }
        // Keep the page within one frame: forward pages keep the oldest messages,
        // backward pages the newest (those nearest the position asked for).
        let keep = fit_in_budget(
            messages.iter().map(|m| m.encoded_len()),
            forward,
            self.limits.page_budget(),
        );
        if keep < messages.len() {
            if forward {
                messages.truncate(keep);
            } else {
                messages.drain(..messages.len() - keep);
            }
        }
        let (from_seq, to_seq) = match (messages.first(), messages.last()) {
            (Some(f), Some(l)) => (f.seq, l.seq),
            _ => (0, 0),
        };
        let complete = if forward {
            let end = if req.until_seq > 0 {
                req.until_seq.min(last)
            } else {
                last
            };
            to_seq.max(req.after_seq) >= end
        } else {
            from_seq <= first || messages.len() as u64 >= limit
        };
        self.barrier().await?;
        Ok(pb::PullResult {
            conversation: req.conversation,
            messages,
            from_seq,
            to_seq,
            last_seq: last,
            complete,
            first_seq: first,
        })
    }

    /// Reads the user's inbox after `after`; see PROTOCOL.md "Sync".
    /// Items carry the stored message bytes as they are (see `tern_proto::raw`).
    pub async fn sync(&self, user: &str, after: u64, limit: u32) -> ServiceResult<RawSyncResult> {
        let limit = match limit {
            0 => 200,
            n => n.min(1000),
        } as usize;
        let head = self.current_inbox_head(user)?;
        if after > head {
            return Err(ServiceError::invalid(format!(
                "after_inbox_seq {after} is beyond the inbox head {head}"
            )));
        }
        // Retention (8.11): entries below the first retained inbox seq are gone.
        let retained = self.store.first_retained_inbox_seq(user)?;
        if after + 1 < retained {
            return Err(sync_trimmed(after, retained, head));
        }
        let entries = self.store.inbox(user, after, limit)?;
        let now = self.clock.now_ms();
        // What this reader deleted for themselves among the page's entries: one range read
        // per conversation on the page, not one per item.
        let mut spans: HashMap<&str, (u64, u64)> = HashMap::new();
        for (_, e) in &entries {
            let span = spans
                .entry(e.conversation.as_str())
                .or_insert((e.seq, e.seq));
            span.0 = span.0.min(e.seq);
            span.1 = span.1.max(e.seq);
        }
        let mut hidden_on_page: HashSet<(String, u64)> = HashSet::new();
        for (conv, (lo, hi)) in spans {
            for seq in self.store.hidden(user, conv, lo, hi)? {
                hidden_on_page.insert((conv.to_string(), seq));
            }
        }
        let mut items = Vec::with_capacity(entries.len());
        let mut bytes = 0usize;
        for (expect, (inbox_seq, e)) in (after + 1..).zip(entries) {
            if inbox_seq != expect {
                // The retention sweeper may have trimmed the front meanwhile.
                let retained = self.store.first_retained_inbox_seq(user)?;
                if retained > expect {
                    return Err(sync_trimmed(after, retained, head));
                }
                tracing::error!(%user, expected = expect, got = inbox_seq, "inbox hole");
                return Err(ServiceError::internal());
            }
            let Some(mut message) = self.store.message_bytes(&e.conversation, e.seq)? else {
                if e.seq < self.store.first_retained_seq(&e.conversation)? {
                    // Timeline retention deleted the entry this inbox entry points at:
                    // served as an erased tombstone, so the inbox stays contiguous.
                    let m = pb::Message {
                        conversation: e.conversation.clone(),
                        seq: e.seq,
                        expired: true,
                        ..Default::default()
                    };
                    bytes += m.encoded_len() + 16;
                    items.push(RawInboxItem {
                        inbox_seq,
                        message: m.encode_to_vec().into(),
                    });
                    continue;
                }
                tracing::error!(%user, conv = %e.conversation, seq = e.seq, "inbox points at a missing message");
                return Err(ServiceError::internal());
            };
            // The stored bytes go out as they are, unless this reader must get a
            // tombstone (expired, or deleted for themselves).
            let expired = view::is_expired(e.expires_ms, now);
            let hidden = !hidden_on_page.is_empty()
                && hidden_on_page.contains(&(e.conversation.clone(), e.seq));
            if expired || hidden {
                let m = pb::Message::decode(message).map_err(|err| {
                    tracing::error!(conv = %e.conversation, seq = e.seq, error = %err, "undecodable timeline entry");
                    ServiceError::internal()
                })?;
                message = view::tombstone(&m, expired, hidden).encode_to_vec().into();
            }
            // Keep the page within one frame (always at least one item).
            bytes += message.len() + 16;
            if !items.is_empty() && bytes > self.limits.page_budget() {
                break;
            }
            items.push(RawInboxItem { inbox_seq, message });
        }
        let to = items.last().map(|i| i.inbox_seq).unwrap_or(after);
        let head = head.max(to);
        let complete = to >= head;
        let mut read_diffusion = Vec::new();
        if complete {
            for id in self.store.user_conversations(user)? {
                let st = self.convs.get(&id)?;
                let g = st.lock().unwrap();
                if g.read_diffusion {
                    read_diffusion.push(pb::ConversationHead {
                        conversation: id.clone(),
                        last_seq: g.last_seq,
                    });
                }
            }
        }
        self.barrier().await?;
        Ok(RawSyncResult {
            items,
            from_inbox_seq: after,
            to_inbox_seq: to,
            inbox_head: head,
            complete,
            read_diffusion,
        })
    }
}

/// CURSOR_TRIMMED for a Sync after `after`: the message names the first retained inbox
/// seq and the head in the words PROTOCOL.md 8.11 gives.
fn sync_trimmed(after: u64, retained: u64, head: u64) -> ServiceError {
    crate::metrics::get().retention_cursor_trimmed.inc();
    ServiceError::new(
        pb::ErrorCode::CursorTrimmed,
        format!(
            "inbox trimmed by retention: after_inbox_seq {after} is below the first retained inbox seq {retained} (inbox head {head}); rebuild from the conversations"
        ),
    )
}

/// CURSOR_TRIMMED for a Pull from below the conversation's first retained seq.
fn pull_trimmed(conversation: &str, retained: u64) -> ServiceError {
    crate::metrics::get().retention_cursor_trimmed.inc();
    ServiceError::new(
        pb::ErrorCode::CursorTrimmed,
        format!(
            "timeline of {} trimmed by retention: the first retained seq is {retained}; pull from after_seq 0",
            crate::conversations::id::truncate(conversation, 80)
        ),
    )
}

/// How many items (from the front, or from the back when `!from_front`) fit in `budget`
/// bytes; at least one.
fn fit_in_budget(
    sizes: impl DoubleEndedIterator<Item = usize>,
    from_front: bool,
    budget: usize,
) -> usize {
    let mut total = 0;
    let mut n = 0;
    let sizes: Box<dyn Iterator<Item = usize>> = if from_front {
        Box::new(sizes)
    } else {
        Box::new(sizes.rev())
    };
    for size in sizes {
        total += size + 16;
        if n > 0 && total > budget {
            break;
        }
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::fit_in_budget;

    #[test]
    fn pages_keep_at_least_one_item_and_stay_within_the_budget() {
        assert_eq!(fit_in_budget([100, 100, 100].into_iter(), true, 10), 1);
        assert_eq!(fit_in_budget([10, 10, 10].into_iter(), true, 60), 2);
        assert_eq!(fit_in_budget([10, 10, 50].into_iter(), false, 70), 1);
        assert_eq!(fit_in_budget([10, 10, 10].into_iter(), false, 1000), 3);
    }
}
