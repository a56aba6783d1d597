//! The client's task: I/O and timers only. It connects, hands the connection to the
//! [`Engine`] (`handle_connect`, which sends Login or Resume), then moves frames both
//! ways, sleeps until the engine's [`poll_timeout`](Engine::poll_timeout), takes the
//! handle's commands, resolves their waiters from the engine's events and responses, and
//! persists state. When the engine (or the transport) ends the connection it backs off
//! and reconnects, or stops.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use rand::Rng;
use tern_proto::encode_frame;
use tern_proto::pb;
use tern_proto::Body;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use super::{
    body_result, connect_mode, now_ms, ClientConfig, ClientError, Command, ConfirmMode, Event,
    TransportMode,
};
use crate::connect::{BoxWrite, ConnectOptions, Connection, Transport};
use crate::engine::{Disconnect, Engine};
use crate::state::SavedState;

pub(super) struct EventLoop {
    config: ClientConfig,
    opts: ConnectOptions,
    cmd_rx: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    engine: Engine,
    /// `Auto` remembers the transport that worked.
    preferred: Option<Transport>,
    send_waiters: HashMap<String, oneshot::Sender<Result<pb::SendAck, ClientError>>>,
    request_waiters: HashMap<u64, oneshot::Sender<Result<Body, ClientError>>>,
    queued_requests: VecDeque<(Body, oneshot::Sender<Result<Body, ClientError>>)>,
    closing: Option<oneshot::Sender<()>>,
    stop: tokio_util::sync::CancellationToken,
    /// Reconnect attempts since the last successful login.
    attempt: u32,
    last_save: Instant,
    save_pending: bool,
}

impl EventLoop {
    pub(super) fn new(
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
        if config.confirm != ConfirmMode::Delivered {
            engine.require_confirm();
        }
        engine.set_credentials(config.credentials.clone(), saved.token);
        Self {
            opts,
            cmd_rx,
            events,
            engine,
            preferred: None,
            send_waiters: HashMap::new(),
            request_waiters: HashMap::new(),
            queued_requests: VecDeque::new(),
            closing: None,
            stop,
            attempt: 0,
            last_save: Instant::now(),
            save_pending: false,
            config,
        }
    }

    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    /// The state to save, with these cursors.
    fn state_with(&self, cursors: crate::engine::Cursors) -> SavedState {
        SavedState {
            token: self.engine.token().map(str::to_string),
            cursors,
            outbox: if self.config.persist_outbox {
                self.engine.outbox()
            } else {
                Vec::new()
            },
        }
    }

    fn save(&mut self) {
        // With a confirm mode, only as far as the app (or the store) confirmed.
        let state = self.state_with(self.engine.durable_cursors());
        if let Err(e) = self.config.store.save(&state) {
            tracing::warn!(error = %e, "could not save client state");
        }
        self.last_save = Instant::now();
        self.save_pending = false;
    }

    pub(super) async fn run(mut self) {
        loop {
            let stop = self.stop.clone();
            let connected = tokio::select! {
                r = self.connect() => Some(r),
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
                Ok(conn) => self.serve(conn).await,
                Err(reason) => Disconnect::Retry {
                    reason,
                    retry_after: Duration::ZERO,
                },
            };
            for id in self.engine.on_disconnected() {
                if let Some(w) = self.request_waiters.remove(&id) {
                    let _ = w.send(Err(ClientError::ConnectionLost));
                }
            }
            self.save();
            let (reason, retry_after) = match end {
                Disconnect::Stop => break,
                Disconnect::Retry {
                    reason,
                    retry_after,
                } => (reason, retry_after),
            };
            self.attempt += 1;
            let delay = backoff(
                self.attempt,
                self.config.initial_backoff,
                self.config.max_backoff,
                retry_after,
            );
            self.emit(Event::Reconnecting {
                reason,
                attempt: self.attempt,
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
    /// Sends whose TTL passes meanwhile are dropped and reported at once.
    async fn wait_offline(&mut self, delay: Duration) -> bool {
        let until = tokio::time::Instant::now() + delay;
        loop {
            self.expire_outbox();
            let wake = self.expiry_wake().map_or(until, |t| t.min(until));
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => if wake == until { return true },
                cmd = self.cmd_rx.recv() => match cmd {
                    None => return false,
                    Some(c) => if !self.command(c, None) { return false },
                }
            }
        }
    }

    /// Drops the outbox entries whose TTL has passed (reported as `SendExpired`, their
    /// tickets resolved).
    fn expire_outbox(&mut self) {
        self.engine.set_now_ms(now_ms());
        self.engine.expire_outbox();
        self.drain_events();
        if self.save_pending {
            self.save();
        }
    }

    /// When the next outbox entry's TTL ends, as a timer deadline.
    fn expiry_wake(&self) -> Option<tokio::time::Instant> {
        let end = self.engine.next_expiry_ms()?;
        let left = Duration::from_millis(end.saturating_sub(now_ms()));
        Some(tokio::time::Instant::now() + left)
    }

    /// Handles a command; false when the loop must stop.
    fn command(&mut self, cmd: Command, writer: Option<&mpsc::UnboundedSender<Bytes>>) -> bool {
        match cmd {
            Command::Send(msg, tx) => {
                self.engine.set_now_ms(now_ms());
                self.send_waiters.insert(msg.client_msg_id.clone(), tx);
                self.engine.send(*msg);
                if self.config.persist_outbox {
                    self.save_pending = true;
                }
            }
            Command::Request(body, tx) => {
                let body = *body;
                match writer.and_then(|_| self.engine.request(body.clone())) {
                    Some(id) => {
                        self.request_waiters.insert(id, tx);
                    }
                    None => self.queued_requests.push_back((body, tx)),
                }
            }
            Command::Confirm(conversation, seq, tx) => {
                self.engine.confirm(&conversation, seq, Instant::now());
                let _ = self.engine.take_cursors_dirty();
                self.save();
                let _ = tx.send(());
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

    /// Opens a transport (the mode `Auto` settled on, if it did).
    async fn connect(&mut self) -> Result<Connection, String> {
        let mode = match (self.config.transport, self.preferred) {
            (TransportMode::Auto, Some(Transport::Tcp)) => TransportMode::Tcp,
            (m, _) => m,
        };
        match connect_mode(
            self.config.server,
            self.config.quic_server,
            &self.opts,
            mode,
            self.config.quic_deadline,
        )
        .await
        {
            Ok(c) => {
                if self.config.transport == TransportMode::Auto {
                    self.preferred = Some(c.transport);
                }
                Ok(c)
            }
            Err(e) => {
                if mode == TransportMode::Tcp && self.config.transport == TransportMode::Auto {
                    self.preferred = None; // try QUIC again next time
                }
                Err(e.to_string())
            }
        }
    }

    /// Runs one connection, from Login/Resume to its end.
    async fn serve(&mut self, conn: Connection) -> Disconnect {
        let transport = conn.transport;
        let (mut reader, writer, guard) = conn.into_split();
        let (wtx, wrx) = mpsc::unbounded_channel::<Bytes>();
        let writer_task = tokio::spawn(write_loop(writer, wrx));
        self.engine.set_now_ms(now_ms());
        self.engine.handle_connect(transport, Instant::now());
        let end = loop {
            // What the app should see; then save (a new outbox entry is on disk before it
            // is sent); then send what the engine wants sent.
            self.drain_events();
            if let Some(d) = self.engine.poll_disconnect() {
                break d;
            }
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
            let sleep_until = self
                .engine
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .into_iter()
                .chain(self.expiry_wake())
                .min()
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                cmd = self.cmd_rx.recv() => {
                    let Some(cmd) = cmd else { break Disconnect::Stop };
                    if !self.command(cmd, Some(&wtx)) {
                        break Disconnect::Stop;
                    }
                }
                item = reader.next() => match item {
                    Some(Ok(Ok(f))) => {
                        self.engine.set_now_ms(now_ms());
                        self.engine.handle_frame(f, Instant::now());
                    }
                    Some(Ok(Err(e))) => {
                        break self
                            .engine
                            .handle_connection_lost(format!("undecodable frame from server: {e}"))
                    }
                    Some(Err(e)) => break self.engine.handle_connection_lost(e.to_string()),
                    None => {
                        break self
                            .engine
                            .handle_connection_lost("connection closed by server".into())
                    }
                },
                _ = tokio::time::sleep_until(sleep_until) => {
                    self.engine.set_now_ms(now_ms());
                    self.engine.expire_outbox();
                    self.engine.handle_timeout(Instant::now());
                }
            }
        };
        // Deliver anything the last frames produced, then let the writer finish.
        self.drain_events();
        drop(wtx);
        let _ = tokio::time::timeout(Duration::from_secs(2), writer_task).await;
        drop(guard);
        end
    }

    /// Hands the engine's events to the app, resolving the waiters they settle.
    fn drain_events(&mut self) {
        while let Some(f) = self.engine.poll_response() {
            if let Some(w) = self.request_waiters.remove(&f.req_id) {
                let _ = w.send(body_result(f));
            }
        }
        let mut events = Vec::new();
        while let Some(ev) = self.engine.poll_event() {
            events.push(ev);
        }
        if events.is_empty() {
            return;
        }
        self.commit_messages(&events);
        for ev in events {
            match &ev {
                Event::Acked(ack) => {
                    if let Some(w) = self.send_waiters.remove(&ack.client_msg_id) {
                        let _ = w.send(Ok(ack.clone()));
                    }
                    if self.config.persist_outbox {
                        self.save_pending = true;
                    }
                }
                Event::SendFailed {
                    client_msg_id,
                    code,
                    message,
                } => {
                    if let Some(w) = self.send_waiters.remove(client_msg_id) {
                        let _ = w.send(Err(ClientError::Server {
                            code: *code,
                            message: message.clone(),
                        }));
                    }
                }
                Event::SendExpired { client_msg_id, .. } => {
                    if let Some(w) = self.send_waiters.remove(client_msg_id) {
                        let _ = w.send(Err(ClientError::Expired {
                            client_msg_id: client_msg_id.clone(),
                        }));
                    }
                    if self.config.persist_outbox {
                        self.save_pending = true;
                    }
                }
                Event::Connected { .. } => {
                    // Logged in: the new token is saved before the app hears of it, and
                    // requests made while offline go out now.
                    self.attempt = 0;
                    self.save();
                    self.issue_queued_requests();
                }
                _ => {}
            }
            self.emit(ev);
        }
    }

    /// Hands the messages among `events` to a store that keeps them (or, with
    /// [`ConfirmMode::Store`], to any store) together with the cursors that cover them,
    /// in one write, before the app sees them. With `Store`, a successful write confirms
    /// them; a failed one leaves them unconfirmed (delivered again after a restart).
    fn commit_messages(&mut self, events: &[Event]) {
        let store_mode = self.config.confirm == ConfirmMode::Store;
        let keeps = self.config.store.keeps_messages();
        if !store_mode && !keeps {
            return;
        }
        if keeps {
            for ev in events {
                if let Event::Read {
                    conversation,
                    read_seq,
                    own: true,
                    ..
                } = ev
                {
                    if let Err(e) = self.config.store.record_read(conversation, *read_seq) {
                        tracing::warn!(error = %e, "could not keep the read position");
                    }
                }
            }
        }
        let messages: Vec<pb::Message> = events
            .iter()
            .filter_map(|e| match e {
                Event::Message { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect();
        if !messages.is_empty() {
            self.commit_batch(messages, store_mode);
        }
        if keeps {
            for ev in events {
                if let Event::Hidden { conversation, seq } = ev {
                    if let Err(e) = self.config.store.record_hidden(conversation, *seq) {
                        tracing::warn!(error = %e, "could not hide a kept message");
                    }
                }
            }
        }
    }

    /// [`EventLoop::commit_messages`] for the messages of one batch of events.
    fn commit_batch(&mut self, messages: Vec<pb::Message>, store_mode: bool) {
        let confirms: Vec<(String, u64)> = if store_mode {
            messages
                .iter()
                .map(|m| (m.conversation.clone(), m.seq))
                .collect()
        } else {
            Vec::new()
        };
        let state = self.state_with(self.engine.durable_cursors_if_confirmed(&confirms));
        match self.config.store.commit(&state, &messages) {
            Ok(()) => {
                let now = Instant::now();
                for (conversation, seq) in &confirms {
                    self.engine.confirm(conversation, *seq, now);
                }
                // What was just written is the whole state as it is now.
                let _ = self.engine.take_cursors_dirty();
                self.last_save = now;
                self.save_pending = false;
            }
            Err(e) => {
                tracing::warn!(error = %e, n = messages.len(), "could not keep messages");
            }
        }
    }

    fn issue_queued_requests(&mut self) {
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
    }
}

/// The delay before reconnect attempt `attempt` (1, 2, ...): `initial` doubling up to
/// `max`, then half of it fixed and half random, so a crowd of clients spreads out. Never
/// less than the server's `retry_after` (from `Closing`), plus up to 250 ms of jitter
/// when that is the longer wait (docs/PROTOCOL.md, "Close reasons").
fn backoff(attempt: u32, initial: Duration, max: Duration, retry_after: Duration) -> Duration {
    let base = initial.saturating_mul(1 << attempt.min(16).saturating_sub(1));
    let capped = base.min(max);
    let mut rng = rand::thread_rng();
    let jitter = rng.gen_range(0..=capped.as_millis() as u64 / 2);
    let delay = capped / 2 + Duration::from_millis(jitter);
    if retry_after > delay {
        retry_after + Duration::from_millis(rng.gen_range(0..=250))
    } else {
        delay
    }
}

/// Writes what the loop queues, many frames per write.
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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_on_half() {
        for _ in 0..100 {
            let d1 = backoff(1, 100 * MS, 5000 * MS, Duration::ZERO);
            assert!((50 * MS..=100 * MS).contains(&d1), "{d1:?}");
            let d3 = backoff(3, 100 * MS, 5000 * MS, Duration::ZERO);
            assert!((200 * MS..=400 * MS).contains(&d3), "{d3:?}");
            let d30 = backoff(30, 100 * MS, 5000 * MS, Duration::ZERO);
            assert!((2500 * MS..=5000 * MS).contains(&d30), "{d30:?}");
        }
    }

    #[test]
    fn backoff_waits_at_least_the_servers_retry_after() {
        for _ in 0..100 {
            let d = backoff(1, 100 * MS, 5000 * MS, 1000 * MS);
            assert!((1000 * MS..=1250 * MS).contains(&d), "{d:?}");
        }
    }
}
