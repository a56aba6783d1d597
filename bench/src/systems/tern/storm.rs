//! tern's own storm: pipelined senders that honour RATE_LIMITED fill the offline
//! devices' inboxes; each device comes back by password login or token resume and
//! pulls what it missed with `Sync` pages, then `Ack`s.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tern_proto::pb;
use tern_proto::{encode_frame, Body, Frame};
use tern_sdk::raw::RawConnection;

use super::net::{self, Connector, Fail};
use crate::engine::clock;
use crate::engine::run::Stats;
use crate::systems::Device;

/// One storm sender: pipelines its share of the missed messages, `window` in flight.
pub(super) async fn storm_send(
    mut raw: RawConnection,
    me: usize,
    plan: Vec<String>,
    missed: usize,
    window: usize,
    stats: Arc<Stats>,
) -> Result<u64, Fail> {
    // (recipient, n) in rounds, so every recipient's inbox fills evenly.
    let mut queue: VecDeque<(usize, usize)> = (0..missed)
        .flat_map(|n| (0..plan.len()).map(move |p| (p, n)))
        .collect();
    let mut inflight: HashMap<u64, (usize, usize)> = HashMap::new();
    let mut acked = 0u64;
    let mut hold_until: Option<tokio::time::Instant> = None;
    while !queue.is_empty() || !inflight.is_empty() {
        let may_send = hold_until.is_none_or(|t| tokio::time::Instant::now() >= t);
        if may_send && inflight.len() < window && !queue.is_empty() {
            hold_until = None;
            let mut buf = Vec::new();
            while inflight.len() < window {
                let Some((p, n)) = queue.pop_front() else {
                    break;
                };
                let req_id = raw.next_req_id();
                buf.extend_from_slice(&encode_frame(&Frame {
                    req_id,
                    body: Some(Body::Send(pb::Send {
                        client_msg_id: format!("storm.{me}.{p}.{n}"),
                        peer: plan[p].clone(),
                        body: Bytes::from_static(b"missed while offline"),
                        ..Default::default()
                    })),
                }));
                inflight.insert(req_id, (p, n));
            }
            raw.send_raw(&buf).await?;
        }
        let f = raw.recv_frame(Duration::from_secs(30)).await?;
        match f.body {
            Some(Body::SendAck(_)) if inflight.remove(&f.req_id).is_some() => acked += 1,
            Some(Body::Error(e)) => {
                if let Some(item) = inflight.remove(&f.req_id) {
                    let fail = Fail::of(e);
                    stats.add(&format!("storm send {}", fail.name()));
                    if let Some(wait) = fail.retry_after() {
                        queue.push_front(item);
                        hold_until = Some(tokio::time::Instant::now() + wait);
                    }
                }
            }
            Some(Body::Closing(c)) => return Err(Fail::Closed(net::close_name(c.reason))),
            _ => {}
        }
    }
    Ok(acked)
}

/// One device coming back: connect, authenticate, Sync pages until complete, Ack.
#[allow(clippy::too_many_arguments)]
pub(super) async fn storm_device(
    connector: &Connector,
    i: usize,
    user: String,
    mut token: Option<String>,
    missed: u64,
    page: u32,
    deadline: tokio::time::Instant,
    stats: Arc<Stats>,
) -> Device {
    let mut cursor = 0u64;
    let mut items = 0u64;
    let mut retries = 0u32;
    let mut auth_ns = None;
    loop {
        if tokio::time::Instant::now() >= deadline {
            return Device {
                done_at: None,
                auth_ns,
                items,
                retries,
                conn: None,
            };
        }
        let attempt = async {
            let t0 = clock::now();
            let mut raw = connector.connect(i).await?;
            let ok = match &token {
                Some(t) => net::resume(&mut raw, t).await?,
                None => net::login(&mut raw, &user, "phone").await?,
            };
            // Tokens rotate: a retry must present the newest one (an older one, once a
            // newer was used, revokes the device).
            if token.is_some() {
                token = Some(ok.token.clone());
            }
            let auth = clock::now() - t0;
            loop {
                let sync = Body::Sync(pb::Sync {
                    after_inbox_seq: Some(cursor),
                    limit: page,
                });
                let res = net::request(&mut raw, sync).await?;
                let Body::SyncResult(s) = res else {
                    return Err(Fail::Io("Sync answered with something else".into()));
                };
                items += s.items.len() as u64;
                cursor = cursor.max(s.to_inbox_seq);
                if s.complete {
                    break;
                }
            }
            let done = clock::now();
            let _ = net::request(&mut raw, Body::Ack(pb::Ack { inbox_seq: cursor })).await;
            Ok::<_, Fail>((raw, auth, done))
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok((raw, auth, done))) => {
                auth_ns.get_or_insert(auth);
                if cursor < missed {
                    stats.add("storm device incomplete (inbox shorter than expected)");
                }
                return Device {
                    done_at: Some(done),
                    auth_ns,
                    items,
                    retries,
                    conn: Some(Box::new(raw)),
                };
            }
            Ok(Err(e)) => {
                stats.add(&format!("storm {}", e.name()));
                retries += 1;
                let base = e
                    .retry_after()
                    .unwrap_or(Duration::from_millis(100 * (1 << retries.min(5))));
                let jitter = base.mul_f64(rand::random::<f64>() * 0.5);
                tokio::time::sleep(base + jitter).await;
            }
            Err(_) => continue,
        }
    }
}
