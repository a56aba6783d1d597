//! The client side of the bare TLS relay ([`crate::relay`], `tern-bench relay`): one
//! TLS connection per user that names the user (`u/<user>`) and its groups (`g/<group>`)
//! in its hello; a send is one frame naming the recipient, and its ack is the relay's
//! `A` (the frame was handed to the recipients' connections; nothing is stored). Acks
//! come back in send order, so a FIFO per connection maps each to its message.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::{payload, tls, Adapter, Dest, Group, Hooks, Peer};
use crate::engine::clock;
use crate::engine::run::{Outbox, SenderRef};
use crate::engine::schedule::Nanos;
use crate::relay::{frame, read_frame, write_loop, ACK, HELLO, MSG, SEND};

pub struct Relay {
    pub peer: Peer,
}

/// (step, intended) of each unacked send, in order.
type Pending = Arc<Mutex<VecDeque<(usize, Nanos)>>>;

pub struct RelayConn {
    tx: mpsc::UnboundedSender<Bytes>,
    pending: Pending,
    alive: Arc<AtomicBool>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Drop for RelayConn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn name(d: &Dest) -> String {
    match d {
        Dest::User(u) => format!("u/{u}"),
        Dest::Group(g) => format!("g/{g}"),
    }
}

impl Adapter for Relay {
    type Conn = RelayConn;

    super::peer_basics!(
        "ack (intended send -> the relay's ack: handed to the recipients' connections)"
    );

    fn supports(&self, scenario: &str) -> bool {
        matches!(scenario, "one-to-one" | "fanout" | "idle")
    }

    async fn group(&self, name: &str, _members: &[String]) -> anyhow::Result<Group> {
        Ok(Group {
            name: name.into(),
            mode: None,
            note: "group = a name every member registers in its hello; the relay writes each message to every connection registered under it (nothing stored)".into(),
        })
    }

    async fn connect(
        &self,
        _i: usize,
        user: &str,
        _device: &str,
        groups: &[String],
        hooks: Hooks,
    ) -> anyhow::Result<RelayConn> {
        let tls = self
            .peer
            .tls
            .clone()
            .context("the relay is TLS only: give its CA with --peer-ca")?;
        let addr = self.peer.addr;
        let setup = async {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let mut s = tokio_rustls::TlsConnector::from(tls)
                .connect(tls::server_name(addr), tcp)
                .await?;
            let names: Vec<String> = std::iter::once(name(&Dest::User(user.into())))
                .chain(groups.iter().map(|g| name(&Dest::Group(g.clone()))))
                .collect();
            let hello = frame(HELLO, &[names.join("\n").as_bytes()]);
            tokio::io::AsyncWriteExt::write_all(&mut s, &hello).await?;
            tokio::io::AsyncWriteExt::flush(&mut s).await?;
            let mut buf = Vec::new();
            anyhow::ensure!(
                read_frame(&mut s, &mut buf).await? && buf[..] == [ACK],
                "no ack of the hello"
            );
            Ok::<_, anyhow::Error>(s)
        };
        let s = tokio::time::timeout(Duration::from_secs(15), setup)
            .await
            .context("relay connect: no ack within 15 s")?
            .with_context(|| format!("relay connect {addr}"))?;
        let (mut r, w) = tokio::io::split(s);
        let (tx, rx) = mpsc::unbounded_channel();
        let alive = Arc::new(AtomicBool::new(true));
        let pending: Pending = Arc::default();
        let writer = {
            let (alive, stats) = (alive.clone(), self.peer.stats.clone());
            tokio::spawn(async move {
                if let Err(e) = write_loop(w, rx).await {
                    stats.add(&format!("relay write: {e}"));
                    alive.store(false, Ordering::Relaxed);
                }
            })
        };
        let reader = {
            let (alive, stats, pending) = (alive.clone(), self.peer.stats.clone(), pending.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    match read_frame(&mut r, &mut buf).await {
                        Ok(true) if buf[0] == MSG => {
                            if let Some(f) = &hooks.on_msg {
                                f(&buf[1..], clock::now());
                            }
                        }
                        Ok(true) if buf[..] == [ACK] => {
                            let now = clock::now();
                            let v = pending.lock().unwrap().pop_front();
                            if let (Some((step, intended)), Some(t)) = (v, &hooks.acks) {
                                t.ack(step, intended, now);
                            }
                        }
                        Ok(true) => {
                            stats.add("relay: unexpected frame");
                            break;
                        }
                        Ok(false) => {
                            stats.add("relay: closed by the relay");
                            break;
                        }
                        Err(e) => {
                            stats.add(&format!("relay read: {e}"));
                            break;
                        }
                    }
                }
                alive.store(false, Ordering::Relaxed);
            })
        };
        Ok(RelayConn {
            tx,
            pending,
            alive,
            tasks: [writer, reader],
        })
    }

    fn outbox(&self, conn: &RelayConn, dest: Dest) -> SenderRef {
        Arc::new(RelaySender {
            tx: conn.tx.clone(),
            pending: conn.pending.clone(),
            dest: name(&dest).into_bytes(),
        })
    }

    fn alive(&self, conn: &RelayConn) -> bool {
        conn.alive.load(Ordering::Relaxed)
    }
}

struct RelaySender {
    tx: mpsc::UnboundedSender<Bytes>,
    pending: Pending,
    dest: Vec<u8>,
}

impl Outbox for RelaySender {
    fn send(&self, step: usize, g: u64, intended: Nanos, body: &Bytes) -> bool {
        let p = payload(step, g, intended, body);
        let f = frame(SEND, &[&[self.dest.len() as u8], &self.dest, &p]);
        // Queued under the lock, so the FIFO's order is the wire's.
        let mut q = self.pending.lock().unwrap();
        q.push_back((step, intended));
        if self.tx.send(f).is_ok() {
            true
        } else {
            q.pop_back();
            false
        }
    }
}
