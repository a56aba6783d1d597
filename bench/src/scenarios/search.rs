//! tern only: history search (SearchMessages) latency over a big index.
//!
//! Setup: `--writers` users send `--messages` messages in total (pipelined, one
//! connection each) to one user `me`: three of four into their 1:1 conversation with
//! `me`, one of four into a group of everyone, so `me` can read all of them. Each text is
//! 8-12 words drawn from a 64-word vocabulary, plus `tag<k mod 1000>` (1,000 messages each)
//! and `id<k>` (one message each); every third also carries one of 16 Chinese phrases. The
//! server indexes as they come; the setup ends when the index has caught up
//! (`index_lag` 0), and reports how long that took after the last ack.
//!
//! Then, one request in flight on `me`'s connection, `--calls` searches of each kind (the
//! whole index in scope unless said): a word of one message, a word of 1,000, a common
//! word (about one message in seven), two common words, a Chinese word, a common word within
//! one conversation, and the fifth page of a common word (the page token of the fourth).

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

/// Sends in flight per writer.
const WINDOW: usize = 64;

const WORDS: [&str; 64] = [
    "the", "meeting", "project", "lunch", "tomorrow", "review", "deploy", "server", "coffee",
    "design", "budget", "release", "client", "team", "weekend", "report", "bug", "fix", "call",
    "office", "train", "late", "early", "great", "thanks", "please", "check", "update", "plan",
    "idea", "music", "movie", "dinner", "friday", "monday", "hotel", "flight", "ticket", "photo",
    "video", "document", "draft", "final", "launch", "metrics", "latency", "index", "search",
    "query", "result", "page", "window", "river", "mountain", "garden", "kitchen", "book", "paper",
    "letter", "phone", "screen", "table", "chair", "door",
];

const PHRASES: [&str; 16] = [
    "你好世界",
    "今天天气很好",
    "我们开会吧",
    "晚饭吃什么",
    "项目进展顺利",
    "明天见",
    "这个问题很难",
    "服务器重启了",
    "周末去爬山",
    "谢谢你的帮助",
    "会议改到下午",
    "新版本发布了",
    "请查看文档",
    "北京欢迎你",
    "世界和平",
    "数据库备份完成",
];

pub struct SearchArgs {
    pub messages: usize,
    pub writers: usize,
    pub calls: usize,
}

/// xorshift64*: the same texts every run.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The text of message `k`.
fn text(k: usize) -> String {
    let mut r = rng(k as u64 + 1);
    let n = 8 + (r() % 5) as usize;
    let mut words: Vec<String> = (0..n)
        .map(|_| WORDS[(r() % 64) as usize].to_string())
        .collect();
    words.push(format!("tag{}", k % 1000));
    words.push(format!("id{k}"));
    if k.is_multiple_of(3) {
        words.push(PHRASES[(r() % 16) as usize].to_string());
    }
    words.join(" ")
}

/// `writer`'s sends (pipelined, `WINDOW` in flight): messages `ks`.
async fn write(
    raw: &mut RawConnection,
    me: &str,
    group: &str,
    ks: impl Iterator<Item = usize>,
) -> anyhow::Result<u64> {
    let mut inflight: VecDeque<u64> = VecDeque::new();
    let mut ks = ks.peekable();
    let mut buf = Vec::new();
    let mut acked = 0;
    loop {
        buf.clear();
        while inflight.len() < WINDOW {
            let Some(k) = ks.next() else { break };
            let (conversation, peer) = if k % 4 == 3 {
                (group.to_string(), String::new())
            } else {
                (String::new(), me.to_string())
            };
            let req_id = raw.next_req_id();
            buf.extend_from_slice(&encode_frame(&Frame {
                req_id,
                body: Some(Body::Send(pb::Send {
                    client_msg_id: format!("s{k}"),
                    conversation,
                    peer,
                    body: text(k).into_bytes().into(),
                    ..Default::default()
                })),
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
            Some(Body::SendAck(_)) => acked += 1,
            Some(Body::Error(e)) => bail!("send refused: {} {}", e.code, e.message),
            other => bail!("send answered {other:?}"),
        }
        raw.pushes().clear();
    }
    Ok(acked)
}

async fn search(
    raw: &mut RawConnection,
    req: pb::SearchMessages,
) -> anyhow::Result<pb::SearchResult> {
    match raw.call(Body::SearchMessages(req)).await? {
        Body::SearchResult(r) => Ok(r),
        other => bail!("SearchMessages answered {}", tern_proto::body_name(&other)),
    }
}

fn query(q: &str) -> pb::SearchMessages {
    pb::SearchMessages {
        query: q.into(),
        ..Default::default()
    }
}

pub async fn run(ctx: &Ctx, s: SearchArgs) -> anyhow::Result<()> {
    if ctx.g.peer.is_some() {
        bail!("search is tern only");
    }
    let a = Tern::start(
        ctx,
        &["--search-rate", "1000000", "--search-burst", "1000000"],
        None,
    )?;
    let run = run_id();
    let me = format!("{run}-me");
    let writers: Vec<String> = (0..s.writers).map(|i| format!("{run}-w{i}")).collect();
    let mut users = vec![me.clone()];
    users.extend(writers.iter().cloned());
    a.prepare(&users).await?;
    let group = {
        let mut mine = a.session(0, &me, "bench").await?;
        match mine
            .call(Body::CreateGroup(pb::CreateGroup {
                name: "search bench".into(),
                members: writers.clone(),
                ..Default::default()
            }))
            .await?
        {
            Body::GroupCreated(g) => g.conversation,
            other => bail!("CreateGroup answered {}", tern_proto::body_name(&other)),
        }
    };

    // 1. The messages, every writer at once.
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (i, w) in writers.iter().enumerate() {
        let mut raw = a.session(1 + i, w, "bench").await?;
        raw.set_timeout(Duration::from_secs(300));
        let (me, group, n, total) = (me.clone(), group.clone(), s.writers, s.messages);
        tasks.push(tokio::spawn(async move {
            write(&mut raw, &me, &group, (i..total).step_by(n)).await
        }));
    }
    let mut acked = 0;
    for t in tasks {
        acked += t.await.context("writer task")??;
    }
    let send_secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "tern-bench: {acked} messages acked in {send_secs:.1} s ({:.0} msg/s); waiting for the index",
        acked as f64 / send_secs
    );

    // 2. Until everything is searchable.
    let mut mine = a.session(0, &me, "bench").await?;
    mine.set_timeout(Duration::from_secs(120));
    let t1 = Instant::now();
    let mut last_lag = 0;
    loop {
        let r = search(&mut mine, query("id0")).await?;
        if r.index_lag == 0 && !r.messages.is_empty() {
            break;
        }
        if r.index_lag != last_lag && t1.elapsed().as_secs().is_multiple_of(10) {
            eprintln!("tern-bench: index lag {}", r.index_lag);
        }
        last_lag = r.index_lag;
        if t1.elapsed() > Duration::from_secs(3600) {
            bail!(
                "the index did not catch up within an hour (lag {})",
                r.index_lag
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let catch_up = t1.elapsed().as_secs_f64();
    eprintln!("tern-bench: index caught up {catch_up:.1} s after the last ack; measuring");

    // 3. The measurement: one search in flight.
    let mut r = Report::new("search", "searches/s");
    r.param("messages", s.messages)
        .param("writers", s.writers)
        .param("calls", s.calls);
    ctx.common(&a, &mut r);
    let direct = tern_proto::direct_conversation(&me, &writers[0]);
    let mut pick = rng(7);
    let mut problems: Vec<String> = Vec::new();
    let all = Probe::start(a.pid(), false);
    let start = Instant::now();
    let mut searches = 0u64;
    type Make<'a> = Box<dyn FnMut(u64) -> pb::SearchMessages + 'a>;
    let kinds: Vec<(&str, Make<'_>, Option<usize>)> = vec![
        (
            "a word of one message (id<k>)",
            Box::new(|x| query(&format!("id{}", x as usize % s.messages))),
            Some(1),
        ),
        (
            "a word of 1,000 messages (tag<k>)",
            Box::new(|x| query(&format!("tag{}", x % 1000))),
            None,
        ),
        (
            "a common word (~1 in 7 messages)",
            Box::new(|x| query(WORDS[1 + (x % 63) as usize])),
            None,
        ),
        (
            "two common words",
            Box::new(|x| {
                query(&format!(
                    "{} {}",
                    WORDS[1 + (x % 63) as usize],
                    WORDS[1 + ((x >> 8) % 63) as usize]
                ))
            }),
            None,
        ),
        (
            "a Chinese word (2 characters)",
            Box::new(|x| query(["世界", "会议", "服务", "项目", "发布"][(x % 5) as usize])),
            None,
        ),
        (
            "a common word in one conversation",
            Box::new(|x| pb::SearchMessages {
                conversation: direct.clone(),
                ..query(WORDS[1 + (x % 63) as usize])
            }),
            None,
        ),
    ];
    for (name, mut make, want) in kinds {
        let mut hist = histogram();
        let mut hits = 0usize;
        for _ in 0..s.calls {
            let req = make(pick());
            let t = Instant::now();
            let res = search(&mut mine, req).await?;
            record_ns(&mut hist, t.elapsed().as_nanos() as u64);
            searches += 1;
            hits += res.messages.len();
            if let Some(w) = want {
                if res.messages.len() != w {
                    problems.push(format!("{name}: {} hits, expected {w}", res.messages.len()));
                }
            } else if res.messages.is_empty() {
                problems.push(format!("{name}: no hit"));
            }
        }
        r.latency(name, &hist);
        r.figure(
            &format!("hits per search: {name}"),
            hits as f64 / s.calls as f64,
            "",
        );
    }
    // The fifth page of a common word: pages 1-4 are read first (not timed).
    let mut hist = histogram();
    for _ in 0..s.calls {
        let mut req = query(WORDS[1 + (pick() % 63) as usize]);
        for _ in 0..4 {
            let page = search(&mut mine, req.clone()).await?;
            req.page = page.next_page;
            searches += 1;
        }
        let t = Instant::now();
        let page = search(&mut mine, req).await?;
        record_ns(&mut hist, t.elapsed().as_nanos() as u64);
        searches += 1;
        if page.messages.len() != 20 {
            problems.push(format!("fifth page: {} hits", page.messages.len()));
        }
    }
    r.latency("the fifth page of a common word", &hist);
    let (usage, gen) = all.finish();
    r.achieved = Some(searches as f64 / start.elapsed().as_secs_f64());
    r.server = usage;
    r.generator_cpu_pct = gen;
    r.count("messages acked", acked)
        .figure("send phase", send_secs, "s")
        .figure("index caught up after the last ack", catch_up, "s");
    problems.dedup();
    for p in problems {
        r.errors.push((p, 1));
    }
    a.notes(&mut r);
    ctx.print(&r);
    Ok(())
}
