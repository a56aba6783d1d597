//! The state stores: one conformance suite run against every store that comes with the
//! SDK ([`MemoryStore`], [`FileStore`], [`SqliteStore`]), then what only the SQLite store
//! does: messages and the conversation list, migration from an older schema, and the bad
//! files (corrupt, newer, a full disk), which must give a clear error and lose nothing.

use std::path::Path;

use bytes::Bytes;
use tern_proto::pb;
use tern_sdk::state::sqlite::SCHEMA_VERSION;
use tern_sdk::{
    Cursors, FileStore, MemoryStore, Outgoing, SavedState, SqliteStore, StateStore, Target,
};

fn outgoing(id: &str, target: Target) -> Outgoing {
    Outgoing {
        client_msg_id: id.into(),
        target,
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

/// Every field set, in several entries: outbox entries with every option, cursors of
/// many conversations (some followed by seq, some only delivered).
fn full_state() -> SavedState {
    let mut conversations = std::collections::BTreeMap::new();
    let mut delivered = std::collections::BTreeMap::new();
    for n in 0..40u64 {
        delivered.insert(format!("d:alice:u{n:02}"), n * 7 + 1);
        if n % 3 == 0 {
            conversations.insert(format!("g:{n:016x}"), n + 100);
            delivered.insert(format!("g:{n:016x}"), n + 101);
        }
    }
    SavedState {
        token: Some("token-\u{e9}".into()),
        cursors: Cursors {
            store_epoch: "epoch-1".into(),
            inbox: u64::MAX / 3,
            conversations,
            delivered,
        },
        outbox: vec![
            outgoing("m1", Target::User("bob".into())),
            Outgoing {
                client_msg_id: "m2".into(),
                target: Target::Conversation("g:00000000000000aa".into()),
                body: Bytes::from_static(&[0xff, 0x00, 0x41]),
                content_type: "application/octet-stream".into(),
                reply_to: 7,
                mentions: vec!["carol".into(), "dave".into()],
                mention_all: true,
                ttl_secs: 30,
                created_ms: 1_700_000_000_000,
                attachment: Some(pb::Attachment {
                    blob_id: "ab".repeat(32),
                    name: "photo.png".into(),
                    ..Default::default()
                }),
            },
            outgoing("m3", Target::User("carol".into())),
        ],
    }
}

/// The suite: `open` gives the store at the same place each time (a reopen).
fn conformance<S: StateStore>(mut open: impl FnMut() -> S) {
    let mut s = open();
    assert_eq!(s.load().unwrap(), SavedState::default(), "empty load");
    let full = full_state();
    s.save(&full).unwrap();
    assert_eq!(s.load().unwrap(), full, "round trip");
    drop(s);
    assert_eq!(open().load().unwrap(), full, "after reopen");

    // Overwrite: fewer conversations, one outbox entry left, no token.
    let mut less = full.clone();
    less.token = None;
    less.cursors.inbox = 3;
    less.cursors.conversations.clear();
    less.cursors.delivered = [("d:a:b".to_string(), 2)].into();
    less.outbox.drain(..2);
    let mut s = open();
    s.save(&less).unwrap();
    assert_eq!(s.load().unwrap(), less, "overwrite");
    // commit() is a save for every store (the messages are kept by some only).
    let mut more = less.clone();
    more.cursors.inbox = 4;
    s.commit(&more, &[message("d:a:b", 3, "x")]).unwrap();
    drop(s);
    assert_eq!(open().load().unwrap(), more, "commit then reopen");
}

fn message(conv: &str, seq: u64, text: &str) -> pb::Message {
    pb::Message {
        conversation: conv.into(),
        seq,
        sender: "bob".into(),
        server_time_ms: 1_700_000_000_000 + seq,
        body: Bytes::copy_from_slice(text.as_bytes()),
        kind: pb::MessageKind::Unspecified as i32,
        ..Default::default()
    }
}

#[test]
fn memory_store_conforms() {
    // A MemoryStore lives as long as the value: "reopen" is the same one.
    let shared = std::sync::Arc::new(std::sync::Mutex::new(MemoryStore::default()));
    struct Handle(std::sync::Arc<std::sync::Mutex<MemoryStore>>);
    impl StateStore for Handle {
        fn load(&mut self) -> std::io::Result<SavedState> {
            self.0.lock().unwrap().load()
        }
        fn save(&mut self, s: &SavedState) -> std::io::Result<()> {
            self.0.lock().unwrap().save(s)
        }
    }
    conformance(|| Handle(shared.clone()));
}

#[test]
fn file_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("state.json");
    conformance(|| FileStore::new(&p));
}

#[test]
fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("sub/state.db");
    conformance(|| SqliteStore::open(&p).unwrap());
}

#[test]
fn sqlite_keeps_history_edits_recalls_and_read_state() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.db");
    let mut s = SqliteStore::open(&p).unwrap();
    let state = full_state();
    let edit = pb::Message {
        kind: pb::MessageKind::Edit as i32,
        target_seq: 1,
        ..message("d:alice:bob", 3, "one, edited")
    };
    let recall = pb::Message {
        kind: pb::MessageKind::Recall as i32,
        target_seq: 2,
        body: Bytes::new(),
        ..message("d:alice:bob", 4, "")
    };
    s.commit(
        &state,
        &[
            message("d:alice:bob", 1, "one"),
            message("d:alice:bob", 2, "two"),
            message("g:1", 1, "group"),
        ],
    )
    .unwrap();
    s.commit(&state, &[edit, recall]).unwrap();
    s.record_read("d:alice:bob", 2).unwrap();
    s.commit(&state, &[message("g:1", 2, "secret")]).unwrap();
    s.record_hidden("g:1", 2).unwrap(); // deleted for this user on some device
    s.record_hidden("g:1", 99).unwrap(); // not kept: nothing to do
    drop(s);

    let s = SqliteStore::open(&p).unwrap();
    let h = s.history("d:alice:bob", 0, 50).unwrap();
    assert_eq!(h.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(&h[0].body[..], b"one, edited");
    assert!(h[0].edited && h[0].edits == [3]);
    assert!(h[1].recalled && h[1].body.is_empty());
    // Paging: before seq 3, the newest 1.
    let page = s.history("d:alice:bob", 3, 1).unwrap();
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), [2]);
    let list = s.conversations().unwrap();
    assert_eq!(list.len(), 2);
    let dm = list
        .iter()
        .find(|c| c.conversation == "d:alice:bob")
        .unwrap();
    assert_eq!((dm.last_seq, dm.read_seq), (4, 2));
    assert_eq!(dm.last.as_ref().unwrap().seq, 4);
    assert_eq!(list[0].conversation, "d:alice:bob", "most recent first");
    assert_eq!(s.read_seq("g:1").unwrap(), 0);
    let hidden = s.message("g:1", 2).unwrap().unwrap();
    assert!(hidden.deleted && hidden.body.is_empty());
}

/// Version 1 of the schema, as an older SDK wrote it (no conversation list).
const V1: &str = "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID;
     CREATE TABLE cursors (conversation TEXT PRIMARY KEY, follow INTEGER, delivered INTEGER) WITHOUT ROWID;
     CREATE TABLE outbox (pos INTEGER PRIMARY KEY, client_msg_id TEXT NOT NULL, to_user TEXT,
         conversation TEXT, body BLOB NOT NULL, content_type TEXT NOT NULL, reply_to INTEGER NOT NULL,
         mentions TEXT NOT NULL, mention_all INTEGER NOT NULL, ttl_secs INTEGER NOT NULL,
         created_ms INTEGER NOT NULL, attachment_blob TEXT, attachment_name TEXT);
     CREATE TABLE messages (conversation TEXT NOT NULL, seq INTEGER NOT NULL,
         server_time_ms INTEGER NOT NULL, message BLOB NOT NULL,
         PRIMARY KEY (conversation, seq)) WITHOUT ROWID;
     PRAGMA user_version = 1;";

#[test]
fn sqlite_migrates_an_older_schema_keeping_its_data() {
    use prost::Message as _;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("old.db");
    {
        let c = rusqlite::Connection::open(&p).unwrap();
        c.execute_batch(V1).unwrap();
        c.execute_batch(
            "INSERT INTO meta VALUES ('token', 'old-token'), ('store_epoch', 'e1'), ('inbox', 9);
             INSERT INTO cursors VALUES ('g:1', 5, 6), ('d:a:b', NULL, 2);
             INSERT INTO outbox VALUES (0, 'm1', 'bob', NULL, x'6869', '', 0, '[\"carol\"]', 0, 0, 0, NULL, NULL);",
        )
        .unwrap();
        for m in [message("d:a:b", 1, "one"), message("d:a:b", 2, "two")] {
            c.execute(
                "INSERT INTO messages VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![
                    m.conversation,
                    m.seq as i64,
                    m.server_time_ms as i64,
                    m.encode_to_vec()
                ],
            )
            .unwrap();
        }
    }
    let mut s = SqliteStore::open(&p).unwrap();
    assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
    let st = s.load().unwrap();
    assert_eq!(st.token.as_deref(), Some("old-token"));
    assert_eq!(st.cursors.inbox, 9);
    assert_eq!(st.cursors.conversations, [("g:1".to_string(), 5)].into());
    assert_eq!(
        st.cursors.delivered,
        [("g:1".to_string(), 6), ("d:a:b".to_string(), 2)].into()
    );
    assert_eq!(st.outbox.len(), 1);
    assert_eq!(st.outbox[0].mentions, ["carol"]);
    assert_eq!(s.history("d:a:b", 0, 10).unwrap().len(), 2);
    // The new table was filled from the messages already kept.
    let list = s.conversations().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].last_seq, list[0].read_seq), (2, 0));
    s.record_read("d:a:b", 2).unwrap();
    drop(s);
    assert_eq!(SqliteStore::open(&p).unwrap().read_seq("d:a:b").unwrap(), 2);
}

fn assert_refused(p: &Path, words: &str) {
    let before = std::fs::read(p).unwrap();
    let e = SqliteStore::open(p).expect_err("must refuse");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
    let msg = e.to_string();
    assert!(msg.contains(words), "{msg}");
    assert!(
        msg.contains(&p.display().to_string()),
        "names the file: {msg}"
    );
    assert_eq!(
        std::fs::read(p).unwrap(),
        before,
        "the file is left as it was"
    );
}

#[test]
fn sqlite_refuses_a_corrupt_file_and_leaves_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("junk.db");
    std::fs::write(
        &p,
        b"this is not a database, but it is somebody's data".repeat(100),
    )
    .unwrap();
    assert_refused(&p, "not a tern SQLite store");
    // A store whose header is damaged likewise.
    let q = dir.path().join("damaged.db");
    {
        let mut s = SqliteStore::open(&q).unwrap();
        s.save(&full_state()).unwrap();
    }
    let mut bytes = std::fs::read(&q).unwrap();
    bytes[..16].copy_from_slice(b"garbage garbage!");
    std::fs::write(&q, &bytes).unwrap();
    let _ = std::fs::remove_file(dir.path().join("damaged.db-wal"));
    let _ = std::fs::remove_file(dir.path().join("damaged.db-shm"));
    assert_refused(&q, "not a tern SQLite store");
}

#[test]
fn sqlite_refuses_a_newer_schema_and_leaves_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("new.db");
    {
        let mut s = SqliteStore::open(&p).unwrap();
        s.save(&full_state()).unwrap();
    }
    {
        let c = rusqlite::Connection::open(&p).unwrap();
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        // Fold the WAL into the file so the bytes compared are the whole store.
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    }
    assert_refused(&p, "newer tern SDK");
}

#[test]
fn sqlite_full_disk_is_an_error_and_the_last_state_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("full.db");
    let mut s = SqliteStore::open(&p).unwrap();
    let state = full_state();
    s.commit(&state, &[message("d:a:b", 1, "kept")]).unwrap();
    s.limit_size(0).unwrap(); // the file may not grow by a page any more
    let mut later = state.clone();
    later.cursors.inbox += 1;
    let big: Vec<pb::Message> = (2..200)
        .map(|n| message("d:a:b", n, &"x".repeat(4000)))
        .collect();
    let e = s.commit(&later, &big).expect_err("the disk is full");
    assert!(e.to_string().contains("disk full"), "{e}");
    // Nothing half-written: the state and the messages are those of the last commit.
    assert_eq!(s.load().unwrap(), state);
    assert_eq!(s.history("d:a:b", 0, 500).unwrap().len(), 1);
    drop(s);
    let s2 = SqliteStore::open(&p).unwrap();
    let mut s2 = s2;
    assert_eq!(s2.load().unwrap(), state);
    // With room again, the same write goes through.
    s2.commit(&later, &big).unwrap();
    assert_eq!(s2.history("d:a:b", 0, 500).unwrap().len(), 199);
}
