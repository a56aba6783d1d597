//! Profiles: a user's display name, status text and avatar (an image blob the user may
//! read; anyone may then read it), read for many users at once, and user search.
//!
//! - [`Profiles::set`]: validates, writes the profile and its entry in the display-name
//!   index in one commit, waits until it is durable, then pushes `ProfileChanged` to the
//!   [`Profiles::audience`].
//! - [`Profiles::get`]: up to [`MAX_GET`] users; unknown users are left out.
//! - [`Profiles::search`]: users whose name or (lowercased) display name starts with a
//!   prefix of at least [`MIN_PREFIX`] characters: two bounded range scans (the `users`
//!   tree and the `display_names` index), never a full scan; at most [`MAX_SEARCH`] answers;
//!   rate-limited per user ([`SEARCH_RATE`] per second, bursts of [`SEARCH_BURST`]) on top
//!   of the session's request limits, so the user base cannot be enumerated quickly.
//!
//! Nothing here reads or returns password data: profiles live in their own key space.

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tern_proto::pb;

use crate::blobs::Blobs;
use crate::clock::Clock;
use crate::conversations::id::{parse_conversation, ConvId};
use crate::conversations::ConvCache;
use crate::delivery::fanout;
use crate::delivery::router::Router;
use crate::error::{ServiceError, ServiceResult};
use crate::ratelimit::Bucket;
use crate::sequencer::Sequencer;
use crate::store::{Mutation, ProfileRecord, Store};

/// Longest display name, in characters.
pub(crate) const DISPLAY_NAME_MAX: usize = 64;
/// Longest status text, in characters.
pub(crate) const STATUS_MAX: usize = 256;
/// Most users one GetProfiles may name.
pub(crate) const MAX_GET: usize = 100;
/// Shortest search prefix, in characters.
pub(crate) const MIN_PREFIX: usize = 2;
/// Longest search prefix, in characters.
const MAX_PREFIX: usize = DISPLAY_NAME_MAX;
/// Answers of a search when the request names no limit.
const DEFAULT_SEARCH: usize = 20;
/// Most answers of one search.
pub(crate) const MAX_SEARCH: usize = 50;
/// Searches per second per user, sustained.
pub(crate) const SEARCH_RATE: u32 = 1;
/// Searches a user may make at once before [`SEARCH_RATE`] applies.
pub(crate) const SEARCH_BURST: u32 = 10;
/// Past this many users with a search bucket, idle buckets are dropped.
const SEARCH_BUCKETS: usize = 10_000;

pub(crate) struct Profiles {
    store: Arc<dyn Store>,
    sequencer: Arc<dyn Sequencer>,
    convs: Arc<ConvCache>,
    router: Arc<dyn Router>,
    clock: Arc<dyn Clock>,
    /// Serializes profile writes (read, change, write back), so two devices changing
    /// different fields at once each keep the other's change. Never held across an await.
    write: Mutex<()>,
    /// Per user: the search bucket and when it was last used.
    search_buckets: Mutex<HashMap<String, (Bucket, Instant)>>,
    /// Where avatars are checked; `None`: avatars are refused (domain tests).
    blobs: Option<Arc<Blobs>>,
}

impl Profiles {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        sequencer: Arc<dyn Sequencer>,
        convs: Arc<ConvCache>,
        router: Arc<dyn Router>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            sequencer,
            convs,
            router,
            clock,
            write: Mutex::new(()),
            search_buckets: Mutex::new(HashMap::new()),
            blobs: None,
        }
    }

    /// Lets profiles carry avatars stored in `blobs`.
    pub(crate) fn with_blobs(mut self, blobs: Arc<Blobs>) -> Self {
        self.blobs = Some(blobs);
        self
    }

    /// Changes the fields given (`None` keeps a value, "" clears it) and returns the
    /// profile. A change is durable before the answer and then pushed.
    pub(crate) async fn set(
        &self,
        user: &str,
        display_name: Option<String>,
        status: Option<String>,
        avatar: Option<String>,
    ) -> ServiceResult<pb::Profile> {
        let display_name = display_name
            .map(|s| text("display_name", s, DISPLAY_NAME_MAX))
            .transpose()?;
        let status = status.map(|s| text("status", s, STATUS_MAX)).transpose()?;
        // A new avatar must be an image the user may read; the guard keeps the blob
        // collector off it until the profile naming it is committed.
        let (record, changed) = {
            let _avatar_guard = match (&avatar, &self.blobs) {
                (Some(a), _) if a.is_empty() => None,
                (Some(_), None) => {
                    return Err(ServiceError::invalid("this server does not store avatars"))
                }
                (Some(a), Some(blobs)) => Some(blobs.check_avatar(user, a)?),
                (None, _) => None,
            };
            let _g = self.write.lock().unwrap();
            let old = self.store.profile(user)?.unwrap_or_default();
            let mut new = old.clone();
            if let Some(d) = display_name {
                new.display_name = d;
            }
            if let Some(s) = status {
                new.status = s;
            }
            if let Some(a) = avatar {
                new.avatar = a;
            }
            let changed = new != old;
            if changed {
                new.updated_ms = self.clock.now_ms();
                let mut batch = Vec::with_capacity(3);
                if old.display_name != new.display_name {
                    if !old.display_name.is_empty() {
                        batch.push(Mutation::UnlistDisplayName {
                            name: old.display_name.clone(),
                            user: user.to_string(),
                        });
                    }
                    if !new.display_name.is_empty() {
                        batch.push(Mutation::ListDisplayName {
                            name: new.display_name.clone(),
                            user: user.to_string(),
                        });
                    }
                }
                if old.avatar != new.avatar {
                    // The avatar's reference: anyone may read a user's current avatar.
                    let holder = format!("{}{user}", crate::blobs::AVATAR_HOLDER);
                    for (blob, present) in [(&old.avatar, false), (&new.avatar, true)] {
                        if !blob.is_empty() {
                            batch.push(Mutation::BlobRef {
                                blob: blob.clone(),
                                holder: holder.clone(),
                                seq: 0,
                                present,
                            });
                        }
                    }
                }
                batch.push(Mutation::Profile {
                    user: user.to_string(),
                    record: new.clone(),
                });
                self.store.commit(&batch)?;
                self.sequencer.wrote();
            }
            (new, changed)
        };
        self.sequencer.barrier().await?;
        let profile = to_wire(user, record);
        if changed {
            let to = self.audience(user)?;
            fanout::profile_changed(&*self.router, &profile, &to);
        }
        Ok(profile)
    }

    /// The profiles of `users` (at most [`MAX_GET`]), in the order asked, each once;
    /// users that do not exist are left out. A user without a profile has empty fields.
    pub(crate) async fn get(&self, users: &[String]) -> ServiceResult<pb::ProfileList> {
        if users.len() > MAX_GET {
            return Err(ServiceError::invalid(format!(
                "GetProfiles names {} users; at most {MAX_GET}",
                users.len()
            )));
        }
        for u in users {
            crate::validate::username(u)?;
        }
        self.sequencer.barrier().await?;
        let mut seen = BTreeSet::new();
        let mut profiles = Vec::new();
        for u in users {
            if !seen.insert(u.as_str()) || self.store.user(u)?.is_none() {
                continue;
            }
            let record = self.store.profile(u)?.unwrap_or_default();
            profiles.push(to_wire(u, record));
        }
        Ok(pb::ProfileList { profiles })
    }

    /// Users whose name or display name starts with `prefix` (case-insensitive), in name
    /// order, at most `limit` (0: [`DEFAULT_SEARCH`], capped at [`MAX_SEARCH`]). Disabled
    /// accounts are left out.
    pub(crate) fn search(
        &self,
        user: &str,
        prefix: &str,
        limit: u32,
    ) -> ServiceResult<pb::UserSearchResult> {
        self.take_search(user, Instant::now())?;
        let prefix = prefix.trim();
        let chars = prefix.chars().count();
        if !(MIN_PREFIX..=MAX_PREFIX).contains(&chars) {
            return Err(ServiceError::invalid(format!(
                "the search prefix must be {MIN_PREFIX}-{MAX_PREFIX} characters"
            )));
        }
        if prefix.chars().any(forbidden) {
            return Err(ServiceError::invalid(
                "the search prefix must not contain control characters",
            ));
        }
        let limit = match limit as usize {
            0 => DEFAULT_SEARCH,
            n => n.min(MAX_SEARCH),
        };
        let lower = prefix.to_lowercase();
        let mut found: BTreeSet<String> = BTreeSet::new();
        // User names are lowercase [a-z0-9_.-]: only such a prefix can match one.
        if lower.bytes().all(tern_proto::names::is_username_byte) {
            for (name, rec) in self.store.users_page(&lower, "", limit)? {
                if !rec.disabled {
                    found.insert(name);
                }
            }
        }
        for name in self.store.display_name_prefix(&lower, limit)? {
            if !found.contains(&name) && self.store.user(&name)?.is_some_and(|r| !r.disabled) {
                found.insert(name);
            }
        }
        let users = found
            .into_iter()
            .take(limit)
            .map(|u| {
                let display_name = self.store.profile(&u)?.unwrap_or_default().display_name;
                Ok(pb::UserMatch {
                    user: u,
                    display_name,
                })
            })
            .collect::<ServiceResult<Vec<_>>>()?;
        Ok(pb::UserSearchResult { users })
    }

    /// Who hears of `user`'s profile changes: the user's own devices, the other member of
    /// each of their direct conversations, and the members of their write-diffusion
    /// groups. Members of read-diffusion (large) groups are not told: they fetch profiles
    /// with GetProfiles when they show them. Only users online now, each once.
    ///
    /// Friends (and pending requests) are in it through their direct conversation: every
    /// contact change is a message in the pair's 1:1 conversation (`contacts`), so a
    /// friendship always comes with one.
    pub(crate) fn audience(&self, user: &str) -> ServiceResult<Vec<String>> {
        let mut to: BTreeSet<String> = BTreeSet::new();
        to.insert(user.to_string());
        for id in self.store.user_conversations(user)? {
            match parse_conversation(&id) {
                Ok(ConvId::Direct(a, b)) => {
                    to.insert(if a == user { b } else { a });
                }
                Ok(_) => {
                    let Ok(st) = self.convs.get(&id) else {
                        continue;
                    };
                    let g = st.lock().unwrap();
                    if !g.read_diffusion && g.members.contains_key(user) {
                        to.extend(g.members.keys().cloned());
                    }
                }
                Err(_) => continue,
            }
        }
        Ok(to
            .into_iter()
            .filter(|u| self.router.is_online(u))
            .collect())
    }

    /// Spends one of `user`'s search tokens, or says when the next one is there.
    fn take_search(&self, user: &str, now: Instant) -> ServiceResult<()> {
        let mut buckets = self.search_buckets.lock().unwrap();
        if buckets.len() >= SEARCH_BUCKETS && !buckets.contains_key(user) {
            // A bucket idle for a full refill is the same as a new one.
            let full = Duration::from_secs(u64::from(SEARCH_BURST / SEARCH_RATE.max(1)) + 1);
            buckets.retain(|_, (_, used)| now.saturating_duration_since(*used) < full);
        }
        let (bucket, used) = buckets
            .entry(user.to_string())
            .or_insert_with(|| (Bucket::new(SEARCH_RATE, SEARCH_BURST, now), now));
        *used = now;
        bucket
            .take(now)
            .map_err(|wait| ServiceError::rate_limited(wait, "user search rate exceeded"))
    }
}

/// A profile field: surrounding whitespace trimmed, at most `max` characters, none of them
/// control or bidi-override characters.
fn text(field: &str, s: String, max: usize) -> ServiceResult<String> {
    let s = s.trim();
    if s.chars().count() > max {
        return Err(ServiceError::invalid(format!(
            "{field} is longer than {max} characters"
        )));
    }
    if s.chars().any(forbidden) {
        return Err(ServiceError::invalid(format!(
            "{field} must be printable text without control characters"
        )));
    }
    Ok(s.to_string())
}

/// Control characters (including line breaks and 0x00) and the bidi overrides that make
/// a name display as something else.
fn forbidden(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn to_wire(user: &str, r: ProfileRecord) -> pb::Profile {
    pb::Profile {
        user: user.to_string(),
        display_name: r.display_name,
        status: r.status,
        avatar: r.avatar,
        updated_ms: r.updated_ms,
    }
}
