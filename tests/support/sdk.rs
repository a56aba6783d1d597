//! The SDK's reconnecting [`tern_sdk::Client`] as the tests set it up: users registered
//! with the tests' [`PASSWORD`], state in memory, short backoffs.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tern_sdk::{
    register, ClientConfig, ConnectOptions, Credentials, MemoryStore, TransportMode, Trust,
};

use crate::PASSWORD;

/// A client of `user` on `device` at `server` (trusting `ca`) over `mode`: state in
/// memory, first reconnect after 50 ms. Tests set the rest (max backoff, QUIC address).
pub fn sdk_config(
    server: SocketAddr,
    ca: &Path,
    user: &str,
    device: &str,
    mode: TransportMode,
) -> ClientConfig {
    let mut c = ClientConfig::new(
        server,
        Trust::from_pem_file(ca).unwrap(),
        Credentials {
            username: user.into(),
            password: Some(PASSWORD.into()),
            device: device.into(),
        },
        Box::new(MemoryStore::default()),
    );
    c.transport = mode;
    c.initial_backoff = Duration::from_millis(50);
    c
}

/// Registers every one of `users` over TLS-TCP with the SDK's one-shot `register`.
pub async fn register_all(server: SocketAddr, ca: &Path, users: &[&str]) {
    let opts = ConnectOptions::new(Trust::from_pem_file(ca).unwrap());
    for u in users {
        register(server, &opts, TransportMode::Tcp, u, PASSWORD)
            .await
            .unwrap();
    }
}
