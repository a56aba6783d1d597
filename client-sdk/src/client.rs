//! The reconnecting client: a cheap cloneable [`Client`] handle plus one event-loop task
//! that owns the connection and the [`Engine`].
//!
//! The loop connects (QUIC, TLS-TCP, or `Auto`: QUIC first, TCP when UDP does not get
//! through in time, remembering what worked), authenticates (resume with the saved token,
//! log in with the password when the token is gone), and then moves frames between the
//! socket and the engine. When the connection drops it reconnects with exponential
//! backoff and jitter; the engine resends the outbox and syncs what was missed.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use rand::Rng;
use tern_proto::pb::{self, CloseReason, ErrorCode};
use tern_proto::{encode_frame, Body, Frame, PROTOCOL_VERSION};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use crate::connect::{connect, BoxWrite, ConnectError, ConnectOptions, Transport, Trust};
use crate::cursor::{SavedState, StateStore};
use crate::engine::{Engine, EngineEvent, Outgoing, Target};
use crate::raw::{RawConnection, RawError};

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

/// Who the client is.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    /// Used when there is no valid token; without it an expired token ends the client.
    pub password: Option<String>,
    pub device: String,
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
}

impl ClientError {
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Connection state changes and incoming traffic, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A message, exactly once and in order per conversation; `own` for this user's.
    Message { message: pb::Message, own: bool },
    /// A send became durable (also resolves the `send` future).
    Acked(pb::SendAck),
    /// A send was refused for good and left the outbox.
    SendFailed {
        client_msg_id: String,
        code: ErrorCode,
        message: String,
    },
    Connected {
        transport: Transport,
        username: String,
        device: String,
    },
    /// The connection dropped or could not be made; retrying after `retry_in`.
    Reconnecting {
        reason: String,
        attempt: u32,
        retry_in: Duration,
    },
    /// The credentials no longer work (revoked, wrong password, expired without a
    /// password): the client has stopped.
    AuthLost { code: ErrorCode, message: String },
    /// The same device logged in elsewhere: this client has stopped.
    Replaced,
    /// Everything missed while offline has been delivered (after each (re)connect's
    /// sync, and after later gap repairs).
    CaughtUp,
    /// The client stopped after `close()`.
    Closed,
}

enum Command {
    Send(Outgoing, oneshot::Sender<Result<pb::SendAck, ClientError>>),
    Request(Body, oneshot::Sender<Result<Body, ClientError>>),
    Close(oneshot::Sender<()>),
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
        tokio::spawn(EventLoop::new(config, cmd_rx, ev_tx, stop).run());
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
        let msg = Outgoing {
            client_msg_id: new_client_msg_id(),
            target,
            body,
            content_type: content_type.to_string(),
        };
        let client_msg_id = msg.client_msg_id.clone();
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Send(msg, tx))
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
            .send(Command::Request(body, tx))
            .await
            .map_err(|_| ClientError::Stopped("event loop ended".into()))?;
        rx.await
            .unwrap_or_else(|_| Err(ClientError::Stopped("event loop ended".into())))
    }

    /// A page of a conversation's history, newest first up to `before` (0 = from the end),
    /// returned in ascending order.
    pub async fn history(
        &self,
        conversation: &str,
        before: u64,
        limit: u32,
    ) -> Result<pb::PullResult, ClientError> {
        let before_seq = if before == 0 { u64::MAX } else { before };
        match self
            .request(Body::Pull(pb::Pull {
                conversation: conversation.into(),
                before_seq,
                limit,
                ..Default::default()
            }))
            .await?
        {
            Body::PullResult(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn create_group(
        &self,
        name: &str,
        members: &[String],
    ) -> Result<pb::GroupCreated, ClientError> {
        match self
            .request(Body::CreateGroup(pb::CreateGroup {
                name: name.into(),
                members: members.to_vec(),
            }))
            .await?
        {
            Body::GroupCreated(g) => Ok(g),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn add_members(
        &self,
        conversation: &str,
        users: &[String],
        role: pb::Role,
    ) -> Result<(), ClientError> {
        expect_ok(
            self.request(Body::AddMembers(pb::AddMembers {
                conversation: conversation.into(),
                users: users.to_vec(),
                role: role as i32,
            }))
            .await?,
        )
    }

    pub async fn remove_members(
        &self,
        conversation: &str,
        users: &[String],
    ) -> Result<(), ClientError> {
        expect_ok(
            self.request(Body::RemoveMembers(pb::RemoveMembers {
                conversation: conversation.into(),
                users: users.to_vec(),
            }))
            .await?,
        )
    }

    pub async fn leave_group(&self, conversation: &str) -> Result<(), ClientError> {
        expect_ok(
            self.request(Body::LeaveGroup(pb::LeaveGroup {
                conversation: conversation.into(),
            }))
            .await?,
        )
    }

    pub async fn members(&self, conversation: &str) -> Result<Vec<pb::Member>, ClientError> {
        match self
            .request(Body::ListMembers(pb::ListMembers {
                conversation: conversation.into(),
            }))
            .await?
        {
            Body::MemberList(l) => Ok(l.members),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn conversations(&self) -> Result<Vec<pb::ConversationInfo>, ClientError> {
        match self
            .request(Body::ListConversations(pb::ListConversations {}))
            .await?
        {
            Body::ConversationList(l) => Ok(l.conversations),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn presence(&self, users: &[String]) -> Result<Vec<pb::UserPresence>, ClientError> {
        match self
            .request(Body::PresenceQuery(pb::PresenceQuery {
                users: users.to_vec(),
            }))
            .await?
        {
            Body::PresenceResult(p) => Ok(p.users),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn group_online(
        &self,
        conversation: &str,
    ) -> Result<pb::GroupOnlineResult, ClientError> {
        match self
            .request(Body::GroupOnlineQuery(pb::GroupOnlineQuery {
                conversation: conversation.into(),
            }))
            .await?
        {
            Body::GroupOnlineResult(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
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

/// Registers an account (a one-off connection).
pub async fn register(
    server: SocketAddr,
    opts: &ConnectOptions,
    mode: TransportMode,
    username: &str,
    password: &str,
) -> Result<(), ClientError> {
    let body = Body::Register(pb::Register {
        protocol_version: PROTOCOL_VERSION,
        username: username.into(),
        password: password.into(),
    });
    match one_shot(server, opts, mode, body).await? {
        Body::Ok(_) => Ok(()),
        other => Err(unexpected(&other)),
    }
}

/// Logs in once and returns the LoginOk (its token can seed a [`StateStore`]).
pub async fn login(
    server: SocketAddr,
    opts: &ConnectOptions,
    mode: TransportMode,
    creds: &Credentials,
) -> Result<pb::LoginOk, ClientError> {
    let body = Body::Login(pb::Login {
        protocol_version: PROTOCOL_VERSION,
        username: creds.username.clone(),
        password: creds.password.clone().unwrap_or_default(),
        device: creds.device.clone(),
    });
    match one_shot(server, opts, mode, body).await? {
        Body::LoginOk(ok) => Ok(ok),
        other => Err(unexpected(&other)),
    }
}

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

async fn one_shot(
    server: SocketAddr,
    opts: &ConnectOptions,
    mode: TransportMode,
    body: Body,
) -> Result<Body, ClientError> {
    let conn = connect_mode(server, None, opts, mode, Duration::from_millis(1500))
        .await
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    let mut conn = RawConnection::from(conn);
    let res = match conn.request(body).await {
        Ok(f) => body_result(f),
        Err(RawError::Io(e)) => Err(ClientError::Connect(e.to_string())),
        Err(_) => Err(ClientError::ConnectionLost),
    };
    conn.close().await;
    res
}

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

/// How a connection ended.
enum End {
    /// Reconnect (after backoff).
    Retry(String),
    /// Stop the loop for good.
    Stop,
}

struct EventLoop {
    config: ClientConfig,
    opts: ConnectOptions,
    cmd_rx: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    engine: Engine,
    token: Option<String>,
    /// `Auto` remembers the transport that worked.
    preferred: Option<Transport>,
    send_waiters: HashMap<String, oneshot::Sender<Result<pb::SendAck, ClientError>>>,
    request_waiters: HashMap<u64, oneshot::Sender<Result<Body, ClientError>>>,
    queued_requests: VecDeque<(Body, oneshot::Sender<Result<Body, ClientError>>)>,
    closing: Option<oneshot::Sender<()>>,
    stop: tokio_util::sync::CancellationToken,
    /// From the last LoginOk.
    heartbeat: Duration,
    last_save: Instant,
    save_pending: bool,
}

impl EventLoop {
    fn new(
        mut config: ClientConfig,
        cmd_rx: mpsc::Receiver<Command>,
        events: mpsc::UnboundedSender<Event>,
        stop: tokio_util::sync::CancellationToken,
    ) -> Self {
        let saved = config.store.load().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not load saved client state; starting fresh");
            SavedState::default()
        });
        let mut opts = ConnectOptions::new(config.trust.clone());
        opts.server_name = config.server_name.clone();
        let mut engine = Engine::new(&config.credentials.username, saved.cursors, saved.outbox);
        engine.set_receive(config.receive);
        Self {
            opts,
            cmd_rx,
            events,
            engine,
            token: saved.token,
            preferred: None,
            send_waiters: HashMap::new(),
            request_waiters: HashMap::new(),
            queued_requests: VecDeque::new(),
            closing: None,
            stop,
            heartbeat: Duration::from_secs(30),
            last_save: Instant::now(),
            save_pending: false,
            config,
        }
    }

    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn save(&mut self) {
        let state = SavedState {
            token: self.token.clone(),
            cursors: self.engine.cursors().clone(),
            outbox: if self.config.persist_outbox {
                self.engine.outbox()
            } else {
                Vec::new()
            },
        };
        if let Err(e) = self.config.store.save(&state) {
            tracing::warn!(error = %e, "could not save client state");
        }
        self.last_save = Instant::now();
        self.save_pending = false;
    }

    async fn run(mut self) {
        let mut attempt: u32 = 0;
        loop {
            let stop = self.stop.clone();
            let connected = tokio::select! {
                r = self.connect_and_auth() => Some(r),
                _ = stop.cancelled() => None,
            };
            let Some(connected) = connected else {
                // close() during a connection attempt: take its command and stop.
                while let Ok(c) = self.cmd_rx.try_recv() {
                    if !self.command(c, None) {
                        break;
                    }
                }
                break;
            };
            let end = match connected {
                Ok((reader, writer, guard, transport)) => {
                    attempt = 0;
                    let end = self.serve(reader, writer, transport).await;
                    drop(guard);
                    end
                }
                Err(end) => end,
            };
            for id in self.engine.on_disconnected() {
                if let Some(w) = self.request_waiters.remove(&id) {
                    let _ = w.send(Err(ClientError::ConnectionLost));
                }
            }
            self.save();
            let reason = match end {
                End::Stop => break,
                End::Retry(reason) => reason,
            };
            attempt += 1;
            let base = self
                .config
                .initial_backoff
                .saturating_mul(1 << attempt.min(16).saturating_sub(1));
            let capped = base.min(self.config.max_backoff);
            // Full jitter on half the delay, so a crowd of clients spreads out.
            let jitter = rand::thread_rng().gen_range(0..=capped.as_millis() as u64 / 2);
            let delay = capped / 2 + Duration::from_millis(jitter);
            self.emit(Event::Reconnecting {
                reason,
                attempt,
                retry_in: delay,
            });
            if !self.wait_offline(delay).await {
                break;
            }
        }
        self.save();
        for (_, w) in self.send_waiters.drain() {
            let _ = w.send(Err(ClientError::Stopped("client stopped".into())));
        }
        for (_, w) in self.queued_requests.drain(..) {
            let _ = w.send(Err(ClientError::Stopped("client stopped".into())));
        }
        if let Some(c) = self.closing.take() {
            self.emit(Event::Closed);
            let _ = c.send(());
        }
    }

    /// Takes commands while disconnected, for `delay`. False when told to close.
    async fn wait_offline(&mut self, delay: Duration) -> bool {
        let until = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                cmd = self.cmd_rx.recv() => match cmd {
                    None => return false,
                    Some(c) => if !self.command(c, None) { return false },
                }
            }
        }
    }

    /// Handles a command; false when the loop must stop.
    fn command(&mut self, cmd: Command, writer: Option<&mpsc::UnboundedSender<Bytes>>) -> bool {
        match cmd {
            Command::Send(msg, tx) => {
                self.send_waiters.insert(msg.client_msg_id.clone(), tx);
                self.engine.send(msg);
                if self.config.persist_outbox {
                    self.save_pending = true;
                }
            }
            Command::Request(body, tx) => {
                match writer.and_then(|_| self.engine.request(body.clone())) {
                    Some(id) => {
                        self.request_waiters.insert(id, tx);
                    }
                    None => self.queued_requests.push_back((body, tx)),
                }
            }
            Command::Close(tx) => {
                self.engine.flush_ack();
                if let Some(w) = writer {
                    while let Some(f) = self.engine.poll_transmit() {
                        let _ = w.send(encode_frame(&f));
                    }
                }
                self.closing = Some(tx);
                return false;
            }
        }
        true
    }

    async fn connect_and_auth(
        &mut self,
    ) -> Result<
        (
            crate::connect::FrameReader,
            BoxWrite,
            crate::connect::ConnectionGuard,
            Transport,
        ),
        End,
    > {
        let mode = match (self.config.transport, self.preferred) {
            (TransportMode::Auto, Some(Transport::Tcp)) => TransportMode::Tcp,
            (m, _) => m,
        };
        let conn = match connect_mode(
            self.config.server,
            self.config.quic_server,
            &self.opts,
            mode,
            self.config.quic_deadline,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                if mode == TransportMode::Tcp && self.config.transport == TransportMode::Auto {
                    self.preferred = None; // try QUIC again next time
                }
                return Err(End::Retry(e.to_string()));
            }
        };
        let transport = conn.transport;
        if self.config.transport == TransportMode::Auto {
            self.preferred = Some(transport);
        }
        let (mut reader, mut writer, guard) = conn.into_split();
        let creds = self.config.credentials.clone();
        let mut tried_token = false;
        let login = loop {
            let body = match (&self.token, &creds.password) {
                (Some(t), _) if !tried_token => {
                    tried_token = true;
                    Body::Resume(pb::Resume {
                        protocol_version: PROTOCOL_VERSION,
                        token: t.clone(),
                    })
                }
                (_, Some(pw)) => Body::Login(pb::Login {
                    protocol_version: PROTOCOL_VERSION,
                    username: creds.username.clone(),
                    password: pw.clone(),
                    device: creds.device.clone(),
                }),
                (_, None) => {
                    self.emit(Event::AuthLost {
                        code: ErrorCode::InvalidToken,
                        message: "no valid token and no password: log in again".into(),
                    });
                    return Err(End::Stop);
                }
            };
            let frame = encode_frame(&Frame {
                req_id: u64::MAX,
                body: Some(body),
            });
            if writer.write_all(&frame).await.is_err() || writer.flush().await.is_err() {
                return Err(End::Retry("connection lost during login".into()));
            }
            let resp = loop {
                match tokio::time::timeout(Duration::from_secs(15), reader.next()).await {
                    Err(_) => return Err(End::Retry("no answer to login".into())),
                    Ok(Some(Ok(Ok(f)))) if f.req_id == u64::MAX => break f,
                    Ok(Some(Ok(Ok(_)))) => continue,
                    _ => return Err(End::Retry("connection lost during login".into())),
                }
            };
            match body_result(resp) {
                Ok(Body::LoginOk(ok)) => break ok,
                Ok(other) => {
                    return Err(End::Retry(format!(
                        "unexpected {}",
                        tern_proto::body_name(&other)
                    )))
                }
                Err(ClientError::Server { code, message }) => match code {
                    ErrorCode::InvalidToken | ErrorCode::TokenExpired | ErrorCode::TokenRevoked
                        if creds.password.is_some() =>
                    {
                        self.token = None;
                        continue;
                    }
                    ErrorCode::InvalidCredentials
                    | ErrorCode::InvalidToken
                    | ErrorCode::TokenExpired
                    | ErrorCode::TokenRevoked
                    | ErrorCode::InvalidArgument
                    | ErrorCode::UnsupportedVersion => {
                        self.token = None;
                        self.emit(Event::AuthLost { code, message });
                        return Err(End::Stop);
                    }
                    _ => return Err(End::Retry(message)),
                },
                Err(e) => return Err(End::Retry(e.to_string())),
            }
        };
        self.token = Some(login.token.clone());
        self.engine
            .set_window((login.max_pending as usize / 2).max(1));
        self.engine.on_connected(&login.store_epoch);
        self.save();
        self.emit(Event::Connected {
            transport,
            username: login.username.clone(),
            device: login.device.clone(),
        });
        self.heartbeat = Duration::from_secs(login.heartbeat_secs.max(1) as u64);
        Ok((reader, writer, guard, transport))
    }

    async fn serve(
        &mut self,
        mut reader: crate::connect::FrameReader,
        writer: BoxWrite,
        _t: Transport,
    ) -> End {
        let (wtx, wrx) = mpsc::unbounded_channel::<Bytes>();
        let writer_task = tokio::spawn(write_loop(writer, wrx));
        // Requests made while offline go out now.
        while let Some((body, tx)) = self.queued_requests.pop_front() {
            match self.engine.request(body) {
                Some(id) => {
                    self.request_waiters.insert(id, tx);
                }
                None => {
                    let _ = tx.send(Err(ClientError::ConnectionLost));
                }
            }
        }
        let hb = self.heartbeat;
        let mut ping = tokio::time::interval(hb);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_rx = Instant::now();
        let end = loop {
            // What the app should see; then save (a new outbox entry is on disk before it
            // is sent); then send what the engine wants sent.
            self.drain_events();
            if self.engine.take_cursors_dirty() {
                self.save_pending = true;
            }
            if self.save_pending
                && (self.config.persist_outbox
                    || self.last_save.elapsed() > Duration::from_millis(250))
            {
                self.save();
            }
            while let Some(f) = self.engine.poll_transmit() {
                if wtx.send(encode_frame(&f)).is_err() {
                    break;
                }
            }
            let timeout = self.engine.poll_timeout();
            let sleep_until = timeout
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                cmd = self.cmd_rx.recv() => {
                    let Some(cmd) = cmd else { break End::Stop };
                    if !self.command(cmd, Some(&wtx)) {
                        break End::Stop;
                    }
                }
                item = reader.next() => {
                    last_rx = Instant::now();
                    match item {
                        Some(Ok(Ok(f))) => {
                            if let Some(Body::Closing(c)) = &f.body {
                                match CloseReason::try_from(c.reason).unwrap_or(CloseReason::Unspecified) {
                                    CloseReason::Replaced => {
                                        self.emit(Event::Replaced);
                                        break End::Stop;
                                    }
                                    CloseReason::Revoked | CloseReason::LoggedOut => {
                                        self.token = None;
                                        self.emit(Event::AuthLost { code: ErrorCode::TokenRevoked, message: c.message.clone() });
                                        break End::Stop;
                                    }
                                    _ => break End::Retry(format!("server closed: {}", c.message)),
                                }
                            }
                            self.engine.handle_frame(f, Instant::now());
                        }
                        Some(Ok(Err(e))) => break End::Retry(format!("undecodable frame from server: {e}")),
                        Some(Err(e)) => break End::Retry(e.to_string()),
                        None => break End::Retry("connection closed by server".into()),
                    }
                }
                _ = tokio::time::sleep_until(sleep_until) => {
                    self.engine.handle_timeout(Instant::now());
                }
                _ = ping.tick() => {
                    if last_rx.elapsed() > hb * 3 + Duration::from_secs(2) {
                        break End::Retry("server silent for 3 heartbeats".into());
                    }
                    let _ = wtx.send(encode_frame(&Frame { req_id: 0, body: Some(Body::Ping(pb::Ping::default())) }));
                }
            }
        };
        // Deliver anything the last frames produced, then let the writer finish.
        self.drain_events();
        drop(wtx);
        let _ = tokio::time::timeout(Duration::from_secs(2), writer_task).await;
        end
    }

    fn drain_events(&mut self) {
        while let Some(ev) = self.engine.poll_event() {
            match ev {
                EngineEvent::Message { message, own } => self.emit(Event::Message { message, own }),
                EngineEvent::Acked(ack) => {
                    if let Some(w) = self.send_waiters.remove(&ack.client_msg_id) {
                        let _ = w.send(Ok(ack.clone()));
                    }
                    if self.config.persist_outbox {
                        self.save_pending = true;
                    }
                    self.emit(Event::Acked(ack));
                }
                EngineEvent::SendFailed {
                    client_msg_id,
                    code,
                    message,
                } => {
                    if let Some(w) = self.send_waiters.remove(&client_msg_id) {
                        let _ = w.send(Err(ClientError::Server {
                            code,
                            message: message.clone(),
                        }));
                    }
                    self.emit(Event::SendFailed {
                        client_msg_id,
                        code,
                        message,
                    });
                }
                EngineEvent::CaughtUp => self.emit(Event::CaughtUp),
                EngineEvent::Response(f) => {
                    if let Some(w) = self.request_waiters.remove(&f.req_id) {
                        let _ = w.send(body_result(f));
                    }
                }
            }
        }
    }
}

async fn write_loop(mut w: BoxWrite, mut rx: mpsc::UnboundedReceiver<Bytes>) {
    let mut buf = BytesMut::new();
    while let Some(first) = rx.recv().await {
        buf.extend_from_slice(&first);
        while buf.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(b) => buf.extend_from_slice(&b),
                Err(_) => break,
            }
        }
        if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
            return;
        }
        buf.clear();
    }
    let _ = w.shutdown().await;
}
