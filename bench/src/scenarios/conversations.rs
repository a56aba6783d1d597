//! tern only: the conversation list ("red dot") of a user in many conversations.
//!
//! Setup (closed loop, pipelined over one connection per user, bounded by
//! `--conversations`): the user `me` sends one message to each of `--direct` peers (a
//! direct conversation each) and creates the rest as groups with one helper member. The
//! helper then writes into every `--unread-every`-th group (1 to 3 messages, the first
//! mentioning `me` by name), the first few peers write 2 messages each to `me`, and `me`
//! pins a few conversations and mutes every `--mute-every`-th group with unread. The
//! expected `total`, `total_unread` and mention count follow from that, and the first
//! answer is checked against them (a mismatch is an error in the report).
//!
//! Then, one request in flight at a time on `me`'s connection, `--calls` of each:
//! the first page (`--page`), the last page (offset total - page), and the whole list
//! (every page of 1000, the server's cap) — each with its own latency histogram and the
//! server CPU it took per call.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tern_proto::pb;
use tern_proto::{encode_frame, Body, Frame};
use tern_sdk::raw::RawConnection;

use super::{run_id, Ctx};
use crate::probe::Probe;
use crate::report::{histogram, record_ns, Report};
use crate::systems::tern::Tern;
use crate::systems::Adapter;

/// Requests in flight during setup.
const WINDOW: usize = 64;
/// The server's largest page.
const MAX_PAGE: u32 = 1000;
/// Peers that write to `me` (2 messages each), at most.
const WRITING_PEERS: usize = 20;
/// Conversations `me` pins.
const PINNED: usize = 10;

pub struct ConvArgs {
    pub conversations: usize,
    pub direct: usize,
    pub unread_every: usize,
    pub mute_every: usize,
    pub calls: usize,
    pub page: u32,
}

/// Sends `bodies` pipelined (`WINDOW` in flight) and returns the answers in order; an
/// `Error` answer fails the setup.
async fn pipeline(raw: &mut RawConnection, bodies: Vec<Body>) -> anyhow::Result<Vec<Body>> {
    let mut out = Vec::with_capacity(bodies.len());
    let mut inflight: VecDeque<u64> = VecDeque::new();
    let mut todo = bodies.into_iter();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        while inflight.len() < WINDOW {
            let Some(b) = todo.next() else { break };
            let req_id = raw.next_req_id();
            buf.extend_from_slice(&encode_frame(&Frame {
                req_id,
                body: Some(b),
            }));
            inflight.push_back(req_id);
        }
        if !buf.is_empty() {
            raw.send_raw(&buf).await?;
        }
        let Some(id) = inflight.pop_front() else {
            break;
        };
        match raw.response(id).await?.body {
            Some(Body::Error(e)) => bail!("setup request refused: {} {}", e.code, e.message),
            Some(b) => out.push(b),
            None => bail!("empty answer during setup"),
        }
        // Our own messages come back as pushes; nothing here reads them.
        raw.pushes().clear();
    }
    Ok(out)
}

fn send(client_msg_id: String, conversation: &str, peer: &str, mention: Option<&str>) -> Body {
    Body::Send(pb::Send {
        client_msg_id,
        conversation: conversation.into(),
        peer: peer.into(),
        body: bytes::Bytes::from_static(b"a message for the conversation list benchmark"),
        mentions: mention.map(|m| vec![m.to_string()]).unwrap_or_default(),
        ..Default::default()
    })
}

async fn list(
    raw: &mut RawConnection,
    offset: u32,
    limit: u32,
) -> anyhow::Result<pb::ConversationList> {
    match raw
        .call(Body::ListConversations(pb::ListConversations {
            limit,
            offset,
        }))
        .await?
    {
        Body::ConversationList(l) => Ok(l),
        other => bail!(
            "ListConversations answered {}",
            tern_proto::body_name(&other)
        ),
    }
}

/// What the list must say after the setup.
#[derive(Debug, PartialEq)]
struct Expected {
    total: u32,
    total_unread: u64,
    unread_convs: usize,
    mentions: u64,
    pinned: usize,
    muted: usize,
}

pub async fn run(ctx: &Ctx, s: ConvArgs) -> anyhow::Result<()> {
    if ctx.g.peer.is_some() {
        bail!("conversations is tern only");
    }
    let a = Tern::start(ctx, &[], None)?;
    let run = run_id();
    let me = format!("{run}-me");
    let helper = format!("{run}-h");
    let peers: Vec<String> = (0..s.direct).map(|i| format!("{run}-p{i}")).collect();
    let groups = s.conversations - s.direct;
    let mut users = vec![me.clone(), helper.clone()];
    users.extend(peers.iter().cloned());
    let t0 = Instant::now();
    a.prepare(&users).await?;
    let mut mine = a.session(0, &me, "bench").await?;
    mine.set_timeout(Duration::from_secs(120));

    // 1. The conversations.
    let bodies = peers
        .iter()
        .enumerate()
        .map(|(i, p)| send(format!("d{i}"), "", p, None))
        .collect();
    pipeline(&mut mine, bodies).await.context("direct sends")?;
    let bodies = (0..groups)
        .map(|i| {
            Body::CreateGroup(pb::CreateGroup {
                name: format!("group {i}"),
                members: vec![helper.clone()],
                ..Default::default()
            })
        })
        .collect();
    let mut gids = Vec::with_capacity(groups);
    for b in pipeline(&mut mine, bodies).await.context("CreateGroup")? {
        match b {
            Body::GroupCreated(g) => gids.push(g.conversation),
            other => bail!("CreateGroup answered {}", tern_proto::body_name(&other)),
        }
    }
    eprintln!(
        "tern-bench: {} direct conversations and {groups} groups made in {:.1} s",
        s.direct,
        t0.elapsed().as_secs_f64()
    );

    // 2. Unread messages (and mentions) for `me`.
    let mut exp = Expected {
        total: s.conversations as u32,
        total_unread: 0,
        unread_convs: 0,
        mentions: 0,
        pinned: PINNED.min(s.conversations),
        muted: 0,
    };
    let mut writes = Vec::new();
    let mut to_mute = Vec::new();
    for (i, g) in gids.iter().enumerate().step_by(s.unread_every.max(1)) {
        let n = 1 + i % 3;
        for k in 0..n {
            let mention = (k == 0).then_some(me.as_str());
            writes.push(send(format!("g{i}.{k}"), g, "", mention));
        }
        exp.unread_convs += 1;
        if s.mute_every > 0 && exp.unread_convs.is_multiple_of(s.mute_every) {
            to_mute.push(g.clone());
            exp.muted += 1;
        } else {
            exp.total_unread += n as u64;
        }
        exp.mentions += 1;
    }
    let mut h = a.session(1, &helper, "bench").await?;
    h.set_timeout(Duration::from_secs(120));
    pipeline(&mut h, writes).await.context("helper sends")?;
    drop(h);
    for (i, p) in peers.iter().take(WRITING_PEERS).enumerate() {
        let mut c = a.session(2 + i, p, "bench").await?;
        pipeline(
            &mut c,
            (0..2)
                .map(|k| send(format!("r{k}"), "", &me, None))
                .collect(),
        )
        .await
        .context("peer sends")?;
        exp.unread_convs += 1;
        exp.total_unread += 2;
    }
    // 3. Pins and mutes.
    let mut settings: Vec<Body> = to_mute
        .iter()
        .map(|g| {
            Body::SetConversationSettings(pb::SetConversationSettings {
                conversation: g.clone(),
                muted: Some(true),
                pinned: None,
            })
        })
        .collect();
    let some: Vec<String> = gids
        .iter()
        .rev()
        .cloned()
        .chain(
            peers
                .iter()
                .map(|p| tern_proto::direct_conversation(p, &me)),
        )
        .take(PINNED)
        .collect();
    settings.extend(some.iter().map(|c| {
        Body::SetConversationSettings(pb::SetConversationSettings {
            conversation: c.clone(),
            muted: None,
            pinned: Some(true),
        })
    }));
    pipeline(&mut mine, settings).await.context("settings")?;
    let setup_secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "tern-bench: setup done in {setup_secs:.1} s; now {} calls of each list request",
        s.calls
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 4. Check the list says what the setup made.
    let mut got = Expected {
        total: 0,
        total_unread: 0,
        unread_convs: 0,
        mentions: 0,
        pinned: 0,
        muted: 0,
    };
    let mut offset = 0;
    loop {
        let l = list(&mut mine, offset, MAX_PAGE).await?;
        got.total = l.total;
        got.total_unread = l.total_unread;
        for c in &l.conversations {
            got.unread_convs += (c.unread > 0) as usize;
            got.mentions += c.mentions;
            got.pinned += c.pinned as usize;
            got.muted += c.muted as usize;
        }
        offset += l.conversations.len() as u32;
        if l.conversations.is_empty() || offset >= l.total {
            break;
        }
    }
    let mut problems = Vec::new();
    if got != exp {
        problems.push(format!(
            "the list does not match the setup: expected {exp:?}, got {got:?}"
        ));
    }

    // 5. The measurement: one request in flight.
    let mut r = Report::new("conversations", "lists/s");
    r.param("conversations", s.conversations)
        .param("direct", s.direct)
        .param("groups", groups)
        .param("page", s.page)
        .param("calls", s.calls);
    ctx.common(&a, &mut r);
    let total = s.conversations as u32;
    let phases: [(&str, Vec<(u32, u32)>); 3] = [
        ("first page", vec![(0, s.page)]),
        ("last page", vec![(total.saturating_sub(s.page), s.page)]),
        (
            "whole list",
            (0..total.div_ceil(MAX_PAGE))
                .map(|k| (k * MAX_PAGE, MAX_PAGE))
                .collect(),
        ),
    ];
    let all = Probe::start(a.pid(), false);
    let start = Instant::now();
    let mut lists = 0u64;
    for (name, pages) in phases {
        let mut hist = histogram();
        let probe = Probe::start(a.pid(), false);
        for _ in 0..s.calls {
            let t = Instant::now();
            for &(offset, limit) in &pages {
                let l = list(&mut mine, offset, limit).await?;
                lists += 1;
                if l.total != total {
                    problems.push(format!("{name}: total {} (expected {total})", l.total));
                }
            }
            record_ns(&mut hist, t.elapsed().as_nanos() as u64);
        }
        let (usage, _) = probe.finish();
        let label = if pages.len() == 1 {
            format!("{name} (offset {}, limit {})", pages[0].0, pages[0].1)
        } else {
            format!("{name} ({} requests of limit {MAX_PAGE})", pages.len())
        };
        r.latency(&label, &hist);
        if let Some(u) = usage {
            r.figure(
                &format!("server CPU per call: {name}"),
                u.cpu_secs * 1000.0 / s.calls as f64,
                "ms",
            );
        }
    }
    let (usage, gen) = all.finish();
    r.achieved = Some(lists as f64 / start.elapsed().as_secs_f64());
    r.server = usage;
    r.generator_cpu_pct = gen;
    r.count("conversations", got.total as u64)
        .count("total_unread", got.total_unread)
        .count("conversations with unread", got.unread_convs as u64)
        .count("mentions", got.mentions)
        .count("pinned", got.pinned as u64)
        .count("muted", got.muted as u64)
        .figure("setup", setup_secs, "s");
    problems.dedup();
    for p in problems {
        r.errors.push((p, 1));
    }
    a.notes(&mut r);
    ctx.print(&r);
    Ok(())
}
