//! Contacts: friend requests, friendships and blocks (docs/PROTOCOL.md, "Contacts").
//!
//! Each side of a relation is one record, `data` `k`: user ++ other -> `ContactRecord`
//! (friend, incoming, outgoing, blocked). A change of a friendship or a request is a
//! SYSTEM message carrying a `ContactEvent` in the 1:1 conversation of the two users,
//! written in ONE batch with both records: it reaches every device of both users through
//! their inboxes (Sync, pushes, gap pulls), also devices that were offline, exactly once
//! and in order, and nothing names it before it is durable (D1). Every change is decided
//! and appended under the 1:1 conversation's lock, so two changes of one pair serialize.
//!
//! Blocks are private: blocking and unblocking write no event the blocked user could see
//! (only the blocker's record). Blocking ends a friendship or a pending request; the
//! other side sees that as an ordinary removal, decline or cancel.

#[cfg(test)]
mod tests;

use std::sync::Arc;

use tern_proto::direct_conversation;
use tern_proto::pb::{self, ContactEventKind as Ev, ContactState as S};
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::conversations::ConvCache;
use crate::delivery::fanout;
use crate::delivery::router::Router;
use crate::error::{ServiceError, ServiceResult};
use crate::messages::send::{creation_mutations, Append};
use crate::messages::Messages;
use crate::sequencer::Sequencer;
use crate::store::{ContactRecord, Mutation, Store};
use crate::validate;

/// Longest message a friend request may carry, in bytes.
pub(crate) const MAX_REQUEST_MESSAGE: usize = 256;

/// A change the caller asks for.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Op {
    Request(String),
    Accept,
    Decline,
    Cancel,
    Remove,
    Block,
    Unblock,
}

/// What a change writes: the caller's and the other user's new records (`None` inside:
/// delete; outer `None`: keep) and the event both learn it by, if any.
#[derive(Debug, PartialEq)]
pub(crate) struct Plan {
    pub mine: Option<Option<ContactRecord>>,
    pub theirs: Option<Option<ContactRecord>>,
    pub event: Option<(Ev, String)>,
}

fn state(r: &Option<ContactRecord>) -> Option<S> {
    r.as_ref()
        .and_then(|r| S::try_from(r.state).ok())
        .filter(|s| *s != S::Unspecified)
}

fn record(s: S, message: &str, now_ms: u64) -> Option<Option<ContactRecord>> {
    Some(Some(ContactRecord {
        state: s as i32,
        message: message.to_string(),
        since_ms: now_ms,
    }))
}

/// The rules, without I/O: what `op` of `me` on `other` does, given both records.
pub(crate) fn plan(
    other: &str,
    op: &Op,
    mine: Option<S>,
    theirs: Option<S>,
    now_ms: u64,
) -> ServiceResult<Plan> {
    let none = || Plan {
        mine: None,
        theirs: None,
        event: None,
    };
    let friends = |kind: Ev| Plan {
        mine: record(S::Friend, "", now_ms),
        theirs: record(S::Friend, "", now_ms),
        event: Some((kind, String::new())),
    };
    let ended = |kind: Ev| Plan {
        mine: Some(None),
        theirs: Some(None),
        event: Some((kind, String::new())),
    };
    let no_request_from = || ServiceError::not_found(format!("no friend request from {other}"));
    Ok(match op {
        Op::Request(text) => {
            if text.len() > MAX_REQUEST_MESSAGE {
                return Err(ServiceError::invalid(format!(
                    "message of {} bytes is over the limit of {MAX_REQUEST_MESSAGE} bytes",
                    text.len()
                )));
            }
            // Refused like a request to a user who does not exist: no hint of the block.
            if theirs == Some(S::BlockedUser) {
                return Err(ServiceError::not_found(format!("no user {other}")));
            }
            match mine {
                Some(S::BlockedUser) => {
                    return Err(ServiceError::forbidden(format!(
                        "you blocked {other}: unblock them first"
                    )))
                }
                Some(S::Friend) => {
                    return Err(ServiceError::invalid(format!(
                        "{other} is already a friend"
                    )))
                }
                Some(S::Outgoing) => {
                    return Err(ServiceError::invalid(format!(
                        "a friend request to {other} is already pending"
                    )))
                }
                // They asked first: asking back accepts.
                Some(S::Incoming) => friends(Ev::Accepted),
                _ => Plan {
                    mine: record(S::Outgoing, text, now_ms),
                    theirs: record(S::Incoming, text, now_ms),
                    event: Some((Ev::Requested, text.clone())),
                },
            }
        }
        Op::Accept => match mine {
            Some(S::Incoming) => friends(Ev::Accepted),
            _ => return Err(no_request_from()),
        },
        Op::Decline => match mine {
            Some(S::Incoming) => ended(Ev::Declined),
            _ => return Err(no_request_from()),
        },
        Op::Cancel => match mine {
            Some(S::Outgoing) => ended(Ev::Canceled),
            _ => {
                return Err(ServiceError::not_found(format!(
                    "no friend request to {other}"
                )))
            }
        },
        Op::Remove => match mine {
            Some(S::Friend) => ended(Ev::Removed),
            _ => return Err(ServiceError::not_found(format!("{other} is not a friend"))),
        },
        Op::Block => {
            // The other side sees the end of the relation as an ordinary one.
            let event = match mine {
                Some(S::Friend) => Some(Ev::Removed),
                Some(S::Incoming) => Some(Ev::Declined),
                Some(S::Outgoing) => Some(Ev::Canceled),
                _ => None,
            };
            if mine == Some(S::BlockedUser) {
                return Ok(none());
            }
            Plan {
                mine: record(S::BlockedUser, "", now_ms),
                // Their own block of the caller stays; anything else about the caller ends.
                theirs: match theirs {
                    Some(S::BlockedUser) | None => None,
                    Some(_) => Some(None),
                },
                event: event.map(|k| (k, String::new())),
            }
        }
        Op::Unblock => match mine {
            Some(S::BlockedUser) => Plan {
                mine: Some(None),
                theirs: None,
                event: None,
            },
            _ => return Err(ServiceError::not_found(format!("{other} is not blocked"))),
        },
    })
}

pub(crate) struct Contacts {
    store: Arc<dyn Store>,
    convs: Arc<ConvCache>,
    messages: Arc<Messages>,
    sequencer: Arc<dyn Sequencer>,
    router: Arc<dyn Router>,
    clock: Arc<dyn Clock>,
}

impl Contacts {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        convs: Arc<ConvCache>,
        messages: Arc<Messages>,
        sequencer: Arc<dyn Sequencer>,
        router: Arc<dyn Router>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            convs,
            messages,
            sequencer,
            router,
            clock,
        }
    }

    /// Applies `op` of `me` on `other`; returns once what it wrote is durable.
    pub(crate) async fn change(&self, me: &str, other: &str, op: Op) -> ServiceResult<()> {
        validate::username(other)?;
        if me == other {
            return Err(ServiceError::invalid("a user cannot be their own contact"));
        }
        if self.store.user(other)?.is_none() {
            return Err(ServiceError::not_found(format!("no user {other}")));
        }
        let conv = direct_conversation(me, other);
        let st_arc = self.convs.get(&conv)?;
        // A new block or unblock changes what `other` may see of the caller's presence.
        let presence_changed;
        let waiting = {
            let mut st = st_arc.lock().unwrap();
            let now = self.clock.now_ms();
            let mine = self.store.contact(me, other)?;
            let theirs = self.store.contact(other, me)?;
            let p = plan(other, &op, state(&mine), state(&theirs), now)?;
            presence_changed = matches!(op, Op::Block | Op::Unblock) && p.mine.is_some();
            let mut writes = Vec::new();
            if let Some(r) = p.mine {
                writes.push(Mutation::Contact {
                    user: me.to_string(),
                    other: other.to_string(),
                    record: r,
                });
            }
            if let Some(r) = p.theirs {
                writes.push(Mutation::Contact {
                    user: other.to_string(),
                    other: me.to_string(),
                    record: r,
                });
            }
            match p.event {
                None if writes.is_empty() => None,
                None => {
                    self.store.commit(&writes)?;
                    self.sequencer.wrote();
                    None
                }
                Some((kind, message)) => {
                    if !st.exists {
                        st.created_ms = now;
                        writes.extend(creation_mutations(&conv, &st));
                    }
                    let msg = pb::Message {
                        conversation: conv.clone(),
                        sender: me.to_string(),
                        server_time_ms: now,
                        kind: pb::MessageKind::System as i32,
                        contact: Some(pb::ContactEvent {
                            kind: kind as i32,
                            actor: me.to_string(),
                            user: other.to_string(),
                            message,
                        }),
                        ..Default::default()
                    };
                    let recipients = st.members.keys().cloned().collect();
                    let (tx, rx) = oneshot::channel();
                    self.messages.append(
                        &mut st,
                        Append {
                            msg,
                            recipients,
                            extra: writes,
                            dedup: None,
                            marks_read: true,
                        },
                        Box::new(move |r| {
                            let _ = tx.send(r);
                        }),
                    )?;
                    Some(rx)
                }
            }
        };
        match waiting {
            Some(rx) => {
                rx.await.map_err(|_| ServiceError::internal())??;
            }
            None => self.sequencer.barrier().await?,
        }
        // Told after the change is durable, like any presence push: a blocked user who saw
        // the caller online sees them go offline; an unblocked one sees them again.
        if presence_changed && self.router.is_online(me) && self.router.is_online(other) {
            let online = matches!(op, Op::Unblock);
            let now = self.clock.now_ms();
            fanout::presence(&*self.router, me, online, now, &[other.to_string()]);
        }
        Ok(())
    }

    /// Every relation of `user`, in name order.
    pub(crate) async fn list(&self, user: &str) -> ServiceResult<pb::ContactList> {
        self.sequencer.barrier().await?;
        let contacts = self
            .store
            .contacts(user)?
            .into_iter()
            .map(|(other, r)| pb::Contact {
                user: other,
                state: r.state,
                message: r.message,
                since_ms: r.since_ms,
            })
            .collect();
        Ok(pb::ContactList { contacts })
    }
}
