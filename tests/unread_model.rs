//! Unread and mention counts against a model (issue 13), with the real server binary:
//! random but reproducible interleavings of sends by three users in their 1:1
//! conversations and a group (replies, mentions by name, @all by the owner), edits and
//! recalls, delete-for-me, MarkRead from two devices of one user at the same time as a
//! send, mute/unmute and pin/unpin, and refused requests that must change nothing. A
//! model keeps what every user's `ListConversations` must say (per conversation:
//! last_seq, read_seq, unread, mentions, muted, pinned; the total unread without the
//! muted ones; pinned ones first), and after every step each user's list is compared
//! with it. The server is killed with SIGKILL twice mid-run and restarted on the same
//! data dir; the counts must still match.
//!
//! The seed is printed and named in every failure; `UNREAD_MODEL_SEED=N` replays a run
//! (`UNREAD_MODEL_STEPS=N` changes its length). The generator is a SplitMix64 here, so
//! the test needs no dependency beyond the workspace's.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use tern_proto::pb::{self, ErrorCode};
use tern_proto::{direct_conversation, Body};
use tern_tests::*;

const BIN: &str = env!("CARGO_BIN_EXE_tern-test-server");
const USERS: [&str; 3] = ["uma", "umb", "umc"];
/// The owner of the group.
const OWNER: usize = 0;
/// The user with two devices.
const TWO: usize = 1;

/// SplitMix64: small, seedable, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pct(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len() as u64) as usize]
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Text,
    System,
    Edit,
    Recall,
}

#[derive(Clone, Debug)]
struct Entry {
    sender: usize,
    kind: Kind,
    mentions: Vec<usize>,
    all: bool,
    recalled: bool,
}

/// One conversation as the model sees it.
struct Conv {
    id: String,
    group: bool,
    members: Vec<usize>,
    /// Entry of seq n at index n - 1.
    entries: Vec<Entry>,
    read: [u64; 3],
    muted: [bool; 3],
    pinned: [bool; 3],
}

impl Conv {
    fn last(&self) -> u64 {
        self.entries.len() as u64
    }

    fn counts(&self, u: usize) -> (u64, u64) {
        let after = self.entries.iter().skip(self.read[u] as usize);
        let live: Vec<&Entry> = after
            .filter(|e| matches!(e.kind, Kind::Text | Kind::System) && !e.recalled)
            .collect();
        let mentions = live
            .iter()
            .filter(|e| e.mentions.contains(&u) || (e.all && e.sender != u))
            .count();
        (live.len() as u64, mentions as u64)
    }

    /// Appends an entry by `sender`; a Text or System entry moves the sender's read
    /// position to it.
    fn append(&mut self, e: Entry) -> u64 {
        let (sender, moves) = (e.sender, matches!(e.kind, Kind::Text | Kind::System));
        self.entries.push(e);
        let seq = self.last();
        if moves {
            self.read[sender] = self.read[sender].max(seq);
        }
        seq
    }
}

/// What one user's list must say about one conversation.
#[derive(Debug, PartialEq)]
struct Row {
    last_seq: u64,
    read_seq: u64,
    unread: u64,
    mentions: u64,
    muted: bool,
    pinned: bool,
}

struct Model {
    /// The group first, then the 1:1 conversations (created on their first message).
    convs: Vec<Conv>,
}

impl Model {
    fn expected(&self, u: usize) -> (BTreeMap<String, Row>, u64) {
        let mut rows = BTreeMap::new();
        let mut total = 0;
        for c in &self.convs {
            if !c.members.contains(&u) || c.entries.is_empty() {
                continue;
            }
            let (unread, mentions) = c.counts(u);
            if !c.muted[u] {
                total += unread;
            }
            rows.insert(
                c.id.clone(),
                Row {
                    last_seq: c.last(),
                    read_seq: c.read[u],
                    unread,
                    mentions,
                    muted: c.muted[u],
                    pinned: c.pinned[u],
                },
            );
        }
        (rows, total)
    }
}

/// The test's connections: one device per user, and a second device of user `TWO`.
struct Devices {
    d: Vec<Client>,
    second: Client,
}

impl Devices {
    async fn connect(server: &ProcessServer, register: bool) -> Self {
        let mut d = Vec::new();
        for (i, u) in USERS.iter().enumerate() {
            let mut c = server.client(if i % 2 == 0 { Tcp } else { Quic }).await;
            if register {
                c.register(u).await;
            }
            c.login(u, "phone").await;
            d.push(c);
        }
        let mut second = server.client(Tcp).await;
        second.login(USERS[TWO], "laptop").await;
        Devices { d, second }
    }

    /// A device of user `u` (for user `TWO`, either of them).
    fn of(&mut self, u: usize, rng: &mut Rng) -> &mut Client {
        if u == TWO && rng.pct(50) {
            &mut self.second
        } else {
            &mut self.d[u]
        }
    }

    /// Drops the pushes nobody reads here, so they do not pile up.
    fn clear(&mut self) {
        for c in self.d.iter_mut().chain(std::iter::once(&mut self.second)) {
            c.pushes().clear();
        }
    }
}

async fn list(c: &mut Client) -> pb::ConversationList {
    expect_body!(
        c.request(Body::ListConversations(pb::ListConversations::default()))
            .await,
        ConversationList
    )
}

fn mark_read(conv: &str, seq: u64) -> Body {
    Body::MarkRead(pb::MarkRead {
        conversation: conv.into(),
        seq,
    })
}

fn settings(conv: &str, muted: Option<bool>, pinned: Option<bool>) -> Body {
    Body::SetConversationSettings(pb::SetConversationSettings {
        conversation: conv.into(),
        muted,
        pinned,
    })
}

/// Compares every user's list with the model.
/// `second`: read user `TWO`'s list on their second device (both must agree with it).
async fn check(dev: &mut Devices, m: &Model, second: bool, ctx: &str) {
    for (u, name) in USERS.iter().enumerate() {
        let (want, want_total) = m.expected(u);
        let c = if u == TWO && second {
            &mut dev.second
        } else {
            &mut dev.d[u]
        };
        let l = list(c).await;
        let got: BTreeMap<String, Row> = l
            .conversations
            .iter()
            .map(|c| {
                (
                    c.conversation.clone(),
                    Row {
                        last_seq: c.last_seq,
                        read_seq: c.read_seq,
                        unread: c.unread,
                        mentions: c.mentions,
                        muted: c.muted,
                        pinned: c.pinned,
                    },
                )
            })
            .collect();
        if got != want {
            // What the model holds, to see which rule differs.
            for c in &m.convs {
                let row = |e: &Entry| {
                    format!(
                        "{}:{:?}{}{}{}",
                        USERS[e.sender],
                        e.kind,
                        if e.mentions.is_empty() {
                            String::new()
                        } else {
                            format!("@{:?}", e.mentions)
                        },
                        if e.all { "@all" } else { "" },
                        if e.recalled { " recalled" } else { "" }
                    )
                };
                let entries: Vec<String> = c.entries.iter().map(row).collect();
                eprintln!("{} read {:?}: {}", c.id, c.read, entries.join(", "));
            }
        }
        assert_eq!(got, want, "{ctx}: the list of {name}");
        assert_eq!(
            (l.total_unread, l.total as usize),
            (want_total, want.len()),
            "{ctx}: total_unread and total of {name}"
        );
        let pins: Vec<bool> = l.conversations.iter().map(|c| c.pinned).collect();
        assert!(
            pins.windows(2).all(|w| w[0] || !w[1]),
            "{ctx}: pinned conversations come first for {name}: {pins:?}"
        );
    }
}

/// A conversation `u` is in that has messages, if any.
fn existing(m: &Model, u: usize, rng: &mut Rng) -> Option<usize> {
    let ids: Vec<usize> = (0..m.convs.len())
        .filter(|&i| m.convs[i].members.contains(&u) && !m.convs[i].entries.is_empty())
        .collect();
    (!ids.is_empty()).then(|| rng.pick(&ids))
}

/// A Send with random mentions (by name, sometimes @all) and a random reply-to.
fn random_send(
    m: &Model,
    ci: usize,
    sender: usize,
    cmid: String,
    rng: &mut Rng,
) -> (pb::Send, Entry) {
    let c = &m.convs[ci];
    let mut names = Vec::new();
    let mut mentioned = Vec::new();
    if rng.pct(40) {
        for &u in &c.members {
            if rng.pct(50) {
                names.push(USERS[u].to_string());
                if u != sender {
                    mentioned.push(u);
                }
            }
        }
    }
    let all = c.group && sender == OWNER && rng.pct(20);
    let reply_to = if c.last() > 0 && rng.pct(30) {
        1 + rng.below(c.last())
    } else {
        0
    };
    let peer = c.members.iter().find(|&&u| u != sender).copied().unwrap();
    let (conversation, peer) = if c.group || !c.entries.is_empty() {
        (c.id.clone(), String::new())
    } else {
        (String::new(), USERS[peer].to_string())
    };
    let send = pb::Send {
        client_msg_id: cmid.clone(),
        conversation,
        peer,
        body: format!("text {cmid}").into_bytes().into(),
        reply_to,
        mentions: names,
        mention_all: all,
        ..Default::default()
    };
    let e = Entry {
        sender,
        kind: Kind::Text,
        mentions: mentioned,
        all,
        recalled: false,
    };
    (send, e)
}

fn seed() -> u64 {
    match std::env::var("UNREAD_MODEL_SEED") {
        Ok(s) => s.parse().expect("UNREAD_MODEL_SEED is a u64"),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_and_mentions_match_a_model_under_random_interleavings_and_kill_9() {
    let seed = seed();
    let steps: usize = std::env::var("UNREAD_MODEL_STEPS")
        .map(|s| s.parse().expect("UNREAD_MODEL_STEPS is a number"))
        .unwrap_or(1000);
    eprintln!("unread_model: seed {seed} ({steps} steps); replay with UNREAD_MODEL_SEED={seed}");
    let mut rng = Rng(seed);
    // Three kills, each at a random step of its quarter of the run.
    let kills: Vec<usize> = (0..3)
        .map(|k| (k + 1) * steps / 4 + rng.below((steps / 8).max(1) as u64) as usize)
        .collect();
    let mut restarts = 0;

    let data = tempfile::tempdir().unwrap();
    let mut server = ProcessServer::spawn(BIN, data.path());
    let mut dev = Devices::connect(&server, true).await;
    let g = dev.d[OWNER]
        .create_group("model", &[USERS[1], USERS[2]])
        .await;
    let mut m = Model { convs: Vec::new() };
    let mut group = Conv {
        id: g.conversation.clone(),
        group: true,
        members: vec![0, 1, 2],
        entries: Vec::new(),
        read: [0; 3],
        muted: [false; 3],
        pinned: [false; 3],
    };
    group.append(Entry {
        sender: OWNER,
        kind: Kind::System,
        mentions: Vec::new(),
        all: false,
        recalled: false,
    });
    m.convs.push(group);
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        m.convs.push(Conv {
            id: direct_conversation(USERS[a], USERS[b]),
            group: false,
            members: vec![a, b],
            entries: Vec::new(),
            read: [0; 3],
            muted: [false; 3],
            pinned: [false; 3],
        });
    }
    check(
        &mut dev,
        &m,
        false,
        &format!("seed {seed}, after creating the group"),
    )
    .await;

    let mut cmid = 0u64;
    let mut next_cmid = || {
        cmid += 1;
        format!("m{cmid}")
    };
    for step in 0..steps {
        let ctx = format!("seed {seed} (UNREAD_MODEL_SEED={seed}), step {step}");
        let roll = rng.below(100);
        'step: {
            match roll {
                // A send (creates a 1:1 conversation on its first message).
                0..=34 => {
                    let sender = rng.below(3) as usize;
                    let mine: Vec<usize> = (0..m.convs.len())
                        .filter(|&i| m.convs[i].members.contains(&sender))
                        .collect();
                    let ci = rng.pick(&mine);
                    let (send, e) = random_send(&m, ci, sender, next_cmid(), &mut rng);
                    let f = dev.of(sender, &mut rng).request(Body::Send(send)).await;
                    let ack = ack_of(&f);
                    let seq = m.convs[ci].append(e);
                    assert_eq!(
                        (ack.conversation.as_str(), ack.seq),
                        (m.convs[ci].id.as_str(), seq),
                        "{ctx}: send"
                    );
                }
                // Both devices of user TWO mark read while another member sends.
                35..=54 => {
                    let Some(ci) = existing(&m, TWO, &mut rng) else {
                        break 'step;
                    };
                    let last = m.convs[ci].last();
                    let (s1, s2) = (1 + rng.below(last), 1 + rng.below(last));
                    let other = rng.pick(
                        &m.convs[ci]
                            .members
                            .iter()
                            .copied()
                            .filter(|&u| u != TWO)
                            .collect::<Vec<_>>(),
                    );
                    let (send, e) = random_send(&m, ci, other, next_cmid(), &mut rng);
                    let conv = m.convs[ci].id.clone();
                    let before = m.convs[ci].read[TWO];
                    let (Devices { d, second }, conv2) = (&mut dev, conv.clone());
                    let (first, rest) = d.split_at_mut(TWO);
                    let (b1, rest) = rest.split_first_mut().unwrap();
                    let sender_dev = if other < TWO {
                        &mut first[other]
                    } else {
                        &mut rest[other - TWO - 1]
                    };
                    let (r1, r2, f) = tokio::join!(
                        b1.request(mark_read(&conv, s1)),
                        second.request(mark_read(&conv2, s2)),
                        sender_dev.request(Body::Send(send)),
                    );
                    ack_of(&f);
                    m.convs[ci].append(e);
                    for (r, s) in [(r1, s1), (r2, s2)] {
                        let st = expect_body!(r, ReadState);
                        assert!(
                        st.read_seq >= before.max(s) && st.read_seq <= before.max(s1).max(s2),
                        "{ctx}: ReadState {st:?} after MarkRead {s} (read was {before}, the two asked {s1} and {s2})"
                    );
                    }
                    let read = &mut m.convs[ci].read[TWO];
                    *read = (*read).max(s1).max(s2);
                }
                // One device marks read (0 = everything).
                55..=64 => {
                    let u = rng.below(3) as usize;
                    let Some(ci) = existing(&m, u, &mut rng) else {
                        break 'step;
                    };
                    let last = m.convs[ci].last();
                    let s = rng.below(last + 1);
                    let conv = m.convs[ci].id.clone();
                    let st = expect_body!(
                        dev.of(u, &mut rng).request(mark_read(&conv, s)).await,
                        ReadState
                    );
                    let c = &mut m.convs[ci];
                    c.read[u] = c.read[u].max(if s == 0 { last } else { s });
                    assert_eq!(
                        (st.read_seq, st.unread),
                        (c.read[u], c.counts(u).0),
                        "{ctx}: ReadState of {} after MarkRead {s}",
                        USERS[u]
                    );
                }
                // Mute or unmute; pin or unpin.
                65..=74 => {
                    let u = rng.below(3) as usize;
                    let Some(ci) = existing(&m, u, &mut rng) else {
                        break 'step;
                    };
                    let conv = m.convs[ci].id.clone();
                    let c = &mut m.convs[ci];
                    let body = if rng.pct(70) {
                        c.muted[u] = !c.muted[u];
                        settings(&conv, Some(c.muted[u]), None)
                    } else {
                        c.pinned[u] = !c.pinned[u];
                        settings(&conv, None, Some(c.pinned[u]))
                    };
                    let s = expect_body!(
                        dev.of(u, &mut rng).request(body).await,
                        ConversationSettings
                    );
                    assert_eq!(
                        (s.muted, s.pinned),
                        (c.muted[u], c.pinned[u]),
                        "{ctx}: settings"
                    );
                }
                // Recall: the sender (the run is far inside the 2-minute window) or the
                // group's owner.
                75..=82 => {
                    let u = rng.below(3) as usize;
                    let Some(ci) = existing(&m, u, &mut rng) else {
                        break 'step;
                    };
                    let c = &m.convs[ci];
                    let owner = c.group && u == OWNER;
                    let targets: Vec<u64> = (1..=c.last())
                        .filter(|&s| {
                            let e = &c.entries[s as usize - 1];
                            e.kind == Kind::Text && !e.recalled && (e.sender == u || owner)
                        })
                        .collect();
                    if targets.is_empty() {
                        break 'step;
                    }
                    let seq = rng.pick(&targets);
                    let body = Body::Recall(pb::Recall {
                        client_msg_id: next_cmid(),
                        conversation: c.id.clone(),
                        seq,
                    });
                    let f = dev.of(u, &mut rng).request(body).await;
                    ack_of(&f);
                    let c = &mut m.convs[ci];
                    c.entries[seq as usize - 1].recalled = true;
                    c.append(Entry {
                        sender: u,
                        kind: Kind::Recall,
                        mentions: Vec::new(),
                        all: false,
                        recalled: false,
                    });
                }
                // Edit one's own message: an EDIT entry that no one counts.
                83..=88 => {
                    let u = rng.below(3) as usize;
                    let Some(ci) = existing(&m, u, &mut rng) else {
                        break 'step;
                    };
                    let c = &m.convs[ci];
                    let targets: Vec<u64> = (1..=c.last())
                        .filter(|&s| {
                            let e = &c.entries[s as usize - 1];
                            e.kind == Kind::Text && !e.recalled && e.sender == u
                        })
                        .collect();
                    if targets.is_empty() {
                        break 'step;
                    }
                    let body = Body::Edit(pb::Edit {
                        client_msg_id: next_cmid(),
                        conversation: c.id.clone(),
                        seq: rng.pick(&targets),
                        body: b"edited".to_vec().into(),
                        content_type: String::new(),
                    });
                    ack_of(&dev.of(u, &mut rng).request(body).await);
                    m.convs[ci].append(Entry {
                        sender: u,
                        kind: Kind::Edit,
                        mentions: Vec::new(),
                        all: false,
                        recalled: false,
                    });
                }
                // Delete for me: hides, counts nothing.
                89..=92 => {
                    let u = rng.below(3) as usize;
                    let Some(ci) = existing(&m, u, &mut rng) else {
                        break 'step;
                    };
                    let body = Body::DeleteForMe(pb::DeleteForMe {
                        conversation: m.convs[ci].id.clone(),
                        seq: 1 + rng.below(m.convs[ci].last()),
                    });
                    expect_ok(&dev.of(u, &mut rng).request(body).await);
                }
                // Refused requests change nothing.
                _ => {
                    let u = rng.below(3) as usize;
                    let Some(ci) = existing(&m, u, &mut rng) else {
                        break 'step;
                    };
                    let c = &m.convs[ci];
                    let other_msg = (1..=c.last()).find(|&s| {
                        let e = &c.entries[s as usize - 1];
                        e.kind == Kind::Text && e.sender != u && !e.recalled
                    });
                    let (body, code) = match (rng.below(3), other_msg) {
                        (0, Some(seq)) if !(c.group && u == OWNER) => (
                            Body::Recall(pb::Recall {
                                client_msg_id: next_cmid(),
                                conversation: c.id.clone(),
                                seq,
                            }),
                            ErrorCode::Forbidden,
                        ),
                        (1, Some(seq)) => (
                            Body::Edit(pb::Edit {
                                client_msg_id: next_cmid(),
                                conversation: c.id.clone(),
                                seq,
                                body: b"not mine".to_vec().into(),
                                content_type: String::new(),
                            }),
                            ErrorCode::Forbidden,
                        ),
                        _ => (
                            mark_read(&c.id, c.last() + 1 + rng.below(3)),
                            ErrorCode::InvalidArgument,
                        ),
                    };
                    let f = dev.of(u, &mut rng).request(body).await;
                    expect_error(&f, code);
                }
            }
        }
        dev.clear();
        if kills.contains(&step) {
            // Every request of this step was answered, so all of it is durable.
            server.kill9();
            server = ProcessServer::spawn(BIN, data.path());
            dev = Devices::connect(&server, false).await;
            restarts += 1;
            eprintln!("unread_model: killed -9 and restarted after step {step}");
        }
        check(&mut dev, &m, step % 2 == 1, &ctx).await;
    }
    // The run did what it claims: the kills, messages in every conversation, some of
    // everything.
    assert_eq!(restarts, kills.len(), "seed {seed}: every kill happened");
    let all: Vec<&Entry> = m.convs.iter().flat_map(|c| &c.entries).collect();
    assert!(
        m.convs.iter().all(|c| c.last() > 0),
        "seed {seed}: every conversation got messages"
    );
    for (what, n) in [
        (
            "recalls",
            all.iter().filter(|e| e.kind == Kind::Recall).count(),
        ),
        ("edits", all.iter().filter(|e| e.kind == Kind::Edit).count()),
        (
            "mentions",
            all.iter()
                .filter(|e| !e.mentions.is_empty() || e.all)
                .count(),
        ),
    ] {
        assert!(n > 0, "seed {seed}: no {what} in {steps} steps");
    }
}

/// The rule the random run found broken first, on its own: a message that names the
/// user and is also an @all is one message that mentions them, not two.
#[tokio::test]
async fn a_message_naming_the_user_and_at_all_is_one_mention() {
    let server = TestServer::start().await;
    let mut o = server.user(Tcp, "m1o", "d").await;
    let mut a = server.user(Tcp, "m1a", "d").await;
    let g = o.create_group("g", &["m1a"]).await;
    let f = o
        .request(Body::Send(pb::Send {
            client_msg_id: "both".into(),
            conversation: g.conversation.clone(),
            body: b"@m1a @all".to_vec().into(),
            mentions: vec!["m1a".into()],
            mention_all: true,
            ..Default::default()
        }))
        .await;
    ack_of(&f);
    let l = list(&mut a).await;
    let c = &l.conversations[0];
    // The CREATED event and the message.
    assert_eq!((c.unread, c.mentions), (2, 1), "{c:?}");
    server.stop().await;
}
