//! Recovery from `CURSOR_TRIMMED` (docs/PROTOCOL.md 8.11): the server's retention trimmed
//! inbox entries this device had not synced yet. The engine rebuilds without the app
//! doing anything:
//!
//! 1. The Sync's error names the first retained inbox seq `F`.
//! 2. `ListConversations` (every page): each write-diffusion conversation whose
//!    `last_seq` is past what this device delivered of it is pulled forward from there
//!    (`Cursors::delivered`), up to that `last_seq`. A conversation whose timeline was
//!    trimmed too (`CURSOR_TRIMMED` on the Pull) is pulled from its first retained seq
//!    (`after_seq` 0). Read-diffusion conversations follow their own cursors as always.
//! 3. The inbox cursor moves to `F - 1` and syncing goes on from there.
//!
//! Nothing is emitted twice: every delivery goes through the per-conversation
//! "delivered up to" seq, so an inbox entry at or after `F` for a message the pulls
//! already delivered is skipped, and one for a later message is delivered in seq order.
//! Nothing still retained is missed: `F` was read before the list, so every message an
//! entry below `F` points at was in its conversation's timeline up to the listed
//! `last_seq` (or was trimmed from it too).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use tern_proto::pb::{self, ErrorCode};
use tern_proto::{Body, Frame};

use super::{Engine, InFlight};

/// Conversations pulled at once during a recovery.
const PARALLEL_PULLS: usize = 8;
/// Conversations per ListConversations page.
const LIST_PAGE: u32 = 500;
/// Messages per recovery Pull page.
const PULL_PAGE: u32 = 500;

/// A recovery in progress.
#[derive(Debug, Default)]
pub(super) struct Recovery {
    /// The inbox cursor to continue from once every conversation is pulled (`F - 1`).
    resume_after: u64,
    /// The next ListConversations offset, while listing.
    listed: u32,
    listing: bool,
    /// Conversations still to pull: conversation -> last seq to reach.
    todo: BTreeMap<String, u64>,
    /// Conversations with a Pull in flight.
    pulling: BTreeSet<String>,
    /// Conversations whose next Pull starts from their first retained seq (after_seq 0)
    /// because the last one got CURSOR_TRIMMED.
    restart: BTreeSet<String>,
    /// Conversations restarted once already (a second CURSOR_TRIMMED gives up on them).
    restarted: BTreeSet<String>,
}

impl Recovery {
    pub(super) fn is_idle(&self) -> bool {
        !self.listing && self.todo.is_empty() && self.pulling.is_empty()
    }
}

/// The first retained inbox seq named in a Sync's CURSOR_TRIMMED message
/// ("... first retained inbox seq N ...", PROTOCOL.md 8.11).
pub fn first_retained_inbox_seq(message: &str) -> Option<u64> {
    const KEY: &str = "first retained inbox seq ";
    let at = message.find(KEY)? + KEY.len();
    let digits: String = message[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok().filter(|n| *n > 0)
}

impl Engine {
    /// A Sync answered CURSOR_TRIMMED: start rebuilding from the conversations.
    pub(super) fn start_recovery(&mut self, message: &str) {
        let Some(first) = first_retained_inbox_seq(message) else {
            // Not a message this SDK understands: nothing safe to do but wait for the
            // next connection (which syncs again).
            return;
        };
        self.recovery = Some(Recovery {
            resume_after: (first - 1).max(self.cursors.inbox),
            listing: true,
            ..Default::default()
        });
        self.list_page(0);
    }

    fn list_page(&mut self, offset: u32) {
        let id = self.req_id();
        self.in_flight.insert(id, InFlight::RecoveryList);
        self.transmit.push_back(Frame {
            req_id: id,
            body: Some(Body::ListConversations(pb::ListConversations {
                limit: LIST_PAGE,
                offset,
            })),
        });
    }

    fn recovery_pull(&mut self, conv: &str, after: u64, until: u64) {
        let id = self.req_id();
        self.in_flight
            .insert(id, InFlight::RecoveryPull(conv.to_string()));
        self.transmit.push_back(Frame {
            req_id: id,
            body: Some(Body::Pull(pb::Pull {
                conversation: conv.to_string(),
                after_seq: after,
                until_seq: until,
                limit: PULL_PAGE,
                before_seq: 0,
            })),
        });
    }

    /// The answer to a recovery's ListConversations.
    pub(super) fn on_recovery_list(&mut self, body: Body, now: Instant) {
        let Some(r) = self.recovery.as_mut() else {
            return;
        };
        let Body::ConversationList(list) = body else {
            // Failed: the next connection syncs (and recovers) again.
            self.recovery = None;
            return;
        };
        let n = list.conversations.len() as u32;
        for c in list.conversations {
            if c.read_diffusion || self.read_diffusion.contains(&c.conversation) {
                continue; // followed by its own cursor (Pull)
            }
            let have = self
                .cursors
                .delivered
                .get(&c.conversation)
                .copied()
                .unwrap_or(0);
            if c.last_seq > have {
                r.todo.insert(c.conversation, c.last_seq);
            }
        }
        r.listed += n;
        if n == LIST_PAGE && r.listed < list.total {
            let offset = r.listed;
            self.list_page(offset);
        } else {
            r.listing = false;
            self.pump_recovery(now);
        }
    }

    /// The answer to a recovery Pull of `conv`.
    pub(super) fn on_recovery_pull(&mut self, conv: String, body: Body, now: Instant) {
        let Some(r) = self.recovery.as_mut() else {
            return;
        };
        r.pulling.remove(&conv);
        match body {
            Body::PullResult(p) => {
                let until = r.todo.get(&conv).copied().unwrap_or(0);
                let served = p.to_seq;
                for m in p.messages {
                    self.deliver(m);
                }
                let have = self.cursors.delivered.get(&conv).copied().unwrap_or(0);
                let r = self.recovery.as_mut().expect("checked above");
                // Done when the listed last seq is reached, or nothing more came.
                if have >= until || served == 0 || p.complete {
                    r.todo.remove(&conv);
                }
            }
            Body::Error(e)
                if e.code == ErrorCode::CursorTrimmed as i32 && !r.restarted.contains(&conv) =>
            {
                // The timeline was trimmed too: from its first retained seq.
                r.restarted.insert(conv.clone());
                r.restart.insert(conv);
            }
            _ => {
                // FORBIDDEN (left meanwhile) or anything else: nothing to rebuild there.
                r.todo.remove(&conv);
            }
        }
        self.pump_recovery(now);
    }

    /// Sends the next Pulls; once nothing is left, ends the recovery and syncs on.
    fn pump_recovery(&mut self, now: Instant) {
        loop {
            let Some(r) = self.recovery.as_mut() else {
                return;
            };
            if r.listing {
                return;
            }
            if r.pulling.len() >= PARALLEL_PULLS {
                return;
            }
            let next = r
                .todo
                .iter()
                .find(|(c, _)| !r.pulling.contains(*c))
                .map(|(c, u)| (c.clone(), *u));
            let Some((conv, until)) = next else {
                break;
            };
            r.pulling.insert(conv.clone());
            let after = if r.restart.remove(&conv) {
                0
            } else {
                self.cursors.delivered.get(&conv).copied().unwrap_or(0)
            };
            self.recovery_pull(&conv, after, until);
        }
        let Some(r) = self.recovery.as_ref() else {
            return;
        };
        if !r.is_idle() {
            return;
        }
        let resume = r.resume_after;
        self.recovery = None;
        if resume > self.cursors.inbox {
            self.cursors.inbox = resume;
            self.cursors_dirty = true;
            self.schedule_ack(now);
        }
        // Pushes that arrived meanwhile: those at or below the new cursor are covered.
        let cursor = self.cursors.inbox;
        self.buffered.retain(|s, _| *s > cursor);
        while let Some(m) = self.buffered.remove(&(self.cursors.inbox + 1)) {
            self.deliver(m);
            self.cursors.inbox += 1;
        }
        self.start_sync();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tern_proto::pb::{self, ErrorCode};
    use tern_proto::{Body, Frame};

    use super::super::{Cursors, Engine, Event};
    use super::first_retained_inbox_seq;

    #[test]
    fn the_first_retained_seq_is_read_from_the_message() {
        assert_eq!(
            first_retained_inbox_seq(
                "inbox trimmed by retention: after_inbox_seq 3 is below the first retained inbox seq 41 (inbox head 90); rebuild"
            ),
            Some(41)
        );
        assert_eq!(first_retained_inbox_seq("cursor trimmed"), None);
        assert_eq!(first_retained_inbox_seq("first retained inbox seq 0"), None);
    }

    fn msg(conv: &str, seq: u64) -> pb::Message {
        pb::Message {
            conversation: conv.into(),
            seq,
            sender: "ann".into(),
            body: format!("{conv}#{seq}").into_bytes().into(),
            ..Default::default()
        }
    }

    fn tx(e: &mut Engine) -> Vec<Frame> {
        std::iter::from_fn(|| e.poll_transmit()).collect()
    }

    fn got(e: &mut Engine) -> Vec<(String, u64)> {
        std::iter::from_fn(|| e.poll_event())
            .filter_map(|ev| match ev {
                Event::Message { message, .. } => Some((message.conversation, message.seq)),
                _ => None,
            })
            .collect()
    }

    fn answer(e: &mut Engine, req_id: u64, body: Body, now: Instant) {
        e.handle_frame(
            Frame {
                req_id,
                body: Some(body),
            },
            now,
        );
    }

    fn info(conv: &str, last_seq: u64) -> pb::ConversationInfo {
        pb::ConversationInfo {
            conversation: conv.into(),
            last_seq,
            ..Default::default()
        }
    }

    /// A device that had d:a 1..2 and g:1 1 (inbox cursor 3) comes back to an inbox
    /// trimmed below 10: it lists, pulls each conversation from what it has (g:1's
    /// timeline was trimmed too: from its start), then syncs on from 9 and skips what the
    /// pulls delivered. Everything once, in order per conversation; no Sync meanwhile.
    #[test]
    fn a_trimmed_inbox_is_rebuilt_from_the_conversations_without_duplicates() {
        let now = Instant::now();
        let cursors = Cursors {
            store_epoch: "ep".into(),
            inbox: 3,
            delivered: [("d:a".to_string(), 2), ("g:1".to_string(), 1)].into(),
            ..Default::default()
        };
        let mut e = Engine::new("bob", cursors, vec![]);
        e.on_connected("ep");
        let sync = tx(&mut e).remove(0);
        let trimmed = pb::Error {
            code: ErrorCode::CursorTrimmed as i32,
            message: "... below the first retained inbox seq 10 (inbox head 12); rebuild".into(),
            ..Default::default()
        };
        answer(&mut e, sync.req_id, Body::Error(trimmed), now);
        let list = tx(&mut e);
        assert!(
            matches!(list[0].body, Some(Body::ListConversations(_))),
            "{list:?}"
        );
        answer(
            &mut e,
            list[0].req_id,
            Body::ConversationList(pb::ConversationList {
                conversations: vec![info("d:a", 5), info("g:1", 4), info("d:c", 0)],
                total: 3,
                ..Default::default()
            }),
            now,
        );
        let pulls = tx(&mut e);
        let asked: Vec<(String, u64, u64)> = pulls
            .iter()
            .map(|f| match &f.body {
                Some(Body::Pull(p)) => (p.conversation.clone(), p.after_seq, p.until_seq),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(asked, [("d:a".into(), 2, 5), ("g:1".into(), 1, 4)]);
        // d:a: 3..5.
        answer(
            &mut e,
            pulls[0].req_id,
            Body::PullResult(pb::PullResult {
                conversation: "d:a".into(),
                messages: (3..=5).map(|s| msg("d:a", s)).collect(),
                from_seq: 3,
                to_seq: 5,
                last_seq: 5,
                complete: true,
                first_seq: 1,
            }),
            now,
        );
        // g:1: trimmed below 3, so from the start.
        answer(
            &mut e,
            pulls[1].req_id,
            Body::Error(pb::Error {
                code: ErrorCode::CursorTrimmed as i32,
                message: "the first retained seq is 3".into(),
                ..Default::default()
            }),
            now,
        );
        let again = tx(&mut e);
        match &again[0].body {
            Some(Body::Pull(p)) => assert_eq!((p.conversation.as_str(), p.after_seq), ("g:1", 0)),
            other => panic!("{other:?}"),
        }
        answer(
            &mut e,
            again[0].req_id,
            Body::PullResult(pb::PullResult {
                conversation: "g:1".into(),
                messages: (3..=4).map(|s| msg("g:1", s)).collect(),
                from_seq: 3,
                to_seq: 4,
                last_seq: 4,
                complete: true,
                first_seq: 3,
            }),
            now,
        );
        // Done: the inbox goes on from 9.
        let next = tx(&mut e);
        let sync = next
            .iter()
            .find_map(|f| match &f.body {
                Some(Body::Sync(s)) => Some((f.req_id, s.after_inbox_seq)),
                _ => None,
            })
            .expect("a sync after the recovery");
        assert_eq!(sync.1, Some(9));
        answer(
            &mut e,
            sync.0,
            Body::SyncResult(pb::SyncResult {
                items: vec![
                    pb::InboxItem {
                        inbox_seq: 10,
                        message: Some(msg("d:a", 5)),
                    },
                    pb::InboxItem {
                        inbox_seq: 11,
                        message: Some(msg("g:1", 4)),
                    },
                    pb::InboxItem {
                        inbox_seq: 12,
                        message: Some(msg("d:a", 6)),
                    },
                ],
                from_inbox_seq: 9,
                to_inbox_seq: 12,
                inbox_head: 12,
                complete: true,
                ..Default::default()
            }),
            now,
        );
        let want: Vec<(String, u64)> = [
            ("d:a", 3),
            ("d:a", 4),
            ("d:a", 5),
            ("g:1", 3),
            ("g:1", 4),
            ("d:a", 6),
        ]
        .iter()
        .map(|(c, s)| (c.to_string(), *s))
        .collect();
        assert_eq!(got(&mut e), want);
        assert_eq!(e.cursors().inbox, 12);
        assert_eq!(e.cursors().delivered["d:a"], 6);
    }
}
