//! The chat service: authorize -> dedup -> sequence -> store -> (durable) -> ack + fan-out.
//!
//! Per-conversation state (members, last seq, diffusion mode) lives in `ConvState`
//! behind a per-conversation mutex, so conversations are sequenced independently. The
//! one shared step is `Chat::commit_lock`: it owns every user's inbox head, and holds
//! allocation of inbox seqs, the atomic store commit and the queueing of completions
//! together, so that each user's inbox becomes visible in seq order and pushes leave in
//! that order. It is a short, synchronous section (an in-memory sled transaction; never
//! an `.await`, never the disk flush): the flush happens afterwards, for many sends at
//! once, in `durability.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::Message as _;
use rand::RngCore;
use tern_proto::pb::{self, ConversationKind, ErrorCode, Role};
use tern_proto::raw::{RawInboxItem, RawSyncResult};
use tern_proto::{direct_conversation, encode_frame, Body, Frame};
use tokio::sync::oneshot;

use crate::durability::Durability;
use crate::error::{ServiceError, ServiceResult};
use crate::hub::Hub;
use crate::store::{
    CommitOutcome, ConversationRecord, DedupRecord, InboxRecord, MemberRecord, Mutation, Store,
};
use crate::validate;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, Clone)]
pub struct ChatLimits {
    pub fanout_threshold: usize,
    pub max_group_members: usize,
    /// Every frame the server sends fits in this (the clients' limit too).
    pub max_frame_bytes: usize,
}

/// Room kept in a frame for the envelope around a message body (ids, names, push
/// fields): 4096 bytes, or a quarter of a (test-sized) small frame.
fn envelope(max_frame: usize) -> usize {
    4096.min(max_frame / 4)
}

impl ChatLimits {
    /// Largest body a Send may carry, so the pushed message fits in one frame.
    pub fn max_body(&self) -> usize {
        self.max_frame_bytes - envelope(self.max_frame_bytes)
    }
    /// Byte budget for the messages of one Sync or Pull page.
    fn page_budget(&self) -> usize {
        self.max_frame_bytes - envelope(self.max_frame_bytes)
    }
}

/// What a durable append is answered with.
#[derive(Debug, Clone)]
pub struct AckInfo {
    pub conversation: String,
    pub seq: u64,
    pub server_time_ms: u64,
    pub client_msg_id: String,
    pub duplicate: bool,
    pub sender_inbox_seq: u64,
}

impl AckInfo {
    pub fn to_pb(&self) -> pb::SendAck {
        pb::SendAck {
            conversation: self.conversation.clone(),
            seq: self.seq,
            server_time_ms: self.server_time_ms,
            client_msg_id: self.client_msg_id.clone(),
            duplicate: self.duplicate,
            inbox_seq: self.sender_inbox_seq,
        }
    }
}

/// Called once the append is durable (or failed). Runs on the flusher task: it must not
/// block.
pub type AckCallback = Box<dyn FnOnce(ServiceResult<AckInfo>) + Send>;

struct ConvState {
    kind: ConversationKind,
    name: String,
    created_ms: u64,
    /// False for a 1:1 conversation before its first message.
    exists: bool,
    last_seq: u64,
    read_diffusion: bool,
    members: BTreeMap<String, MemberRecord>,
}

impl ConvState {
    fn role(&self, user: &str) -> Option<Role> {
        self.members
            .get(user)
            .map(|m| Role::try_from(m.role).unwrap_or(Role::Member))
    }

    fn record(&self) -> ConversationRecord {
        ConversationRecord {
            kind: self.kind as i32,
            name: self.name.clone(),
            created_ms: self.created_ms,
            read_diffusion: self.read_diffusion,
        }
    }
}

/// One message to append under a conversation's lock.
struct Append {
    msg: pb::Message,
    /// Users who get an inbox entry (write diffusion) and a push.
    recipients: Vec<String>,
    /// Other writes that commit atomically with the message (membership, metadata).
    extra: Vec<Mutation>,
    /// (sender, client_msg_id) for dedup; none for system messages.
    dedup: Option<(String, String)>,
}

const CONV_SHARDS: usize = 32;

/// Conversation states kept in memory, all shards together. Beyond it, idle states (held
/// by nobody) are dropped and reloaded from the store on next use.
const CONV_CACHE: usize = 65_536;
/// Inbox heads kept in memory; beyond it some are dropped and re-read from the store.
const INBOX_HEAD_CACHE: usize = 262_144;

/// Drops idle entries (no `Arc` held outside the map, so no lock or append in progress)
/// until `map` is down to `target`.
fn evict_idle<T>(map: &mut HashMap<String, Arc<T>>, target: usize) {
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

pub struct Chat {
    store: Arc<dyn Store>,
    durability: Arc<Durability>,
    hub: Arc<Hub>,
    limits: ChatLimits,
    convs: Vec<Mutex<HashMap<String, Arc<Mutex<ConvState>>>>>,
    /// Inbox heads by user; see the module doc.
    commit_lock: Mutex<HashMap<String, u64>>,
    conv_cache_per_shard: usize,
    inbox_head_cache: usize,
}

pub enum ConvId {
    Direct(String, String),
    Group,
}

/// Parses and validates a conversation id.
pub fn parse_conversation(id: &str) -> ServiceResult<ConvId> {
    if let Some(rest) = id.strip_prefix("d:") {
        if let Some((a, b)) = rest.split_once(':') {
            if validate::username(a).is_ok() && validate::username(b).is_ok() && a <= b {
                return Ok(ConvId::Direct(a.to_string(), b.to_string()));
            }
        }
    } else if let Some(g) = id.strip_prefix("g:") {
        if g.len() == 16
            && g.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            return Ok(ConvId::Group);
        }
    }
    Err(ServiceError::invalid(format!(
        "conversation id {:?} is not d:<user>:<user> or g:<16 hex>",
        truncate(id, 80)
    )))
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn push_frame(msg: &pb::Message, inbox_seq: u64) -> Bytes {
    encode_frame(&Frame {
        req_id: 0,
        body: Some(Body::Push(pb::MessagePush {
            message: Some(msg.clone()),
            inbox_seq,
        })),
    })
}

impl Chat {
    pub fn new(
        store: Arc<dyn Store>,
        durability: Arc<Durability>,
        hub: Arc<Hub>,
        limits: ChatLimits,
    ) -> Self {
        Self {
            store,
            durability,
            hub,
            limits,
            convs: (0..CONV_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            commit_lock: Mutex::new(HashMap::new()),
            conv_cache_per_shard: CONV_CACHE / CONV_SHARDS,
            inbox_head_cache: INBOX_HEAD_CACHE,
        }
    }

    /// Smaller caches, for tests of eviction.
    #[cfg(test)]
    fn with_cache_limits(mut self, convs_per_shard: usize, inbox_heads: usize) -> Self {
        self.conv_cache_per_shard = convs_per_shard;
        self.inbox_head_cache = inbox_heads;
        self
    }

    fn shard(&self, conv: &str) -> &Mutex<HashMap<String, Arc<Mutex<ConvState>>>> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        conv.hash(&mut h);
        &self.convs[(h.finish() as usize) % CONV_SHARDS]
    }

    /// The cached state of a conversation, loaded on first use. A 1:1 conversation that
    /// has no message yet gets a not-yet-existing state; an unknown group is NOT_FOUND.
    fn conv(&self, id: &str) -> ServiceResult<Arc<Mutex<ConvState>>> {
        // The miss path loads under the shard lock: with eviction, a state loaded outside
        // it could be older than one that was appended to and evicted meanwhile.
        let mut shard = self.shard(id).lock().unwrap();
        if let Some(s) = shard.get(id) {
            return Ok(s.clone());
        }
        let parsed = parse_conversation(id)?;
        let state = match self.store.conversation(id)? {
            Some(rec) => ConvState {
                kind: ConversationKind::try_from(rec.kind).unwrap_or(ConversationKind::Group),
                name: rec.name,
                created_ms: rec.created_ms,
                exists: true,
                last_seq: self.store.last_seq(id)?,
                read_diffusion: rec.read_diffusion,
                members: self.store.members(id)?.into_iter().collect(),
            },
            None => match parsed {
                ConvId::Direct(a, b) => {
                    let member = MemberRecord {
                        role: Role::Member as i32,
                        joined_ms: 0,
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
                        read_diffusion: false,
                        members,
                    }
                }
                ConvId::Group => return Err(ServiceError::not_found(format!("no group {id}"))),
            },
        };
        if shard.len() >= self.conv_cache_per_shard {
            evict_idle(&mut shard, self.conv_cache_per_shard * 3 / 4);
        }
        let st = Arc::new(Mutex::new(state));
        shard.insert(id.to_string(), st.clone());
        Ok(st)
    }

    /// The conversation's state if `user` is a member; FORBIDDEN otherwise (also for a
    /// 1:1 conversation that does not exist yet, or a group that does not exist).
    fn member_conv(&self, id: &str, user: &str) -> ServiceResult<Arc<Mutex<ConvState>>> {
        let forbidden = || ServiceError::forbidden(format!("not a member of {}", truncate(id, 80)));
        let st = match self.conv(id) {
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

    fn inbox_head(&self, heads: &mut HashMap<String, u64>, user: &str) -> ServiceResult<u64> {
        if let Some(h) = heads.get(user) {
            return Ok(*h);
        }
        let h = self.store.last_inbox_seq(user)?;
        if heads.len() >= self.inbox_head_cache {
            // Any head can go: under this lock the store has every allocated inbox seq.
            let drop: Vec<String> = heads.keys().take(heads.len() / 4 + 1).cloned().collect();
            for u in drop {
                heads.remove(&u);
            }
        }
        heads.insert(user.to_string(), h);
        Ok(h)
    }

    /// The user's highest inbox seq (committed; durable once a barrier passed).
    pub fn current_inbox_head(&self, user: &str) -> ServiceResult<u64> {
        let mut heads = self.commit_lock.lock().unwrap();
        self.inbox_head(&mut heads, user)
    }

    /// Sequences, stores and queues one message. Called with the conversation locked.
    /// `done` runs after the write is durable; on a duplicate it gets the original ack.
    /// Returns false for a duplicate (nothing written).
    fn append(&self, st: &mut ConvState, mut a: Append, done: AckCallback) -> ServiceResult<bool> {
        let seq = st.last_seq + 1;
        a.msg.seq = seq;
        let now = a.msg.server_time_ms;
        let sender = a.msg.sender.clone();
        let cmid = a.msg.client_msg_id.clone();
        let read_diffusion = st.read_diffusion;
        let mut muts = std::mem::take(&mut a.extra);
        muts.push(Mutation::Message(a.msg.clone()));

        let mut heads = self.commit_lock.lock().unwrap();
        let mut alloc: Vec<(String, u64)> = Vec::new();
        if !read_diffusion {
            alloc.reserve(a.recipients.len());
            for user in &a.recipients {
                let h = self.inbox_head(&mut heads, user)? + 1;
                muts.push(Mutation::Inbox {
                    user: user.clone(),
                    inbox_seq: h,
                    entry: InboxRecord {
                        conversation: a.msg.conversation.clone(),
                        seq,
                    },
                });
                alloc.push((user.clone(), h));
            }
        }
        let sender_inbox_seq = alloc
            .iter()
            .find(|(u, _)| *u == sender)
            .map(|(_, h)| *h)
            .unwrap_or(0);
        if let Some((s, id)) = &a.dedup {
            muts.push(Mutation::Dedup {
                sender: s.clone(),
                client_msg_id: id.clone(),
                record: DedupRecord {
                    conversation: a.msg.conversation.clone(),
                    seq,
                    server_time_ms: now,
                    inbox_seq: sender_inbox_seq,
                },
            });
        }
        match self.store.commit(&muts)? {
            CommitOutcome::Duplicate(rec) => {
                // Raced with the original: answer with it once it is durable.
                self.durability
                    .after_durable(duplicate_completion(rec, cmid, done));
                return Ok(false);
            }
            CommitOutcome::Applied => {}
        }
        if a.dedup.is_some() {
            crate::metrics::get().sends.inc();
        }
        for (u, h) in &alloc {
            heads.insert(u.clone(), *h);
        }
        st.last_seq = seq;
        st.exists = true;
        self.durability.applied();
        let hub = self.hub.clone();
        let msg = a.msg;
        let recipients = a.recipients;
        self.durability.after_durable(Box::new(move |res| {
            if res.is_err() {
                done(Err(ServiceError::new(
                    ErrorCode::Internal,
                    "the message could not be made durable; retry with the same client_msg_id",
                )));
                return;
            }
            let ack = AckInfo {
                conversation: msg.conversation.clone(),
                seq,
                server_time_ms: now,
                client_msg_id: cmid,
                duplicate: false,
                sender_inbox_seq,
            };
            done(Ok(ack));
            if read_diffusion {
                let frame = push_frame(&msg, 0);
                for u in &recipients {
                    hub.push_to_user(u, &frame);
                }
            } else {
                for (u, h) in &alloc {
                    if hub.is_online(u) {
                        hub.push_to_user(u, &push_frame(&msg, *h));
                    }
                }
            }
        }));
        Ok(true)
    }

    /// Sends a user message. `done` gets the durable ack (or the original one for a
    /// repeated client_msg_id).
    pub fn send(
        &self,
        sender: &str,
        device: &str,
        req: pb::Send,
        done: AckCallback,
    ) -> ServiceResult<()> {
        validate::client_msg_id(&req.client_msg_id)?;
        validate::content_type(&req.content_type)?;
        if req.body.len() > self.limits.max_body() {
            return Err(ServiceError::invalid(format!(
                "body of {} bytes is over the limit of {} bytes",
                req.body.len(),
                self.limits.max_body()
            )));
        }
        // A repeat is answered with the original ack even if the sender has since lost
        // access: it was authorized when it was accepted.
        if let Some(rec) = self.store.dedup(sender, &req.client_msg_id)? {
            self.durability
                .after_durable(duplicate_completion(rec, req.client_msg_id, done));
            return Ok(());
        }
        let conv_id = match (req.conversation.is_empty(), req.peer.is_empty()) {
            (false, true) => req.conversation.clone(),
            (true, false) => {
                validate::username(&req.peer)?;
                if self.store.user(&req.peer)?.is_none() {
                    return Err(ServiceError::not_found(format!("no user {}", req.peer)));
                }
                direct_conversation(sender, &req.peer)
            }
            _ => {
                return Err(ServiceError::invalid(
                    "exactly one of conversation and peer must be set",
                ))
            }
        };
        let st_arc = if req.peer.is_empty() {
            self.member_conv(&conv_id, sender)?
        } else {
            self.conv(&conv_id)?
        };
        let mut st = st_arc.lock().unwrap();
        if !st.members.contains_key(sender) {
            return Err(ServiceError::forbidden(format!(
                "not a member of {conv_id}"
            )));
        }
        let now = now_ms();
        let mut extra = Vec::new();
        if !st.exists {
            st.created_ms = now;
            extra.push(Mutation::Conversation {
                conversation: conv_id.clone(),
                record: st.record(),
            });
            for (u, m) in &st.members {
                extra.push(Mutation::PutMember {
                    conversation: conv_id.clone(),
                    user: u.clone(),
                    record: m.clone(),
                });
            }
        }
        let msg = pb::Message {
            conversation: conv_id,
            seq: 0,
            sender: sender.to_string(),
            client_msg_id: req.client_msg_id.clone(),
            server_time_ms: now,
            body: req.body,
            content_type: req.content_type,
            kind: pb::MessageKind::Unspecified as i32,
            event: None,
            sender_device: device.to_string(),
        };
        let recipients = st.members.keys().cloned().collect();
        // A duplicate (a racing retry) is answered through `done` as well.
        self.append(
            &mut st,
            Append {
                msg,
                recipients,
                extra,
                dedup: Some((sender.to_string(), req.client_msg_id)),
            },
            done,
        )?;
        Ok(())
    }

    /// Appends a SYSTEM message for a group event and waits until it is durable.
    async fn system_event(
        &self,
        st_arc: &Arc<Mutex<ConvState>>,
        conv: &str,
        event: pb::GroupEvent,
        recipients: Vec<String>,
        extra: Vec<Mutation>,
        apply: impl FnOnce(&mut ConvState),
    ) -> ServiceResult<u64> {
        let (tx, rx) = oneshot::channel();
        {
            let mut st = st_arc.lock().unwrap();
            let msg = pb::Message {
                conversation: conv.to_string(),
                sender: event.actor.clone(),
                server_time_ms: now_ms(),
                kind: pb::MessageKind::System as i32,
                event: Some(event),
                ..Default::default()
            };
            self.append(
                &mut st,
                Append {
                    msg,
                    recipients,
                    extra,
                    dedup: None,
                },
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            )?;
            apply(&mut st);
        }
        let ack = rx.await.map_err(|_| ServiceError::internal())??;
        Ok(ack.seq)
    }

    fn check_users_exist(&self, users: &[String]) -> ServiceResult<()> {
        for u in users {
            validate::username(u)?;
            if self.store.user(u)?.is_none() {
                return Err(ServiceError::not_found(format!("no user {u}")));
            }
        }
        Ok(())
    }

    pub async fn create_group(
        &self,
        owner: &str,
        req: pb::CreateGroup,
    ) -> ServiceResult<pb::GroupCreated> {
        validate::group_name(&req.name)?;
        let mut others: BTreeSet<String> = req.members.into_iter().collect();
        others.remove(owner);
        let others: Vec<String> = others.into_iter().collect();
        self.check_users_exist(&others)?;
        if others.len() + 1 > self.limits.max_group_members {
            return Err(ServiceError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "a group has at most {} members",
                    self.limits.max_group_members
                ),
            ));
        }
        let mut idb = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut idb);
        let conv: String = format!(
            "g:{}",
            idb.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let now = now_ms();
        let mut members = BTreeMap::new();
        members.insert(
            owner.to_string(),
            MemberRecord {
                role: Role::Owner as i32,
                joined_ms: now,
            },
        );
        for u in &others {
            members.insert(
                u.clone(),
                MemberRecord {
                    role: Role::Member as i32,
                    joined_ms: now,
                },
            );
        }
        let state = ConvState {
            kind: ConversationKind::Group,
            name: req.name.clone(),
            created_ms: now,
            exists: false,
            last_seq: 0,
            read_diffusion: members.len() > self.limits.fanout_threshold,
            members,
        };
        let mut extra = vec![Mutation::Conversation {
            conversation: conv.clone(),
            record: state.record(),
        }];
        for (u, m) in &state.members {
            extra.push(Mutation::PutMember {
                conversation: conv.clone(),
                user: u.clone(),
                record: m.clone(),
            });
        }
        let recipients: Vec<String> = state.members.keys().cloned().collect();
        let st_arc = Arc::new(Mutex::new(state));
        self.shard(&conv)
            .lock()
            .unwrap()
            .insert(conv.clone(), st_arc.clone());
        let event = pb::GroupEvent {
            kind: pb::GroupEventKind::Created as i32,
            actor: owner.to_string(),
            users: others,
            name: req.name,
        };
        let seq = self
            .system_event(&st_arc, &conv, event, recipients, extra, |_| {})
            .await;
        match seq {
            Ok(seq) => Ok(pb::GroupCreated {
                conversation: conv,
                seq,
            }),
            Err(e) => {
                if !st_arc.lock().unwrap().exists {
                    self.shard(&conv).lock().unwrap().remove(&conv);
                }
                Err(e)
            }
        }
    }

    fn group_for_admin(
        &self,
        conv: &str,
        actor: &str,
    ) -> ServiceResult<(Arc<Mutex<ConvState>>, Role)> {
        let st = self.member_conv(conv, actor)?;
        let role = {
            let g = st.lock().unwrap();
            if g.kind != ConversationKind::Group {
                return Err(ServiceError::invalid("not a group"));
            }
            g.role(actor).unwrap_or(Role::Member)
        };
        if role != Role::Owner && role != Role::Admin {
            return Err(ServiceError::forbidden(
                "only the owner or an admin may do this",
            ));
        }
        Ok((st, role))
    }

    pub async fn add_members(&self, actor: &str, req: pb::AddMembers) -> ServiceResult<()> {
        let role = match Role::try_from(req.role).unwrap_or(Role::Unspecified) {
            Role::Unspecified | Role::Member => Role::Member,
            Role::Admin => Role::Admin,
            Role::Owner => return Err(ServiceError::invalid("a group has one owner")),
        };
        let (st_arc, actor_role) = self.group_for_admin(&req.conversation, actor)?;
        if role == Role::Admin && actor_role != Role::Owner {
            return Err(ServiceError::forbidden("only the owner may add admins"));
        }
        let wanted: BTreeSet<String> = req.users.into_iter().collect();
        if wanted.is_empty() {
            return Err(ServiceError::invalid("users is empty"));
        }
        let wanted: Vec<String> = wanted.into_iter().collect();
        self.check_users_exist(&wanted)?;
        let (new, recipients, extra, read_diffusion) = {
            let st = st_arc.lock().unwrap();
            let new: Vec<String> = wanted
                .into_iter()
                .filter(|u| !st.members.contains_key(u))
                .collect();
            if st.members.len() + new.len() > self.limits.max_group_members {
                return Err(ServiceError::new(
                    ErrorCode::ResourceExhausted,
                    format!(
                        "a group has at most {} members",
                        self.limits.max_group_members
                    ),
                ));
            }
            let now = now_ms();
            let mut extra = Vec::new();
            for u in &new {
                extra.push(Mutation::PutMember {
                    conversation: req.conversation.clone(),
                    user: u.clone(),
                    record: MemberRecord {
                        role: role as i32,
                        joined_ms: now,
                    },
                });
            }
            let read_diffusion =
                st.read_diffusion || st.members.len() + new.len() > self.limits.fanout_threshold;
            if read_diffusion && !st.read_diffusion {
                let mut rec = st.record();
                rec.read_diffusion = true;
                extra.push(Mutation::Conversation {
                    conversation: req.conversation.clone(),
                    record: rec,
                });
            }
            let mut recipients: Vec<String> = st.members.keys().cloned().collect();
            recipients.extend(new.iter().cloned());
            (new, recipients, extra, read_diffusion)
        };
        if new.is_empty() {
            return Ok(());
        }
        let event = pb::GroupEvent {
            kind: pb::GroupEventKind::MembersAdded as i32,
            actor: actor.to_string(),
            users: new.clone(),
            name: String::new(),
        };
        let now = now_ms();
        self.system_event(&st_arc, &req.conversation, event, recipients, extra, |st| {
            for u in new {
                st.members.insert(
                    u,
                    MemberRecord {
                        role: role as i32,
                        joined_ms: now,
                    },
                );
            }
            st.read_diffusion = read_diffusion;
        })
        .await?;
        Ok(())
    }

    pub async fn remove_members(&self, actor: &str, req: pb::RemoveMembers) -> ServiceResult<()> {
        let (st_arc, actor_role) = self.group_for_admin(&req.conversation, actor)?;
        let wanted: BTreeSet<String> = req.users.into_iter().collect();
        if wanted.is_empty() {
            return Err(ServiceError::invalid("users is empty"));
        }
        if wanted.contains(actor) {
            return Err(ServiceError::invalid("use LeaveGroup to remove yourself"));
        }
        let (gone, recipients) = {
            let st = st_arc.lock().unwrap();
            let mut gone = Vec::new();
            for u in &wanted {
                match st.role(u) {
                    None => {}
                    Some(Role::Owner) => {
                        return Err(ServiceError::forbidden("the owner cannot be removed"))
                    }
                    Some(Role::Admin) if actor_role != Role::Owner => {
                        return Err(ServiceError::forbidden(
                            "only the owner may remove an admin",
                        ))
                    }
                    Some(_) => gone.push(u.clone()),
                }
            }
            (gone, st.members.keys().cloned().collect::<Vec<_>>())
        };
        if gone.is_empty() {
            return Ok(());
        }
        let extra = gone
            .iter()
            .map(|u| Mutation::DelMember {
                conversation: req.conversation.clone(),
                user: u.clone(),
            })
            .collect();
        let event = pb::GroupEvent {
            kind: pb::GroupEventKind::MembersRemoved as i32,
            actor: actor.to_string(),
            users: gone.clone(),
            name: String::new(),
        };
        self.system_event(&st_arc, &req.conversation, event, recipients, extra, |st| {
            for u in &gone {
                st.members.remove(u);
            }
        })
        .await?;
        Ok(())
    }

    pub async fn leave_group(&self, user: &str, req: pb::LeaveGroup) -> ServiceResult<()> {
        let st_arc = self.member_conv(&req.conversation, user)?;
        let (recipients, extra, successor) = {
            let st = st_arc.lock().unwrap();
            if st.kind != ConversationKind::Group {
                return Err(ServiceError::invalid("cannot leave a 1:1 conversation"));
            }
            let mut extra = vec![Mutation::DelMember {
                conversation: req.conversation.clone(),
                user: user.to_string(),
            }];
            // The owner leaving hands the group to the first admin, else the first member.
            let mut successor = None;
            if st.role(user) == Some(Role::Owner) {
                let pick = |want: Role| {
                    st.members
                        .iter()
                        .find(|(u, m)| u.as_str() != user && m.role == want as i32)
                        .map(|(u, m)| (u.clone(), m.clone()))
                };
                if let Some((u, mut m)) = pick(Role::Admin).or_else(|| pick(Role::Member)) {
                    m.role = Role::Owner as i32;
                    extra.push(Mutation::PutMember {
                        conversation: req.conversation.clone(),
                        user: u.clone(),
                        record: m.clone(),
                    });
                    successor = Some((u, m));
                }
            }
            (
                st.members.keys().cloned().collect::<Vec<_>>(),
                extra,
                successor,
            )
        };
        let event = pb::GroupEvent {
            kind: pb::GroupEventKind::MemberLeft as i32,
            actor: user.to_string(),
            users: vec![user.to_string()],
            name: String::new(),
        };
        self.system_event(&st_arc, &req.conversation, event, recipients, extra, |st| {
            st.members.remove(user);
            if let Some((u, m)) = successor {
                st.members.insert(u, m);
            }
        })
        .await?;
        Ok(())
    }

    pub async fn list_members(&self, user: &str, conv: &str) -> ServiceResult<pb::MemberList> {
        let st = self.member_conv(conv, user)?;
        let members = {
            let g = st.lock().unwrap();
            g.members
                .iter()
                .map(|(u, m)| pb::Member {
                    username: u.clone(),
                    role: m.role,
                })
                .collect()
        };
        self.barrier().await?;
        Ok(pb::MemberList {
            conversation: conv.to_string(),
            members,
        })
    }

    pub async fn list_conversations(&self, user: &str) -> ServiceResult<pb::ConversationList> {
        let mut out = Vec::new();
        for id in self.store.user_conversations(user)? {
            let st = self.conv(&id)?;
            let g = st.lock().unwrap();
            let name = match (&g.kind, parse_conversation(&id)) {
                (ConversationKind::Direct, Ok(ConvId::Direct(a, b))) => {
                    if a == user {
                        b
                    } else {
                        a
                    }
                }
                _ => g.name.clone(),
            };
            out.push(pb::ConversationInfo {
                conversation: id.clone(),
                kind: g.kind as i32,
                name,
                last_seq: g.last_seq,
                read_diffusion: g.read_diffusion,
                member_count: g.members.len() as u32,
                role: g.role(user).unwrap_or(Role::Unspecified) as i32,
            });
        }
        self.barrier().await?;
        Ok(pb::ConversationList { conversations: out })
    }

    /// History and gap repair; see PROTOCOL.md "Pull".
    pub async fn pull(&self, user: &str, req: pb::Pull) -> ServiceResult<pb::PullResult> {
        let st = self.member_conv(&req.conversation, user)?;
        let last = st.lock().unwrap().last_seq;
        let limit = match req.limit {
            0 => 100,
            n => n.min(1000),
        } as u64;
        let (from, to, forward) = if req.after_seq > 0 || req.before_seq == 0 {
            let end = if req.until_seq > 0 {
                req.until_seq.min(last)
            } else {
                last
            };
            (
                req.after_seq.saturating_add(1),
                end.min(req.after_seq.saturating_add(limit)),
                true,
            )
        } else {
            // Any before_seq past the end means "the newest page".
            let to = (req.before_seq - 1).min(last);
            (to.saturating_sub(limit - 1).max(1), to, false)
        };
        let mut messages = if from <= to {
            self.store
                .timeline(&req.conversation, from, to, (to - from + 1) as usize)?
        } else {
            Vec::new()
        };
        // Never silently serve a hole: the timeline is contiguous by construction.
        for (i, m) in messages.iter().enumerate() {
            if m.seq != from + i as u64 {
                tracing::error!(conv = %req.conversation, expected = from + i as u64, got = m.seq, "timeline hole");
                return Err(ServiceError::internal());
            }
        }
        if from <= to && messages.len() as u64 != to - from + 1 {
            tracing::error!(conv = %req.conversation, from, to, got = messages.len(), "timeline shorter than its last seq");
            return Err(ServiceError::internal());
        }
        // Keep the page within one frame: forward pages keep the oldest messages,
        // backward pages the newest (those nearest the position asked for).
        let keep = fit_in_budget(
            messages.iter().map(|m| m.encoded_len()),
            forward,
            self.limits.page_budget(),
        );
        if keep < messages.len() {
            if forward {
                messages.truncate(keep);
            } else {
                messages.drain(..messages.len() - keep);
            }
        }
        let (from_seq, to_seq) = match (messages.first(), messages.last()) {
            (Some(f), Some(l)) => (f.seq, l.seq),
            _ => (0, 0),
        };
        let complete = if forward {
            let end = if req.until_seq > 0 {
                req.until_seq.min(last)
            } else {
                last
            };
            to_seq.max(req.after_seq) >= end
        } else {
            from_seq <= 1 || messages.len() as u64 >= limit
        };
        self.barrier().await?;
        Ok(pb::PullResult {
            conversation: req.conversation,
            messages,
            from_seq,
            to_seq,
            last_seq: last,
            complete,
        })
    }

    /// Reads the user's inbox after `after`; see PROTOCOL.md "Sync".
    /// Items carry the stored message bytes as they are (see `tern_proto::raw`).
    pub async fn sync(&self, user: &str, after: u64, limit: u32) -> ServiceResult<RawSyncResult> {
        let limit = match limit {
            0 => 200,
            n => n.min(1000),
        } as usize;
        let head = self.current_inbox_head(user)?;
        if after > head {
            return Err(ServiceError::invalid(format!(
                "after_inbox_seq {after} is beyond the inbox head {head}"
            )));
        }
        let entries = self.store.inbox(user, after, limit)?;
        let mut items = Vec::with_capacity(entries.len());
        let mut bytes = 0usize;
        for (expect, (inbox_seq, e)) in (after + 1..).zip(entries) {
            if inbox_seq != expect {
                tracing::error!(%user, expected = expect, got = inbox_seq, "inbox hole");
                return Err(ServiceError::internal());
            }
            let Some(message) = self.store.message_bytes(&e.conversation, e.seq)? else {
                tracing::error!(%user, conv = %e.conversation, seq = e.seq, "inbox points at a missing message");
                return Err(ServiceError::internal());
            };
            // Keep the page within one frame (always at least one item).
            bytes += message.len() + 16;
            if !items.is_empty() && bytes > self.limits.page_budget() {
                break;
            }
            items.push(RawInboxItem { inbox_seq, message });
        }
        let to = items.last().map(|i| i.inbox_seq).unwrap_or(after);
        let head = head.max(to);
        let complete = to >= head;
        let mut read_diffusion = Vec::new();
        if complete {
            for id in self.store.user_conversations(user)? {
                let st = self.conv(&id)?;
                let g = st.lock().unwrap();
                if g.read_diffusion {
                    read_diffusion.push(pb::ConversationHead {
                        conversation: id.clone(),
                        last_seq: g.last_seq,
                    });
                }
            }
        }
        self.barrier().await?;
        Ok(RawSyncResult {
            items,
            from_inbox_seq: after,
            to_inbox_seq: to,
            inbox_head: head,
            complete,
            read_diffusion,
        })
    }

    pub fn presence(&self, users: &[String]) -> ServiceResult<pb::PresenceResult> {
        if users.len() > 100 {
            return Err(ServiceError::invalid(
                "at most 100 users per presence query",
            ));
        }
        Ok(pb::PresenceResult {
            users: users
                .iter()
                .map(|u| pb::UserPresence {
                    username: u.clone(),
                    online_devices: self.hub.online_devices(u),
                })
                .collect(),
        })
    }

    pub fn group_online(&self, user: &str, conv: &str) -> ServiceResult<pb::GroupOnlineResult> {
        let st = self.member_conv(conv, user)?;
        let g = st.lock().unwrap();
        Ok(pb::GroupOnlineResult {
            conversation: conv.to_string(),
            members: g.members.len() as u32,
            online_members: g.members.keys().filter(|u| self.hub.is_online(u)).count() as u32,
        })
    }

    async fn barrier(&self) -> ServiceResult<()> {
        self.durability
            .barrier()
            .await
            .map_err(|_| ServiceError::new(ErrorCode::Internal, "storage flush failed; retry"))
    }
}

/// How many items (from the front, or from the back when `!from_front`) fit in `budget`
/// bytes; at least one.
fn fit_in_budget(
    sizes: impl DoubleEndedIterator<Item = usize>,
    from_front: bool,
    budget: usize,
) -> usize {
    let mut total = 0;
    let mut n = 0;
    let sizes: Box<dyn Iterator<Item = usize>> = if from_front {
        Box::new(sizes)
    } else {
        Box::new(sizes.rev())
    };
    for size in sizes {
        total += size + 16;
        if n > 0 && total > budget {
            break;
        }
        n += 1;
    }
    n
}

fn duplicate_completion(
    rec: DedupRecord,
    cmid: String,
    done: AckCallback,
) -> crate::durability::Completion {
    crate::metrics::get().dedup_hits.inc();
    Box::new(move |res| match res {
        Ok(()) => done(Ok(AckInfo {
            conversation: rec.conversation,
            seq: rec.seq,
            server_time_ms: rec.server_time_ms,
            client_msg_id: cmid,
            duplicate: true,
            sender_inbox_seq: rec.inbox_seq,
        })),
        Err(()) => done(Err(ServiceError::internal())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SledStore, UserRecord};

    /// With caches far smaller than the working set, conversation states and inbox heads
    /// are evicted and reloaded all the time; seqs and inbox seqs must stay contiguous.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn evicted_states_reload_without_reusing_a_seq() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 8 << 20).unwrap());
        let durability = Durability::new(store.clone());
        let stop = tokio_util::sync::CancellationToken::new();
        let flusher = tokio::spawn(durability.clone().run(stop.clone()));
        let chat = Arc::new(
            Chat::new(
                store.clone(),
                durability.clone(),
                Arc::new(Hub::new()),
                ChatLimits {
                    fanout_threshold: 500,
                    max_group_members: 1000,
                    max_frame_bytes: 1 << 20,
                },
            )
            .with_cache_limits(1, 4),
        );
        let users: Vec<String> = (0..12).map(|i| format!("u{i}")).collect();
        for u in &users {
            store.put_user(u, &UserRecord::default()).unwrap();
        }
        // Every user sends to every other user, 3 rounds, from 2 tasks at once.
        let mut tasks = Vec::new();
        for half in 0..2 {
            let chat = chat.clone();
            let users = users.clone();
            tasks.push(tokio::spawn(async move {
                let mut acks = Vec::new();
                for round in 0..3 {
                    for (i, from) in users.iter().enumerate() {
                        for to in users.iter().skip(i % 2 + half).step_by(2) {
                            if from == to {
                                continue;
                            }
                            let (tx, rx) = oneshot::channel();
                            let req = pb::Send {
                                client_msg_id: format!("{half}-{round}-{from}-{to}"),
                                peer: to.clone(),
                                body: b"x".to_vec().into(),
                                ..Default::default()
                            };
                            chat.send(
                                from,
                                "d",
                                req,
                                Box::new(move |r| {
                                    let _ = tx.send(r);
                                }),
                            )
                            .unwrap();
                            acks.push(rx.await.unwrap().unwrap());
                        }
                    }
                }
                acks
            }));
        }
        let mut per_conv: HashMap<String, Vec<u64>> = HashMap::new();
        for t in tasks {
            for a in t.await.unwrap() {
                per_conv.entry(a.conversation).or_default().push(a.seq);
            }
        }
        assert!(
            per_conv.len() > 32,
            "more conversations than the cache holds"
        );
        for (conv, mut seqs) in per_conv {
            seqs.sort_unstable();
            let want: Vec<u64> = (1..=seqs.len() as u64).collect();
            assert_eq!(seqs, want, "{conv}: seqs contiguous, none reused");
            let stored = store.last_seq(&conv).unwrap();
            assert_eq!(stored, want.len() as u64, "{conv}");
        }
        // Inbox seqs: every user's inbox is 1..=n with no hole or double.
        for u in &users {
            let page = chat.sync(u, 0, 1000).await.unwrap();
            let seqs: Vec<u64> = page.items.iter().map(|i| i.inbox_seq).collect();
            let want: Vec<u64> = (1..=seqs.len() as u64).collect();
            assert_eq!(seqs, want, "inbox of {u}");
        }
        let cached: usize = chat.convs.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(cached <= CONV_SHARDS, "cache bounded: {cached}");
        // At most the cap plus the two heads one 1:1 append writes back.
        assert!(chat.commit_lock.lock().unwrap().len() <= 4 + 2);
        stop.cancel();
        flusher.await.unwrap();
    }
}
