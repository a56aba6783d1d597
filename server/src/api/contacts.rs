//! SendFriendRequest, AcceptFriendRequest, DeclineFriendRequest, CancelFriendRequest,
//! RemoveFriend, BlockUser, UnblockUser, ListContacts.

use std::sync::Arc;

use tern_proto::pb;
use tern_proto::Body;
use tokio::sync::OwnedSemaphorePermit;

use super::Reply;
use crate::accounts::Authed;
use crate::contacts::Op;
use crate::services::Services;

/// Answered with Ok once the change (and the event both users learn it by) is durable.
pub(crate) async fn change(svc: &Arc<Services>, reply: Reply, a: &Authed, user: String, op: Op) {
    let r = svc.contacts.change(&a.user, &user, op).await;
    reply.result(r.map(|()| Body::Ok(pb::Ok {})));
}

pub(crate) fn list(svc: &Arc<Services>, reply: Reply, a: &Authed, permit: OwnedSemaphorePermit) {
    let svc = svc.clone();
    let user = a.user.clone();
    reply.spawn(permit, async move {
        svc.contacts.list(&user).await.map(Body::ContactList)
    });
}
