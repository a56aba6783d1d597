//! The send path: authorize -> dedup -> sequence -> store -> (durable) -> ack + fan-out.
//! System messages (group events) take the same path without dedup.

use tern_proto::direct_conversation;
use tern_proto::pb::{self, ErrorCode};
use tokio::sync::oneshot;

use super::Messages;
use crate::conversations::state::SharedState;
use crate::conversations::ConvState;
use crate::delivery::durability::Completion;
use crate::delivery::fanout;
use crate::error::{ServiceError, ServiceResult};
use crate::push::Cause;
use crate::sequencer::{Appended, Batch};
use crate::store::{DedupRecord, ExpiryEntry, Mutation};
use crate::validate;

/// What a durable append is answered with.
#[derive(Debug, Clone)]
pub struct AckInfo {
    pub conversation: String,
    pub seq: u64,
    pub server_time_ms: u64,
    pub client_msg_id: String,
    pub duplicate: bool,
    pub sender_inbox_seq: u64,
}

/// Called once the append is durable (or failed). Runs on the flusher task: it must not
/// block.
pub(crate) type AckCallback = Box<dyn FnOnce(ServiceResult<AckInfo>) + Send>;

/// One message to append under its conversation's lock.
pub(crate) struct Append {
    pub msg: pb::Message,
    /// Users who get an inbox entry (write diffusion) and a push.
    pub recipients: Vec<String>,
    /// Other writes that commit atomically with the message (membership, metadata).
    pub extra: Vec<Mutation>,
    /// (sender, client_msg_id) for dedup; none for system messages.
    pub dedup: Option<(String, String)>,
    /// The sender has read up to this entry (messages and group events: yes; EDIT and
    /// RECALL entries change an older message and leave the read position alone).
    pub marks_read: bool,
}

/// The completion that answers a repeated client_msg_id with the original ack.
pub(crate) fn duplicate_completion(
    rec: DedupRecord,
    cmid: String,
    done: AckCallback,
) -> Completion {
    crate::metrics::get().dedup_hits.inc();
    Box::new(move |res| match res {
        Ok(()) => done(Ok(AckInfo {
            conversation: rec.conversation,
            seq: rec.seq,
            server_time_ms: rec.server_time_ms,
            client_msg_id: cmid,
            duplicate: true,
            sender_inbox_seq: rec.inbox_seq,
        })),
        Err(()) => done(Err(ServiceError::internal())),
    })
}

impl Messages {
    /// Sequences, stores and queues one message. Called with the conversation locked.
    /// `done` runs after the write is durable; on a duplicate it gets the original ack.
    /// Returns false for a duplicate (nothing written).
    pub(crate) fn append(
        &self,
        st: &mut ConvState,
        a: Append,
        done: AckCallback,
    ) -> ServiceResult<bool> {
        let read_diffusion = st.read_diffusion;
        let cmid = a.msg.client_msg_id.clone();
        let sender = a.msg.sender.clone();
        let now = a.msg.server_time_ms;
        let msg_for_push = a.msg.clone();
        // Write diffusion: the recipients become inbox entries (and the pushes name
        // them); read diffusion: no inboxes, one push to every recipient.
        let (recipients, inboxes) = if read_diffusion {
            (a.recipients, Vec::new())
        } else {
            (Vec::new(), a.recipients)
        };
        let router = self.router.clone();
        let mut extra = a.extra;
        // The sender has read everything up to their own message (so unread counts are
        // `last_seq - read_seq`, never counting one's own messages or the group events
        // one caused). The sequencer gives the message `st.last_seq + 1`: we hold the
        // conversation's lock.
        if a.marks_read {
            extra.push(Mutation::Read {
                user: sender.clone(),
                conversation: a.msg.conversation.clone(),
                read_seq: st.last_seq + 1,
            });
        }
        let batch = Batch {
            msg: a.msg,
            expected_last_seq: st.last_seq,
            inboxes,
            extra,
            dedup: a.dedup,
        };
        let appended = self.sequencer.append(
            batch,
            Box::new(move |appended: &Appended| -> Completion {
                let (seq, inboxes) = match appended {
                    // Raced with the original: answer with it once it is durable.
                    Appended::Duplicate(rec) => {
                        return duplicate_completion(rec.clone(), cmid, done)
                    }
                    Appended::New { seq, inboxes } => (*seq, inboxes.clone()),
                };
                let sender_inbox_seq = inboxes
                    .iter()
                    .find(|(u, _)| *u == sender)
                    .map(|(_, h)| *h)
                    .unwrap_or(0);
                Box::new(move |res| {
                    if res.is_err() {
                        done(Err(ServiceError::new(
                            ErrorCode::Internal,
                            "the message could not be made durable; retry with the same client_msg_id",
                        )));
                        return;
                    }
                    let mut msg = msg_for_push;
                    msg.seq = seq;
                    done(Ok(AckInfo {
                        conversation: msg.conversation.clone(),
                        seq,
                        server_time_ms: now,
                        client_msg_id: cmid,
                        duplicate: false,
                        sender_inbox_seq,
                    }));
                    if read_diffusion {
                        fanout::to_all(&*router, &msg, &recipients);
                    } else {
                        fanout::to_inboxes(&*router, &msg, &inboxes);
                    }
                })
            }),
        )?;
        match appended {
            Appended::Duplicate(_) => Ok(false),
            Appended::New { seq, .. } => {
                st.last_seq = seq;
                st.last_time_ms = now;
                st.exists = true;
                Ok(true)
            }
        }
    }

    /// Sends a user message. `done` gets the durable ack (or the original one for a
    /// repeated client_msg_id).
    pub fn send(
        &self,
        sender: &str,
        device: &str,
        req: pb::Send,
        done: AckCallback,
    ) -> ServiceResult<()> {
        validate::client_msg_id(&req.client_msg_id)?;
        validate::content_type(&req.content_type)?;
        self.check_body(&req.body)?;
        if req.ttl_secs as u64 > self.limits.max_ttl_secs {
            return Err(ServiceError::invalid(format!(
                "ttl_secs {} is over the server's maximum of {} seconds",
                req.ttl_secs, self.limits.max_ttl_secs
            )));
        }
        // A repeat is answered with the original ack even if the sender has since lost
        // access: it was authorized when it was accepted.
        let Some(done) = self.replay_duplicate(sender, &req.client_msg_id, done)? else {
            return Ok(());
        };
        let conv_id = match (req.conversation.is_empty(), req.peer.is_empty()) {
            (false, true) => req.conversation.clone(),
            (true, false) => {
                validate::username(&req.peer)?;
                if self.store.user(&req.peer)?.is_none() {
                    return Err(ServiceError::not_found(format!("no user {}", req.peer)));
                }
                direct_conversation(sender, &req.peer)
            }
            _ => {
                return Err(ServiceError::invalid(
                    "exactly one of conversation and peer must be set",
                ))
            }
        };
        let st_arc = if req.peer.is_empty() {
            self.convs.member(&conv_id, sender)?
        } else {
            self.convs.get(&conv_id)?
        };
        // An image or file message: the blob must be one the sender may read; the guard
        // keeps the blob collector off it until the message is committed (below). Checked
        // before the conversation is locked: the check may read other conversations.
        let (attachment, _blob_guard) = match (&req.attachment, &self.blobs) {
            (None, _) => (None, None),
            (Some(_), None) => {
                return Err(ServiceError::invalid(
                    "this server does not store attachments",
                ))
            }
            (Some(a), Some(blobs)) => {
                let (a, g) = blobs.attach(sender, a)?;
                (Some(a), Some(g))
            }
        };
        let mut st = st_arc.lock().unwrap();
        if !st.members.contains_key(sender) {
            return Err(ServiceError::forbidden(format!(
                "not a member of {conv_id}"
            )));
        }
        let notices = crate::accounts::admin::NOTICE_SENDER;
        if st.kind == pb::ConversationKind::Direct && st.members.contains_key(notices) {
            return Err(ServiceError::forbidden(
                "operator notices cannot be answered",
            ));
        }
        if st.kind == pb::ConversationKind::Direct {
            if let Some(peer) = st.members.keys().find(|u| u.as_str() != sender) {
                self.check_direct(sender, peer)?;
            }
        }
        if st.mute_all && !matches!(st.role(sender), Some(pb::Role::Owner | pb::Role::Admin)) {
            return Err(ServiceError::forbidden(
                "the group is muted: only the owner and admins may send",
            ));
        }
        let now = self.clock.now_ms();
        let mentions = check_reply_and_mentions(&st, sender, &req)?;
        let mut extra = Vec::new();
        if !st.exists {
            st.created_ms = now;
            extra.extend(creation_mutations(&conv_id, &st));
        }
        // The message gets `last_seq + 1` (we hold the conversation's lock).
        let seq = st.last_seq + 1;
        for user in &mentions {
            extra.push(Mutation::Mention {
                user: user.clone(),
                conversation: conv_id.clone(),
                seq,
            });
        }
        let expires_ms = match req.ttl_secs {
            0 => 0,
            ttl => now + ttl as u64 * 1000,
        };
        if expires_ms > 0 {
            extra.push(Mutation::Expiry(ExpiryEntry {
                expires_ms,
                conversation: conv_id.clone(),
                seq,
            }));
        }
        if let Some(a) = &attachment {
            extra.push(Mutation::BlobRef {
                blob: a.blob_id.clone(),
                holder: conv_id.clone(),
                seq,
                present: true,
            });
        }
        if req.mention_all {
            extra.push(Mutation::MentionAll {
                conversation: conv_id.clone(),
                seq,
                sender: sender.to_string(),
            });
        }
        let recipients: Vec<String> = st.members.keys().cloned().collect();
        // Offline push: the notifications this message causes are written in its batch,
        // so they are durable exactly when it is (docs/PUSH.md).
        let pushes = self.push.plan(
            &Cause {
                conversation: &conv_id,
                seq,
                sender,
                now_ms: now,
                direct: st.kind == pb::ConversationKind::Direct,
                read_diffusion: st.read_diffusion,
                mentions: &mentions,
                mention_all: req.mention_all,
            },
            &recipients,
        )?;
        extra.extend(pushes.iter().cloned().map(Mutation::PushQueue));
        let msg = pb::Message {
            conversation: conv_id,
            seq: 0,
            sender: sender.to_string(),
            client_msg_id: req.client_msg_id.clone(),
            server_time_ms: now,
            body: req.body,
            content_type: req.content_type,
            kind: pb::MessageKind::Unspecified as i32,
            event: None,
            sender_device: device.to_string(),
            reply_to: req.reply_to,
            mentions,
            mention_all: req.mention_all,
            expires_ms,
            attachment,
            ..Default::default()
        };
        // A duplicate (a racing retry) is answered through `done` as well.
        let stored = self.append(
            &mut st,
            Append {
                msg,
                recipients,
                extra,
                dedup: Some((sender.to_string(), req.client_msg_id)),
                marks_read: true,
            },
            done,
        )?;
        if stored && !pushes.is_empty() {
            // Queued after the completions of the append above: once it is durable.
            let push = self.push.clone();
            self.sequencer.after_durable(Box::new(move |res| {
                if res.is_ok() {
                    push.queued(pushes);
                }
            }));
        }
        Ok(())
    }

    /// A 1:1 message may pass: neither user blocked the other (BLOCKED, the same answer
    /// whichever blocked, and no matter whether the peer is online), and with
    /// `direct_messages = friends` they are friends (FORBIDDEN).
    pub(crate) fn check_direct(&self, sender: &str, peer: &str) -> ServiceResult<()> {
        let blocked = pb::ContactState::BlockedUser as i32;
        let mine = self.store.contact(sender, peer)?;
        let blocks = |r: &Option<crate::store::ContactRecord>| {
            r.as_ref().is_some_and(|r| r.state == blocked)
        };
        if blocks(&mine) || blocks(&self.store.contact(peer, sender)?) {
            return Err(ServiceError::new(
                ErrorCode::Blocked,
                format!("direct messages with {peer} are blocked"),
            ));
        }
        let friend = pb::ContactState::Friend as i32;
        if self.limits.friends_only_dm && mine.is_none_or(|r| r.state != friend) {
            return Err(ServiceError::forbidden(
                "this server allows direct messages only between friends",
            ));
        }
        Ok(())
    }

    /// A body fits: the message pushed with it fits in one frame.
    pub(crate) fn check_body(&self, body: &[u8]) -> ServiceResult<()> {
        if body.len() > self.limits.max_body() {
            return Err(ServiceError::invalid(format!(
                "body of {} bytes is over the limit of {} bytes",
                body.len(),
                self.limits.max_body()
            )));
        }
        Ok(())
    }

    /// If `sender` already used `client_msg_id`, queues the original ack for `done`
    /// (once durable) and returns `None`; otherwise gives `done` back.
    pub(crate) fn replay_duplicate(
        &self,
        sender: &str,
        client_msg_id: &str,
        done: AckCallback,
    ) -> ServiceResult<Option<AckCallback>> {
        match self.store.dedup(sender, client_msg_id)? {
            Some(rec) => {
                self.sequencer.after_durable(duplicate_completion(
                    rec,
                    client_msg_id.to_string(),
                    done,
                ));
                Ok(None)
            }
            None => Ok(Some(done)),
        }
    }

    /// Appends a SYSTEM message for a group event, applies `apply` to the state under the
    /// same lock, and waits until the message is durable; returns its seq.
    pub(crate) async fn append_system(
        &self,
        st_arc: &SharedState,
        conv: &str,
        event: pb::GroupEvent,
        recipients: Vec<String>,
        extra: Vec<Mutation>,
        apply: impl FnOnce(&mut ConvState),
    ) -> ServiceResult<u64> {
        self.append_system_at(
            st_arc,
            conv,
            event,
            recipients,
            |_| extra,
            |st, _| apply(st),
        )
        .await
    }

    /// [`Messages::append_system`] for writes that name the event's own seq (a new
    /// member's history starts at the event that added them): `extra` and `apply` get it,
    /// under the conversation's lock.
    pub(crate) async fn append_system_at(
        &self,
        st_arc: &SharedState,
        conv: &str,
        event: pb::GroupEvent,
        recipients: Vec<String>,
        extra: impl FnOnce(u64) -> Vec<Mutation>,
        apply: impl FnOnce(&mut ConvState, u64),
    ) -> ServiceResult<u64> {
        let (tx, rx) = oneshot::channel();
        {
            let mut st = st_arc.lock().unwrap();
            // The sequencer gives the event `last_seq + 1`: we hold the lock.
            let seq = st.last_seq + 1;
            let msg = pb::Message {
                conversation: conv.to_string(),
                sender: event.actor.clone(),
                server_time_ms: self.clock.now_ms(),
                kind: pb::MessageKind::System as i32,
                event: Some(event),
                ..Default::default()
            };
            self.append(
                &mut st,
                Append {
                    msg,
                    recipients,
                    extra: extra(seq),
                    dedup: None,
                    marks_read: true,
                },
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            )?;
            apply(&mut st, seq);
        }
        let ack = rx.await.map_err(|_| ServiceError::internal())??;
        Ok(ack.seq)
    }

    pub(crate) fn clock(&self) -> &dyn crate::clock::Clock {
        &*self.clock
    }
}

/// Most members one message may mention by name.
const MAX_MENTIONS: usize = 100;

/// Checks a Send's reply-to and mentions against the conversation (locked); returns the
/// mentioned users, each once, in the order given, without the sender.
fn check_reply_and_mentions(
    st: &ConvState,
    sender: &str,
    req: &pb::Send,
) -> ServiceResult<Vec<String>> {
    if req.reply_to > st.last_seq {
        return Err(ServiceError::invalid(format!(
            "reply_to {} is not a message of this conversation (its last seq is {})",
            req.reply_to, st.last_seq
        )));
    }
    if req.mentions.len() > MAX_MENTIONS {
        return Err(ServiceError::invalid(format!(
            "at most {MAX_MENTIONS} mentions per message"
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(req.mentions.len());
    for m in &req.mentions {
        if !st.members.contains_key(m) {
            return Err(ServiceError::invalid(format!(
                "mentioned user {:?} is not a member of this conversation",
                crate::conversations::id::truncate(m, 40)
            )));
        }
        if m != sender && !out.contains(m) {
            out.push(m.clone());
        }
    }
    if req.mention_all {
        if st.kind != pb::ConversationKind::Group {
            return Err(ServiceError::invalid("@all is for groups"));
        }
        if !matches!(st.role(sender), Some(pb::Role::Owner | pb::Role::Admin)) {
            return Err(ServiceError::forbidden(
                "only the owner or an admin may mention @all",
            ));
        }
    }
    Ok(out)
}

/// The writes that create a conversation: its record and every member.
pub(crate) fn creation_mutations(conv: &str, st: &ConvState) -> Vec<Mutation> {
    let mut out = vec![Mutation::Conversation {
        conversation: conv.to_string(),
        record: st.record(),
    }];
    for (u, m) in &st.members {
        out.push(Mutation::PutMember {
            conversation: conv.to_string(),
            user: u.clone(),
            record: m.clone(),
        });
    }
    out
}
