//! The layer rule of server/src (see the crate doc and docs/ARCHITECTURE.md), checked on
//! the source: every `crate::<module>` path in a file is an import edge from the file's
//! top-level module to that module.
//!
//! - imports only point down the layers (equal layers may import each other, e.g. one
//!   domain using another), and the top-level modules import each other in no circle;
//! - domains never import the session, transport, HTTP, API or app layers, and never
//!   encode a frame (pushes are encoded once, in `delivery::fanout`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layer of each top-level module: higher layers may import lower ones.
const LAYERS: &[(&str, u32)] = &[
    ("cli", 9),
    ("app", 8),
    ("transport", 7),
    ("http", 7),
    ("session", 6),
    ("api", 5),
    ("services", 4),
    ("accounts", 3),
    ("blobs", 3),
    ("conversations", 3),
    ("messages", 3),
    ("changes", 3),
    ("contacts", 3),
    ("groups", 3),
    ("presence", 3),
    ("profiles", 3),
    ("receipts", 3),
    ("search", 3),
    ("delivery", 2),
    ("push", 2),
    ("sequencer", 2),
    ("validate", 2),
    ("store", 1),
    ("error", 1),
    ("config", 0),
    ("clock", 0),
    ("metrics", 0),
    ("ratelimit", 0),
];

const DOMAINS: &[&str] = &[
    "accounts",
    "blobs",
    "conversations",
    "messages",
    "changes",
    "contacts",
    "groups",
    "presence",
    "profiles",
    "search",
];
const ABOVE_DOMAINS: &[&str] = &[
    "session",
    "transport",
    "http",
    "api",
    "app",
    "services",
    "cli",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// (module of the file, path, source) for every production file: not lib.rs and
/// main.rs, not the test wiring (`testkit.rs`, `tests.rs`), and without the inline
/// `#[cfg(test)] mod tests` at the end of a file. Tests may reach across layers.
fn sources() -> Vec<(String, PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut out = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let name = f.file_name().unwrap().to_str().unwrap();
        if name == "tests.rs" || name == "testkit.rs" {
            continue;
        }
        let mut text = std::fs::read_to_string(&f).unwrap();
        if let Some(i) = text.find("#[cfg(test)]\nmod tests {") {
            text.truncate(i);
        }
        out.push((module, rel.to_path_buf(), text));
    }
    out
}

/// The top-level modules `text` names as `crate::<module>`, outside comments.
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn layer(module: &str) -> u32 {
    LAYERS
        .iter()
        .find(|(m, _)| *m == module)
        .unwrap_or_else(|| panic!("module {module} has no layer in tests/layers.rs: give it one"))
        .1
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, _, text) in sources() {
        let entry = g.entry(module.clone()).or_default();
        for m in imports(&text) {
            if m != module {
                entry.insert(m);
            }
        }
    }
    g
}

#[test]
fn every_module_has_a_layer_and_imports_point_down() {
    let mut wrong = Vec::new();
    for (from, tos) in graph() {
        for to in tos {
            if layer(&to) > layer(&from) {
                wrong.push(format!(
                    "{from} (layer {}) imports {to} (layer {})",
                    layer(&from),
                    layer(&to)
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "upward imports:\n{}", wrong.join("\n"));
}

#[test]
fn top_level_modules_import_each_other_in_no_circle() {
    let g = graph();
    // Depth-first search for a back edge.
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(1) => {
                let start = path.iter().position(|p| p == n).unwrap();
                let mut cycle = path[start..].to_vec();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            Some(2) => return None,
            _ => {}
        }
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if let Some(cycle) = visit(n, &g, &mut state, &mut Vec::new()) {
            panic!("import circle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn domains_know_no_wire_and_no_sockets() {
    let mut wrong = Vec::new();
    for (module, file, text) in sources() {
        if !DOMAINS.contains(&module.as_str()) {
            continue;
        }
        for m in imports(&text) {
            if ABOVE_DOMAINS.contains(&m.as_str()) {
                wrong.push(format!("{} imports {m}", file.display()));
            }
        }
        for forbidden in [
            "encode_frame",
            "error_frame",
            "tokio::net",
            "quinn::",
            "axum::",
        ] {
            if text.contains(forbidden) {
                wrong.push(format!("{} uses {forbidden}", file.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "domain rule broken:\n{}",
        wrong.join("\n")
    );
}

/// The checker itself: it sees an import, and would see a circle.
#[test]
fn the_checker_finds_imports() {
    let found = imports("use crate::store::Store;\nlet x = crate::metrics::get(); // crate::app");
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        vec!["metrics".to_string(), "store".to_string()]
    );
}
