//! The profile file: who this CLI is logged in as (user, device, server) and the SDK state
//! that must survive between runs (token, store epoch, inbox cursor, per-conversation
//! cursors, outbox), in one JSON file that is always replaced atomically (temp file +
//! rename), so a crash leaves the old or the new version, never half of one.
//!
//! [`ProfileStore`] is the [`StateStore`] the SDK is given. Only `tern sync` (and `tern
//! chat`, which shows messages to a person) let it move the cursors: the other commands
//! save the token and the outbox but keep the cursors they started with, so a message that
//! reached the client while it was busy sending or querying is still printed by the next
//! `tern sync`.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tern_sdk::proto::pb;
use tern_sdk::{Cursors, Outgoing, SavedState, SqliteStore, StateStore, Target};

/// The profile as it is on disk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub device: String,
    /// `HOST:PORT` given at login; used when `--server` is not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server: String,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub store_epoch: String,
    /// Highest contiguous inbox seq printed by `tern sync`.
    #[serde(default)]
    pub inbox: u64,
    /// Read-diffusion conversations: highest contiguous seq printed.
    #[serde(default)]
    pub conversations: BTreeMap<String, u64>,
    /// Per conversation, the highest seq printed (the SDK's dedup and its recovery from a
    /// trimmed cursor start there).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub delivered: BTreeMap<String, u64>,
    /// Sends not yet acknowledged by the server, oldest first.
    #[serde(default)]
    pub outbox: Vec<SavedOutgoing>,
    /// Fields written by a newer tern, kept as they are.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One outbox entry. The body is kept as text when it is UTF-8 (readable), else as bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedOutgoing {
    pub client_msg_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content_type: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reply_to: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mention_all: bool,
    /// Time to live (s) from `created_ms` (`tern send --ttl`); absent = never dropped.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub ttl_secs: u32,
    /// When it was queued (Unix ms): a TTL keeps counting across runs.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub created_ms: u64,
    /// An image or file message (`tern send --file`): the blob id and the file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<(String, String)>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

impl SavedOutgoing {
    fn from_outgoing(o: &Outgoing) -> Self {
        let (to_user, conversation) = match &o.target {
            Target::User(u) => (Some(u.clone()), None),
            Target::Conversation(c) => (None, Some(c.clone())),
        };
        let (text, body) = match std::str::from_utf8(&o.body) {
            Ok(t) => (Some(t.to_string()), None),
            Err(_) => (None, Some(o.body.to_vec())),
        };
        Self {
            client_msg_id: o.client_msg_id.clone(),
            to_user,
            conversation,
            text,
            body,
            content_type: o.content_type.clone(),
            reply_to: o.reply_to,
            mentions: o.mentions.clone(),
            mention_all: o.mention_all,
            ttl_secs: o.ttl_secs,
            created_ms: o.created_ms,
            attachment: o
                .attachment
                .as_ref()
                .map(|a| (a.blob_id.clone(), a.name.clone())),
        }
    }

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

    /// Writes the profile atomically, readable by its owner only.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        text.push(b'\n');
        write_atomic(path, &text)
    }

    /// The profile after a successful login as `username`/`device`: the token is
    /// replaced; cursors and outbox are kept only if they belong to the same user and
    /// device (another account's cursors would skip messages, its outbox would send
    /// them as the wrong user).
    pub fn after_login(
        old: Option<Profile>,
        username: &str,
        device: &str,
        server: &str,
        token: &str,
    ) -> Profile {
        let mut p = match old {
            Some(p) if p.username == username && p.device == device => p,
            Some(p) => Profile {
                extra: p.extra,
                ..Profile::default()
            },
            None => Profile::default(),
        };
        p.username = username.to_string();
        p.device = device.to_string();
        p.server = server.to_string();
        p.token = Some(token.to_string());
        p
    }

    /// What the SDK starts from.
    pub fn saved_state(&self) -> SavedState {
        SavedState {
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
        }
    }

    /// Takes in what the SDK wants saved; the cursors only when `cursors` is true.
    pub fn apply(&mut self, state: &SavedState, cursors: bool) {
        self.token = state.token.clone();
        self.outbox = state
            .outbox
            .iter()
            .map(SavedOutgoing::from_outgoing)
            .collect();
        if cursors {
            self.store_epoch = state.cursors.store_epoch.clone();
            self.inbox = state.cursors.inbox;
            self.conversations = state.cursors.conversations.clone();
            self.delivered = state.cursors.delivered.clone();
        }
    }

    /// Drops outbox entries by client_msg_id; how many were dropped.
    pub fn forget_outgoing(&mut self, ids: &HashSet<String>) -> usize {
        let before = self.outbox.len();
        self.outbox.retain(|o| !ids.contains(&o.client_msg_id));
        before - self.outbox.len()
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
            // It holds a login token.
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

/// The SDK's [`StateStore`] over a profile file. Cheap to clone: the SDK gets one copy,
/// the command keeps another to [`ProfileStore::forget`] sends it gives up on.
#[derive(Clone)]
pub struct ProfileStore {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    path: PathBuf,
    /// As last written.
    profile: Profile,
    /// Whether the SDK's cursor moves are saved (`tern sync`, `tern chat`).
    cursors: bool,
    /// client_msg_ids never to be written to the outbox again.
    forgotten: HashSet<String>,
    /// The local copy of the messages ([`local_copy_path`]), for the commands that
    /// receive.
    local: Option<SqliteStore>,
}

/// The local copy of the messages beside the profile: `profile.json` -> `profile.db`
/// (SQLite, the SDK's [`SqliteStore`]). `tern sync` and `tern chat` keep every message
/// they receive there; `tern history` reads it, also with the server down.
pub fn local_copy_path(profile: &Path) -> PathBuf {
    profile.with_extension("db")
}

impl ProfileStore {
    pub fn new(path: PathBuf, profile: Profile, cursors: bool) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                path,
                profile,
                cursors,
                forgotten: HashSet::new(),
                local: None,
            })),
        }
    }

    /// Keeps the messages received in `local` from now on.
    pub fn attach_local(&self, local: SqliteStore) {
        self.lock().local = Some(local);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic mid-save leaves the last good profile in place; carry on from it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes these sends from the saved outbox, now and in every later save (so an SDK
    /// save racing with this cannot bring them back); how many were in it.
    pub fn forget(&self, ids: &HashSet<String>) -> std::io::Result<usize> {
        let mut inner = self.lock();
        inner.forgotten.extend(ids.iter().cloned());
        let mut next = inner.profile.clone();
        let n = next.forget_outgoing(ids);
        if n > 0 {
            inner.write(next, false)?;
        }
        Ok(n)
    }
}

impl Inner {
    /// Writes `next`. Unless this process got a new token since it last wrote
    /// (`new_token`), the token is the one in the file now: another `tern` on the same
    /// profile may have resumed meanwhile, and writing back the token it replaced would
    /// get the device revoked at its next use (docs/PROTOCOL.md 5.3).
    fn write(&mut self, mut next: Profile, new_token: bool) -> std::io::Result<()> {
        if !new_token {
            if let Ok(Some(disk)) = Profile::load(&self.path) {
                if disk.username == next.username && disk.device == next.device {
                    next.token = disk.token;
                }
            }
        }
        next.save(&self.path)?;
        self.profile = next;
        Ok(())
    }
}

impl StateStore for ProfileStore {
    fn load(&mut self) -> std::io::Result<SavedState> {
        Ok(self.lock().profile.saved_state())
    }

    fn save(&mut self, state: &SavedState) -> std::io::Result<()> {
        let mut inner = self.lock();
        let mut next = inner.profile.clone();
        next.apply(state, inner.cursors);
        next.forget_outgoing(&inner.forgotten);
        if next == inner.profile {
            return Ok(());
        }
        let new_token = next.token != inner.profile.token;
        inner.write(next, new_token)
    }

    fn keeps_messages(&self) -> bool {
        self.lock().local.is_some()
    }

    /// The messages go to the local copy first, then the cursors to the profile: a crash
    /// between the two gets them again (kept once: the copy is keyed by conversation and
    /// seq), never cursors past messages not kept.
    fn commit(&mut self, state: &SavedState, messages: &[pb::Message]) -> std::io::Result<()> {
        if let Some(local) = &mut self.lock().local {
            local.keep_messages(messages)?;
        }
        self.save(state)
    }

    fn record_read(&mut self, conversation: &str, read_seq: u64) -> std::io::Result<()> {
        match &mut self.lock().local {
            Some(local) => local.record_read(conversation, read_seq),
            None => Ok(()),
        }
    }

    fn record_hidden(&mut self, conversation: &str, seq: u64) -> std::io::Result<()> {
        match &mut self.lock().local {
            Some(local) => local.record_hidden(conversation, seq),
            None => Ok(()),
        }
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

    fn logged_in() -> Profile {
        Profile::after_login(None, "alice", "laptop", "127.0.0.1:7443", "tok1")
    }

    #[test]
    fn store_round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/profile.json");
        let mut store = ProfileStore::new(path.clone(), logged_in(), true);
        store.save(&state()).unwrap();

        let on_disk = Profile::load(&path).unwrap().unwrap();
        assert_eq!(on_disk.username, "alice");
        assert_eq!(on_disk.device, "laptop");
        assert_eq!(on_disk.server, "127.0.0.1:7443");
        assert_eq!(on_disk.outbox[0].text.as_deref(), Some("hi bob"));
        assert_eq!(
            on_disk.outbox[1].body.as_deref(),
            Some(&[0xff, 0x00, 0x41][..])
        );
        // A TTL keeps its start across runs.
        assert_eq!(
            (on_disk.outbox[1].ttl_secs, on_disk.outbox[1].created_ms),
            (30, 1_700_000_000_000)
        );
        let mut again = ProfileStore::new(path.clone(), on_disk, true);
        assert_eq!(again.load().unwrap(), state());
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("profile.json")]);
    }

    #[test]
    fn commands_that_do_not_print_messages_keep_the_cursors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let mut start = logged_in();
        start.inbox = 2;
        start.store_epoch = "ep".into();
        let mut store = ProfileStore::new(path.clone(), start, false);
        store.save(&state()).unwrap();
        let p = Profile::load(&path).unwrap().unwrap();
        assert_eq!(p.inbox, 2, "cursor not moved");
        assert!(p.conversations.is_empty());
        assert_eq!(p.token.as_deref(), Some("tok2"), "fresh token kept");
        assert_eq!(p.outbox.len(), 2, "outbox kept");
    }

    #[test]
    fn a_token_another_tern_saved_meanwhile_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let mut start = logged_in();
        start.token = Some("t1".into());
        start.save(&path).unwrap();
        // `tern chat` and `tern send` on one profile: chat started with t1.
        let mut chat = ProfileStore::new(path.clone(), start.clone(), true);
        let mut send = ProfileStore::new(path.clone(), start, false);
        let with_token = |t: &str| SavedState {
            token: Some(t.into()),
            ..state()
        };
        // send resumes with t1 and saves t2.
        send.save(&with_token("t2")).unwrap();
        // chat saves its cursors with the token it still has (t1): t2 stays.
        chat.save(&with_token("t1")).unwrap();
        let p = Profile::load(&path).unwrap().unwrap();
        assert_eq!(p.token.as_deref(), Some("t2"));
        assert_eq!(p.inbox, 7, "chat's cursors are saved");
        // A token this process got is written (also a dropped one).
        chat.save(&with_token("t3")).unwrap();
        assert_eq!(
            Profile::load(&path).unwrap().unwrap().token.as_deref(),
            Some("t3")
        );
        chat.save(&SavedState {
            token: None,
            ..state()
        })
        .unwrap();
        assert_eq!(Profile::load(&path).unwrap().unwrap().token, None);
        // Forgetting a send does not bring an old token back either.
        send.forget(&["m1".to_string()].into()).unwrap();
        assert_eq!(Profile::load(&path).unwrap().unwrap().token, None);
    }

    #[test]
    fn login_as_someone_else_resets_cursors_and_outbox() {
        let mut p = logged_in();
        p.apply(&state(), true);
        p.extra.insert("future".into(), serde_json::json!(1));

        let same = Profile::after_login(Some(p.clone()), "alice", "laptop", "h:1", "new");
        assert_eq!((same.inbox, same.outbox.len()), (7, 2));
        assert_eq!(same.token.as_deref(), Some("new"));
        assert_eq!(same.server, "h:1");

        for (user, device) in [("bob", "laptop"), ("alice", "phone")] {
            let other = Profile::after_login(Some(p.clone()), user, device, "h:1", "new");
            assert_eq!(other.inbox, 0);
            assert!(other.conversations.is_empty() && other.outbox.is_empty());
            assert_eq!(other.store_epoch, "");
            assert_eq!(
                (other.username.as_str(), other.device.as_str()),
                (user, device)
            );
            assert_eq!(other.extra.get("future"), Some(&serde_json::json!(1)));
        }
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
    fn forgetting_outgoing_messages() {
        let mut p = logged_in();
        p.apply(&state(), false);
        let n = p.forget_outgoing(&["m2".to_string(), "zz".to_string()].into());
        assert_eq!(n, 1);
        assert_eq!(p.outbox[0].client_msg_id, "m1");
    }

    #[test]
    fn forgotten_sends_stay_out_of_later_saves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let mut store = ProfileStore::new(path.clone(), logged_in(), false);
        store.save(&state()).unwrap();
        let handle = store.clone();
        assert_eq!(handle.forget(&["m1".to_string()].into()).unwrap(), 1);
        let ids = |p: &Profile| -> Vec<String> {
            p.outbox.iter().map(|o| o.client_msg_id.clone()).collect()
        };
        assert_eq!(ids(&Profile::load(&path).unwrap().unwrap()), vec!["m2"]);
        // The SDK saves its (older) outbox again: m1 does not come back.
        store.save(&state()).unwrap();
        assert_eq!(ids(&Profile::load(&path).unwrap().unwrap()), vec!["m2"]);
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        logged_in().save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
