//! A user's own settings of a conversation: muted (its unread count stays out of the
//! total) and pinned (listed first). Stored per user and conversation, durable before the
//! answer, pushed to every device of the user so all of them show the same list.

use tern_proto::pb;

use super::list::Conversations;
use crate::delivery::fanout;
use crate::error::ServiceResult;
use crate::store::{Mutation, SettingsRecord};

impl Conversations {
    /// Changes the settings given (`None` keeps a value) and returns them all.
    pub(crate) async fn set_settings(
        &self,
        user: &str,
        conv: &str,
        muted: Option<bool>,
        pinned: Option<bool>,
    ) -> ServiceResult<pb::ConversationSettings> {
        let st = self.convs.member(conv, user)?;
        let (record, changed) = {
            // Under the conversation's lock: two devices changing settings at once each
            // keep the other's field.
            let _g = st.lock().unwrap();
            let old = self.store.conversation_settings(user, conv)?;
            let new = SettingsRecord {
                muted: muted.unwrap_or(old.muted),
                pinned: pinned.unwrap_or(old.pinned),
            };
            let changed = new != old;
            if changed {
                self.store.commit(&[Mutation::Settings {
                    user: user.to_string(),
                    conversation: conv.to_string(),
                    record: new.clone(),
                }])?;
                self.sequencer.wrote();
            }
            (new, changed)
        };
        self.sequencer.barrier().await?;
        let settings = pb::ConversationSettings {
            conversation: conv.to_string(),
            muted: record.muted,
            pinned: record.pinned,
        };
        if changed {
            fanout::settings_changed(&*self.router, user, &settings);
        }
        Ok(settings)
    }
}
