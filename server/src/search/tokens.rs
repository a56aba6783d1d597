//! How text becomes search tokens, for the index and for queries alike (pure functions).
//!
//! - A run of letters or digits of an alphabetic script (Latin, Cyrillic, Greek, Arabic,
//!   ...) is one word, lowercased; at most [`MAX_WORD_CHARS`] characters are kept.
//! - A run of CJK characters (Han, Hiragana, Katakana, Hangul, and their compatibility
//!   and extension blocks) has no spaces between words, so it is indexed as each single
//!   character and each pair of adjacent characters ("你好世界" -> 你 好 世 界 你好 好世 世界).
//! - Everything else (spaces, punctuation, symbols, emoji) separates tokens and is never
//!   searchable.
//!
//! A query is split the same way; every token it yields is required: a word must be a
//! whole word of the text, a CJK run of one character must occur, a run of two or more
//! needs each of its adjacent pairs ("世界" finds "你好世界"; "好世界" needs 2 pairs: 好世, 世界).
//! There is no operator syntax: `*`, `"`, `-`, `:` are separators, and the words `AND`,
//! `OR`, `NOT` written in capitals (operators of the usual query languages) are left out of
//! a query, since every word is required anyway (lowercase "and" is an ordinary word).

/// Longest word kept, in characters (longer ones are cut here, in the text and in the
/// query alike, so they still match).
pub(crate) const MAX_WORD_CHARS: usize = 48;
/// Most distinct tokens a query may use (more are dropped).
pub(crate) const MAX_QUERY_TOKENS: usize = 32;

/// Whether `c` belongs to a script written without spaces between words (CJK).
pub(crate) fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x31F0..=0x31FF    // Katakana phonetic extensions
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0x1100..=0x11FF    // Hangul Jamo
        | 0x3130..=0x318F    // Hangul compatibility Jamo
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xFF66..=0xFF9F    // half-width Katakana
        | 0x20000..=0x3FFFF  // CJK extensions B..H
    )
}

#[derive(Debug, PartialEq)]
enum Run {
    /// The lowercased word, and whether it was written `AND`, `OR` or `NOT`.
    Word(String, bool),
    Cjk(Vec<char>),
}

fn runs(text: &str) -> Vec<Run> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut raw = String::new();
    let mut word_chars = 0usize;
    let mut cjk: Vec<char> = Vec::new();
    let flush_word = |word: &mut String, raw: &mut String, n: &mut usize, out: &mut Vec<Run>| {
        if !word.is_empty() {
            let op = matches!(raw.as_str(), "AND" | "OR" | "NOT");
            out.push(Run::Word(std::mem::take(word), op));
        }
        raw.clear();
        *n = 0;
    };
    for c in text.chars() {
        if is_cjk(c) {
            flush_word(&mut word, &mut raw, &mut word_chars, &mut out);
            cjk.push(c);
        } else if c.is_alphanumeric() {
            if !cjk.is_empty() {
                out.push(Run::Cjk(std::mem::take(&mut cjk)));
            }
            if word_chars < MAX_WORD_CHARS {
                word.extend(c.to_lowercase());
                if raw.len() < 4 {
                    raw.push(c);
                }
            }
            word_chars += 1;
        } else {
            flush_word(&mut word, &mut raw, &mut word_chars, &mut out);
            if !cjk.is_empty() {
                out.push(Run::Cjk(std::mem::take(&mut cjk)));
            }
        }
    }
    flush_word(&mut word, &mut raw, &mut word_chars, &mut out);
    if !cjk.is_empty() {
        out.push(Run::Cjk(cjk));
    }
    out
}

/// The tokens `text` is indexed under (in text order; repeats kept).
pub(crate) fn index_tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for run in runs(text) {
        match run {
            Run::Word(w, _) => out.push(w),
            Run::Cjk(cs) => {
                out.extend(cs.iter().map(|c| c.to_string()));
                out.extend(cs.windows(2).map(|p| p.iter().collect::<String>()));
            }
        }
    }
    out
}

/// The tokens a query requires, each once, in query order, at most
/// [`MAX_QUERY_TOKENS`]. Empty: the query has nothing searchable.
pub(crate) fn query_tokens(query: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |t: String| {
        if out.len() < MAX_QUERY_TOKENS && !out.contains(&t) {
            out.push(t);
        }
    };
    for run in runs(query) {
        match run {
            Run::Word(_, true) => {}
            Run::Word(w, false) => add(w),
            Run::Cjk(cs) if cs.len() == 1 => add(cs[0].to_string()),
            Run::Cjk(cs) => {
                for p in cs.windows(2) {
                    add(p.iter().collect());
                }
            }
        }
    }
    out
}

/// Whether `text` has every token of `query_tokens` (a hit re-checked against the text
/// as stored now: an edit not yet indexed must not match by its old text).
pub(crate) fn matches(text: &str, query_tokens: &[String]) -> bool {
    let have: std::collections::HashSet<String> = index_tokens(text).into_iter().collect();
    query_tokens.iter().all(|t| have.contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn words_are_lowercased_and_split_on_everything_else() {
        assert_eq!(
            index_tokens("Hello, World! It's 2024 — ÉTÉ naïve"),
            v(&["hello", "world", "it", "s", "2024", "été", "naïve"])
        );
        assert_eq!(index_tokens("  ...  "), Vec::<String>::new());
        assert_eq!(index_tokens("Привет мир"), v(&["привет", "мир"]));
    }

    #[test]
    fn cjk_runs_are_unigrams_and_bigrams() {
        assert_eq!(
            index_tokens("你好世界"),
            v(&["你", "好", "世", "界", "你好", "好世", "世界"])
        );
        // Mixed scripts: the Latin word and the CJK run are separate runs.
        assert_eq!(index_tokens("tern是IM"), v(&["tern", "是", "im"]));
        assert_eq!(
            index_tokens("こんにちは"),
            v(&["こ", "ん", "に", "ち", "は", "こん", "んに", "にち", "ちは"])
        );
        assert_eq!(index_tokens("안녕"), v(&["안", "녕", "안녕"]));
    }

    #[test]
    fn queries_need_every_word_and_every_cjk_pair() {
        assert_eq!(query_tokens("世界"), v(&["世界"]));
        assert_eq!(query_tokens("世"), v(&["世"]));
        assert_eq!(query_tokens("你好世界"), v(&["你好", "好世", "世界"]));
        assert_eq!(query_tokens("Hello hello HELLO"), v(&["hello"]));
        assert!(matches("我说你好世界了", &query_tokens("世界")));
        assert!(matches("我说你好世界了", &query_tokens("你好 世界")));
        assert!(!matches("世上的界", &query_tokens("世界")));
        assert!(matches("世上的界", &query_tokens("世")));
        assert!(matches("The Quick fox", &query_tokens("quick FOX")));
        assert!(!matches("The Quick fox", &query_tokens("quick dog")));
        assert!(
            !matches("quickly", &query_tokens("quick")),
            "whole words only"
        );
    }

    #[test]
    fn operators_are_text_or_nothing() {
        // Query-parser syntax has no meaning: capital AND/OR/NOT are left out, symbols
        // separate; lowercase "and" is a word like any other (and capital AND in a text is
        // indexed as "and").
        assert_eq!(query_tokens("AND OR"), Vec::<String>::new());
        assert_eq!(query_tokens("NOT"), Vec::<String>::new());
        assert_eq!(query_tokens("cats AND dogs"), v(&["cats", "dogs"]));
        assert_eq!(query_tokens("rock and roll"), v(&["rock", "and", "roll"]));
        assert_eq!(query_tokens("ANDROID Or"), v(&["android", "or"]));
        assert_eq!(index_tokens("AND"), v(&["and"]));
        assert_eq!(query_tokens("*&&"), Vec::<String>::new());
        assert_eq!(query_tokens("\"-\" +:()"), Vec::<String>::new());
        assert_eq!(query_tokens("title:foo*"), v(&["title", "foo"]));
    }

    #[test]
    fn long_words_and_many_tokens_are_bounded() {
        let long = "a".repeat(500);
        let t = index_tokens(&long);
        assert_eq!(t, vec!["a".repeat(MAX_WORD_CHARS)]);
        assert!(matches(&long, &query_tokens(&"a".repeat(60))));
        let many: String = (0..100).map(|i| format!("w{i} ")).collect();
        assert_eq!(query_tokens(&many).len(), MAX_QUERY_TOKENS);
    }
}
