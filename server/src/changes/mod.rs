//! Changes to sent messages: edit, recall ("unsend") and delete for me.
//!
//! Timelines stay append-only for delivery: an edit or a recall is a new timeline entry
//! (kind EDIT or RECALL, `target_seq` naming the message) that reaches every member's
//! inbox and push like any message, so sync, pull and history stay seq-ordered and every
//! device converges by applying entries in order. In the same atomic batch the target
//! entry is rewritten, so history and the conversation list show the result:
//! - edit: the latest text, `edited`, `edited_ms`, and the EDIT entry's seq appended to
//!   `edits`;
//! - recall: the content is gone from the store (the target and each of its EDIT entries
//!   are overwritten without body, mentions or content type, with `recalled`), its
//!   mention records are deleted, and it stops counting as unread.
//!
//! Delete for me is per user and writes no timeline entry: a `hidden` record, served to
//! that user as a tombstone ([`crate::conversations::view`]), and a `MessageHidden` push
//! to their devices.
//!
//! EDIT and RECALL entries are themselves never unread (recorded in the not-counted
//! space) and do not move their sender's read position.

use std::sync::Arc;

use tern_proto::pb::{self, ErrorCode, MessageKind, Role};

use crate::clock::Clock;
use crate::config::MessageLimits;
use crate::conversations::state::SharedState;
use crate::conversations::{view, ConvCache, ConvState};
use crate::delivery::fanout;
use crate::delivery::router::Router;
use crate::error::{ServiceError, ServiceResult};
use crate::messages::send::{AckCallback, Append};
use crate::messages::Messages;
use crate::sequencer::Sequencer;
use crate::store::{Mutation, Store};
use crate::validate;

/// Most edits one message may have (each keeps an EDIT entry in the timeline).
pub(crate) const MAX_EDITS: usize = 100;

pub struct Changes {
    store: Arc<dyn Store>,
    convs: Arc<ConvCache>,
    messages: Arc<Messages>,
    sequencer: Arc<dyn Sequencer>,
    router: Arc<dyn Router>,
    clock: Arc<dyn Clock>,
    limits: MessageLimits,
}

impl Changes {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        convs: Arc<ConvCache>,
        messages: Arc<Messages>,
        sequencer: Arc<dyn Sequencer>,
        router: Arc<dyn Router>,
        clock: Arc<dyn Clock>,
        limits: MessageLimits,
    ) -> Self {
        Self {
            store,
            convs,
            messages,
            sequencer,
            router,
            clock,
            limits,
        }
    }

    /// The start of an edit or recall: a valid client_msg_id not used before (a repeat
    /// is answered with its original ack: `None`), and the conversation's state if `user`
    /// is a member.
    fn begin(
        &self,
        user: &str,
        client_msg_id: &str,
        conv: &str,
        done: AckCallback,
    ) -> ServiceResult<Option<(SharedState, AckCallback)>> {
        validate::client_msg_id(client_msg_id)?;
        let Some(done) = self.messages.replay_duplicate(user, client_msg_id, done)? else {
            return Ok(None);
        };
        Ok(Some((self.convs.member(conv, user)?, done)))
    }

    /// The target of an edit/recall/delete by `user`: message `seq` of the locked
    /// conversation, which `user` must (still) be a member of.
    fn target(
        &self,
        st: &ConvState,
        user: &str,
        conv: &str,
        seq: u64,
    ) -> ServiceResult<pb::Message> {
        if !st.members.contains_key(user) {
            return Err(ServiceError::forbidden("not a member of this conversation"));
        }
        if seq == 0 || seq > st.last_seq {
            return Err(ServiceError::not_found(format!(
                "no message {seq} in this conversation (its last seq is {})",
                st.last_seq
            )));
        }
        self.store.message(conv, seq)?.ok_or_else(|| {
            tracing::error!(%conv, seq, "timeline entry missing below the last seq");
            ServiceError::internal()
        })
    }

    /// Edits `req.seq` (the caller's own message, within the edit window). `done` gets
    /// the ack of the EDIT entry once durable (the original ack for a repeated
    /// client_msg_id).
    pub fn edit(
        &self,
        user: &str,
        device: &str,
        req: pb::Edit,
        done: AckCallback,
    ) -> ServiceResult<()> {
        validate::content_type(&req.content_type)?;
        if req.body.is_empty() {
            return Err(ServiceError::invalid("an edit needs a body"));
        }
        self.messages.check_body(&req.body)?;
        let Some((st_arc, done)) = self.begin(user, &req.client_msg_id, &req.conversation, done)?
        else {
            return Ok(());
        };
        let mut st = st_arc.lock().unwrap();
        let now = self.clock.now_ms();
        let target = self.target(&st, user, &req.conversation, req.seq)?;
        changeable(&target, now)?;
        if target.sender != user {
            return Err(ServiceError::forbidden(
                "only its sender may edit a message",
            ));
        }
        within_window(&target, now, self.limits.edit_window_ms, "edited")?;
        if target.edits.len() >= MAX_EDITS {
            return Err(ServiceError::new(
                ErrorCode::ResourceExhausted,
                format!("a message may be edited at most {MAX_EDITS} times"),
            ));
        }
        let entry_seq = st.last_seq + 1;
        let mut updated = target;
        updated.body = req.body.clone();
        updated.content_type = req.content_type.clone();
        updated.edited = true;
        updated.edited_ms = now;
        updated.edits.push(entry_seq);
        let entry = pb::Message {
            conversation: req.conversation.clone(),
            sender: user.to_string(),
            client_msg_id: req.client_msg_id.clone(),
            server_time_ms: now,
            body: req.body,
            content_type: req.content_type,
            kind: MessageKind::Edit as i32,
            sender_device: device.to_string(),
            target_seq: req.seq,
            ..Default::default()
        };
        let extra = vec![
            Mutation::Message(updated),
            Mutation::NotCounted {
                conversation: req.conversation.clone(),
                seq: entry_seq,
            },
        ];
        self.append_change(&mut st, entry, extra, user, req.client_msg_id, done)
    }

    /// Recalls `req.seq`: its sender within the recall window, or a group's owner or
    /// admin at any time. The content is removed from the store in the same batch as the
    /// RECALL entry.
    pub fn recall(
        &self,
        user: &str,
        device: &str,
        req: pb::Recall,
        done: AckCallback,
    ) -> ServiceResult<()> {
        let conv = req.conversation.clone();
        let Some((st_arc, done)) = self.begin(user, &req.client_msg_id, &conv, done)? else {
            return Ok(());
        };
        let mut st = st_arc.lock().unwrap();
        let now = self.clock.now_ms();
        let target = self.target(&st, user, &conv, req.seq)?;
        if target.recalled {
            return Err(ServiceError::invalid(format!(
                "message {} is already recalled",
                req.seq
            )));
        }
        if MessageKind::try_from(target.kind).unwrap_or_default() != MessageKind::Unspecified {
            return Err(ServiceError::invalid(
                "only user messages can be recalled (not group events, edits or recalls)",
            ));
        }
        let moderator = st.kind == pb::ConversationKind::Group
            && matches!(st.role(user), Some(Role::Owner | Role::Admin));
        if !moderator {
            if target.sender != user {
                return Err(ServiceError::forbidden(
                    "only its sender, or a group owner or admin, may recall a message",
                ));
            }
            within_window(&target, now, self.limits.recall_window_ms, "recalled")?;
        }
        let entry_seq = st.last_seq + 1;
        let mut extra = Vec::new();
        // Every copy of the content goes: the target and each of its edits.
        for edit_seq in &target.edits {
            if let Some(e) = self.store.message(&conv, *edit_seq)? {
                extra.push(Mutation::Message(erased(e)));
            }
        }
        for u in &target.mentions {
            extra.push(Mutation::Unmention {
                user: u.clone(),
                conversation: conv.clone(),
                seq: req.seq,
            });
        }
        if target.mention_all {
            extra.push(Mutation::UnmentionAll {
                conversation: conv.clone(),
                seq: req.seq,
            });
        }
        extra.push(Mutation::NotCounted {
            conversation: conv.clone(),
            seq: req.seq,
        });
        extra.push(Mutation::NotCounted {
            conversation: conv.clone(),
            seq: entry_seq,
        });
        extra.push(Mutation::Message(erased(target)));
        let entry = pb::Message {
            conversation: conv,
            sender: user.to_string(),
            client_msg_id: req.client_msg_id.clone(),
            server_time_ms: now,
            kind: MessageKind::Recall as i32,
            sender_device: device.to_string(),
            target_seq: req.seq,
            ..Default::default()
        };
        self.append_change(&mut st, entry, extra, user, req.client_msg_id, done)
    }

    fn append_change(
        &self,
        st: &mut ConvState,
        entry: pb::Message,
        extra: Vec<Mutation>,
        user: &str,
        client_msg_id: String,
        done: AckCallback,
    ) -> ServiceResult<()> {
        let recipients = st.members.keys().cloned().collect();
        self.messages.append(
            st,
            Append {
                msg: entry,
                recipients,
                extra,
                dedup: Some((user.to_string(), client_msg_id)),
                marks_read: false,
            },
            done,
        )?;
        Ok(())
    }

    /// Hides message `seq` of `conv` for `user` on all their devices. Durable before it
    /// returns; then their devices get a `MessageHidden` push. Hiding twice is a no-op.
    pub async fn delete_for_me(&self, user: &str, conv: &str, seq: u64) -> ServiceResult<()> {
        let st_arc = self.convs.member(conv, user)?;
        let fresh = {
            let st = st_arc.lock().unwrap();
            self.target(&st, user, conv, seq)?;
            if self.store.hidden(user, conv, seq, seq)?.is_empty() {
                self.store.commit(&[Mutation::Hide {
                    user: user.to_string(),
                    conversation: conv.to_string(),
                    seq,
                }])?;
                self.sequencer.wrote();
                true
            } else {
                false
            }
        };
        self.sequencer.barrier().await?;
        if fresh {
            fanout::message_hidden(&*self.router, user, conv, seq);
        }
        Ok(())
    }
}

/// An edit needs a live user message: not a group event, edit or recall entry, not
/// recalled, not expired.
fn changeable(target: &pb::Message, now: u64) -> ServiceResult<()> {
    if MessageKind::try_from(target.kind).unwrap_or_default() != MessageKind::Unspecified {
        return Err(ServiceError::invalid(
            "only user messages can be edited (not group events, edits or recalls)",
        ));
    }
    if target.recalled {
        return Err(ServiceError::invalid("a recalled message cannot be edited"));
    }
    if view::is_expired(target.expires_ms, now) {
        return Err(ServiceError::invalid("an expired message cannot be edited"));
    }
    Ok(())
}

/// WINDOW_EXPIRED once `window_ms` has passed since `target` was sent.
fn within_window(target: &pb::Message, now: u64, window_ms: u64, done: &str) -> ServiceResult<()> {
    if now > target.server_time_ms.saturating_add(window_ms) {
        return Err(ServiceError::new(
            ErrorCode::WindowExpired,
            format!(
                "message {} can no longer be {done} (the window is {} s)",
                target.seq,
                window_ms / 1000
            ),
        ));
    }
    Ok(())
}

/// A timeline entry with its content removed and `recalled` set.
fn erased(m: pb::Message) -> pb::Message {
    pb::Message {
        recalled: true,
        edited: m.edited,
        edited_ms: m.edited_ms,
        edits: m.edits.clone(),
        ..view::tombstone(&m, false, false)
    }
}

#[cfg(test)]
mod tests;
