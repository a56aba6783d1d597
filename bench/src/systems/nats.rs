//! NATS JetStream through async-nats: one stream per run with file storage over the
//! subjects `<stream>.>`; a user's inbox is `<stream>.u.<user>`, a group's
//! `<stream>.g.<group>`. Receiving = a durable pull consumer per (user, subject) with
//! explicit acks, read through its message stream; a send is a JetStream publish whose
//! ack is the server's PubAck (the message is in the stream). An idle connection (one
//! with no hooks) holds a core NATS subscription to the user's subject, no consumer.
//! With a CA (`--peer-ca`) the connection is upgraded to TLS 1.3 after the server's
//! INFO (`tls_required`, as nats-server 2.9 does it) with the bench's rustls config.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream, Context};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{payload, Adapter, Dest, Group, Hooks, Peer};
use crate::engine::clock;
use crate::engine::run::{Outbox, SenderRef, Trackers};
use crate::engine::schedule::Nanos;

pub struct Nats {
    pub peer: Peer,
    /// Stream name (one per run).
    pub stream: String,
}

pub struct NatsConn {
    js: Context,
    acks: Option<Arc<Trackers>>,
    alive: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _client: async_nats::Client,
}

impl Drop for NatsConn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Nats {
    fn subject(&self, d: &Dest) -> String {
        match d {
            Dest::User(u) => format!("{}.u.{u}", self.stream),
            Dest::Group(g) => format!("{}.g.{g}", self.stream),
        }
    }

    async fn client(&self, name: &str) -> anyhow::Result<async_nats::Client> {
        let mut o = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(10));
        if let Some(tls) = &self.peer.tls {
            o = o.require_tls(true).tls_client_config((**tls).clone());
        }
        o.connect(format!("nats://{}", self.peer.addr))
            .await
            .with_context(|| format!("NATS connect {}", self.peer.addr))
    }
}

impl Adapter for Nats {
    type Conn = NatsConn;

    super::peer_basics!("ack (intended send -> JetStream PubAck)");

    fn supports(&self, scenario: &str) -> bool {
        matches!(scenario, "one-to-one" | "fanout" | "idle")
    }

    fn idle_params(&self, r: &mut crate::report::Report, _dpu: usize, _users: usize) {
        r.param(
            "idle_session",
            "core NATS connection with one subscription to the user's subject (no JetStream consumer)",
        );
    }

    async fn prepare(&self, _users: &[String]) -> anyhow::Result<()> {
        let js = jetstream::new(self.client("bench-setup").await?);
        js.get_or_create_stream(stream::Config {
            name: self.stream.clone(),
            subjects: vec![format!("{}.>", self.stream)],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .context("creating the JetStream stream")?;
        Ok(())
    }

    async fn group(&self, name: &str, _members: &[String]) -> anyhow::Result<Group> {
        Ok(Group {
            name: name.into(),
            mode: None,
            note: "group = one subject in the stream; a durable pull consumer per member".into(),
        })
    }

    async fn connect(
        &self,
        _i: usize,
        user: &str,
        _device: &str,
        groups: &[String],
        hooks: Hooks,
    ) -> anyhow::Result<NatsConn> {
        let client = self.client(user).await?;
        let js = jetstream::new(client.clone());
        let alive = Arc::new(AtomicBool::new(true));
        let mut tasks = Vec::new();
        if hooks.on_msg.is_none() && hooks.acks.is_none() {
            // Idle: a core subscription to the user's own subject, held.
            let mut sub = client
                .subscribe(self.subject(&Dest::User(user.into())))
                .await
                .context("NATS subscribe")?;
            client.flush().await.context("NATS flush")?;
            let alive = alive.clone();
            tasks.push(tokio::spawn(async move {
                while sub.next().await.is_some() {}
                alive.store(false, Ordering::Relaxed);
            }));
        }
        if let Some(on_msg) = &hooks.on_msg {
            let subjects = std::iter::once(Dest::User(user.into()))
                .chain(groups.iter().map(|g| Dest::Group(g.clone())));
            for (k, d) in subjects.enumerate() {
                let c: consumer::PullConsumer = js
                    .create_consumer_on_stream(
                        consumer::pull::Config {
                            durable_name: Some(format!("{user}-{k}")),
                            filter_subject: self.subject(&d),
                            ack_policy: consumer::AckPolicy::Explicit,
                            deliver_policy: consumer::DeliverPolicy::All,
                            max_ack_pending: 10_000,
                            ..Default::default()
                        },
                        &self.stream,
                    )
                    .await
                    .with_context(|| format!("creating the consumer of {user}"))?;
                let mut msgs = c.messages().await.context("consumer messages")?;
                let (on_msg, alive, stats) =
                    (on_msg.clone(), alive.clone(), self.peer.stats.clone());
                tasks.push(tokio::spawn(async move {
                    while let Some(m) = msgs.next().await {
                        match m {
                            Ok(m) => {
                                on_msg(&m.payload, clock::now());
                                if let Err(e) = m.ack().await {
                                    stats.add(&format!("nats ack: {e}"));
                                }
                            }
                            Err(e) => stats.add(&format!("nats consumer: {e}")),
                        }
                    }
                    alive.store(false, Ordering::Relaxed);
                }));
            }
        }
        Ok(NatsConn {
            js,
            acks: hooks.acks,
            alive,
            tasks,
            _client: client,
        })
    }

    fn outbox(&self, conn: &NatsConn, dest: Dest) -> SenderRef {
        let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Nanos, Bytes)>();
        let subject = self.subject(&dest);
        let (js, acks, stats) = (conn.js.clone(), conn.acks.clone(), self.peer.stats.clone());
        tokio::spawn(async move {
            while let Some((step, intended, p)) = rx.recv().await {
                match js.publish(subject.clone(), p).await {
                    Ok(ack) => {
                        let (acks, stats) = (acks.clone(), stats.clone());
                        tokio::spawn(async move {
                            match ack.await {
                                Ok(_) => {
                                    let now = clock::now();
                                    if let Some(t) = &acks {
                                        t.ack(step, intended, now);
                                    }
                                }
                                Err(e) => stats.add(&format!("nats puback: {e}")),
                            }
                        });
                    }
                    Err(e) => stats.add(&format!("nats publish: {e}")),
                }
            }
        });
        Arc::new(NatsSender { tx })
    }

    fn alive(&self, conn: &NatsConn) -> bool {
        conn.alive.load(Ordering::Relaxed)
    }
}

struct NatsSender {
    tx: mpsc::UnboundedSender<(usize, Nanos, Bytes)>,
}

impl Outbox for NatsSender {
    fn send(&self, step: usize, g: u64, intended: Nanos, body: &Bytes) -> bool {
        self.tx
            .send((step, intended, payload(step, g, intended, body)))
            .is_ok()
    }
}
