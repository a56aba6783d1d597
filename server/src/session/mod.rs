//! One session per connection, the same for every transport: a stream of decoded frames
//! in, a bounded queue of encoded frames out.
//!
//! - [`state`]: the pure state machine (connected -> authenticated, deadlines, request
//!   classes), tested under paused time.
//! - [`writer`]: the writer task that drains the send queue into the transport.
//!
//! The driver here reads frames, classifies them, applies the rate limits and hands each
//! request to the handlers in `api`. Sends are sequenced inline (so pipelined sends keep
//! their order) and acked later by the durability flusher; reads run as tasks. At most
//! `max_pending` requests are in flight: past that the loop stops reading (backpressure).

pub(crate) mod state;
pub(crate) mod writer;

/// The Closing message after a frame over the size limit (a WebSocket closes with 1009
/// after it).
pub(crate) const FRAME_TOO_LARGE_CLOSE: &str = "frame too large";

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tern_proto::codec::Decoded;
use tern_proto::pb::{self, CloseReason, ErrorCode};
use tern_proto::{encode_frame, Body, CodecError, Frame};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use self::state::{classify, RequestClass, SessionState};
use self::writer::{write_loop, FrameWriter};
use crate::accounts::Authed;
use crate::api::auth::AuthOutcome;
use crate::api::{self, Close, Reply};
use crate::delivery::hub::SessionHandle;
use crate::delivery::send_queue::SendQueue;
use crate::error::ServiceError;
use crate::ratelimit::Bucket;
use crate::services::Services;

pub use self::writer::StreamWriter;

/// Runs a session to its end: `frames` are the decoded frames from the transport,
/// `writer` puts encoded frames on it.
pub async fn run_session<S, W>(
    services: Arc<Services>,
    frames: S,
    writer: W,
    transport: &'static str,
    peer: Option<IpAddr>,
) where
    S: Stream<Item = Result<Decoded, CodecError>> + Unpin + Send,
    W: FrameWriter,
{
    let _open = crate::metrics::get().connection_opened(transport);
    let queue = Arc::new(SendQueue::new(
        services.limits.outbound_queue,
        services.limits.outbound_queue_bytes,
    ));
    let (finish_tx, finish_rx) = oneshot::channel::<Option<writer::LastFrame>>();
    let writer_task = tokio::spawn(write_loop(writer, queue.clone(), finish_rx));
    let handle = SessionHandle::new(queue);
    let mut session = Session {
        bucket: services
            .limiter
            .connection_bucket(std::time::Instant::now()),
        peer,
        pending: Arc::new(Semaphore::new(services.limits.max_pending as usize)),
        state: SessionState::new(
            Instant::now(),
            services.limits.heartbeat,
            services.limits.auth_timeout,
        ),
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
            Some(writer::LastFrame {
                frame: encode_frame(&tern_proto::closing_frame(
                    *reason,
                    message.clone(),
                    if *reason == CloseReason::Shutdown {
                        1000
                    } else {
                        0
                    },
                )),
                reason: *reason,
                message: message.clone(),
            })
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

struct Session {
    services: Arc<Services>,
    /// This connection's request rate.
    bucket: Bucket,
    peer: Option<IpAddr>,
    handle: Arc<SessionHandle>,
    state: SessionState,
    authed: Option<Authed>,
    pending: Arc<Semaphore>,
}

impl Session {
    fn reply(&self, req_id: u64) -> Reply {
        Reply::new(self.handle.clone(), req_id)
    }

    async fn run<S>(&mut self, mut frames: S) -> Close
    where
        S: Stream<Item = Result<Decoded, CodecError>> + Unpin,
    {
        let timer = tokio::time::sleep_until(self.state.deadline());
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
                    self.state.frame_received(Instant::now());
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
                            self.reply(0).err(ServiceError::new(ErrorCode::MalformedFrame, format!("frame is not a valid protobuf Frame: {e}")));
                        }
                        Some(Err(CodecError::FrameTooLarge { len, max })) => {
                            self.reply(0).err(ServiceError::new(ErrorCode::FrameTooLarge, format!("frame of {len} bytes exceeds the maximum of {max}")));
                            return Some((CloseReason::ProtocolError, FRAME_TOO_LARGE_CLOSE.into()));
                        }
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "connection read ended");
                            return None;
                        }
                    }
                }
                _ = &mut timer => {
                    if let Some((reason, why)) = self.state.timed_out(Instant::now()) {
                        return Some((reason, why.into()));
                    }
                    timer.as_mut().reset(self.state.deadline());
                }
                _ = handle.closed() => return handle.close_reason().cloned(),
                _ = shutdown.cancelled() => return Some((CloseReason::Shutdown, "server shutting down".into())),
            }
        }
    }

    /// Handles one request. Returns a close reason when the session must end.
    async fn dispatch(&mut self, f: Frame, permit: OwnedSemaphorePermit) -> Close {
        let Some(body) = f.body else {
            self.reply(f.req_id).err(ServiceError::new(
                ErrorCode::UnknownRequest,
                "frame has no body (or a body this server does not know)",
            ));
            return None;
        };
        let reply = self.reply(f.req_id).to(tern_proto::body_name(&body));
        let svc = self.services.clone();
        match (classify(&body), &self.authed) {
            (RequestClass::Ping, _) => {
                let Body::Ping(p) = body else {
                    unreachable!("classified as Ping")
                };
                reply.body(Body::Pong(pb::Pong {
                    client_time_ms: p.client_time_ms,
                    server_time_ms: crate::clock::system_now_ms(),
                }));
                None
            }
            (RequestClass::Auth, None) => {
                let outcome = match body {
                    Body::Register(r) => api::auth::register(&svc, reply, r, self.peer).await,
                    Body::Login(l) => api::auth::login(&svc, reply, l, self.peer).await,
                    Body::Resume(r) => api::auth::resume(&svc, reply, r).await,
                    _ => unreachable!("classified as Auth"),
                };
                match outcome {
                    AuthOutcome::Close(reason, why) => Some((reason, why)),
                    AuthOutcome::LoggedIn(a) => {
                        self.authed = Some(a);
                        self.state.authenticated();
                        None
                    }
                    AuthOutcome::Unchanged => None,
                }
            }
            (RequestClass::Auth, Some(_)) => {
                reply.err(ServiceError::new(
                    ErrorCode::AlreadyAuthenticated,
                    "this session is already logged in",
                ));
                None
            }
            (RequestClass::NotARequest, _) => {
                reply.err(ServiceError::new(
                    ErrorCode::UnknownRequest,
                    format!("{} is not a request", tern_proto::body_name(&body)),
                ));
                None
            }
            (RequestClass::Authed { .. }, None) => {
                reply.err(ServiceError::new(
                    ErrorCode::Unauthenticated,
                    format!(
                        "{} needs a logged-in session: Login or Resume first",
                        tern_proto::body_name(&body)
                    ),
                ));
                None
            }
            (RequestClass::Authed { rate_limited }, Some(a)) => {
                let a = a.clone();
                if rate_limited {
                    if let Some(e) = self.over_rate(&a.user) {
                        if let Body::Send(s) = &body {
                            self.handle.send_fence.refused(&s.client_msg_id, &e);
                        }
                        reply.err(e);
                        return None;
                    }
                }
                api::dispatch_authed(&svc, reply, body, &a, permit).await
            }
        }
    }

    /// The connection's and then the user's request rate.
    fn over_rate(&mut self, user: &str) -> Option<ServiceError> {
        let now = std::time::Instant::now();
        let (wait, who) = match self.bucket.take(now) {
            Err(w) => (w, "this connection"),
            Ok(()) => match self.services.limiter.user_request(user, now) {
                Err(w) => (w, "this user"),
                Ok(()) => return None,
            },
        };
        Some(ServiceError::rate_limited(
            wait,
            &format!("request rate of {who} exceeded"),
        ))
    }
}
