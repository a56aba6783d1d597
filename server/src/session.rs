//! One session per connection, the same for every transport: a stream of decoded frames
//! in, a bounded queue of encoded frames out.
//!
//! States: connected (only Register, Login, Resume, Ping) -> authenticated -> closing.
//! The reader loop dispatches requests; a writer task drains the outbound queue, many
//! frames per write. Sends are sequenced inline (so pipelined sends keep their order) and
//! acked later by the durability flusher; reads run as tasks. At most `max_pending`
//! requests are in flight: past that the loop stops reading (backpressure).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tern_proto::codec::Decoded;
use tern_proto::pb::{self, CloseReason, ErrorCode};
use tern_proto::{encode_frame, error_frame, Body, CodecError, Frame, PROTOCOL_VERSION};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::accounts::Authed;
use crate::chat::now_ms;
use crate::error::ServiceError;
use crate::hub::SessionHandle;
use crate::outbox::Outbox;
use crate::server::Services;

/// Writes at most this many bytes per write call when draining the queue.
const WRITE_BATCH: usize = 64 * 1024;

/// Runs a session to its end: `frames` are the decoded frames from the transport, `writer`
/// takes length-prefixed frames (the WebSocket adapter turns each into one message).
pub async fn run_session<S, W>(
    services: Arc<Services>,
    frames: S,
    writer: W,
    transport: &'static str,
    peer: Option<std::net::IpAddr>,
) where
    S: Stream<Item = Result<Decoded, CodecError>> + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let _open = crate::metrics::get().connection_opened(transport);
    let outbox = Arc::new(Outbox::new(
        services.limits.outbound_queue,
        services.limits.outbound_queue_bytes,
    ));
    let (finish_tx, finish_rx) = oneshot::channel::<Option<Bytes>>();
    let writer_task = tokio::spawn(write_loop(writer, outbox.clone(), finish_rx));
    let handle = SessionHandle::new(outbox);
    let mut session = Session {
        bucket: services
            .limiter
            .connection_bucket(std::time::Instant::now()),
        peer,
        pending: Arc::new(Semaphore::new(services.limits.max_pending as usize)),
        services: services.clone(),
        handle: handle.clone(),
        authed: None,
    };
    let close = Box::pin(session.run(frames)).await;

    if session.authed.is_some() {
        services.hub.unregister(&handle);
    }
    let last = match &close {
        Some((reason, message)) => {
            tracing::debug!(transport, user = handle.user(), ?reason, %message, "closing session");
            if *reason == CloseReason::Shutdown {
                // Let in-flight requests finish (their acks are queued before we close).
                let all = services.limits.max_pending;
                let _ = tokio::time::timeout(
                    services.limits.shutdown_grace,
                    session.pending.acquire_many(all),
                )
                .await;
            }
            Some(encode_frame(&Frame {
                req_id: 0,
                body: Some(Body::Closing(pb::Closing {
                    reason: *reason as i32,
                    message: message.clone(),
                    retry_after_ms: if *reason == CloseReason::Shutdown {
                        1000
                    } else {
                        0
                    },
                })),
            }))
        }
        None => None,
    };
    handle.close(CloseReason::Unspecified, "session ended");
    let _ = finish_tx.send(last);
    let mut writer_task = writer_task;
    if tokio::time::timeout(Duration::from_secs(3), &mut writer_task)
        .await
        .is_err()
    {
        writer_task.abort();
    }
}

/// Drains the outbound queue into the stream. On `finish` it writes what is queued and
/// the last frame (the Closing), then shuts the stream down. When it ends, the queue
/// refuses further frames.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    outbox: Arc<Outbox>,
    finish: oneshot::Receiver<Option<Bytes>>,
) {
    drain_into(&mut w, &outbox, finish).await;
    outbox.close();
    let _ = w.shutdown().await;
}

async fn drain_into<W: AsyncWrite + Unpin>(
    w: &mut W,
    outbox: &Outbox,
    mut finish: oneshot::Receiver<Option<Bytes>>,
) {
    // Allocated only while there is something to write: an idle connection holds no
    // write buffer.
    let mut buf = BytesMut::new();
    loop {
        tokio::select! {
            biased;
            first = outbox.pop() => {
                let written = match outbox.try_pop() {
                    // The common case of one frame: write the shared bytes as they are.
                    None => w.write_all(&first).await,
                    Some(second) => {
                        buf.extend_from_slice(&first);
                        buf.extend_from_slice(&second);
                        while buf.len() < WRITE_BATCH {
                            match outbox.try_pop() {
                                Some(b) => buf.extend_from_slice(&b),
                                None => break,
                            }
                        }
                        let r = w.write_all(&buf).await;
                        if outbox.is_empty() {
                            buf = BytesMut::new();
                        } else {
                            buf.clear();
                        }
                        r
                    }
                };
                if written.is_err() || w.flush().await.is_err() {
                    return;
                }
            }
            last = &mut finish => {
                while let Some(b) = outbox.try_pop() {
                    buf.extend_from_slice(&b);
                }
                if let Ok(Some(last)) = last {
                    buf.extend_from_slice(&last);
                }
                if w.write_all(&buf).await.is_ok() {
                    let _ = w.flush().await;
                }
                return;
            }
        }
    }
}

struct Session {
    services: Arc<Services>,
    /// This connection's request rate.
    bucket: crate::limits::Bucket,
    peer: Option<std::net::IpAddr>,
    handle: Arc<SessionHandle>,
    authed: Option<Authed>,
    pending: Arc<Semaphore>,
}

type Close = Option<(CloseReason, String)>;

fn rate_limited(wait: std::time::Duration, what: &str) -> ServiceError {
    let ms = wait.as_millis().max(1);
    ServiceError::new(
        ErrorCode::RateLimited,
        format!("{what}; retry after {ms} ms"),
    )
}

fn frame(req_id: u64, body: Body) -> Frame {
    Frame {
        req_id,
        body: Some(body),
    }
}

impl Session {
    fn send(&self, f: &Frame) {
        self.handle.push(encode_frame(f));
    }

    fn reply_err(&self, req_id: u64, e: ServiceError) {
        self.send(&error_frame(req_id, e.code, e.message));
    }

    fn deadline(&self, last_rx: Instant, started: Instant) -> Instant {
        let l = &self.services.limits;
        match self.authed {
            Some(_) => last_rx + l.heartbeat * 3,
            None => started + l.auth_timeout,
        }
    }

    async fn run<S>(&mut self, mut frames: S) -> Close
    where
        S: Stream<Item = Result<Decoded, CodecError>> + Unpin,
    {
        let started = Instant::now();
        let mut last_rx = started;
        let timer = tokio::time::sleep_until(self.deadline(last_rx, started));
        tokio::pin!(timer);
        let shutdown = self.services.shutdown.clone();
        let handle = self.handle.clone();
        let mut permit: Option<OwnedSemaphorePermit> = None;
        loop {
            if permit.is_none() {
                tokio::select! {
                    p = self.pending.clone().acquire_owned() => {
                        permit = Some(p.expect("semaphore never closed"));
                        continue;
                    }
                    _ = handle.closed() => return handle.close_reason().cloned(),
                    _ = shutdown.cancelled() => return Some((CloseReason::Shutdown, "server shutting down".into())),
                }
            }
            tokio::select! {
                item = frames.next() => {
                    last_rx = Instant::now();
                    if matches!(item, Some(Ok(_))) {
                        crate::metrics::get().frames_in.inc();
                    }
                    match item {
                        None => return None,
                        Some(Ok(Ok(f))) => {
                            let p = permit.take().expect("checked above");
                            // Boxed: the request's state lives only while it is handled,
                            // instead of inside every idle connection's future (this took
                            // an idle session's futures from 12 KiB to 1.5 KiB).
                            if let Some(close) = Box::pin(self.dispatch(f, p)).await {
                                return Some(close);
                            }
                        }
                        Some(Ok(Err(e))) => {
                            self.send(&error_frame(0, ErrorCode::MalformedFrame, format!("frame is not a valid protobuf Frame: {e}")));
                        }
                        Some(Err(CodecError::FrameTooLarge { len, max })) => {
                            self.send(&error_frame(0, ErrorCode::FrameTooLarge, format!("frame of {len} bytes exceeds the maximum of {max}")));
                            return Some((CloseReason::ProtocolError, "frame too large".into()));
                        }
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "connection read ended");
                            return None;
                        }
                    }
                }
                _ = &mut timer => {
                    let deadline = self.deadline(last_rx, started);
                    if Instant::now() >= deadline {
                        return Some(match self.authed {
                            Some(_) => (CloseReason::HeartbeatTimeout, "no frame for 3 heartbeats".into()),
                            None => (CloseReason::AuthTimeout, "no login in time".into()),
                        });
                    }
                    timer.as_mut().reset(deadline);
                }
                _ = handle.closed() => return handle.close_reason().cloned(),
                _ = shutdown.cancelled() => return Some((CloseReason::Shutdown, "server shutting down".into())),
            }
        }
    }

    fn check_version(&self, req_id: u64, v: u32) -> Close {
        if v == PROTOCOL_VERSION {
            return None;
        }
        self.send(&error_frame(
            req_id,
            ErrorCode::UnsupportedVersion,
            format!("protocol version {v} is not supported; this server speaks {PROTOCOL_VERSION}"),
        ));
        Some((
            CloseReason::ProtocolError,
            "unsupported protocol version".into(),
        ))
    }

    /// Handles one request. Returns a close reason when the session must end.
    async fn dispatch(&mut self, f: Frame, permit: OwnedSemaphorePermit) -> Close {
        let req_id = f.req_id;
        let Some(body) = f.body else {
            self.reply_err(
                req_id,
                ServiceError::new(
                    ErrorCode::UnknownRequest,
                    "frame has no body (or a body this server does not know)",
                ),
            );
            return None;
        };
        let svc = self.services.clone();
        match body {
            Body::Ping(p) => {
                self.send(&frame(
                    req_id,
                    Body::Pong(pb::Pong {
                        client_time_ms: p.client_time_ms,
                        server_time_ms: now_ms(),
                    }),
                ));
                None
            }
            Body::Register(r) if self.authed.is_none() => {
                if let Some(c) = self.check_version(req_id, r.protocol_version) {
                    return Some(c);
                }
                let now = std::time::Instant::now();
                if let Err(wait) = svc.limiter.login_allowed(&r.username, self.peer, now) {
                    self.reply_err(req_id, rate_limited(wait, "too many attempts"));
                    return None;
                }
                match Box::pin(svc.accounts.register(&r.username, &r.password)).await {
                    Ok(()) => self.send(&frame(req_id, Body::Ok(pb::Ok {}))),
                    Err(e) => self.reply_err(req_id, e),
                }
                None
            }
            Body::Login(l) if self.authed.is_none() => {
                if let Some(c) = self.check_version(req_id, l.protocol_version) {
                    return Some(c);
                }
                let now = std::time::Instant::now();
                if let Err(wait) = svc.limiter.login_allowed(&l.username, self.peer, now) {
                    self.reply_err(req_id, rate_limited(wait, "too many login attempts"));
                    return None;
                }
                let res = Box::pin(svc.accounts.login(&l.username, &l.password, &l.device)).await;
                match &res {
                    Err(e) if e.code == ErrorCode::InvalidCredentials => {
                        svc.limiter.login_failed(&l.username, now)
                    }
                    Ok(_) => svc.limiter.login_succeeded(&l.username),
                    Err(_) => {}
                }
                crate::metrics::get().login("login", res.is_ok());
                self.authenticated(req_id, res)
            }
            Body::Resume(r) if self.authed.is_none() => {
                if let Some(c) = self.check_version(req_id, r.protocol_version) {
                    return Some(c);
                }
                let res = Box::pin(svc.accounts.resume(&r.token)).await;
                crate::metrics::get().login("resume", res.is_ok());
                self.authenticated(req_id, res)
            }
            Body::Register(_) | Body::Login(_) | Body::Resume(_) => {
                self.reply_err(
                    req_id,
                    ServiceError::new(
                        ErrorCode::AlreadyAuthenticated,
                        "this session is already logged in",
                    ),
                );
                None
            }
            b @ (Body::Error(_)
            | Body::Ok(_)
            | Body::LoginOk(_)
            | Body::Pong(_)
            | Body::SendAck(_)
            | Body::SyncResult(_)
            | Body::PullResult(_)
            | Body::GroupCreated(_)
            | Body::MemberList(_)
            | Body::ConversationList(_)
            | Body::PresenceResult(_)
            | Body::GroupOnlineResult(_)
            | Body::Push(_)
            | Body::Closing(_)) => {
                self.reply_err(
                    req_id,
                    ServiceError::new(
                        ErrorCode::UnknownRequest,
                        format!("{} is not a request", tern_proto::body_name(&b)),
                    ),
                );
                None
            }
            body => match self.authed.clone() {
                None => {
                    self.reply_err(
                        req_id,
                        ServiceError::new(
                            ErrorCode::Unauthenticated,
                            format!(
                                "{} needs a logged-in session: Login or Resume first",
                                tern_proto::body_name(&body)
                            ),
                        ),
                    );
                    None
                }
                Some(a) => {
                    if !matches!(body, Body::Ack(_)) {
                        let now = std::time::Instant::now();
                        let limited = self
                            .bucket
                            .take(now)
                            .err()
                            .map(|w| (w, "this connection"))
                            .or_else(|| {
                                svc.limiter
                                    .user_request(&a.user, now)
                                    .err()
                                    .map(|w| (w, "this user"))
                            });
                        if let Some((wait, who)) = limited {
                            self.reply_err(
                                req_id,
                                rate_limited(wait, &format!("request rate of {who} exceeded")),
                            );
                            return None;
                        }
                    }
                    self.dispatch_authed(req_id, body, a, permit).await
                }
            },
        }
    }

    fn authenticated(&mut self, req_id: u64, res: Result<Authed, ServiceError>) -> Close {
        let a = match res {
            Ok(a) => a,
            Err(e) => {
                self.reply_err(req_id, e);
                return None;
            }
        };
        let svc = &self.services;
        let others = svc
            .hub
            .sessions(&a.user)
            .iter()
            .filter(|s| s.device() != a.device)
            .count();
        if others >= svc.limiter.settings.max_sessions_per_user {
            self.reply_err(
                req_id,
                ServiceError::new(
                    ErrorCode::ResourceExhausted,
                    format!(
                        "{others} devices of this user are online; at most {} at once",
                        svc.limiter.settings.max_sessions_per_user
                    ),
                ),
            );
            return None;
        }
        let head = match svc.chat.current_inbox_head(&a.user) {
            Ok(h) => h,
            Err(e) => {
                self.reply_err(req_id, e);
                return None;
            }
        };
        self.handle.set_identity(&a.user, &a.device);
        // LoginOk first, then register for pushes: anything committed from here on is
        // pushed, and anything before it is found by the Sync the client sends next.
        self.send(&frame(
            req_id,
            Body::LoginOk(pb::LoginOk {
                username: a.user.clone(),
                device: a.device.clone(),
                token: a.token.clone(),
                token_expires_ms: a.expires_ms,
                heartbeat_secs: svc.limits.heartbeat.as_secs() as u32,
                store_epoch: svc.store_epoch.clone(),
                inbox_head: head,
                acked_inbox_seq: a.acked_inbox_seq,
                max_frame_bytes: svc.limits.max_frame_bytes,
                server_time_ms: now_ms(),
                max_pending: svc.limits.max_pending,
            }),
        ));
        if let Some(old) = svc.hub.register(self.handle.clone()) {
            old.close(
                CloseReason::Replaced,
                "this device logged in on another connection",
            );
        }
        tracing::debug!(user = %a.user, device = %a.device, "logged in");
        self.authed = Some(a);
        None
    }

    /// Runs a read-only request as its own task, so a slow read does not hold up sends.
    fn spawn_read<F>(&self, req_id: u64, permit: OwnedSemaphorePermit, fut: F)
    where
        F: std::future::Future<Output = Result<Body, ServiceError>> + Send + 'static,
    {
        self.spawn_read_encoded(req_id, permit, async move {
            fut.await.map(|body| encode_frame(&frame(req_id, body)))
        });
    }

    /// Like `spawn_read`, for reads that encode their answer frame themselves.
    fn spawn_read_encoded<F>(&self, req_id: u64, permit: OwnedSemaphorePermit, fut: F)
    where
        F: std::future::Future<Output = Result<Bytes, ServiceError>> + Send + 'static,
    {
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let encoded = match fut.await {
                Ok(encoded) => encoded,
                Err(e) => encode_frame(&error_frame(req_id, e.code, e.message)),
            };
            handle.push(encoded);
            drop(permit);
        });
    }

    async fn dispatch_authed(
        &mut self,
        req_id: u64,
        body: Body,
        a: Authed,
        permit: OwnedSemaphorePermit,
    ) -> Close {
        let svc = self.services.clone();
        let ok = || frame(req_id, Body::Ok(pb::Ok {}));
        let reply = |this: &Self, r: Result<Body, ServiceError>| match r {
            Ok(b) => this.send(&frame(req_id, b)),
            Err(e) => this.reply_err(req_id, e),
        };
        match body {
            Body::Send(s) => {
                let handle = self.handle.clone();
                let done = Box::new(move |r: Result<crate::chat::AckInfo, ServiceError>| {
                    let f = match r {
                        Ok(ack) => frame(req_id, Body::SendAck(ack.to_pb())),
                        Err(e) => error_frame(req_id, e.code, e.message),
                    };
                    handle.push(encode_frame(&f));
                    drop(permit);
                });
                if let Err(e) = svc.chat.send(&a.user, &a.device, s, done) {
                    self.reply_err(req_id, e);
                }
            }
            Body::Ack(ack) => {
                crate::metrics::get().acks.inc();
                let r = match svc.chat.current_inbox_head(&a.user) {
                    Ok(head) if ack.inbox_seq > head => Err(ServiceError::invalid(format!(
                        "ack {} is beyond the inbox head {head}",
                        ack.inbox_seq
                    ))),
                    Ok(_) => svc.accounts.ack(&a.user, &a.device, ack.inbox_seq),
                    Err(e) => Err(e),
                };
                reply(self, r.map(|()| Body::Ok(pb::Ok {})));
            }
            Body::Sync(s) => {
                crate::metrics::get().syncs.inc();
                let user = a.user.clone();
                let device = a.device.clone();
                self.spawn_read_encoded(req_id, permit, async move {
                    let after = match s.after_inbox_seq {
                        Some(v) => v,
                        None => svc.accounts.acked(&user, &device)?,
                    };
                    let page = svc.chat.sync(&user, after, s.limit).await?;
                    Ok(tern_proto::raw::encode_sync_result_frame(req_id, page))
                });
            }
            Body::Pull(p) => {
                crate::metrics::get().pulls.inc();
                let user = a.user.clone();
                self.spawn_read(req_id, permit, async move {
                    svc.chat.pull(&user, p).await.map(Body::PullResult)
                });
            }
            Body::ListConversations(_) => {
                let user = a.user.clone();
                self.spawn_read(req_id, permit, async move {
                    svc.chat
                        .list_conversations(&user)
                        .await
                        .map(Body::ConversationList)
                });
            }
            Body::ListMembers(m) => {
                let user = a.user.clone();
                self.spawn_read(req_id, permit, async move {
                    svc.chat
                        .list_members(&user, &m.conversation)
                        .await
                        .map(Body::MemberList)
                });
            }
            Body::PresenceQuery(q) => {
                reply(self, svc.chat.presence(&q.users).map(Body::PresenceResult))
            }
            Body::GroupOnlineQuery(q) => reply(
                self,
                svc.chat
                    .group_online(&a.user, &q.conversation)
                    .map(Body::GroupOnlineResult),
            ),
            Body::CreateGroup(g) => {
                let r = Box::pin(svc.chat.create_group(&a.user, g)).await;
                reply(self, r.map(Body::GroupCreated));
            }
            Body::AddMembers(m) => {
                let r = Box::pin(svc.chat.add_members(&a.user, m)).await;
                reply(self, r.map(|()| Body::Ok(pb::Ok {})));
            }
            Body::RemoveMembers(m) => {
                let r = Box::pin(svc.chat.remove_members(&a.user, m)).await;
                reply(self, r.map(|()| Body::Ok(pb::Ok {})));
            }
            Body::LeaveGroup(m) => {
                let r = Box::pin(svc.chat.leave_group(&a.user, m)).await;
                reply(self, r.map(|()| Body::Ok(pb::Ok {})));
            }
            Body::Logout(_) => {
                match Box::pin(svc.accounts.revoke(&a.user, Some(&a.device))).await {
                    Ok(()) => {
                        self.send(&ok());
                        return Some((CloseReason::LoggedOut, "logged out".into()));
                    }
                    Err(e) => self.reply_err(req_id, e),
                }
            }
            Body::Revoke(r) => {
                let device = (!r.device.is_empty()).then_some(r.device.as_str());
                match Box::pin(svc.accounts.revoke(&a.user, device)).await {
                    Ok(()) => {
                        self.send(&ok());
                        let mut own = false;
                        for s in svc.hub.sessions(&a.user) {
                            if device.is_none_or(|d| d == s.device()) {
                                if s.id == self.handle.id {
                                    own = true;
                                } else {
                                    s.close(CloseReason::Revoked, "token revoked");
                                }
                            }
                        }
                        if own {
                            return Some((CloseReason::Revoked, "token revoked".into()));
                        }
                    }
                    Err(e) => self.reply_err(req_id, e),
                }
            }
            other => {
                // Auth requests and non-requests are handled in `dispatch`.
                self.reply_err(
                    req_id,
                    ServiceError::new(
                        ErrorCode::UnknownRequest,
                        format!("unexpected {}", tern_proto::body_name(&other)),
                    ),
                );
            }
        }
        None
    }
}
