//! The profile, in two files side by side:
//! - `profile.json`: who this CLI is logged in as and where (user, device, server, and
//!   the fields of a newer tern, kept as they are). Only `tern login` writes it (and, once,
//!   the migration of an older file, [`open_state`]); it is replaced atomically (temp file
//!   + rename), so a crash leaves the old or the new version, never half of one.
//! - `profile.db` ([`local_copy_path`]): the SDK's [`SqliteStore`], the device's state:
//!   token, store epoch, inbox and conversation cursors, outbox, and the local copy of the
//!   messages `tern sync` and `tern chat` received (what `tern history` reads). The cursors
//!   are committed in the same transaction as the messages they cover: after a crash both
//!   are there or neither, so each message is printed once.
//!
//! [`ProfileStore`] is the [`StateStore`] the SDK is given. Only `tern sync` (and `tern
//! chat`, which shows messages to a person) let it move the cursors: the other commands
//! save the token and the outbox but leave the cursors as they are in `profile.db`, so a
//! message that reached the client while it was busy sending or querying is still printed
//! by the next `tern sync`.
//!
//! Several `tern` processes may use one profile at once (`tern chat` in one terminal,
//! `tern send` in another). Each write reads what `profile.db` holds and writes the next
//! state while holding the profile's lock file (`profile.lock`, an advisory `flock`), so
//! no process writes back a token another one has replaced meanwhile ([`ProfileStore`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tern_sdk::proto::pb;
use tern_sdk::{Cursors, Outgoing, SavedState, SqliteStore, StateStore, Target};

/// `profile.json` as it is on disk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub device: String,
    /// `HOST:PORT` given at login; used when `--server` is not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server: String,
    /// What a tern before `profile.db` held the state kept in `profile.json`: read from
    /// such a file, moved into `profile.db` by [`open_state`], never written.
    #[serde(flatten)]
    legacy: Legacy,
    /// Fields written by a newer tern, kept as they are.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The SDK state an older `profile.json` held (field names as it wrote them). Read only:
/// every field is skipped when the profile is written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Legacy {
    #[serde(default, skip_serializing)]
    token: Option<String>,
    #[serde(default, skip_serializing)]
    store_epoch: String,
    #[serde(default, skip_serializing)]
    inbox: u64,
    #[serde(default, skip_serializing)]
    conversations: BTreeMap<String, u64>,
    #[serde(default, skip_serializing)]
    delivered: BTreeMap<String, u64>,
    #[serde(default, skip_serializing)]
    outbox: Vec<SavedOutgoing>,
}

impl Legacy {
    /// The state it holds; `None` when it holds none (a current file).
    fn state(&self) -> Option<SavedState> {
        if *self == Legacy::default() {
            return None;
        }
        Some(SavedState {
            token: self.token.clone(),
            cursors: Cursors {
                store_epoch: self.store_epoch.clone(),
                inbox: self.inbox,
                conversations: self.conversations.clone(),
                delivered: self.delivered.clone(),
            },
            outbox: self
                .outbox
                .iter()
                .filter_map(SavedOutgoing::to_outgoing)
                .collect(),
        })
    }
}

/// One outbox entry of an older `profile.json`: the body as text when it was UTF-8, else
/// as bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SavedOutgoing {
    client_msg_id: String,
    #[serde(default)]
    to_user: Option<String>,
    #[serde(default)]
    conversation: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    body: Option<Vec<u8>>,
    #[serde(default)]
    content_type: String,
    #[serde(default)]
    reply_to: u64,
    #[serde(default)]
    mentions: Vec<String>,
    #[serde(default)]
    mention_all: bool,
    #[serde(default)]
    ttl_secs: u32,
    #[serde(default)]
    created_ms: u64,
    #[serde(default)]
    attachment: Option<(String, String)>,
}

impl SavedOutgoing {
    /// None for an entry that names no single target (hand-edited file): it is dropped.
    fn to_outgoing(&self) -> Option<Outgoing> {
        let target = match (&self.to_user, &self.conversation) {
            (Some(u), None) => Target::User(u.clone()),
            (None, Some(c)) => Target::Conversation(c.clone()),
            _ => return None,
        };
        let body = match (&self.text, &self.body) {
            (Some(t), _) => Bytes::from(t.clone().into_bytes()),
            (None, Some(b)) => Bytes::from(b.clone()),
            (None, None) => Bytes::new(),
        };
        Some(Outgoing {
            client_msg_id: self.client_msg_id.clone(),
            target,
            body,
            content_type: self.content_type.clone(),
            reply_to: self.reply_to,
            mentions: self.mentions.clone(),
            mention_all: self.mention_all,
            ttl_secs: self.ttl_secs,
            created_ms: self.created_ms,
            attachment: self.attachment.as_ref().map(|(blob_id, name)| {
                tern_proto::pb::Attachment {
                    blob_id: blob_id.clone(),
                    name: name.clone(),
                    ..Default::default()
                }
            }),
        })
    }
}

impl Profile {
    /// Reads a profile; `None` when the file does not exist. A file that is not a valid
    /// profile is an error, never a silent reset (that would replay every message).
    pub fn load(path: &Path) -> Result<Option<Profile>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read profile {}", path.display()))
            }
        };
        let p = serde_json::from_str(&text)
            .with_context(|| format!("profile {} is not valid", path.display()))?;
        Ok(Some(p))
    }

    /// Writes the profile atomically, readable by its owner only (never the state of an
    /// older file: that is in `profile.db`).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        text.push(b'\n');
        write_atomic(path, &text)
    }

    fn same_device(&self, username: &str, device: &str) -> bool {
        self.username == username && self.device == device
    }
}

/// Where the profile is when `--profile` (or TERN_PROFILE) does not say:
/// `$XDG_CONFIG_HOME/tern/profile.json`, else `$HOME/.config/tern/profile.json`.
pub fn default_path() -> Option<PathBuf> {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(x) = non_empty("XDG_CONFIG_HOME") {
        return Some(PathBuf::from(x).join("tern").join("profile.json"));
    }
    non_empty("HOME").map(|h| {
        PathBuf::from(h)
            .join(".config")
            .join("tern")
            .join("profile.json")
    })
}

/// The profile's state beside it: `profile.json` -> `profile.db` (SQLite, the SDK's
/// [`SqliteStore`]): token, cursors, outbox and the local copy of the messages `tern
/// sync` and `tern chat` receive, which `tern history` reads, also with the server down.
pub fn local_copy_path(profile: &Path) -> PathBuf {
    profile.with_extension("db")
}

/// The lock file every write of the profile's state holds: `profile.json` ->
/// `profile.lock`. Not `profile.db` itself: closing a second descriptor of an SQLite
/// file drops the POSIX locks SQLite holds on it.
fn lock_path(profile: &Path) -> PathBuf {
    profile.with_extension("lock")
}

/// An exclusive advisory lock on the profile (see the [module docs](self)), released
/// when dropped (or when the process dies). Never taken twice by one thread: a second
/// `flock` on another descriptor of the same file would wait for the first forever.
struct ProfileLock {
    _file: std::fs::File,
}

impl ProfileLock {
    fn take(profile: &Path) -> std::io::Result<Self> {
        let path = lock_path(profile);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(&path)?;
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            loop {
                // SAFETY: flock(2) on a descriptor `file` owns and keeps open.
                if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                    break;
                }
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("cannot lock {}: {e}", path.display()),
                    ));
                }
            }
        }
        Ok(Self { _file: file })
    }
}

/// Opens the profile's state (`profile.db`), first moving into it what a `profile.json`
/// of an older tern holds (token, cursors, outbox), then writing `profile.json` again
/// without it. Once: when `profile.db` already holds a state (a crash came between the
/// two writes, or another tern migrated meanwhile) that one is kept, being the newer.
pub fn open_state(path: &Path, profile: &mut Profile) -> Result<SqliteStore> {
    let db_path = local_copy_path(path);
    let cannot = || format!("cannot open the profile's state {}", db_path.display());
    let _lock = ProfileLock::take(path).with_context(cannot)?;
    // A file this tern cannot read is left as it is (it may be a newer tern's): the user
    // decides whether to move it aside and log in again.
    let mut db = SqliteStore::open(&db_path).with_context(|| {
        format!(
            "{} (it holds the login and the local copy; move it aside and run `tern login` \
             to start afresh)",
            cannot()
        )
    })?;
    if let Some(old) = profile.legacy.state() {
        if db.load().with_context(cannot)? == SavedState::default() {
            db.save(&old).with_context(cannot)?;
        }
        profile.legacy = Legacy::default();
        profile
            .save(path)
            .with_context(|| format!("cannot write profile {}", path.display()))?;
    }
    Ok(db)
}

/// What `profile.db` holds now (after [`open_state`]).
pub fn load_state(path: &Path, profile: &mut Profile) -> Result<SavedState> {
    let mut db = open_state(path, profile)?;
    let _lock = ProfileLock::take(path)?;
    db.load()
        .with_context(|| format!("cannot read {}", db.path().display()))
}

/// Saves a successful login as `username`/`device` on `server`: the token is replaced;
/// cursors and outbox are kept only if `old` is the same user and device (another
/// account's cursors would skip messages, its outbox would send them as the wrong
/// user). `profile.db` is written first, then `profile.json`. Returns the new profile.
pub fn save_login(
    path: &Path,
    old: Option<Profile>,
    username: &str,
    device: &str,
    server: &str,
    token: &str,
) -> Result<Profile> {
    let mut old = old.unwrap_or_default();
    let same = old.same_device(username, device);
    let db_path = local_copy_path(path);
    let cannot = || format!("cannot write the profile's state {}", db_path.display());
    let mut db = open_state(path, &mut old)?;
    let _lock = ProfileLock::take(path).with_context(cannot)?;
    let mut state = if same {
        db.load().with_context(cannot)?
    } else {
        SavedState::default()
    };
    state.token = Some(token.to_string());
    db.save(&state).with_context(cannot)?;
    let profile = Profile {
        username: username.to_string(),
        device: device.to_string(),
        server: server.to_string(),
        legacy: Legacy::default(),
        extra: old.extra,
    };
    profile
        .save(path)
        .with_context(|| format!("cannot write profile {}", path.display()))?;
    Ok(profile)
}

/// Writes `bytes` to a temp file beside `path` (unique to this process), flushes it to
/// disk, and renames it over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "profile".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // An older one held a login token; this one says which account is used.
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The SDK's [`StateStore`] over `profile.db`. Cheap to clone: the SDK gets one copy, the
/// command keeps another to [`ProfileStore::forget`] sends it gives up on.
#[derive(Clone)]
pub struct ProfileStore {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    /// `profile.json` (the lock file is named after it).
    path: PathBuf,
    db: SqliteStore,
    /// Whether the SDK's cursor moves are saved, and the messages it delivers kept
    /// (`tern sync`, `tern chat`).
    cursors: bool,
    /// The state as the SDK last gave it (or loaded it).
    sdk: SavedState,
    /// client_msg_ids never to be written to the outbox again.
    forgotten: std::collections::HashSet<String>,
}

impl ProfileStore {
    /// The store over the profile at `path`, whose state `db` is ([`open_state`]).
    pub fn new(path: PathBuf, db: SqliteStore, cursors: bool) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                path,
                db,
                cursors,
                sdk: SavedState::default(),
                forgotten: Default::default(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic mid-save leaves the last committed state in place; carry on from it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes these sends from the saved outbox, now and in every later save (so an SDK
    /// save racing with this cannot bring them back); how many were in it.
    pub fn forget(&self, ids: &std::collections::HashSet<String>) -> std::io::Result<usize> {
        let mut inner = self.lock();
        inner.forgotten.extend(ids.iter().cloned());
        let n = inner
            .sdk
            .outbox
            .iter()
            .filter(|o| ids.contains(&o.client_msg_id))
            .count();
        if n > 0 {
            let state = inner.sdk.clone();
            inner.write(&state, &[])?;
        }
        Ok(n)
    }
}

impl Inner {
    /// Commits `state` (and `messages`) to `profile.db`, holding the profile's lock from
    /// reading what is there to the commit. Unless the SDK got a new token since it last
    /// saved, the token is the one in `profile.db` now: another `tern` on the same profile
    /// may have resumed meanwhile, and writing back the token it replaced would get the
    /// device revoked at its next use (docs/PROTOCOL.md 5.3). The cursors are this
    /// process's only if it shows messages; the outbox is this process's, without what it
    /// gave up on.
    fn write(&mut self, state: &SavedState, messages: &[pb::Message]) -> std::io::Result<()> {
        let _lock = ProfileLock::take(&self.path)?;
        let disk = self.db.load()?;
        let mut next = state.clone();
        if next.token == self.sdk.token {
            next.token = disk.token.clone();
        }
        if !self.cursors {
            next.cursors = disk.cursors.clone();
        }
        next.outbox
            .retain(|o| !self.forgotten.contains(&o.client_msg_id));
        if next != disk || !messages.is_empty() {
            self.db.commit(&next, messages)?;
        }
        self.sdk = state.clone();
        Ok(())
    }
}

impl StateStore for ProfileStore {
    fn load(&mut self) -> std::io::Result<SavedState> {
        let mut inner = self.lock();
        let _lock = ProfileLock::take(&inner.path)?;
        let state = inner.db.load()?;
        inner.sdk = state.clone();
        Ok(state)
    }

    fn save(&mut self, state: &SavedState) -> std::io::Result<()> {
        self.lock().write(state, &[])
    }

    fn keeps_messages(&self) -> bool {
        self.lock().cursors
    }

    /// The messages and the cursors that cover them in one SQLite transaction: after a
    /// crash both are there or neither.
    fn commit(&mut self, state: &SavedState, messages: &[pb::Message]) -> std::io::Result<()> {
        self.lock().write(state, messages)
    }

    fn record_read(&mut self, conversation: &str, read_seq: u64) -> std::io::Result<()> {
        self.lock().db.record_read(conversation, read_seq)
    }

    fn record_hidden(&mut self, conversation: &str, seq: u64) -> std::io::Result<()> {
        self.lock().db.record_hidden(conversation, seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing(id: &str, target: Target, body: &[u8]) -> Outgoing {
        Outgoing {
            client_msg_id: id.into(),
            target,
            body: Bytes::copy_from_slice(body),
            content_type: String::new(),
            reply_to: 0,
            mentions: vec![],
            mention_all: false,
            ttl_secs: 0,
            created_ms: 0,
            attachment: None,
        }
    }

    fn state() -> SavedState {
        SavedState {
            token: Some("tok2".into()),
            cursors: Cursors {
                store_epoch: "ep".into(),
                inbox: 7,
                conversations: [("g:00000000000000aa".to_string(), 3)].into(),
                delivered: Default::default(),
            },
            outbox: vec![
                outgoing("m1", Target::User("bob".into()), b"hi bob"),
                Outgoing {
                    ttl_secs: 30,
                    created_ms: 1_700_000_000_000,
                    ..outgoing(
                        "m2",
                        Target::Conversation("g:1".into()),
                        &[0xff, 0x00, 0x41],
                    )
                },
            ],
        }
    }

    /// A profile logged in as alice/laptop with token `tok1`, and its store.
    fn logged_in(path: &Path, cursors: bool) -> ProfileStore {
        save_login(path, None, "alice", "laptop", "127.0.0.1:7443", "tok1").unwrap();
        store(path, cursors)
    }

    fn store(path: &Path, cursors: bool) -> ProfileStore {
        let mut p = Profile::load(path).unwrap().unwrap();
        let mut s = ProfileStore::new(
            path.to_path_buf(),
            open_state(path, &mut p).unwrap(),
            cursors,
        );
        s.load().unwrap();
        s
    }

    fn on_disk(path: &Path) -> SavedState {
        SqliteStore::open(local_copy_path(path))
            .unwrap()
            .load()
            .unwrap()
    }

    fn msg(conv: &str, seq: u64) -> pb::Message {
        pb::Message {
            conversation: conv.into(),
            seq,
            server_time_ms: 1_000 + seq,
            body: format!("m{seq}").into_bytes().into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_state_is_in_the_db_and_the_json_names_the_account() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/profile.json");
        let mut store = logged_in(&path, true);
        store.save(&state()).unwrap();
        assert_eq!(on_disk(&path), state());

        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({ "username": "alice", "device": "laptop", "server": "127.0.0.1:7443" })
        );
        // A new store over the same files starts where this one stopped.
        assert_eq!(self::store(&path, true).load().unwrap(), state());
    }

    #[test]
    fn messages_and_cursors_are_committed_together() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let mut store = logged_in(&path, true);
        let conv = "d:alice:bob";
        store
            .commit(&state(), &[msg(conv, 1), msg(conv, 2)])
            .unwrap();
        let db = SqliteStore::open(local_copy_path(&path)).unwrap();
        assert_eq!(db.history(conv, 0, 10).unwrap().len(), 2);
        assert_eq!(on_disk(&path).cursors.inbox, 7);
        assert!(store.keeps_messages());
        assert!(!self::store(&path, false).keeps_messages());
    }

    #[test]
    fn commands_that_do_not_print_messages_keep_the_cursors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let mut sync = logged_in(&path, true);
        let mut start = state();
        start.cursors.inbox = 2;
        start.token = Some("tok1".into());
        sync.save(&start).unwrap();
        let mut send = store(&path, false);
        // sync moves on meanwhile.
        sync.save(&SavedState {
            cursors: Cursors {
                inbox: 5,
                ..start.cursors.clone()
            },
            ..start.clone()
        })
        .unwrap();
        send.save(&state()).unwrap();
        let p = on_disk(&path);
        assert_eq!(p.cursors.inbox, 5, "cursor not moved back, nor on");
        assert_eq!(p.token.as_deref(), Some("tok2"), "fresh token kept");
        assert_eq!(p.outbox.len(), 2, "outbox kept");
    }

    #[test]
    fn a_token_another_tern_saved_meanwhile_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let with_token = |t: &str| SavedState {
            token: Some(t.into()),
            ..state()
        };
        logged_in(&path, true).save(&with_token("t1")).unwrap();
        // `tern chat` and `tern send` on one profile: chat started with t1.
        let mut chat = store(&path, true);
        let mut send = store(&path, false);
        // send resumes with t1 and saves t2.
        send.save(&with_token("t2")).unwrap();
        // chat saves its cursors with the token it still has (t1): t2 stays.
        chat.save(&SavedState {
            cursors: Cursors {
                inbox: 9,
                ..state().cursors
            },
            ..with_token("t1")
        })
        .unwrap();
        let p = on_disk(&path);
        assert_eq!(p.token.as_deref(), Some("t2"));
        assert_eq!(p.cursors.inbox, 9, "chat's cursors are saved");
        // A token this process got is written (also a dropped one).
        chat.save(&with_token("t3")).unwrap();
        assert_eq!(on_disk(&path).token.as_deref(), Some("t3"));
        chat.save(&SavedState {
            token: None,
            ..state()
        })
        .unwrap();
        assert_eq!(on_disk(&path).token, None);
        // Forgetting a send does not bring an old token back either.
        assert_eq!(send.forget(&["m1".to_string()].into()).unwrap(), 1);
        assert_eq!(on_disk(&path).token, None);
    }

    #[test]
    fn login_as_someone_else_resets_cursors_and_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        logged_in(&path, true).save(&state()).unwrap();
        let mut p = Profile::load(&path).unwrap().unwrap();
        p.extra.insert("future".into(), serde_json::json!(1));
        p.save(&path).unwrap();

        let old = Profile::load(&path).unwrap();
        let same = save_login(&path, old, "alice", "laptop", "h:1", "new").unwrap();
        assert_eq!(same.server, "h:1");
        let s = on_disk(&path);
        assert_eq!((s.cursors.inbox, s.outbox.len()), (7, 2));
        assert_eq!(s.token.as_deref(), Some("new"));

        for (user, device) in [("bob", "laptop"), ("alice", "phone")] {
            let back = Profile::load(&path).unwrap();
            save_login(&path, back, "alice", "laptop", "h:1", "a").unwrap();
            store(&path, true).save(&state()).unwrap();
            let old = Profile::load(&path).unwrap();
            let other = save_login(&path, old, user, device, "h:1", "new").unwrap();
            let s = on_disk(&path);
            assert_eq!(s.cursors, Cursors::default());
            assert!(s.outbox.is_empty());
            assert_eq!(s.token.as_deref(), Some("new"));
            assert_eq!(
                (other.username.as_str(), other.device.as_str()),
                (user, device)
            );
            assert_eq!(other.extra.get("future"), Some(&serde_json::json!(1)));
            assert_eq!(Profile::load(&path).unwrap().unwrap(), other);
        }
    }

    /// A profile.json of a tern before profile.db held the state: it moves into the db
    /// on first use, and the file is written again without it.
    #[test]
    fn an_older_profile_moves_its_state_into_the_db_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let old = serde_json::json!({
            "username": "alice",
            "device": "laptop",
            "server": "127.0.0.1:7443",
            "token": "tok2",
            "store_epoch": "ep",
            "inbox": 7,
            "conversations": { "g:00000000000000aa": 3 },
            "outbox": [
                { "client_msg_id": "m1", "to_user": "bob", "text": "hi bob" },
                { "client_msg_id": "m2", "conversation": "g:1", "body": [255, 0, 65],
                  "ttl_secs": 30, "created_ms": 1_700_000_000_000u64 }
            ],
            "future": 1
        });
        std::fs::write(&path, old.to_string()).unwrap();
        // A tern before this one kept messages (only) in profile.db already.
        SqliteStore::open(local_copy_path(&path))
            .unwrap()
            .keep_messages(&[msg("d:alice:bob", 1)])
            .unwrap();

        let mut p = Profile::load(&path).unwrap().unwrap();
        assert_eq!(load_state(&path, &mut p).unwrap(), state());
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({ "username": "alice", "device": "laptop",
                                "server": "127.0.0.1:7443", "future": 1 })
        );
        assert_eq!(on_disk(&path), state());
        let db = SqliteStore::open(local_copy_path(&path)).unwrap();
        assert_eq!(db.history("d:alice:bob", 0, 10).unwrap().len(), 1);

        // A crash between the two writes left the old file: the db's (newer) state wins.
        let mut newer = state();
        newer.token = Some("tok3".into());
        store(&path, true).save(&newer).unwrap();
        std::fs::write(&path, old.to_string()).unwrap();
        let mut p = Profile::load(&path).unwrap().unwrap();
        assert_eq!(load_state(&path, &mut p).unwrap(), newer);
        assert!(!std::fs::read_to_string(&path).unwrap().contains("tok2"));
    }

    #[test]
    fn a_corrupt_profile_is_an_error_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        assert_eq!(Profile::load(&path).unwrap(), None);
        std::fs::write(&path, "{not json").unwrap();
        let err = Profile::load(&path).unwrap_err();
        assert!(format!("{err:#}").contains("not valid"), "{err:#}");
    }

    #[test]
    fn forgotten_sends_stay_out_of_later_saves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let mut store = logged_in(&path, false);
        store.save(&state()).unwrap();
        let handle = store.clone();
        assert_eq!(handle.forget(&["m1".to_string()].into()).unwrap(), 1);
        let ids = |s: SavedState| -> Vec<String> {
            s.outbox.iter().map(|o| o.client_msg_id.clone()).collect()
        };
        assert_eq!(ids(on_disk(&path)), vec!["m2"]);
        // The SDK saves its (older) outbox again: m1 does not come back.
        store.save(&state()).unwrap();
        assert_eq!(ids(on_disk(&path)), vec!["m2"]);
    }

    #[cfg(unix)]
    #[test]
    fn the_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        logged_in(&path, true);
        for f in [path.clone(), local_copy_path(&path), lock_path(&path)] {
            let mode = std::fs::metadata(&f).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", f.display());
        }
    }
}
