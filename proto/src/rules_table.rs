//! `web/src/protocol-rules.json`: the protocol rules of this crate as a table for the web
//! SDK (which cannot link Rust). The test renders the table from the Rust constants and
//! functions and compares it with the committed file, so the two cannot drift. After a
//! deliberate change, rewrite the file with
//! `TERN_WRITE_RULES=1 cargo test -p tern-proto rules_table` and commit it.

use crate::names::{self, examples};
use crate::pb::ErrorCode;
use crate::{liveness, HEARTBEAT_MISSES, PROTOCOL_VERSION};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../web/src/protocol-rules.json"
);

/// A JSON value, enough for the table.
enum Json {
    Num(u64),
    Str(String),
    List(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

fn s(v: &str) -> Json {
    Json::Str(v.to_string())
}

fn strs(v: &[&str]) -> Json {
    Json::List(v.iter().map(|x| s(x)).collect())
}

fn codes(pick: impl Fn(ErrorCode) -> bool) -> Json {
    Json::List(
        ErrorCode::ALL
            .into_iter()
            .filter(|c| pick(*c))
            .map(|c| s(c.as_str_name()))
            .collect(),
    )
}

fn err_rule(e: Result<(), names::NameError>) -> Json {
    s(e.expect_err("the probe breaks the rule").rule())
}

fn table() -> Json {
    use Json::*;
    Obj(vec![
        (
            "_comment",
            s(
                "Generated from tern-proto (proto/src/rules_table.rs), whose test keeps it equal \
               to the Rust rules. Do not edit: change the Rust, then run \
               TERN_WRITE_RULES=1 cargo test -p tern-proto rules_table",
            ),
        ),
        ("protocolVersion", Num(PROTOCOL_VERSION.into())),
        (
            "liveness",
            Obj(vec![
                ("heartbeatMisses", Num(HEARTBEAT_MISSES.into())),
                ("graceMs", Num(liveness::LIVENESS_GRACE.as_millis() as u64)),
            ]),
        ),
        (
            "errors",
            Obj(vec![
                ("retryable", codes(ErrorCode::is_retryable)),
                ("closesConnection", codes(ErrorCode::closes_connection)),
            ]),
        ),
        (
            "names",
            Obj(vec![
                (
                    "username",
                    Obj(vec![
                        ("pattern", s(names::USERNAME_PATTERN)),
                        ("min", Num(1)),
                        ("max", Num(names::USERNAME_MAX as u64)),
                        ("rule", err_rule(names::username(""))),
                        ("valid", strs(examples::USERNAME_OK)),
                        ("invalid", strs(examples::USERNAME_BAD)),
                    ]),
                ),
                (
                    "device",
                    Obj(vec![
                        ("pattern", s(names::DEVICE_PATTERN)),
                        ("min", Num(1)),
                        ("max", Num(names::DEVICE_MAX as u64)),
                        ("rule", err_rule(names::device(""))),
                        ("valid", strs(examples::DEVICE_OK)),
                        ("invalid", strs(examples::DEVICE_BAD)),
                    ]),
                ),
                (
                    "password",
                    Obj(vec![
                        ("minBytes", Num(names::PASSWORD_MIN as u64)),
                        ("maxBytes", Num(names::PASSWORD_MAX as u64)),
                        ("rule", err_rule(names::password(""))),
                    ]),
                ),
                (
                    "groupName",
                    Obj(vec![
                        ("maxBytes", Num(names::GROUP_NAME_MAX as u64)),
                        ("rule", err_rule(names::group_name(""))),
                    ]),
                ),
                (
                    "clientMsgId",
                    Obj(vec![
                        ("maxBytes", Num(names::CLIENT_MSG_ID_MAX as u64)),
                        ("rule", err_rule(names::client_msg_id(""))),
                    ]),
                ),
                (
                    "contentType",
                    Obj(vec![
                        ("maxBytes", Num(names::CONTENT_TYPE_MAX as u64)),
                        ("rule", err_rule(names::content_type("\n"))),
                    ]),
                ),
            ]),
        ),
    ])
}

/// Objects one key a line (2-space indent), lists of scalars on one line, ASCII only.
fn render(v: &Json, indent: usize, out: &mut String) {
    match v {
        Json::Num(n) => out.push_str(&n.to_string()),
        Json::Str(x) => {
            out.push('"');
            for c in x.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    ' '..='~' => out.push(c),
                    _ => {
                        let mut buf = [0u16; 2];
                        for u in c.encode_utf16(&mut buf) {
                            out.push_str(&format!("\\u{u:04x}"));
                        }
                    }
                }
            }
            out.push('"');
        }
        Json::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render(item, indent, out);
            }
            out.push(']');
        }
        Json::Obj(fields) => {
            out.push_str("{\n");
            for (i, (k, item)) in fields.iter().enumerate() {
                out.push_str(&" ".repeat(indent + 2));
                out.push_str(&format!("\"{k}\": "));
                render(item, indent + 2, out);
                if i + 1 < fields.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            out.push_str(&" ".repeat(indent));
            out.push('}');
        }
    }
}

fn rendered() -> String {
    let mut out = String::new();
    render(&table(), 0, &mut out);
    out.push('\n');
    out
}

#[test]
fn web_rules_table_matches_the_rust_rules() {
    let want = rendered();
    if std::env::var_os("TERN_WRITE_RULES").is_some() {
        std::fs::write(PATH, &want).unwrap();
    }
    let have = std::fs::read_to_string(PATH).unwrap_or_default();
    assert!(
        have == want,
        "{PATH} differs from the Rust rules; if the Rust is right, run \
         TERN_WRITE_RULES=1 cargo test -p tern-proto rules_table and commit the file.\n\
         want:\n{want}\nhave:\n{have}"
    );
}

#[test]
fn render_escapes() {
    let mut out = String::new();
    render(&s("a\"\\\0é"), 0, &mut out);
    assert_eq!(out, r#""a\"\\\u0000\u00e9""#);
}
