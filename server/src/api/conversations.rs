//! ListConversations, MarkRead, ReceiptsQuery, SetConversationSettings.

use std::sync::Arc;

use tern_proto::pb;
use tern_proto::Body;
use tokio::sync::OwnedSemaphorePermit;

use super::Reply;
use crate::accounts::Authed;
use crate::services::Services;

pub(crate) fn list(
    svc: &Arc<Services>,
    reply: Reply,
    l: pb::ListConversations,
    a: &Authed,
    permit: OwnedSemaphorePermit,
) {
    let (svc, user) = (svc.clone(), a.user.clone());
    reply.spawn(permit, async move {
        svc.conversations
            .list(&user, l.offset as usize, l.limit as usize)
            .await
            .map(Body::ConversationList)
    });
}

pub(crate) async fn mark_read(svc: &Arc<Services>, reply: Reply, m: pb::MarkRead, a: &Authed) {
    let r = Box::pin(svc.receipts.mark_read(&a.user, &m.conversation, m.seq)).await;
    reply.result(r.map(Body::ReadState));
}

pub(crate) async fn set_settings(
    svc: &Arc<Services>,
    reply: Reply,
    s: pb::SetConversationSettings,
    a: &Authed,
) {
    let r = Box::pin(
        svc.conversations
            .set_settings(&a.user, &s.conversation, s.muted, s.pinned),
    )
    .await;
    reply.result(r.map(Body::ConversationSettings));
}

pub(crate) async fn receipts(svc: &Arc<Services>, reply: Reply, q: pb::ReceiptsQuery, a: &Authed) {
    let r = Box::pin(svc.receipts.who_read(&a.user, &q.conversation, q.seq)).await;
    reply.result(r.map(Body::ReceiptsResult));
}
