//! Image and file messages: upload and download of blobs (docs/PROTOCOL.md 9.14), with
//! progress callbacks, resumed where they stopped when the connection drops.
//!
//! An upload names its content first (sha256 and size), so the server checks its limits
//! before any byte is sent, then sends 512 KiB chunks in order. If the connection drops,
//! the loop asks the server again (`UploadBegin`, queued until the client is back) and
//! goes on from the offset the server has stored, on whichever transport the client
//! reconnected with. A download goes on from the bytes it already has; the result is
//! checked against the blob id (its sha256) before it is returned.

use std::path::Path;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tern_proto::pb;
use tern_proto::Body;

use super::{unexpected, Client, ClientError};

/// Largest chunk of an upload or download (the server's limit).
pub const CHUNK: usize = 512 * 1024;
/// How many times in a row a transfer may lose its connection before it gives up.
const MAX_RETRIES: u32 = 20;

/// A blob to attach to a message: the id `upload_*` returned and the file name to show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachmentRef {
    pub blob_id: String,
    pub name: String,
}

/// The lowercase hex sha256 of `data`: a blob's id.
pub fn blob_id_of(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// The transient failures a transfer rides over: the connection went away.
fn transient(e: &ClientError) -> bool {
    matches!(e, ClientError::ConnectionLost)
}

/// Where an upload reads its bytes from.
trait Source {
    fn len(&self) -> u64;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl Source for Bytes {
    fn len(&self) -> u64 {
        self.as_ref().len() as u64
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let o = offset as usize;
        buf.copy_from_slice(&self[o..o + buf.len()]);
        Ok(())
    }
}

struct FileSource(std::fs::File, u64);

impl Source for FileSource {
    fn len(&self) -> u64 {
        self.1
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        self.0.seek(SeekFrom::Start(offset))?;
        self.0.read_exact(buf)
    }
}

fn io(e: std::io::Error) -> ClientError {
    ClientError::Protocol(format!("local file: {e}"))
}

impl Client {
    /// Uploads `data` as a blob of type `mime` (`image/png`, `application/pdf`, ...) and
    /// returns what the server stored (for images: size and thumbnail). `progress` gets
    /// (bytes stored, total) after every chunk. Resumes by itself across reconnects.
    pub async fn upload_bytes(
        &self,
        data: Bytes,
        mime: &str,
        progress: impl FnMut(u64, u64),
    ) -> Result<pb::BlobInfo, ClientError> {
        let sha = Sha256::digest(&data).to_vec();
        self.upload_from(data, sha, mime, progress).await
    }

    /// [`Client::upload_bytes`] from a file, read in chunks (hashed first).
    pub async fn upload_file(
        &self,
        path: &Path,
        mime: &str,
        progress: impl FnMut(u64, u64),
    ) -> Result<pb::BlobInfo, ClientError> {
        let p = path.to_path_buf();
        let (sha, len) = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            use std::io::Read;
            let mut f = std::fs::File::open(&p)?;
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut len = 0u64;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                len += n as u64;
                h.update(&buf[..n]);
            }
            Ok((h.finalize().to_vec(), len))
        })
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?
        .map_err(io)?;
        let f = std::fs::File::open(path).map_err(io)?;
        self.upload_from(FileSource(f, len), sha, mime, progress)
            .await
    }

    async fn upload_from(
        &self,
        mut src: impl Source,
        sha256: Vec<u8>,
        mime: &str,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<pb::BlobInfo, ClientError> {
        let size = src.len();
        let mut retries = 0;
        'begin: loop {
            let state = match self
                .request(Body::UploadBegin(pb::UploadBegin {
                    sha256: sha256.clone().into(),
                    size,
                    mime: mime.to_string(),
                }))
                .await
            {
                Ok(Body::UploadState(s)) => s,
                Ok(other) => return Err(unexpected(&other)),
                Err(e) if transient(&e) && retries < MAX_RETRIES => {
                    retries += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(blob) = state.blob {
                progress(size, size);
                return Ok(blob);
            }
            let id = state.upload_id;
            let mut offset = state.offset;
            progress(offset, size);
            while offset < size {
                let n = (size - offset).min(CHUNK as u64) as usize;
                let mut buf = vec![0u8; n];
                src.read_at(offset, &mut buf).map_err(io)?;
                match self
                    .request(Body::UploadChunk(pb::UploadChunk {
                        upload_id: id.clone(),
                        offset,
                        data: buf.into(),
                    }))
                    .await
                {
                    Ok(Body::UploadState(s)) => {
                        offset = s.offset;
                        retries = 0;
                        progress(offset, size);
                    }
                    Ok(other) => return Err(unexpected(&other)),
                    // The chunk may or may not have landed: ask where the server is.
                    Err(e) if transient(&e) && retries < MAX_RETRIES => {
                        retries += 1;
                        continue 'begin;
                    }
                    // Someone else (another device of this user) moved the upload on.
                    Err(ClientError::Server { code, .. })
                        if code == pb::ErrorCode::InvalidArgument && retries < MAX_RETRIES =>
                    {
                        retries += 1;
                        continue 'begin;
                    }
                    Err(e) => return Err(e),
                }
            }
            match self
                .request(Body::UploadFinish(pb::UploadFinish { upload_id: id }))
                .await
            {
                Ok(Body::BlobInfo(b)) => return Ok(b),
                Ok(other) => return Err(unexpected(&other)),
                Err(e) if transient(&e) && retries < MAX_RETRIES => {
                    // It may have finished: UploadBegin answers with the blob if so.
                    retries += 1;
                    continue 'begin;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Downloads blob `blob_id` (which this user may read) whole, checked against its
    /// sha256. `progress` gets (bytes received, total).
    pub async fn download(
        &self,
        blob_id: &str,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<(Bytes, String), ClientError> {
        let mut out = Vec::new();
        let mut mime = String::new();
        self.download_chunks(blob_id, |chunk: &pb::BlobChunk| {
            if out.is_empty() {
                out.reserve(chunk.size as usize);
                mime = chunk.mime.clone();
            }
            out.extend_from_slice(&chunk.data);
            progress(out.len() as u64, chunk.size);
            Ok(out.len() as u64)
        })
        .await?;
        if blob_id_of(&out) != blob_id {
            return Err(ClientError::Protocol(format!(
                "downloaded bytes do not hash to {blob_id}"
            )));
        }
        Ok((out.into(), mime))
    }

    /// Downloads blob `blob_id` into the file at `path` (written whole or not at all: a
    /// temporary file renamed once its sha256 matched). Returns (size, mime).
    pub async fn download_to(
        &self,
        blob_id: &str,
        path: &Path,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<(u64, String), ClientError> {
        use std::io::Write;
        let tmp = path.with_extension(format!(
            "{}part",
            path.extension()
                .map(|e| format!("{}.", e.to_string_lossy()))
                .unwrap_or_default()
        ));
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        let mut hasher = Sha256::new();
        let mut got = 0u64;
        let mut mime = String::new();
        let res = self
            .download_chunks(blob_id, |chunk: &pb::BlobChunk| {
                file.write_all(&chunk.data).map_err(io)?;
                hasher.update(&chunk.data);
                got += chunk.data.len() as u64;
                mime = chunk.mime.clone();
                progress(got, chunk.size);
                Ok(got)
            })
            .await;
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        if hex(&hasher.finalize()) != blob_id {
            let _ = std::fs::remove_file(&tmp);
            return Err(ClientError::Protocol(format!(
                "downloaded bytes do not hash to {blob_id}"
            )));
        }
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok((got, mime))
    }

    /// Reads the blob chunk by chunk; `sink` takes each chunk and returns the bytes held
    /// so far (the next offset). Rides over reconnects.
    async fn download_chunks(
        &self,
        blob_id: &str,
        mut sink: impl FnMut(&pb::BlobChunk) -> Result<u64, ClientError>,
    ) -> Result<(), ClientError> {
        let mut offset = 0u64;
        let mut retries = 0;
        loop {
            match self
                .request(Body::Download(pb::Download {
                    blob_id: blob_id.to_string(),
                    offset,
                    length: CHUNK as u32,
                }))
                .await
            {
                Ok(Body::BlobChunk(c)) => {
                    retries = 0;
                    if c.offset != offset {
                        return Err(ClientError::Protocol(format!(
                            "chunk at {} asked for {offset}",
                            c.offset
                        )));
                    }
                    if c.data.is_empty() {
                        if offset == c.size {
                            return Ok(());
                        }
                        return Err(ClientError::Protocol(format!(
                            "empty chunk at {offset} of {}",
                            c.size
                        )));
                    }
                    offset = sink(&c)?;
                    if offset >= c.size {
                        return Ok(());
                    }
                }
                Ok(other) => return Err(unexpected(&other)),
                Err(e) if transient(&e) && retries < MAX_RETRIES => retries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// A short-lived URL path for a plain HTTP GET of the blob on the server's web
    /// listener (`http(s)://HOST:WEBPORT` + path), e.g. for a browser's `<img src>`.
    pub async fn blob_url(&self, blob_id: &str) -> Result<pb::BlobUrl, ClientError> {
        match self
            .request(Body::GetBlobUrl(pb::GetBlobUrl {
                blob_id: blob_id.to_string(),
            }))
            .await?
        {
            Body::BlobUrl(u) => Ok(u),
            other => Err(unexpected(&other)),
        }
    }
}
