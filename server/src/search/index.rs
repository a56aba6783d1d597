//! The tantivy index: its schema, opening (or starting afresh), writing one message's
//! document, the per-conversation marks, and running a query for one page of candidates.
//!
//! One document per searchable message, keyed by `id = <conversation> <seq>`:
//! `conv` (raw term, stored), `sender` (raw term), `text` (our tokens, [`super::tokens`];
//! doc ids only, no positions or frequencies), and fast fields `time` (server_time_ms),
//! `seq`, `convh` (a hash of the conversation id, the last tie-break of the order).
//!
//! One mark document per conversation: `mark = <conversation>` and `mark_seq`, the seq up to
//! which the timeline has been applied to the index. Marks commit atomically with the
//! documents they cover, so after a crash the indexer resumes from them. The commit payload
//! holds the schema version and the store epoch: an index made for another store (the
//! store was rebuilt) or another schema is started afresh.

use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

use tantivy::collector::{Collector, DocSetCollector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, TermQuery, TermSetQuery};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, Value,
    STORED, STRING,
};
use tantivy::tokenizer::{Token, TokenStream, Tokenizer};
use tantivy::{
    DocAddress, DocId, Index, IndexReader, IndexWriter, ReloadPolicy, Score, SegmentOrdinal,
    SegmentReader, TantivyDocument, Term,
};

use super::tokens;

/// Changes whenever the schema or the tokens change: an index of another version is
/// rebuilt.
const SCHEMA_VERSION: &str = "tern-search-1";
/// Name the tokenizer is registered under.
const TOKENIZER: &str = "tern";
/// Heap of the index writer (its single indexing thread).
const WRITER_HEAP: usize = 32 << 20;

/// The order of hits, newest first: (server_time_ms, seq, hash of the conversation).
pub(crate) type Key = (u64, u64, u64);

#[derive(Clone, Copy)]
pub(crate) struct Fields {
    id: Field,
    conv: Field,
    convh: Field,
    sender: Field,
    text: Field,
    time: Field,
    seq: Field,
    mark: Field,
    mark_seq: Field,
    /// "1" on mark documents (to find them without reading the others).
    is_mark: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let fast = NumericOptions::default().set_fast();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::Basic),
    );
    let f = Fields {
        id: b.add_text_field("id", STRING),
        conv: b.add_text_field("conv", STRING | STORED),
        convh: b.add_u64_field("convh", fast.clone()),
        sender: b.add_text_field("sender", STRING),
        text: b.add_text_field("text", text),
        time: b.add_u64_field("time", fast.clone()),
        seq: b.add_u64_field("seq", fast),
        mark: b.add_text_field("mark", STRING | STORED),
        mark_seq: b.add_u64_field("mark_seq", STORED),
        is_mark: b.add_text_field("is_mark", STRING),
    };
    (b.build(), f)
}

/// FNV-1a: a stable hash of a conversation id (the same across restarts and versions).
pub(crate) fn conv_hash(conv: &str) -> u64 {
    conv.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn doc_id(conv: &str, seq: u64) -> String {
    format!("{conv} {seq}")
}

/// [`tokens::index_tokens`] as a tantivy tokenizer.
#[derive(Clone, Default)]
struct TernTokenizer;

struct TernStream {
    tokens: Vec<Token>,
    next: usize,
}

impl Tokenizer for TernTokenizer {
    type TokenStream<'a> = TernStream;
    fn token_stream<'a>(&'a mut self, text: &'a str) -> TernStream {
        let tokens = tokens::index_tokens(text)
            .into_iter()
            .enumerate()
            .map(|(position, text)| Token {
                position,
                text,
                ..Token::default()
            })
            .collect();
        TernStream { tokens, next: 0 }
    }
}

impl TokenStream for TernStream {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }
    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }
    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

/// What to search: the tokens (all required) and the scope.
pub(crate) struct Scope<'a> {
    pub tokens: &'a [String],
    /// The conversations to look in (never empty).
    pub conversations: &'a [String],
    pub sender: Option<&'a str>,
}

/// An open index and its reader.
pub(crate) struct Engine {
    index: Index,
    reader: IndexReader,
    f: Fields,
    payload: String,
}

impl Engine {
    /// Opens the index in `dir` made for `store_epoch`, or, when it is missing, unreadable,
    /// of another version or for another store, empties `dir` and makes a new one. Returns
    /// the engine, the marks (conversation -> seq applied; empty for a new index) and the
    /// index's one writer (taken once: a second writer of the same directory, even after
    /// the first was dropped, can find tantivy's lock still held).
    pub(crate) fn open_dir(
        dir: &Path,
        store_epoch: &str,
    ) -> tantivy::Result<(Engine, HashMap<String, u64>, IndexWriter)> {
        let payload = format!("{SCHEMA_VERSION} {store_epoch}");
        if dir.join("meta.json").exists() {
            match Self::open_existing(dir, &payload) {
                Ok((engine, marks)) => {
                    let writer = engine.writer()?;
                    return Ok((engine, marks, writer));
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "search index unusable ({e}); rebuilding it from the timelines");
                }
            }
        }
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let (schema, _) = schema();
        let index = Index::create_in_dir(dir, schema)?;
        let engine = Self::with_index(index, payload)?;
        let mut writer = engine.writer()?;
        engine.initial_commit(&mut writer)?;
        Ok((engine, HashMap::new(), writer))
    }

    /// An index in memory (tests).
    #[cfg(test)]
    pub(crate) fn in_ram(store_epoch: &str) -> tantivy::Result<(Engine, IndexWriter)> {
        let (schema, _) = schema();
        let engine = Self::with_index(
            Index::create_in_ram(schema),
            format!("{SCHEMA_VERSION} {store_epoch}"),
        )?;
        let mut writer = engine.writer()?;
        engine.initial_commit(&mut writer)?;
        Ok((engine, writer))
    }

    fn open_existing(dir: &Path, payload: &str) -> tantivy::Result<(Engine, HashMap<String, u64>)> {
        let index = Index::open_in_dir(dir)?;
        let found = index.load_metas()?.payload.unwrap_or_default();
        if found != payload {
            return Err(tantivy::TantivyError::SchemaError(format!(
                "made as {found:?}, this server needs {payload:?}"
            )));
        }
        if index.schema() != schema().0 {
            return Err(tantivy::TantivyError::SchemaError(
                "another schema".to_string(),
            ));
        }
        let engine = Self::with_index(index, payload.to_string())?;
        let marks = engine.marks()?;
        Ok((engine, marks))
    }

    fn with_index(index: Index, payload: String) -> tantivy::Result<Engine> {
        index.tokenizers().register(
            TOKENIZER,
            tantivy::tokenizer::TextAnalyzer::from(TernTokenizer),
        );
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Engine {
            index,
            reader,
            f: schema().1,
            payload,
        })
    }

    fn initial_commit(&self, w: &mut IndexWriter) -> tantivy::Result<()> {
        let mut c = w.prepare_commit()?;
        c.set_payload(&self.payload);
        c.commit()?;
        self.reader.reload()
    }

    /// The index's one writer (the indexer holds it); made once, when the index is opened.
    fn writer(&self) -> tantivy::Result<IndexWriter> {
        self.index.writer_with_num_threads(1, WRITER_HEAP)
    }

    /// Every conversation's mark, as committed.
    pub(crate) fn marks(&self) -> tantivy::Result<HashMap<String, u64>> {
        let searcher = self.reader.searcher();
        let q = TermQuery::new(
            Term::from_field_text(self.f.is_mark, "1"),
            IndexRecordOption::Basic,
        );
        let mut marks = HashMap::new();
        for addr in searcher.search(&q, &DocSetCollector)? {
            let d: TantivyDocument = searcher.doc(addr)?;
            let conv = d.get_first(self.f.mark).and_then(|v| v.as_str());
            let seq = d.get_first(self.f.mark_seq).and_then(|v| v.as_u64());
            if let (Some(conv), Some(seq)) = (conv, seq) {
                marks.insert(conv.to_string(), seq);
            }
        }
        Ok(marks)
    }

    /// Replaces the document of message `seq` of `conv` (deleting it when `text` is None).
    pub(crate) fn put(
        &self,
        w: &IndexWriter,
        conv: &str,
        seq: u64,
        doc: Option<(&str, u64, &str)>,
    ) -> tantivy::Result<()> {
        let id = doc_id(conv, seq);
        w.delete_term(Term::from_field_text(self.f.id, &id));
        if let Some((sender, time, text)) = doc {
            let mut d = TantivyDocument::default();
            d.add_text(self.f.id, &id);
            d.add_text(self.f.conv, conv);
            d.add_u64(self.f.convh, conv_hash(conv));
            d.add_text(self.f.sender, sender);
            d.add_text(self.f.text, text);
            d.add_u64(self.f.time, time);
            d.add_u64(self.f.seq, seq);
            w.add_document(d)?;
        }
        Ok(())
    }

    /// Deletes the documents of `conv`'s messages below seq `first` (retention trimmed
    /// them): an index under retention stays as small as what is kept.
    pub(crate) fn delete_below(
        &self,
        w: &IndexWriter,
        conv: &str,
        first: u64,
    ) -> tantivy::Result<()> {
        let in_conv = TermQuery::new(
            Term::from_field_text(self.f.conv, conv),
            IndexRecordOption::Basic,
        );
        let below = RangeQuery::new(
            std::ops::Bound::Unbounded,
            std::ops::Bound::Excluded(Term::from_field_u64(self.f.seq, first)),
        );
        let q = BooleanQuery::new(vec![
            (Occur::Must, Box::new(in_conv) as Box<dyn Query>),
            (Occur::Must, Box::new(below)),
        ]);
        w.delete_query(Box::new(q))?;
        Ok(())
    }

    /// Replaces the mark of `conv`.
    pub(crate) fn put_mark(&self, w: &IndexWriter, conv: &str, seq: u64) -> tantivy::Result<()> {
        w.delete_term(Term::from_field_text(self.f.mark, conv));
        let mut d = TantivyDocument::default();
        d.add_text(self.f.mark, conv);
        d.add_u64(self.f.mark_seq, seq);
        d.add_text(self.f.is_mark, "1");
        w.add_document(d)?;
        Ok(())
    }

    /// Commits what `w` holds (with the payload) and makes it searchable.
    pub(crate) fn commit(&self, w: &mut IndexWriter) -> tantivy::Result<()> {
        let mut c = w.prepare_commit()?;
        c.set_payload(&self.payload);
        c.commit()?;
        self.reader.reload()
    }

    /// The best `n` matches with a key below `before` (all when `None`), best first:
    /// (key, conversation, seq).
    pub(crate) fn candidates(
        &self,
        scope: &Scope<'_>,
        before: Option<Key>,
        n: usize,
    ) -> tantivy::Result<Vec<(Key, String, u64)>> {
        let f = self.f;
        let mut must: Vec<(Occur, Box<dyn Query>)> = scope
            .tokens
            .iter()
            .map(|t| {
                let q: Box<dyn Query> = Box::new(TermQuery::new(
                    Term::from_field_text(f.text, t),
                    IndexRecordOption::Basic,
                ));
                (Occur::Must, q)
            })
            .collect();
        let convs: Box<dyn Query> = if let [one] = scope.conversations {
            Box::new(TermQuery::new(
                Term::from_field_text(f.conv, one),
                IndexRecordOption::Basic,
            ))
        } else {
            Box::new(TermSetQuery::new(
                scope
                    .conversations
                    .iter()
                    .map(|c| Term::from_field_text(f.conv, c)),
            ))
        };
        must.push((Occur::Must, convs));
        if let Some(s) = scope.sender {
            must.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(f.sender, s),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        let searcher = self.reader.searcher();
        let top = searcher.search(&BooleanQuery::new(must), &Newest { n, before })?;
        let mut out = Vec::with_capacity(top.len());
        for (key, addr) in top {
            let d: TantivyDocument = searcher.doc(addr)?;
            if let Some(conv) = d.get_first(f.conv).and_then(|v| v.as_str()) {
                out.push((key, conv.to_string(), key.1));
            }
        }
        Ok(out)
    }

    /// Searchable documents (marks left out).
    #[cfg(test)]
    pub(crate) fn docs(&self) -> u64 {
        let searcher = self.reader.searcher();
        let q = tantivy::query::ExistsQuery::new("seq".to_string(), false);
        searcher
            .search(&q, &tantivy::collector::Count)
            .map(|c| c as u64)
            .unwrap_or(0)
    }
}

/// Collects the `n` documents with the highest [`Key`] below `before`.
struct Newest {
    n: usize,
    before: Option<Key>,
}

struct NewestSegment {
    n: usize,
    before: Option<Key>,
    segment: SegmentOrdinal,
    time: Column<u64>,
    seq: Column<u64>,
    convh: Column<u64>,
    /// A min-heap (by `Reverse`) of the best `n` so far.
    top: BinaryHeap<std::cmp::Reverse<(Key, DocId)>>,
}

impl Collector for Newest {
    type Fruit = Vec<(Key, DocAddress)>;
    type Child = NewestSegment;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<NewestSegment> {
        let ff = reader.fast_fields();
        Ok(NewestSegment {
            n: self.n,
            before: self.before,
            segment,
            time: ff.u64("time")?,
            seq: ff.u64("seq")?,
            convh: ff.u64("convh")?,
            top: BinaryHeap::with_capacity(self.n + 1),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(
        &self,
        fruits: Vec<Vec<(Key, DocAddress)>>,
    ) -> tantivy::Result<Vec<(Key, DocAddress)>> {
        let mut all: Vec<(Key, DocAddress)> = fruits.into_iter().flatten().collect();
        all.sort_by_key(|(k, _)| std::cmp::Reverse(*k));
        all.truncate(self.n);
        Ok(all)
    }
}

impl SegmentCollector for NewestSegment {
    type Fruit = Vec<(Key, DocAddress)>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        let (Some(t), Some(s)) = (self.time.first(doc), self.seq.first(doc)) else {
            return;
        };
        let key = (t, s, self.convh.first(doc).unwrap_or(0));
        if self.before.is_some_and(|b| key >= b) {
            return;
        }
        if self.top.len() < self.n {
            self.top.push(std::cmp::Reverse((key, doc)));
        } else if self.top.peek().is_some_and(|m| key > m.0 .0) {
            self.top.pop();
            self.top.push(std::cmp::Reverse((key, doc)));
        }
    }

    fn harvest(self) -> Vec<(Key, DocAddress)> {
        let segment = self.segment;
        self.top
            .into_iter()
            .map(|std::cmp::Reverse((k, d))| (k, DocAddress::new(segment, d)))
            .collect()
    }
}
