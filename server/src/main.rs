//! `tern-server`: see `tern-server --help`.
fn main() {
    std::process::exit(tern_server::cli::main());
}
