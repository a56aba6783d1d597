//! The client's protocol logic as a sans-IO state machine: no sockets, no clocks of its
//! own, in the style of quinn-proto's `Connection`. The event loop
//! ([`client`](crate::client)) only moves bytes and keeps one timer: it feeds the engine
//! what happened (`handle_connect`, `handle_frame`, `handle_timeout`,
//! `handle_connection_lost`, each with the time `now`), then drains what the engine wants:
//! frames to send ([`Engine::poll_transmit`]), events for the app
//! ([`Engine::poll_event`]), answers to app requests ([`Engine::poll_response`]), when to
//! wake it next ([`Engine::poll_timeout`]) and whether to end the connection
//! ([`Engine::poll_disconnect`]).
//!
//! The parts, one file each:
//! - [`auth`]: what to send first on a new connection (Resume with the saved token, else
//!   Login with the password) and what each login error means (log in with the password,
//!   give up, or try again later).
//! - [`keepalive`]: a `Ping` every heartbeat; a server silent for
//!   [`liveness_timeout`](keepalive::liveness_timeout) is dead.
//! - [`close`]: what a `Closing` from the server means (stop for good, or reconnect and
//!   when), and why a connection ended.
//! - [`outbox`]: every send has one client_msg_id for life; unacknowledged sends are sent
//!   again, in their original order, on every new connection, within a window. A retry
//!   can never make a second message (the server dedups on the id).
//! - [`inbox`]: messages reach the app once each and in order: by inbox seq (one cursor
//!   for 1:1 and small groups) and by per-conversation seq (read-diffusion groups). A hole
//!   is buffered around and repaired with a Sync (inbox) or a Pull (conversation) of
//!   exactly the missing range.
//!   What a delivered message changes (an EDIT or RECALL entry, a tombstone) is told to
//!   the app right after it as an [`Event::Edited`], [`Event::Recalled`],
//!   [`Event::Expired`] or [`Event::Hidden`]; the entry itself stays an ordinary inbox
//!   item (delivered, deduplicated and acked like any message).
//! - [`acks`]: cumulative, batched (every `ACK_EVERY` messages or after `ACK_DELAY`).
//!
//! What it guarantees on top of the server's rules is in docs/PROTOCOL.md, section 8.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Instant;

use tern_proto::{Body, Frame};

pub mod acks;
pub mod auth;
pub mod close;
pub mod inbox;
pub mod keepalive;
pub mod outbox;
pub mod recovery;
#[cfg(test)]
mod tests;

pub use crate::event::Event;
pub use acks::{ACK_DELAY, ACK_EVERY};
pub use auth::{AuthAction, Credentials, AUTH_TIMEOUT};
pub use close::Disconnect;
pub use outbox::{Outgoing, Target, RETRY_DELAY};

/// The engine's events are the app's [`Event`]s; the old name, kept for callers.
pub type EngineEvent = Event;

/// Cursors that survive restarts (see [`state`](crate::state)).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cursors {
    /// Random id of the server's data; cursors from another epoch are void.
    pub store_epoch: String,
    /// Highest contiguous inbox seq delivered to the app.
    pub inbox: u64,
    /// Per read-diffusion conversation: highest contiguous seq delivered.
    pub conversations: BTreeMap<String, u64>,
    /// Per conversation (any kind): highest seq delivered to the app. Nothing at or below
    /// it is delivered again; a recovery from CURSOR_TRIMMED pulls from it
    /// ([`recovery`]).
    pub delivered: BTreeMap<String, u64>,
}

/// What a request in flight on this connection was.
#[derive(Debug)]
enum InFlight {
    Send(String),
    Sync,
    Pull(String),
    /// A recovery's ListConversations / Pull ([`recovery`]).
    RecoveryList,
    RecoveryPull(String),
    Ping,
    App,
}

pub struct Engine {
    user: String,
    /// False for a send-only client: no sync, pushes ignored, nothing acked.
    receive: bool,
    /// Most sends in flight at once on a connection (keeps within the server's
    /// max_pending, so the server never stops reading from us).
    window: usize,
    next_req: u64,
    /// Authenticated on the current connection.
    connected: bool,
    outbox: VecDeque<outbox::Pending>,
    in_flight: HashMap<u64, InFlight>,
    transmit: VecDeque<Frame>,
    events: VecDeque<Event>,
    responses: VecDeque<Frame>,
    cursors: Cursors,
    buffered: BTreeMap<u64, tern_proto::pb::Message>,
    syncing: bool,
    read_diffusion: HashSet<String>,
    follows: HashMap<String, inbox::ConvFollow>,
    /// Rebuilding after a CURSOR_TRIMMED (no Sync meanwhile).
    recovery: Option<recovery::Recovery>,
    acked_sent: u64,
    ack_due: Option<Instant>,
    cursors_dirty: bool,
    /// Exactly once to the app ([`Engine::require_confirm`]): what the app has confirmed.
    confirm: Option<inbox::Confirm>,
    auth: auth::Auth,
    keepalive: Option<keepalive::KeepAlive>,
    disconnect: Option<Disconnect>,
    /// Wall-clock time (Unix ms) from [`Engine::set_now_ms`], for send TTLs; 0 = unknown.
    now_ms: u64,
    /// After a retryable send refusal: no send goes out before this (then the outbox
    /// goes again from its oldest entry, in order).
    send_paused_until: Option<Instant>,
}

impl Engine {
    pub fn new(user: &str, cursors: Cursors, outbox: Vec<Outgoing>) -> Self {
        let follows = cursors
            .conversations
            .iter()
            .map(|(c, s)| {
                (
                    c.clone(),
                    inbox::ConvFollow {
                        cursor: *s,
                        ..Default::default()
                    },
                )
            })
            .collect();
        Self {
            user: user.to_string(),
            receive: true,
            window: 128,
            next_req: 1,
            connected: false,
            outbox: outbox.into_iter().map(outbox::Pending::new).collect(),
            in_flight: HashMap::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            responses: VecDeque::new(),
            acked_sent: cursors.inbox,
            read_diffusion: cursors.conversations.keys().cloned().collect(),
            cursors,
            buffered: BTreeMap::new(),
            syncing: false,
            follows,
            recovery: None,
            ack_due: None,
            cursors_dirty: false,
            confirm: None,
            auth: auth::Auth::default(),
            keepalive: None,
            disconnect: None,
            now_ms: 0,
            send_paused_until: None,
        }
    }

    /// A fresh non-zero req_id (docs/PROTOCOL.md, "req_id rules").
    fn req_id(&mut self) -> u64 {
        let id = self.next_req;
        self.next_req += 1;
        id
    }

    pub fn cursors(&self) -> &Cursors {
        &self.cursors
    }

    /// True once since the last call if the cursors moved (time to persist them).
    pub fn take_cursors_dirty(&mut self) -> bool {
        std::mem::take(&mut self.cursors_dirty)
    }

    pub fn outbox(&self) -> Vec<Outgoing> {
        self.outbox.iter().map(|p| p.msg.clone()).collect()
    }

    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Authenticated on the current connection.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// A client that only sends and makes requests: it neither syncs nor delivers
    /// incoming messages, so its cursors never move.
    pub fn set_receive(&mut self, receive: bool) {
        self.receive = receive;
    }

    /// Sets how many sends may be in flight at once (from LoginOk.max_pending).
    pub fn set_window(&mut self, window: usize) {
        self.window = window.max(1);
    }

    /// Sends an app request (history, groups, presence…) on the live connection; its
    /// response comes back from [`Engine::poll_response`] with the returned req_id.
    pub fn request(&mut self, body: Body) -> Option<u64> {
        if !self.connected {
            return None;
        }
        let id = self.req_id();
        self.in_flight.insert(id, InFlight::App);
        self.transmit.push_back(Frame {
            req_id: id,
            body: Some(body),
        });
        Some(id)
    }

    /// Authenticated on a new connection: `store_epoch` from LoginOk. Syncs what was
    /// missed, then resends the whole outbox in order. (Called by the engine itself on
    /// LoginOk; call it directly when authenticating outside the engine.)
    pub fn on_connected(&mut self, store_epoch: &str) {
        if self.cursors.store_epoch != store_epoch {
            // Another server's data (or a first start): old cursors mean nothing here.
            if !self.cursors.store_epoch.is_empty() {
                self.buffered.clear();
                self.follows.clear();
                self.read_diffusion.clear();
                self.cursors.inbox = 0;
                self.cursors.conversations.clear();
                self.cursors.delivered.clear();
                self.acked_sent = 0;
                if let Some(c) = &mut self.confirm {
                    *c = inbox::Confirm::default();
                }
            }
            self.cursors.store_epoch = store_epoch.to_string();
            self.cursors_dirty = true;
        }
        self.connected = true;
        self.in_flight.clear();
        self.syncing = false;
        self.recovery = None;
        for f in self.follows.values_mut() {
            f.pulling = false;
        }
        self.start_sync();
        for p in &mut self.outbox {
            p.req_id = None;
        }
        // A new connection has no fence: the outbox goes again at once, in order.
        self.send_paused_until = None;
        self.fill_window();
    }

    /// The connection is gone: nothing is in flight any more. App requests in flight
    /// are answered with their req_ids so the caller can fail them.
    pub fn on_disconnected(&mut self) -> Vec<u64> {
        self.connected = false;
        self.auth.on_disconnected();
        self.keepalive = None;
        self.transmit.clear();
        let lost = self
            .in_flight
            .iter()
            .filter(|(_, w)| matches!(w, InFlight::App))
            .map(|(id, _)| *id)
            .collect();
        self.in_flight.clear();
        for p in &mut self.outbox {
            p.req_id = None;
        }
        lost
    }

    /// Handles one frame from the server.
    pub fn handle_frame(&mut self, frame: Frame, now: Instant) {
        if let Some(k) = &mut self.keepalive {
            k.on_receive(now);
        }
        if let Some(Body::Closing(c)) = &frame.body {
            self.on_closing(c);
            return;
        }
        if self.auth.is_pending() {
            self.on_auth_frame(frame, now);
            return;
        }
        let Some(body) = frame.body else { return };
        if frame.req_id == 0 {
            if !self.receive {
                return;
            }
            // Pushes this engine does not know (a newer server's) arrive as an unknown
            // body (decoded as none) or a variant not listed here: ignored, as
            // docs/PROTOCOL.md asks of old clients.
            match body {
                Body::Push(p) => {
                    if let Some(m) = p.message {
                        if p.inbox_seq == 0 {
                            self.conv_item(m);
                        } else {
                            self.inbox_item(p.inbox_seq, m, now);
                        }
                    }
                }
                Body::ReadReceipt(r) => self.events.push_back(Event::Read {
                    own: r.user == self.user,
                    conversation: r.conversation,
                    user: r.user,
                    read_seq: r.read_seq,
                }),
                Body::SettingsChanged(s) => self.events.push_back(Event::SettingsChanged {
                    conversation: s.conversation,
                    muted: s.muted,
                    pinned: s.pinned,
                }),
                Body::TypingEvent(t) => self.events.push_back(Event::Typing {
                    conversation: t.conversation,
                    user: t.user,
                    typing: t.typing,
                    expires_ms: t.expires_ms,
                }),
                Body::MessageHidden(h) => self.events.push_back(Event::Hidden {
                    conversation: h.conversation,
                    seq: h.seq,
                }),
                Body::PresenceEvent(p) => self.events.push_back(Event::Presence {
                    user: p.user,
                    online: p.online,
                    server_time_ms: p.server_time_ms,
                }),
                Body::ProfileChanged(tern_proto::pb::ProfileChanged {
                    profile: Some(profile),
                }) => self.events.push_back(Event::ProfileChanged(profile)),
                _ => {}
            }
            return;
        }
        let Some(what) = self.in_flight.remove(&frame.req_id) else {
            return; // an Ack's Ok, or a response from before a reconnect
        };
        let catch_up = matches!(
            what,
            InFlight::Sync | InFlight::Pull(_) | InFlight::RecoveryList | InFlight::RecoveryPull(_)
        );
        match what {
            InFlight::Send(cmid) => self.on_send_response(cmid, body, now),
            InFlight::Sync => self.on_sync_response(body, now),
            InFlight::Pull(conv) => self.on_pull_response(conv, body),
            InFlight::RecoveryList => self.on_recovery_list(body, now),
            InFlight::RecoveryPull(conv) => self.on_recovery_pull(conv, body, now),
            InFlight::Ping => {} // the Pong: its arrival already counted as a sign of life
            InFlight::App => self.responses.push_back(Frame {
                req_id: frame.req_id,
                body: Some(body),
            }),
        }
        if catch_up
            && !self.syncing
            && self.recovery.is_none()
            && self.buffered.is_empty()
            && self
                .follows
                .values()
                .all(|f| !f.pulling && f.buffered.is_empty())
        {
            self.events.push_back(Event::CaughtUp);
        }
    }

    /// The next time [`Engine::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.ack_due,
            self.send_paused_until,
            self.auth.deadline(),
            self.keepalive.as_ref().map(|k| k.due()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.auth_timeout(now);
        if self.ack_due.is_some_and(|t| t <= now) {
            self.send_ack();
        }
        if !self.connected {
            return;
        }
        self.keepalive_timeout(now);
        if self.send_paused_until.is_some_and(|t| t <= now) {
            self.send_paused_until = None;
        }
        self.fill_window();
    }

    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<Frame> {
        self.transmit.pop_front()
    }

    /// The next event for the app.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next answer to an [`Engine::request`] (its frame carries the req_id).
    pub fn poll_response(&mut self) -> Option<Frame> {
        self.responses.pop_front()
    }

    /// Set once the engine wants the connection ended; taken by the caller, who closes
    /// it and then calls [`Engine::on_disconnected`].
    pub fn poll_disconnect(&mut self) -> Option<Disconnect> {
        self.disconnect.take()
    }
}
