//! Image and file messages (docs/PROTOCOL.md 9.14): upload and download of blobs, their
//! URLs, the avatar, each a [`TernClient`] method over the SDK's `client::blobs`. An
//! upload or download resumes by itself across reconnects; its progress goes to an
//! optional [`TransferProgress`] the app implements. Sending an image or file is an
//! ordinary `send` with `FfiSendOptions::attachment` set.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::client::TernClient;
use crate::runtime::on_runtime;
use crate::types::{FfiBlobInfo, FfiBlobUrl, FfiDownloaded, FfiProfile};
use crate::FfiError;

/// Implemented by the app to follow a transfer: `on_progress(done, total)` in bytes, once
/// when it starts (where a resumed upload starts from) and after every chunk (512 KiB).
/// Called on one of the binding's runtime threads while the transfer waits: return
/// quickly. A callback that throws is ignored (the transfer goes on); none is made after
/// `shutdown()`.
#[uniffi::export(foreign)]
pub trait TransferProgress: Send + Sync {
    fn on_progress(&self, done: u64, total: u64);
}

/// The SDK's progress closure for an optional foreign callback.
fn reporter(progress: Option<Arc<dyn TransferProgress>>) -> impl FnMut(u64, u64) {
    move |done, total| {
        if let Some(p) = &progress {
            if !crate::events::shut_down() {
                let _ = catch_unwind(AssertUnwindSafe(|| p.on_progress(done, total)));
            }
        }
    }
}

#[uniffi::export]
impl TernClient {
    /// Uploads the file at `path` as a blob of type `mime` (`image/png`, `application/pdf`,
    /// ...; images are checked and thumbnailed by the server) and returns what the server
    /// stored: `blob_id` to attach to a message (`FfiSendOptions::attachment`) or to set
    /// as avatar. Content the server already has is not sent again.
    pub async fn upload_file(
        &self,
        path: String,
        mime: String,
        progress: Option<Arc<dyn TransferProgress>>,
    ) -> Result<FfiBlobInfo, FfiError> {
        let client = self.client.clone();
        on_runtime(async move {
            let path = PathBuf::from(path);
            Ok(client
                .upload_file(&path, &mime, reporter(progress))
                .await?
                .into())
        })
        .await
    }

    /// [`TernClient::upload_file`] from bytes in memory.
    pub async fn upload_bytes(
        &self,
        data: Vec<u8>,
        mime: String,
        progress: Option<Arc<dyn TransferProgress>>,
    ) -> Result<FfiBlobInfo, FfiError> {
        let client = self.client.clone();
        on_runtime(async move {
            Ok(client
                .upload_bytes(Bytes::from(data), &mime, reporter(progress))
                .await?
                .into())
        })
        .await
    }

    /// Downloads blob `blob_id` (one this user may read: an attachment of a message they
    /// can read, their own upload, an avatar) into the file at `path`: written whole or
    /// not at all (a `.part` file renamed once its sha256 matched the id).
    pub async fn download(
        &self,
        blob_id: String,
        path: String,
        progress: Option<Arc<dyn TransferProgress>>,
    ) -> Result<FfiDownloaded, FfiError> {
        let client = self.client.clone();
        on_runtime(async move {
            let path = PathBuf::from(path);
            let (size, mime) = client
                .download_to(&blob_id, &path, reporter(progress))
                .await?;
            Ok(FfiDownloaded { size, mime })
        })
        .await
    }

    /// [`TernClient::download`] into memory (checked against the id), e.g. an avatar.
    pub async fn download_bytes(
        &self,
        blob_id: String,
        progress: Option<Arc<dyn TransferProgress>>,
    ) -> Result<Vec<u8>, FfiError> {
        let client = self.client.clone();
        on_runtime(async move {
            let (data, _mime) = client.download(&blob_id, reporter(progress)).await?;
            Ok(data.to_vec())
        })
        .await
    }

    /// A short-lived URL path of blob `blob_id` for a plain HTTP GET on the server's web
    /// listener (`http(s)://HOST:WEBPORT` + `path`), e.g. for an image view that loads
    /// URLs.
    pub async fn blob_url(&self, blob_id: String) -> Result<FfiBlobUrl, FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.blob_url(&blob_id).await?.into()) }).await
    }

    /// Sets this user's avatar to an image blob (uploaded first); "" removes it. Anyone
    /// may then download it (`FfiProfile::avatar`). A blob that is not an image:
    /// `INVALID_ARGUMENT`. Returns the profile.
    pub async fn set_avatar(&self, blob_id: String) -> Result<FfiProfile, FfiError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.set_avatar(&blob_id).await?.into()) }).await
    }
}
