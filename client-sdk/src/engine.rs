//! The client's delivery logic as a sans-IO state machine: no sockets, no clocks of its
//! own. The event loop in `client.rs` feeds it frames and the time, and drains what it
//! wants sent ([`Engine::poll_transmit`]) and what the app should see
//! ([`Engine::poll_event`]).
//!
//! What it guarantees on top of the server's rules (docs/PROTOCOL.md, section 8):
//! - Outbox: every send has one client_msg_id for life; unacknowledged sends are sent
//!   again, in their original order, on every new connection. A retry can never make a
//!   second message (the server dedups on the id).
//! - Receive: messages reach the app once each and in order: by inbox seq (one cursor for
//!   1:1 and small groups) and by per-conversation seq (read-diffusion groups). A hole
//!   is buffered around and repaired with a Sync (inbox) or a Pull (conversation) of
//!   exactly the missing range.
//! - Acks: cumulative, batched (every `ACK_EVERY` messages or after `ACK_DELAY`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tern_proto::pb::{self, ErrorCode};
use tern_proto::{Body, Frame};

/// Ack after this many new messages...
pub const ACK_EVERY: u64 = 50;
/// ...or this long after the first unacked one.
pub const ACK_DELAY: Duration = Duration::from_millis(300);
/// Retry delay for a send that failed with a transient error on a live connection.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// The 1:1 conversation with this user.
    User(String),
    /// An existing conversation (`g:…` or `d:…:…`).
    Conversation(String),
}

/// A message waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub client_msg_id: String,
    pub target: Target,
    pub body: Bytes,
    pub content_type: String,
}

impl Outgoing {
    fn to_frame(&self, req_id: u64) -> Frame {
        let (conversation, peer) = match &self.target {
            Target::User(u) => (String::new(), u.clone()),
            Target::Conversation(c) => (c.clone(), String::new()),
        };
        Frame {
            req_id,
            body: Some(Body::Send(pb::Send {
                client_msg_id: self.client_msg_id.clone(),
                conversation,
                peer,
                body: self.body.clone(),
                content_type: self.content_type.clone(),
            })),
        }
    }
}

/// What the app sees.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// A message, exactly once, in order per conversation. `own` when this user sent it
    /// (from this device or another).
    Message { message: pb::Message, own: bool },
    /// A send is durable on the server (`duplicate` when an earlier attempt had already
    /// landed).
    Acked(pb::SendAck),
    /// A send the server refused for good (not a member, no such user, invalid); it has
    /// left the outbox.
    SendFailed {
        client_msg_id: String,
        code: ErrorCode,
        message: String,
    },
    /// The response to a request the app made through the loop (not a send).
    Response(Frame),
    /// Everything the server had for this device when it was last asked has been
    /// delivered (after a Sync or Pull completes with no repair still running).
    CaughtUp,
}

/// Cursors that survive restarts (see `cursor.rs`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cursors {
    /// Random id of the server's data; cursors from another epoch are void.
    pub store_epoch: String,
    /// Highest contiguous inbox seq delivered to the app.
    pub inbox: u64,
    /// Per read-diffusion conversation: highest contiguous seq delivered.
    pub conversations: BTreeMap<String, u64>,
}

#[derive(Debug)]
enum InFlight {
    Send(String),
    Sync,
    Pull(String),
    App,
}

#[derive(Debug)]
struct Pending {
    msg: Outgoing,
    /// req_id of the attempt on the current connection, if sent on it.
    req_id: Option<u64>,
    retry_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct ConvFollow {
    cursor: u64,
    buffered: BTreeMap<u64, pb::Message>,
    pulling: bool,
}

pub struct Engine {
    user: String,
    /// False for a send-only client: no sync, pushes ignored, nothing acked.
    receive: bool,
    /// Most sends in flight at once on a connection (keeps within the server's
    /// max_pending, so the server never stops reading from us).
    window: usize,
    next_req: u64,
    connected: bool,
    outbox: VecDeque<Pending>,
    in_flight: HashMap<u64, InFlight>,
    transmit: VecDeque<Frame>,
    events: VecDeque<EngineEvent>,
    cursors: Cursors,
    buffered: BTreeMap<u64, pb::Message>,
    syncing: bool,
    read_diffusion: HashSet<String>,
    follows: HashMap<String, ConvFollow>,
    acked_sent: u64,
    ack_due: Option<Instant>,
    cursors_dirty: bool,
}

impl Engine {
    pub fn new(user: &str, cursors: Cursors, outbox: Vec<Outgoing>) -> Self {
        let follows = cursors
            .conversations
            .iter()
            .map(|(c, s)| {
                (
                    c.clone(),
                    ConvFollow {
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
            outbox: outbox
                .into_iter()
                .map(|msg| Pending {
                    msg,
                    req_id: None,
                    retry_at: None,
                })
                .collect(),
            in_flight: HashMap::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            acked_sent: cursors.inbox,
            read_diffusion: cursors.conversations.keys().cloned().collect(),
            cursors,
            buffered: BTreeMap::new(),
            syncing: false,
            follows,
            ack_due: None,
            cursors_dirty: false,
        }
    }

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

    /// Queues a message; it is sent now if connected (and the window allows), else on
    /// the next connection.
    pub fn send(&mut self, msg: Outgoing) {
        self.outbox.push_back(Pending {
            msg,
            req_id: None,
            retry_at: None,
        });
        self.fill_window();
    }

    /// Transmits unsent outbox entries, in order, while the window has room.
    fn fill_window(&mut self) {
        if !self.connected {
            return;
        }
        let mut in_flight = self.outbox.iter().filter(|p| p.req_id.is_some()).count();
        for i in 0..self.outbox.len() {
            if in_flight >= self.window {
                break;
            }
            if self.outbox[i].req_id.is_some() || self.outbox[i].retry_at.is_some() {
                continue;
            }
            let id = self.req_id();
            let p = &mut self.outbox[i];
            p.req_id = Some(id);
            self.transmit.push_back(p.msg.to_frame(id));
            self.in_flight
                .insert(id, InFlight::Send(p.msg.client_msg_id.clone()));
            in_flight += 1;
        }
    }

    /// Sends an app request (history, groups, presence…) on the live connection; its
    /// response comes back as [`EngineEvent::Response`] with the returned req_id.
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

    /// A new authenticated connection: `store_epoch` from LoginOk. Syncs what was
    /// missed, then resends the whole outbox in order.
    pub fn on_connected(&mut self, store_epoch: &str) {
        if self.cursors.store_epoch != store_epoch {
            // Another server's data (or a first start): old cursors mean nothing here.
            if !self.cursors.store_epoch.is_empty() {
                self.buffered.clear();
                self.follows.clear();
                self.read_diffusion.clear();
                self.cursors.inbox = 0;
                self.cursors.conversations.clear();
                self.acked_sent = 0;
            }
            self.cursors.store_epoch = store_epoch.to_string();
            self.cursors_dirty = true;
        }
        self.connected = true;
        self.in_flight.clear();
        self.syncing = false;
        for f in self.follows.values_mut() {
            f.pulling = false;
        }
        self.start_sync();
        for p in &mut self.outbox {
            p.req_id = None;
            p.retry_at = None;
        }
        self.fill_window();
    }

    /// The connection is gone: nothing is in flight any more. App requests in flight
    /// are answered with their req_ids so the caller can fail them.
    pub fn on_disconnected(&mut self) -> Vec<u64> {
        self.connected = false;
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

    fn start_sync(&mut self) {
        if self.syncing || !self.connected || !self.receive {
            return;
        }
        self.syncing = true;
        let id = self.req_id();
        self.in_flight.insert(id, InFlight::Sync);
        self.transmit.push_back(Frame {
            req_id: id,
            body: Some(Body::Sync(pb::Sync {
                after_inbox_seq: Some(self.cursors.inbox),
                limit: 500,
            })),
        });
    }

    fn start_pull(&mut self, conv: &str, until: u64) {
        if !self.connected {
            return;
        }
        let f = self.follows.entry(conv.to_string()).or_default();
        if f.pulling {
            return;
        }
        f.pulling = true;
        let after = f.cursor;
        let id = self.req_id();
        self.in_flight.insert(id, InFlight::Pull(conv.to_string()));
        self.transmit.push_back(Frame {
            req_id: id,
            body: Some(Body::Pull(pb::Pull {
                conversation: conv.to_string(),
                after_seq: after,
                until_seq: until,
                limit: 500,
                before_seq: 0,
            })),
        });
    }

    fn deliver(&mut self, message: pb::Message) {
        let own = message.sender == self.user;
        self.events.push_back(EngineEvent::Message { message, own });
    }

    /// An inbox item (from a push or a Sync page).
    fn inbox_item(&mut self, inbox_seq: u64, message: pb::Message, now: Instant) {
        if inbox_seq <= self.cursors.inbox {
            return; // already delivered
        }
        if inbox_seq > self.cursors.inbox + 1 {
            self.buffered.insert(inbox_seq, message);
            self.start_sync();
            return;
        }
        self.deliver(message);
        self.cursors.inbox = inbox_seq;
        while let Some(m) = self.buffered.remove(&(self.cursors.inbox + 1)) {
            self.deliver(m);
            self.cursors.inbox += 1;
        }
        // Anything left buffered below the cursor is stale.
        let cursor = self.cursors.inbox;
        self.buffered.retain(|s, _| *s > cursor);
        self.cursors_dirty = true;
        self.schedule_ack(now);
    }

    /// A message of a read-diffusion conversation (push with inbox_seq 0, or Pull).
    fn conv_item(&mut self, message: pb::Message) {
        let conv = message.conversation.clone();
        if self.read_diffusion.insert(conv.clone()) {
            self.cursors.conversations.entry(conv.clone()).or_insert(0);
        }
        let f = self.follows.entry(conv.clone()).or_default();
        let seq = message.seq;
        if seq <= f.cursor {
            return;
        }
        if seq > f.cursor + 1 {
            f.buffered.insert(seq, message);
            self.start_pull(&conv, seq - 1);
            return;
        }
        let mut out = vec![message];
        f.cursor = seq;
        while let Some(m) = f.buffered.remove(&(f.cursor + 1)) {
            f.cursor += 1;
            out.push(m);
        }
        let cursor = f.cursor;
        f.buffered.retain(|s, _| *s > cursor);
        self.cursors.conversations.insert(conv, cursor);
        self.cursors_dirty = true;
        for m in out {
            self.deliver(m);
        }
    }

    fn schedule_ack(&mut self, now: Instant) {
        if self.cursors.inbox >= self.acked_sent + ACK_EVERY {
            self.send_ack();
        } else if self.cursors.inbox > self.acked_sent && self.ack_due.is_none() {
            self.ack_due = Some(now + ACK_DELAY);
        }
    }

    fn send_ack(&mut self) {
        self.ack_due = None;
        if !self.connected || self.cursors.inbox <= self.acked_sent {
            return;
        }
        self.acked_sent = self.cursors.inbox;
        let id = self.req_id();
        // The Ok response needs no handling; an error only means it is sent again later.
        self.transmit.push_back(Frame {
            req_id: id,
            body: Some(Body::Ack(pb::Ack {
                inbox_seq: self.cursors.inbox,
            })),
        });
    }

    /// Acks everything delivered so far, now (e.g. before a clean exit).
    pub fn flush_ack(&mut self) {
        self.send_ack();
    }

    /// Handles one frame from the server.
    pub fn handle_frame(&mut self, frame: Frame, now: Instant) {
        let Some(body) = frame.body else { return };
        if frame.req_id == 0 {
            if !self.receive {
                return;
            }
            if let Body::Push(p) = body {
                if let Some(m) = p.message {
                    if p.inbox_seq == 0 {
                        self.conv_item(m);
                    } else {
                        self.inbox_item(p.inbox_seq, m, now);
                    }
                }
            }
            return;
        }
        let Some(what) = self.in_flight.remove(&frame.req_id) else {
            return; // an Ack's Ok, or a response from before a reconnect
        };
        let catch_up = matches!(what, InFlight::Sync | InFlight::Pull(_));
        self.handle_response(frame.req_id, what, body, now);
        if catch_up
            && !self.syncing
            && self.buffered.is_empty()
            && self
                .follows
                .values()
                .all(|f| !f.pulling && f.buffered.is_empty())
        {
            self.events.push_back(EngineEvent::CaughtUp);
        }
    }

    fn handle_response(&mut self, req_id: u64, what: InFlight, body: Body, now: Instant) {
        match (what, body) {
            (InFlight::Send(cmid), Body::SendAck(ack)) => {
                if let Some(i) = self.outbox.iter().position(|p| p.msg.client_msg_id == cmid) {
                    self.outbox.remove(i);
                }
                self.events.push_back(EngineEvent::Acked(ack));
                self.fill_window();
            }
            (InFlight::Send(cmid), Body::Error(e)) => {
                let code = ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Internal);
                let transient = matches!(
                    code,
                    ErrorCode::Internal
                        | ErrorCode::RateLimited
                        | ErrorCode::Unavailable
                        | ErrorCode::ResourceExhausted
                );
                if let Some(i) = self.outbox.iter().position(|p| p.msg.client_msg_id == cmid) {
                    if transient {
                        let p = &mut self.outbox[i];
                        p.req_id = None;
                        p.retry_at = Some(now + RETRY_DELAY);
                    } else {
                        self.outbox.remove(i);
                        self.events.push_back(EngineEvent::SendFailed {
                            client_msg_id: cmid,
                            code,
                            message: e.message,
                        });
                    }
                }
                self.fill_window();
            }
            (InFlight::Sync, Body::SyncResult(r)) => {
                self.syncing = false;
                for item in r.items {
                    if let Some(m) = item.message {
                        self.inbox_item(item.inbox_seq, m, now);
                    }
                }
                // Next page; or, if pushes above the head are still waiting on a hole,
                // one more sync as long as the last one made progress.
                let progressed = r.to_inbox_seq > r.from_inbox_seq;
                if !r.complete || (!self.buffered.is_empty() && progressed) {
                    self.start_sync();
                }
                for head in r.read_diffusion {
                    if self.read_diffusion.insert(head.conversation.clone()) {
                        self.cursors
                            .conversations
                            .entry(head.conversation.clone())
                            .or_insert(0);
                    }
                    let cursor = self
                        .follows
                        .get(&head.conversation)
                        .map(|f| f.cursor)
                        .unwrap_or(0);
                    if head.last_seq > cursor {
                        self.start_pull(&head.conversation, head.last_seq);
                    }
                }
            }
            (InFlight::Sync, _) => {
                // A failed sync is retried on the next gap or connection.
                self.syncing = false;
            }
            (InFlight::Pull(conv), Body::PullResult(r)) => {
                if let Some(f) = self.follows.get_mut(&conv) {
                    f.pulling = false;
                }
                for m in r.messages {
                    self.conv_item(m);
                }
                let f = self.follows.entry(conv.clone()).or_default();
                if f.cursor < r.last_seq && (!r.complete || !f.buffered.is_empty()) {
                    self.start_pull(&conv, 0);
                }
            }
            (InFlight::Pull(conv), _) => {
                if let Some(f) = self.follows.get_mut(&conv) {
                    f.pulling = false;
                }
            }
            (InFlight::App, body) => self.events.push_back(EngineEvent::Response(Frame {
                req_id,
                body: Some(body),
            })),
            (InFlight::Send(_), _) => {}
        }
    }

    /// The next time [`Engine::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retry = self.outbox.iter().filter_map(|p| p.retry_at).min();
        match (self.ack_due, retry) {
            (Some(a), Some(r)) => Some(a.min(r)),
            (a, r) => a.or(r),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ack_due.is_some_and(|t| t <= now) {
            self.send_ack();
        }
        if !self.connected {
            return;
        }
        for p in &mut self.outbox {
            if p.retry_at.is_some_and(|t| t <= now) {
                p.retry_at = None;
            }
        }
        self.fill_window();
    }

    pub fn poll_transmit(&mut self) -> Option<Frame> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<EngineEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(conv: &str, seq: u64, sender: &str) -> pb::Message {
        pb::Message {
            conversation: conv.into(),
            seq,
            sender: sender.into(),
            client_msg_id: format!("{sender}-{seq}"),
            ..Default::default()
        }
    }

    fn push(inbox_seq: u64, m: pb::Message) -> Frame {
        Frame {
            req_id: 0,
            body: Some(Body::Push(pb::MessagePush {
                message: Some(m),
                inbox_seq,
            })),
        }
    }

    fn out(id: &str) -> Outgoing {
        Outgoing {
            client_msg_id: id.into(),
            target: Target::User("bob".into()),
            body: Bytes::from_static(b"hi"),
            content_type: String::new(),
        }
    }

    fn drain_tx(e: &mut Engine) -> Vec<Frame> {
        std::iter::from_fn(|| e.poll_transmit()).collect()
    }

    fn delivered(e: &mut Engine) -> Vec<u64> {
        std::iter::from_fn(|| e.poll_event())
            .filter_map(|ev| match ev {
                EngineEvent::Message { message, .. } => Some(message.seq),
                _ => None,
            })
            .collect()
    }

    fn connected(user: &str) -> Engine {
        let mut e = Engine::new(user, Cursors::default(), vec![]);
        e.on_connected("ep");
        drain_tx(&mut e);
        // Answer the initial sync: nothing missed.
        e
    }

    fn sync_req_id(frames: &[Frame]) -> Option<(u64, u64)> {
        frames.iter().find_map(|f| match &f.body {
            Some(Body::Sync(s)) => Some((f.req_id, s.after_inbox_seq.unwrap())),
            _ => None,
        })
    }

    #[test]
    fn in_order_pushes_are_delivered_once() {
        let now = Instant::now();
        let mut e = connected("alice");
        for s in 1..=3 {
            e.handle_frame(push(s, msg("d:alice:bob", s, "bob")), now);
        }
        e.handle_frame(push(2, msg("d:alice:bob", 2, "bob")), now); // duplicate
        assert_eq!(delivered(&mut e), vec![1, 2, 3]);
        assert_eq!(e.cursors().inbox, 3);
    }

    #[test]
    fn a_gap_is_buffered_and_pulled_exactly() {
        let now = Instant::now();
        let mut e = Engine::new("alice", Cursors::default(), vec![]);
        e.on_connected("ep");
        let first_sync = sync_req_id(&drain_tx(&mut e)).unwrap();
        // The initial sync finds nothing.
        e.handle_frame(
            Frame {
                req_id: first_sync.0,
                body: Some(Body::SyncResult(pb::SyncResult {
                    complete: true,
                    ..Default::default()
                })),
            },
            now,
        );
        e.handle_frame(push(1, msg("d:a:b", 1, "bob")), now);
        // 2 and 3 are lost; 4 arrives.
        e.handle_frame(push(4, msg("d:a:b", 4, "bob")), now);
        assert_eq!(delivered(&mut e), vec![1], "4 waits for the hole");
        let (sync_id, after) = sync_req_id(&drain_tx(&mut e)).expect("a sync for the gap");
        assert_eq!(after, 1, "sync from the last contiguous seq");
        // A second gap while syncing does not start a second sync.
        e.handle_frame(push(6, msg("d:a:b", 6, "bob")), now);
        assert!(sync_req_id(&drain_tx(&mut e)).is_none());
        e.handle_frame(
            Frame {
                req_id: sync_id,
                body: Some(Body::SyncResult(pb::SyncResult {
                    items: (2..=4)
                        .map(|s| pb::InboxItem {
                            inbox_seq: s,
                            message: Some(msg("d:a:b", s, "bob")),
                        })
                        .collect(),
                    from_inbox_seq: 1,
                    to_inbox_seq: 4,
                    inbox_head: 6,
                    complete: false,
                    read_diffusion: vec![],
                })),
            },
            now,
        );
        assert_eq!(delivered(&mut e), vec![2, 3, 4]);
        let (_, after) = sync_req_id(&drain_tx(&mut e)).expect("next page");
        assert_eq!(after, 4);
    }

    #[test]
    fn outbox_resends_in_order_with_the_same_ids_after_reconnect() {
        let now = Instant::now();
        let mut e = connected("alice");
        for i in 0..5 {
            e.send(out(&format!("m{i}")));
        }
        let first: Vec<Frame> = drain_tx(&mut e);
        assert_eq!(first.len(), 5);
        // m0 and m1 are acked, then the connection drops.
        for f in &first[..2] {
            e.handle_frame(
                Frame {
                    req_id: f.req_id,
                    body: Some(Body::SendAck(pb::SendAck::default())),
                },
                now,
            );
        }
        e.on_disconnected();
        e.send(out("m5")); // queued while offline
        assert!(drain_tx(&mut e).is_empty(), "nothing is sent while offline");
        e.on_connected("ep");
        let resent: Vec<String> = drain_tx(&mut e)
            .into_iter()
            .filter_map(|f| match f.body {
                Some(Body::Send(s)) => Some(s.client_msg_id),
                _ => None,
            })
            .collect();
        assert_eq!(resent, vec!["m2", "m3", "m4", "m5"]);
        assert_eq!(e.outbox_len(), 4);
    }

    #[test]
    fn pipelined_sends_respect_the_window_and_keep_order() {
        let now = Instant::now();
        let mut e = connected("alice");
        e.set_window(3);
        for i in 0..5 {
            e.send(out(&format!("w{i}")));
        }
        let ids = |fs: Vec<Frame>| -> Vec<(u64, String)> {
            fs.into_iter()
                .filter_map(|f| match f.body {
                    Some(Body::Send(s)) => Some((f.req_id, s.client_msg_id)),
                    _ => None,
                })
                .collect()
        };
        let first = ids(drain_tx(&mut e));
        assert_eq!(
            first.iter().map(|x| x.1.as_str()).collect::<Vec<_>>(),
            vec!["w0", "w1", "w2"]
        );
        e.handle_frame(
            Frame {
                req_id: first[0].0,
                body: Some(Body::SendAck(pb::SendAck::default())),
            },
            now,
        );
        let next = ids(drain_tx(&mut e));
        assert_eq!(
            next.iter().map(|x| x.1.as_str()).collect::<Vec<_>>(),
            vec!["w3"]
        );
    }

    #[test]
    fn duplicate_acks_and_stale_responses_are_harmless() {
        let now = Instant::now();
        let mut e = connected("alice");
        e.send(out("x"));
        let f = drain_tx(&mut e).pop().unwrap();
        let ack = Frame {
            req_id: f.req_id,
            body: Some(Body::SendAck(pb::SendAck {
                client_msg_id: "x".into(),
                seq: 7,
                ..Default::default()
            })),
        };
        e.handle_frame(ack.clone(), now);
        e.handle_frame(ack, now); // same response twice: ignored
        let acks: Vec<_> = std::iter::from_fn(|| e.poll_event())
            .filter(|ev| matches!(ev, EngineEvent::Acked(_)))
            .collect();
        assert_eq!(acks.len(), 1);
        assert_eq!(e.outbox_len(), 0);
    }

    #[test]
    fn permanent_errors_leave_the_outbox_transient_ones_retry() {
        let now = Instant::now();
        let mut e = connected("alice");
        e.send(out("bad"));
        e.send(out("busy"));
        let f = drain_tx(&mut e);
        e.handle_frame(
            Frame {
                req_id: f[0].req_id,
                body: Some(Body::Error(pb::Error {
                    code: ErrorCode::Forbidden as i32,
                    message: "no".into(),
                    ..Default::default()
                })),
            },
            now,
        );
        e.handle_frame(
            Frame {
                req_id: f[1].req_id,
                body: Some(Body::Error(pb::Error {
                    code: ErrorCode::Internal as i32,
                    message: "flush".into(),
                    ..Default::default()
                })),
            },
            now,
        );
        assert!(matches!(
            e.poll_event(),
            Some(EngineEvent::SendFailed {
                code: ErrorCode::Forbidden,
                ..
            })
        ));
        assert_eq!(e.outbox_len(), 1);
        let due = e.poll_timeout().unwrap();
        e.handle_timeout(due);
        let retry = drain_tx(&mut e);
        assert!(matches!(&retry[0].body, Some(Body::Send(s)) if s.client_msg_id == "busy"));
    }

    #[test]
    fn acks_are_cumulative_and_batched() {
        let now = Instant::now();
        let mut e = connected("alice");
        e.handle_frame(push(1, msg("d:a:b", 1, "bob")), now);
        assert!(
            drain_tx(&mut e).is_empty(),
            "one message: wait for the timer"
        );
        let due = e.poll_timeout().unwrap();
        assert!(due > now);
        e.handle_timeout(due);
        let acks: Vec<u64> = drain_tx(&mut e)
            .into_iter()
            .filter_map(|f| match f.body {
                Some(Body::Ack(a)) => Some(a.inbox_seq),
                _ => None,
            })
            .collect();
        assert_eq!(acks, vec![1]);
        // ACK_EVERY messages at once: acked immediately, once, with the last seq.
        for s in 2..=(1 + ACK_EVERY) {
            e.handle_frame(push(s, msg("d:a:b", s, "bob")), now);
        }
        let acks: Vec<u64> = drain_tx(&mut e)
            .into_iter()
            .filter_map(|f| match f.body {
                Some(Body::Ack(a)) => Some(a.inbox_seq),
                _ => None,
            })
            .collect();
        assert_eq!(acks, vec![1 + ACK_EVERY]);
    }

    #[test]
    fn read_diffusion_gap_pulls_the_missing_range() {
        let now = Instant::now();
        let mut e = connected("alice");
        let g = "g:00000000000000aa";
        e.handle_frame(push(0, msg(g, 1, "bob")), now);
        e.handle_frame(push(0, msg(g, 4, "bob")), now);
        assert_eq!(delivered(&mut e), vec![1]);
        let pull = drain_tx(&mut e)
            .into_iter()
            .find_map(|f| match f.body {
                Some(Body::Pull(p)) => Some((f.req_id, p)),
                _ => None,
            })
            .expect("a pull");
        assert_eq!((pull.1.after_seq, pull.1.until_seq), (1, 3));
        e.handle_frame(
            Frame {
                req_id: pull.0,
                body: Some(Body::PullResult(pb::PullResult {
                    conversation: g.into(),
                    messages: vec![msg(g, 2, "bob"), msg(g, 3, "bob")],
                    from_seq: 2,
                    to_seq: 3,
                    last_seq: 4,
                    complete: true,
                })),
            },
            now,
        );
        assert_eq!(delivered(&mut e), vec![2, 3, 4]);
        assert_eq!(e.cursors().conversations.get(g), Some(&4));
    }

    #[test]
    fn a_new_store_epoch_voids_old_cursors() {
        let cursors = Cursors {
            store_epoch: "old".into(),
            inbox: 42,
            conversations: [("g:1".to_string(), 9)].into_iter().collect(),
        };
        let mut e = Engine::new("alice", cursors, vec![]);
        e.on_connected("new");
        assert_eq!(e.cursors().inbox, 0);
        assert!(e.cursors().conversations.is_empty());
        assert_eq!(sync_req_id(&drain_tx(&mut e)).unwrap().1, 0, "full resync");
    }

    #[test]
    fn caught_up_after_the_last_sync_page() {
        let now = Instant::now();
        let mut e = Engine::new("alice", Cursors::default(), vec![]);
        e.on_connected("ep");
        let (id, _) = sync_req_id(&drain_tx(&mut e)).unwrap();
        e.handle_frame(
            Frame {
                req_id: id,
                body: Some(Body::SyncResult(pb::SyncResult {
                    items: vec![pb::InboxItem {
                        inbox_seq: 1,
                        message: Some(msg("d:a:b", 1, "bob")),
                    }],
                    from_inbox_seq: 0,
                    to_inbox_seq: 1,
                    inbox_head: 2,
                    complete: false,
                    read_diffusion: vec![],
                })),
            },
            now,
        );
        let evs: Vec<_> = std::iter::from_fn(|| e.poll_event()).collect();
        assert!(!evs.contains(&EngineEvent::CaughtUp), "more pages to come");
        let (id, _) = sync_req_id(&drain_tx(&mut e)).unwrap();
        e.handle_frame(
            Frame {
                req_id: id,
                body: Some(Body::SyncResult(pb::SyncResult {
                    items: vec![pb::InboxItem {
                        inbox_seq: 2,
                        message: Some(msg("d:a:b", 2, "bob")),
                    }],
                    from_inbox_seq: 1,
                    to_inbox_seq: 2,
                    inbox_head: 2,
                    complete: true,
                    read_diffusion: vec![],
                })),
            },
            now,
        );
        let evs: Vec<_> = std::iter::from_fn(|| e.poll_event()).collect();
        assert_eq!(evs.last(), Some(&EngineEvent::CaughtUp));
    }

    #[test]
    fn a_send_only_engine_never_syncs_delivers_or_acks() {
        let now = Instant::now();
        let mut e = Engine::new("alice", Cursors::default(), vec![]);
        e.set_receive(false);
        e.on_connected("ep");
        e.send(out("s1"));
        let tx = drain_tx(&mut e);
        assert!(sync_req_id(&tx).is_none(), "no sync");
        assert_eq!(tx.len(), 1, "just the send");
        e.handle_frame(push(1, msg("d:a:b", 1, "bob")), now);
        assert!(e.poll_event().is_none());
        assert_eq!(e.cursors().inbox, 0);
        assert!(e.poll_timeout().is_none(), "no ack timer");
    }

    #[test]
    fn own_messages_are_marked() {
        let now = Instant::now();
        let mut e = connected("alice");
        e.handle_frame(push(1, msg("d:alice:bob", 1, "alice")), now);
        assert!(matches!(
            e.poll_event(),
            Some(EngineEvent::Message { own: true, .. })
        ));
    }
}
