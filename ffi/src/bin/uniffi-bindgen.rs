//! uniffi's code generator, built from this workspace so its version always matches the
//! `uniffi` the library was built with. Used by `ffi/generate.sh`:
//! `cargo run -p tern-ffi --bin uniffi-bindgen -- generate --library target/debug/libtern_ffi.so --language python --out-dir OUT`.
fn main() {
    uniffi::uniffi_bindgen_main()
}
