//! What an operator does with messages (the admin API, `http/admin`): read any
//! conversation's history, and post SYSTEM notices.
//!
//! A notice is a durable SYSTEM message without a group event: its body is the text
//! (UTF-8), its sender the reserved name [`NOTICE_SENDER`]. To a group it is appended to
//! the group's timeline (every member gets it as any message); to a user it goes into the
//! 1:1 conversation `d:<user>:system` (or `d:system:<user>`: names sorted), created on
//! the first notice, where only the user gets inbox entries. A broadcast is a notice to
//! every user.

use tern_proto::direct_conversation;
use tern_proto::pb::{self, ConversationKind};
use tokio::sync::oneshot;

use super::send::{creation_mutations, Append};
use super::{AckInfo, Messages};
use crate::accounts::admin::NOTICE_SENDER;
use crate::conversations::state::SharedState;
use crate::error::{ServiceError, ServiceResult};
use crate::validate;

/// Largest history page.
const MAX_HISTORY_PAGE: u64 = 1000;

/// A notice that was appended; resolves once it is durable.
pub(crate) type PendingNotice = oneshot::Receiver<ServiceResult<AckInfo>>;

impl Messages {
    /// The entries of `conv` before seq `before` (0: from the newest), the newest `limit`
    /// of them in seq order, as stored (no membership check: operators read everything).
    pub async fn history(
        &self,
        conv: &str,
        before: u64,
        limit: u64,
    ) -> ServiceResult<Vec<pb::Message>> {
        let st = self.convs.get(conv)?;
        let last = {
            let g = st.lock().unwrap();
            if !g.exists {
                return Err(ServiceError::not_found(format!("no conversation {conv}")));
            }
            g.last_seq
        };
        // Nothing that is not durable yet leaves the server (D1).
        self.barrier().await?;
        let limit = limit.clamp(1, MAX_HISTORY_PAGE);
        let to = match before {
            0 => last,
            b => (b - 1).min(last),
        };
        if to == 0 {
            return Ok(Vec::new());
        }
        let from = to.saturating_sub(limit - 1).max(1);
        Ok(self
            .store
            .timeline(conv, from, to, (to - from + 1) as usize)?)
    }

    /// (conversations, groups, timeline entries) in the store: one scan of the
    /// conversation records and one lookup per conversation (an operator's figure, not a
    /// hot path).
    pub fn stored_counts(&self) -> ServiceResult<(u64, u64, u64)> {
        let (mut convs, mut groups, mut entries) = (0, 0, 0);
        let mut after = String::new();
        loop {
            let page = self.store.conversations_page("", &after, 1000)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = last.clone();
            for (id, _) in &page {
                convs += 1;
                groups += u64::from(id.starts_with("g:"));
                entries += self.store.last_seq(id)?;
            }
        }
        Ok((convs, groups, entries))
    }

    /// Appends a notice to `user`'s notice conversation; await the receiver for the ack.
    pub(crate) fn notice_to_user(&self, user: &str, text: &str) -> ServiceResult<PendingNotice> {
        validate::username(user)?;
        if self.store.user(user)?.is_none() {
            return Err(ServiceError::not_found(format!("no user {user}")));
        }
        let conv = direct_conversation(NOTICE_SENDER, user);
        let st = self.convs.get(&conv)?;
        self.notice(&st, &conv, text, Some(user))
    }

    /// Appends a notice to group `conv`; await the receiver for the ack.
    pub(crate) fn notice_to_group(&self, conv: &str, text: &str) -> ServiceResult<PendingNotice> {
        let st = self.convs.get(conv)?;
        {
            let g = st.lock().unwrap();
            if g.kind != ConversationKind::Group || !g.exists || g.members.is_empty() {
                return Err(ServiceError::not_found(format!("no group {conv}")));
            }
        }
        self.notice(&st, conv, text, None)
    }

    /// Appends the notice under the conversation's lock: to `only` (a user's notice
    /// conversation) or to every member.
    fn notice(
        &self,
        st_arc: &SharedState,
        conv: &str,
        text: &str,
        only: Option<&str>,
    ) -> ServiceResult<PendingNotice> {
        self.check_body(text.as_bytes())?;
        let (tx, rx) = oneshot::channel();
        let mut st = st_arc.lock().unwrap();
        let now = self.clock.now_ms();
        let mut extra = Vec::new();
        if !st.exists {
            st.created_ms = now;
            extra.extend(creation_mutations(conv, &st));
        }
        let recipients = match only {
            Some(u) => vec![u.to_string()],
            None => st.members.keys().cloned().collect(),
        };
        let msg = pb::Message {
            conversation: conv.to_string(),
            sender: NOTICE_SENDER.to_string(),
            server_time_ms: now,
            body: text.as_bytes().to_vec().into(),
            kind: pb::MessageKind::System as i32,
            ..Default::default()
        };
        self.append(
            &mut st,
            Append {
                msg,
                recipients,
                extra,
                dedup: None,
                marks_read: false,
            },
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        Ok(rx)
    }
}
