//! History search: a full-text index of the messages (tantivy, in `<data-dir>/search/`)
//! kept beside the timelines, and the query that answers `SearchMessages`
//! (docs/PROTOCOL.md 9.15).
//!
//! - [`tokens`]: text -> tokens, for the index and the query (words lowercased; CJK runs
//!   as single characters and bigrams). Pure, unit-tested.
//! - [`index`]: the tantivy schema, opening or starting afresh, documents and the
//!   per-conversation marks, and the collector of one page of candidates.
//! - This file: [`Search`]: the tap the sequencer calls after each durable append, the
//!   indexer thread, and the query with its authorization.
//!
//! **Derived data.** The timelines are the truth; the index follows them. The sequencer
//! tells [`Search`] (through [`DurableTap`]) "entry `seq` of conversation `c` is durable":
//! one map insert under a short lock, nothing else on the send path. The indexer thread
//! takes those positions, reads each conversation's timeline from its mark to the position
//! and applies every entry: a message (re)writes its document from the stored text, an
//! EDIT or RECALL re-reads its target (a recalled target loses its document, an edited one
//! gets its new text). Documents and marks are committed together every `search_commit_ms`
//! (or `search_commit_entries`), so a crash loses no position: at start the indexer
//! compares each conversation's last seq with its mark and catches up. A missing, corrupt or
//! foreign (other store epoch, other schema) index is started afresh and rebuilt that way.
//!
//! **Authorization at query time.** A search only looks in the caller's conversations (or
//! one they may read), then every candidate is re-read from the store and passes the rules
//! history uses: history visibility (`first_seq`), recalled, expired, deleted for the
//! caller; its current text must still match (an edit not yet indexed never matches by its
//! old words). The hit is the stored message, as `Pull` serves it.

pub(crate) mod index;
pub(crate) mod tokens;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tantivy::IndexWriter;
use tern_proto::pb::{self, ErrorCode, MessageKind};

use crate::clock::Clock;
use crate::config::SearchSettings;
use crate::conversations::{view, ConvCache};
use crate::error::{ServiceError, ServiceResult};
use crate::ratelimit::Bucket;
use crate::sequencer::{DurableTap, Sequencer};
use crate::store::Store;
use crate::validate;

use index::{Engine, Key, Scope};

/// Longest query, in bytes.
pub(crate) const MAX_QUERY_BYTES: usize = 256;
/// Hits of a page when the request names no limit.
pub(crate) const DEFAULT_LIMIT: usize = 20;
/// Most hits of one page.
pub(crate) const MAX_LIMIT: usize = 100;
/// Candidate rounds one page may read before it answers with what it found.
const MAX_ROUNDS: usize = 5;
/// Timeline entries read per step of the indexer.
const CHUNK: usize = 500;
/// Past this many users with a search bucket, idle buckets are dropped.
const BUCKETS: usize = 10_000;

/// Positions waiting for the indexer, and the stop switch.
#[derive(Default)]
struct Queue {
    /// conversation -> highest durable seq told.
    pending: HashMap<String, u64>,
    /// Entries told since the indexer last took `pending`.
    told: u64,
    stop: bool,
}

pub(crate) struct Search {
    store: Arc<dyn Store>,
    convs: Arc<ConvCache>,
    sequencer: Arc<dyn Sequencer>,
    clock: Arc<dyn Clock>,
    settings: SearchSettings,
    engine: OnceLock<Arc<Engine>>,
    /// What the indexer starts from (its writer and the committed marks); taken by it.
    start: Mutex<Option<(IndexWriter, HashMap<String, u64>)>>,
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Timeline entries the indexer knows are stored but not yet searchable.
    lag: AtomicU64,
    /// Entries told by the tap that the indexer has not taken yet.
    untaken: AtomicU64,
    /// False until the indexer has compared every conversation with its mark at start.
    scanned: std::sync::atomic::AtomicBool,
    /// Per user: the search bucket and when it was last used.
    buckets: Mutex<HashMap<String, (Bucket, Instant)>>,
}

impl Search {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        convs: Arc<ConvCache>,
        sequencer: Arc<dyn Sequencer>,
        clock: Arc<dyn Clock>,
        settings: SearchSettings,
    ) -> Self {
        Self {
            store,
            convs,
            sequencer,
            clock,
            settings,
            engine: OnceLock::new(),
            start: Mutex::new(None),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            lag: AtomicU64::new(0),
            untaken: AtomicU64::new(0),
            scanned: std::sync::atomic::AtomicBool::new(false),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Opens (or makes, or rebuilds) the index in `dir`. Until then, and when search is off
    /// in the config, nothing is indexed and searches get `UNAVAILABLE`.
    pub(crate) fn open_dir(&self, dir: &Path) -> anyhow::Result<()> {
        if !self.settings.search_enabled {
            return Ok(());
        }
        let (engine, marks, writer) = Engine::open_dir(dir, &self.store.store_epoch())?;
        self.install(engine, marks, writer);
        Ok(())
    }

    /// An index in memory (tests).
    #[cfg(test)]
    pub(crate) fn open_in_ram(&self) -> anyhow::Result<()> {
        let (engine, writer) = Engine::in_ram(&self.store.store_epoch())?;
        self.install(engine, HashMap::new(), writer);
        Ok(())
    }

    fn install(&self, engine: Engine, marks: HashMap<String, u64>, writer: IndexWriter) {
        *self.start.lock().unwrap() = Some((writer, marks));
        let _ = self.engine.set(Arc::new(engine));
    }

    /// Starts the indexer thread (after [`Search::open_dir`]; `None` when there is no
    /// index). It runs until [`Search::stop`].
    pub(crate) fn run_indexer(self: &Arc<Self>) -> Option<std::thread::JoinHandle<()>> {
        let engine = self.engine.get()?.clone();
        let (writer, marks) = self.start.lock().unwrap().take()?;
        let this = self.clone();
        std::thread::Builder::new()
            .name("search-indexer".into())
            .spawn(move || Indexer::new(this, engine, writer, marks).run())
            .map_err(|e| tracing::error!("cannot start the search indexer: {e}"))
            .ok()
    }

    /// Tells the indexer to commit what it has and end.
    pub(crate) fn stop(&self) {
        self.queue.lock().unwrap().stop = true;
        self.wake.notify_all();
    }

    /// Timeline entries stored but not yet searchable (at least 1 while the indexer is
    /// still comparing the timelines with the index at start).
    pub(crate) fn lag(&self) -> u64 {
        let known = self.lag.load(Ordering::SeqCst) + self.untaken.load(Ordering::SeqCst);
        if self.scanned.load(Ordering::SeqCst) {
            known
        } else {
            known.max(1)
        }
    }

    fn set_lag(&self, lag: u64) {
        self.lag.store(lag, Ordering::SeqCst);
        crate::metrics::get()
            .search_index_lag
            .set(self.lag() as i64);
    }

    /// Answers `SearchMessages` for `user`: checks, then the query off the async threads.
    pub(crate) async fn search(
        self: &Arc<Self>,
        user: &str,
        req: pb::SearchMessages,
    ) -> ServiceResult<pb::SearchResult> {
        self.take_rate(user, Instant::now())?;
        let tokens = query_tokens(&req.query)?;
        let limit = match req.limit as usize {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        };
        let before = decode_page(&req.page)?;
        let sender = if req.sender.is_empty() {
            None
        } else {
            validate::username(&req.sender)?;
            Some(req.sender.clone())
        };
        let Some(engine) = self.engine.get().cloned() else {
            return Err(ServiceError::new(
                ErrorCode::Unavailable,
                "message search is off on this server",
            ));
        };
        let conversations = if req.conversation.is_empty() {
            self.store.user_conversations(user)?
        } else {
            self.convs.reader(&req.conversation, user)?;
            vec![req.conversation.clone()]
        };
        let lag = self.lag();
        if conversations.is_empty() {
            return Ok(pb::SearchResult {
                index_lag: lag,
                ..Default::default()
            });
        }
        let this = self.clone();
        let user = user.to_string();
        let started = Instant::now();
        let (messages, next) = tokio::task::spawn_blocking(move || {
            let scope = Scope {
                tokens: &tokens,
                conversations: &conversations,
                sender: sender.as_deref(),
            };
            this.page(&engine, &user, &scope, before, limit)
        })
        .await
        .map_err(|e| {
            tracing::error!("search task failed: {e}");
            ServiceError::internal()
        })??;
        crate::metrics::get()
            .search_seconds
            .observe(started.elapsed().as_secs_f64());
        // The hits were read from the store: answer only once what they show is durable.
        self.sequencer.barrier().await?;
        Ok(pb::SearchResult {
            messages,
            next_page: next.map(encode_page).unwrap_or_default(),
            index_lag: lag,
        })
    }

    /// One page: candidates in key order, each checked against the store, until `limit`
    /// hits, the end of the matches, or [`MAX_ROUNDS`] rounds of candidates. Returns the
    /// hits and where the next page starts (`None`: no more).
    fn page(
        &self,
        engine: &Engine,
        user: &str,
        scope: &Scope<'_>,
        mut cursor: Option<Key>,
        limit: usize,
    ) -> ServiceResult<(Vec<pb::Message>, Option<Key>)> {
        let batch = (limit * 2).max(50);
        let now = self.clock.now_ms();
        let mut hits = Vec::new();
        let mut first_seen: HashMap<String, Option<u64>> = HashMap::new();
        for _ in 0..MAX_ROUNDS {
            let found = engine.candidates(scope, cursor, batch).map_err(|e| {
                tracing::error!("search index read failed: {e}");
                ServiceError::internal()
            })?;
            let full = found.len() == batch;
            let n = found.len();
            for (i, (key, conv, seq)) in found.into_iter().enumerate() {
                cursor = Some(key);
                if let Some(m) =
                    self.visible(user, &conv, seq, scope.tokens, now, &mut first_seen)?
                {
                    hits.push(m);
                    if hits.len() == limit {
                        let more = i + 1 < n || full;
                        return Ok((hits, cursor.filter(|_| more)));
                    }
                }
            }
            if !full {
                return Ok((hits, None));
            }
        }
        Ok((hits, cursor))
    }

    /// Message `seq` of `conv` as `user` may read it now, if it is a hit.
    fn visible(
        &self,
        user: &str,
        conv: &str,
        seq: u64,
        tokens: &[String],
        now: u64,
        first_seen: &mut HashMap<String, Option<u64>>,
    ) -> ServiceResult<Option<pb::Message>> {
        // The first seq `user` may read in `conv` (None: none), once per conversation.
        let first = match first_seen.get(conv) {
            Some(f) => *f,
            None => {
                let f = match self.convs.reader(conv, user) {
                    Ok(st) => Some(st.lock().unwrap().first_visible(user)),
                    Err(e) if e.code == ErrorCode::Forbidden => None,
                    Err(e) => return Err(e),
                };
                first_seen.insert(conv.to_string(), f);
                f
            }
        };
        if first.is_none_or(|f| seq < f) {
            return Ok(None);
        }
        let Some(m) = self.store.message(conv, seq)? else {
            return Ok(None);
        };
        if view::is_expired(m.expires_ms, now) {
            return Ok(None);
        }
        let Some(text) = searchable_text(&m) else {
            return Ok(None);
        };
        if !tokens::matches(&text, tokens) {
            return Ok(None);
        }
        if !self.store.hidden(user, conv, seq, seq)?.is_empty() {
            return Ok(None);
        }
        Ok(Some(m))
    }

    fn take_rate(&self, user: &str, now: Instant) -> ServiceResult<()> {
        let (rate, burst) = (self.settings.search_rate, self.settings.search_burst);
        let mut buckets = self.buckets.lock().unwrap();
        if buckets.len() >= BUCKETS && !buckets.contains_key(user) {
            // A bucket idle for a full refill is the same as a new one.
            let full = Duration::from_secs(u64::from(burst / rate.max(1)) + 1);
            buckets.retain(|_, (_, used)| now.saturating_duration_since(*used) < full);
        }
        let (bucket, used) = buckets
            .entry(user.to_string())
            .or_insert_with(|| (Bucket::new(rate, burst, now), now));
        *used = now;
        bucket
            .take(now)
            .map_err(|wait| ServiceError::rate_limited(wait, "message search rate exceeded"))
    }
}

impl DurableTap for Search {
    fn durable(&self, conversation: &str, seq: u64) {
        if self.engine.get().is_none() {
            return;
        }
        let mut q = self.queue.lock().unwrap();
        q.told += 1;
        self.untaken.fetch_add(1, Ordering::SeqCst);
        match q.pending.get_mut(conversation) {
            Some(s) => *s = (*s).max(seq),
            None => {
                q.pending.insert(conversation.to_string(), seq);
            }
        }
        drop(q);
        self.wake.notify_one();
    }
}

/// The text of a message that search finds it by: the body of a text message (or the
/// caption of an image or file) and the file name; `None` for what is never a hit
/// (events, edits, recalls, recalled messages, bodies that are not text).
pub(crate) fn searchable_text(m: &pb::Message) -> Option<String> {
    if MessageKind::try_from(m.kind).unwrap_or(MessageKind::System) != MessageKind::Unspecified
        || m.recalled
    {
        return None;
    }
    let mut text = String::new();
    if m.content_type.is_empty() || m.content_type.starts_with("text/") {
        text.push_str(&String::from_utf8_lossy(&m.body));
    }
    if let Some(a) = &m.attachment {
        text.push('\n');
        text.push_str(&a.name);
    }
    (!text.trim().is_empty()).then_some(text)
}

/// The tokens of a query, or the reason it is refused.
fn query_tokens(query: &str) -> ServiceResult<Vec<String>> {
    if query.trim().is_empty() {
        return Err(ServiceError::invalid("the search query is empty"));
    }
    if query.len() > MAX_QUERY_BYTES {
        return Err(ServiceError::invalid(format!(
            "the search query is longer than {MAX_QUERY_BYTES} bytes"
        )));
    }
    let t = tokens::query_tokens(query);
    if t.is_empty() {
        return Err(ServiceError::invalid(
            "the search query has nothing to search for: give words or CJK characters \
             (punctuation and the operators AND, OR, NOT are ignored)",
        ));
    }
    Ok(t)
}

fn encode_page(k: Key) -> String {
    format!("1.{:x}.{:x}.{:x}", k.0, k.1, k.2)
}

fn decode_page(page: &str) -> ServiceResult<Option<Key>> {
    if page.is_empty() {
        return Ok(None);
    }
    let bad = || ServiceError::invalid("page is not a next_page token of a search");
    let mut parts = page.split('.');
    if parts.next() != Some("1") {
        return Err(bad());
    }
    let mut num = || -> ServiceResult<u64> {
        let p = parts.next().ok_or_else(bad)?;
        if p.is_empty() || p.len() > 16 {
            return Err(bad());
        }
        u64::from_str_radix(p, 16).map_err(|_| bad())
    };
    let k = (num()?, num()?, num()?);
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(Some(k))
}

/// The indexer thread's state.
struct Indexer {
    search: Arc<Search>,
    engine: Arc<Engine>,
    writer: IndexWriter,
    /// conversation -> seq applied (committed or not).
    marks: HashMap<String, u64>,
    /// conversation -> seq to apply up to (only conversations behind their mark).
    backlog: HashMap<String, u64>,
    /// Marks changed since the last commit.
    dirty: HashSet<String>,
    /// Entries applied since the last commit, and since when.
    uncommitted: u64,
    since: Option<Instant>,
    lag: u64,
    /// conversation -> the first retained seq whose lower documents were deleted (absent:
    /// none deleted by this run; 1 means nothing was trimmed).
    trimmed: HashMap<String, u64>,
}

impl Indexer {
    fn new(
        search: Arc<Search>,
        engine: Arc<Engine>,
        writer: IndexWriter,
        marks: HashMap<String, u64>,
    ) -> Self {
        Self {
            search,
            engine,
            writer,
            marks,
            backlog: HashMap::new(),
            dirty: HashSet::new(),
            uncommitted: 0,
            since: None,
            lag: 0,
            trimmed: HashMap::new(),
        }
    }

    fn run(mut self) {
        if let Err(e) = self.catch_up() {
            tracing::error!("search index: reading the timelines failed: {e}");
            self.search.scanned.store(true, Ordering::SeqCst);
        }
        loop {
            let stop = self.take_pending();
            if stop {
                self.commit();
                return;
            }
            if let Some(conv) = self.backlog.keys().next().cloned() {
                if let Err(e) = self.step(&conv) {
                    tracing::error!(%conv, "search indexing failed (retrying in 1 s): {e}");
                    self.wait(Duration::from_secs(1));
                }
            }
            let commit_ms = Duration::from_millis(self.search.settings.search_commit_ms);
            let due = self.uncommitted >= u64::from(self.search.settings.search_commit_entries)
                || self.since.is_some_and(|s| s.elapsed() >= commit_ms);
            if due {
                self.commit();
            }
            if self.backlog.is_empty() {
                let wait = match self.since {
                    Some(s) => commit_ms.saturating_sub(s.elapsed()),
                    None => Duration::from_secs(3600),
                };
                self.wait(wait);
            }
        }
    }

    /// At start: every conversation whose last seq is past its mark goes to the backlog.
    fn catch_up(&mut self) -> anyhow::Result<()> {
        let store = self.search.store.clone();
        let mut after = String::new();
        loop {
            let page = store.conversations_page("", &after, 1000)?;
            let Some((last_id, _)) = page.last() else {
                break;
            };
            after = last_id.clone();
            for (conv, _) in page {
                let last = store.last_seq(&conv)?;
                self.target(conv, last);
            }
            self.publish_lag();
            if self.search.queue.lock().unwrap().stop {
                break;
            }
        }
        self.search.scanned.store(true, Ordering::SeqCst);
        self.publish_lag();
        Ok(())
    }

    /// Records that `conv` has entries up to `seq`.
    fn target(&mut self, conv: String, seq: u64) {
        let now = self
            .backlog
            .get(&conv)
            .or_else(|| self.marks.get(&conv))
            .copied()
            .unwrap_or(0);
        if seq > now {
            self.lag += seq - now;
            self.backlog.insert(conv, seq);
        }
    }

    /// Moves the told positions to the backlog; true when the indexer must stop.
    fn take_pending(&mut self) -> bool {
        let (pending, told, stop) = {
            let mut q = self.search.queue.lock().unwrap();
            (
                std::mem::take(&mut q.pending),
                std::mem::take(&mut q.told),
                q.stop,
            )
        };
        for (conv, seq) in pending {
            self.target(conv, seq);
        }
        if told > 0 {
            // Counted in the indexer's lag first, then no longer as untaken: a search in
            // between sees them twice, never not at all.
            self.publish_lag();
            self.search.untaken.fetch_sub(told, Ordering::SeqCst);
            self.publish_lag();
        }
        stop
    }

    fn wait(&self, d: Duration) {
        let q = self.search.queue.lock().unwrap();
        if q.pending.is_empty() && !q.stop {
            let _ = self.search.wake.wait_timeout(q, d);
        }
    }

    /// Applies the next entries of `conv` (at most [`CHUNK`]).
    fn step(&mut self, conv: &str) -> anyhow::Result<()> {
        let target = self.backlog.get(conv).copied().unwrap_or(0);
        let mark = self.marks.get(conv).copied().unwrap_or(0);
        let to = target.min(mark + CHUNK as u64);
        let store = self.search.store.clone();
        let entries = if to > mark {
            store.timeline(conv, mark + 1, to, CHUNK)?
        } else {
            Vec::new()
        };
        for m in &entries {
            match MessageKind::try_from(m.kind).unwrap_or(MessageKind::System) {
                MessageKind::Unspecified => self.put(conv, m)?,
                MessageKind::Edit | MessageKind::Recall => {
                    if let Some(t) = store.message(conv, m.target_seq)? {
                        self.put(conv, &t)?;
                    }
                }
                MessageKind::System => {}
            }
        }
        // Retention trimmed the start of the timeline: its documents go too, so the index
        // does not keep growing under retention (deletes apply with the next commit).
        let first = store.first_retained_seq(conv)?;
        if first > self.trimmed.get(conv).copied().unwrap_or(1) {
            self.engine.delete_below(&self.writer, conv, first)?;
            self.trimmed.insert(conv.to_string(), first);
            self.since.get_or_insert_with(Instant::now);
        }
        crate::metrics::get().search_indexed.inc_by(to - mark);
        self.uncommitted += to - mark;
        self.since.get_or_insert_with(Instant::now);
        self.marks.insert(conv.to_string(), to);
        self.dirty.insert(conv.to_string());
        self.lag = self.lag.saturating_sub(to - mark);
        if to >= target {
            self.backlog.remove(conv);
        }
        Ok(())
    }

    fn put(&mut self, conv: &str, m: &pb::Message) -> anyhow::Result<()> {
        let text = searchable_text(m);
        let doc = text
            .as_deref()
            .map(|t| (m.sender.as_str(), m.server_time_ms, t));
        self.engine.put(&self.writer, conv, m.seq, doc)?;
        Ok(())
    }

    /// Commits the documents and marks applied so far, then publishes the lag.
    fn commit(&mut self) {
        if self.since.is_none() {
            return;
        }
        let result = (|| -> tantivy::Result<()> {
            for conv in &self.dirty {
                let seq = self.marks.get(conv).copied().unwrap_or(0);
                self.engine.put_mark(&self.writer, conv, seq)?;
            }
            self.engine.commit(&mut self.writer)
        })();
        match result {
            Ok(()) => {
                self.dirty.clear();
                self.uncommitted = 0;
                self.since = None;
                self.publish_lag();
            }
            Err(e) => {
                // A failed commit drops what was applied since the last one: go back to
                // the committed marks and apply those entries again.
                tracing::error!("search index commit failed (retrying): {e}");
                let _ = self.writer.rollback();
                let committed = self.engine.marks().unwrap_or_default();
                for conv in std::mem::take(&mut self.dirty) {
                    let reached = self.marks.get(&conv).copied().unwrap_or(0);
                    let back = committed.get(&conv).copied().unwrap_or(0);
                    self.marks.insert(conv.clone(), back);
                    let target = self.backlog.get(&conv).copied().unwrap_or(0).max(reached);
                    if target > back {
                        self.backlog.insert(conv, target);
                    }
                }
                self.lag = self
                    .backlog
                    .iter()
                    .map(|(c, t)| t.saturating_sub(self.marks.get(c).copied().unwrap_or(0)))
                    .sum();
                self.uncommitted = 0;
                self.since = None;
                self.publish_lag();
                self.wait(Duration::from_secs(1));
            }
        }
    }

    /// The lag as searches and the metric see it: entries not yet committed count too.
    fn publish_lag(&self) {
        self.search.set_lag(self.lag + self.uncommitted);
    }
}

#[cfg(test)]
mod tests;
