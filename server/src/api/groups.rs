//! CreateGroup, AddMembers, RemoveMembers, LeaveGroup, ListMembers, SetMemberRole,
//! TransferOwnership, UpdateGroup, DissolveGroup.

use std::sync::Arc;

use tern_proto::pb;
use tern_proto::Body;
use tokio::sync::OwnedSemaphorePermit;

use super::Reply;
use crate::accounts::Authed;
use crate::services::Services;

fn ok(r: Result<(), crate::error::ServiceError>) -> Result<Body, crate::error::ServiceError> {
    r.map(|()| Body::Ok(pb::Ok {}))
}

pub(crate) async fn create(svc: &Arc<Services>, reply: Reply, g: pb::CreateGroup, a: &Authed) {
    let r = Box::pin(svc.groups.create_group(&a.user, g)).await;
    reply.result(r.map(Body::GroupCreated));
}

pub(crate) async fn add_members(svc: &Arc<Services>, reply: Reply, m: pb::AddMembers, a: &Authed) {
    reply.result(ok(Box::pin(svc.groups.add_members(&a.user, m)).await));
}

pub(crate) async fn remove_members(
    svc: &Arc<Services>,
    reply: Reply,
    m: pb::RemoveMembers,
    a: &Authed,
) {
    reply.result(ok(Box::pin(svc.groups.remove_members(&a.user, m)).await));
}

pub(crate) async fn leave(svc: &Arc<Services>, reply: Reply, m: pb::LeaveGroup, a: &Authed) {
    reply.result(ok(Box::pin(svc.groups.leave_group(&a.user, m)).await));
}

pub(crate) fn list_members(
    svc: &Arc<Services>,
    reply: Reply,
    m: pb::ListMembers,
    a: &Authed,
    permit: OwnedSemaphorePermit,
) {
    let (svc, user) = (svc.clone(), a.user.clone());
    reply.spawn(permit, async move {
        svc.groups
            .list_members(&user, &m.conversation)
            .await
            .map(Body::MemberList)
    });
}

pub(crate) async fn set_role(svc: &Arc<Services>, reply: Reply, m: pb::SetMemberRole, a: &Authed) {
    reply.result(ok(Box::pin(svc.groups.set_member_role(&a.user, m)).await));
}

pub(crate) async fn transfer(
    svc: &Arc<Services>,
    reply: Reply,
    m: pb::TransferOwnership,
    a: &Authed,
) {
    reply.result(ok(Box::pin(svc.groups.transfer_ownership(&a.user, m)).await));
}

pub(crate) async fn update(svc: &Arc<Services>, reply: Reply, m: pb::UpdateGroup, a: &Authed) {
    reply.result(ok(Box::pin(svc.groups.update_group(&a.user, m)).await));
}

pub(crate) async fn dissolve(svc: &Arc<Services>, reply: Reply, m: pb::DissolveGroup, a: &Authed) {
    reply.result(ok(Box::pin(svc.groups.dissolve_group(&a.user, m)).await));
}

pub(crate) async fn create_channel(
    svc: &Arc<Services>,
    reply: Reply,
    c: pb::CreateChannel,
    a: &Authed,
) {
    let r = Box::pin(svc.groups.create_channel(&a.user, c)).await;
    reply.result(r.map(Body::GroupCreated));
}

pub(crate) async fn join_channel(
    svc: &Arc<Services>,
    reply: Reply,
    j: pb::JoinChannel,
    a: &Authed,
) {
    reply.result(ok(Box::pin(
        svc.groups.join_channel(&a.user, &j.conversation),
    )
    .await));
}

pub(crate) fn list_channels(
    svc: &Arc<Services>,
    reply: Reply,
    l: pb::ListChannels,
    a: &Authed,
    permit: OwnedSemaphorePermit,
) {
    let (svc, user) = (svc.clone(), a.user.clone());
    reply.spawn(permit, async move {
        svc.groups
            .list_channels(&user, &l.prefix, l.limit)
            .await
            .map(Body::ChannelList)
    });
}
