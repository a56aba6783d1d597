//! The engine's delivery rules, driven frame by frame with explicit times: ordering,
//! gaps, resend, dedup, acks. (Auth, keep-alive and close have their tests beside their
//! code.)

use std::time::Instant;

use bytes::Bytes;
use tern_proto::pb::{self, ErrorCode};
use tern_proto::{Body, Frame};

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
        reply_to: 0,
        mentions: vec![],
        mention_all: false,
        ttl_secs: 0,
        created_ms: 0,
        attachment: None,
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
                ..Default::default()
            })),
        },
        now,
    );
    assert_eq!(delivered(&mut e), vec![2, 3, 4]);
    assert_eq!(e.cursors().conversations.get(g), Some(&4));
}

#[test]
fn a_group_whose_history_starts_later_for_us_is_not_a_gap() {
    // A member added at seq 40 of a JOINED group (history visibility) hears of seq 41
    // first: the pull from 0 is answered from first_seq 40, and nothing loops.
    let now = Instant::now();
    let mut e = connected("alice");
    let g = "g:00000000000000bb";
    e.handle_frame(push(0, msg(g, 41, "bob")), now);
    assert!(delivered(&mut e).is_empty());
    let pull = drain_tx(&mut e)
        .into_iter()
        .find_map(|f| match f.body {
            Some(Body::Pull(p)) => Some((f.req_id, p)),
            _ => None,
        })
        .expect("a pull");
    assert_eq!(pull.1.after_seq, 0);
    e.handle_frame(
        Frame {
            req_id: pull.0,
            body: Some(Body::PullResult(pb::PullResult {
                conversation: g.into(),
                messages: vec![msg(g, 40, "bob")],
                from_seq: 40,
                to_seq: 40,
                last_seq: 41,
                complete: true,
                first_seq: 40,
            })),
        },
        now,
    );
    assert_eq!(delivered(&mut e), vec![40, 41]);
    assert_eq!(e.cursors().conversations.get(g), Some(&41));
    assert!(
        !drain_tx(&mut e)
            .iter()
            .any(|f| matches!(f.body, Some(Body::Pull(_)))),
        "no further pull"
    );
}

#[test]
fn a_new_store_epoch_voids_old_cursors() {
    let cursors = Cursors {
        store_epoch: "old".into(),
        inbox: 42,
        conversations: [("g:1".to_string(), 9)].into_iter().collect(),
        delivered: Default::default(),
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

#[test]
fn a_reconnect_resumes_with_the_new_token_and_resends_what_was_not_acked() {
    use crate::connect::Transport;
    use std::time::Duration;
    let t0 = Instant::now();
    let mut e = Engine::new("alice", Cursors::default(), vec![]);
    e.set_receive(false);
    e.set_credentials(
        Credentials {
            username: "alice".into(),
            password: Some("pw".into()),
            device: "d".into(),
        },
        None,
    );
    let login_ok = |req_id: u64, token: &str| Frame {
        req_id,
        body: Some(Body::LoginOk(pb::LoginOk {
            token: token.into(),
            heartbeat_secs: 5,
            max_pending: 16,
            store_epoch: "ep".into(),
            ..Default::default()
        })),
    };
    // First connection: Login, then a send that never gets its ack.
    e.handle_connect(Transport::Quic, t0);
    let login = e.poll_transmit().unwrap();
    assert!(matches!(login.body, Some(Body::Login(_))));
    e.handle_frame(login_ok(login.req_id, "t1"), t0);
    e.send(out("m1"));
    let first: Vec<Frame> = drain_tx(&mut e);
    assert!(first
        .iter()
        .any(|f| matches!(&f.body, Some(Body::Send(s)) if s.client_msg_id == "m1")));
    // The server shuts down.
    e.handle_frame(
        Frame {
            req_id: 0,
            body: Some(Body::Closing(pb::Closing {
                reason: pb::CloseReason::Shutdown as i32,
                message: "restart".into(),
                retry_after_ms: 500,
            })),
        },
        t0 + Duration::from_secs(1),
    );
    assert_eq!(
        e.poll_disconnect(),
        Some(Disconnect::Retry {
            reason: "server closed: restart".into(),
            retry_after: Duration::from_millis(500)
        })
    );
    assert!(e.on_disconnected().is_empty());
    assert!(e.poll_timeout().is_none(), "no timers while offline");
    // Second connection: Resume with the token from the first LoginOk; then m1 again,
    // with the same id.
    let t1 = t0 + Duration::from_secs(3);
    e.handle_connect(Transport::Tcp, t1);
    let resume = e.poll_transmit().unwrap();
    assert!(matches!(&resume.body, Some(Body::Resume(r)) if r.token == "t1"));
    assert!(
        e.poll_transmit().is_none(),
        "nothing before the login is answered"
    );
    e.handle_frame(login_ok(resume.req_id, "t2"), t1);
    assert_eq!(e.token(), Some("t2"));
    let resent: Vec<String> = drain_tx(&mut e)
        .into_iter()
        .filter_map(|f| match f.body {
            Some(Body::Send(s)) => Some(s.client_msg_id),
            _ => None,
        })
        .collect();
    assert_eq!(resent, vec!["m1"]);
    let connected: Vec<Event> = std::iter::from_fn(|| e.poll_event())
        .filter(|ev| matches!(ev, Event::Connected { .. }))
        .collect();
    assert_eq!(connected.len(), 2, "one Connected per login");
}

fn read_receipt(conv: &str, user: &str, read_seq: u64) -> Frame {
    Frame {
        req_id: 0,
        body: Some(Body::ReadReceipt(pb::ReadReceipt {
            conversation: conv.into(),
            user: user.into(),
            read_seq,
        })),
    }
}

#[test]
fn read_receipts_become_read_events_own_for_the_users_devices() {
    let now = Instant::now();
    let mut e = connected("bob");
    // Another of bob's devices (or this one) read: clear the badge.
    e.handle_frame(read_receipt("d:alice:bob", "bob", 2), now);
    // Alice read what bob sent: a receipt.
    e.handle_frame(read_receipt("d:alice:bob", "alice", 7), now);
    let events: Vec<Event> = std::iter::from_fn(|| e.poll_event()).collect();
    assert_eq!(
        events,
        vec![
            Event::Read {
                conversation: "d:alice:bob".into(),
                user: "bob".into(),
                read_seq: 2,
                own: true,
            },
            Event::Read {
                conversation: "d:alice:bob".into(),
                user: "alice".into(),
                read_seq: 7,
                own: false,
            },
        ]
    );
    // Receipts are not messages: no cursor moves, nothing to ack or send.
    assert_eq!(e.cursors().inbox, 0);
    assert!(drain_tx(&mut e).is_empty());
    assert!(e.poll_timeout().is_none(), "no ack timer");
    assert_eq!(e.poll_disconnect(), None);
}

#[test]
fn a_send_only_engine_ignores_read_receipts() {
    let now = Instant::now();
    let mut e = Engine::new("bob", Cursors::default(), vec![]);
    e.set_receive(false);
    e.on_connected("ep");
    e.handle_frame(read_receipt("d:alice:bob", "alice", 1), now);
    assert_eq!(e.poll_event(), None);
}

/// docs/PROTOCOL.md 13: a push whose body this client does not know (a newer server's)
/// is ignored, and messages keep flowing.
#[test]
fn unknown_pushes_and_fields_are_ignored() {
    use prost::Message as _;
    // A tag of a body field this version does not have: field 299, length-delimited.
    fn with_unknown_field(mut bytes: Vec<u8>) -> Vec<u8> {
        let key = (299u64 << 3) | 2;
        prost::encoding::encode_varint(key, &mut bytes);
        let payload = b"\x0a\x03abc";
        prost::encoding::encode_varint(payload.len() as u64, &mut bytes);
        bytes.extend_from_slice(payload);
        bytes
    }
    let now = Instant::now();
    let mut e = connected("bob");
    let unknown = with_unknown_field(
        Frame {
            req_id: 0,
            body: None,
        }
        .encode_to_vec(),
    );
    let frame = Frame::decode(&unknown[..]).expect("unknown fields are skipped");
    assert_eq!(frame.body, None, "an unknown push decodes to no body");
    e.handle_frame(frame, now);
    assert_eq!(e.poll_event(), None);
    assert!(drain_tx(&mut e).is_empty());
    assert_eq!(e.poll_disconnect(), None);
    // A push kind the engine knows of but has no use for is ignored too.
    e.handle_frame(
        Frame {
            req_id: 0,
            body: Some(Body::ReadState(pb::ReadState::default())),
        },
        now,
    );
    assert_eq!(e.poll_event(), None);
    // A known push with a field added later still works.
    let receipt = with_unknown_field(read_receipt("d:alice:bob", "alice", 3).encode_to_vec());
    e.handle_frame(Frame::decode(&receipt[..]).unwrap(), now);
    assert!(matches!(
        e.poll_event(),
        Some(Event::Read {
            read_seq: 3,
            own: false,
            ..
        })
    ));
    // And messages are still delivered, in order.
    e.handle_frame(push(1, msg("d:alice:bob", 1, "alice")), now);
    e.handle_frame(push(2, msg("d:alice:bob", 2, "alice")), now);
    assert_eq!(delivered(&mut e), vec![1, 2]);
}

fn settings_changed(conv: &str, muted: bool, pinned: bool) -> Frame {
    Frame {
        req_id: 0,
        body: Some(Body::SettingsChanged(pb::ConversationSettings {
            conversation: conv.into(),
            muted,
            pinned,
        })),
    }
}

#[test]
fn settings_changed_pushes_become_settings_events_in_order() {
    let now = Instant::now();
    let mut e = connected("bob");
    // Pinned on another of bob's devices, then muted too (each push carries both).
    e.handle_frame(settings_changed("d:alice:bob", false, true), now);
    e.handle_frame(settings_changed("d:alice:bob", true, true), now);
    e.handle_frame(settings_changed("g:00000000000000aa", false, false), now);
    let events: Vec<Event> = std::iter::from_fn(|| e.poll_event()).collect();
    assert_eq!(
        events,
        vec![
            Event::SettingsChanged {
                conversation: "d:alice:bob".into(),
                muted: false,
                pinned: true,
            },
            Event::SettingsChanged {
                conversation: "d:alice:bob".into(),
                muted: true,
                pinned: true,
            },
            Event::SettingsChanged {
                conversation: "g:00000000000000aa".into(),
                muted: false,
                pinned: false,
            },
        ]
    );
    // Not a message: no cursor moves, nothing to ack or send.
    assert_eq!(e.cursors().inbox, 0);
    assert!(drain_tx(&mut e).is_empty());
    assert!(e.poll_timeout().is_none(), "no ack timer");
    assert_eq!(e.poll_disconnect(), None);
    // Messages around it are delivered as before.
    e.handle_frame(push(1, msg("d:alice:bob", 1, "alice")), now);
    assert_eq!(delivered(&mut e), vec![1]);
}

#[test]
fn a_send_only_engine_ignores_settings_changed() {
    let now = Instant::now();
    let mut e = Engine::new("bob", Cursors::default(), vec![]);
    e.set_receive(false);
    e.on_connected("ep");
    e.handle_frame(settings_changed("d:alice:bob", true, false), now);
    assert_eq!(e.poll_event(), None);
}

/// The same message as the answer body (`conversation_settings`, 113) is not the push
/// (`settings_changed`, 203): even with req_id 0 it is no event.
#[test]
fn a_conversation_settings_response_is_not_an_event() {
    let now = Instant::now();
    let mut e = connected("bob");
    e.handle_frame(
        Frame {
            req_id: 0,
            body: Some(Body::ConversationSettings(pb::ConversationSettings {
                conversation: "d:alice:bob".into(),
                muted: true,
                pinned: false,
            })),
        },
        now,
    );
    assert_eq!(e.poll_event(), None);
}

fn typing_event(conv: &str, user: &str, typing: bool, expires_ms: u64) -> Frame {
    Frame {
        req_id: 0,
        body: Some(Body::TypingEvent(pb::TypingEvent {
            conversation: conv.into(),
            user: user.into(),
            typing,
            expires_ms,
        })),
    }
}

#[test]
fn typing_pushes_become_typing_events_in_order() {
    let now = Instant::now();
    let mut e = connected("bob");
    e.handle_frame(
        typing_event("d:alice:bob", "alice", true, 1_000_006_000),
        now,
    );
    e.handle_frame(push(1, msg("d:alice:bob", 1, "alice")), now);
    e.handle_frame(typing_event("d:alice:bob", "alice", false, 0), now);
    let events: Vec<Event> = std::iter::from_fn(|| e.poll_event()).collect();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(
        events[0],
        Event::Typing {
            conversation: "d:alice:bob".into(),
            user: "alice".into(),
            typing: true,
            expires_ms: 1_000_006_000,
        }
    );
    assert!(matches!(&events[1], Event::Message { message, own: false } if message.seq == 1));
    assert_eq!(
        events[2],
        Event::Typing {
            conversation: "d:alice:bob".into(),
            user: "alice".into(),
            typing: false,
            expires_ms: 0,
        }
    );
    // Transient: the typing events moved no cursor (only the message did).
    assert_eq!(e.cursors().inbox, 1);
}

#[test]
fn a_send_only_engine_ignores_typing() {
    let now = Instant::now();
    let mut e = Engine::new("bob", Cursors::default(), vec![]);
    e.set_receive(false);
    e.on_connected("ep");
    e.handle_frame(typing_event("d:alice:bob", "alice", true, 1), now);
    assert_eq!(e.poll_event(), None);
}

/// An outbox entry's reply and mentions go on the wire with it.
#[test]
fn a_send_carries_reply_to_and_mentions() {
    let mut e = connected("bob");
    e.send(Outgoing {
        reply_to: 4,
        mentions: vec!["carol".into()],
        mention_all: true,
        ..out("m1")
    });
    let frames = drain_tx(&mut e);
    let send = frames
        .iter()
        .find_map(|f| match &f.body {
            Some(Body::Send(s)) => Some(s.clone()),
            _ => None,
        })
        .expect("a Send");
    assert_eq!(send.client_msg_id, "m1");
    assert_eq!(send.reply_to, 4);
    assert_eq!(send.mentions, vec!["carol".to_string()]);
    assert!(send.mention_all);
}

fn ttl_out(id: &str, ttl_secs: u32, created_ms: u64) -> Outgoing {
    Outgoing {
        ttl_secs,
        created_ms,
        ..out(id)
    }
}

fn sends(frames: &[Frame]) -> Vec<pb::Send> {
    frames
        .iter()
        .filter_map(|f| match &f.body {
            Some(Body::Send(s)) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn expired_sends(e: &mut Engine) -> Vec<String> {
    std::iter::from_fn(|| e.poll_event())
        .filter_map(|ev| match ev {
            EngineEvent::SendExpired { client_msg_id, .. } => Some(client_msg_id),
            _ => None,
        })
        .collect()
}

/// Queued offline with a 10 s TTL: after 10 s it is dropped and reported, never sent; an
/// entry without a TTL next to it is sent as usual.
#[test]
fn an_expiring_send_queued_offline_is_dropped_after_its_ttl_not_sent() {
    let t0 = 1_700_000_000_000u64;
    let mut e = Engine::new("alice", Cursors::default(), vec![]);
    e.set_now_ms(t0);
    e.send(ttl_out("short", 10, t0));
    e.send(out("durable"));
    assert_eq!(e.next_expiry_ms(), Some(t0 + 10_000));
    e.set_now_ms(t0 + 9_999);
    e.expire_outbox();
    assert_eq!(e.outbox_len(), 2, "not before its TTL");
    e.set_now_ms(t0 + 10_000);
    e.on_connected("ep");
    assert_eq!(expired_sends(&mut e), vec!["short".to_string()]);
    let sent: Vec<String> = sends(&drain_tx(&mut e))
        .into_iter()
        .map(|s| s.client_msg_id)
        .collect();
    assert_eq!(
        sent,
        vec!["durable".to_string()],
        "the expired one never goes out"
    );
    assert_eq!(e.outbox_len(), 1);
    assert!(e.outbox().iter().all(|o| o.client_msg_id != "short"));
}

/// A resend carries what is left of the TTL (rounded up), so the server drops the message
/// when the app meant it to, not a full TTL after the reconnect.
#[test]
fn a_resend_carries_the_ttl_that_is_left() {
    let t0 = 1_700_000_000_000u64;
    let mut e = Engine::new("alice", Cursors::default(), vec![]);
    e.set_now_ms(t0);
    e.on_connected("ep");
    drain_tx(&mut e);
    e.send(ttl_out("m", 60, t0));
    assert_eq!(sends(&drain_tx(&mut e))[0].ttl_secs, 60);
    // The connection drops before the ack; 20.5 s later it is back.
    e.on_disconnected();
    e.set_now_ms(t0 + 20_500);
    e.on_connected("ep");
    let again = sends(&drain_tx(&mut e));
    assert_eq!(
        (again[0].client_msg_id.as_str(), again[0].ttl_secs),
        ("m", 40)
    );
    assert!(expired_sends(&mut e).is_empty());
}

/// A send in flight is left to its answer even when its TTL passes meanwhile (it may be
/// stored already); one refused with a retryable error expires while it waits.
#[test]
fn only_unsent_entries_expire() {
    let t0 = 1_700_000_000_000u64;
    let now = Instant::now();
    let mut e = Engine::new("alice", Cursors::default(), vec![]);
    e.set_receive(false);
    e.set_now_ms(t0);
    e.on_connected("ep");
    e.send(ttl_out("m", 5, t0));
    let f = drain_tx(&mut e).pop().unwrap();
    e.set_now_ms(t0 + 6_000);
    e.expire_outbox();
    assert_eq!(e.outbox_len(), 1, "in flight: kept");
    e.handle_frame(
        Frame {
            req_id: f.req_id,
            body: Some(Body::Error(pb::Error {
                code: ErrorCode::Unavailable as i32,
                message: "busy".into(),
                retry_after_ms: 0,
            })),
        },
        now,
    );
    assert_eq!(expired_sends(&mut e), vec!["m".to_string()]);
    assert_eq!(e.outbox_len(), 0);
    e.handle_timeout(now + RETRY_DELAY);
    assert!(sends(&drain_tx(&mut e)).is_empty(), "not retried");
}

/// Without the wall-clock time, or without a TTL, nothing expires (old callers).
#[test]
fn nothing_expires_without_a_clock_or_a_ttl() {
    let mut e = Engine::new("alice", Cursors::default(), vec![ttl_out("m", 1, 1)]);
    e.expire_outbox();
    assert_eq!(e.outbox_len(), 1);
    let mut e2 = Engine::new("alice", Cursors::default(), vec![out("d")]);
    e2.set_now_ms(u64::MAX / 2);
    e2.expire_outbox();
    assert_eq!(e2.outbox_len(), 1);
}

fn events(e: &mut Engine) -> Vec<EngineEvent> {
    std::iter::from_fn(|| e.poll_event()).collect()
}

/// EDIT and RECALL entries are ordinary inbox items (delivered once, in order, the
/// cursor moves), each followed by the event that says what it changed.
#[test]
fn edit_and_recall_entries_are_delivered_then_explained() {
    let now = Instant::now();
    let mut e = connected("alice");
    e.handle_frame(push(1, msg("d:alice:bob", 1, "bob")), now);
    let edit = pb::Message {
        kind: pb::MessageKind::Edit as i32,
        target_seq: 1,
        body: Bytes::from_static(b"fixed"),
        server_time_ms: 77,
        ..msg("d:alice:bob", 2, "bob")
    };
    e.handle_frame(push(2, edit.clone()), now);
    e.handle_frame(push(2, edit.clone()), now); // a duplicate: nothing twice
    let recall = pb::Message {
        kind: pb::MessageKind::Recall as i32,
        target_seq: 1,
        ..msg("d:alice:bob", 3, "bob")
    };
    e.handle_frame(push(3, recall.clone()), now);
    let evs = events(&mut e);
    assert_eq!(evs.len(), 5, "{evs:?}");
    assert!(matches!(&evs[0], EngineEvent::Message { message, .. } if message.seq == 1));
    assert_eq!(
        evs[1],
        EngineEvent::Message {
            message: edit,
            own: false
        }
    );
    assert_eq!(
        evs[2],
        EngineEvent::Edited {
            conversation: "d:alice:bob".into(),
            seq: 1,
            entry_seq: 2,
            sender: "bob".into(),
            body: Bytes::from_static(b"fixed"),
            content_type: String::new(),
            edited_ms: 77,
        }
    );
    assert!(matches!(&evs[3], EngineEvent::Message { message, .. } if message.seq == 3));
    assert_eq!(
        evs[4],
        EngineEvent::Recalled {
            conversation: "d:alice:bob".into(),
            seq: 1,
            entry_seq: 3,
            by: "bob".into(),
        }
    );
    assert_eq!(e.cursors().inbox, 3);
}

/// Tombstones keep the seqs contiguous: an expired or deleted one is delivered (no gap,
/// no pull loop) and explained; an EDIT entry emptied by a later recall says nothing.
#[test]
fn tombstones_and_recalled_edits() {
    let now = Instant::now();
    let mut e = connected("alice");
    let expired = pb::Message {
        expired: true,
        ..msg("d:alice:bob", 1, "bob")
    };
    let deleted = pb::Message {
        deleted: true,
        ..msg("d:alice:bob", 2, "bob")
    };
    let dead_edit = pb::Message {
        kind: pb::MessageKind::Edit as i32,
        target_seq: 2,
        recalled: true,
        ..msg("d:alice:bob", 3, "bob")
    };
    for (i, m) in [expired, deleted, dead_edit].into_iter().enumerate() {
        e.handle_frame(push(i as u64 + 1, m), now);
    }
    let evs = events(&mut e);
    let extra: Vec<&EngineEvent> = evs
        .iter()
        .filter(|ev| !matches!(ev, EngineEvent::Message { .. }))
        .collect();
    assert_eq!(
        extra,
        vec![
            &EngineEvent::Expired {
                conversation: "d:alice:bob".into(),
                seq: 1
            },
            &EngineEvent::Hidden {
                conversation: "d:alice:bob".into(),
                seq: 2
            },
        ]
    );
    assert_eq!(evs.len(), 5);
    assert_eq!(e.cursors().inbox, 3);
    assert!(sync_req_id(&drain_tx(&mut e)).is_none(), "no gap to repair");
}

/// MessageHidden and PresenceEvent pushes become events, in order with the rest; a
/// send-only engine ignores them.
#[test]
fn hidden_and_presence_pushes_become_events() {
    let now = Instant::now();
    let hidden = Frame {
        req_id: 0,
        body: Some(Body::MessageHidden(pb::MessageHidden {
            conversation: "g:1".into(),
            seq: 4,
        })),
    };
    let presence = Frame {
        req_id: 0,
        body: Some(Body::PresenceEvent(pb::PresenceEvent {
            user: "bob".into(),
            online: true,
            server_time_ms: 9,
        })),
    };
    let mut e = connected("alice");
    e.handle_frame(hidden.clone(), now);
    e.handle_frame(presence.clone(), now);
    assert_eq!(
        events(&mut e),
        vec![
            EngineEvent::Hidden {
                conversation: "g:1".into(),
                seq: 4
            },
            EngineEvent::Presence {
                user: "bob".into(),
                online: true,
                server_time_ms: 9
            },
        ]
    );
    let mut quiet = Engine::new("alice", Cursors::default(), vec![]);
    quiet.set_receive(false);
    quiet.on_connected("ep");
    quiet.handle_frame(hidden, now);
    quiet.handle_frame(presence, now);
    assert!(events(&mut quiet).is_empty());
}

/// A ProfileChanged push becomes an event with the profile; one without a profile is
/// ignored.
#[test]
fn profile_pushes_become_events() {
    let now = Instant::now();
    let profile = pb::Profile {
        user: "bob".into(),
        display_name: "Bob B".into(),
        status: "away".into(),
        avatar: String::new(),
        updated_ms: 3,
    };
    let push = |profile| Frame {
        req_id: 0,
        body: Some(Body::ProfileChanged(pb::ProfileChanged { profile })),
    };
    let mut e = connected("alice");
    e.handle_frame(push(None), now);
    e.handle_frame(push(Some(profile.clone())), now);
    assert_eq!(events(&mut e), vec![EngineEvent::ProfileChanged(profile)]);
}
