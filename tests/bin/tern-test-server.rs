//! The real `tern-server` entry point, built inside the tests package so the crash tests
//! can start it as a child process (Cargo exposes `CARGO_BIN_EXE_*` only for binaries of
//! the test's own package).
fn main() {
    std::process::exit(tern_server::cli::main());
}
