//! [`SqliteStore`]: the device's local copy in one SQLite file (rusqlite with SQLite
//! compiled in): token, cursors and outbox as every [`StateStore`] keeps them, plus the
//! messages delivered and the conversations they belong to (with this user's read
//! position), so an app that starts offline shows its conversation list and history at
//! once, and a restart neither downloads again nor loses anything.
//!
//! Tables (schema version in `PRAGMA user_version`, see [`MIGRATIONS`]):
//! - `meta: key -> value`: `token`, `store_epoch`, `inbox` (the inbox cursor);
//! - `cursors: conversation -> (follow, delivered)`: the read-diffusion cursor (NULL when
//!   the conversation is not followed by seq) and the highest seq delivered;
//! - `outbox: pos -> one unacknowledged send`, oldest first;
//! - `messages: (conversation, seq) -> the message` (protobuf-encoded, as delivered, then
//!   kept current by the EDIT and RECALL entries that follow it);
//! - `conversations: conversation -> (last_seq, last_time_ms, read_seq)` (version 2).
//!
//! Every write is one transaction; the file is in WAL mode with `synchronous=FULL`, so a
//! committed row survives an app crash or a power cut. A file this code cannot read (not
//! a database, or written by a newer SDK) is refused with a clear error and left as it is.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message as _;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};
use tern_proto::pb;

use super::{SavedState, StateStore};
use crate::engine::{Cursors, Outgoing, Target};

/// The schema, one migration per version: `MIGRATIONS[i]` takes a file from version `i`
/// to `i + 1`. Append only; never edit a released step.
pub const MIGRATIONS: &[&str] = &[
    // 1: state and messages.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID;
     CREATE TABLE cursors (
         conversation TEXT PRIMARY KEY,
         follow INTEGER,
         delivered INTEGER
     ) WITHOUT ROWID;
     CREATE TABLE outbox (
         pos INTEGER PRIMARY KEY,
         client_msg_id TEXT NOT NULL,
         to_user TEXT,
         conversation TEXT,
         body BLOB NOT NULL,
         content_type TEXT NOT NULL,
         reply_to INTEGER NOT NULL,
         mentions TEXT NOT NULL,
         mention_all INTEGER NOT NULL,
         ttl_secs INTEGER NOT NULL,
         created_ms INTEGER NOT NULL,
         attachment_blob TEXT,
         attachment_name TEXT
     );
     CREATE TABLE messages (
         conversation TEXT NOT NULL,
         seq INTEGER NOT NULL,
         server_time_ms INTEGER NOT NULL,
         message BLOB NOT NULL,
         PRIMARY KEY (conversation, seq)
     ) WITHOUT ROWID;",
    // 2: the conversation list and read state, filled from the messages already kept.
    "CREATE TABLE conversations (
         conversation TEXT PRIMARY KEY,
         last_seq INTEGER NOT NULL,
         last_time_ms INTEGER NOT NULL,
         read_seq INTEGER NOT NULL DEFAULT 0
     ) WITHOUT ROWID;
     INSERT INTO conversations (conversation, last_seq, last_time_ms)
         SELECT conversation, MAX(seq), MAX(server_time_ms) FROM messages GROUP BY conversation;",
];

/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// One conversation of the local copy, as [`SqliteStore::conversations`] lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredConversation {
    pub conversation: String,
    /// The highest seq kept.
    pub last_seq: u64,
    /// Server time of the newest message kept (Unix ms).
    pub last_time_ms: u64,
    /// This user's read position (from `Event::Read { own: true }`); 0 = none known.
    pub read_seq: u64,
    /// The newest message kept, if any.
    pub last: Option<pb::Message>,
}

/// The SDK's local store in SQLite. See the [module docs](self).
///
/// Give one to [`ClientConfig`](crate::ClientConfig) (it owns it from then on); to read
/// the local copy while the client runs (conversation list, history), open a second
/// `SqliteStore` on the same path: WAL lets it read while the client writes.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

/// An SQLite error as an `io::Error` that names the file: a full disk and an unreadable
/// file say so in words.
fn err(path: &Path, e: rusqlite::Error) -> io::Error {
    use rusqlite::ErrorCode as C;
    let (kind, what) = match e.sqlite_error_code() {
        Some(C::DiskFull) => (
            io::ErrorKind::Other,
            "disk full (or the store's size limit reached)",
        ),
        Some(C::NotADatabase) | Some(C::DatabaseCorrupt) => (
            io::ErrorKind::InvalidData,
            "not a tern SQLite store, or damaged",
        ),
        Some(C::DatabaseBusy) | Some(C::DatabaseLocked) => {
            (io::ErrorKind::WouldBlock, "locked by another process")
        }
        Some(C::ReadOnly) | Some(C::PermissionDenied) | Some(C::CannotOpen) => {
            (io::ErrorKind::PermissionDenied, "cannot open or write")
        }
        _ => (io::ErrorKind::Other, "SQLite error"),
    };
    io::Error::new(kind, format!("{}: {what}: {e}", path.display()))
}

fn i(n: u64) -> i64 {
    n as i64
}

fn u(n: i64) -> u64 {
    n as u64
}

impl SqliteStore {
    /// Opens (or creates) the store at `path`, bringing an older schema up to date in one
    /// transaction. Refuses, leaving the file untouched, a file that is not an SQLite
    /// database (`InvalidData`) or that a newer SDK wrote (`InvalidData`, "newer").
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        // It may hold a login token: readable by its owner only (an empty file is an
        // empty database).
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path);
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| err(&path, e))?;
        let e = |x| err(&path, x);
        // A read first: a file that is not a database fails here, before anything is
        // written to it.
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(e)?;
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(e)?;
        if version > SCHEMA_VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: written by a newer tern SDK (schema version {version}, this one knows \
                     up to {SCHEMA_VERSION}); upgrade the app, the file is left as it is",
                    path.display()
                ),
            ));
        }
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(e)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(e)?;
        let mut store = Self { conn, path };
        store.migrate(version)?;
        Ok(store)
    }

    fn migrate(&mut self, from: i64) -> io::Result<()> {
        if from == SCHEMA_VERSION {
            return Ok(());
        }
        let path = self.path.clone();
        let e = |x| err(&path, x);
        let tx = self.conn.transaction().map_err(e)?;
        // Read again inside the transaction: another process may have migrated meanwhile.
        let now: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(e)?;
        for (v, step) in MIGRATIONS.iter().enumerate().skip(now.max(0) as usize) {
            tx.execute_batch(step).map_err(|x| {
                io::Error::other(format!(
                    "{}: migration to schema version {} failed: {x}",
                    path.display(),
                    v + 1
                ))
            })?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(e)?;
        tx.commit().map_err(e)
    }

    /// The file this store is in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open file (after migrations: [`SCHEMA_VERSION`]).
    pub fn schema_version(&self) -> io::Result<i64> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|x| err(&self.path, x))
    }

    /// Caps the file at about `max_bytes` (SQLite's `max_page_count`; for this connection):
    /// a write past it fails like a full disk, with an error and nothing half-written.
    pub fn limit_size(&mut self, max_bytes: u64) -> io::Result<()> {
        let page: i64 = self
            .conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|x| err(&self.path, x))?;
        let pages = (max_bytes / page.max(1) as u64).max(1);
        self.conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(|x| err(&self.path, x))
    }

    /// Keeps `messages` (in order; EDIT and RECALL entries update what they change) in one
    /// transaction, without touching the saved state: for an app or tool that keeps its
    /// token and cursors elsewhere and only wants the local copy.
    pub fn keep_messages(&mut self, messages: &[pb::Message]) -> io::Result<()> {
        let path = self.path.clone();
        let e = |x| err(&path, x);
        let tx = self.conn.transaction().map_err(e)?;
        for m in messages {
            Self::write_message(&tx, m).map_err(e)?;
        }
        tx.commit().map_err(e)
    }

    /// The conversations of the local copy, most recent first.
    pub fn conversations(&self) -> io::Result<Vec<StoredConversation>> {
        let e = |x| err(&self.path, x);
        let mut st = self
            .conn
            .prepare(
                "SELECT c.conversation, c.last_seq, c.last_time_ms, c.read_seq, m.message
                 FROM conversations c
                 LEFT JOIN messages m ON m.conversation = c.conversation AND m.seq = c.last_seq
                 ORDER BY c.last_time_ms DESC, c.conversation",
            )
            .map_err(e)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<Vec<u8>>>(4)?,
                ))
            })
            .map_err(e)?;
        let mut out = Vec::new();
        for row in rows {
            let (conversation, last_seq, last_time_ms, read_seq, last) = row.map_err(e)?;
            out.push(StoredConversation {
                conversation,
                last_seq: u(last_seq),
                last_time_ms: u(last_time_ms),
                read_seq: u(read_seq),
                last: last.map(|b| self.decode(&b)).transpose()?,
            });
        }
        Ok(out)
    }

    /// Up to `limit` entries of `conversation` with a seq below `before_seq` (0 = from
    /// the newest), oldest first: what [`Client::history`](crate::Client::history) would
    /// give, from the local copy (edited messages carry their latest text, recalled ones
    /// no content; the EDIT and RECALL entries are there too, as on the server).
    pub fn history(
        &self,
        conversation: &str,
        before_seq: u64,
        limit: usize,
    ) -> io::Result<Vec<pb::Message>> {
        let e = |x| err(&self.path, x);
        let before = if before_seq == 0 {
            i64::MAX
        } else {
            i(before_seq)
        };
        let mut st = self
            .conn
            .prepare(
                "SELECT message FROM messages WHERE conversation = ?1 AND seq < ?2
                 ORDER BY seq DESC LIMIT ?3",
            )
            .map_err(e)?;
        let rows = st
            .query_map(params![conversation, before, limit as i64], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .map_err(e)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(self.decode(&row.map_err(e)?)?);
        }
        out.reverse();
        Ok(out)
    }

    /// One message of the local copy.
    pub fn message(&self, conversation: &str, seq: u64) -> io::Result<Option<pb::Message>> {
        let e = |x| err(&self.path, x);
        let b: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT message FROM messages WHERE conversation = ?1 AND seq = ?2",
                params![conversation, i(seq)],
                |r| r.get(0),
            )
            .optional()
            .map_err(e)?;
        b.map(|b| self.decode(&b)).transpose()
    }

    /// This user's read position in `conversation` (0 = none known).
    pub fn read_seq(&self, conversation: &str) -> io::Result<u64> {
        let e = |x| err(&self.path, x);
        let n: Option<i64> = self
            .conn
            .query_row(
                "SELECT read_seq FROM conversations WHERE conversation = ?1",
                [conversation],
                |r| r.get(0),
            )
            .optional()
            .map_err(e)?;
        Ok(n.map(u).unwrap_or(0))
    }

    fn decode(&self, b: &[u8]) -> io::Result<pb::Message> {
        pb::Message::decode(b).map_err(|x| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: a damaged message row: {x}", self.path.display()),
            )
        })
    }

    fn write_state(tx: &Transaction<'_>, s: &SavedState) -> rusqlite::Result<()> {
        let meta = |k: &str, v: rusqlite::types::Value| {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![k, v],
            )
        };
        use rusqlite::types::Value;
        meta(
            "token",
            s.token.clone().map(Value::Text).unwrap_or(Value::Null),
        )?;
        meta("store_epoch", Value::Text(s.cursors.store_epoch.clone()))?;
        meta("inbox", Value::Integer(i(s.cursors.inbox)))?;
        tx.execute("DELETE FROM cursors", [])?;
        {
            let mut put = tx.prepare(
                "INSERT INTO cursors (conversation, follow, delivered) VALUES (?1, ?2, ?3)
                 ON CONFLICT (conversation) DO UPDATE SET
                     follow = coalesce(excluded.follow, follow),
                     delivered = coalesce(excluded.delivered, delivered)",
            )?;
            for (c, n) in &s.cursors.conversations {
                put.execute(params![c, i(*n), Option::<i64>::None])?;
            }
            for (c, n) in &s.cursors.delivered {
                put.execute(params![c, Option::<i64>::None, i(*n)])?;
            }
        }
        tx.execute("DELETE FROM outbox", [])?;
        let mut put = tx.prepare(
            "INSERT INTO outbox (pos, client_msg_id, to_user, conversation, body, content_type,
                 reply_to, mentions, mention_all, ttl_secs, created_ms, attachment_blob,
                 attachment_name)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        for (pos, o) in s.outbox.iter().enumerate() {
            let (to_user, conversation) = match &o.target {
                Target::User(u) => (Some(u.as_str()), None),
                Target::Conversation(c) => (None, Some(c.as_str())),
            };
            let mentions = serde_json::to_string(&o.mentions).unwrap_or_else(|_| "[]".into());
            put.execute(params![
                pos as i64,
                o.client_msg_id,
                to_user,
                conversation,
                &o.body[..],
                o.content_type,
                i(o.reply_to),
                mentions,
                o.mention_all,
                o.ttl_secs,
                i(o.created_ms),
                o.attachment.as_ref().map(|a| a.blob_id.as_str()),
                o.attachment.as_ref().map(|a| a.name.as_str()),
            ])?;
        }
        Ok(())
    }

    fn write_message(tx: &Transaction<'_>, m: &pb::Message) -> rusqlite::Result<()> {
        let get = |seq: u64| -> rusqlite::Result<Option<pb::Message>> {
            let b: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT message FROM messages WHERE conversation = ?1 AND seq = ?2",
                    params![m.conversation, i(seq)],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(b.and_then(|b| pb::Message::decode(&b[..]).ok()))
        };
        let put = |x: &pb::Message| {
            tx.execute(
                "INSERT INTO messages (conversation, seq, server_time_ms, message)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (conversation, seq) DO UPDATE SET
                     server_time_ms = excluded.server_time_ms, message = excluded.message",
                params![
                    x.conversation,
                    i(x.seq),
                    i(x.server_time_ms),
                    x.encode_to_vec()
                ],
            )
        };
        let kind = pb::MessageKind::try_from(m.kind).unwrap_or(pb::MessageKind::Unspecified);
        match kind {
            // The edited message now reads the EDIT entry's text.
            pb::MessageKind::Edit if !m.recalled && !m.deleted && !m.expired => {
                if let Some(mut t) = get(m.target_seq)? {
                    if !t.recalled && !t.edits.contains(&m.seq) {
                        t.body = m.body.clone();
                        t.content_type = m.content_type.clone();
                        t.edited = true;
                        t.edited_ms = m.server_time_ms;
                        t.edits.push(m.seq);
                        put(&t)?;
                    }
                }
            }
            // The recalled message keeps its place, without content.
            pb::MessageKind::Recall => {
                if let Some(mut t) = get(m.target_seq)? {
                    t.recalled = true;
                    t.body = Default::default();
                    t.mentions.clear();
                    t.mention_all = false;
                    t.attachment = None;
                    put(&t)?;
                }
            }
            _ => {}
        }
        if m.seq == 0 {
            return Ok(()); // not a timeline entry: nothing to keep it under
        }
        put(m)?;
        tx.execute(
            "INSERT INTO conversations (conversation, last_seq, last_time_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (conversation) DO UPDATE SET
                 last_seq = max(last_seq, excluded.last_seq),
                 last_time_ms = max(last_time_ms, excluded.last_time_ms)",
            params![m.conversation, i(m.seq), i(m.server_time_ms)],
        )?;
        Ok(())
    }
}

impl StateStore for SqliteStore {
    fn load(&mut self) -> io::Result<SavedState> {
        let e = |x| err(&self.path, x);
        let meta = |k: &str| -> rusqlite::Result<Option<rusqlite::types::Value>> {
            self.conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
                .optional()
        };
        use rusqlite::types::Value;
        let token = match meta("token").map_err(e)? {
            Some(Value::Text(t)) => Some(t),
            _ => None,
        };
        let store_epoch = match meta("store_epoch").map_err(e)? {
            Some(Value::Text(t)) => t,
            _ => String::new(),
        };
        let inbox = match meta("inbox").map_err(e)? {
            Some(Value::Integer(n)) => u(n),
            _ => 0,
        };
        let mut cursors = Cursors {
            store_epoch,
            inbox,
            ..Default::default()
        };
        let mut st = self
            .conn
            .prepare("SELECT conversation, follow, delivered FROM cursors")
            .map_err(e)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            })
            .map_err(e)?;
        for row in rows {
            let (c, follow, delivered) = row.map_err(e)?;
            if let Some(n) = follow {
                cursors.conversations.insert(c.clone(), u(n));
            }
            if let Some(n) = delivered {
                cursors.delivered.insert(c, u(n));
            }
        }
        let mut st = self
            .conn
            .prepare(
                "SELECT client_msg_id, to_user, conversation, body, content_type, reply_to,
                     mentions, mention_all, ttl_secs, created_ms, attachment_blob,
                     attachment_name
                 FROM outbox ORDER BY pos",
            )
            .map_err(e)?;
        let rows = st
            .query_map([], |r| {
                let to_user: Option<String> = r.get(1)?;
                let conversation: Option<String> = r.get(2)?;
                let mentions: String = r.get(6)?;
                let blob: Option<String> = r.get(10)?;
                let name: Option<String> = r.get(11)?;
                Ok((
                    to_user,
                    conversation,
                    Outgoing {
                        client_msg_id: r.get(0)?,
                        target: Target::User(String::new()),
                        body: Bytes::from(r.get::<_, Vec<u8>>(3)?),
                        content_type: r.get(4)?,
                        reply_to: u(r.get(5)?),
                        mentions: serde_json::from_str(&mentions).unwrap_or_default(),
                        mention_all: r.get(7)?,
                        ttl_secs: r.get(8)?,
                        created_ms: u(r.get(9)?),
                        attachment: blob.map(|blob_id| pb::Attachment {
                            blob_id,
                            name: name.unwrap_or_default(),
                            ..Default::default()
                        }),
                    },
                ))
            })
            .map_err(e)?;
        let mut outbox = Vec::new();
        for row in rows {
            let (to_user, conversation, mut o) = row.map_err(e)?;
            o.target = match (to_user, conversation) {
                (Some(u), None) => Target::User(u),
                (None, Some(c)) => Target::Conversation(c),
                _ => continue,
            };
            outbox.push(o);
        }
        Ok(SavedState {
            token,
            cursors,
            outbox,
        })
    }

    fn save(&mut self, state: &SavedState) -> io::Result<()> {
        self.commit(state, &[])
    }

    fn commit(&mut self, state: &SavedState, messages: &[pb::Message]) -> io::Result<()> {
        let path = self.path.clone();
        let e = |x| err(&path, x);
        let tx = self.conn.transaction().map_err(e)?;
        Self::write_state(&tx, state).map_err(e)?;
        for m in messages {
            Self::write_message(&tx, m).map_err(e)?;
        }
        tx.commit().map_err(e)
    }

    fn keeps_messages(&self) -> bool {
        true
    }

    fn record_hidden(&mut self, conversation: &str, seq: u64) -> io::Result<()> {
        let Some(mut m) = self.message(conversation, seq)? else {
            return Ok(());
        };
        if m.deleted {
            return Ok(());
        }
        m.deleted = true;
        m.body = Default::default();
        m.mentions.clear();
        m.mention_all = false;
        m.attachment = None;
        self.conn
            .execute(
                "UPDATE messages SET message = ?3 WHERE conversation = ?1 AND seq = ?2",
                params![conversation, i(seq), m.encode_to_vec()],
            )
            .map(|_| ())
            .map_err(|x| err(&self.path, x))
    }

    fn record_read(&mut self, conversation: &str, read_seq: u64) -> io::Result<()> {
        self.conn
            .execute(
                "INSERT INTO conversations (conversation, last_seq, last_time_ms, read_seq)
                 VALUES (?1, 0, 0, ?2)
                 ON CONFLICT (conversation) DO UPDATE SET
                     read_seq = max(read_seq, excluded.read_seq)",
                params![conversation, i(read_seq)],
            )
            .map(|_| ())
            .map_err(|x| err(&self.path, x))
    }
}
