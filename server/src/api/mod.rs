//! Request handlers: a decoded request -> a domain call -> a reply. One file per request
//! family; this file holds the table and the [`Reply`] they answer through.
//!
//! Handlers never import the session layer: they answer through the session's
//! [`SessionHandle`] (the same queue pushes use), and tell the driver to close by
//! returning a [`Close`]. Adding a request = one proto message, one handler function, one
//! row in [`dispatch_authed`] (and one in `session::state::classify` if it is free of
//! the rate limit or allowed before login).

pub(crate) mod auth;
pub(crate) mod blobs;
pub(crate) mod changes;
pub(crate) mod contacts;
pub(crate) mod conversations;
pub(crate) mod groups;
pub(crate) mod messages;
pub(crate) mod presence;
pub(crate) mod profiles;
pub(crate) mod push;
pub(crate) mod search;

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use tern_proto::pb::{self, CloseReason, ErrorCode};
use tern_proto::{encode_frame, Body, Frame};
use tokio::sync::OwnedSemaphorePermit;

use crate::accounts::Authed;
use crate::contacts::Op;
use crate::delivery::hub::SessionHandle;
use crate::error::ServiceError;
use crate::services::Services;

/// Why the session must end, with the text sent in the Closing frame.
pub(crate) type Close = Option<(CloseReason, String)>;

/// Where one request's answer goes.
#[derive(Clone)]
pub(crate) struct Reply {
    pub handle: Arc<SessionHandle>,
    pub req_id: u64,
    /// The request's body name ("" for an answer to no request: a frame that did not
    /// decode); its error answers are checked against [`tern_proto::request_errors`].
    request: &'static str,
}

impl Reply {
    pub(crate) fn new(handle: Arc<SessionHandle>, req_id: u64) -> Self {
        Self {
            handle,
            req_id,
            request: "",
        }
    }

    /// The same reply, known to answer the request named `request`.
    pub(crate) fn to(mut self, request: &'static str) -> Self {
        self.request = request;
        self
    }

    /// Every error sent in answer to a request must be one PROTOCOL.md lists for it
    /// (`tern_proto::request_errors`). A handler that breaks that fails in debug builds,
    /// so any test or fuzz run reaching it fails; release builds log it.
    fn check_declared(&self, code: ErrorCode) {
        if self.request.is_empty() || tern_proto::request_errors::may_answer(self.request, code) {
            return;
        }
        tracing::error!(
            request = self.request,
            code = code.as_str_name(),
            "answered with an error code PROTOCOL.md does not list for this request"
        );
        debug_assert!(
            false,
            "{} answered with {}, which PROTOCOL.md's request table does not list for it: \
             add it to tern_proto::request_errors and the table, or fix the handler",
            self.request,
            code.as_str_name()
        );
    }

    pub(crate) fn body(&self, body: Body) {
        self.handle.push(encode_frame(&Frame {
            req_id: self.req_id,
            body: Some(body),
        }));
    }

    pub(crate) fn ok(&self) {
        self.body(Body::Ok(pb::Ok {}));
    }

    pub(crate) fn err(&self, e: ServiceError) {
        self.check_declared(e.code);
        self.handle.push(encode_frame(&e.to_frame(self.req_id)));
    }

    pub(crate) fn result(&self, r: Result<Body, ServiceError>) {
        match r {
            Ok(b) => self.body(b),
            Err(e) => self.err(e),
        }
    }

    /// Runs a read-only request as its own task, so a slow read does not hold up sends;
    /// the permit (one of the session's in-flight slots) is held until it is answered.
    pub(crate) fn spawn<F>(self, permit: OwnedSemaphorePermit, fut: F)
    where
        F: Future<Output = Result<Body, ServiceError>> + Send + 'static,
    {
        let req_id = self.req_id;
        self.spawn_encoded(permit, async move {
            fut.await.map(|body| {
                encode_frame(&Frame {
                    req_id,
                    body: Some(body),
                })
            })
        });
    }

    /// Like [`Reply::spawn`], for reads that encode their answer frame themselves.
    pub(crate) fn spawn_encoded<F>(self, permit: OwnedSemaphorePermit, fut: F)
    where
        F: Future<Output = Result<Bytes, ServiceError>> + Send + 'static,
    {
        tokio::spawn(async move {
            let encoded = match fut.await {
                Ok(encoded) => encoded,
                Err(e) => {
                    self.check_declared(e.code);
                    encode_frame(&e.to_frame(self.req_id))
                }
            };
            self.handle.push(encoded);
            drop(permit);
        });
    }
}

/// The request table for a logged-in session.
pub(crate) async fn dispatch_authed(
    svc: &Arc<Services>,
    reply: Reply,
    body: Body,
    a: &Authed,
    permit: OwnedSemaphorePermit,
) -> Close {
    match body {
        Body::Send(s) => messages::send(svc, reply, s, a, permit),
        Body::Ack(ack) => messages::ack(svc, reply, ack, a),
        Body::Sync(s) => messages::sync(svc, reply, s, a, permit),
        Body::Pull(p) => messages::pull(svc, reply, p, a, permit),
        Body::Edit(e) => changes::edit(svc, reply, e, a, permit),
        Body::Recall(r) => changes::recall(svc, reply, r, a, permit),
        Body::DeleteForMe(d) => changes::delete_for_me(svc, reply, d, a).await,
        Body::SetUserSettings(s) => auth::user_settings(svc, reply, s, a).await,
        Body::ListConversations(l) => conversations::list(svc, reply, l, a, permit),
        Body::MarkRead(m) => conversations::mark_read(svc, reply, m, a).await,
        Body::ReceiptsQuery(q) => conversations::receipts(svc, reply, q, a).await,
        Body::SetConversationSettings(s) => conversations::set_settings(svc, reply, s, a).await,
        Body::ListMembers(m) => groups::list_members(svc, reply, m, a, permit),
        Body::PresenceQuery(q) => presence::query(svc, reply, q, a),
        Body::GroupOnlineQuery(q) => presence::group_online(svc, reply, q, a),
        Body::Typing(t) => presence::typing(svc, reply, t, a),
        Body::CreateGroup(g) => groups::create(svc, reply, g, a).await,
        Body::AddMembers(m) => groups::add_members(svc, reply, m, a).await,
        Body::RemoveMembers(m) => groups::remove_members(svc, reply, m, a).await,
        Body::LeaveGroup(m) => groups::leave(svc, reply, m, a).await,
        Body::SetMemberRole(m) => groups::set_role(svc, reply, m, a).await,
        Body::TransferOwnership(m) => groups::transfer(svc, reply, m, a).await,
        Body::UpdateGroup(m) => groups::update(svc, reply, m, a).await,
        Body::DissolveGroup(m) => groups::dissolve(svc, reply, m, a).await,
        Body::CreateChannel(c) => groups::create_channel(svc, reply, c, a).await,
        Body::JoinChannel(j) => groups::join_channel(svc, reply, j, a).await,
        Body::ListChannels(l) => groups::list_channels(svc, reply, l, a, permit),
        Body::RegisterPushTarget(r) => push::register(svc, reply, r, a).await,
        Body::UnregisterPushTarget(_) => push::unregister(svc, reply, a).await,
        Body::SendFriendRequest(r) => {
            contacts::change(svc, reply, a, r.user, Op::Request(r.message)).await
        }
        Body::AcceptFriendRequest(r) => contacts::change(svc, reply, a, r.user, Op::Accept).await,
        Body::DeclineFriendRequest(r) => contacts::change(svc, reply, a, r.user, Op::Decline).await,
        Body::CancelFriendRequest(r) => contacts::change(svc, reply, a, r.user, Op::Cancel).await,
        Body::RemoveFriend(r) => contacts::change(svc, reply, a, r.user, Op::Remove).await,
        Body::BlockUser(r) => contacts::change(svc, reply, a, r.user, Op::Block).await,
        Body::UnblockUser(r) => contacts::change(svc, reply, a, r.user, Op::Unblock).await,
        Body::ListContacts(_) => contacts::list(svc, reply, a, permit),
        Body::SetProfile(p) => profiles::set(svc, reply, p, a).await,
        Body::GetProfiles(g) => profiles::get(svc, reply, g, permit),
        Body::SearchUsers(s) => profiles::search(svc, reply, s, a),
        Body::SearchMessages(s) => search::messages(svc, reply, s, a, permit),
        Body::UploadBegin(b) => blobs::begin(svc, reply, b, a).await,
        Body::UploadChunk(c) => blobs::chunk(svc, reply, c, a).await,
        Body::UploadFinish(f) => blobs::finish(svc, reply, f, a, permit),
        Body::Download(d) => blobs::download(svc, reply, d, a, permit),
        Body::GetBlobUrl(g) => blobs::url(svc, reply, g, a),
        Body::Logout(_) => return auth::logout(svc, reply, a).await,
        Body::Revoke(r) => return auth::revoke(svc, reply, r, a).await,
        other => {
            // Auth requests and non-requests are classified by the session before this.
            reply.err(ServiceError::new(
                ErrorCode::UnknownRequest,
                format!("unexpected {}", tern_proto::body_name(&other)),
            ));
        }
    }
    None
}
