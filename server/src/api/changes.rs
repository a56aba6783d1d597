//! Edit, Recall, DeleteForMe.

use std::sync::Arc;

use tern_proto::pb;
use tern_proto::Body;
use tokio::sync::OwnedSemaphorePermit;

use super::messages::send_ack;
use super::Reply;
use crate::accounts::Authed;
use crate::error::ServiceError;
use crate::messages::AckCallback;
use crate::services::Services;

/// The callback that answers an Edit or Recall with its SendAck once durable.
fn answer(reply: &Reply, permit: OwnedSemaphorePermit) -> AckCallback {
    let answer = reply.clone();
    Box::new(move |r| {
        answer.result(r.map(|ack| Body::SendAck(send_ack(ack))));
        drop(permit);
    })
}

/// Sequenced inline like a Send (pipelined changes keep their order).
pub(crate) fn edit(
    svc: &Arc<Services>,
    reply: Reply,
    e: pb::Edit,
    a: &Authed,
    permit: OwnedSemaphorePermit,
) {
    let done = answer(&reply, permit);
    if let Err(e) = svc.changes.edit(&a.user, &a.device, e, done) {
        reply.err(e);
    }
}

pub(crate) fn recall(
    svc: &Arc<Services>,
    reply: Reply,
    r: pb::Recall,
    a: &Authed,
    permit: OwnedSemaphorePermit,
) {
    let done = answer(&reply, permit);
    if let Err(e) = svc.changes.recall(&a.user, &a.device, r, done) {
        reply.err(e);
    }
}

pub(crate) async fn delete_for_me(
    svc: &Arc<Services>,
    reply: Reply,
    d: pb::DeleteForMe,
    a: &Authed,
) {
    let r: Result<(), ServiceError> =
        Box::pin(svc.changes.delete_for_me(&a.user, &d.conversation, d.seq)).await;
    reply.result(r.map(|()| Body::Ok(pb::Ok {})));
}
