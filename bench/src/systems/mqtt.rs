//! MQTT 3.1.1 (mosquitto) through rumqttc: one client per user, clean_session = false
//! (a persistent session that queues QoS 1 messages while the client is away), QoS 1
//! publishes and subscriptions. A user's inbox is the topic `u/<user>`, a group's is
//! `g/<group>`. The ack of a send is the broker's PUBACK. With a CA (`--peer-ca`) the
//! connection is MQTT over TLS 1.3 (rumqttc's rustls transport with the bench's
//! [`tls::client_config`]).
//!
//! rumqttc assigns packet ids inside its event loop; it reports each outgoing publish
//! (`Outgoing::Publish(pkid)`) in the order the client queued them, so a FIFO of intended
//! send times per connection maps every PUBACK back to its message.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS,
    SubscribeFilter, TlsConfiguration, Transport,
};

#[allow(unused_imports)] // the doc link
use super::tls;
use super::{payload, Adapter, Dest, Group, Hooks, Peer};
use crate::engine::clock;
use crate::engine::run::{Outbox, SenderRef};
use crate::engine::schedule::Nanos;

pub struct Mqtt {
    pub peer: Peer,
}

#[derive(Default)]
struct Pending {
    /// (step, intended) of publishes queued but not yet given a packet id.
    queued: VecDeque<(usize, Nanos)>,
    /// Packet id -> (step, intended), until its PUBACK.
    inflight: HashMap<u16, (usize, Nanos)>,
}

pub struct MqttConn {
    client: AsyncClient,
    pending: Arc<Mutex<Pending>>,
    alive: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MqttConn {
    /// The socket closes without a DISCONNECT, like a device losing its network; the
    /// persistent session stays on the broker.
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn inbox(user: &str) -> String {
    format!("u/{user}")
}

fn handle(ev: &Event, hooks: &Hooks, pending: &Mutex<Pending>) {
    match ev {
        Event::Incoming(Packet::Publish(p)) => {
            if let Some(f) = &hooks.on_msg {
                f(&p.payload, clock::now());
            }
        }
        Event::Outgoing(Outgoing::Publish(pkid)) if *pkid != 0 => {
            let mut p = pending.lock().unwrap();
            if let Some(v) = p.queued.pop_front() {
                p.inflight.insert(*pkid, v);
            }
        }
        Event::Incoming(Packet::PubAck(a)) => {
            let now = clock::now();
            let v = pending.lock().unwrap().inflight.remove(&a.pkid);
            if let (Some((step, intended)), Some(t)) = (v, &hooks.acks) {
                t.ack(step, intended, now);
            }
        }
        _ => {}
    }
}

async fn poll(el: &mut EventLoop) -> Result<Event, ConnectionError> {
    el.poll().await
}

impl Adapter for Mqtt {
    type Conn = MqttConn;

    super::peer_basics!("ack (intended send -> MQTT PUBACK, QoS 1)");

    fn supports(&self, scenario: &str) -> bool {
        matches!(scenario, "one-to-one" | "fanout" | "idle" | "storm")
    }

    async fn group(&self, name: &str, _members: &[String]) -> anyhow::Result<Group> {
        Ok(Group {
            name: name.into(),
            mode: None,
            note: "group = one MQTT topic every member subscribes to (QoS 1, persistent sessions)"
                .into(),
        })
    }

    async fn connect(
        &self,
        _i: usize,
        user: &str,
        _device: &str,
        groups: &[String],
        hooks: Hooks,
    ) -> anyhow::Result<MqttConn> {
        let mut o = MqttOptions::new(user, self.peer.addr.ip().to_string(), self.peer.addr.port());
        o.set_clean_session(false)
            .set_keep_alive(self.peer.keep_alive)
            .set_inflight(1000)
            .set_max_packet_size(1 << 20, 1 << 20);
        if let Some(tls) = &self.peer.tls {
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.clone(),
            )));
        }
        let (client, mut el) = AsyncClient::new(o, 100_000);
        el.network_options.set_connection_timeout(10);
        let pending = Arc::new(Mutex::new(Pending::default()));
        let mut topics = vec![SubscribeFilter::new(inbox(user), QoS::AtLeastOnce)];
        topics.extend(
            groups
                .iter()
                .map(|g| SubscribeFilter::new(format!("g/{g}"), QoS::AtLeastOnce)),
        );
        client
            .subscribe_many(topics)
            .await
            .context("queueing SUBSCRIBE")?;
        // Drive the connection until the subscription is confirmed; anything the
        // session had queued may already arrive.
        let ready = async {
            loop {
                let ev = poll(&mut el).await?;
                let done = matches!(ev, Event::Incoming(Packet::SubAck(_)));
                handle(&ev, &hooks, &pending);
                if done {
                    return Ok::<_, ConnectionError>(());
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(15), ready).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("MQTT connect/subscribe: {e}"),
            Err(_) => bail!("MQTT connect/subscribe: no SUBACK within 15 s"),
        }
        let alive = Arc::new(AtomicBool::new(true));
        let task = {
            let (pending, alive, stats) = (pending.clone(), alive.clone(), self.peer.stats.clone());
            tokio::spawn(async move {
                loop {
                    match poll(&mut el).await {
                        Ok(ev) => handle(&ev, &hooks, &pending),
                        Err(e) => {
                            stats.add(&format!("mqtt connection: {e}"));
                            alive.store(false, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            })
        };
        Ok(MqttConn {
            client,
            pending,
            alive,
            task,
        })
    }

    fn outbox(&self, conn: &MqttConn, dest: Dest) -> SenderRef {
        let topic = match dest {
            Dest::User(u) => inbox(&u),
            Dest::Group(g) => format!("g/{g}"),
        };
        Arc::new(MqttSender {
            client: conn.client.clone(),
            pending: conn.pending.clone(),
            topic,
        })
    }

    fn alive(&self, conn: &MqttConn) -> bool {
        conn.alive.load(Ordering::Relaxed)
    }
}

struct MqttSender {
    client: AsyncClient,
    pending: Arc<Mutex<Pending>>,
    topic: String,
}

impl Outbox for MqttSender {
    fn send(&self, step: usize, g: u64, intended: Nanos, body: &Bytes) -> bool {
        let p = payload(step, g, intended, body);
        // Queued before the publish, so the event loop always finds it.
        self.pending
            .lock()
            .unwrap()
            .queued
            .push_back((step, intended));
        match self
            .client
            .try_publish(self.topic.clone(), QoS::AtLeastOnce, false, p.to_vec())
        {
            Ok(()) => true,
            Err(_) => {
                self.pending.lock().unwrap().queued.pop_back();
                false
            }
        }
    }
}
