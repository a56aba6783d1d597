//! Renders `web/src/schema.js`, the wire schema of the browser SDK, from the compiled
//! descriptor of `tern.proto` (a module of `build.rs`; `src/web_schema.rs` serves the
//! result and its test keeps the committed file equal to it). `build.rs` reads the
//! descriptor into the plain values below, so this file names no prost-types type.
//!
//! Field names are the ones the SDK uses in JavaScript: camelCase as protobufjs makes them
//! (`req_id` -> `reqId`: an underscore before a lowercase letter is dropped and the letter
//! uppercased). Scalar types keep their proto names; message and enum fields name their
//! type (short name: tern.proto has one package and no nested types).

use std::fmt::Write as _;

/// A message: its name, fields in declaration order.
pub struct Message {
    pub name: String,
    pub fields: Vec<Field>,
}

/// One field of a message.
pub struct Field {
    pub name: String,
    pub number: i32,
    /// `FieldDescriptorProto.Type` as its number (9 = string, 11 = message, ...).
    pub kind: i32,
    /// The full type name of a message or enum field (`.tern.v1.Register`), else empty.
    pub type_name: String,
    pub repeated: bool,
    /// A proto3 `optional` field (present or absent, even at its default).
    pub optional: bool,
    /// The real oneof it belongs to (not the synthetic one of a proto3 optional).
    pub oneof: Option<String>,
    /// An explicit `[packed = ...]` option.
    pub packed: Option<bool>,
}

/// An enum: its name and values (name, number) in declaration order.
pub struct Enum {
    pub name: String,
    pub values: Vec<(String, i32)>,
}

/// protobufjs' field name: `_x` -> `X` for a lowercase ASCII `x`.
pub fn camel_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '_' {
            if let Some(&n) = chars.peek() {
                if n.is_ascii_lowercase() {
                    out.push(n.to_ascii_uppercase());
                    chars.next();
                    continue;
                }
            }
        }
        out.push(c);
    }
    out
}

/// The scalar type name of a `FieldDescriptorProto.Type` number, or None for message,
/// enum and group.
fn scalar(kind: i32) -> Option<&'static str> {
    Some(match kind {
        1 => "double",
        2 => "float",
        3 => "int64",
        4 => "uint64",
        5 => "int32",
        6 => "fixed64",
        7 => "fixed32",
        8 => "bool",
        9 => "string",
        12 => "bytes",
        13 => "uint32",
        15 => "sfixed32",
        16 => "sfixed64",
        17 => "sint32",
        18 => "sint64",
        _ => return None,
    })
}

fn short(type_name: &str) -> &str {
    type_name.rsplit('.').next().unwrap_or(type_name)
}

/// The text of `web/src/schema.js`.
pub fn render(package: &str, messages: &[Message], enums: &[Enum]) -> Result<String, String> {
    let mut s = String::new();
    s.push_str(
        "// @generated from proto/tern.proto by tern-proto (proto/web_schema_gen.rs). Do not edit:\n\
         // change the proto, then run `TERN_WRITE_WEB_SCHEMA=1 cargo test -p tern-proto web_schema`\n\
         // (without the variable the test fails while this file is out of date).\n\
         //\n\
         // The wire schema of the browser SDK, read by src/wire.js: each message's fields with\n\
         // their number, name (camelCase, as protobufjs names them), type (a scalar, or\n\
         // `message`/`enum` with `of` naming it), and `repeated`, `optional` (proto3 explicit\n\
         // presence) or `oneof`; each enum's values.\n",
    );
    let _ = writeln!(
        s,
        "export default {{\n  package: {package:?},\n  messages: {{"
    );
    for m in messages {
        let _ = writeln!(s, "    {}: [", m.name);
        for f in &m.fields {
            let mut line = format!("{{ number: {}, name: {:?}", f.number, camel_case(&f.name));
            match (f.kind, scalar(f.kind)) {
                (_, Some(t)) => {
                    let _ = write!(line, ", type: {t:?}");
                }
                (11, None) => {
                    let _ = write!(line, ", type: \"message\", of: {:?}", short(&f.type_name));
                }
                (14, None) => {
                    let _ = write!(line, ", type: \"enum\", of: {:?}", short(&f.type_name));
                }
                (k, None) => {
                    return Err(format!("{}.{}: unsupported field type {k}", m.name, f.name))
                }
            }
            if f.repeated {
                line.push_str(", repeated: true");
                if f.packed == Some(false) {
                    line.push_str(", packed: false");
                }
            }
            if f.optional {
                line.push_str(", optional: true");
            }
            if let Some(o) = &f.oneof {
                let _ = write!(line, ", oneof: {:?}", camel_case(o));
            }
            let _ = writeln!(s, "      {line} }},");
        }
        s.push_str("    ],\n");
    }
    s.push_str("  },\n  enums: {\n");
    for e in enums {
        let _ = writeln!(s, "    {}: {{", e.name);
        for (name, number) in &e.values {
            let _ = writeln!(s, "      {name}: {number},");
        }
        s.push_str("    },\n");
    }
    s.push_str("  },\n};\n");
    Ok(s)
}
