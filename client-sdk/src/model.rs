//! [`ConversationListModel`]: the conversation list ("red dot") an app binds its UI to.
//! Loaded once from `ListConversations` ([`Client::conversation_model`](crate::Client::conversation_model)),
//! then kept current by handing it every [`Event`] the client yields
//! ([`ConversationListModel::apply`]); no polling. A pure struct: no I/O, no clock.
//!
//! The rules, the server's own (docs/PROTOCOL.md 9.1), applied to events:
//! - a message (any kind) becomes the conversation's last message (seq, sender, time,
//!   kind, an 80-character text preview; empty for non-text, recalled, expired or deleted
//!   content) and moves the conversation up the list;
//! - someone else's message after the read position counts as unread (and as a mention
//!   when it names this user or is an @all), unless it is an EDIT or RECALL entry or
//!   arrives already recalled;
//! - this user's own message (or group event they caused), from any device, marks the
//!   conversation read up to it; their own EDIT and RECALL entries do not;
//! - an own [`Event::Read`] (one of the user's devices read) moves the read position
//!   forward and drops what it covers from unread and mentions;
//! - [`Event::SettingsChanged`] sets muted (left out of [`total_unread`]) and pinned
//!   (listed first);
//! - a RECALL of a message still unread takes it out of unread (and out of mentions when
//!   the model saw it mention the user);
//! - an EDIT entry shows its new text as the preview (the server lists the entry as the
//!   last message); [`Event::Hidden`] of the last message clears the preview.
//!
//! A message in a conversation the model does not know (created after the load) adds a
//! row. Events already reflected by the load (a message at or below the loaded last seq,
//! a read position not ahead) change nothing, so events that raced the load are safe to
//! apply. Where the load's counts cannot be split exactly (a read position moved to the
//! middle of messages that were unread at load time; a recall of a message that mentioned
//! the user before the load), the model keeps the closest bound and a reload gives the
//! server's exact numbers.
//!
//! [`total_unread`]: ConversationListModel::total_unread

use std::collections::{BTreeMap, HashMap};

use tern_proto::pb::{self, ConversationKind, MessageKind};

use crate::event::Event;

/// Characters of a text message in the preview (as the server).
const PREVIEW_CHARS: usize = 80;

/// The conversation list, sorted as the server sorts it: pinned first, then most recently
/// active first. Each row is a [`pb::ConversationInfo`], the same as the server's.
#[derive(Debug, Clone, Default)]
pub struct ConversationListModel {
    user: String,
    rows: Vec<pb::ConversationInfo>,
    /// Unread of the conversations the load did not include (a partial load), from the
    /// server's total.
    unloaded_unread: u64,
    track: HashMap<String, Track>,
    version: u64,
}

/// What the model knows beyond the row, per conversation.
#[derive(Debug, Clone, Default)]
struct Track {
    /// The last seq when loaded: what is at or below it is in the loaded counts.
    loaded_last_seq: u64,
    /// Unread and mentions of the load still standing (messages at or below
    /// `loaded_last_seq`, seqs unknown).
    loaded_unread: u64,
    loaded_mentions: u64,
    /// Messages counted since the load: seq -> it mentions the user.
    counted: BTreeMap<u64, bool>,
}

impl ConversationListModel {
    /// An empty list for `user` (fill it with [`ConversationListModel::load`]).
    pub fn new(user: &str) -> Self {
        Self {
            user: user.to_string(),
            ..Default::default()
        }
    }

    /// The list from a `ListConversations` answer (all pages merged into one, or just the
    /// first: `total_unread` still counts the others).
    pub fn from_list(user: &str, list: pb::ConversationList) -> Self {
        let mut m = Self::new(user);
        m.load(list);
        m
    }

    /// Replaces everything with a fresh answer from the server.
    pub fn load(&mut self, list: pb::ConversationList) {
        let loaded: u64 = list
            .conversations
            .iter()
            .filter(|c| !c.muted)
            .map(|c| c.unread)
            .sum();
        self.unloaded_unread = list.total_unread.saturating_sub(loaded);
        self.track = list
            .conversations
            .iter()
            .map(|c| {
                (
                    c.conversation.clone(),
                    Track {
                        loaded_last_seq: c.last_seq,
                        loaded_unread: c.unread,
                        loaded_mentions: c.mentions,
                        counted: BTreeMap::new(),
                    },
                )
            })
            .collect();
        self.rows = list.conversations;
        self.sort();
        self.version += 1;
    }

    /// The rows, pinned first, then most recently active first.
    pub fn rows(&self) -> &[pb::ConversationInfo] {
        &self.rows
    }

    pub fn get(&self, conversation: &str) -> Option<&pb::ConversationInfo> {
        self.rows.iter().find(|c| c.conversation == conversation)
    }

    /// Unread over all conversations but the muted ones (the badge on the app icon).
    pub fn total_unread(&self) -> u64 {
        self.unloaded_unread
            + self
                .rows
                .iter()
                .filter(|c| !c.muted)
                .map(|c| c.unread)
                .sum::<u64>()
    }

    /// Grows by one with every change: redraw when it moved.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Takes one event into account; true when the list changed.
    pub fn apply(&mut self, event: &Event) -> bool {
        let changed = match event {
            Event::Message { message, .. } => self.on_message(message),
            Event::Read {
                conversation,
                read_seq,
                own: true,
                ..
            } => self.on_read(conversation, *read_seq),
            Event::SettingsChanged {
                conversation,
                muted,
                pinned,
            } => self.on_settings(conversation, *muted, *pinned),
            Event::Hidden { conversation, seq } => self.on_hidden(conversation, *seq),
            _ => false,
        };
        if changed {
            self.version += 1;
        }
        changed
    }

    /// The answer to this device's own [`Client::mark_read`](crate::Client::mark_read)
    /// (the same as the [`Event::Read`] that follows it).
    pub fn apply_read_state(&mut self, state: &pb::ReadState) -> bool {
        let changed = self.on_read(&state.conversation, state.read_seq);
        if changed {
            self.version += 1;
        }
        changed
    }

    /// The answer to this device's own settings change.
    pub fn apply_settings(&mut self, s: &pb::ConversationSettings) -> bool {
        let changed = self.on_settings(&s.conversation, s.muted, s.pinned);
        if changed {
            self.version += 1;
        }
        changed
    }

    fn index(&self, conversation: &str) -> Option<usize> {
        self.rows
            .iter()
            .position(|c| c.conversation == conversation)
    }

    /// Pinned first, then most recent activity first; ties by id (stable).
    fn sort(&mut self) {
        self.rows.sort_by(|a, b| {
            b.pinned
                .cmp(&a.pinned)
                .then_with(|| b.last_time_ms.cmp(&a.last_time_ms))
                .then_with(|| a.conversation.cmp(&b.conversation))
        });
    }

    /// A row for a conversation first seen in an event: nothing before `seq` unread.
    fn add_row(&mut self, m: &pb::Message) -> usize {
        let conv = m.conversation.clone();
        let (kind, name) = match conv.strip_prefix("d:").and_then(|r| r.split_once(':')) {
            Some((a, b)) => {
                let peer = if a == self.user { b } else { a };
                (ConversationKind::Direct, peer.to_string())
            }
            None => {
                let name = m
                    .event
                    .as_ref()
                    .map(|e| e.name.clone())
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| conv.clone());
                (ConversationKind::Group, name)
            }
        };
        self.rows.push(pb::ConversationInfo {
            conversation: conv.clone(),
            kind: kind as i32,
            name,
            last_seq: m.seq.saturating_sub(1),
            read_seq: m.seq.saturating_sub(1),
            ..Default::default()
        });
        self.track.insert(
            conv,
            Track {
                loaded_last_seq: m.seq.saturating_sub(1),
                ..Default::default()
            },
        );
        self.rows.len() - 1
    }

    fn on_message(&mut self, m: &pb::Message) -> bool {
        let i = match self.index(&m.conversation) {
            Some(i) => i,
            None => self.add_row(m),
        };
        if m.seq <= self.rows[i].last_seq {
            return false; // in the loaded list already
        }
        let kind = MessageKind::try_from(m.kind).unwrap_or(MessageKind::Unspecified);
        let change = matches!(kind, MessageKind::Edit | MessageKind::Recall);
        let own = m.sender == self.user
            || (m.sender.is_empty() && m.event.as_ref().is_some_and(|e| e.actor == self.user));
        let user = self.user.clone();
        let row = &mut self.rows[i];
        let track = self.track.entry(m.conversation.clone()).or_default();
        row.last_seq = m.seq;
        row.last_sender = m.sender.clone();
        if row.last_sender.is_empty() {
            if let Some(e) = &m.event {
                row.last_sender = e.actor.clone();
            }
        }
        row.last_time_ms = m.server_time_ms;
        row.last_kind = m.kind;
        row.last_preview = preview(m);
        if own && !change {
            // One's own message: everything up to it is read.
            row.read_seq = m.seq;
            row.unread = 0;
            row.mentions = 0;
            track.counted.clear();
            track.loaded_unread = 0;
            track.loaded_mentions = 0;
        } else if !change && !m.recalled && m.seq > row.read_seq {
            let mentions_me = m.mention_all || m.mentions.contains(&user);
            row.unread += 1;
            if mentions_me {
                row.mentions += 1;
            }
            track.counted.insert(m.seq, mentions_me);
        }
        if kind == MessageKind::Recall && m.target_seq > row.read_seq {
            if let Some(mentioned) = track.counted.remove(&m.target_seq) {
                row.unread = row.unread.saturating_sub(1);
                if mentioned {
                    row.mentions = row.mentions.saturating_sub(1);
                }
            } else if m.target_seq <= track.loaded_last_seq && track.loaded_unread > 0 {
                // Unread at load time (own messages never are): one fewer.
                track.loaded_unread -= 1;
                track.loaded_mentions = track.loaded_mentions.min(track.loaded_unread);
                row.unread = row.unread.saturating_sub(1);
                row.mentions = row.mentions.min(row.unread);
            }
        }
        self.sort();
        true
    }

    fn on_read(&mut self, conversation: &str, read_seq: u64) -> bool {
        let Some(i) = self.index(conversation) else {
            return false;
        };
        let row = &mut self.rows[i];
        if read_seq <= row.read_seq {
            return false;
        }
        let track = self.track.entry(conversation.to_string()).or_default();
        row.read_seq = read_seq;
        track.counted = track.counted.split_off(&(read_seq + 1));
        if read_seq >= track.loaded_last_seq {
            track.loaded_unread = 0;
            track.loaded_mentions = 0;
        } else {
            // At most the messages left between the read position and the load's end.
            track.loaded_unread = track.loaded_unread.min(track.loaded_last_seq - read_seq);
            track.loaded_mentions = track.loaded_mentions.min(track.loaded_unread);
        }
        row.unread = track.loaded_unread + track.counted.len() as u64;
        row.mentions =
            track.loaded_mentions + track.counted.values().filter(|m| **m).count() as u64;
        true
    }

    fn on_settings(&mut self, conversation: &str, muted: bool, pinned: bool) -> bool {
        let Some(i) = self.index(conversation) else {
            return false;
        };
        let row = &mut self.rows[i];
        if (row.muted, row.pinned) == (muted, pinned) {
            return false;
        }
        row.muted = muted;
        row.pinned = pinned;
        self.sort();
        true
    }

    fn on_hidden(&mut self, conversation: &str, seq: u64) -> bool {
        let Some(i) = self.index(conversation) else {
            return false;
        };
        let row = &mut self.rows[i];
        if row.last_seq != seq || row.last_preview.is_empty() {
            return false;
        }
        row.last_preview.clear();
        true
    }
}

/// The start of a message's text as the list shows it: text bodies only; empty for
/// anything else and for content that is gone (recalled, expired, deleted).
pub fn preview(m: &pb::Message) -> String {
    if m.recalled || m.expired || m.deleted {
        return String::new();
    }
    let texty = m.content_type.is_empty() || m.content_type.starts_with("text/");
    match (texty, std::str::from_utf8(&m.body)) {
        (true, Ok(text)) => text.chars().take(PREVIEW_CHARS).collect(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn info(conv: &str, last_seq: u64, read_seq: u64, unread: u64, t: u64) -> pb::ConversationInfo {
        pb::ConversationInfo {
            conversation: conv.into(),
            kind: if conv.starts_with("d:") {
                ConversationKind::Direct
            } else {
                ConversationKind::Group
            } as i32,
            name: conv.into(),
            last_seq,
            read_seq,
            unread,
            last_time_ms: t,
            ..Default::default()
        }
    }

    fn msg(conv: &str, seq: u64, from: &str, text: &str, t: u64) -> pb::Message {
        pb::Message {
            conversation: conv.into(),
            seq,
            sender: from.into(),
            body: Bytes::copy_from_slice(text.as_bytes()),
            server_time_ms: t,
            ..Default::default()
        }
    }

    fn ev(message: pb::Message) -> Event {
        Event::Message {
            own: message.sender == "alice",
            message,
        }
    }

    fn model() -> ConversationListModel {
        ConversationListModel::from_list(
            "alice",
            pb::ConversationList {
                conversations: vec![
                    info("d:alice:bob", 5, 3, 2, 500),
                    info("g:1", 10, 10, 0, 1000),
                ],
                total_unread: 2,
                total: 2,
            },
        )
    }

    fn order(m: &ConversationListModel) -> Vec<&str> {
        m.rows().iter().map(|c| c.conversation.as_str()).collect()
    }

    #[test]
    fn a_new_message_counts_moves_up_and_shows_its_preview() {
        let mut m = model();
        assert_eq!(order(&m), ["g:1", "d:alice:bob"]);
        let v = m.version();
        let mut hi = msg("d:alice:bob", 6, "bob", "hi @alice", 2000);
        hi.mentions = vec!["alice".into()];
        assert!(m.apply(&ev(hi.clone())));
        assert!(m.version() > v);
        let c = m.get("d:alice:bob").unwrap();
        assert_eq!((c.last_seq, c.unread, c.mentions), (6, 3, 1));
        assert_eq!(
            (c.last_preview.as_str(), c.last_sender.as_str()),
            ("hi @alice", "bob")
        );
        assert_eq!(order(&m), ["d:alice:bob", "g:1"]);
        assert_eq!(m.total_unread(), 3);
        // The same message again (it raced the load, or a replay): nothing changes.
        assert!(!m.apply(&ev(hi)));
        assert_eq!(m.total_unread(), 3);
    }

    #[test]
    fn an_own_message_marks_read_and_an_own_read_event_clears_the_badge() {
        let mut m = model();
        m.apply(&ev(msg("d:alice:bob", 6, "bob", "one", 600)));
        m.apply(&ev(msg("d:alice:bob", 7, "alice", "mine", 700)));
        let c = m.get("d:alice:bob").unwrap();
        assert_eq!((c.read_seq, c.unread, c.mentions), (7, 0, 0));
        m.apply(&ev(msg("d:alice:bob", 8, "bob", "a", 800)));
        m.apply(&ev(msg("d:alice:bob", 9, "bob", "b", 900)));
        assert_eq!(m.get("d:alice:bob").unwrap().unread, 2);
        // Another of alice's devices read up to 8; a receipt from bob changes nothing.
        assert!(!m.apply(&Event::Read {
            conversation: "d:alice:bob".into(),
            user: "bob".into(),
            read_seq: 9,
            own: false,
        }));
        assert!(m.apply(&Event::Read {
            conversation: "d:alice:bob".into(),
            user: "alice".into(),
            read_seq: 8,
            own: true,
        }));
        let c = m.get("d:alice:bob").unwrap();
        assert_eq!((c.read_seq, c.unread), (8, 1));
        // Read positions never move back.
        assert!(!m.apply_read_state(&pb::ReadState {
            conversation: "d:alice:bob".into(),
            read_seq: 4,
            unread: 5,
        }));
        assert_eq!(m.total_unread(), 1);
    }

    #[test]
    fn reading_part_of_what_was_unread_at_load_keeps_a_bound() {
        let mut m = model(); // d:alice:bob: read 3 of 5, 2 unread
        m.apply(&Event::Read {
            conversation: "d:alice:bob".into(),
            user: "alice".into(),
            read_seq: 4,
            own: true,
        });
        assert_eq!(m.get("d:alice:bob").unwrap().unread, 1);
        m.apply(&Event::Read {
            conversation: "d:alice:bob".into(),
            user: "alice".into(),
            read_seq: 5,
            own: true,
        });
        assert_eq!(m.get("d:alice:bob").unwrap().unread, 0);
        assert_eq!(m.total_unread(), 0);
    }

    #[test]
    fn settings_mute_out_of_the_total_and_pin_to_the_top() {
        let mut m = model();
        assert!(m.apply(&Event::SettingsChanged {
            conversation: "d:alice:bob".into(),
            muted: true,
            pinned: false,
        }));
        assert_eq!(m.total_unread(), 0, "muted: not in the total");
        assert_eq!(
            m.get("d:alice:bob").unwrap().unread,
            2,
            "still its own badge"
        );
        assert!(m.apply_settings(&pb::ConversationSettings {
            conversation: "d:alice:bob".into(),
            muted: false,
            pinned: true,
        }));
        assert_eq!(order(&m), ["d:alice:bob", "g:1"]);
        assert_eq!(m.total_unread(), 2);
        // The same settings again: no change, no redraw.
        assert!(!m.apply(&Event::SettingsChanged {
            conversation: "d:alice:bob".into(),
            muted: false,
            pinned: true,
        }));
    }

    #[test]
    fn an_edit_of_the_last_message_becomes_the_preview_without_counting() {
        let mut m = model();
        m.apply(&ev(msg("g:1", 11, "bob", "helo", 1100)));
        let edit = pb::Message {
            kind: MessageKind::Edit as i32,
            target_seq: 11,
            ..msg("g:1", 12, "bob", "hello", 1200)
        };
        m.apply(&ev(edit));
        let c = m.get("g:1").unwrap();
        assert_eq!(
            (c.last_seq, c.unread),
            (12, 1),
            "an EDIT entry is not unread"
        );
        assert_eq!(c.last_preview, "hello");
        assert_eq!(c.last_kind, MessageKind::Edit as i32);
        // Alice's own edit does not mark the conversation read.
        let own_edit = pb::Message {
            kind: MessageKind::Edit as i32,
            target_seq: 9,
            ..msg("g:1", 13, "alice", "fixed", 1300)
        };
        m.apply(&ev(own_edit));
        assert_eq!(m.get("g:1").unwrap().unread, 1);
    }

    #[test]
    fn a_recall_takes_an_unread_message_out_of_unread_and_mentions() {
        let mut m = model();
        let mut hey = msg("g:1", 11, "bob", "hey @all", 1100);
        hey.mention_all = true;
        m.apply(&ev(hey));
        m.apply(&ev(msg("g:1", 12, "carol", "hi", 1200)));
        assert_eq!(m.get("g:1").unwrap().mentions, 1);
        let recall = pb::Message {
            kind: MessageKind::Recall as i32,
            target_seq: 11,
            ..msg("g:1", 13, "bob", "", 1300)
        };
        m.apply(&ev(recall));
        let c = m.get("g:1").unwrap();
        assert_eq!((c.unread, c.mentions, c.last_preview.as_str()), (1, 0, ""));
        // A recall of a message unread at load time: one fewer there too.
        let recall_old = pb::Message {
            kind: MessageKind::Recall as i32,
            target_seq: 5,
            ..msg("d:alice:bob", 6, "bob", "", 1400)
        };
        m.apply(&ev(recall_old));
        assert_eq!(m.get("d:alice:bob").unwrap().unread, 1);
        // A recall of something already read changes no count.
        let recall_read = pb::Message {
            kind: MessageKind::Recall as i32,
            target_seq: 2,
            ..msg("d:alice:bob", 7, "bob", "", 1500)
        };
        m.apply(&ev(recall_read));
        assert_eq!(m.get("d:alice:bob").unwrap().unread, 1);
        // A message that arrives already recalled never counted.
        let gone = pb::Message {
            recalled: true,
            ..msg("d:alice:bob", 8, "bob", "", 1600)
        };
        m.apply(&ev(gone));
        assert_eq!(m.get("d:alice:bob").unwrap().unread, 1);
        assert_eq!(m.total_unread(), 2);
    }

    #[test]
    fn hiding_the_last_message_clears_the_preview() {
        let mut m = model();
        m.apply(&ev(msg("d:alice:bob", 6, "bob", "oops", 600)));
        assert!(!m.apply(&Event::Hidden {
            conversation: "d:alice:bob".into(),
            seq: 5,
        }));
        assert!(m.apply(&Event::Hidden {
            conversation: "d:alice:bob".into(),
            seq: 6,
        }));
        assert_eq!(m.get("d:alice:bob").unwrap().last_preview, "");
    }

    #[test]
    fn a_conversation_created_after_the_load_gets_a_row() {
        let mut m = model();
        m.apply(&ev(msg("d:alice:carol", 1, "carol", "hello", 3000)));
        let c = m.get("d:alice:carol").unwrap();
        assert_eq!((c.name.as_str(), c.unread, c.read_seq), ("carol", 1, 0));
        assert_eq!(c.kind, ConversationKind::Direct as i32);
        let created = pb::Message {
            kind: MessageKind::System as i32,
            event: Some(pb::GroupEvent {
                kind: pb::GroupEventKind::Created as i32,
                actor: "dave".into(),
                users: vec!["alice".into()],
                name: "team".into(),
                ..Default::default()
            }),
            ..msg("g:2", 1, "", "", 4000)
        };
        m.apply(&ev(created));
        let g = m.get("g:2").unwrap();
        assert_eq!(
            (g.name.as_str(), g.unread, g.last_sender.as_str()),
            ("team", 1, "dave")
        );
        assert_eq!(order(&m), ["g:2", "d:alice:carol", "g:1", "d:alice:bob"]);
        assert_eq!(m.total_unread(), 4);
        // A group alice created herself: her own event, nothing unread.
        let mine = pb::Message {
            kind: MessageKind::System as i32,
            event: Some(pb::GroupEvent {
                actor: "alice".into(),
                ..created_event()
            }),
            ..msg("g:3", 1, "", "", 5000)
        };
        m.apply(&ev(mine));
        assert_eq!(m.get("g:3").unwrap().unread, 0);
    }

    fn created_event() -> pb::GroupEvent {
        pb::GroupEvent {
            kind: pb::GroupEventKind::Created as i32,
            name: "mine".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_partial_load_keeps_the_rest_of_the_total() {
        let mut m = ConversationListModel::new("alice");
        m.load(pb::ConversationList {
            conversations: vec![info("d:alice:bob", 5, 3, 2, 500)],
            total_unread: 9,
            total: 4,
        });
        assert_eq!(m.total_unread(), 9);
        m.apply(&Event::Read {
            conversation: "d:alice:bob".into(),
            user: "alice".into(),
            read_seq: 5,
            own: true,
        });
        assert_eq!(m.total_unread(), 7);
    }

    #[test]
    fn previews_are_text_only_and_empty_for_gone_content() {
        let mut m = msg("g:1", 1, "bob", &"é".repeat(100), 1);
        assert_eq!(preview(&m).chars().count(), 80);
        m.content_type = "image/png".into();
        assert_eq!(preview(&m), "");
        let e = pb::Message {
            expired: true,
            ..msg("g:1", 1, "bob", "x", 1)
        };
        assert_eq!(preview(&e), "");
    }
}
