//! A raw-frame connection: send a request [`Frame`], await the frame with the same
//! `req_id`, and keep the server's pushes (every `req_id` 0 frame) in arrival order.
//!
//! No login, no reconnect, no resend, no acks: whatever the caller sends is what goes on
//! the wire. It is for one-off calls (the SDK's own [`register`](crate::register) and
//! [`login`](crate::login)), for tests that talk to the server frame by frame, and for
//! load generators that drive thousands of connections without the full
//! [`Client`](crate::Client).
//!
//! # Use
//!
//! ```no_run
//! use std::time::Duration;
//! use tern_sdk::proto::{pb, Body, PROTOCOL_VERSION};
//! use tern_sdk::raw::{RawConnection, RawError};
//! use tern_sdk::{ConnectOptions, Transport, Trust};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let opts = ConnectOptions::new(Trust::from_pem_file("ca.pem".as_ref())?);
//! let mut conn = RawConnection::connect(Transport::Tcp, "127.0.0.1:7443".parse()?, &opts).await?;
//! // `call`: the response body, or the server's `Error` as `RawError::Server`.
//! let ok = conn
//!     .call(Body::Login(pb::Login {
//!         protocol_version: PROTOCOL_VERSION,
//!         username: "alice".into(),
//!         password: "correct horse battery".into(),
//!         device: "laptop".into(),
//!     }))
//!     .await?;
//! // `request`: the whole response frame, `Error` bodies included.
//! let frame = conn.request(Body::ListConversations(pb::ListConversations::default())).await?;
//! // Pipelining: send several, then collect the answers by req_id, in any order.
//! let a = conn.send_request(Body::Ping(pb::Ping::default())).await?;
//! let b = conn.send_request(Body::Ping(pb::Ping::default())).await?;
//! let (_fb, _fa) = (conn.response(b).await?, conn.response(a).await?);
//! // Pushes that arrived meanwhile were kept; wait for the next one.
//! match conn.next_push(Duration::from_secs(5)).await {
//!     Ok(push) => println!("{push:?}"),
//!     Err(RawError::Timeout) => println!("nothing pushed"),
//!     Err(e) => return Err(e.into()),
//! }
//! conn.close().await;
//! # let _ = (ok, frame);
//! # Ok(())
//! # }
//! ```
//!
//! Rules it keeps:
//! - `req_id`s come from a counter starting at 1 ([`RawConnection::next_req_id`]), never 0:
//!   a response to `req_id` 0 could not be told apart from a push (docs/PROTOCOL.md, "req_id
//!   rules").
//! - While waiting for one response, other responses are kept (see
//!   [`RawConnection::try_response`]) and `req_id` 0 frames go to
//!   [`RawConnection::pushes`]. A `Closing` frame is also remembered
//!   ([`RawConnection::closing`]); the wait ends when the stream ends, with
//!   [`RawError::Closed`] (or [`RawError::Stream`] when it broke).
//! - Every wait has a limit: [`RawConnection::set_timeout`] (30 s unless changed) for
//!   responses, an explicit one for pushes.
//! - [`RawConnection::recv_frame`] and [`RawConnection::recv`] read straight off the wire,
//!   around the buffers, for callers that do their own matching (or feed bad input).
//!
//! Connections opened some other way (a socket bound to a chosen source address, say)
//! become a `RawConnection` with [`RawConnection::from_parts`]; [`RawConnection::into_parts`]
//! hands the halves back, e.g. to split reading and writing into two tasks.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tern_proto::codec::Decoded;
use tern_proto::pb::{self, ErrorCode};
use tern_proto::{encode_frame, Body, CodecError, Frame};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::connect::{
    connect, BoxWrite, ConnectError, ConnectOptions, Connection, ConnectionGuard, FrameReader,
    Transport,
};

/// How long [`RawConnection::response`] waits unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a raw call did not get its answer.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    /// The server answered with `Error` (only from [`RawConnection::call`]).
    #[error("{message} ({})", code.as_str_name())]
    Server { code: ErrorCode, message: String },
    /// The stream ended first; with the `Closing` frame the server sent, if any.
    #[error("connection closed{}", .0.as_ref().map(|c| format!(": {}", c.message)).unwrap_or_default())]
    Closed(Option<pb::Closing>),
    /// Nothing came within the time limit.
    #[error("timed out")]
    Timeout,
    /// A write failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The stream failed (a read error, an oversized or truncated frame); it is over.
    #[error("{0}")]
    Stream(CodecError),
    /// The server sent bytes that are not a frame.
    #[error("undecodable frame from server: {0}")]
    Undecodable(String),
    /// The response had no body.
    #[error("empty response")]
    Empty,
}

/// What keeps the transport open while a [`RawConnection`] is in use.
enum Keep {
    /// From [`connect`]: closes QUIC (and waits for it) on [`RawConnection::close`].
    Sdk(ConnectionGuard),
    /// From [`RawConnection::from_parts`]: held, and dropped with the connection.
    Other(Box<dyn Any + Send>),
}

/// The halves of a [`RawConnection`], from [`RawConnection::into_parts`].
pub struct RawParts {
    pub transport: Transport,
    pub reader: FrameReader,
    pub writer: BoxWrite,
    /// Keeps the transport open; drop it to close (QUIC closes on drop).
    pub guard: Box<dyn Any + Send>,
    /// The next unused req_id.
    pub next_req: u64,
    /// Pushes received but not taken yet.
    pub pushes: VecDeque<Frame>,
}

/// One connection that speaks frames. See the [module docs](self).
pub struct RawConnection {
    transport: Transport,
    reader: FrameReader,
    writer: BoxWrite,
    keep: Keep,
    next_req: u64,
    timeout: Duration,
    pushes: VecDeque<Frame>,
    responses: HashMap<u64, Frame>,
    closing: Option<pb::Closing>,
    eof: bool,
}

impl From<Connection> for RawConnection {
    fn from(conn: Connection) -> Self {
        let transport = conn.transport;
        let (reader, writer, guard) = conn.into_split();
        Self::build(transport, reader, writer, Keep::Sdk(guard))
    }
}

impl RawConnection {
    /// Connects over `transport` (see [`connect`]).
    pub async fn connect(
        transport: Transport,
        addr: SocketAddr,
        opts: &ConnectOptions,
    ) -> Result<Self, ConnectError> {
        Ok(connect(transport, addr, opts).await?.into())
    }

    /// A connection opened elsewhere: its frame reader, its writer, and whatever must stay
    /// alive while they are used (dropped with the connection; `()` if nothing).
    pub fn from_parts(
        transport: Transport,
        reader: FrameReader,
        writer: BoxWrite,
        guard: impl Any + Send,
    ) -> Self {
        Self::build(transport, reader, writer, Keep::Other(Box::new(guard)))
    }

    fn build(transport: Transport, reader: FrameReader, writer: BoxWrite, keep: Keep) -> Self {
        Self {
            transport,
            reader,
            writer,
            keep,
            next_req: 1,
            timeout: DEFAULT_TIMEOUT,
            pushes: VecDeque::new(),
            responses: HashMap::new(),
            closing: None,
            eof: false,
        }
    }

    /// The halves back (buffered responses are dropped; pushes are handed over).
    pub fn into_parts(self) -> RawParts {
        RawParts {
            transport: self.transport,
            reader: self.reader,
            writer: self.writer,
            guard: match self.keep {
                Keep::Sdk(g) => Box::new(g),
                Keep::Other(g) => g,
            },
            next_req: self.next_req,
            pushes: self.pushes,
        }
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// How long [`response`](Self::response) (and so `request` and `call`) waits.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// A fresh req_id (1, 2, 3, ...), for frames the caller builds itself.
    pub fn next_req_id(&mut self) -> u64 {
        let id = self.next_req;
        self.next_req += 1;
        id
    }

    /// Writes one frame and flushes.
    pub async fn send(&mut self, frame: &Frame) -> std::io::Result<()> {
        self.send_raw(&encode_frame(frame)).await
    }

    /// Writes bytes as they are (length-prefixed frames, or anything at all) and flushes.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await?;
        self.writer.flush().await
    }

    /// Writes many encoded frames with one flush.
    pub async fn send_many(&mut self, frames: &[Bytes]) -> std::io::Result<()> {
        for f in frames {
            self.writer.write_all(f).await?;
        }
        self.writer.flush().await
    }

    /// Sends `body` under a fresh req_id, without waiting; returns the req_id.
    pub async fn send_request(&mut self, body: Body) -> std::io::Result<u64> {
        let req_id = self.next_req_id();
        self.send(&Frame {
            req_id,
            body: Some(body),
        })
        .await?;
        Ok(req_id)
    }

    /// Waits for the frame answering `req_id` (whatever its body, `Error` included).
    pub async fn response(&mut self, req_id: u64) -> Result<Frame, RawError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(f) = self.responses.remove(&req_id) {
                return Ok(f);
            }
            self.pump(deadline).await?;
        }
    }

    /// Sends a request and waits for its response frame.
    pub async fn request(&mut self, body: Body) -> Result<Frame, RawError> {
        let id = self.send_request(body).await?;
        self.response(id).await
    }

    /// Sends a request and returns its response body; an `Error` answer is
    /// [`RawError::Server`].
    pub async fn call(&mut self, body: Body) -> Result<Body, RawError> {
        match self.request(body).await?.body {
            Some(Body::Error(e)) => Err(RawError::Server {
                code: ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Internal),
                message: e.message,
            }),
            Some(b) => Ok(b),
            None => Err(RawError::Empty),
        }
    }

    /// A response that has already arrived, if any.
    pub fn try_response(&mut self, req_id: u64) -> Option<Frame> {
        self.responses.remove(&req_id)
    }

    /// The next `req_id` 0 frame (a push, `Closing`, or a connection-level error), kept or
    /// new, if one comes within `timeout`.
    pub async fn next_push(&mut self, timeout: Duration) -> Result<Frame, RawError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(f) = self.pushes.pop_front() {
                return Ok(f);
            }
            self.pump(deadline).await?;
        }
    }

    /// The `req_id` 0 frames received and not taken yet, oldest first.
    pub fn pushes(&mut self) -> &mut VecDeque<Frame> {
        &mut self.pushes
    }

    /// The `Closing` frame, once the server has sent one.
    pub fn closing(&self) -> Option<&pb::Closing> {
        self.closing.as_ref()
    }

    /// True once the server's stream has ended (or failed).
    pub fn is_closed(&self) -> bool {
        self.eof
    }

    /// Reads (keeping what comes) until the server ends the stream; returns its `Closing`.
    /// [`RawError::Timeout`] if it is still open after `timeout`.
    pub async fn until_closed(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<pb::Closing>, RawError> {
        let deadline = Instant::now() + timeout;
        while !self.eof {
            match self.pump(deadline).await {
                Ok(()) | Err(RawError::Closed(_) | RawError::Stream(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.closing.clone())
    }

    /// The next frame off the wire, past the buffers (nothing is kept). A `Closing` is
    /// still remembered for [`closing`](Self::closing).
    pub async fn recv_frame(&mut self, timeout: Duration) -> Result<Frame, RawError> {
        let f = self.read(Instant::now() + timeout).await?;
        self.note_closing(&f);
        Ok(f)
    }

    /// The next item from the decoder as it is: `None` at the end of the stream, an
    /// undecodable frame as `Ok(Err(..))`. No time limit, nothing kept.
    pub async fn recv(&mut self) -> Option<Result<Decoded, CodecError>> {
        self.reader.next().await
    }

    /// Closes the write side and, for QUIC, the connection (waiting up to 1 s for the
    /// close to go out).
    pub async fn close(mut self) {
        let _ = self.writer.shutdown().await;
        if let Keep::Sdk(g) = &mut self.keep {
            g.close_and_wait().await;
        }
    }

    fn note_closing(&mut self, f: &Frame) {
        if let Some(Body::Closing(c)) = &f.body {
            self.closing = Some(c.clone());
        }
    }

    /// Reads one frame into its place.
    async fn pump(&mut self, deadline: Instant) -> Result<(), RawError> {
        let f = self.read(deadline).await?;
        self.note_closing(&f);
        if f.req_id == 0 {
            self.pushes.push_back(f);
        } else {
            self.responses.insert(f.req_id, f);
        }
        Ok(())
    }

    async fn read(&mut self, deadline: Instant) -> Result<Frame, RawError> {
        if self.eof {
            return Err(RawError::Closed(self.closing.clone()));
        }
        match tokio::time::timeout_at(deadline, self.reader.next()).await {
            Err(_) => Err(RawError::Timeout),
            Ok(None) => {
                self.eof = true;
                Err(RawError::Closed(self.closing.clone()))
            }
            Ok(Some(Err(e))) => {
                self.eof = true;
                Err(RawError::Stream(e))
            }
            Ok(Some(Ok(Err(e)))) => Err(RawError::Undecodable(e.to_string())),
            Ok(Some(Ok(Ok(f)))) => Ok(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::BoxRead;
    use tern_proto::{FrameCodec, DEFAULT_MAX_FRAME};
    use tokio_util::codec::FramedRead;

    /// A raw connection over an in-memory pipe, and the server's end of it.
    fn pipe() -> (RawConnection, FrameReader, BoxWrite) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (cr, cw) = tokio::io::split(client);
        let (sr, sw) = tokio::io::split(server);
        let reader = |r: BoxRead| FramedRead::new(r, FrameCodec::new(DEFAULT_MAX_FRAME));
        let conn =
            RawConnection::from_parts(Transport::Tcp, reader(Box::pin(cr)), Box::pin(cw), ());
        (conn, reader(Box::pin(sr)), Box::pin(sw))
    }

    async fn read_req(r: &mut FrameReader) -> Frame {
        r.next().await.unwrap().unwrap().unwrap()
    }

    async fn write(w: &mut BoxWrite, req_id: u64, body: Body) {
        w.write_all(&encode_frame(&Frame {
            req_id,
            body: Some(body),
        }))
        .await
        .unwrap();
        w.flush().await.unwrap();
    }

    fn push(seq: u64) -> Body {
        Body::Push(pb::MessagePush {
            inbox_seq: seq,
            message: None,
        })
    }

    #[tokio::test]
    async fn responses_are_matched_by_req_id_and_pushes_kept_in_order() {
        let (mut c, mut sr, mut sw) = pipe();
        let a = c
            .send_request(Body::Ping(pb::Ping::default()))
            .await
            .unwrap();
        let b = c
            .send_request(Body::ListConversations(pb::ListConversations::default()))
            .await
            .unwrap();
        assert_eq!((a, b), (1, 2), "req_ids count from 1");
        assert_eq!(read_req(&mut sr).await.req_id, 1);
        assert_eq!(read_req(&mut sr).await.req_id, 2);
        // Answers out of order, with pushes in between.
        write(&mut sw, 0, push(1)).await;
        write(&mut sw, b, Body::Ok(pb::Ok {})).await;
        write(&mut sw, 0, push(2)).await;
        write(&mut sw, a, Body::Pong(pb::Pong::default())).await;
        let fa = c.response(a).await.unwrap();
        assert!(matches!(fa.body, Some(Body::Pong(_))));
        assert!(
            c.try_response(b).is_some(),
            "b was kept while waiting for a"
        );
        let seqs: Vec<u64> = c
            .pushes()
            .drain(..)
            .map(|f| match f.body {
                Some(Body::Push(p)) => p.inbox_seq,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(seqs, vec![1, 2]);
    }

    #[tokio::test]
    async fn call_turns_error_into_server_error() {
        let (mut c, mut sr, mut sw) = pipe();
        let server = tokio::spawn(async move {
            let f = read_req(&mut sr).await;
            write(
                &mut sw,
                f.req_id,
                Body::Error(pb::Error {
                    code: ErrorCode::Forbidden as i32,
                    message: "no".into(),
                    ..Default::default()
                }),
            )
            .await;
            (sr, sw)
        });
        let err = c
            .call(Body::ListConversations(pb::ListConversations::default()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, RawError::Server { code: ErrorCode::Forbidden, ref message } if message == "no"),
            "{err:?}"
        );
        drop(server.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_stream_ends_the_wait_with_the_closing_frame() {
        let (mut c, mut sr, mut sw) = pipe();
        c.set_timeout(Duration::from_secs(5));
        let id = c
            .send_request(Body::Ping(pb::Ping::default()))
            .await
            .unwrap();
        read_req(&mut sr).await;
        write(
            &mut sw,
            0,
            Body::Closing(pb::Closing {
                reason: pb::CloseReason::Shutdown as i32,
                message: "bye".into(),
                retry_after_ms: 1000,
            }),
        )
        .await;
        drop((sr, sw));
        match c.response(id).await {
            Err(RawError::Closed(Some(cl))) => assert_eq!(cl.message, "bye"),
            other => panic!("{other:?}"),
        }
        assert!(c.is_closed());
        assert_eq!(c.closing().map(|cl| cl.retry_after_ms), Some(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn waits_end_at_the_time_limit() {
        let (mut c, _sr, _sw) = pipe();
        c.set_timeout(Duration::from_secs(2));
        let id = c
            .send_request(Body::Ping(pb::Ping::default()))
            .await
            .unwrap();
        assert!(matches!(c.response(id).await, Err(RawError::Timeout)));
        assert!(matches!(
            c.next_push(Duration::from_secs(1)).await,
            Err(RawError::Timeout)
        ));
        assert!(!c.is_closed());
    }
}
