//! [`ChatLoad`]: the chat workload the crash tests (tests/torture.rs, tests/powercut.rs)
//! run while they break the server, and the checker that judges what came out.
//!
//! Three SDK producers (QUIC, TLS-TCP, auto) send a steady stream alternating 1:1 (to two
//! receivers) and a group; a fourth producer sends over the WebSocket bridge with raw
//! frames ([`ChatLoad::ws_producer`]). Receiving devices: `tr0` on two devices (QUIC and
//! TLS-TCP), `tr1` on one, and every SDK producer's own client. [`ChatLoad::finish`]
//! stops the producers, waits (bounded) for every device to catch up, and returns a
//! [`Verdict`]: every problem found, not a panic, so a test can also prove that it
//! *detects* a loss (the power-cut test's switch-off run).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tern_proto::{pb, Body, Frame};
use tern_sdk::{Client, ClientConfig, Event, Target, TransportMode};
use tokio::task::JoinHandle;

use crate::{login_body, register_all, sdk_config, send_body};

pub const PRODUCERS: [&str; 3] = ["tp0", "tp1", "tp2"];
/// The producer that sends over the WebSocket bridge.
pub const WS_PRODUCER: &str = "tpw";
pub const RECEIVERS: [&str; 2] = ["tr0", "tr1"];

type Log = Arc<Mutex<Vec<pb::Message>>>;
/// (device name, [(seq, client_msg_id)]) of one conversation.
type DeviceLog = (String, Vec<(u64, String)>);

/// What the checker found. Empty `problems`: every promise held.
#[derive(Debug, Default)]
pub struct Verdict {
    pub acked: usize,
    pub delivered: usize,
    pub devices: usize,
    /// Acked messages that some member device never got (after the catch-up wait).
    pub lost: usize,
    pub problems: Vec<String>,
}

impl Verdict {
    /// Panics with every problem unless there is none.
    pub fn assert_clean(&self, what: &str) {
        assert!(
            self.problems.is_empty(),
            "{what}: {} problem(s) over {} acked sends:\n{}",
            self.problems.len(),
            self.acked,
            self.problems.join("\n")
        );
    }
}

fn device_config(
    addr: SocketAddr,
    ca: &Path,
    user: &str,
    dev: &str,
    mode: TransportMode,
) -> ClientConfig {
    let mut c = sdk_config(addr, ca, user, dev, mode);
    c.max_backoff = Duration::from_millis(400);
    c
}

/// A receiving device: logs every message event.
fn device(
    addr: SocketAddr,
    ca: &Path,
    user: &str,
    dev: &str,
    mode: TransportMode,
) -> (Client, Log) {
    let (client, mut events) = Client::start(device_config(addr, ca, user, dev, mode));
    let log: Log = Arc::default();
    let l = log.clone();
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            if let Event::Message { message, .. } = e {
                l.lock().unwrap().push(message);
            }
        }
    });
    (client, log)
}

pub struct ChatLoad {
    pub group: String,
    devices: Vec<(String, String, Client, Log)>,
    acked: Arc<Mutex<Vec<pb::SendAck>>>,
    sent: Arc<Mutex<HashSet<String>>>,
    /// Producers that never got an ack for a send (by client_msg_id).
    unacked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl ChatLoad {
    /// Registers the users, creates the group and starts the devices and SDK producers
    /// against the server at `addr` (its TLS-TCP address; QUIC is on the same port).
    pub async fn start(addr: SocketAddr, ca: &Path, period: Duration) -> Self {
        let everyone: Vec<&str> = PRODUCERS
            .iter()
            .chain([WS_PRODUCER].iter())
            .chain(RECEIVERS.iter())
            .copied()
            .collect();
        register_all(addr, ca, &everyone).await;
        let group = {
            let mut c = crate::Client::connect(crate::Tcp, addr, ca).await;
            c.login(PRODUCERS[0], "setup").await;
            c.create_group("chaos", &everyone[1..]).await.conversation
        };
        let mut load = ChatLoad {
            group,
            devices: Vec::new(),
            acked: Arc::default(),
            sent: Arc::default(),
            unacked: Arc::default(),
            stop: Arc::new(AtomicBool::new(false)),
            tasks: Vec::new(),
        };
        for (u, d, m) in [
            ("tr0", "phone", TransportMode::Quic),
            ("tr0", "laptop", TransportMode::Tcp),
            ("tr1", "phone", TransportMode::Auto),
        ] {
            let (c, l) = device(addr, ca, u, d, m);
            load.devices.push((u.into(), d.into(), c, l));
        }
        for (pi, p) in PRODUCERS.iter().enumerate() {
            let mode = [TransportMode::Quic, TransportMode::Tcp, TransportMode::Auto][pi];
            let (client, log) = device(addr, ca, p, "main", mode);
            load.devices
                .push((p.to_string(), "main".into(), client.clone(), log));
            let (acked, sent, unacked, stop, group) = (
                load.acked.clone(),
                load.sent.clone(),
                load.unacked.clone(),
                load.stop.clone(),
                load.group.clone(),
            );
            load.tasks.push(tokio::spawn(async move {
                let mut tickets = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = client
                        .send_with(
                            target(i, &group),
                            format!("{pi}-{i}").into_bytes().into(),
                            "",
                        )
                        .await
                        .unwrap();
                    sent.lock().unwrap().insert(t.client_msg_id.clone());
                    tickets.push(t);
                    i += 1;
                    tokio::time::sleep(period).await;
                }
                for t in tickets {
                    let cmid = t.client_msg_id.clone();
                    match tokio::time::timeout(Duration::from_secs(60), t).await {
                        Ok(Ok(ack)) => acked.lock().unwrap().push(ack),
                        _ => unacked.lock().unwrap().push(cmid),
                    }
                }
            }));
        }
        load
    }

    /// Starts the WebSocket producer: raw frames over `ws://ADDR/ws`, one send in flight,
    /// reconnecting (to whatever `ws_addr` holds then) and resending the same
    /// client_msg_id until it is acked, as a browser client following PROTOCOL.md would.
    pub fn ws_producer(&mut self, ws_addr: Arc<Mutex<SocketAddr>>, period: Duration) {
        let (acked, sent, unacked, stop, group) = (
            self.acked.clone(),
            self.sent.clone(),
            self.unacked.clone(),
            self.stop.clone(),
            self.group.clone(),
        );
        self.tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            let mut conn: Option<WsConn> = None;
            while !stop.load(Ordering::Relaxed) {
                let cmid = format!("ws-{i}");
                sent.lock().unwrap().insert(cmid.clone());
                let give_up = Instant::now() + Duration::from_secs(60);
                loop {
                    if conn.is_none() {
                        let addr = *ws_addr.lock().unwrap();
                        conn = WsConn::login(addr).await;
                    }
                    let ack = match conn.as_mut() {
                        Some(c) => c.send(target(i, &group), &cmid).await,
                        None => None,
                    };
                    match ack {
                        Some(a) => {
                            acked.lock().unwrap().push(a);
                            break;
                        }
                        None => conn = None,
                    }
                    if Instant::now() > give_up {
                        unacked.lock().unwrap().push(cmid);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                i += 1;
                tokio::time::sleep(period).await;
            }
        }));
    }

    /// Acked sends so far.
    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Stops the producers, waits up to `catch_up` for every device to hold every acked
    /// message of its conversations, and checks every device.
    pub async fn finish(self, catch_up: Duration) -> Verdict {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        let sent = self.sent.lock().unwrap().clone();
        let mut v = Verdict {
            acked: acked.len(),
            devices: self.devices.len(),
            ..Verdict::default()
        };
        for cmid in self.unacked.lock().unwrap().iter() {
            v.problems.push(format!("send {cmid} was never acked"));
        }
        // Expected per conversation: every acked message, by seq.
        let mut expected: HashMap<String, BTreeMap<u64, String>> = HashMap::new();
        for a in &acked {
            let prev = expected
                .entry(a.conversation.clone())
                .or_default()
                .insert(a.seq, a.client_msg_id.clone());
            if let Some(prev) = prev.filter(|p| *p != a.client_msg_id) {
                v.problems.push(format!(
                    "seq {} of {} acked twice: to {prev} and to {} (the first ack was lost)",
                    a.seq, a.conversation, a.client_msg_id
                ));
            }
        }
        let group = self.group.clone();
        let is_member = |c: &str, u: &str| c == group || c.split(':').skip(1).any(|p| p == u);

        let missing = |log: &[pb::Message], u: &str| -> usize {
            expected
                .iter()
                .filter(|(c, _)| is_member(c, u))
                .map(|(c, want)| {
                    let have: HashSet<u64> = log
                        .iter()
                        .filter(|m| &m.conversation == c)
                        .map(|m| m.seq)
                        .collect();
                    want.keys().filter(|s| !have.contains(s)).count()
                })
                .sum()
        };
        let deadline = Instant::now() + catch_up;
        while Instant::now() < deadline {
            let behind = self
                .devices
                .iter()
                .any(|(u, _, _, log)| missing(&log.lock().unwrap(), u) > 0);
            if !behind {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await; // late duplicates would show now

        let mut logs: HashMap<String, Vec<DeviceLog>> = HashMap::new();
        for (u, d, _, log) in &self.devices {
            let log = log.lock().unwrap();
            v.delivered += log.len();
            let mut per_conv: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
            for m in log.iter() {
                per_conv
                    .entry(m.conversation.clone())
                    .or_default()
                    .push((m.seq, m.client_msg_id.clone()));
            }
            for (c, msgs) in &per_conv {
                let seqs: Vec<u64> = msgs.iter().map(|m| m.0).collect();
                if seqs != (1..=seqs.len() as u64).collect::<Vec<_>>() {
                    v.problems.push(format!(
                        "{u}/{d} in {c}: seqs not contiguous from 1 and in order (or a duplicate): {}",
                        first_break(&seqs)
                    ));
                }
                for (seq, cmid) in msgs {
                    if !cmid.is_empty() && !sent.contains(cmid) {
                        v.problems
                            .push(format!("{u}/{d} got a message nobody sent: {cmid}"));
                    }
                    if let Some(want) = expected.get(c).and_then(|e| e.get(seq)) {
                        if want != cmid {
                            v.problems.push(format!(
                                "{u}/{d} in {c} seq {seq}: got {cmid}, but {want} was acked with that seq"
                            ));
                        }
                    }
                }
            }
            let lost = missing(&log, u);
            if lost > 0 {
                v.lost += lost;
                v.problems
                    .push(format!("{u}/{d} never got {lost} acked message(s)"));
            }
            for (c, msgs) in per_conv {
                logs.entry(c).or_default().push((format!("{u}/{d}"), msgs));
            }
        }
        // Every device of every member ends with the identical log (up to the shortest one,
        // since unacked tail messages may still be arriving; the acked part is checked above).
        for (c, per_device) in &logs {
            let shortest = per_device.iter().map(|(_, m)| m.len()).min().unwrap();
            let reference = &per_device[0].1[..shortest];
            for (who, msgs) in per_device {
                if &msgs[..shortest] != reference {
                    v.problems
                        .push(format!("{who} differs from {} in {c}", per_device[0].0));
                }
            }
        }
        for (_, _, c, _) in self.devices {
            c.close().await;
        }
        v
    }
}

/// The i-th send's target: alternating 1:1 to each receiver and the group.
fn target(i: u64, group: &str) -> Target {
    match i % 3 {
        0 => Target::User(RECEIVERS[0].into()),
        1 => Target::User(RECEIVERS[1].into()),
        _ => Target::Conversation(group.into()),
    }
}

fn first_break(seqs: &[u64]) -> String {
    match seqs.iter().enumerate().find(|(i, s)| **s != *i as u64 + 1) {
        Some((i, s)) => format!("position {i} holds seq {s}"),
        None => "ok".into(),
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw-frame WebSocket session of [`WS_PRODUCER`].
struct WsConn {
    ws: Ws,
    next: u64,
}

const WS_ANSWER: Duration = Duration::from_secs(5);

impl WsConn {
    async fn login(addr: SocketAddr) -> Option<WsConn> {
        let (ws, _) = tokio::time::timeout(
            WS_ANSWER,
            tokio_tungstenite::connect_async(format!("ws://{addr}/ws")),
        )
        .await
        .ok()?
        .ok()?;
        let mut c = WsConn { ws, next: 1 };
        match c.request(login_body(WS_PRODUCER, "browser")).await? {
            Body::LoginOk(_) => Some(c),
            _ => None,
        }
    }

    /// Sends one message; `None` on an error answer or a broken connection.
    async fn send(&mut self, to: Target, cmid: &str) -> Option<pb::SendAck> {
        let to = match to {
            Target::User(u) => u,
            Target::Conversation(c) => c,
        };
        match self.request(Body::Send(send_body(&to, cmid, cmid))).await? {
            Body::SendAck(a) => Some(a),
            _ => None,
        }
    }

    /// One request and its answer (pushes in between are skipped).
    async fn request(&mut self, body: Body) -> Option<Body> {
        let req_id = self.next;
        self.next += 1;
        let bytes = Frame {
            req_id,
            body: Some(body),
        }
        .encode_to_vec();
        tokio::time::timeout(
            WS_ANSWER,
            self.ws
                .send(tokio_tungstenite::tungstenite::Message::Binary(
                    bytes.into(),
                )),
        )
        .await
        .ok()?
        .ok()?;
        loop {
            let msg = tokio::time::timeout(WS_ANSWER, self.ws.next())
                .await
                .ok()??
                .ok()?;
            if let tokio_tungstenite::tungstenite::Message::Binary(b) = msg {
                let f = Frame::decode(b).ok()?;
                if f.req_id == req_id {
                    return f.body;
                }
            }
        }
    }
}
