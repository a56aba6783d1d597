//! `web/src/schema.js`: the wire schema of the browser SDK (whose hand-written protobuf
//! codec, `web/src/wire.js`, is driven by it), rendered by `build.rs` from the same compiled
//! descriptor as the prost types (see `proto/web_schema_gen.rs`). The browser loads the
//! committed file as it is, so the page needs no npm and no code generator to run; the test
//! below keeps the file equal to the proto. After a change to `tern.proto`, rewrite it with
//! `TERN_WRITE_WEB_SCHEMA=1 cargo test -p tern-proto web_schema` and commit it.

/// The text of `web/src/schema.js` for this build's `tern.proto`.
pub fn web_schema() -> &'static str {
    include_str!(concat!(env!("OUT_DIR"), "/web_schema.js"))
}

#[cfg(test)]
mod tests {
    use super::web_schema;

    const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../web/src/schema.js");

    /// The committed file is what the proto says (rewrite it with TERN_WRITE_WEB_SCHEMA=1).
    #[test]
    fn web_schema_is_current() {
        let want = web_schema();
        if std::env::var_os("TERN_WRITE_WEB_SCHEMA").is_some() {
            std::fs::write(PATH, want).unwrap();
        }
        let have = std::fs::read_to_string(PATH).unwrap_or_default();
        assert!(
            have == want,
            "{PATH} is out of date: run TERN_WRITE_WEB_SCHEMA=1 cargo test -p tern-proto web_schema"
        );
    }

    /// Every Frame.body field is in the schema, as a oneof member named as the SDK names it.
    #[test]
    fn web_schema_has_every_frame_body() {
        let s = web_schema();
        for f in crate::body::FRAME_BODY_FIELDS {
            let camel: String = {
                let mut out = String::new();
                let mut up = false;
                for c in f.field.chars() {
                    if c == '_' {
                        up = true;
                    } else if up {
                        out.push(c.to_ascii_uppercase());
                        up = false;
                    } else {
                        out.push(c);
                    }
                }
                out
            };
            let line = format!(
                "{{ number: {}, name: {camel:?}, type: \"message\", of: {:?}, oneof: \"body\" }},",
                f.number, f.message
            );
            assert!(s.contains(&line), "missing {line}");
        }
        assert!(s.contains("{ number: 1, name: \"reqId\", type: \"uint64\" },"));
        assert!(s.contains("name: \"afterInboxSeq\", type: \"uint64\", optional: true"));
    }
}
