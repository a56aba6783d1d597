//! PresenceQuery, GroupOnlineQuery, Typing.

use std::sync::Arc;

use tern_proto::pb;
use tern_proto::Body;

use super::Reply;
use crate::accounts::Authed;
use crate::services::Services;

pub(crate) fn query(svc: &Arc<Services>, reply: Reply, q: pb::PresenceQuery, a: &Authed) {
    reply.result(
        svc.presence
            .presence(&a.user, &q.users)
            .map(Body::PresenceResult),
    );
}

pub(crate) fn group_online(svc: &Arc<Services>, reply: Reply, q: pb::GroupOnlineQuery, a: &Authed) {
    reply.result(
        svc.presence
            .group_online(&a.user, &q.conversation, q.watch, q.unwatch)
            .map(Body::GroupOnlineResult),
    );
}

pub(crate) fn typing(svc: &Arc<Services>, reply: Reply, t: pb::Typing, a: &Authed) {
    let r = svc.presence.typing(&a.user, &t.conversation, t.typing);
    reply.result(r.map(|_| Body::Ok(pb::Ok {})));
}
