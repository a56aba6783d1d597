//! Send, Ack, Sync, Pull.

use std::sync::Arc;

use tern_proto::pb::{self};
use tern_proto::Body;
use tokio::sync::OwnedSemaphorePermit;

use super::Reply;
use crate::accounts::Authed;
use crate::error::ServiceError;
use crate::messages::AckInfo;
use crate::services::Services;

pub(super) fn send_ack(ack: AckInfo) -> pb::SendAck {
    pb::SendAck {
        conversation: ack.conversation,
        seq: ack.seq,
        server_time_ms: ack.server_time_ms,
        client_msg_id: ack.client_msg_id,
        duplicate: ack.duplicate,
        inbox_seq: ack.sender_inbox_seq,
    }
}

/// Sequenced inline (so pipelined sends keep their order), answered once durable. A
/// retryable refusal closes the session's send fence (`delivery::send_order`).
pub(crate) fn send(
    svc: &Arc<Services>,
    reply: Reply,
    s: pb::Send,
    a: &Authed,
    permit: OwnedSemaphorePermit,
) {
    let fence = &reply.handle.send_fence;
    if let Err(e) = fence.admit(&s.client_msg_id) {
        reply.err(e);
        return;
    }
    let cmid = s.client_msg_id.clone();
    let answer = reply.clone();
    let done = Box::new(move |r: Result<AckInfo, ServiceError>| {
        answer.result(r.map(|ack| Body::SendAck(send_ack(ack))));
        drop(permit);
    });
    if let Err(e) = svc.messages.send(&a.user, &a.device, s, done) {
        fence.refused(&cmid, &e);
        reply.err(e);
    }
}

pub(crate) fn ack(svc: &Arc<Services>, reply: Reply, ack: pb::Ack, a: &Authed) {
    crate::metrics::get().acks.inc();
    let r = svc.cursors.ack(&a.user, &a.device, ack.inbox_seq);
    reply.result(r.map(|()| Body::Ok(pb::Ok {})));
}

pub(crate) fn sync(
    svc: &Arc<Services>,
    reply: Reply,
    s: pb::Sync,
    a: &Authed,
    permit: OwnedSemaphorePermit,
) {
    crate::metrics::get().syncs.inc();
    let (svc, user, device, req_id) = (svc.clone(), a.user.clone(), a.device.clone(), reply.req_id);
    reply.spawn_encoded(permit, async move {
        let after = match s.after_inbox_seq {
            Some(v) => v,
            None => svc.cursors.acked(&user, &device)?,
        };
        let page = svc.messages.sync(&user, after, s.limit).await?;
        Ok(tern_proto::raw::encode_sync_result_frame(req_id, page))
    });
}

pub(crate) fn pull(
    svc: &Arc<Services>,
    reply: Reply,
    p: pb::Pull,
    a: &Authed,
    permit: OwnedSemaphorePermit,
) {
    crate::metrics::get().pulls.inc();
    let (svc, user) = (svc.clone(), a.user.clone());
    reply.spawn(permit, async move {
        svc.messages.pull(&user, p).await.map(Body::PullResult)
    });
}
