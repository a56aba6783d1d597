//! The user's conversation list ("red dot"): per conversation its title, last message,
//! the user's read position and the unread count the server computes; pinned ones first,
//! then most recently active first, paged, with the total unread over all conversations
//! that are not muted.
//!
//! Unread = `last_seq - read_seq`, less the entries after `read_seq` that are not
//! messages to read (EDIT/RECALL entries, recalled messages: [`super::view::unread`]). A
//! sender's read position moves to each message they send (and each group event they
//! cause) in the same batch, so one's own messages never count, and no timeline is
//! scanned to count.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message as _;
use tern_proto::pb::{self, ConversationKind, MessageKind, Role};

use super::id::{parse_conversation, ConvId};
use super::state::{ConvCache, SharedState};
use super::view;
use crate::clock::Clock;
use crate::delivery::router::Router;
use crate::error::ServiceResult;
use crate::sequencer::Sequencer;
use crate::store::{SettingsRecord, Store};

/// Characters of a text message shown in the list.
const PREVIEW_CHARS: usize = 80;
/// Largest page.
const MAX_PAGE: usize = 1000;

pub struct Conversations {
    pub(super) store: Arc<dyn Store>,
    pub(super) convs: Arc<ConvCache>,
    pub(super) sequencer: Arc<dyn Sequencer>,
    pub(super) router: Arc<dyn Router>,
    pub(super) clock: Arc<dyn Clock>,
}

/// The start of a message's text: text bodies (no content type, or `text/...`) that are
/// UTF-8; an image or file message is `[photo]` or `[file NAME]` before its caption;
/// empty for anything else.
pub(crate) fn preview(msg: &pb::Message) -> String {
    let texty = msg.content_type.is_empty() || msg.content_type.starts_with("text/");
    let text = match (texty, std::str::from_utf8(&msg.body)) {
        (true, Ok(text)) => text,
        _ => "",
    };
    let full = match &msg.attachment {
        Some(a) => tern_proto::attachment_label(a, text),
        None => text.to_string(),
    };
    full.chars().take(PREVIEW_CHARS).collect()
}

impl Conversations {
    pub fn new(
        store: Arc<dyn Store>,
        convs: Arc<ConvCache>,
        sequencer: Arc<dyn Sequencer>,
        router: Arc<dyn Router>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            convs,
            sequencer,
            router,
            clock,
        }
    }

    /// Every conversation `user` is in, most recently active first; `offset`/`limit`
    /// select a page (limit 0 = all, capped at 1000).
    ///
    /// Two passes, so a user in many conversations does not pay for every one of them in
    /// full: the order and `total_unread` need, per conversation, only what is in memory
    /// (the cached state: last seq and time) or read in one scan per user (read positions,
    /// settings), plus one range count where something is unread; the details (last
    /// message, mentions, names) are read for the page only.
    pub async fn list(
        &self,
        user: &str,
        offset: usize,
        limit: usize,
    ) -> ServiceResult<pb::ConversationList> {
        let now = self.clock.now_ms();
        let read: HashMap<String, u64> = self.store.read_positions(user)?.into_iter().collect();
        let settings: HashMap<String, SettingsRecord> = self
            .store
            .all_conversation_settings(user)?
            .into_iter()
            .collect();
        // Pass 1: every conversation's sort key and unread count.
        struct Row {
            id: String,
            state: SharedState,
            pinned: bool,
            muted: bool,
            last_seq: u64,
            last_time_ms: u64,
            read_seq: u64,
            unread: u64,
        }
        let mut rows = Vec::new();
        for id in self.store.user_conversations(user)? {
            let state = self.convs.get(&id)?;
            let (last_seq, last_time_ms) = {
                let g = state.lock().unwrap();
                (g.last_seq, g.last_time_ms)
            };
            let read_seq = read.get(&id).copied().unwrap_or(0).min(last_seq);
            let unread = if read_seq < last_seq {
                view::unread(&*self.store, &id, last_seq, read_seq)?
            } else {
                0
            };
            let s = settings.get(&id).cloned().unwrap_or_default();
            rows.push(Row {
                id,
                state,
                pinned: s.pinned,
                muted: s.muted,
                last_seq,
                last_time_ms,
                read_seq,
                unread,
            });
        }
        rows.sort_by(|a, b| {
            b.pinned
                .cmp(&a.pinned)
                .then_with(|| b.last_time_ms.cmp(&a.last_time_ms))
                .then_with(|| a.id.cmp(&b.id))
        });
        let total_unread = rows.iter().filter(|r| !r.muted).map(|r| r.unread).sum();
        let total = rows.len() as u32;
        let limit = match limit {
            0 => MAX_PAGE,
            n => n.min(MAX_PAGE),
        };
        // Pass 2: the details of the page.
        let mut conversations = Vec::with_capacity(limit.min(rows.len()));
        for r in rows.into_iter().skip(offset).take(limit) {
            let (
                kind,
                name,
                read_diffusion,
                member_count,
                role,
                topic,
                mute_all,
                visibility,
                channel,
                max_members,
            ) = {
                let g = r.state.lock().unwrap();
                (
                    g.kind,
                    g.name.clone(),
                    g.read_diffusion,
                    g.members.len() as u32,
                    g.role(user).unwrap_or(Role::Unspecified),
                    g.topic.clone(),
                    g.mute_all,
                    g.visibility,
                    g.channel,
                    g.max_members,
                )
            };
            let id = r.id;
            let name = match (kind, parse_conversation(&id)) {
                (ConversationKind::Direct, Ok(ConvId::Direct(a, b))) => {
                    if a == user {
                        b
                    } else {
                        a
                    }
                }
                _ => name,
            };
            let mentions = if r.unread > 0 {
                self.store.mentions_after(user, &id, r.read_seq)?
            } else {
                0
            };
            let last = match r.last_seq {
                0 => None,
                seq => self.store.message_bytes(&id, seq)?,
            };
            let last = match last {
                Some(bytes) => {
                    let m = pb::Message::decode(bytes).map_err(|e| {
                        tracing::error!(conv = %id, error = %e, "undecodable timeline entry");
                        crate::error::ServiceError::internal()
                    })?;
                    let hidden = !self.store.hidden(user, &id, m.seq, m.seq)?.is_empty();
                    view::for_reader(m, now, hidden)
                }
                None => pb::Message::default(),
            };
            conversations.push(pb::ConversationInfo {
                conversation: id,
                kind: kind as i32,
                name,
                last_seq: r.last_seq,
                read_diffusion,
                member_count,
                role: role as i32,
                read_seq: r.read_seq,
                unread: r.unread,
                last_time_ms: last.server_time_ms,
                last_preview: preview(&last),
                last_sender: last.sender,
                last_kind: MessageKind::try_from(last.kind).unwrap_or_default() as i32,
                muted: r.muted,
                pinned: r.pinned,
                mentions,
                topic,
                mute_all,
                visibility: visibility as i32,
                channel,
                max_members,
            });
        }
        self.sequencer.barrier().await?;
        Ok(pb::ConversationList {
            conversations,
            total_unread,
            total,
        })
    }
}
