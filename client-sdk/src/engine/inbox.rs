//! Receiving: every message reaches the app once and in order. Inbox items (pushes with
//! an inbox seq, Sync pages) follow the one inbox cursor; read-diffusion conversations
//! (pushes with inbox seq 0, Pull pages) follow a cursor each. A hole is buffered around
//! and repaired with a Sync or a Pull of exactly the missing range.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use tern_proto::pb;
use tern_proto::{Body, Frame};

use super::{Cursors, Engine, Event, InFlight};

/// Exactly once to the app: the messages the app has confirmed, so that the cursors
/// saved and the acks sent never go past one it has not (see [`Engine::require_confirm`]).
#[derive(Debug, Clone, Default)]
pub(super) struct Confirm {
    /// Per conversation, every seq up to this one is confirmed (cumulative).
    confirmed: BTreeMap<String, u64>,
    /// Inbox items delivered but not yet confirmed: (inbox seq, conversation, seq), in
    /// inbox order. The durable inbox cursor stops just before the first.
    waiting: VecDeque<(u64, String, u64)>,
}

/// How far one read-diffusion conversation has been delivered.
#[derive(Debug, Default)]
pub(super) struct ConvFollow {
    pub(super) cursor: u64,
    pub(super) buffered: BTreeMap<u64, pb::Message>,
    pub(super) pulling: bool,
}

impl Engine {
    pub(super) fn start_sync(&mut self) {
        if self.syncing || !self.connected || !self.receive || self.recovery.is_some() {
            return;
        }
        self.syncing = true;
        let id = self.req_id();
        self.in_flight.insert(id, InFlight::Sync);
        self.transmit.push_back(Frame {
            req_id: id,
            body: Some(Body::Sync(pb::Sync {
                after_inbox_seq: Some(self.cursors.inbox),
                limit: 500,
            })),
        });
    }

    fn start_pull(&mut self, conv: &str, until: u64) {
        if !self.connected {
            return;
        }
        let f = self.follows.entry(conv.to_string()).or_default();
        if f.pulling {
            return;
        }
        f.pulling = true;
        let after = f.cursor;
        let id = self.req_id();
        self.in_flight.insert(id, InFlight::Pull(conv.to_string()));
        self.transmit.push_back(Frame {
            req_id: id,
            body: Some(Body::Pull(pb::Pull {
                conversation: conv.to_string(),
                after_seq: after,
                until_seq: until,
                limit: 500,
                before_seq: 0,
            })),
        });
    }

    /// Emits `message` unless this device delivered its (conversation, seq) already
    /// (see [`super::Cursors::delivered`]).
    pub(super) fn deliver(&mut self, message: pb::Message) {
        // Not from an inbox item (a recovery pull after CURSOR_TRIMMED, or an inbox item
        // the recovery delivers from its buffer): with confirmation on, it holds the
        // durable inbox cursor where it is now, so after a crash the same recovery runs
        // again from the confirmed seq. (Read-diffusion conversations have their own
        // cursor, held back in `durable_cursors`.)
        if !self.read_diffusion.contains(&message.conversation) {
            let next = self.cursors.inbox + 1;
            self.hold_inbox_for(next, &message);
        }
        self.emit_once(message);
    }

    /// With confirmation on: `message` keeps the durable inbox cursor below `inbox_seq`
    /// until it is confirmed.
    fn hold_inbox_for(&mut self, inbox_seq: u64, message: &pb::Message) {
        if let Some(c) = &mut self.confirm {
            let done = c.confirmed.get(&message.conversation).copied().unwrap_or(0);
            if message.seq > done {
                c.waiting
                    .push_back((inbox_seq, message.conversation.clone(), message.seq));
            }
        }
    }

    /// Emits `message` unless its (conversation, seq) was delivered already.
    fn emit_once(&mut self, message: pb::Message) {
        if message.seq > 0 {
            let have = self
                .cursors
                .delivered
                .entry(message.conversation.clone())
                .or_insert(0);
            if message.seq <= *have {
                return;
            }
            *have = message.seq;
            self.cursors_dirty = true;
        }
        let own = message.sender == self.user;
        let follow_up = change_of(&message);
        self.events.push_back(Event::Message { message, own });
        if let Some(ev) = follow_up {
            self.events.push_back(ev);
        }
    }

    /// [`Engine::deliver`] for inbox item `inbox_seq`; with confirmation on, the item
    /// holds the durable inbox cursor back until its message is confirmed.
    fn deliver_inbox(&mut self, inbox_seq: u64, message: pb::Message) {
        self.hold_inbox_for(inbox_seq, &message);
        self.emit_once(message);
    }

    /// Exactly once to the app: from now on the cursors to save
    /// ([`Engine::durable_cursors`]) and the acks sent cover only messages confirmed with
    /// [`Engine::confirm`]. Call before the first connection; what the loaded cursors
    /// cover counts as confirmed. Delivery to the app is unchanged (once per run; the
    /// unconfirmed come again only after a restart, from the saved cursors).
    pub fn require_confirm(&mut self) {
        if self.confirm.is_none() {
            self.confirm = Some(Confirm {
                confirmed: self.cursors.delivered.clone(),
                waiting: VecDeque::new(),
            });
        }
    }

    /// Whether [`Engine::require_confirm`] is on.
    pub fn confirm_required(&self) -> bool {
        self.confirm.is_some()
    }

    /// The app has processed every message of `conversation` up to `seq` (cumulative;
    /// clamped to what was delivered). No-op unless [`Engine::require_confirm`].
    pub fn confirm(&mut self, conversation: &str, seq: u64, now: Instant) {
        let delivered = self
            .cursors
            .delivered
            .get(conversation)
            .copied()
            .unwrap_or(0);
        let Some(c) = &mut self.confirm else { return };
        Self::apply_confirm(c, conversation, seq.min(delivered));
        self.cursors_dirty = true;
        self.schedule_ack(now);
    }

    fn apply_confirm(c: &mut Confirm, conversation: &str, seq: u64) {
        let level = c.confirmed.entry(conversation.to_string()).or_insert(0);
        if seq <= *level {
            return;
        }
        *level = seq;
        let confirmed = &c.confirmed;
        c.waiting
            .retain(|(_, conv, s)| *s > confirmed.get(conv).copied().unwrap_or(0));
    }

    /// The cursors to persist: [`Engine::cursors`], except that with confirmation on they
    /// stop before the first message the app has not confirmed (so after a restart it
    /// comes again; the confirmed ones do not).
    pub fn durable_cursors(&self) -> Cursors {
        self.durable_cursors_if_confirmed(&[])
    }

    /// [`Engine::durable_cursors`] as they would be after confirming `(conversation,
    /// seq)` for each of `confirms` (for a store that commits messages and cursors in one
    /// write, before the confirmation is final).
    pub fn durable_cursors_if_confirmed(&self, confirms: &[(String, u64)]) -> Cursors {
        let mut out = self.cursors.clone();
        let Some(c) = &self.confirm else { return out };
        let mut c = c.clone();
        for (conv, seq) in confirms {
            let delivered = self.cursors.delivered.get(conv).copied().unwrap_or(0);
            Self::apply_confirm(&mut c, conv, (*seq).min(delivered));
        }
        if let Some((first, _, _)) = c.waiting.front() {
            out.inbox = out.inbox.min(first - 1);
        }
        for (conv, d) in out.delivered.iter_mut() {
            let done = c.confirmed.get(conv).copied().unwrap_or(0);
            if *d > done {
                *d = done;
                if let Some(f) = out.conversations.get_mut(conv) {
                    *f = (*f).min(done);
                }
            }
        }
        out
    }

    /// The inbox cursor acks may cover: everything delivered, or with confirmation on,
    /// everything confirmed.
    pub(super) fn ackable_inbox(&self) -> u64 {
        match self.confirm.as_ref().and_then(|c| c.waiting.front()) {
            Some((first, _, _)) => self.cursors.inbox.min(first - 1),
            None => self.cursors.inbox,
        }
    }

    /// An inbox item (from a push or a Sync page).
    pub(super) fn inbox_item(&mut self, inbox_seq: u64, message: pb::Message, now: Instant) {
        if inbox_seq <= self.cursors.inbox {
            return; // already delivered
        }
        if inbox_seq > self.cursors.inbox + 1 {
            self.buffered.insert(inbox_seq, message);
            self.start_sync();
            return;
        }
        self.deliver_inbox(inbox_seq, message);
        self.cursors.inbox = inbox_seq;
        while let Some(m) = self.buffered.remove(&(self.cursors.inbox + 1)) {
            self.deliver_inbox(self.cursors.inbox + 1, m);
            self.cursors.inbox += 1;
        }
        // Anything left buffered below the cursor is stale.
        let cursor = self.cursors.inbox;
        self.buffered.retain(|s, _| *s > cursor);
        self.cursors_dirty = true;
        self.schedule_ack(now);
    }

    /// A message of a read-diffusion conversation (push with inbox_seq 0, or Pull).
    pub(super) fn conv_item(&mut self, message: pb::Message) {
        let conv = message.conversation.clone();
        if self.read_diffusion.insert(conv.clone()) {
            self.cursors.conversations.entry(conv.clone()).or_insert(0);
        }
        let f = self.follows.entry(conv.clone()).or_default();
        let seq = message.seq;
        if seq <= f.cursor {
            return;
        }
        if seq > f.cursor + 1 {
            f.buffered.insert(seq, message);
            self.start_pull(&conv, seq - 1);
            return;
        }
        let mut out = vec![message];
        f.cursor = seq;
        while let Some(m) = f.buffered.remove(&(f.cursor + 1)) {
            f.cursor += 1;
            out.push(m);
        }
        let cursor = f.cursor;
        f.buffered.retain(|s, _| *s > cursor);
        self.cursors.conversations.insert(conv, cursor);
        self.cursors_dirty = true;
        for m in out {
            self.deliver(m);
        }
    }

    /// The answer to a Sync.
    pub(super) fn on_sync_response(&mut self, body: Body, now: Instant) {
        self.syncing = false;
        // A failed sync is retried on the next gap or connection; a trimmed cursor is
        // rebuilt from the conversations (8.11).
        let r = match body {
            Body::SyncResult(r) => r,
            Body::Error(e) if e.code == pb::ErrorCode::CursorTrimmed as i32 => {
                self.start_recovery(&e.message);
                return;
            }
            _ => return,
        };
        for item in r.items {
            if let Some(m) = item.message {
                self.inbox_item(item.inbox_seq, m, now);
            }
        }
        // Next page; or, if pushes above the head are still waiting on a hole,
        // one more sync as long as the last one made progress.
        let progressed = r.to_inbox_seq > r.from_inbox_seq;
        if !r.complete || (!self.buffered.is_empty() && progressed) {
            self.start_sync();
        }
        for head in r.read_diffusion {
            if self.read_diffusion.insert(head.conversation.clone()) {
                self.cursors
                    .conversations
                    .entry(head.conversation.clone())
                    .or_insert(0);
            }
            let cursor = self
                .follows
                .get(&head.conversation)
                .map(|f| f.cursor)
                .unwrap_or(0);
            if head.last_seq > cursor {
                self.start_pull(&head.conversation, head.last_seq);
            }
        }
    }

    /// The answer to a Pull.
    pub(super) fn on_pull_response(&mut self, conv: String, body: Body) {
        if let Some(f) = self.follows.get_mut(&conv) {
            f.pulling = false;
        }
        let r = match body {
            Body::PullResult(r) => r,
            Body::Error(e) if e.code == pb::ErrorCode::CursorTrimmed as i32 => {
                // Retention trimmed the timeline past this cursor: follow on from its
                // first retained seq (a Pull from 0 is served from there, first_seq says
                // where), at most once per answer so a failing server cannot loop us.
                let f = self.follows.entry(conv.clone()).or_default();
                if f.cursor > 0 && !f.pulling {
                    f.pulling = true;
                    let id = self.req_id();
                    self.in_flight.insert(id, InFlight::Pull(conv.clone()));
                    self.transmit.push_back(Frame {
                        req_id: id,
                        body: Some(Body::Pull(pb::Pull {
                            conversation: conv,
                            after_seq: 0,
                            until_seq: 0,
                            limit: 500,
                            before_seq: 0,
                        })),
                    });
                }
                return;
            }
            _ => return,
        };
        // History before first_seq is not ours to read (the group's history visibility):
        // the conversation starts there for us, not with a gap.
        let f = self.follows.entry(conv.clone()).or_default();
        if r.first_seq > f.cursor + 1 {
            f.cursor = r.first_seq - 1;
            let cursor = f.cursor;
            f.buffered.retain(|s, _| *s > cursor);
            self.cursors.conversations.insert(conv.clone(), cursor);
            self.cursors_dirty = true;
        }
        for m in r.messages {
            self.conv_item(m);
        }
        let f = self.follows.entry(conv.clone()).or_default();
        if f.cursor < r.last_seq && (!r.complete || !f.buffered.is_empty()) {
            self.start_pull(&conv, 0);
        }
    }
}

/// What a delivered message changes besides itself, as the event that follows its
/// [`Event::Message`]: an EDIT entry (the target's new text; none once recalled), a
/// RECALL entry, or a tombstone (expired, or deleted by this user on a device).
pub(super) fn change_of(m: &pb::Message) -> Option<Event> {
    let kind = pb::MessageKind::try_from(m.kind).unwrap_or(pb::MessageKind::Unspecified);
    match kind {
        pb::MessageKind::Edit if !m.recalled && !m.deleted && !m.expired => Some(Event::Edited {
            conversation: m.conversation.clone(),
            seq: m.target_seq,
            entry_seq: m.seq,
            sender: m.sender.clone(),
            body: m.body.clone(),
            content_type: m.content_type.clone(),
            edited_ms: m.server_time_ms,
        }),
        pb::MessageKind::Recall => Some(Event::Recalled {
            conversation: m.conversation.clone(),
            seq: m.target_seq,
            entry_seq: m.seq,
            by: m.sender.clone(),
        }),
        _ if m.deleted => Some(Event::Hidden {
            conversation: m.conversation.clone(),
            seq: m.seq,
        }),
        _ if m.expired => Some(Event::Expired {
            conversation: m.conversation.clone(),
            seq: m.seq,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod confirm_tests {
    //! Exactly once to the app: cursors to save and acks stop before the first message
    //! the app has not confirmed; a restart from them delivers it again, once.

    use super::*;

    fn push(inbox_seq: u64, conv: &str, seq: u64) -> Frame {
        Frame {
            req_id: 0,
            body: Some(Body::Push(pb::MessagePush {
                message: Some(pb::Message {
                    conversation: conv.into(),
                    seq,
                    sender: "bob".into(),
                    ..Default::default()
                }),
                inbox_seq,
            })),
        }
    }

    fn connected(cursors: Cursors) -> Engine {
        let mut e = Engine::new("alice", cursors, vec![]);
        e.require_confirm();
        e.on_connected("ep");
        while e.poll_transmit().is_some() {}
        e
    }

    fn delivered(e: &mut Engine) -> Vec<(String, u64)> {
        std::iter::from_fn(|| e.poll_event())
            .filter_map(|ev| match ev {
                Event::Message { message, .. } => Some((message.conversation, message.seq)),
                _ => None,
            })
            .collect()
    }

    fn acks(e: &mut Engine) -> Vec<u64> {
        std::iter::from_fn(|| e.poll_transmit())
            .filter_map(|f| match f.body {
                Some(Body::Ack(a)) => Some(a.inbox_seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn cursors_and_acks_wait_for_the_app_and_a_restart_redelivers_once() {
        let now = Instant::now();
        let later = now + crate::engine::ACK_DELAY * 2;
        let mut e = connected(Cursors {
            store_epoch: "ep".into(),
            ..Default::default()
        });
        // Inbox 1..=3: a:1, b:1, a:2.
        e.handle_frame(push(1, "a", 1), now);
        e.handle_frame(push(2, "b", 1), now);
        e.handle_frame(push(3, "a", 2), now);
        assert_eq!(delivered(&mut e).len(), 3, "delivered at once, as always");
        assert_eq!(
            e.cursors().inbox,
            3,
            "the live cursor moves (no doubles in a run)"
        );
        let d = e.durable_cursors();
        assert_eq!(
            (d.inbox, d.delivered.get("a"), d.delivered.get("b")),
            (0, Some(&0), Some(&0))
        );
        e.handle_timeout(later);
        assert!(acks(&mut e).is_empty(), "nothing acked before a confirm");

        // b:1 confirmed: inbox 1 (a:1) still holds the inbox cursor back.
        e.confirm("b", 1, later);
        let d = e.durable_cursors();
        assert_eq!((d.inbox, d.delivered["a"], d.delivered["b"]), (0, 0, 1));
        // a up to 1: inbox 1 and 2 are done, 3 (a:2) is not.
        e.confirm("a", 1, later);
        let d = e.durable_cursors();
        assert_eq!((d.inbox, d.delivered["a"]), (2, 1));
        e.handle_timeout(later + crate::engine::ACK_DELAY * 2);
        assert_eq!(acks(&mut e), [2]);
        // A confirm past what was delivered is clamped.
        e.confirm("a", 99, later);
        assert_eq!(e.durable_cursors().delivered["a"], 2);
        assert_eq!(e.durable_cursors().inbox, 3);

        // Restart from a state saved before the last confirm: a:2 comes again, once;
        // a:1 and b:1 do not.
        let saved = Cursors {
            store_epoch: "ep".into(),
            inbox: 2,
            conversations: Default::default(),
            delivered: [("a".to_string(), 1), ("b".to_string(), 1)].into(),
        };
        let mut e = connected(saved);
        e.handle_frame(push(3, "a", 2), now);
        e.handle_frame(push(3, "a", 2), now);
        assert_eq!(delivered(&mut e), [("a".to_string(), 2)]);
    }

    fn answer(e: &mut Engine, req_id: u64, body: Body, now: Instant) -> Vec<Frame> {
        e.handle_frame(
            Frame {
                req_id,
                body: Some(body),
            },
            now,
        );
        std::iter::from_fn(|| e.poll_transmit()).collect()
    }

    /// Messages a CURSOR_TRIMMED recovery pulls hold the saved inbox cursor where it was
    /// until confirmed: after a crash the recovery runs again and delivers them again.
    #[test]
    fn recovered_messages_hold_the_inbox_cursor_until_confirmed() {
        let now = Instant::now();
        let mut e = Engine::new(
            "alice",
            Cursors {
                store_epoch: "ep".into(),
                inbox: 3,
                delivered: [("a".to_string(), 2)].into(),
                ..Default::default()
            },
            vec![],
        );
        e.require_confirm();
        e.on_connected("ep");
        let sync = e.poll_transmit().unwrap();
        let trimmed = pb::Error {
            code: pb::ErrorCode::CursorTrimmed as i32,
            message: "below the first retained inbox seq 10 (inbox head 12); rebuild".into(),
            ..Default::default()
        };
        let list = answer(&mut e, sync.req_id, Body::Error(trimmed), now);
        let pulls = answer(
            &mut e,
            list[0].req_id,
            Body::ConversationList(pb::ConversationList {
                conversations: vec![pb::ConversationInfo {
                    conversation: "a".into(),
                    last_seq: 5,
                    ..Default::default()
                }],
                total: 1,
                ..Default::default()
            }),
            now,
        );
        let messages = (3..=5)
            .map(|seq| pb::Message {
                conversation: "a".into(),
                seq,
                sender: "bob".into(),
                ..Default::default()
            })
            .collect();
        answer(
            &mut e,
            pulls[0].req_id,
            Body::PullResult(pb::PullResult {
                conversation: "a".into(),
                messages,
                from_seq: 3,
                to_seq: 5,
                last_seq: 5,
                complete: true,
                first_seq: 1,
            }),
            now,
        );
        assert_eq!(delivered(&mut e).len(), 3);
        assert!(
            e.cursors().inbox >= 9,
            "the live cursor jumped past the trim"
        );
        let d = e.durable_cursors();
        assert_eq!((d.inbox, d.delivered["a"]), (3, 2), "held until confirmed");
        e.confirm("a", 4, now);
        assert_eq!(e.durable_cursors().inbox, 3, "a:5 still unconfirmed");
        e.confirm("a", 5, now);
        assert_eq!(e.durable_cursors().inbox, e.cursors().inbox);
        assert_eq!(e.durable_cursors().delivered["a"], 5);
    }

    #[test]
    fn without_confirm_required_nothing_changes() {
        let now = Instant::now();
        let mut e = Engine::new("alice", Cursors::default(), vec![]);
        e.on_connected("ep");
        while e.poll_transmit().is_some() {}
        e.handle_frame(push(1, "a", 1), now);
        assert_eq!(e.durable_cursors(), *e.cursors());
        assert_eq!(e.durable_cursors().inbox, 1);
        e.confirm("a", 1, now); // a no-op
        assert!(!e.confirm_required());
    }
}
