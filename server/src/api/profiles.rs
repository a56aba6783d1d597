//! SetProfile, GetProfiles, SearchUsers.

use std::sync::Arc;

use tern_proto::pb;
use tern_proto::Body;
use tokio::sync::OwnedSemaphorePermit;

use super::Reply;
use crate::accounts::Authed;
use crate::services::Services;

pub(crate) async fn set(svc: &Arc<Services>, reply: Reply, p: pb::SetProfile, a: &Authed) {
    let r = svc
        .profiles
        .set(&a.user, p.display_name, p.status, p.avatar)
        .await;
    reply.result(r.map(|p| Body::ProfileList(pb::ProfileList { profiles: vec![p] })));
}

pub(crate) fn get(
    svc: &Arc<Services>,
    reply: Reply,
    g: pb::GetProfiles,
    permit: OwnedSemaphorePermit,
) {
    let svc = svc.clone();
    reply.spawn(permit, async move {
        svc.profiles.get(&g.users).await.map(Body::ProfileList)
    });
}

pub(crate) fn search(svc: &Arc<Services>, reply: Reply, s: pb::SearchUsers, a: &Authed) {
    reply.result(
        svc.profiles
            .search(&a.user, &s.prefix, s.limit)
            .map(Body::UserSearchResult),
    );
}
