//! The reconnecting client: a cheap cloneable [`Client`] handle plus one event-loop task
//! that owns the connection and the [`Engine`](crate::engine::Engine).
//!
//! - this file: the handle, its configuration and errors, and the event stream;
//! - [`requests`]: one method per request (history, groups, presence...);
//! - [`one_shot`]: [`register`] and [`login`] on a connection of their own;
//! - `event_loop` (private): the task. It connects (QUIC, TLS-TCP, or `Auto`: QUIC
//!   first, TCP when UDP does not get through in time, remembering what worked), moves
//!   frames between the socket and the engine, keeps the engine's one timer, and
//!   reconnects with exponential backoff and jitter. What to send and when to give up
//!   (auth, heartbeat, close reasons) is the engine's decision, not the loop's.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use tern_proto::pb::{self, ErrorCode};
use tern_proto::{Body, Frame};
use tokio::sync::{mpsc, oneshot};

use crate::connect::{connect, ConnectError, ConnectOptions, Transport, Trust};
use crate::engine::{Outgoing, Target};
use crate::state::StateStore;

pub mod blobs;
mod event_loop;
pub mod one_shot;
pub mod requests;

pub use crate::engine::Credentials;
pub use crate::event::Event;
pub use one_shot::{login, register};

/// Which transport(s) to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportMode {
    /// QUIC first; TLS-TCP if QUIC does not connect within `ClientConfig::quic_deadline`.
    Auto,
    Quic,
    Tcp,
}

impl std::str::FromStr for TransportMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "quic" => Ok(Self::Quic),
            "tcp" => Ok(Self::Tcp),
            _ => Err(format!("transport must be auto, quic or tcp, not {s:?}")),
        }
    }
}

/// When a message counts as processed, so that the SDK acks it to the server and saves
/// cursors past it (exactly once to the app, across crashes; see [`Client::confirm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConfirmMode {
    /// When it is handed to the app (the default): a crash of the app right after may
    /// lose it for that device (the cursors saved already cover it).
    #[default]
    Delivered,
    /// When the app says so with [`Client::confirm`]: until then it is neither acked nor
    /// covered by the saved cursors, so if the app dies first it is delivered again, once,
    /// after the restart.
    App,
    /// When the store has kept it: the client hands each batch of messages to
    /// [`StateStore::commit`] with the cursors that cover them, in one write (one
    /// transaction with [`SqliteStore`](crate::SqliteStore)), before the app sees them.
    /// If that write fails they stay unconfirmed (delivered again after a restart).
    Store,
}

/// Everything the client needs.
pub struct ClientConfig {
    /// The server (TLS-TCP, and QUIC unless `quic_server` says otherwise).
    pub server: SocketAddr,
    /// QUIC address when the server listens for QUIC elsewhere than for TCP.
    pub quic_server: Option<SocketAddr>,
    /// Name the server certificate must carry.
    pub server_name: String,
    pub trust: Trust,
    pub transport: TransportMode,
    pub credentials: Credentials,
    /// Token, cursors and outbox across restarts.
    pub store: Box<dyn StateStore>,
    /// First reconnect delay; doubles up to `max_backoff`, with jitter.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// How long `Auto` waits for QUIC before trying TCP.
    pub quic_deadline: Duration,
    /// Persist the outbox before sending, so an app restart resends too.
    pub persist_outbox: bool,
    /// Receive messages (sync, pushes, acks). False for a client that only sends and
    /// makes requests: it downloads nothing and leaves the cursors where they are.
    pub receive: bool,
    /// When a message counts as processed ([`ConfirmMode`]); default `Delivered`.
    pub confirm: ConfirmMode,
}

impl ClientConfig {
    pub fn new(
        server: SocketAddr,
        trust: Trust,
        credentials: Credentials,
        store: Box<dyn StateStore>,
    ) -> Self {
        Self {
            server,
            quic_server: None,
            server_name: "localhost".into(),
            trust,
            transport: TransportMode::Auto,
            credentials,
            store,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            quic_deadline: Duration::from_millis(1500),
            persist_outbox: true,
            receive: true,
            confirm: ConfirmMode::Delivered,
        }
    }
}

/// Typed failures of client calls.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{message} ({})", code.as_str_name())]
    Server { code: ErrorCode, message: String },
    /// The connection dropped while the request was in flight (it was not resent: it
    /// may or may not have taken effect).
    #[error("connection lost before the answer came")]
    ConnectionLost,
    /// The client has stopped (closed, replaced, or authentication lost).
    #[error("client stopped: {0}")]
    Stopped(String),
    #[error("unexpected answer from server: {0}")]
    Protocol(String),
    #[error("cannot connect: {0}")]
    Connect(String),
    /// A send with a time-to-live was not sent before the TTL passed: it was dropped
    /// (see [`Event::SendExpired`]).
    #[error("message {client_msg_id} expired before it could be sent")]
    Expired { client_msg_id: String },
}

impl ClientError {
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// What the handle asks of the loop.
enum Command {
    Send(
        Box<Outgoing>,
        oneshot::Sender<Result<pb::SendAck, ClientError>>,
    ),
    Request(Box<Body>, oneshot::Sender<Result<Body, ClientError>>),
    Close(oneshot::Sender<()>),
    /// [`Client::confirm`]: answered once the cursors it allows are saved.
    Confirm(String, u64, oneshot::Sender<()>),
}

/// A cheap handle to the client's event loop. Clone it freely.
#[derive(Clone)]
pub struct Client {
    cmd: mpsc::Sender<Command>,
    /// Cancelled by `close()`, so a connection attempt in progress stops at once.
    stop: tokio_util::sync::CancellationToken,
    username: String,
    device: String,
}

/// The stream of [`Event`]s of one client.
pub struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Events {
    /// The next event; `None` once the client has stopped and all events were read.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

/// A send in progress: await it for the durable ack.
pub struct SendTicket {
    pub client_msg_id: String,
    rx: oneshot::Receiver<Result<pb::SendAck, ClientError>>,
}

impl std::future::Future for SendTicket {
    type Output = Result<pb::SendAck, ClientError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(ClientError::Stopped("event loop ended".into()))))
    }
}

/// What a message carries besides its target and body (docs/PROTOCOL.md 8.1); the
/// default is a plain text message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// MIME type of the body; empty = `text/plain; charset=utf-8`.
    pub content_type: String,
    /// The seq (in the same conversation) this message answers; 0 = none.
    pub reply_to: u64,
    /// Members mentioned by name (at most 100; repeats and the sender are dropped).
    pub mentions: Vec<String>,
    /// An @all: groups only, by an owner or admin.
    pub mention_all: bool,
    /// Time to live in seconds, counted from now (the call); 0 = never dropped (the
    /// default). A device that would get the message later gets an expired tombstone
    /// instead; if the SDK itself cannot send it in time (offline), it drops it and the
    /// ticket resolves with [`ClientError::Expired`]. At most the server's
    /// `max_ttl_secs`, else `INVALID_ARGUMENT`.
    pub ttl_secs: u32,
    /// An image or file message: a blob uploaded with [`Client::upload_file`] (or
    /// `upload_bytes`) and the file name to show; the body is then an optional caption.
    pub attachment: Option<blobs::AttachmentRef>,
}

/// The wall-clock time, Unix ms (0 if the clock is before 1970).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A new random client_msg_id (128 bits, hex).
pub fn new_client_msg_id() -> String {
    let v: u128 = rand::thread_rng().gen();
    format!("{v:032x}")
}

impl Client {
    /// Starts the event loop (it connects in the background) and returns the handle and
    /// the event stream.
    pub fn start(config: ClientConfig) -> (Client, Events) {
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let stop = tokio_util::sync::CancellationToken::new();
        let client = Client {
            cmd: cmd_tx,
            stop: stop.clone(),
            username: config.credentials.username.clone(),
            device: config.credentials.device.clone(),
        };
        tokio::spawn(event_loop::EventLoop::new(config, cmd_rx, ev_tx, stop).run());
        (client, Events { rx: ev_rx })
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    /// Queues a message (given a client_msg_id now, kept across every retry) and returns
    /// a ticket that resolves with the durable ack. Sends keep their order.
    pub async fn send_with(
        &self,
        target: Target,
        body: Bytes,
        content_type: &str,
    ) -> Result<SendTicket, ClientError> {
        self.send_with_options(
            target,
            body,
            SendOptions {
                content_type: content_type.to_string(),
                ..Default::default()
            },
        )
        .await
    }

    /// [`Client::send_with`] with a reply and mentions ([`SendOptions`]; docs/PROTOCOL.md
    /// 8.1). The server refuses a `reply_to` past the conversation's last seq or a mention
    /// of a non-member (`INVALID_ARGUMENT`), and an @all by a plain member (`FORBIDDEN`):
    /// the ticket resolves with that error.
    pub async fn send_with_options(
        &self,
        target: Target,
        body: Bytes,
        options: SendOptions,
    ) -> Result<SendTicket, ClientError> {
        let msg = Outgoing {
            client_msg_id: new_client_msg_id(),
            target,
            body,
            content_type: options.content_type,
            reply_to: options.reply_to,
            mentions: options.mentions,
            mention_all: options.mention_all,
            ttl_secs: options.ttl_secs,
            created_ms: now_ms(),
            attachment: options.attachment.map(|a| pb::Attachment {
                blob_id: a.blob_id,
                name: a.name,
                ..Default::default()
            }),
        };
        let client_msg_id = msg.client_msg_id.clone();
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Send(Box::new(msg), tx))
            .await
            .map_err(|_| ClientError::Stopped("event loop ended".into()))?;
        Ok(SendTicket { client_msg_id, rx })
    }

    /// Sends a text message and waits for its durable ack.
    pub async fn send_text(&self, target: Target, text: &str) -> Result<pb::SendAck, ClientError> {
        self.send_with(target, Bytes::copy_from_slice(text.as_bytes()), "")
            .await?
            .await
    }

    /// Any request; its response body, or the server's error as [`ClientError::Server`].
    pub async fn request(&self, body: Body) -> Result<Body, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Request(Box::new(body), tx))
            .await
            .map_err(|_| ClientError::Stopped("event loop ended".into()))?;
        rx.await
            .unwrap_or_else(|_| Err(ClientError::Stopped("event loop ended".into())))
    }

    /// With [`ConfirmMode::App`]: the app has processed every message of `conversation`
    /// up to `seq` (cumulative, like an ack: confirming the latest [`Event::Message`] of a
    /// conversation confirms the ones before it; confirm EDIT and RECALL entries and
    /// tombstones too, they are messages). Resolves once the cursors that this allows are
    /// saved: a message confirmed is not delivered again after a crash, one not confirmed
    /// is, once. The acks to the server follow. A no-op in the other modes.
    pub async fn confirm(&self, conversation: &str, seq: u64) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Confirm(conversation.to_string(), seq, tx))
            .await
            .map_err(|_| ClientError::Stopped("event loop ended".into()))?;
        rx.await
            .map_err(|_| ClientError::Stopped("event loop ended".into()))
    }

    /// Acks what was received, saves state, closes the connection and stops the loop.
    /// Unacknowledged sends stay in the saved outbox.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Command::Close(tx)).await.is_ok() {
            // The Close command is queued first, so the loop finds it when it stops.
            self.stop.cancel();
            let _ = rx.await;
        }
    }
}

fn unexpected(b: &Body) -> ClientError {
    ClientError::Protocol(tern_proto::body_name(b).to_string())
}

fn expect_ok(b: Body) -> Result<(), ClientError> {
    match b {
        Body::Ok(_) => Ok(()),
        other => Err(unexpected(&other)),
    }
}

/// A response frame as the caller sees it: its body, or the server's `Error`.
fn body_result(f: Frame) -> Result<Body, ClientError> {
    match f.body {
        Some(Body::Error(e)) => Err(ClientError::Server {
            code: ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Internal),
            message: e.message,
        }),
        Some(b) => Ok(b),
        None => Err(ClientError::Protocol("empty response".into())),
    }
}

/// Opens a connection in `mode` (`Auto`: QUIC within `quic_deadline`, else TLS-TCP).
async fn connect_mode(
    server: SocketAddr,
    quic_server: Option<SocketAddr>,
    opts: &ConnectOptions,
    mode: TransportMode,
    quic_deadline: Duration,
) -> Result<crate::connect::Connection, ConnectError> {
    let quic = quic_server.unwrap_or(server);
    match mode {
        TransportMode::Quic => connect(Transport::Quic, quic, opts).await,
        TransportMode::Tcp => connect(Transport::Tcp, server, opts).await,
        TransportMode::Auto => {
            let mut quick = opts.clone();
            quick.timeout = quic_deadline;
            match connect(Transport::Quic, quic, &quick).await {
                Ok(c) => Ok(c),
                Err(e) => {
                    tracing::debug!(error = %e, "QUIC failed; trying TLS over TCP");
                    connect(Transport::Tcp, server, opts).await
                }
            }
        }
    }
}
