//! SearchMessages: history search (docs/PROTOCOL.md 9.15).

use std::sync::Arc;

use tern_proto::pb;
use tern_proto::Body;
use tokio::sync::OwnedSemaphorePermit;

use super::Reply;
use crate::accounts::Authed;
use crate::services::Services;

/// Runs as its own task (a read: it never holds up the session's sends).
pub(crate) fn messages(
    svc: &Arc<Services>,
    reply: Reply,
    req: pb::SearchMessages,
    a: &Authed,
    permit: OwnedSemaphorePermit,
) {
    let search = svc.search.clone();
    let user = a.user.clone();
    reply.spawn(permit, async move {
        search.search(&user, req).await.map(Body::SearchResult)
    });
}
