//! The user's conversation list.

use std::sync::Arc;

use tern_proto::pb::{self, ConversationKind, Role};

use super::id::{parse_conversation, ConvId};
use super::state::ConvCache;
use crate::error::ServiceResult;
use crate::sequencer::Sequencer;
use crate::store::Store;

pub struct Conversations {
    store: Arc<dyn Store>,
    convs: Arc<ConvCache>,
    sequencer: Arc<dyn Sequencer>,
}

impl Conversations {
    pub fn new(
        store: Arc<dyn Store>,
        convs: Arc<ConvCache>,
        sequencer: Arc<dyn Sequencer>,
    ) -> Self {
        Self {
            store,
            convs,
            sequencer,
        }
    }

    /// Every conversation `user` is in, with what the list shows of it.
    pub async fn list(&self, user: &str) -> ServiceResult<pb::ConversationList> {
        let mut out = Vec::new();
        for id in self.store.user_conversations(user)? {
            let st = self.convs.get(&id)?;
            let g = st.lock().unwrap();
            let name = match (&g.kind, parse_conversation(&id)) {
                (ConversationKind::Direct, Ok(ConvId::Direct(a, b))) => {
                    if a == user {
                        b
                    } else {
                        a
                    }
                }
                _ => g.name.clone(),
            };
            out.push(pb::ConversationInfo {
                conversation: id.clone(),
                kind: g.kind as i32,
                name,
                last_seq: g.last_seq,
                read_diffusion: g.read_diffusion,
                member_count: g.members.len() as u32,
                role: g.role(user).unwrap_or(Role::Unspecified) as i32,
            });
        }
        self.sequencer.barrier().await?;
        Ok(pb::ConversationList { conversations: out })
    }
}
