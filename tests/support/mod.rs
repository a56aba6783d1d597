//! Support code for tern's black-box integration tests (the test files beside this
//! folder, one per promise, are the tests; this is the library they share):
//!
//! * [`server`]: a real server, in-process on port 0 ([`TestServer`]) or the real binary
//!   as a child process ([`ProcessServer`]) so it can be killed with SIGKILL, each with
//!   its own temp data dir;
//! * [`client`]: a raw-frame [`Client`] over real QUIC or TLS-TCP;
//! * [`expect`]: assertions on the frames the server answers with;
//! * [`sdk`]: the SDK's reconnecting client as tests configure it;
//! * [`tls`]: the rustls configurations of a tern client and server, and a bare TLS-TCP
//!   connection;
//! * [`fault`]: fault-injecting TCP, UDP and frame-aware proxies;
//! * [`chat_load`]: the chat workload and checker of the crash tests;
//! * [`powerfs`]: a FUSE filesystem that simulates power loss (unsynced writes are lost).
//!
//! The common items of all but `fault` are re-exported at the crate root (with the
//! `expect_body!` macro), so a test file starts with `use tern_tests::*;`.

pub mod chat_load;
pub mod client;
pub mod expect;
pub mod fault;
pub mod metrics;
pub mod powerfs;
pub mod rng;
pub mod sdk;
pub mod server;
pub mod tls;

pub use client::{login_body, register_body, send_body, Client};
pub use expect::{ack_of, expect_error, expect_ok, expect_pull, text};
pub use metrics::{metric_value, scrape_metrics};
pub use sdk::{register_all, sdk_config};
pub use server::{memory_kib, test_config, ProcessServer, TestServer};
pub use tern_proto;
pub use tern_sdk::Transport;
pub use tern_sdk::Transport::{Quic, Tcp};
pub use tls::tls_connect;

/// Both transports, for tests that run the same steps over each.
pub const BOTH: [Transport; 2] = [Transport::Quic, Transport::Tcp];
/// The password of every user the tests register.
pub const PASSWORD: &str = "correct horse battery";

/// Logs of the test process to stderr, filtered by RUST_LOG (off by default).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_test_writer()
        .try_init();
}

/// Unique-enough names so tests sharing nothing never collide.
pub fn name(prefix: &str, t: Transport) -> String {
    format!("{prefix}-{t}")
}

#[cfg(test)]
mod tests {
    /// Cargo only finds the test files through the `[[test]]` list in Cargo.toml: a file
    /// left out of it would never run, and nothing else would say so.
    #[test]
    fn every_test_file_is_a_test_target() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        let mut listed: Vec<String> = manifest
            .split("[[test]]")
            .skip(1)
            .map(|section| {
                let path = section
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("path = "))
                    .expect("every [[test]] names its path");
                path.trim_matches('"').to_string()
            })
            .collect();
        let mut files: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f.ends_with(".rs"))
            .collect();
        listed.sort();
        files.sort();
        assert_eq!(
            listed, files,
            "Cargo.toml [[test]] paths vs the .rs files beside it"
        );
    }
}
