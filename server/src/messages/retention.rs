//! Retention (docs/PROTOCOL.md 8.11): a sweeper that trims old inbox entries (by age and
//! by count, per user) and, when configured, old timeline entries (per conversation), in
//! bounded batches through the store, and records how far it trimmed: a user's first
//! retained inbox seq (`z`) and a conversation's first retained seq (`y`). Sync and Pull
//! from below those answer `CURSOR_TRIMMED` ([`super::read`]).
//!
//! Rules:
//! - Trimming the inbox never touches a timeline: the messages stay readable with Pull
//!   (and read-diffusion readers never had inbox entries).
//! - The timeline rule keeps a conversation's newest entry, so its last seq, the
//!   conversation list's last message and the next seq stay as they were; and it never
//!   trims an entry younger than `retention_timeline_min_age_secs` (default one day), the
//!   window in which a client's retry still finds its original (D4).
//! - Whatever is keyed by (conversation, seq) of a trimmed entry goes with it: the entry,
//!   its not-counted and @all records (one [`Mutation::TrimTimeline`]), its mentions, its
//!   expiry index entry and its dedup record (read from the message). Left alone, and
//!   harmless: hidden (deleted-for-me) marks, read only for ranges that are served;
//!   pending push notifications, which the push worker sends without a preview once the
//!   message is gone (or drops when too old); inbox entries that point at a trimmed
//!   entry, which Sync serves as an erased tombstone until the inbox rule trims them.
//! - Deleting goes through [`crate::store::Store::commit`] like every write, so sled frees
//!   the pages (the soak in bench/ shows the data dir staying flat).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Messages;
use crate::config::RetentionPolicy;
use crate::error::ServiceResult;
use crate::store::{ExpiryEntry, Mutation};

/// Entries deleted per store commit.
const TRIM_BATCH: u64 = 256;
/// Users or conversations read per page while a sweep walks them.
const WALK_PAGE: usize = 256;

/// What one sweep trimmed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trimmed {
    pub inbox: u64,
    pub timeline: u64,
}

impl Messages {
    /// Runs retention sweeps every `policy.sweep_interval` until `stop` (returns at once
    /// when every rule is off).
    pub async fn run_retention_sweeper(
        self: Arc<Self>,
        policy: RetentionPolicy,
        stop: CancellationToken,
    ) {
        if !policy.any() {
            return;
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(policy.sweep_interval) => {}
            }
            let (me, p, s) = (self.clone(), policy.clone(), stop.clone());
            match tokio::task::spawn_blocking(move || me.sweep_retention(&p, &s)).await {
                Ok(Ok(_)) => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    crate::metrics::get().retention_last_sweep.set(now as i64);
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e.message, "retention sweep failed; retrying later")
                }
                Err(e) => tracing::error!(error = %e, "retention sweep panicked"),
            }
        }
    }

    /// One pass over every user (inbox rules) and every conversation (timeline rules).
    /// Blocking (store reads and commits); stops early when `stop` is cancelled.
    pub(crate) fn sweep_retention(
        &self,
        policy: &RetentionPolicy,
        stop: &CancellationToken,
    ) -> ServiceResult<Trimmed> {
        let now = self.clock.now_ms();
        let mut out = Trimmed::default();
        if policy.inbox_max_age_ms.is_some() || policy.inbox_max_entries.is_some() {
            let mut after = String::new();
            loop {
                let page = self.store.users_page("", &after, WALK_PAGE)?;
                for (user, _) in &page {
                    if stop.is_cancelled() {
                        return Ok(out);
                    }
                    out.inbox += self.trim_inbox(user, policy, now)?;
                }
                match page.last() {
                    Some((u, _)) if page.len() == WALK_PAGE => after = u.clone(),
                    _ => break,
                }
            }
        }
        if policy.timeline_max_age_ms.is_some() || policy.timeline_max_entries.is_some() {
            let mut after = String::new();
            loop {
                let page = self.store.conversations_page("", &after, WALK_PAGE)?;
                for (conv, _) in &page {
                    if stop.is_cancelled() {
                        return Ok(out);
                    }
                    out.timeline += self.trim_timeline(conv, policy, now)?;
                }
                match page.last() {
                    Some((c, _)) if page.len() == WALK_PAGE => after = c.clone(),
                    _ => break,
                }
            }
        }
        Ok(out)
    }

    /// Trims `user`'s inbox by the policy; returns how many entries went.
    fn trim_inbox(&self, user: &str, policy: &RetentionPolicy, now: u64) -> ServiceResult<u64> {
        let first = self.store.first_retained_inbox_seq(user)?;
        let head = self.sequencer.inbox_head(user)?;
        if head < first {
            return Ok(0);
        }
        // Everything below `below` goes.
        let mut below = first;
        if let Some(n) = policy.inbox_max_entries {
            below = below.max((head + 1).saturating_sub(n));
        }
        if let Some(age) = policy.inbox_max_age_ms {
            let cutoff = now.saturating_sub(age);
            // Oldest first; the inbox is in append (time) order, so stop at the first
            // entry young enough to keep. An entry whose message the timeline rule
            // already trimmed counts as old.
            'scan: loop {
                let page = self.store.inbox(user, below - 1, TRIM_BATCH as usize)?;
                if page.is_empty() {
                    break;
                }
                for (inbox_seq, e) in &page {
                    let time = self
                        .store
                        .message(&e.conversation, e.seq)?
                        .map_or(0, |m| m.server_time_ms);
                    if time > cutoff {
                        break 'scan;
                    }
                    below = inbox_seq + 1;
                }
            }
        }
        let below = below.min(head + 1);
        let mut from = first;
        while from < below {
            let to = below.min(from + TRIM_BATCH);
            self.store.commit(&[Mutation::TrimInbox {
                user: user.to_string(),
                from,
                below: to,
            }])?;
            self.sequencer.wrote();
            from = to;
        }
        let n = below.saturating_sub(first);
        if n > 0 {
            crate::metrics::get().retention_trimmed("inbox", n);
            tracing::debug!(%user, trimmed = n, first_retained = below, "inbox retention");
        }
        Ok(n)
    }

    /// Trims `conv`'s timeline by the policy (never its newest entry, never an entry
    /// younger than the minimum age); returns how many entries went.
    fn trim_timeline(&self, conv: &str, policy: &RetentionPolicy, now: u64) -> ServiceResult<u64> {
        let st = self.convs.get(conv)?;
        let last = st.lock().unwrap().last_seq;
        let first = self.store.first_retained_seq(conv)?;
        if last <= first {
            return Ok(0);
        }
        let count_below = policy
            .timeline_max_entries
            .map_or(0, |n| (last + 1).saturating_sub(n));
        let age_cutoff = policy.timeline_max_age_ms.map(|a| now.saturating_sub(a));
        let young = now.saturating_sub(policy.timeline_min_age_ms);
        let mut from = first;
        let mut n = 0;
        // Oldest first, one batch per commit, until the first entry that stays (seqs and
        // server times grow together).
        while from < last {
            // Exclusive; `last` itself always stays.
            let to = last.min(from + TRIM_BATCH);
            // Under the conversation's lock, so an edit, recall or expiry rewrite of an
            // entry in the batch cannot put it back after it was deleted.
            let _g = st.lock().unwrap();
            let mut muts = Vec::new();
            let mut below = from;
            for m in self
                .store
                .timeline(conv, from, to - 1, (to - from) as usize)?
            {
                let by_count = m.seq < count_below;
                let by_age = age_cutoff.is_some_and(|c| m.server_time_ms <= c);
                if m.seq != below || !(by_count || by_age) || m.server_time_ms > young {
                    break;
                }
                below = m.seq + 1;
                for u in &m.mentions {
                    muts.push(Mutation::Unmention {
                        user: u.clone(),
                        conversation: conv.to_string(),
                        seq: m.seq,
                    });
                }
                if m.expires_ms > 0 {
                    muts.push(Mutation::DelExpiry(ExpiryEntry {
                        expires_ms: m.expires_ms,
                        conversation: conv.to_string(),
                        seq: m.seq,
                    }));
                }
                if !m.client_msg_id.is_empty() {
                    // The retry window of D4 is over (the entry is older than the minimum
                    // age): its dedup record goes with it, or it would grow the store
                    // forever.
                    muts.push(Mutation::DelDedup {
                        sender: m.sender.clone(),
                        client_msg_id: m.client_msg_id.clone(),
                    });
                }
            }
            if below == from {
                break;
            }
            muts.push(Mutation::TrimTimeline {
                conversation: conv.to_string(),
                from,
                below,
            });
            self.store.commit(&muts)?;
            self.sequencer.wrote();
            n += below - from;
            if below < to {
                break;
            }
            from = below;
        }
        if n > 0 {
            crate::metrics::get().retention_trimmed("timeline", n);
            tracing::debug!(%conv, trimmed = n, "timeline retention");
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use crate::config::RetentionPolicy;
    use crate::testkit::World;

    fn policy() -> RetentionPolicy {
        RetentionPolicy {
            sweep_interval: Duration::from_secs(1),
            ..Default::default()
        }
    }

    /// The timeline count rule waits for the minimum age (a retry within it is still a
    /// duplicate), then trims with the dedup record; the newest entry always stays.
    #[tokio::test]
    async fn the_minimum_age_holds_timeline_entries_and_their_dedup_records() {
        let w = World::new();
        w.users(&["ann", "bob"]);
        let mut conv = String::new();
        for i in 1..=5 {
            conv = w
                .send("ann", "bob", &format!("m{i}"))
                .await
                .unwrap()
                .conversation;
        }
        let p = RetentionPolicy {
            timeline_max_entries: Some(1),
            timeline_min_age_ms: 60_000,
            ..policy()
        };
        let stop = CancellationToken::new();
        assert_eq!(w.messages.sweep_retention(&p, &stop).unwrap().timeline, 0);
        assert!(
            w.send("ann", "bob", "m1").await.unwrap().duplicate,
            "D4 holds"
        );
        w.clock.advance(60_001);
        let t = w.messages.sweep_retention(&p, &stop).unwrap();
        assert_eq!(t.timeline, 4);
        assert_eq!(w.store.first_retained_seq(&conv).unwrap(), 5);
        assert!(w.store.dedup("ann", "m1").unwrap().is_none());
        assert!(
            w.store.dedup("ann", "m5").unwrap().is_some(),
            "the newest stays"
        );
        // Nothing is left to trim: the newest entry is kept even at max_entries 1.
        assert_eq!(w.messages.sweep_retention(&p, &stop).unwrap().timeline, 0);
        assert_eq!(w.store.last_seq(&conv).unwrap(), 5);
        w.stop().await;
    }

    /// The inbox age rule trims what is older than the age, oldest first; the timeline
    /// keeps everything.
    #[tokio::test]
    async fn the_inbox_age_rule_trims_only_old_entries() {
        let w = World::new();
        w.users(&["ann", "bob"]);
        for i in 1..=3 {
            w.send("ann", "bob", &format!("old{i}")).await.unwrap();
        }
        w.clock.advance(10_000);
        let conv = w.send("ann", "bob", "new").await.unwrap().conversation;
        let p = RetentionPolicy {
            inbox_max_age_ms: Some(5_000),
            ..policy()
        };
        let t = w
            .messages
            .sweep_retention(&p, &CancellationToken::new())
            .unwrap();
        assert_eq!(t.inbox, 6, "three entries each of ann and bob");
        assert_eq!(w.store.first_retained_inbox_seq("bob").unwrap(), 4);
        assert_eq!(w.store.inbox("bob", 0, 10).unwrap().len(), 1);
        assert_eq!(w.store.timeline(&conv, 1, 10, 10).unwrap().len(), 4);
        w.stop().await;
    }
}
