//! Groups: create, add and remove members, leave, list members, with owner/admin roles;
//! [`admin`]: role changes, ownership transfer, the group profile, dissolving.
//! Every change is a durable SYSTEM message in the group's timeline, appended on the
//! message path together with the membership writes, so every member's devices learn it
//! in order.

pub(crate) mod admin;
pub(crate) mod channels;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use rand::RngCore;
use tern_proto::pb::{self, ConversationKind, ErrorCode, Role};

use crate::config::MessageLimits;
use crate::conversations::state::SharedState;
use crate::conversations::{ConvCache, ConvState};
use crate::error::{ServiceError, ServiceResult};
use crate::messages::send::creation_mutations;
use crate::messages::Messages;
use crate::store::{MemberRecord, Mutation, Store};
use crate::validate;

/// What kind of group [`Groups::create`] makes.
pub(crate) struct NewGroup {
    pub(crate) visibility: pb::HistoryVisibility,
    pub(crate) channel: bool,
    pub(crate) mute_all: bool,
}

pub struct Groups {
    store: Arc<dyn Store>,
    convs: Arc<ConvCache>,
    messages: Arc<Messages>,
    limits: MessageLimits,
}

impl Groups {
    pub fn new(
        store: Arc<dyn Store>,
        convs: Arc<ConvCache>,
        messages: Arc<Messages>,
        limits: MessageLimits,
    ) -> Self {
        Self {
            store,
            convs,
            messages,
            limits,
        }
    }

    fn check_users_exist(&self, users: &[String]) -> ServiceResult<()> {
        for u in users {
            validate::username(u)?;
            if self.store.user(u)?.is_none() {
                return Err(ServiceError::not_found(format!("no user {u}")));
            }
        }
        Ok(())
    }

    pub async fn create_group(
        &self,
        owner: &str,
        req: pb::CreateGroup,
    ) -> ServiceResult<pb::GroupCreated> {
        validate::group_name(&req.name)?;
        let mut others: BTreeSet<String> = req.members.into_iter().collect();
        others.remove(owner);
        let others: Vec<String> = others.into_iter().collect();
        self.check_users_exist(&others)?;
        if others.len() + 1 > self.limits.max_group_members {
            return Err(ServiceError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "a group has at most {} members",
                    self.limits.max_group_members
                ),
            ));
        }
        let visibility = match pb::HistoryVisibility::try_from(req.visibility) {
            Ok(pb::HistoryVisibility::Shared) => pb::HistoryVisibility::Shared,
            _ => pb::HistoryVisibility::Joined,
        };
        let kind = NewGroup {
            visibility,
            channel: false,
            mute_all: false,
        };
        self.create(owner, req.name, others, kind).await
    }

    /// Makes a group (or a channel) with `owner` and `others` as its first members, and
    /// writes its CREATED event.
    pub(crate) async fn create(
        &self,
        owner: &str,
        name: String,
        others: Vec<String>,
        kind: NewGroup,
    ) -> ServiceResult<pb::GroupCreated> {
        let mut idb = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut idb);
        let conv: String = format!(
            "g:{}",
            idb.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let now = self.messages.clock().now_ms();
        let mut members = BTreeMap::new();
        members.insert(
            owner.to_string(),
            MemberRecord {
                role: Role::Owner as i32,
                joined_ms: now,
                visible_from: 1,
            },
        );
        for u in &others {
            members.insert(
                u.clone(),
                MemberRecord {
                    role: Role::Member as i32,
                    joined_ms: now,
                    visible_from: 1,
                },
            );
        }
        let state = ConvState {
            kind: ConversationKind::Group,
            name: name.clone(),
            created_ms: now,
            exists: false,
            last_seq: 0,
            last_time_ms: 0,
            // Channels are read diffusion whatever their size.
            read_diffusion: kind.channel || members.len() > self.limits.fanout_threshold,
            topic: String::new(),
            mute_all: kind.mute_all,
            max_members: 0,
            visibility: kind.visibility,
            channel: kind.channel,
            members,
        };
        let mut extra = creation_mutations(&conv, &state);
        if kind.channel {
            extra.push(Mutation::ListChannel {
                name: name.clone(),
                conversation: conv.clone(),
            });
        }
        let visibility = kind.visibility;
        let recipients: Vec<String> = state.members.keys().cloned().collect();
        let st_arc = Arc::new(Mutex::new(state));
        self.convs.insert(&conv, st_arc.clone());
        let event = pb::GroupEvent {
            kind: pb::GroupEventKind::Created as i32,
            actor: owner.to_string(),
            users: others,
            name,
            visibility: visibility as i32,
            ..Default::default()
        };
        let seq = self
            .messages
            .append_system(&st_arc, &conv, event, recipients, extra, |_| {})
            .await;
        match seq {
            Ok(seq) => Ok(pb::GroupCreated {
                conversation: conv,
                seq,
            }),
            Err(e) => {
                if !st_arc.lock().unwrap().exists {
                    self.convs.remove(&conv);
                }
                Err(e)
            }
        }
    }

    fn group_for_admin(&self, conv: &str, actor: &str) -> ServiceResult<(SharedState, Role)> {
        let st = self.convs.member(conv, actor)?;
        let role = {
            let g = st.lock().unwrap();
            if g.kind != ConversationKind::Group {
                return Err(ServiceError::invalid("not a group"));
            }
            g.role(actor).unwrap_or(Role::Member)
        };
        if role != Role::Owner && role != Role::Admin {
            return Err(ServiceError::forbidden(
                "only the owner or an admin may do this",
            ));
        }
        Ok((st, role))
    }

    pub async fn add_members(&self, actor: &str, req: pb::AddMembers) -> ServiceResult<()> {
        let role = match Role::try_from(req.role).unwrap_or(Role::Unspecified) {
            Role::Unspecified | Role::Member => Role::Member,
            Role::Admin => Role::Admin,
            Role::Owner => return Err(ServiceError::invalid("a group has one owner")),
        };
        let (st_arc, actor_role) = self.group_for_admin(&req.conversation, actor)?;
        if role == Role::Admin && actor_role != Role::Owner {
            return Err(ServiceError::forbidden("only the owner may add admins"));
        }
        let wanted: BTreeSet<String> = req.users.into_iter().collect();
        if wanted.is_empty() {
            return Err(ServiceError::invalid("users is empty"));
        }
        let wanted: Vec<String> = wanted.into_iter().collect();
        self.check_users_exist(&wanted)?;
        let (new, recipients, extra, read_diffusion) = {
            let st = st_arc.lock().unwrap();
            let new: Vec<String> = wanted
                .into_iter()
                .filter(|u| !st.members.contains_key(u))
                .collect();
            let cap = self.member_cap(st.max_members);
            if st.members.len() + new.len() > cap {
                return Err(ServiceError::new(
                    ErrorCode::ResourceExhausted,
                    format!("this group has at most {cap} members"),
                ));
            }
            let mut extra = Vec::new();
            let read_diffusion =
                st.read_diffusion || st.members.len() + new.len() > self.limits.fanout_threshold;
            if read_diffusion && !st.read_diffusion {
                let mut rec = st.record();
                rec.read_diffusion = true;
                extra.push(Mutation::Conversation {
                    conversation: req.conversation.clone(),
                    record: rec,
                });
            }
            let mut recipients: Vec<String> = st.members.keys().cloned().collect();
            recipients.extend(new.iter().cloned());
            (new, recipients, extra, read_diffusion)
        };
        if new.is_empty() {
            return Ok(());
        }
        let event = pb::GroupEvent {
            kind: pb::GroupEventKind::MembersAdded as i32,
            actor: actor.to_string(),
            users: new.clone(),
            name: String::new(),
            ..Default::default()
        };
        let now = self.messages.clock().now_ms();
        let member = |seq: u64| MemberRecord {
            role: role as i32,
            joined_ms: now,
            // In a JOINED group their history starts with the event that adds them.
            visible_from: seq,
        };
        let conv = req.conversation.clone();
        let added = new.clone();
        let extra_at = move |seq: u64| {
            let mut extra = extra;
            for u in &added {
                extra.push(Mutation::PutMember {
                    conversation: conv.clone(),
                    user: u.clone(),
                    record: member(seq),
                });
                // A new member starts with what came before as read: their unread count
                // begins with the event that added them.
                extra.push(Mutation::Read {
                    user: u.clone(),
                    conversation: conv.clone(),
                    read_seq: seq - 1,
                });
            }
            extra
        };
        self.messages
            .append_system_at(
                &st_arc,
                &req.conversation,
                event,
                recipients,
                extra_at,
                |st, seq| {
                    for u in new {
                        st.members.insert(u, member(seq));
                    }
                    st.read_diffusion = read_diffusion;
                },
            )
            .await?;
        Ok(())
    }

    pub async fn remove_members(&self, actor: &str, req: pb::RemoveMembers) -> ServiceResult<()> {
        let (st_arc, actor_role) = self.group_for_admin(&req.conversation, actor)?;
        let wanted: BTreeSet<String> = req.users.into_iter().collect();
        if wanted.is_empty() {
            return Err(ServiceError::invalid("users is empty"));
        }
        if wanted.contains(actor) {
            return Err(ServiceError::invalid("use LeaveGroup to remove yourself"));
        }
        let (gone, recipients) = {
            let st = st_arc.lock().unwrap();
            let mut gone = Vec::new();
            for u in &wanted {
                match st.role(u) {
                    None => {}
                    Some(Role::Owner) => {
                        return Err(ServiceError::forbidden("the owner cannot be removed"))
                    }
                    Some(Role::Admin) if actor_role != Role::Owner => {
                        return Err(ServiceError::forbidden(
                            "only the owner may remove an admin",
                        ))
                    }
                    Some(_) => gone.push(u.clone()),
                }
            }
            (gone, st.members.keys().cloned().collect::<Vec<_>>())
        };
        if gone.is_empty() {
            return Ok(());
        }
        let extra = gone
            .iter()
            .map(|u| Mutation::DelMember {
                conversation: req.conversation.clone(),
                user: u.clone(),
            })
            .collect();
        let event = pb::GroupEvent {
            kind: pb::GroupEventKind::MembersRemoved as i32,
            actor: actor.to_string(),
            users: gone.clone(),
            name: String::new(),
            ..Default::default()
        };
        self.messages
            .append_system(&st_arc, &req.conversation, event, recipients, extra, |st| {
                for u in &gone {
                    st.members.remove(u);
                }
            })
            .await?;
        Ok(())
    }

    pub async fn leave_group(&self, user: &str, req: pb::LeaveGroup) -> ServiceResult<()> {
        let st_arc = self.convs.member(&req.conversation, user)?;
        let (recipients, extra, successor) = {
            let st = st_arc.lock().unwrap();
            if st.kind != ConversationKind::Group {
                return Err(ServiceError::invalid("cannot leave a 1:1 conversation"));
            }
            let mut extra = vec![Mutation::DelMember {
                conversation: req.conversation.clone(),
                user: user.to_string(),
            }];
            // The owner leaving hands the group to the first admin, else the first member.
            let mut successor = None;
            if st.role(user) == Some(Role::Owner) {
                let pick = |want: Role| {
                    st.members
                        .iter()
                        .find(|(u, m)| u.as_str() != user && m.role == want as i32)
                        .map(|(u, m)| (u.clone(), m.clone()))
                };
                if let Some((u, mut m)) = pick(Role::Admin).or_else(|| pick(Role::Member)) {
                    m.role = Role::Owner as i32;
                    extra.push(Mutation::PutMember {
                        conversation: req.conversation.clone(),
                        user: u.clone(),
                        record: m.clone(),
                    });
                    successor = Some((u, m));
                }
            }
            (
                st.members.keys().cloned().collect::<Vec<_>>(),
                extra,
                successor,
            )
        };
        let event = pb::GroupEvent {
            kind: pb::GroupEventKind::MemberLeft as i32,
            actor: user.to_string(),
            users: vec![user.to_string()],
            name: String::new(),
            ..Default::default()
        };
        self.messages
            .append_system(&st_arc, &req.conversation, event, recipients, extra, |st| {
                st.members.remove(user);
                if let Some((u, m)) = successor {
                    st.members.insert(u, m);
                }
            })
            .await?;
        Ok(())
    }

    pub async fn list_members(&self, user: &str, conv: &str) -> ServiceResult<pb::MemberList> {
        let st = self.convs.member(conv, user)?;
        let members = {
            let g = st.lock().unwrap();
            g.members
                .iter()
                .map(|(u, m)| pb::Member {
                    username: u.clone(),
                    role: m.role,
                })
                .collect()
        };
        self.messages.barrier().await?;
        Ok(pb::MemberList {
            conversation: conv.to_string(),
            members,
        })
    }
}

#[cfg(test)]
mod tests;
