//! XMPP (ejabberd): a minimal client over plain TCP on loopback, with quick-xml reading
//! the stream. It does what a mobile IM client does: in-band registration (XEP-0077,
//! during setup), SASL PLAIN, resource bind, stream management (XEP-0198) and initial
//! presence, then chat messages to bare JIDs.
//!
//! Acks: every sent message is followed by `<r/>`; the server's `<a h='N'/>` counts the
//! stanzas it has handled, so it acks every message up to the N-th stanza this client
//! sent (stream management counts presence too). The server's own `<r/>` is answered
//! with the number of stanzas received. A user that is offline (no available session)
//! gets its messages stored by mod_offline; they are delivered after the next initial
//! presence.
//!
//! (tokio-xmpp was not used: it insists on STARTTLS and brings its own TLS stack; this
//! client is ~300 lines and only parses what the bench needs.)

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use quick_xml::events::Event;
use quick_xml::Reader;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::{payload, Adapter, Dest, Group, Hooks, Peer};
use crate::engine::clock;
use crate::engine::run::{Outbox, SenderRef};
use crate::engine::schedule::Nanos;

pub const DOMAIN: &str = "localhost";
const PASSWORD: &str = "bench-password";
const TIMEOUT: Duration = Duration::from_secs(15);

fn header() -> String {
    format!(
        "<?xml version='1.0'?><stream:stream to='{DOMAIN}' xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    )
}

/// One top-level element of the stream (a stanza, or a stream-level element such as
/// `<success/>`, `<a/>`, `<stream:features>`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stanza {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    /// Names of the direct children.
    pub children: Vec<String>,
    /// Text of a `<body>` child.
    pub body: Option<Vec<u8>>,
}

impl Stanza {
    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

fn start_of(e: &quick_xml::events::BytesStart) -> Stanza {
    Stanza {
        name: e.name().as_ref().to_string(),
        attrs: e
            .attributes()
            .flatten()
            .map(|a| (a.key.as_ref().to_string(), a.value.to_string()))
            .collect(),
        ..Default::default()
    }
}

/// Reads the stream one top-level element at a time.
pub struct XmlIn<R> {
    reader: Reader<R>,
    buf: Vec<u8>,
    depth: usize,
    cur: Option<Stanza>,
    in_body: bool,
}

impl<R: tokio::io::AsyncBufRead + Unpin> XmlIn<R> {
    pub fn new(r: R) -> Self {
        let mut reader = Reader::from_reader(r);
        let c = reader.config_mut();
        c.trim_text(true);
        // A restarted stream opens a second <stream:stream> inside the first.
        c.check_end_names = false;
        Self {
            reader,
            buf: Vec::new(),
            depth: 0,
            cur: None,
            in_body: false,
        }
    }

    /// The next top-level element; None when the stream ends.
    pub async fn next(&mut self) -> anyhow::Result<Option<Stanza>> {
        loop {
            self.buf.clear();
            let ev = self.reader.read_event_into_async(&mut self.buf).await?;
            match ev {
                Event::Start(e) => {
                    if e.name().as_ref() == "stream:stream" {
                        self.depth = 1;
                        continue;
                    }
                    self.depth += 1;
                    match self.depth {
                        2 => self.cur = Some(start_of(&e)),
                        3 => {
                            if let Some(c) = &mut self.cur {
                                let n = e.name().as_ref().to_string();
                                self.in_body = n == "body";
                                c.children.push(n);
                            }
                        }
                        _ => {}
                    }
                }
                Event::Empty(e) => match self.depth {
                    1 => return Ok(Some(start_of(&e))),
                    2 => {
                        if let Some(c) = &mut self.cur {
                            c.children.push(e.name().as_ref().to_string());
                        }
                    }
                    _ => {}
                },
                Event::Text(t) if self.in_body && self.depth == 3 => {
                    if let Some(c) = &mut self.cur {
                        c.body
                            .get_or_insert_with(Vec::new)
                            .extend_from_slice(t.as_bytes());
                    }
                }
                Event::End(_) => {
                    if self.depth == 3 {
                        self.in_body = false;
                    }
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 1 {
                        if let Some(c) = self.cur.take() {
                            return Ok(Some(c));
                        }
                    }
                    if self.depth == 0 {
                        return Ok(None);
                    }
                }
                Event::Eof => return Ok(None),
                _ => {}
            }
        }
    }
}

type In = XmlIn<BufReader<OwnedReadHalf>>;

async fn expect(r: &mut In, what: &str) -> anyhow::Result<Stanza> {
    let s = tokio::time::timeout(TIMEOUT, r.next())
        .await
        .with_context(|| format!("waiting for <{what}>"))??
        .with_context(|| format!("stream closed while waiting for <{what}>"))?;
    Ok(s)
}

/// Opens a stream and reads its features.
async fn open(addr: SocketAddr) -> anyhow::Result<(In, OwnedWriteHalf)> {
    let s = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
        .await
        .context("XMPP connect timed out")??;
    s.set_nodelay(true)?;
    let (r, mut w) = s.into_split();
    let mut r = XmlIn::new(BufReader::new(r));
    w.write_all(header().as_bytes()).await?;
    let f = expect(&mut r, "stream:features").await?;
    anyhow::ensure!(f.name == "stream:features", "got <{}>", f.name);
    Ok((r, w))
}

pub struct Xmpp {
    pub peer: Peer,
}

#[derive(Default)]
struct Pending {
    /// (stanza number since `<enable/>`, step, intended) of sent messages not yet acked.
    q: VecDeque<(u64, usize, Nanos)>,
    /// Stanzas sent since `<enable/>`.
    sent: u64,
}

pub struct XmppConn {
    tx: mpsc::UnboundedSender<Bytes>,
    pending: Arc<Mutex<Pending>>,
    alive: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for XmppConn {
    /// The socket closes without `</stream:stream>`, like a device losing its network;
    /// without a resumable stream the session ends and messages go to offline storage.
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn jid(user: &str) -> String {
    format!("{user}@{DOMAIN}")
}

impl Xmpp {
    /// Registers `users` in-band, many per stream.
    async fn register(&self, users: &[String]) -> anyhow::Result<()> {
        let (mut r, mut w) = open(self.peer.addr).await?;
        for u in users {
            w.write_all(
                format!(
                    "<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>{u}</username>\
                     <password>{PASSWORD}</password></query></iq>"
                )
                .as_bytes(),
            )
            .await?;
            let s = expect(&mut r, "iq").await?;
            if s.attr("type") != Some("result") {
                // 409 conflict: the account exists (a rerun against the same server).
                anyhow::ensure!(
                    s.children.iter().any(|c| c == "error"),
                    "registering {u}: unexpected <{}>",
                    s.name
                );
            }
        }
        Ok(())
    }
}

impl Adapter for Xmpp {
    type Conn = XmppConn;

    super::peer_basics!("ack (intended send -> XMPP stream management <a/>)");

    fn supports(&self, scenario: &str) -> bool {
        matches!(scenario, "one-to-one" | "idle" | "storm")
    }

    async fn prepare(&self, users: &[String]) -> anyhow::Result<()> {
        let t0 = std::time::Instant::now();
        let chunks: Vec<Vec<String>> = users.chunks(200).map(|c| c.to_vec()).collect();
        let out: Vec<anyhow::Result<()>> = futures_util::stream::iter(chunks)
            .map(|c| async move { self.register(&c).await })
            .buffer_unordered(8)
            .collect()
            .await;
        for r in out {
            r.context("in-band registration")?;
        }
        eprintln!(
            "tern-bench: {} XMPP accounts registered in {:.1} s",
            users.len(),
            t0.elapsed().as_secs_f64()
        );
        Ok(())
    }

    async fn group(&self, _name: &str, _members: &[String]) -> anyhow::Result<Group> {
        bail!("fanout is not compared with ejabberd")
    }

    async fn connect(
        &self,
        _i: usize,
        user: &str,
        _device: &str,
        _groups: &[String],
        hooks: Hooks,
    ) -> anyhow::Result<XmppConn> {
        let (mut r, mut w) = open(self.peer.addr).await?;
        let plain =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{PASSWORD}"));
        w.write_all(
            format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>"
            )
            .as_bytes(),
        )
        .await?;
        let s = expect(&mut r, "success").await?;
        if s.name != "success" {
            bail!("SASL PLAIN for {user}: <{}>", s.name);
        }
        w.write_all(header().as_bytes()).await?;
        let f = expect(&mut r, "stream:features").await?;
        anyhow::ensure!(f.name == "stream:features", "got <{}>", f.name);
        w.write_all(
            b"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
              <resource>bench</resource></bind></iq>",
        )
        .await?;
        let b = expect(&mut r, "iq").await?;
        anyhow::ensure!(b.attr("type") == Some("result"), "bind for {user} failed");
        w.write_all(b"<enable xmlns='urn:xmpp:sm:3'/>").await?;
        let e = expect(&mut r, "enabled").await?;
        anyhow::ensure!(
            e.name == "enabled",
            "stream management for {user}: <{}>",
            e.name
        );
        // Initial presence: the session becomes available (and offline messages flow).
        w.write_all(b"<presence/>").await?;
        let pending = Arc::new(Mutex::new(Pending {
            sent: 1,
            ..Default::default()
        }));
        let alive = Arc::new(AtomicBool::new(true));
        let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
        let writer = {
            let (alive, stats) = (alive.clone(), self.peer.stats.clone());
            let keep_alive = self.peer.keep_alive;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let first = match tokio::time::timeout(keep_alive, rx.recv()).await {
                        Ok(Some(b)) => b,
                        Ok(None) => return,
                        // Whitespace keep-alive, like a client's heartbeat.
                        Err(_) => Bytes::from_static(b" "),
                    };
                    buf.clear();
                    buf.extend_from_slice(&first);
                    while let Ok(b) = rx.try_recv() {
                        buf.extend_from_slice(&b);
                    }
                    if let Err(e) = w.write_all(&buf).await {
                        stats.add(&format!("xmpp write: {e}"));
                        alive.store(false, Ordering::Relaxed);
                        return;
                    }
                }
            })
        };
        let reader = {
            let (alive, stats, pending, tx) = (
                alive.clone(),
                self.peer.stats.clone(),
                pending.clone(),
                tx.clone(),
            );
            let received = AtomicU64::new(0);
            tokio::spawn(async move {
                loop {
                    let s = match r.next().await {
                        Ok(Some(s)) => s,
                        Ok(None) => break,
                        Err(e) => {
                            stats.add(&format!("xmpp read: {e}"));
                            break;
                        }
                    };
                    let now = clock::now();
                    match s.name.as_str() {
                        "message" | "presence" | "iq" => {
                            received.fetch_add(1, Ordering::Relaxed);
                            if s.name == "message" {
                                if let (Some(b), Some(f)) = (&s.body, &hooks.on_msg) {
                                    f(b, now);
                                }
                            }
                        }
                        "r" => {
                            let h = received.load(Ordering::Relaxed) as u32;
                            let _ =
                                tx.send(Bytes::from(format!("<a xmlns='urn:xmpp:sm:3' h='{h}'/>")));
                        }
                        "a" => {
                            let h: u64 = s.attr("h").and_then(|h| h.parse().ok()).unwrap_or(0);
                            let mut p = pending.lock().unwrap();
                            while p.q.front().is_some_and(|(n, _, _)| *n <= h) {
                                let (_, step, intended) = p.q.pop_front().unwrap();
                                if let Some(t) = &hooks.acks {
                                    t.ack(step, intended, now);
                                }
                            }
                        }
                        "stream:error" => {
                            stats.add(&format!("xmpp stream error: {:?}", s.children));
                            break;
                        }
                        _ => {}
                    }
                }
                alive.store(false, Ordering::Relaxed);
            })
        };
        Ok(XmppConn {
            tx,
            pending,
            alive,
            tasks: vec![writer, reader],
        })
    }

    fn outbox(&self, conn: &XmppConn, dest: Dest) -> SenderRef {
        let to = match dest {
            Dest::User(u) => jid(&u),
            Dest::Group(g) => jid(&g),
        };
        Arc::new(XmppSender {
            tx: conn.tx.clone(),
            pending: conn.pending.clone(),
            to,
        })
    }

    fn alive(&self, conn: &XmppConn) -> bool {
        conn.alive.load(Ordering::Relaxed)
    }
}

struct XmppSender {
    tx: mpsc::UnboundedSender<Bytes>,
    pending: Arc<Mutex<Pending>>,
    to: String,
}

impl Outbox for XmppSender {
    fn send(&self, step: usize, g: u64, intended: Nanos, body: &Bytes) -> bool {
        let p = payload(step, g, intended, body);
        let mut x = Vec::with_capacity(p.len() + self.to.len() + 120);
        x.extend_from_slice(b"<message type='chat' to='");
        x.extend_from_slice(self.to.as_bytes());
        x.extend_from_slice(b"'><body>");
        // The payload is ASCII digits, dots, a space and the body's bytes ('x'): no
        // escaping needed.
        x.extend_from_slice(&p);
        x.extend_from_slice(b"</body></message><r xmlns='urn:xmpp:sm:3'/>");
        // Numbered and queued under one lock, so numbers follow the write order.
        let mut pend = self.pending.lock().unwrap();
        pend.sent += 1;
        let n = pend.sent;
        pend.q.push_back((n, step, intended));
        if self.tx.send(Bytes::from(x)).is_err() {
            pend.q.pop_back();
            pend.sent -= 1;
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_top_level_elements_across_a_stream_restart() {
        let text = "<?xml version='1.0'?><stream:stream id='1' xmlns='jabber:client'>\
            <stream:features><mechanisms><mechanism>PLAIN</mechanism></mechanisms></stream:features>\
            <success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>\
            <?xml version='1.0'?><stream:stream id='2'><stream:features><bind/><sm xmlns='urn:xmpp:sm:3'/></stream:features>\
            <a h='2' xmlns='urn:xmpp:sm:3'/>\
            <message from='a@localhost/r' type='chat'><body>0.1.5 xx</body></message> \
            <r xmlns='urn:xmpp:sm:3'/></stream:stream>";
        let mut r = XmlIn::new(text.as_bytes());
        let mut got = Vec::new();
        while let Some(s) = r.next().await.unwrap() {
            got.push(s);
        }
        let names: Vec<&str> = got.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "stream:features",
                "success",
                "stream:features",
                "a",
                "message",
                "r"
            ]
        );
        assert_eq!(got[2].children, ["bind", "sm"]);
        assert_eq!(got[3].attr("h"), Some("2"));
        assert_eq!(got[4].body.as_deref(), Some(&b"0.1.5 xx"[..]));
    }
}
