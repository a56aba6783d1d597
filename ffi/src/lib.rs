//! tern-ffi: tern-sdk for Kotlin, Swift and Python, through uniffi (proc-macro style).
//!
//! - [`client`]: [`TernClient`] (connect, send, history, conversations, read receipts,
//!   groups with roles and ownership, channels, presence and group watches, profiles,
//!   contacts, close) and the one-off [`register`] / [`login`];
//! - [`blobs`]: the [`TernClient`] methods for attachments (upload, download, URL,
//!   avatar) and the [`TransferProgress`] the app may implement;
//! - [`events`]: [`FfiEvent`] and the [`EventListener`] the app implements, and how events
//!   reach it (a thread per client, a bounded queue, failures caught);
//! - [`types`]: the records and enums that cross the boundary;
//! - [`error`]: [`FfiError`], with the protocol's error code for server refusals;
//! - `runtime`: the tokio runtime every call runs on.
//!
//! The bindings are generated from the compiled library by `ffi/generate.sh`
//! (`src/bin/uniffi-bindgen.rs`); README "Using the SDK from Kotlin / Swift / Python".

uniffi::setup_scaffolding!();

pub mod blobs;
pub mod client;
pub mod error;
pub mod events;
mod runtime;
pub mod types;

pub use blobs::TransferProgress;
pub use client::{login, register, FfiLoginOk, TernClient};
pub use error::FfiError;
pub use events::{shutdown, EventListener, FfiEvent};
pub use types::*;
