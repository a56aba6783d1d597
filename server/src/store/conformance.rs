//! The conformance suite every [`Store`] backend must pass. Each check uses its own names,
//! so they can all run against one store.

use tern_proto::pb;

use super::*;

pub(crate) fn run_all(store: &dyn Store) {
    commits_are_counted(store);
    users_are_created_once(store);
    devices_round_trip(store);
    timeline_ranges_are_ordered_and_prefix_isolated(store);
    inbox_ranges(store);
    duplicate_commit_writes_nothing(store);
    membership_indexes_both_ways(store);
    read_positions_are_per_user_and_conversation(store);
    settings_are_per_user_and_conversation(store);
    contacts_are_per_user_and_deletable(store);
    mentions_are_counted_after_a_position(store);
    recalled_mentions_are_removed(store);
    not_counted_entries_are_counted_after_a_position(store);
    hidden_messages_are_per_user(store);
    a_rewritten_entry_replaces_the_old_one(store);
    expiries_come_back_in_time_order_until_now(store);
    the_channel_directory_finds_names_by_prefix(store);
    profiles_and_the_display_name_index(store);
    push_targets_and_queue_round_trip(store);
    users_and_conversations_are_listed_in_pages(store);
    blobs_refs_grants_and_uploads(store);
    retention_trims_and_remembers_the_first_retained(store);
}

pub(crate) fn append(store: &dyn Store, conv: &str, seq: u64, sender: &str, cmid: &str) {
    let msg = pb::Message {
        conversation: conv.into(),
        seq,
        sender: sender.into(),
        client_msg_id: cmid.into(),
        body: format!("body {seq}").into_bytes().into(),
        ..Default::default()
    };
    let out = store
        .commit(&[
            Mutation::Message(msg),
            Mutation::Dedup {
                sender: sender.into(),
                client_msg_id: cmid.into(),
                record: DedupRecord {
                    conversation: conv.into(),
                    seq,
                    server_time_ms: 1,
                    inbox_seq: 0,
                },
            },
        ])
        .unwrap();
    assert_eq!(out, CommitOutcome::Applied);
}

fn commits_are_counted(store: &dyn Store) {
    let before = store.commit_count().unwrap();
    append(store, "d:count:x", 1, "count", "c1");
    append(store, "d:count:x", 2, "count", "c2");
    assert_eq!(store.commit_count().unwrap(), before + 2);
    // A refused (duplicate) commit counts nothing.
    let _ = store.commit(&[Mutation::Dedup {
        sender: "count".into(),
        client_msg_id: "c1".into(),
        record: DedupRecord::default(),
    }]);
    assert_eq!(store.commit_count().unwrap(), before + 2);
}

fn users_are_created_once(store: &dyn Store) {
    let rec = UserRecord {
        password_hash: "h".into(),
        created_ms: 5,
        token_epoch: 0,
        receipts_off: false,
        disabled: true,
    };
    assert!(store.create_user("conf_u1", &rec).unwrap());
    let other = UserRecord {
        password_hash: "other".into(),
        ..rec.clone()
    };
    assert!(!store.create_user("conf_u1", &other).unwrap());
    assert_eq!(store.user("conf_u1").unwrap(), Some(rec));
    assert_eq!(store.user("conf_u").unwrap(), None);
}

fn devices_round_trip(store: &dyn Store) {
    let d = DeviceRecord {
        token_epoch: 2,
        acked_inbox_seq: 9,
        last_login_ms: 1,
        token_issued: 7,
        token_used: 5,
        token_used_ms: 3,
    };
    store.put_device("conf_d", "phone", &d).unwrap();
    store
        .put_device("conf_d", "laptop", &DeviceRecord::default())
        .unwrap();
    store
        .put_device("conf_dx", "phone", &DeviceRecord::default())
        .unwrap();
    assert_eq!(store.device("conf_d", "phone").unwrap(), Some(d));
    let names: Vec<String> = store
        .devices("conf_d")
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, vec!["laptop".to_string(), "phone".to_string()]);
}

fn timeline_ranges_are_ordered_and_prefix_isolated(store: &dyn Store) {
    // 300 entries so the big-endian key order matters (255 -> 256 crosses a byte).
    for seq in 1..=300 {
        append(store, "g:conf1", seq, "s", &format!("conf1-{seq}"));
    }
    append(store, "g:conf10", 1, "s", "conf10-1");
    assert_eq!(store.last_seq("g:conf1").unwrap(), 300);
    assert_eq!(store.last_seq("g:conf10").unwrap(), 1);
    assert_eq!(store.last_seq("g:conf").unwrap(), 0);
    let page = store.timeline("g:conf1", 250, 300, 20).unwrap();
    let seqs: Vec<u64> = page.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (250..270).collect::<Vec<_>>());
    assert!(store.timeline("g:conf1", 301, 400, 10).unwrap().is_empty());
    assert_eq!(store.message("g:conf1", 256).unwrap().unwrap().seq, 256);
}

fn inbox_ranges(store: &dyn Store) {
    let muts: Vec<Mutation> = (1..=10)
        .map(|i| Mutation::Inbox {
            user: "conf_i".into(),
            inbox_seq: i,
            entry: InboxRecord {
                conversation: "d:x:y".into(),
                seq: i * 2,
                expires_ms: 0,
            },
        })
        .collect();
    store.commit(&muts).unwrap();
    assert_eq!(store.last_inbox_seq("conf_i").unwrap(), 10);
    assert_eq!(store.last_inbox_seq("conf_").unwrap(), 0);
    let page = store.inbox("conf_i", 7, 100).unwrap();
    let seqs: Vec<u64> = page.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![8, 9, 10]);
    assert_eq!(page[0].1.seq, 16);
    assert!(store.inbox("conf_i", u64::MAX, 10).unwrap().is_empty());
}

fn duplicate_commit_writes_nothing(store: &dyn Store) {
    append(store, "d:dup:x", 1, "dup", "same-id");
    let second = pb::Message {
        conversation: "d:dup:x".into(),
        seq: 2,
        sender: "dup".into(),
        ..Default::default()
    };
    let out = store
        .commit(&[
            Mutation::Message(second),
            Mutation::Dedup {
                sender: "dup".into(),
                client_msg_id: "same-id".into(),
                record: DedupRecord::default(),
            },
        ])
        .unwrap();
    match out {
        CommitOutcome::Duplicate(rec) => assert_eq!(rec.seq, 1),
        other => panic!("expected Duplicate, got {other:?}"),
    }
    assert_eq!(
        store.last_seq("d:dup:x").unwrap(),
        1,
        "an aborted commit wrote a message"
    );
}

fn membership_indexes_both_ways(store: &dyn Store) {
    let put = |c: &str, u: &str, role: pb::Role| Mutation::PutMember {
        conversation: c.into(),
        user: u.into(),
        record: MemberRecord {
            role: role as i32,
            joined_ms: 0,
            visible_from: 1,
        },
    };
    store
        .commit(&[
            Mutation::Conversation {
                conversation: "g:confm".into(),
                record: ConversationRecord {
                    kind: pb::ConversationKind::Group as i32,
                    name: "n".into(),
                    ..Default::default()
                },
            },
            put("g:confm", "conf_m1", pb::Role::Owner),
            put("g:confm", "conf_m2", pb::Role::Member),
        ])
        .unwrap();
    assert_eq!(store.members("g:confm").unwrap().len(), 2);
    assert_eq!(
        store.user_conversations("conf_m2").unwrap(),
        vec!["g:confm"]
    );
    store
        .commit(&[Mutation::DelMember {
            conversation: "g:confm".into(),
            user: "conf_m2".into(),
        }])
        .unwrap();
    let members: Vec<String> = store
        .members("g:confm")
        .unwrap()
        .into_iter()
        .map(|(u, _)| u)
        .collect();
    assert_eq!(members, vec!["conf_m1"]);
    assert!(store.user_conversations("conf_m2").unwrap().is_empty());
    assert_eq!(store.conversation("g:confm").unwrap().unwrap().name, "n");
}

fn read_positions_are_per_user_and_conversation(store: &dyn Store) {
    assert_eq!(
        store.read_seq("rd", "d:rd:x").unwrap(),
        0,
        "nothing read yet"
    );
    let read = |user: &str, conv: &str, seq: u64| Mutation::Read {
        user: user.into(),
        conversation: conv.into(),
        read_seq: seq,
    };
    store
        .commit(&[
            read("rd", "d:rd:x", 5),
            read("rd", "d:rd:xy", 9),
            read("rd.", "d:rd:x", 7),
        ])
        .unwrap();
    assert_eq!(store.read_seq("rd", "d:rd:x").unwrap(), 5);
    assert_eq!(store.read_seq("rd", "d:rd:xy").unwrap(), 9);
    assert_eq!(store.read_seq("rd.", "d:rd:x").unwrap(), 7);
    store.commit(&[read("rd", "d:rd:x", 6)]).unwrap();
    assert_eq!(store.read_seq("rd", "d:rd:x").unwrap(), 6);
    assert_eq!(
        store.read_positions("rd").unwrap(),
        vec![("d:rd:x".to_string(), 6), ("d:rd:xy".to_string(), 9)]
    );
    assert_eq!(
        store.read_positions("rd.").unwrap(),
        vec![("d:rd:x".to_string(), 7)]
    );
}

fn settings_are_per_user_and_conversation(store: &dyn Store) {
    assert_eq!(
        store.conversation_settings("st", "d:st:x").unwrap(),
        SettingsRecord::default()
    );
    let set = |user: &str, conv: &str, muted, pinned| Mutation::Settings {
        user: user.into(),
        conversation: conv.into(),
        record: SettingsRecord { muted, pinned },
    };
    store
        .commit(&[
            set("st", "d:st:x", true, false),
            set("st", "d:st:xy", false, true),
        ])
        .unwrap();
    let s = store.conversation_settings("st", "d:st:x").unwrap();
    assert!(s.muted && !s.pinned);
    let s = store.conversation_settings("st", "d:st:xy").unwrap();
    assert!(!s.muted && s.pinned);
    let all = store.all_conversation_settings("st").unwrap();
    assert_eq!(
        all.iter()
            .map(|(c, s)| (c.as_str(), s.muted, s.pinned))
            .collect::<Vec<_>>(),
        [("d:st:x", true, false), ("d:st:xy", false, true)]
    );
    assert_eq!(
        store.conversation_settings("st.", "d:st:x").unwrap(),
        SettingsRecord::default()
    );
}

fn contacts_are_per_user_and_deletable(store: &dyn Store) {
    assert_eq!(store.contact("ka", "kb").unwrap(), None);
    let rec = |state, message: &str| ContactRecord {
        state,
        message: message.into(),
        since_ms: 5,
    };
    let put = |user: &str, other: &str, r| Mutation::Contact {
        user: user.into(),
        other: other.into(),
        record: r,
    };
    store
        .commit(&[
            put("ka", "kb", Some(rec(3, "hi"))),
            put("kb", "ka", Some(rec(2, "hi"))),
            put("ka", "kc", Some(rec(4, ""))),
            put("kab", "kz", Some(rec(1, ""))),
        ])
        .unwrap();
    assert_eq!(store.contact("ka", "kb").unwrap(), Some(rec(3, "hi")));
    assert_eq!(store.contact("kb", "ka").unwrap(), Some(rec(2, "hi")));
    let all = store.contacts("ka").unwrap();
    assert_eq!(
        all.iter()
            .map(|(u, r)| (u.as_str(), r.state))
            .collect::<Vec<_>>(),
        [("kb", 3), ("kc", 4)]
    );
    store.commit(&[put("ka", "kb", None)]).unwrap();
    assert_eq!(store.contact("ka", "kb").unwrap(), None);
    assert_eq!(store.contacts("ka").unwrap().len(), 1);
}

fn mentions_are_counted_after_a_position(store: &dyn Store) {
    let conv = "g:00000000000000aa";
    let named = |user: &str, seq| Mutation::Mention {
        user: user.into(),
        conversation: conv.into(),
        seq,
    };
    let all = |sender: &str, seq| Mutation::MentionAll {
        conversation: conv.into(),
        seq,
        sender: sender.into(),
    };
    store
        .commit(&[
            named("mn", 2),
            named("mn", 5),
            named("mn.", 3),
            all("mo", 4),
            all("mn", 6),
        ])
        .unwrap();
    // mn: named at 2 and 5, @all at 4 from mo (its own @all at 6 does not count).
    assert_eq!(store.mentions_after("mn", conv, 0).unwrap(), 3);
    assert_eq!(store.mentions_after("mn", conv, 2).unwrap(), 2);
    assert_eq!(store.mentions_after("mn", conv, 5).unwrap(), 0);
    // mn. is another user (prefix isolation); mo sees mn's @all at 6.
    assert_eq!(store.mentions_after("mn.", conv, 0).unwrap(), 3);
    assert_eq!(store.mentions_after("mo", conv, 0).unwrap(), 1);
    assert_eq!(
        store.mentions_after("mn", "g:00000000000000ab", 0).unwrap(),
        0
    );
    // A message that names mo and is an @all (from mn) is one mention of mo.
    store.commit(&[named("mo", 6)]).unwrap();
    assert_eq!(store.mentions_after("mo", conv, 0).unwrap(), 1);
    assert_eq!(store.mentions_after("mo", conv, 5).unwrap(), 1);
}

fn recalled_mentions_are_removed(store: &dyn Store) {
    let conv = "g:00000000000000ac";
    store
        .commit(&[
            Mutation::Mention {
                user: "rm".into(),
                conversation: conv.into(),
                seq: 3,
            },
            Mutation::MentionAll {
                conversation: conv.into(),
                seq: 4,
                sender: "ro".into(),
            },
        ])
        .unwrap();
    assert_eq!(store.mentions_after("rm", conv, 0).unwrap(), 2);
    store
        .commit(&[
            Mutation::Unmention {
                user: "rm".into(),
                conversation: conv.into(),
                seq: 3,
            },
            Mutation::UnmentionAll {
                conversation: conv.into(),
                seq: 4,
            },
        ])
        .unwrap();
    assert_eq!(store.mentions_after("rm", conv, 0).unwrap(), 0);
}

fn not_counted_entries_are_counted_after_a_position(store: &dyn Store) {
    let conv = "d:nc:nd";
    let nc = |seq| Mutation::NotCounted {
        conversation: conv.into(),
        seq,
    };
    store.commit(&[nc(2), nc(7), nc(9)]).unwrap();
    store
        .commit(&[Mutation::NotCounted {
            conversation: "d:nc:nd.".into(),
            seq: 8,
        }])
        .unwrap();
    assert_eq!(store.not_counted_after(conv, 0).unwrap(), 3);
    assert_eq!(store.not_counted_after(conv, 2).unwrap(), 2);
    assert_eq!(store.not_counted_after(conv, 8).unwrap(), 1);
    assert_eq!(store.not_counted_after(conv, 9).unwrap(), 0);
    assert_eq!(store.not_counted_after(conv, u64::MAX).unwrap(), 0);
    // Marking twice counts once.
    store.commit(&[nc(7)]).unwrap();
    assert_eq!(store.not_counted_after(conv, 0).unwrap(), 3);
}

fn hidden_messages_are_per_user(store: &dyn Store) {
    let conv = "d:ha:hb";
    let hide = |user: &str, seq| Mutation::Hide {
        user: user.into(),
        conversation: conv.into(),
        seq,
    };
    store
        .commit(&[hide("ha", 2), hide("ha", 5), hide("hb", 3), hide("ha.", 4)])
        .unwrap();
    assert_eq!(store.hidden("ha", conv, 1, 10).unwrap(), vec![2, 5]);
    assert_eq!(store.hidden("ha", conv, 3, 5).unwrap(), vec![5]);
    assert_eq!(store.hidden("ha", conv, 5, 5).unwrap(), vec![5]);
    assert!(store.hidden("ha", conv, 6, 3).unwrap().is_empty());
    assert_eq!(store.hidden("hb", conv, 1, 10).unwrap(), vec![3]);
    assert!(store.hidden("ha", "d:ha:hc", 1, 10).unwrap().is_empty());
}

fn a_rewritten_entry_replaces_the_old_one(store: &dyn Store) {
    let conv = "d:rw:rx";
    append(store, conv, 1, "rw", "rw-1");
    let mut m = store.message(conv, 1).unwrap().unwrap();
    assert_eq!(&m.body[..], b"body 1");
    m.body = Default::default();
    m.recalled = true;
    store.commit(&[Mutation::Message(m.clone())]).unwrap();
    assert_eq!(store.message(conv, 1).unwrap(), Some(m.clone()));
    assert_eq!(store.timeline(conv, 1, 1, 10).unwrap(), vec![m]);
    assert_eq!(store.last_seq(conv).unwrap(), 1);
}

fn expiries_come_back_in_time_order_until_now(store: &dyn Store) {
    let e = |expires_ms, conv: &str, seq| ExpiryEntry {
        expires_ms,
        conversation: conv.into(),
        seq,
    };
    store
        .commit(&[
            Mutation::Expiry(e(300, "d:ea:eb", 2)),
            Mutation::Expiry(e(100, "g:00000000000000ee", 9)),
            Mutation::Expiry(e(200, "d:ea:eb", 1)),
            Mutation::Expiry(e(301, "d:ea:eb", 3)),
        ])
        .unwrap();
    assert!(store.expired_until(99, 10).unwrap().is_empty());
    assert_eq!(
        store.expired_until(300, 10).unwrap(),
        vec![
            e(100, "g:00000000000000ee", 9),
            e(200, "d:ea:eb", 1),
            e(300, "d:ea:eb", 2)
        ]
    );
    assert_eq!(store.expired_until(300, 1).unwrap().len(), 1);
    store
        .commit(&[Mutation::DelExpiry(e(100, "g:00000000000000ee", 9))])
        .unwrap();
    assert_eq!(
        store.expired_until(u64::MAX, 10).unwrap(),
        vec![
            e(200, "d:ea:eb", 1),
            e(300, "d:ea:eb", 2),
            e(301, "d:ea:eb", 3)
        ]
    );
}

fn profiles_and_the_display_name_index(store: &dyn Store) {
    assert_eq!(store.profile("pa").unwrap(), None);
    let rec = ProfileRecord {
        display_name: "Ada L".into(),
        status: "here".into(),
        avatar: String::new(),
        updated_ms: 7,
    };
    let list = |name: &str, user: &str| Mutation::ListDisplayName {
        name: name.into(),
        user: user.into(),
    };
    store
        .commit(&[
            Mutation::Profile {
                user: "pa".into(),
                record: rec.clone(),
            },
            list("Ada L", "pa"),
            list("ada", "pb"),
            list("Adb", "pc"),
            list("bada", "pd"),
        ])
        .unwrap();
    assert_eq!(store.profile("pa").unwrap(), Some(rec));
    assert_eq!(store.profile("pb").unwrap(), None);
    // Lowercased, in display name order, bounded, a prefix scan only.
    assert_eq!(store.display_name_prefix("ada", 10).unwrap(), ["pb", "pa"]);
    assert_eq!(store.display_name_prefix("ad", 2).unwrap(), ["pb", "pa"]);
    assert_eq!(store.display_name_prefix("ad", 10).unwrap().len(), 3);
    assert_eq!(store.display_name_prefix("ada l", 10).unwrap(), ["pa"]);
    assert!(store.display_name_prefix("x", 10).unwrap().is_empty());
    store
        .commit(&[Mutation::UnlistDisplayName {
            name: "ADA L".into(),
            user: "pa".into(),
        }])
        .unwrap();
    assert_eq!(store.display_name_prefix("ada", 10).unwrap(), ["pb"]);
}

fn the_channel_directory_finds_names_by_prefix(store: &dyn Store) {
    let list = |name: &str, conv: &str| Mutation::ListChannel {
        name: name.into(),
        conversation: conv.into(),
    };
    store
        .commit(&[
            list("Rust Jobs", "g:00000000000000c1"),
            list("rustaceans", "g:00000000000000c2"),
            list("Go", "g:00000000000000c3"),
        ])
        .unwrap();
    assert_eq!(
        store.channels("rust", 10).unwrap(),
        ["g:00000000000000c1", "g:00000000000000c2"]
    );
    assert_eq!(store.channels("rust", 1).unwrap(), ["g:00000000000000c1"]);
    assert_eq!(store.channels("", 10).unwrap().len(), 3);
    store
        .commit(&[Mutation::UnlistChannel {
            name: "Rust Jobs".into(),
            conversation: "g:00000000000000c1".into(),
        }])
        .unwrap();
    assert_eq!(store.channels("r", 10).unwrap(), ["g:00000000000000c2"]);
}

fn users_and_conversations_are_listed_in_pages(store: &dyn Store) {
    let rec = UserRecord {
        password_hash: "h".into(),
        ..Default::default()
    };
    for u in ["pg-b", "pg-a", "pg-c", "pgx", "ph-a"] {
        assert!(store.create_user(u, &rec).unwrap());
    }
    let names = |prefix: &str, after: &str, limit: usize| -> Vec<String> {
        let page = store.users_page(prefix, after, limit).unwrap();
        page.into_iter().map(|(n, _)| n).collect()
    };
    assert_eq!(names("pg-", "", 10), ["pg-a", "pg-b", "pg-c"]);
    assert_eq!(names("pg-", "", 2), ["pg-a", "pg-b"]);
    assert_eq!(
        names("pg-", "pg-b", 2),
        ["pg-c"],
        "strictly after the cursor"
    );
    assert_eq!(names("pg", "pg-c", 10), ["pgx"]);
    assert_eq!(names("pg-", "pgx", 10), Vec::<String>::new());
    assert!(names("", "", 1000).len() >= 5);
    assert_eq!(store.users_page("pg-", "", 1).unwrap()[0].1, rec);

    let conv = |id: &str, name: &str| Mutation::Conversation {
        conversation: id.into(),
        record: ConversationRecord {
            name: name.into(),
            ..Default::default()
        },
    };
    store
        .commit(&[
            conv("g:00000000000000f2", "two"),
            conv("g:00000000000000f1", "one"),
            conv("g:00000000000000f3", "three"),
            conv("d:pg-a:pg-b", ""),
        ])
        .unwrap();
    let ids = |after: &str, limit: usize| -> Vec<String> {
        let page = store.conversations_page("g:00000000000000f", after, limit);
        page.unwrap().into_iter().map(|(id, _)| id).collect()
    };
    assert_eq!(
        ids("", 10),
        [
            "g:00000000000000f1",
            "g:00000000000000f2",
            "g:00000000000000f3"
        ]
    );
    assert_eq!(ids("g:00000000000000f1", 1), ["g:00000000000000f2"]);
    let page = store
        .conversations_page("g:00000000000000f3", "", 5)
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].1.name, "three");
    assert!(store
        .conversations_page("g:", "", 1000)
        .unwrap()
        .iter()
        .all(|(id, _)| id.starts_with("g:")));
}

fn push_targets_and_queue_round_trip(store: &dyn Store) {
    let target = |user: &str, device: &str, token: &str| PushTarget {
        user: user.into(),
        device: device.into(),
        record: PushTargetRecord {
            platform: "fcm".into(),
            token: token.into(),
            include_preview: true,
            registered_ms: 5,
            user_epoch: 1,
            device_epoch: 2,
        },
    };
    let entry = |device: &str, conv: &str, seq: u64| PushEntry {
        user: "pu-a".into(),
        device: device.into(),
        conversation: conv.into(),
        seq,
        record: PushQueueRecord {
            sender: "pu-b".into(),
            enqueued_ms: seq,
            mention: seq == 2,
            direct: true,
        },
    };
    store
        .commit(&[
            Mutation::PushTarget(target("pu-b", "d1", "t1")),
            Mutation::PushTarget(target("pu-a", "d2", "t2")),
            Mutation::PushTarget(target("pu-a", "d1", "old")),
            Mutation::PushTarget(target("pu-a", "d1", "t3")),
            Mutation::PushQueue(entry("d1", "d:pu-a:pu-b", 10)),
            Mutation::PushQueue(entry("d1", "d:pu-a:pu-b", 2)),
            Mutation::PushQueue(entry("d1", "g:00000000000000b1", 1)),
            Mutation::PushQueue(entry("d0", "d:pu-a:pu-b", 3)),
        ])
        .unwrap();
    assert_eq!(
        store.push_targets().unwrap(),
        [
            target("pu-a", "d1", "t3"),
            target("pu-a", "d2", "t2"),
            target("pu-b", "d1", "t1")
        ],
        "in (user, device) order; a re-register replaces"
    );
    assert_eq!(
        store.push_queue().unwrap(),
        [
            entry("d0", "d:pu-a:pu-b", 3),
            entry("d1", "d:pu-a:pu-b", 2),
            entry("d1", "d:pu-a:pu-b", 10),
            entry("d1", "g:00000000000000b1", 1),
        ]
    );
    store
        .commit(&[
            Mutation::DelPushTarget {
                user: "pu-a".into(),
                device: "d1".into(),
            },
            Mutation::DelPushQueue {
                user: "pu-a".into(),
                device: "d1".into(),
                conversation: "d:pu-a:pu-b".into(),
                seq: 2,
            },
        ])
        .unwrap();
    assert_eq!(store.push_targets().unwrap().len(), 2);
    let left: Vec<(String, u64)> = store
        .push_queue()
        .unwrap()
        .into_iter()
        .map(|e| (e.device, e.seq))
        .collect();
    assert_eq!(
        left,
        [("d0".into(), 3), ("d1".into(), 10), ("d1".into(), 1)]
    );
}

/// Retention (`y`, `z`): trimmed entries are gone, the first retained positions are kept,
/// and the heads never go down, even with every entry trimmed.
fn retention_trims_and_remembers_the_first_retained(store: &dyn Store) {
    let conv = "d:ret:x";
    for seq in 1..=5 {
        append(store, conv, seq, "ret", &format!("r{seq}"));
    }
    store
        .commit(&[
            Mutation::NotCounted {
                conversation: conv.into(),
                seq: 2,
            },
            Mutation::MentionAll {
                conversation: conv.into(),
                seq: 2,
                sender: "ret".into(),
            },
        ])
        .unwrap();
    for inbox_seq in 1..=5 {
        store
            .commit(&[Mutation::Inbox {
                user: "ret_u".into(),
                inbox_seq,
                entry: InboxRecord {
                    conversation: conv.into(),
                    seq: inbox_seq,
                    expires_ms: 0,
                },
            }])
            .unwrap();
    }
    assert_eq!(store.first_retained_seq(conv).unwrap(), 1);
    assert_eq!(store.first_retained_inbox_seq("ret_u").unwrap(), 1);

    store
        .commit(&[Mutation::TrimTimeline {
            conversation: conv.into(),
            from: 1,
            below: 4,
        }])
        .unwrap();
    let left: Vec<u64> = store
        .timeline(conv, 1, 10, 10)
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(left, vec![4, 5]);
    assert_eq!(store.first_retained_seq(conv).unwrap(), 4);
    assert_eq!(store.not_counted_after(conv, 0).unwrap(), 0);
    assert_eq!(store.mentions_after("other", conv, 0).unwrap(), 0);
    assert_eq!(store.last_seq(conv).unwrap(), 5);
    assert!(store.dedup("ret", "r1").unwrap().is_some());
    store
        .commit(&[Mutation::DelDedup {
            sender: "ret".into(),
            client_msg_id: "r1".into(),
        }])
        .unwrap();
    assert!(store.dedup("ret", "r1").unwrap().is_none());
    assert!(store.dedup("ret", "r2").unwrap().is_some());
    // Every entry trimmed: the head stays where it was.
    store
        .commit(&[Mutation::TrimTimeline {
            conversation: conv.into(),
            from: 4,
            below: 6,
        }])
        .unwrap();
    assert!(store.timeline(conv, 1, 10, 10).unwrap().is_empty());
    assert_eq!(store.last_seq(conv).unwrap(), 5);
    assert_eq!(store.first_retained_seq("d:ret:other").unwrap(), 1);

    store
        .commit(&[Mutation::TrimInbox {
            user: "ret_u".into(),
            from: 1,
            below: 3,
        }])
        .unwrap();
    let left: Vec<u64> = store
        .inbox("ret_u", 0, 10)
        .unwrap()
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(left, vec![3, 4, 5]);
    assert_eq!(store.first_retained_inbox_seq("ret_u").unwrap(), 3);
    store
        .commit(&[Mutation::TrimInbox {
            user: "ret_u".into(),
            from: 3,
            below: 6,
        }])
        .unwrap();
    assert!(store.inbox("ret_u", 0, 10).unwrap().is_empty());
    assert_eq!(store.last_inbox_seq("ret_u").unwrap(), 5);
    assert_eq!(store.first_retained_inbox_seq("ret_u").unwrap(), 6);
    // "ret_u" is a prefix of no other user's entries: a neighbour is untouched.
    assert_eq!(store.first_retained_inbox_seq("ret_u2").unwrap(), 1);
}

fn blobs_refs_grants_and_uploads(store: &dyn Store) {
    let (a, b) = ("bl0b-a", "bl0b-b");
    let rec = |size| BlobRecord {
        size,
        mime: "image/png".into(),
        width: 3,
        thumbnail: vec![1, 2, 3],
        uploaders: vec!["bl-ann".into()],
        ..Default::default()
    };
    store
        .commit(&[
            Mutation::Blob {
                id: a.into(),
                record: Some(rec(10)),
            },
            Mutation::Blob {
                id: b.into(),
                record: Some(rec(20)),
            },
            Mutation::BlobRef {
                blob: a.into(),
                holder: "g:bl".into(),
                seq: 7,
                present: true,
            },
            Mutation::BlobRef {
                blob: a.into(),
                holder: "avatar:bl-ann".into(),
                seq: 0,
                present: true,
            },
            Mutation::BlobRef {
                blob: b.into(),
                holder: "g:bl".into(),
                seq: 8,
                present: true,
            },
            Mutation::BlobGrant {
                user: "bl-ann".into(),
                blob: a.into(),
                record: Some(BlobGrantRecord {
                    size: 10,
                    created_ms: 5,
                }),
            },
            Mutation::Upload {
                user: "bl-ann".into(),
                blob: b.into(),
                record: Some(UploadRecord {
                    size: 20,
                    mime: "text/plain".into(),
                    created_ms: 6,
                }),
            },
        ])
        .unwrap();
    assert_eq!(store.blob(a).unwrap(), Some(rec(10)));
    assert_eq!(store.blob("bl0b-c").unwrap(), None);
    let page: Vec<String> = store
        .blobs_after("bl0b-", 10)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| id.starts_with("bl0b-"))
        .collect();
    assert_eq!(page, vec![a.to_string(), b.to_string()]);
    let after_a: Vec<String> = store
        .blobs_after(a, 10)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert!(!after_a.contains(&a.to_string()) && after_a.contains(&b.to_string()));
    assert_eq!(
        store.blob_refs(a, 10).unwrap(),
        vec![("avatar:bl-ann".to_string(), 0), ("g:bl".to_string(), 7)]
    );
    assert_eq!(store.blob_refs(a, 1).unwrap().len(), 1);
    assert_eq!(
        store.blob_refs(b, 10).unwrap(),
        vec![("g:bl".to_string(), 8)]
    );
    let grants = store.blob_grants("bl-ann").unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!((grants[0].0.as_str(), grants[0].1.size), (a, 10));
    assert!(store.blob_grants("bl-bob").unwrap().is_empty());
    assert_eq!(store.blob_grant("bl-ann", a).unwrap().unwrap().size, 10);
    assert!(store.blob_grant("bl-ann", b).unwrap().is_none());
    assert!(store.blob_grant("bl-bob", a).unwrap().is_none());
    assert_eq!(store.upload("bl-ann", b).unwrap().unwrap().size, 20);
    assert!(store.upload("bl-ann", a).unwrap().is_none());
    assert!(store
        .uploads()
        .unwrap()
        .iter()
        .any(|(u, id, r)| u == "bl-ann" && id == b && r.created_ms == 6));
    store
        .commit(&[
            Mutation::BlobRef {
                blob: a.into(),
                holder: "g:bl".into(),
                seq: 7,
                present: false,
            },
            Mutation::Blob {
                id: b.into(),
                record: None,
            },
            Mutation::BlobGrant {
                user: "bl-ann".into(),
                blob: a.into(),
                record: None,
            },
            Mutation::Upload {
                user: "bl-ann".into(),
                blob: b.into(),
                record: None,
            },
        ])
        .unwrap();
    assert_eq!(
        store.blob_refs(a, 10).unwrap(),
        vec![("avatar:bl-ann".to_string(), 0)]
    );
    assert_eq!(store.blob(b).unwrap(), None);
    assert!(store.blob_grants("bl-ann").unwrap().is_empty());
    assert!(store.blob_grant("bl-ann", a).unwrap().is_none());
    assert!(store.upload("bl-ann", b).unwrap().is_none());
}
