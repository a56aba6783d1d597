//! ListConversations.

use std::sync::Arc;

use tern_proto::Body;
use tokio::sync::OwnedSemaphorePermit;

use super::Reply;
use crate::accounts::Authed;
use crate::services::Services;

pub(crate) fn list(svc: &Arc<Services>, reply: Reply, a: &Authed, permit: OwnedSemaphorePermit) {
    let (svc, user) = (svc.clone(), a.user.clone());
    reply.spawn(permit, async move {
        svc.conversations
            .list(&user)
            .await
            .map(Body::ConversationList)
    });
}
