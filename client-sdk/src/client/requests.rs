//! The request methods of [`Client`]: one per request the app makes through the live
//! connection, each a thin typed wrapper over [`Client::request`].

use tern_proto::pb;
use tern_proto::Body;

use super::{expect_ok, unexpected, Client, ClientError};
use crate::model::ConversationListModel;

/// Where [`Client::search`] looks and which page it returns; the default: every
/// conversation, any sender, 20 hits, the newest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchOptions {
    /// Only this conversation (a 1:1 id from [`tern_proto::direct_conversation`], or a
    /// group id); "" = every conversation of the user.
    pub conversation: String,
    /// Only messages this user sent; "" = anyone.
    pub sender: String,
    /// Hits per page: 0 = 20, at most 100.
    pub limit: u32,
    /// `next_page` of the previous result; "" = the newest hits.
    pub page: String,
}

impl Client {
    /// A page of a conversation's history, newest first up to `before` (0 = from the end),
    /// returned in ascending order.
    pub async fn history(
        &self,
        conversation: &str,
        before: u64,
        limit: u32,
    ) -> Result<pb::PullResult, ClientError> {
        let before_seq = if before == 0 { u64::MAX } else { before };
        match self
            .request(Body::Pull(pb::Pull {
                conversation: conversation.into(),
                before_seq,
                limit,
                ..Default::default()
            }))
            .await?
        {
            Body::PullResult(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn create_group(
        &self,
        name: &str,
        members: &[String],
    ) -> Result<pb::GroupCreated, ClientError> {
        match self
            .request(Body::CreateGroup(pb::CreateGroup {
                name: name.into(),
                members: members.to_vec(),
                ..Default::default()
            }))
            .await?
        {
            Body::GroupCreated(g) => Ok(g),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn add_members(
        &self,
        conversation: &str,
        users: &[String],
        role: pb::Role,
    ) -> Result<(), ClientError> {
        expect_ok(
            self.request(Body::AddMembers(pb::AddMembers {
                conversation: conversation.into(),
                users: users.to_vec(),
                role: role as i32,
            }))
            .await?,
        )
    }

    pub async fn remove_members(
        &self,
        conversation: &str,
        users: &[String],
    ) -> Result<(), ClientError> {
        expect_ok(
            self.request(Body::RemoveMembers(pb::RemoveMembers {
                conversation: conversation.into(),
                users: users.to_vec(),
            }))
            .await?,
        )
    }

    pub async fn leave_group(&self, conversation: &str) -> Result<(), ClientError> {
        expect_ok(
            self.request(Body::LeaveGroup(pb::LeaveGroup {
                conversation: conversation.into(),
            }))
            .await?,
        )
    }

    /// The owner makes a member a `MEMBER` or an `ADMIN` (docs/PROTOCOL.md 9).
    pub async fn set_member_role(
        &self,
        conversation: &str,
        user: &str,
        role: pb::Role,
    ) -> Result<(), ClientError> {
        expect_ok(
            self.request(Body::SetMemberRole(pb::SetMemberRole {
                conversation: conversation.into(),
                user: user.into(),
                role: role as i32,
            }))
            .await?,
        )
    }

    /// The owner hands the group to another member and becomes an admin.
    pub async fn transfer_ownership(
        &self,
        conversation: &str,
        user: &str,
    ) -> Result<(), ClientError> {
        expect_ok(
            self.request(Body::TransferOwnership(pb::TransferOwnership {
                conversation: conversation.into(),
                user: user.into(),
            }))
            .await?,
        )
    }

    /// The owner or an admin changes the group's profile; `None` fields keep their value.
    pub async fn update_group(&self, update: pb::UpdateGroup) -> Result<(), ClientError> {
        expect_ok(self.request(Body::UpdateGroup(update)).await?)
    }

    /// Creates a public channel (docs/PROTOCOL.md 9.10): listed in the directory, joined
    /// by users themselves; `broadcast_only`: only the owner and admins post.
    pub async fn create_channel(
        &self,
        name: &str,
        broadcast_only: bool,
    ) -> Result<pb::GroupCreated, ClientError> {
        match self
            .request(Body::CreateChannel(pb::CreateChannel {
                name: name.into(),
                broadcast_only,
                ..Default::default()
            }))
            .await?
        {
            Body::GroupCreated(g) => Ok(g),
            other => Err(unexpected(&other)),
        }
    }

    /// Joins a public channel (leave it with [`Client::leave_group`]).
    pub async fn join_channel(&self, conversation: &str) -> Result<(), ClientError> {
        expect_ok(
            self.request(Body::JoinChannel(pb::JoinChannel {
                conversation: conversation.into(),
            }))
            .await?,
        )
    }

    /// The channel directory: channels whose name starts with `prefix`
    /// (case-insensitive), at most `limit` (0 = 50, at most 100).
    pub async fn list_channels(
        &self,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<pb::ChannelInfo>, ClientError> {
        match self
            .request(Body::ListChannels(pb::ListChannels {
                prefix: prefix.into(),
                limit,
            }))
            .await?
        {
            Body::ChannelList(l) => Ok(l.channels),
            other => Err(unexpected(&other)),
        }
    }

    /// The owner dissolves the group: nobody is a member afterwards.
    pub async fn dissolve_group(&self, conversation: &str) -> Result<(), ClientError> {
        expect_ok(
            self.request(Body::DissolveGroup(pb::DissolveGroup {
                conversation: conversation.into(),
            }))
            .await?,
        )
    }

    pub async fn members(&self, conversation: &str) -> Result<Vec<pb::Member>, ClientError> {
        match self
            .request(Body::ListMembers(pb::ListMembers {
                conversation: conversation.into(),
            }))
            .await?
        {
            Body::MemberList(l) => Ok(l.members),
            other => Err(unexpected(&other)),
        }
    }

    /// The first page of [`Client::conversation_list`] (at most 1000 conversations, pinned
    /// first, then most recently active first), without the totals.
    pub async fn conversations(&self) -> Result<Vec<pb::ConversationInfo>, ClientError> {
        Ok(self.conversation_list(0, 0).await?.conversations)
    }

    /// One page of the user's conversations, pinned ones first, then most recently
    /// active first: `offset` skipped, at most `limit` (0 = as many as the server gives,
    /// at most 1000). Each
    /// carries the user's `read_seq`, the server's `unread` count, the last message and
    /// the user's `muted`/`pinned` settings; the list also has `total_unread` (muted
    /// conversations left out) and `total` over all the user's conversations
    /// (docs/PROTOCOL.md 9.1).
    pub async fn conversation_list(
        &self,
        limit: u32,
        offset: u32,
    ) -> Result<pb::ConversationList, ClientError> {
        match self
            .request(Body::ListConversations(pb::ListConversations {
                limit,
                offset,
            }))
            .await?
        {
            Body::ConversationList(l) => Ok(l),
            other => Err(unexpected(&other)),
        }
    }

    /// The whole conversation list (every page) as a [`ConversationListModel`] to bind a
    /// UI to: hand it every [`Event`](crate::Event) from then on
    /// ([`ConversationListModel::apply`]) and it stays current without polling.
    pub async fn conversation_model(&self) -> Result<ConversationListModel, ClientError> {
        let mut all = self.conversation_list(1000, 0).await?;
        let mut seen: std::collections::HashSet<String> = all
            .conversations
            .iter()
            .map(|c| c.conversation.clone())
            .collect();
        let mut offset = all.conversations.len() as u32;
        while offset < all.total {
            let page = self.conversation_list(1000, offset).await?;
            if page.conversations.is_empty() {
                break;
            }
            offset += page.conversations.len() as u32;
            all.total_unread = page.total_unread;
            // A conversation that moved up between two pages is listed once.
            all.conversations.extend(
                page.conversations
                    .into_iter()
                    .filter(|c| seen.insert(c.conversation.clone())),
            );
        }
        Ok(ConversationListModel::from_list(self.username(), all))
    }

    /// Marks `conversation` read up to `seq` (0 = up to its last message). Read positions
    /// only move forward: an older `seq` changes nothing and is not an error; the answer
    /// is the position after the call, and `unread` what is left. Durable when it
    /// returns. When the position moved, the user's devices (this one too) get an
    /// [`Event::Read`](crate::Event::Read) with `own` set, and the other members one
    /// without (docs/PROTOCOL.md 9.2). A `seq` past the last message is
    /// `INVALID_ARGUMENT`; a conversation the user is not in, `FORBIDDEN`.
    pub async fn mark_read(
        &self,
        conversation: &str,
        seq: u64,
    ) -> Result<pb::ReadState, ClientError> {
        match self
            .request(Body::MarkRead(pb::MarkRead {
                conversation: conversation.into(),
                seq,
            }))
            .await?
        {
            Body::ReadState(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// Who of the other members has read message `seq` of `conversation`: `read_by`
    /// (sorted; empty in read-diffusion groups, which give the counts only), `read_count`
    /// of `members` (the members other than the message's sender) (docs/PROTOCOL.md 9.2).
    /// A `seq` outside 1..=last seq is `INVALID_ARGUMENT`; a conversation the user is not
    /// in, `FORBIDDEN`.
    pub async fn receipts(
        &self,
        conversation: &str,
        seq: u64,
    ) -> Result<pb::ReceiptsResult, ClientError> {
        match self
            .request(Body::ReceiptsQuery(pb::ReceiptsQuery {
                conversation: conversation.into(),
                seq,
            }))
            .await?
        {
            Body::ReceiptsResult(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// Says this user is typing (`true`) or stopped (`false`) in `conversation`. The
    /// members online now (not this user's devices) get an
    /// [`Event::Typing`](crate::Event::Typing); never stored. Send `true` about every 3 s
    /// while the user types (the server forwards one per 2 s at most, and a "typing" ends
    /// by itself after 6 s) and `false` when they stop (docs/PROTOCOL.md 10). A
    /// conversation the user is not in: `FORBIDDEN`.
    pub async fn typing(&self, conversation: &str, typing: bool) -> Result<(), ClientError> {
        expect_ok(
            self.request(Body::Typing(pb::Typing {
                conversation: conversation.into(),
                typing,
            }))
            .await?,
        )
    }

    /// Mutes/unmutes (`muted`) and pins/unpins (`pinned`) `conversation` for this user,
    /// on all their devices; `None` keeps a setting as it is. The answer is both settings
    /// after the call, durable when it returns. When something changed, the user's
    /// devices (this one too) get an
    /// [`Event::SettingsChanged`](crate::Event::SettingsChanged). A pinned conversation is
    /// listed first by [`Client::conversation_list`]; a muted one's unread is left out of
    /// `total_unread` (docs/PROTOCOL.md 9.3). A conversation the user is not in:
    /// `FORBIDDEN`.
    pub async fn set_conversation_settings(
        &self,
        conversation: &str,
        muted: Option<bool>,
        pinned: Option<bool>,
    ) -> Result<pb::ConversationSettings, ClientError> {
        match self
            .request(Body::SetConversationSettings(pb::SetConversationSettings {
                conversation: conversation.into(),
                muted,
                pinned,
            }))
            .await?
        {
            Body::ConversationSettings(s) => Ok(s),
            other => Err(unexpected(&other)),
        }
    }

    /// Mutes (`true`) or unmutes `conversation`; see
    /// [`Client::set_conversation_settings`].
    pub async fn mute(
        &self,
        conversation: &str,
        muted: bool,
    ) -> Result<pb::ConversationSettings, ClientError> {
        self.set_conversation_settings(conversation, Some(muted), None)
            .await
    }

    /// Pins (`true`) or unpins `conversation`; see [`Client::set_conversation_settings`].
    pub async fn pin(
        &self,
        conversation: &str,
        pinned: bool,
    ) -> Result<pb::ConversationSettings, ClientError> {
        self.set_conversation_settings(conversation, None, Some(pinned))
            .await
    }

    /// Changes this user's profile: `None` keeps a field, `Some("")` clears it. Returns
    /// the profile after the change (display name at most 64 characters, status at most
    /// 256, no control characters, else `INVALID_ARGUMENT`).
    pub async fn set_profile(
        &self,
        display_name: Option<&str>,
        status: Option<&str>,
    ) -> Result<pb::Profile, ClientError> {
        match self
            .request(Body::SetProfile(pb::SetProfile {
                display_name: display_name.map(str::to_string),
                status: status.map(str::to_string),
                avatar: None,
            }))
            .await?
        {
            Body::ProfileList(l) if l.profiles.len() == 1 => {
                Ok(l.profiles.into_iter().next().expect("one profile"))
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Sets this user's avatar to an image blob they uploaded (or may read); "" removes
    /// it. Anyone may then download it. `INVALID_ARGUMENT` for a blob that is not an
    /// image, `NOT_FOUND` for one the user may not read. Returns the profile.
    pub async fn set_avatar(&self, blob_id: &str) -> Result<pb::Profile, ClientError> {
        match self
            .request(Body::SetProfile(pb::SetProfile {
                avatar: Some(blob_id.to_string()),
                ..Default::default()
            }))
            .await?
        {
            Body::ProfileList(l) if l.profiles.len() == 1 => {
                Ok(l.profiles.into_iter().next().expect("one profile"))
            }
            other => Err(unexpected(&other)),
        }
    }

    /// The profiles of up to 100 users, in the order asked; unknown users are left out.
    pub async fn get_profiles(&self, users: &[String]) -> Result<Vec<pb::Profile>, ClientError> {
        match self
            .request(Body::GetProfiles(pb::GetProfiles {
                users: users.to_vec(),
            }))
            .await?
        {
            Body::ProfileList(l) => Ok(l.profiles),
            other => Err(unexpected(&other)),
        }
    }

    /// Users whose name or display name starts with `prefix` (at least 2 characters,
    /// case-insensitive), at most `limit` (0 = 20, at most 50). Rate-limited per user:
    /// `RATE_LIMITED` with a retry hint when searching too fast.
    pub async fn search_users(
        &self,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<pb::UserMatch>, ClientError> {
        match self
            .request(Body::SearchUsers(pb::SearchUsers {
                prefix: prefix.into(),
                limit,
            }))
            .await?
        {
            Body::UserSearchResult(r) => Ok(r.users),
            other => Err(unexpected(&other)),
        }
    }

    /// Full-text search over the messages this user can read, newest first
    /// (docs/PROTOCOL.md 9.15). Every word of `query` must occur (case-insensitive,
    /// whole words); a run of Chinese, Japanese or Korean characters matches where those
    /// characters occur in that order ("世界" finds "你好世界"). Narrow it with
    /// [`SearchOptions`]: one conversation, one sender, the page size (0 = 20, at most 100)
    /// and the page (`next_page` of the previous result; "" = the newest hits).
    ///
    /// The hits are the messages as history serves them now (an edited one with its
    /// current text; recalled, expired and deleted-for-me ones are never hits). Messages
    /// become searchable shortly after their ack: `index_lag` in the result counts those
    /// not yet searchable. Errors: `INVALID_ARGUMENT` for an empty query, one over 256
    /// bytes or with nothing searchable (only punctuation or operators); `FORBIDDEN` for a
    /// conversation the user may not read; `RATE_LIMITED` when searching too fast.
    pub async fn search(
        &self,
        query: &str,
        options: SearchOptions,
    ) -> Result<pb::SearchResult, ClientError> {
        match self
            .request(Body::SearchMessages(pb::SearchMessages {
                query: query.into(),
                conversation: options.conversation,
                sender: options.sender,
                limit: options.limit,
                page: options.page,
            }))
            .await?
        {
            Body::SearchResult(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// Asks `user` to be friends, with an optional `message` (at most 256 bytes; "" for
    /// none). If `user` already asked this user, it accepts their request. Contact changes
    /// reach every device of both users as SYSTEM messages whose `contact` field says what
    /// happened ([`Event::Message`](crate::Event::Message)), also devices that were
    /// offline (docs/PROTOCOL.md 9.13). Errors: an unknown user (or one who blocked this
    /// user) `NOT_FOUND`; oneself, already friends or requested `INVALID_ARGUMENT`.
    pub async fn send_friend_request(&self, user: &str, message: &str) -> Result<(), ClientError> {
        expect_ok(
            self.request(Body::SendFriendRequest(pb::SendFriendRequest {
                user: user.into(),
                message: message.into(),
            }))
            .await?,
        )
    }

    /// Accepts `user`'s pending friend request (none: `NOT_FOUND`).
    pub async fn accept_friend_request(&self, user: &str) -> Result<(), ClientError> {
        expect_ok(
            self.request(Body::AcceptFriendRequest(pb::AcceptFriendRequest {
                user: user.into(),
            }))
            .await?,
        )
    }

    /// Declines `user`'s pending friend request (none: `NOT_FOUND`).
    pub async fn decline_friend_request(&self, user: &str) -> Result<(), ClientError> {
        expect_ok(
            self.request(Body::DeclineFriendRequest(pb::DeclineFriendRequest {
                user: user.into(),
            }))
            .await?,
        )
    }

    /// Withdraws this user's pending friend request to `user` (none: `NOT_FOUND`).
    pub async fn cancel_friend_request(&self, user: &str) -> Result<(), ClientError> {
        expect_ok(
            self.request(Body::CancelFriendRequest(pb::CancelFriendRequest {
                user: user.into(),
            }))
            .await?,
        )
    }

    /// Ends the friendship with `user` on both sides (not a friend: `NOT_FOUND`).
    pub async fn remove_friend(&self, user: &str) -> Result<(), ClientError> {
        expect_ok(
            self.request(Body::RemoveFriend(pb::RemoveFriend { user: user.into() }))
                .await?,
        )
    }

    /// Blocks `user`: no direct messages either way (`BLOCKED`), this user's presence
    /// hidden from them, no friend requests from them. They are not told.
    pub async fn block_user(&self, user: &str) -> Result<(), ClientError> {
        expect_ok(
            self.request(Body::BlockUser(pb::BlockUser { user: user.into() }))
                .await?,
        )
    }

    /// Lifts this user's block of `user` (not blocked: `NOT_FOUND`).
    pub async fn unblock_user(&self, user: &str) -> Result<(), ClientError> {
        expect_ok(
            self.request(Body::UnblockUser(pb::UnblockUser { user: user.into() }))
                .await?,
        )
    }

    /// This user's contacts in name order: friends, incoming and outgoing requests,
    /// blocked users.
    pub async fn contacts(&self) -> Result<Vec<pb::Contact>, ClientError> {
        match self
            .request(Body::ListContacts(pb::ListContacts {}))
            .await?
        {
            Body::ContactList(l) => Ok(l.contacts),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn presence(&self, users: &[String]) -> Result<Vec<pb::UserPresence>, ClientError> {
        match self
            .request(Body::PresenceQuery(pb::PresenceQuery {
                users: users.to_vec(),
            }))
            .await?
        {
            Body::PresenceResult(p) => Ok(p.users),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn group_online(
        &self,
        conversation: &str,
    ) -> Result<pb::GroupOnlineResult, ClientError> {
        self.group_online_query(conversation, false, false).await
    }

    /// [`Client::group_online`], and from now on for 10 minutes an
    /// [`Event::Presence`](crate::Event::Presence) whenever a member of the group comes
    /// online or goes offline (call again to keep watching, e.g. while the group's screen
    /// is open; [`Client::unwatch_group`] stops it). At most 64 groups at once
    /// (`RESOURCE_EXHAUSTED`).
    pub async fn watch_group(
        &self,
        conversation: &str,
    ) -> Result<pb::GroupOnlineResult, ClientError> {
        self.group_online_query(conversation, true, false).await
    }

    /// Stops a [`Client::watch_group`].
    pub async fn unwatch_group(
        &self,
        conversation: &str,
    ) -> Result<pb::GroupOnlineResult, ClientError> {
        self.group_online_query(conversation, false, true).await
    }

    async fn group_online_query(
        &self,
        conversation: &str,
        watch: bool,
        unwatch: bool,
    ) -> Result<pb::GroupOnlineResult, ClientError> {
        match self
            .request(Body::GroupOnlineQuery(pb::GroupOnlineQuery {
                conversation: conversation.into(),
                watch,
                unwatch,
            }))
            .await?
        {
            Body::GroupOnlineResult(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }
}

/// Edit, recall, delete for me, and the user's own settings (docs/PROTOCOL.md, issue 13).
impl Client {
    /// Replaces the text of this user's message `seq` of `conversation` with `text`
    /// (within the server's edit window, 48 h by default). The answer is the ack of the
    /// EDIT entry the server appended (its `seq`); every member's devices get it as a
    /// message followed by an [`Event::Edited`](crate::Event::Edited), and history from
    /// now on gives the new text, marked edited. Not the sender: `FORBIDDEN`; too late:
    /// `WINDOW_EXPIRED`; no such seq: `NOT_FOUND`; a group event, an edit or recall entry,
    /// a recalled or expired message, or an empty text: `INVALID_ARGUMENT`.
    ///
    /// Not queued in the outbox: a connection lost before the answer fails with
    /// [`ClientError::ConnectionLost`]. Retry with [`Client::edit_with_id`] and the same
    /// id to be sure not to edit twice.
    pub async fn edit(
        &self,
        conversation: &str,
        seq: u64,
        text: &str,
    ) -> Result<pb::SendAck, ClientError> {
        self.edit_with_id(
            &super::new_client_msg_id(),
            conversation,
            seq,
            bytes::Bytes::copy_from_slice(text.as_bytes()),
            "",
        )
        .await
    }

    /// [`Client::edit`] with the caller's `client_msg_id` (the server answers a repeat
    /// with the first ack, `duplicate` set) and any body and content type.
    pub async fn edit_with_id(
        &self,
        client_msg_id: &str,
        conversation: &str,
        seq: u64,
        body: bytes::Bytes,
        content_type: &str,
    ) -> Result<pb::SendAck, ClientError> {
        match self
            .request(Body::Edit(pb::Edit {
                client_msg_id: client_msg_id.into(),
                conversation: conversation.into(),
                seq,
                body,
                content_type: content_type.into(),
            }))
            .await?
        {
            Body::SendAck(a) => Ok(a),
            other => Err(unexpected(&other)),
        }
    }

    /// Recalls ("unsends") message `seq` of `conversation`: its sender within the recall
    /// window (2 minutes by default), or a group owner or admin at any time. The content
    /// is removed from the server; every member's devices get the RECALL entry (whose ack
    /// this is) followed by an [`Event::Recalled`](crate::Event::Recalled), and history
    /// shows the message as recalled. Errors: `FORBIDDEN`, `WINDOW_EXPIRED`, `NOT_FOUND`,
    /// and `INVALID_ARGUMENT` for a message already recalled. Retry with
    /// [`Client::recall_with_id`] and the same id.
    pub async fn recall(&self, conversation: &str, seq: u64) -> Result<pb::SendAck, ClientError> {
        self.recall_with_id(&super::new_client_msg_id(), conversation, seq)
            .await
    }

    /// [`Client::recall`] with the caller's `client_msg_id` (a repeat gets the first ack).
    pub async fn recall_with_id(
        &self,
        client_msg_id: &str,
        conversation: &str,
        seq: u64,
    ) -> Result<pb::SendAck, ClientError> {
        match self
            .request(Body::Recall(pb::Recall {
                client_msg_id: client_msg_id.into(),
                conversation: conversation.into(),
                seq,
            }))
            .await?
        {
            Body::SendAck(a) => Ok(a),
            other => Err(unexpected(&other)),
        }
    }

    /// Hides message `seq` of `conversation` for this user only, on all their devices
    /// (each gets an [`Event::Hidden`](crate::Event::Hidden), this one too); nobody else
    /// is affected. From then on pull and sync give this user a tombstone (`deleted`)
    /// for it. Idempotent: safe to repeat.
    pub async fn delete_for_me(&self, conversation: &str, seq: u64) -> Result<(), ClientError> {
        expect_ok(
            self.request(Body::DeleteForMe(pb::DeleteForMe {
                conversation: conversation.into(),
                seq,
            }))
            .await?,
        )
    }

    /// Sets this user's account settings; `None` keeps a setting. The answer is all of
    /// them after the call. `send_receipts: Some(false)`: the other members no longer get
    /// this user's read receipts and receipt queries never list them (their own unread
    /// state is unaffected).
    pub async fn set_user_settings(
        &self,
        send_receipts: Option<bool>,
    ) -> Result<pb::UserSettings, ClientError> {
        match self
            .request(Body::SetUserSettings(pb::SetUserSettings { send_receipts }))
            .await?
        {
            Body::UserSettings(u) => Ok(u),
            other => Err(unexpected(&other)),
        }
    }

    /// This user's account settings (see [`Client::set_user_settings`]).
    pub async fn user_settings(&self) -> Result<pb::UserSettings, ClientError> {
        self.set_user_settings(None).await
    }

    /// Registers this device's push target (docs/PUSH.md): while the device has no live
    /// session, messages for the user wake it through the operator's push gateway.
    /// `platform` is `apns`, `fcm`, `webpush` or `webhook`; `token` is the platform's
    /// device token or the endpoint URL (1-4096 printable ASCII characters, else
    /// `INVALID_ARGUMENT`); `include_preview` puts the message text into notifications
    /// (off: only who wrote where). Replaces an earlier target of this device; kept by the
    /// server across reconnects and restarts until [`Client::unregister_push_target`],
    /// logout or revoke. Durable when it returns.
    pub async fn register_push_target(
        &self,
        platform: &str,
        token: &str,
        include_preview: bool,
    ) -> Result<(), ClientError> {
        expect_ok(
            self.request(Body::RegisterPushTarget(pb::RegisterPushTarget {
                platform: platform.into(),
                token: token.into(),
                include_preview,
            }))
            .await?,
        )
    }

    /// Removes this device's push target (Ok also when it had none).
    pub async fn unregister_push_target(&self) -> Result<(), ClientError> {
        expect_ok(
            self.request(Body::UnregisterPushTarget(pb::UnregisterPushTarget {}))
                .await?,
        )
    }
}
