//! Public channels: groups listed in a directory (searched by name prefix) that users
//! join and leave themselves. A channel is read diffusion whatever its size, may be
//! broadcast-only (mute-all: only the owner and admins post), and its history is PUBLIC
//! by default (anyone may read it, member or not: `ConvCache::reader`).

use tern_proto::pb::{self, ErrorCode, GroupEventKind, Role};

use super::{Groups, NewGroup};
use crate::error::{ServiceError, ServiceResult};
use crate::store::{MemberRecord, Mutation};
use crate::validate;

/// Default and largest page of the directory.
const DIRECTORY_PAGE: usize = 50;
const DIRECTORY_MAX: usize = 100;

impl Groups {
    /// Creates a public channel owned by `owner`.
    pub async fn create_channel(
        &self,
        owner: &str,
        req: pb::CreateChannel,
    ) -> ServiceResult<pb::GroupCreated> {
        validate::group_name(&req.name)?;
        let visibility = match pb::HistoryVisibility::try_from(req.visibility) {
            Ok(v @ (pb::HistoryVisibility::Joined | pb::HistoryVisibility::Shared)) => v,
            _ => pb::HistoryVisibility::Public,
        };
        let kind = NewGroup {
            visibility,
            channel: true,
            mute_all: req.broadcast_only,
        };
        self.create(owner, req.name, Vec::new(), kind).await
    }

    /// `user` joins the public channel `conv` (a MEMBERS_ADDED event naming them). Joining
    /// twice is Ok and writes nothing; a private group is FORBIDDEN, as is one that does
    /// not exist (ids cannot be probed).
    pub async fn join_channel(&self, user: &str, conv: &str) -> ServiceResult<()> {
        let not_public = || ServiceError::forbidden("not a public channel");
        let st_arc = match self.convs.get(conv) {
            Ok(st) => st,
            Err(e) if e.code == ErrorCode::NotFound => return Err(not_public()),
            Err(e) => return Err(e),
        };
        let recipients = {
            let st = st_arc.lock().unwrap();
            if !st.exists || !st.channel {
                return Err(not_public());
            }
            if st.members.contains_key(user) {
                return Ok(());
            }
            let cap = self.member_cap(st.max_members);
            if st.members.len() + 1 > cap {
                return Err(ServiceError::new(
                    ErrorCode::ResourceExhausted,
                    format!("this channel has at most {cap} members"),
                ));
            }
            let mut r: Vec<String> = st.members.keys().cloned().collect();
            r.push(user.to_string());
            r
        };
        let now = self.messages.clock().now_ms();
        let member = move |seq: u64| MemberRecord {
            role: Role::Member as i32,
            joined_ms: now,
            visible_from: seq,
        };
        let event = pb::GroupEvent {
            kind: GroupEventKind::MembersAdded as i32,
            actor: user.to_string(),
            users: vec![user.to_string()],
            ..Default::default()
        };
        let (c, u) = (conv.to_string(), user.to_string());
        self.messages
            .append_system_at(
                &st_arc,
                conv,
                event,
                recipients,
                move |seq| {
                    vec![
                        Mutation::PutMember {
                            conversation: c.clone(),
                            user: u.clone(),
                            record: member(seq),
                        },
                        Mutation::Read {
                            user: u,
                            conversation: c,
                            read_seq: seq - 1,
                        },
                    ]
                },
                |st, seq| {
                    st.members.insert(user.to_string(), member(seq));
                },
            )
            .await?;
        Ok(())
    }

    /// The directory: channels whose name starts with `prefix` (case-insensitive).
    pub async fn list_channels(
        &self,
        user: &str,
        prefix: &str,
        limit: u32,
    ) -> ServiceResult<pb::ChannelList> {
        if prefix.len() > 128 || prefix.chars().any(char::is_control) {
            return Err(ServiceError::invalid(
                "prefix must be at most 128 bytes without control characters",
            ));
        }
        let limit = match limit {
            0 => DIRECTORY_PAGE,
            n => (n as usize).min(DIRECTORY_MAX),
        };
        let mut channels = Vec::new();
        for id in self.store.channels(&prefix.to_lowercase(), limit)? {
            let st = self.convs.get(&id)?;
            let g = st.lock().unwrap();
            channels.push(pb::ChannelInfo {
                conversation: id.clone(),
                name: g.name.clone(),
                topic: g.topic.clone(),
                member_count: g.members.len() as u32,
                broadcast_only: g.mute_all,
                visibility: g.visibility as i32,
                joined: g.members.contains_key(user),
            });
        }
        self.messages.barrier().await?;
        Ok(pb::ChannelList { channels })
    }
}
