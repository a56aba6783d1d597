//! RegisterPushTarget, UnregisterPushTarget: the calling device's push target
//! (docs/PUSH.md).

use std::sync::Arc;

use tern_proto::pb;
use tern_proto::Body;

use super::Reply;
use crate::accounts::Authed;
use crate::services::Services;

pub(crate) async fn register(
    svc: &Arc<Services>,
    reply: Reply,
    r: pb::RegisterPushTarget,
    a: &Authed,
) {
    let res =
        Box::pin(
            svc.push
                .register(&a.user, &a.device, &r.platform, &r.token, r.include_preview),
        )
        .await;
    reply.result(res.map(|()| Body::Ok(pb::Ok {})));
}

pub(crate) async fn unregister(svc: &Arc<Services>, reply: Reply, a: &Authed) {
    let res = Box::pin(svc.push.unregister(&a.user, &a.device)).await;
    reply.result(res.map(|()| Body::Ok(pb::Ok {})));
}
