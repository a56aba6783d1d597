//! The owner's and admins' tools: change a member's role, hand the group over, change the
//! group's profile (name, topic, mute-all, member cap, history visibility), dissolve it. Each is a durable
//! SYSTEM event on the message path, like every membership change, so every member's
//! devices learn it in order; the state changes under the same lock as the append.

use tern_proto::pb::{self, ConversationKind, GroupEventKind, Role};

use super::Groups;
use crate::conversations::state::SharedState;
use crate::error::{ServiceError, ServiceResult};
use crate::store::{ConversationRecord, MemberRecord, Mutation};
use crate::validate;

/// Longest topic, in bytes.
pub(crate) const MAX_TOPIC_BYTES: usize = 1024;

/// A group as an operator sees it (the admin API).
pub struct GroupView {
    pub record: ConversationRecord,
    /// The members with their roles (none: dissolved).
    pub members: Vec<(String, MemberRecord)>,
    /// The seq of its newest entry.
    pub last_seq: u64,
}

fn owner_only() -> ServiceError {
    ServiceError::forbidden("only the owner may do this")
}

impl Groups {
    /// The owner makes `user` (a member, not the owner) a MEMBER or an ADMIN.
    pub async fn set_member_role(&self, actor: &str, req: pb::SetMemberRole) -> ServiceResult<()> {
        let role = match Role::try_from(req.role).unwrap_or(Role::Unspecified) {
            r @ (Role::Member | Role::Admin) => r,
            Role::Owner => {
                return Err(ServiceError::invalid(
                    "a group has one owner: use TransferOwnership",
                ))
            }
            Role::Unspecified => return Err(ServiceError::invalid("role must be MEMBER or ADMIN")),
        };
        let (st_arc, actor_role) = self.group_for_admin(&req.conversation, actor)?;
        if actor_role != Role::Owner {
            return Err(owner_only());
        }
        let (record, recipients) = {
            let st = st_arc.lock().unwrap();
            let Some(mut m) = st.members.get(&req.user).cloned() else {
                return Err(ServiceError::not_found(format!(
                    "{} is not a member of this group",
                    crate::conversations::id::truncate(&req.user, 40)
                )));
            };
            if st.role(&req.user) == Some(Role::Owner) {
                return Err(ServiceError::invalid(
                    "the owner's role changes only by TransferOwnership",
                ));
            }
            if st.role(&req.user) == Some(role) {
                return Ok(());
            }
            m.role = role as i32;
            (m, st.members.keys().cloned().collect::<Vec<_>>())
        };
        let extra = vec![Mutation::PutMember {
            conversation: req.conversation.clone(),
            user: req.user.clone(),
            record: record.clone(),
        }];
        let event = pb::GroupEvent {
            kind: GroupEventKind::RoleChanged as i32,
            actor: actor.to_string(),
            users: vec![req.user.clone()],
            role: role as i32,
            ..Default::default()
        };
        self.messages
            .append_system(&st_arc, &req.conversation, event, recipients, extra, |st| {
                st.members.insert(req.user.clone(), record);
            })
            .await?;
        Ok(())
    }

    /// The owner hands the group to `user` (a member) and becomes an admin.
    pub async fn transfer_ownership(
        &self,
        actor: &str,
        req: pb::TransferOwnership,
    ) -> ServiceResult<()> {
        let (st_arc, actor_role) = self.group_for_admin(&req.conversation, actor)?;
        if actor_role != Role::Owner {
            return Err(owner_only());
        }
        if req.user == actor {
            return Err(ServiceError::invalid("you already own this group"));
        }
        let (new_owner, old_owner, recipients) = {
            let st = st_arc.lock().unwrap();
            let (Some(mut to), Some(mut from)) = (
                st.members.get(&req.user).cloned(),
                st.members.get(actor).cloned(),
            ) else {
                return Err(ServiceError::not_found(format!(
                    "{} is not a member of this group",
                    crate::conversations::id::truncate(&req.user, 40)
                )));
            };
            to.role = Role::Owner as i32;
            from.role = Role::Admin as i32;
            (to, from, st.members.keys().cloned().collect::<Vec<_>>())
        };
        let extra = vec![
            Mutation::PutMember {
                conversation: req.conversation.clone(),
                user: req.user.clone(),
                record: new_owner.clone(),
            },
            Mutation::PutMember {
                conversation: req.conversation.clone(),
                user: actor.to_string(),
                record: old_owner.clone(),
            },
        ];
        let event = pb::GroupEvent {
            kind: GroupEventKind::OwnerChanged as i32,
            actor: actor.to_string(),
            users: vec![req.user.clone()],
            role: Role::Owner as i32,
            ..Default::default()
        };
        self.messages
            .append_system(&st_arc, &req.conversation, event, recipients, extra, |st| {
                st.members.insert(req.user.clone(), new_owner);
                st.members.insert(actor.to_string(), old_owner);
            })
            .await?;
        Ok(())
    }

    /// The owner or an admin changes the group's profile (absent fields keep their value).
    pub async fn update_group(&self, actor: &str, req: pb::UpdateGroup) -> ServiceResult<()> {
        if let Some(name) = &req.name {
            validate::group_name(name)?;
        }
        if let Some(topic) = &req.topic {
            if topic.len() > MAX_TOPIC_BYTES {
                return Err(ServiceError::invalid(format!(
                    "topic is longer than {MAX_TOPIC_BYTES} bytes"
                )));
            }
            if topic.chars().any(|c| c.is_control() && c != '\n') {
                return Err(ServiceError::invalid("topic has control characters"));
            }
        }
        let (st_arc, _) = self.group_for_admin(&req.conversation, actor)?;
        let (record, recipients, old_name) = {
            let st = st_arc.lock().unwrap();
            if let Some(max) = req.max_members {
                if max != 0 && (max as usize) < st.members.len() {
                    return Err(ServiceError::invalid(format!(
                        "max_members {max} is below the {} members the group has",
                        st.members.len()
                    )));
                }
                if max as usize > self.limits.max_group_members {
                    return Err(ServiceError::invalid(format!(
                        "max_members {max} is above the server's cap of {}",
                        self.limits.max_group_members
                    )));
                }
            }
            let mut rec = st.record();
            if let Some(n) = &req.name {
                rec.name = n.clone();
            }
            if let Some(t) = &req.topic {
                rec.topic = t.clone();
            }
            if let Some(m) = req.mute_all {
                rec.mute_all = m;
            }
            if let Some(m) = req.max_members {
                rec.max_members = m;
            }
            if let Some(v) = req.visibility {
                rec.visibility = match pb::HistoryVisibility::try_from(v) {
                    Ok(v @ (pb::HistoryVisibility::Joined | pb::HistoryVisibility::Shared)) => {
                        v as i32
                    }
                    Ok(pb::HistoryVisibility::Public) if st.channel => {
                        pb::HistoryVisibility::Public as i32
                    }
                    _ => {
                        return Err(ServiceError::invalid(
                            "visibility must be JOINED or SHARED (PUBLIC: channels only)",
                        ))
                    }
                };
            }
            if rec == st.record() {
                return Ok(());
            }
            (
                rec,
                st.members.keys().cloned().collect::<Vec<_>>(),
                st.name.clone(),
            )
        };
        let event = pb::GroupEvent {
            kind: GroupEventKind::GroupUpdated as i32,
            actor: actor.to_string(),
            name: record.name.clone(),
            topic: record.topic.clone(),
            mute_all: record.mute_all,
            max_members: record.max_members,
            visibility: record.visibility,
            ..Default::default()
        };
        let mut extra = vec![Mutation::Conversation {
            conversation: req.conversation.clone(),
            record: record.clone(),
        }];
        if record.channel && record.name != old_name {
            // The directory finds a channel by its name.
            extra.push(Mutation::UnlistChannel {
                name: old_name,
                conversation: req.conversation.clone(),
            });
            extra.push(Mutation::ListChannel {
                name: record.name.clone(),
                conversation: req.conversation.clone(),
            });
        }
        self.messages
            .append_system(&st_arc, &req.conversation, event, recipients, extra, |st| {
                st.name = record.name;
                st.topic = record.topic;
                st.mute_all = record.mute_all;
                st.max_members = record.max_members;
                st.visibility =
                    pb::HistoryVisibility::try_from(record.visibility).unwrap_or_default();
            })
            .await?;
        Ok(())
    }

    /// The owner dissolves the group: every member gets the DISSOLVED event, then nobody
    /// is a member.
    pub async fn dissolve_group(&self, actor: &str, req: pb::DissolveGroup) -> ServiceResult<()> {
        let (st_arc, actor_role) = self.group_for_admin(&req.conversation, actor)?;
        if actor_role != Role::Owner {
            return Err(owner_only());
        }
        self.dissolve(st_arc, actor, req).await
    }

    /// An operator dissolves the group (the admin API): as the owner's DissolveGroup, with
    /// `actor` (e.g. "admin") named in the event. NOT_FOUND for anything but a live group.
    pub async fn dissolve_as_operator(&self, conv: &str, actor: &str) -> ServiceResult<()> {
        let st_arc = self.convs.get(conv)?;
        {
            let g = st_arc.lock().unwrap();
            if g.kind != ConversationKind::Group || !g.exists || g.members.is_empty() {
                return Err(ServiceError::not_found(format!("no group {conv}")));
            }
        }
        let req = pb::DissolveGroup {
            conversation: conv.to_string(),
        };
        self.dissolve(st_arc, actor, req).await
    }

    async fn dissolve(
        &self,
        st_arc: SharedState,
        actor: &str,
        req: pb::DissolveGroup,
    ) -> ServiceResult<()> {
        let (recipients, channel_name) = {
            let st = st_arc.lock().unwrap();
            if st.kind != ConversationKind::Group {
                return Err(ServiceError::invalid("not a group"));
            }
            (
                st.members.keys().cloned().collect::<Vec<_>>(),
                st.channel.then(|| st.name.clone()),
            )
        };
        let mut extra: Vec<Mutation> = recipients
            .iter()
            .map(|u| Mutation::DelMember {
                conversation: req.conversation.clone(),
                user: u.clone(),
            })
            .collect();
        if let Some(name) = channel_name {
            // Out of the directory, and nobody reads it any more.
            extra.push(Mutation::UnlistChannel {
                name,
                conversation: req.conversation.clone(),
            });
            let mut rec = st_arc.lock().unwrap().record();
            rec.channel = false;
            extra.push(Mutation::Conversation {
                conversation: req.conversation.clone(),
                record: rec,
            });
        }
        let event = pb::GroupEvent {
            kind: GroupEventKind::Dissolved as i32,
            actor: actor.to_string(),
            ..Default::default()
        };
        self.messages
            .append_system(&st_arc, &req.conversation, event, recipients, extra, |st| {
                st.members.clear();
                st.channel = false;
            })
            .await?;
        Ok(())
    }

    /// Groups (ids `g:...`) after `after`, in id order, at most `limit`, each with its
    /// members (none: dissolved). For operators (the admin API).
    pub fn groups_page(
        &self,
        after: &str,
        limit: usize,
    ) -> ServiceResult<Vec<(String, ConversationRecord)>> {
        Ok(self.store.conversations_page("g:", after, limit)?)
    }

    /// A group as an operator sees it. NOT_FOUND when there is no such group.
    pub fn operator_view(&self, conv: &str) -> ServiceResult<GroupView> {
        let st = self.convs.get(conv)?;
        let g = st.lock().unwrap();
        if g.kind != ConversationKind::Group || !g.exists {
            return Err(ServiceError::not_found(format!("no group {conv}")));
        }
        let members = g
            .members
            .iter()
            .map(|(u, m)| (u.clone(), m.clone()))
            .collect();
        Ok(GroupView {
            record: g.record(),
            members,
            last_seq: g.last_seq,
        })
    }

    /// The member cap of a group: its own, or the server's.
    pub(crate) fn member_cap(&self, group_cap: u32) -> usize {
        match group_cap {
            0 => self.limits.max_group_members,
            n => (n as usize).min(self.limits.max_group_members),
        }
    }
}
