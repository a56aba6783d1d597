//! The conversation-state cache: per conversation its members, last seq and diffusion
//! mode, behind a per-conversation mutex so conversations are sequenced independently.
//!
//! States are loaded from the store on first use. Past the cap, idle states (held by
//! nobody) are dropped and reloaded on next use; a load happens under the shard lock, so
//! a reload never sees a state older than one that was appended to and evicted meanwhile.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tern_proto::pb::{self, ConversationKind, ErrorCode, Role};

use super::id::{parse_conversation, truncate, ConvId};
use crate::error::{ServiceError, ServiceResult};
use crate::store::{ConversationRecord, MemberRecord, Store};

pub struct ConvState {
    pub kind: ConversationKind,
    pub name: String,
    pub created_ms: u64,
    /// False for a 1:1 conversation before its first message.
    pub exists: bool,
    pub last_seq: u64,
    /// Server time of the entry at `last_seq` (0: none): the list's "last activity".
    pub last_time_ms: u64,
    pub read_diffusion: bool,
    pub members: BTreeMap<String, MemberRecord>,
    /// Groups: the topic / announcement.
    pub topic: String,
    /// Groups: only the owner and admins may send.
    pub mute_all: bool,
    /// Groups: this group's member cap (0: the server's).
    pub max_members: u32,
    /// Groups: who reads which part of the history.
    pub visibility: pb::HistoryVisibility,
    /// A public channel (listed in the directory, joined by users themselves).
    pub channel: bool,
}

impl ConvState {
    /// The first seq `user` (a member) may read: where they were added in a JOINED
    /// group, else 1.
    pub fn first_visible(&self, user: &str) -> u64 {
        match self.visibility {
            pb::HistoryVisibility::Joined => {
                self.members.get(user).map_or(1, |m| m.visible_from.max(1))
            }
            _ => 1,
        }
    }

    pub fn role(&self, user: &str) -> Option<Role> {
        self.members
            .get(user)
            .map(|m| Role::try_from(m.role).unwrap_or(Role::Member))
    }

    pub fn record(&self) -> ConversationRecord {
        ConversationRecord {
            kind: self.kind as i32,
            name: self.name.clone(),
            created_ms: self.created_ms,
            read_diffusion: self.read_diffusion,
            topic: self.topic.clone(),
            mute_all: self.mute_all,
            max_members: self.max_members,
            visibility: self.visibility as i32,
            channel: self.channel,
        }
    }
}

pub(crate) type SharedState = Arc<Mutex<ConvState>>;

const SHARDS: usize = 32;

/// Conversation states kept in memory, all shards together.
const CACHE: usize = 65_536;

/// Drops idle entries (no `Arc` held outside the map, so no lock or append in progress)
/// until `map` is down to `target`.
pub(crate) fn evict_idle<T>(map: &mut HashMap<String, Arc<T>>, target: usize) {
    let mut excess = map.len().saturating_sub(target);
    map.retain(|_, st| {
        if excess > 0 && Arc::strong_count(st) == 1 {
            excess -= 1;
            false
        } else {
            true
        }
    });
}

pub struct ConvCache {
    store: Arc<dyn Store>,
    shards: Vec<Mutex<HashMap<String, SharedState>>>,
    per_shard: usize,
}

impl ConvCache {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_capacity(store, CACHE)
    }

    /// A cache of about `capacity` states (tests use tiny ones to exercise eviction).
    pub fn with_capacity(store: Arc<dyn Store>, capacity: usize) -> Self {
        Self {
            store,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: (capacity / SHARDS).max(1),
        }
    }

    fn shard(&self, conv: &str) -> &Mutex<HashMap<String, SharedState>> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        conv.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    /// The cached state of a conversation, loaded on first use. A 1:1 conversation that
    /// has no message yet gets a not-yet-existing state; an unknown group is NOT_FOUND.
    pub fn get(&self, id: &str) -> ServiceResult<SharedState> {
        let mut shard = self.shard(id).lock().unwrap();
        if let Some(s) = shard.get(id) {
            return Ok(s.clone());
        }
        let parsed = parse_conversation(id)?;
        let state = match self.store.conversation(id)? {
            Some(rec) => {
                let last_seq = self.store.last_seq(id)?;
                let last_time_ms = match last_seq {
                    0 => 0,
                    seq => self.store.message(id, seq)?.map_or(0, |m| m.server_time_ms),
                };
                ConvState {
                    kind: ConversationKind::try_from(rec.kind).unwrap_or(ConversationKind::Group),
                    name: rec.name,
                    created_ms: rec.created_ms,
                    exists: true,
                    last_seq,
                    last_time_ms,
                    read_diffusion: rec.read_diffusion,
                    members: self.store.members(id)?.into_iter().collect(),
                    topic: rec.topic,
                    mute_all: rec.mute_all,
                    max_members: rec.max_members,
                    visibility: pb::HistoryVisibility::try_from(rec.visibility).unwrap_or_default(),
                    channel: rec.channel,
                }
            }
            None => match parsed {
                ConvId::Direct(a, b) => {
                    let member = MemberRecord {
                        role: Role::Member as i32,
                        joined_ms: 0,
                        visible_from: 0,
                    };
                    let mut members = BTreeMap::new();
                    members.insert(a, member.clone());
                    members.insert(b, member);
                    ConvState {
                        kind: ConversationKind::Direct,
                        name: String::new(),
                        created_ms: 0,
                        exists: false,
                        last_seq: 0,
                        last_time_ms: 0,
                        read_diffusion: false,
                        members,
                        topic: String::new(),
                        mute_all: false,
                        max_members: 0,
                        visibility: pb::HistoryVisibility::Unspecified,
                        channel: false,
                    }
                }
                ConvId::Group => return Err(ServiceError::not_found(format!("no group {id}"))),
            },
        };
        if shard.len() >= self.per_shard {
            evict_idle(&mut shard, self.per_shard * 3 / 4);
        }
        let st = Arc::new(Mutex::new(state));
        shard.insert(id.to_string(), st.clone());
        Ok(st)
    }

    /// The conversation's state if `user` is a member; FORBIDDEN otherwise (also for a
    /// 1:1 conversation that does not exist yet, or a group that does not exist).
    pub fn member(&self, id: &str, user: &str) -> ServiceResult<SharedState> {
        let forbidden = || ServiceError::forbidden(format!("not a member of {}", truncate(id, 80)));
        let st = match self.get(id) {
            Ok(st) => st,
            Err(e) if e.code == ErrorCode::NotFound => return Err(forbidden()),
            Err(e) => return Err(e),
        };
        {
            let g = st.lock().unwrap();
            if !g.exists || !g.members.contains_key(user) {
                return Err(forbidden());
            }
        }
        Ok(st)
    }

    /// The conversation's state if `user` may read it: a member, or anyone when it is a
    /// public channel whose history is PUBLIC. FORBIDDEN otherwise.
    pub fn reader(&self, id: &str, user: &str) -> ServiceResult<SharedState> {
        match self.member(id, user) {
            Err(e) if e.code == ErrorCode::Forbidden => {
                if let Ok(st) = self.get(id) {
                    let g = st.lock().unwrap();
                    if g.exists && g.channel && g.visibility == pb::HistoryVisibility::Public {
                        drop(g);
                        return Ok(st);
                    }
                }
                Err(e)
            }
            other => other,
        }
    }

    /// Caches a state made here (a new group).
    pub fn insert(&self, id: &str, st: SharedState) {
        self.shard(id).lock().unwrap().insert(id.to_string(), st);
    }

    /// Forgets a state (a group whose creation failed).
    pub fn remove(&self, id: &str) {
        self.shard(id).lock().unwrap().remove(id);
    }

    /// States held now (tests check the bound).
    pub fn cached(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }

    pub fn shard_count(&self) -> usize {
        SHARDS
    }
}
