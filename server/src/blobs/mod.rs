//! Blobs: the bytes of image and file messages and avatars (docs/PROTOCOL.md 9.14).
//!
//! - Upload ([`Blobs::begin`], [`Blobs::chunk`], [`Blobs::finish`]): the client names the
//!   content by its sha256 and size first, so limits and quota are checked before any byte
//!   is taken. Bytes go to a part file under `<data-dir>/uploads/`, in order, and survive a
//!   disconnect or a server restart: `begin` again resumes from the stored length. `finish`
//!   checks size and sha256, inspects images ([`image`]: type, size, thumbnail), makes the
//!   file durable (fsync, rename into `<data-dir>/blobs/`, fsync of the directories) and only
//!   then commits the blob's record. A part file is never visible as a blob.
//! - Content-addressed: the blob id is the lowercase hex sha256, so the same file is stored
//!   once however many users upload it. Each uploader holds a grant (their quota is the sum
//!   of their grants and uploads in progress).
//! - Who may read ([`Blobs::may_read`]): an uploader; a member of a conversation holding a
//!   live message that carries the blob (not recalled, not expired, visible to them); anyone
//!   for a user's current avatar. Everyone else gets NOT_FOUND, the same answer as for a
//!   blob that does not exist: a guessed sha256 reveals nothing.
//! - [`Blobs::attach`] fills a Send's attachment from the record and holds the collector off
//!   (a read lock) until the message with its reference is committed.
//! - [`Blobs::sweep`] (the collector): drops uploads older than the grace period, drops
//!   references whose message is gone, recalled or expired, and removes blobs nothing
//!   references once the grace period since their upload has passed.
//! - Signed URLs ([`Blobs::url`], [`Blobs::open_signed`]): HMAC over (id, expiry) with a key
//!   derived from the store's signing key, for a plain HTTP GET by browsers.

pub(crate) mod image;

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tern_proto::pb;
use tern_proto::pb::ErrorCode;

use crate::clock::Clock;
use crate::conversations::view::is_expired;
use crate::conversations::ConvCache;
use crate::error::{ServiceError, ServiceResult};
use crate::sequencer::Sequencer;
use crate::store::{BlobGrantRecord, BlobRecord, Mutation, Store, UploadRecord};

/// Largest chunk of an upload or a download, in bytes.
pub(crate) const MAX_CHUNK: usize = 512 * 1024;
/// Uploads one user may have in progress at once.
pub(crate) const MAX_UPLOADS_IN_PROGRESS: usize = 8;
/// Longest file name of an attachment, in bytes.
pub(crate) const MAX_NAME: usize = 255;
/// Most references the reader check and the collector look at per blob.
const MAX_REFS: usize = 10_000;
/// The prefix of an avatar's holder in the `blob_refs` space.
pub(crate) const AVATAR_HOLDER: &str = "avatar:";

/// The limits of [`Blobs`], from the config.
#[derive(Debug, Clone)]
pub(crate) struct BlobLimits {
    pub max_blob_bytes: u64,
    pub quota_bytes: u64,
    pub grace_ms: u64,
    pub url_ttl_ms: u64,
}

/// A blob the signed-URL check let through: where its bytes are and what they are.
#[derive(Debug, Clone)]
pub(crate) struct SignedBlob {
    pub path: PathBuf,
    pub mime: String,
}

pub(crate) struct Blobs {
    store: Arc<dyn Store>,
    sequencer: Arc<dyn Sequencer>,
    convs: Arc<ConvCache>,
    clock: Arc<dyn Clock>,
    limits: BlobLimits,
    /// `<data-dir>/blobs`: finished blobs, `<id[0..2]>/<id>`.
    blob_dir: PathBuf,
    /// `<data-dir>/uploads`: part files of uploads in progress.
    upload_dir: PathBuf,
    /// Key of the signed URLs.
    url_key: [u8; 32],
    /// Held (read) by a Send from its check of the blob until its reference is committed;
    /// held (write) by the collector while it decides a blob is unreferenced and deletes
    /// its record. So no message can come to carry a blob the collector removes.
    collector: RwLock<()>,
    /// One lock per upload in progress: chunks of one upload (from two connections, say)
    /// are written one at a time, in order.
    upload_locks: Mutex<HashMap<(String, String), UploadLock>>,
    /// Serializes read-change-write of blob records (two users finishing uploads of the
    /// same content at once both end up in its uploaders). Never held across an await.
    records: Mutex<()>,
}

/// Keeps the collector off a blob until the message that carries it is committed.
pub(crate) struct AttachGuard<'a>(#[allow(dead_code)] RwLockReadGuard<'a, ()>);

type HmacSha256 = Hmac<Sha256>;
/// Serializes the requests of one upload.
type UploadLock = Arc<tokio::sync::Mutex<()>>;

impl Blobs {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        sequencer: Arc<dyn Sequencer>,
        convs: Arc<ConvCache>,
        clock: Arc<dyn Clock>,
        limits: BlobLimits,
        data_dir: &Path,
    ) -> Self {
        let mut mac = HmacSha256::new_from_slice(&store.signing_key()).expect("any key length");
        mac.update(b"tern blob url key");
        let url_key: [u8; 32] = mac.finalize().into_bytes().into();
        Self {
            store,
            sequencer,
            convs,
            clock,
            limits,
            blob_dir: data_dir.join("blobs"),
            upload_dir: data_dir.join("uploads"),
            url_key,
            collector: RwLock::new(()),
            upload_locks: Mutex::new(HashMap::new()),
            records: Mutex::new(()),
        }
    }

    /// Where the bytes of blob `id` live (the id is validated hex).
    fn blob_path(&self, id: &str) -> PathBuf {
        self.blob_dir.join(&id[..2]).join(id)
    }

    /// The part file of `user`'s upload of `id`. The user name is hashed: the file name
    /// holds nothing a client chose but hex.
    fn part_path(&self, user: &str, id: &str) -> PathBuf {
        let u = hex(&Sha256::digest(user.as_bytes())[..16]);
        self.upload_dir.join(format!("{u}-{id}.part"))
    }

    fn upload_lock(&self, user: &str, id: &str) -> UploadLock {
        let mut locks = self.upload_locks.lock().unwrap();
        // Locks nobody holds or waits for are dropped once the map grows.
        if locks.len() > 1024 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks
            .entry((user.to_string(), id.to_string()))
            .or_default()
            .clone()
    }

    /// Starts or resumes `user`'s upload of the content with this sha256 and size.
    pub(crate) async fn begin(
        &self,
        user: &str,
        sha256: &[u8],
        size: u64,
        mime: &str,
    ) -> ServiceResult<pb::UploadState> {
        if sha256.len() != 32 {
            return Err(ServiceError::invalid(format!(
                "sha256 must be 32 bytes, not {}",
                sha256.len()
            )));
        }
        let id = hex(sha256);
        if size == 0 {
            return Err(ServiceError::invalid("size must be at least 1 byte"));
        }
        if size > self.limits.max_blob_bytes {
            return Err(ServiceError::invalid(format!(
                "size {size} is over the server's max_blob_bytes of {} bytes",
                self.limits.max_blob_bytes
            )));
        }
        check_mime(mime)?;
        let lock = self.upload_lock(user, &id);
        let _g = lock.lock().await;
        // Already stored for this user: nothing to send.
        if self.has_grant(user, &id)? {
            if let Some(rec) = self.store.blob(&id)? {
                return Ok(pb::UploadState {
                    upload_id: id.clone(),
                    offset: size,
                    size: rec.size,
                    blob: Some(info(&id, &rec)),
                });
            }
        }
        if let Some(up) = self.store.upload(user, &id)? {
            if up.size == size {
                let offset = part_len(&self.part_path(user, &id))?.min(size);
                return Ok(pb::UploadState {
                    upload_id: id,
                    offset,
                    size,
                    blob: None,
                });
            }
            // Same content announced with another size: one of them is wrong; start over.
            self.discard_upload(user, &id).await?;
        }
        let in_progress: Vec<(String, String, UploadRecord)> = self
            .store
            .uploads()?
            .into_iter()
            .filter(|(u, _, _)| u == user)
            .collect();
        if in_progress.len() >= MAX_UPLOADS_IN_PROGRESS {
            return Err(ServiceError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "{MAX_UPLOADS_IN_PROGRESS} uploads are already in progress: finish one first"
                ),
            ));
        }
        let used = self.used(user)? + in_progress.iter().map(|(_, _, r)| r.size).sum::<u64>();
        if used.saturating_add(size) > self.limits.quota_bytes {
            return Err(ServiceError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "quota exceeded: {used} of {} bytes used, this upload needs {size}",
                    self.limits.quota_bytes
                ),
            ));
        }
        let part = self.part_path(user, &id);
        let dir = self.upload_dir.clone();
        blocking(move || {
            std::fs::create_dir_all(&dir)?;
            std::fs::File::create(&part)?;
            Ok(())
        })
        .await?;
        self.store.commit(&[Mutation::Upload {
            user: user.to_string(),
            blob: id.clone(),
            record: Some(UploadRecord {
                size,
                mime: mime.to_string(),
                created_ms: self.clock.now_ms(),
            }),
        }])?;
        self.sequencer.wrote();
        self.sequencer.barrier().await?;
        Ok(pb::UploadState {
            upload_id: id,
            offset: 0,
            size,
            blob: None,
        })
    }

    /// Appends `data` at `offset` (which must be the stored length).
    pub(crate) async fn chunk(
        &self,
        user: &str,
        upload_id: &str,
        offset: u64,
        data: Bytes,
    ) -> ServiceResult<pb::UploadState> {
        check_id(upload_id, "upload_id")?;
        if data.is_empty() || data.len() > MAX_CHUNK {
            return Err(ServiceError::invalid(format!(
                "a chunk holds 1 to {MAX_CHUNK} bytes, not {}",
                data.len()
            )));
        }
        let lock = self.upload_lock(user, upload_id);
        let _g = lock.lock().await;
        let up = self.upload_of(user, upload_id)?;
        let part = self.part_path(user, upload_id);
        let stored = part_len(&part)?;
        if offset != stored {
            return Err(ServiceError::invalid(format!(
                "chunk at offset {offset}, but {stored} bytes are stored: send from {stored}"
            )));
        }
        if offset + data.len() as u64 > up.size {
            return Err(ServiceError::invalid(format!(
                "chunk ends at {}, past the upload's size of {}",
                offset + data.len() as u64,
                up.size
            )));
        }
        let new_len = blocking(move || {
            let mut f = std::fs::OpenOptions::new().append(true).open(&part)?;
            f.write_all(&data)?;
            Ok(f.metadata()?.len())
        })
        .await?;
        Ok(pb::UploadState {
            upload_id: upload_id.to_string(),
            offset: new_len,
            size: up.size,
            blob: None,
        })
    }

    /// Verifies, inspects and stores the upload; answers what was stored.
    pub(crate) async fn finish(&self, user: &str, upload_id: &str) -> ServiceResult<pb::BlobInfo> {
        check_id(upload_id, "upload_id")?;
        let lock = self.upload_lock(user, upload_id);
        let _g = lock.lock().await;
        let up = self.upload_of(user, upload_id)?;
        let part = self.part_path(user, upload_id);
        let stored = part_len(&part)?;
        if stored != up.size {
            return Err(ServiceError::invalid(format!(
                "{stored} of {} bytes are stored: send the rest (from offset {stored}) first",
                up.size
            )));
        }
        let id = upload_id.to_string();
        let declared = up.mime.clone();
        let p = part.clone();
        let checked = blocking(move || inspect(&p, &id, &declared)).await?;
        let (mime, summary) = match checked {
            Ok(x) => x,
            Err(reason) => {
                // The bytes are not what was announced: nothing of them is kept.
                self.discard_upload(user, upload_id).await?;
                return Err(ServiceError::invalid(format!(
                    "{reason}; the upload was discarded, start again"
                )));
            }
        };
        let target = self.blob_path(upload_id);
        let dir = self.blob_dir.clone();
        blocking(move || install(&part, &target, &dir)).await?;
        let now = self.clock.now_ms();
        let rec = {
            let _c = self.collector.read().unwrap();
            let _r = self.records.lock().unwrap();
            let mut rec = self.store.blob(upload_id)?.unwrap_or_else(|| {
                let mut r = BlobRecord {
                    size: up.size,
                    mime: mime.clone(),
                    created_ms: now,
                    ..Default::default()
                };
                if let Some(s) = &summary {
                    r.width = s.width;
                    r.height = s.height;
                    r.thumbnail = s.thumbnail.clone();
                    r.thumbnail_width = s.thumbnail_width;
                    r.thumbnail_height = s.thumbnail_height;
                }
                r
            });
            if !rec.uploaders.iter().any(|u| u == user) {
                rec.uploaders.push(user.to_string());
            }
            // A new upload restarts the grace period of an unreferenced blob.
            rec.created_ms = rec.created_ms.max(now);
            self.store.commit(&[
                Mutation::Blob {
                    id: upload_id.to_string(),
                    record: Some(rec.clone()),
                },
                Mutation::BlobGrant {
                    user: user.to_string(),
                    blob: upload_id.to_string(),
                    record: Some(BlobGrantRecord {
                        size: up.size,
                        created_ms: now,
                    }),
                },
                Mutation::Upload {
                    user: user.to_string(),
                    blob: upload_id.to_string(),
                    record: None,
                },
            ])?;
            rec
        };
        self.sequencer.wrote();
        self.sequencer.barrier().await?;
        Ok(info(upload_id, &rec))
    }

    /// Reads up to `length` bytes of blob `id` from `offset`, if `user` may read it.
    pub(crate) async fn read(
        &self,
        user: &str,
        id: &str,
        offset: u64,
        length: u32,
    ) -> ServiceResult<pb::BlobChunk> {
        let rec = self.readable(user, id)?;
        let want = match length as usize {
            0 => MAX_CHUNK,
            n => n.min(MAX_CHUNK),
        };
        let n = rec.size.saturating_sub(offset).min(want as u64) as usize;
        let path = self.blob_path(id);
        let data = if n == 0 {
            Vec::new()
        } else {
            blocking(move || {
                let mut f = std::fs::File::open(&path)?;
                f.seek(SeekFrom::Start(offset))?;
                let mut buf = vec![0u8; n];
                f.read_exact(&mut buf)?;
                Ok(buf)
            })
            .await?
        };
        Ok(pb::BlobChunk {
            blob_id: id.to_string(),
            offset,
            data: data.into(),
            size: rec.size,
            mime: rec.mime,
        })
    }

    /// A signed URL path for a plain HTTP GET of blob `id`, if `user` may read it.
    pub(crate) fn url(&self, user: &str, id: &str) -> ServiceResult<pb::BlobUrl> {
        self.readable(user, id)?;
        let expires_ms = self.clock.now_ms() + self.limits.url_ttl_ms;
        let sig = hex(&self.sign(id, expires_ms));
        Ok(pb::BlobUrl {
            path: format!("/blob/{id}?e={expires_ms}&s={sig}"),
            expires_ms,
        })
    }

    fn sign(&self, id: &str, expires_ms: u64) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.url_key).expect("any key length");
        mac.update(id.as_bytes());
        mac.update(&expires_ms.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The blob a signed URL names, if the signature is right and it has not expired.
    pub(crate) fn open_signed(
        &self,
        id: &str,
        expires_ms: u64,
        sig_hex: &str,
    ) -> Option<SignedBlob> {
        check_id(id, "blob").ok()?;
        if expires_ms < self.clock.now_ms() {
            return None;
        }
        let sig = unhex(sig_hex)?;
        let mut mac = HmacSha256::new_from_slice(&self.url_key).expect("any key length");
        mac.update(id.as_bytes());
        mac.update(&expires_ms.to_be_bytes());
        mac.verify_slice(&sig).ok()?;
        let rec = self.store.blob(id).ok()??;
        Some(SignedBlob {
            path: self.blob_path(id),
            mime: rec.mime,
        })
    }

    /// The attachment a Send carries, filled in from the stored blob, with a guard that
    /// keeps the collector off until the message is committed. NOT_FOUND if the sender
    /// may not read the blob.
    pub(crate) fn attach(
        &self,
        sender: &str,
        a: &pb::Attachment,
    ) -> ServiceResult<(pb::Attachment, AttachGuard<'_>)> {
        check_name(&a.name)?;
        let guard = AttachGuard(self.collector.read().unwrap());
        let rec = self.readable(sender, &a.blob_id)?;
        Ok((
            pb::Attachment {
                blob_id: a.blob_id.clone(),
                name: a.name.clone(),
                size: rec.size,
                mime: rec.mime,
                width: rec.width,
                height: rec.height,
                thumbnail: rec.thumbnail.into(),
                thumbnail_width: rec.thumbnail_width,
                thumbnail_height: rec.thumbnail_height,
            },
            guard,
        ))
    }

    /// Checks that `user` may make blob `id` their avatar (an image they may read) and
    /// returns the guard to hold until the profile is committed.
    pub(crate) fn check_avatar(&self, user: &str, id: &str) -> ServiceResult<AttachGuard<'_>> {
        let guard = AttachGuard(self.collector.read().unwrap());
        let rec = self.readable(user, id)?;
        if rec.width == 0 {
            return Err(ServiceError::invalid(format!(
                "blob {id} is not an image ({}): an avatar must be one",
                rec.mime
            )));
        }
        Ok(guard)
    }

    /// The record of blob `id` if `user` may read it; NOT_FOUND otherwise (the same
    /// answer as for a blob that does not exist).
    fn readable(&self, user: &str, id: &str) -> ServiceResult<BlobRecord> {
        check_id(id, "blob")?;
        let missing = || ServiceError::not_found(format!("no blob {id}"));
        let rec = self.store.blob(id)?.ok_or_else(missing)?;
        if self.may_read(user, id)? {
            Ok(rec)
        } else {
            Err(missing())
        }
    }

    /// Whether `user` may read blob `id`.
    pub(crate) fn may_read(&self, user: &str, id: &str) -> ServiceResult<bool> {
        if self.has_grant(user, id)? {
            return Ok(true);
        }
        for (holder, seq) in self.store.blob_refs(id, MAX_REFS)? {
            if self.ref_is_live(id, &holder, seq)? && self.may_read_holder(user, &holder, seq)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn has_grant(&self, user: &str, id: &str) -> ServiceResult<bool> {
        Ok(self.store.blob_grant(user, id)?.is_some())
    }

    fn may_read_holder(&self, user: &str, holder: &str, seq: u64) -> ServiceResult<bool> {
        if holder.starts_with(AVATAR_HOLDER) {
            return Ok(true);
        }
        match self.convs.reader(holder, user) {
            Ok(st) => Ok(seq >= st.lock().unwrap().first_visible(user)),
            Err(e) if e.code == ErrorCode::Forbidden || e.code == ErrorCode::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether a reference still stands: the avatar is still the user's, the message still
    /// carries the blob (not recalled, not expired, not trimmed).
    fn ref_is_live(&self, id: &str, holder: &str, seq: u64) -> ServiceResult<bool> {
        if let Some(user) = holder.strip_prefix(AVATAR_HOLDER) {
            return Ok(self.store.profile(user)?.is_some_and(|p| p.avatar == id));
        }
        let now = self.clock.now_ms();
        Ok(self.store.message(holder, seq)?.is_some_and(|m| {
            !m.recalled
                && !is_expired(m.expires_ms, now)
                && m.attachment.as_ref().is_some_and(|a| a.blob_id == id)
        }))
    }

    /// Bytes of blobs `user` holds grants on.
    fn used(&self, user: &str) -> ServiceResult<u64> {
        Ok(self
            .store
            .blob_grants(user)?
            .iter()
            .map(|(_, g)| g.size)
            .sum())
    }

    fn upload_of(&self, user: &str, id: &str) -> ServiceResult<UploadRecord> {
        self.store.upload(user, id)?.ok_or_else(|| {
            ServiceError::not_found(format!(
                "no upload {id} in progress: begin it (again) with UploadBegin"
            ))
        })
    }

    /// Forgets an upload in progress and deletes its part file.
    async fn discard_upload(&self, user: &str, id: &str) -> ServiceResult<()> {
        self.store.commit(&[Mutation::Upload {
            user: user.to_string(),
            blob: id.to_string(),
            record: None,
        }])?;
        self.sequencer.wrote();
        self.sequencer.barrier().await?;
        let part = self.part_path(user, id);
        blocking(move || remove_if_present(&part)).await
    }

    /// The collector: a [`Blobs::sweep`] every half grace period (at most every 10
    /// minutes, at least every 250 ms), until `stop`.
    pub(crate) async fn run_collector(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let every =
            std::time::Duration::from_millis((self.limits.grace_ms / 2).clamp(250, 600_000));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "blob collector removed unreferenced blobs"),
                Err(e) => {
                    tracing::warn!(error = %e.message, "blob collector failed; retrying later")
                }
            }
        }
    }

    /// One pass of the collector; returns how many blobs it removed.
    pub(crate) async fn sweep(&self) -> ServiceResult<usize> {
        let now = self.clock.now_ms();
        let old = |t: u64| t.saturating_add(self.limits.grace_ms) <= now;
        for (user, id, up) in self.store.uploads()? {
            if old(up.created_ms) {
                let lock = self.upload_lock(&user, &id);
                let _g = lock.lock().await;
                self.discard_upload(&user, &id).await?;
            }
        }
        let mut removed = 0;
        let mut after = String::new();
        loop {
            let page = self.store.blobs_after(&after, 256)?;
            let Some((last, _)) = page.last() else { break };
            after = last.clone();
            for (id, rec) in page {
                if !old(rec.created_ms) {
                    continue;
                }
                if self.collect(&id).await? {
                    removed += 1;
                }
            }
        }
        self.sweep_orphan_files().await?;
        Ok(removed)
    }

    /// Removes blob `id` if nothing live references it; drops its stale references.
    async fn collect(&self, id: &str) -> ServiceResult<bool> {
        let gone = {
            let _w = self.collector.write().unwrap();
            let Some(rec) = self.store.blob(id)? else {
                return Ok(false);
            };
            let refs = self.store.blob_refs(id, MAX_REFS)?;
            let mut batch = Vec::new();
            let mut live = false;
            for (holder, seq) in refs {
                if self.ref_is_live(id, &holder, seq)? {
                    live = true;
                } else {
                    batch.push(Mutation::BlobRef {
                        blob: id.to_string(),
                        holder,
                        seq,
                        present: false,
                    });
                }
            }
            if !live {
                batch.push(Mutation::Blob {
                    id: id.to_string(),
                    record: None,
                });
                for u in &rec.uploaders {
                    batch.push(Mutation::BlobGrant {
                        user: u.clone(),
                        blob: id.to_string(),
                        record: None,
                    });
                }
            }
            if !batch.is_empty() {
                self.store.commit(&batch)?;
                self.sequencer.wrote();
            }
            !live
        };
        self.sequencer.barrier().await?;
        if gone {
            let path = self.blob_path(id);
            blocking(move || remove_if_present(&path)).await?;
        }
        Ok(gone)
    }

    /// Files no record names any more (a crash between a file operation and its commit),
    /// once older than the grace period.
    async fn sweep_orphan_files(&self) -> ServiceResult<()> {
        let grace = std::time::Duration::from_millis(self.limits.grace_ms);
        let blob_dir = self.blob_dir.clone();
        let upload_dir = self.upload_dir.clone();
        let candidates = blocking(move || {
            let mut out = Vec::new();
            let mut dirs = subdirs(&blob_dir)?;
            dirs.push(upload_dir);
            for dir in dirs {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    let age = e.metadata().and_then(|m| m.modified()).ok();
                    if age
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age >= grace)
                    {
                        out.push(e.path());
                    }
                }
            }
            Ok(out)
        })
        .await?;
        if candidates.is_empty() {
            return Ok(());
        }
        let parts: Vec<PathBuf> = self
            .store
            .uploads()?
            .iter()
            .map(|(u, id, _)| self.part_path(u, id))
            .collect();
        for path in candidates {
            let known = if path.starts_with(&self.upload_dir) {
                parts.contains(&path)
            } else {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                check_id(name, "blob").is_ok() && self.store.blob(name)?.is_some()
            };
            if !known {
                blocking(move || remove_if_present(&path)).await?;
            }
        }
        Ok(())
    }
}

/// The wire description of a stored blob.
fn info(id: &str, r: &BlobRecord) -> pb::BlobInfo {
    pb::BlobInfo {
        blob_id: id.to_string(),
        size: r.size,
        mime: r.mime.clone(),
        width: r.width,
        height: r.height,
        thumbnail: r.thumbnail.clone().into(),
        thumbnail_width: r.thumbnail_width,
        thumbnail_height: r.thumbnail_height,
    }
}

/// Checks the finished bytes: sha256, and for images the content. The type to store and
/// the image summary, or why the bytes are refused.
fn inspect(
    part: &Path,
    id: &str,
    declared: &str,
) -> std::io::Result<Result<(String, Option<image::ImageSummary>), String>> {
    let mut f = std::fs::File::open(part)?;
    let mut hasher = Sha256::new();
    let mut head = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if head.len() < 64 {
            head.extend_from_slice(&buf[..n.min(64 - head.len())]);
        }
        hasher.update(&buf[..n]);
    }
    let got = hex(&hasher.finalize());
    if got != id {
        return Ok(Err(format!(
            "sha256 mismatch: the bytes hash to {got}, the upload announced {id}"
        )));
    }
    let sniffed = image::sniff_image(&head);
    if declared.starts_with("image/") && is_inspected_image(declared) || sniffed.is_some() {
        match image::summarize_file(part) {
            Ok(s) => return Ok(Ok((s.mime.to_string(), Some(s)))),
            // The server could not read its own file: not the client's fault (INTERNAL).
            Err(image::ImageError::Io(e)) => return Err(e),
            Err(e) if declared.starts_with("image/") && is_inspected_image(declared) => {
                return Ok(Err(format!("not a usable image: {e}")))
            }
            // Announced as a file and merely looks like an image: keep it as a file.
            Err(_) => {}
        }
    }
    Ok(Ok((declared.to_string(), None)))
}

/// Image types the server decodes and thumbnails.
fn is_inspected_image(mime: &str) -> bool {
    matches!(
        mime,
        "image/png" | "image/jpeg" | "image/gif" | "image/webp"
    )
}

/// Moves a verified part file into place, durably: the file, then the directories.
fn install(part: &Path, target: &Path, blob_dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(part)?.sync_all()?;
    let dir = target.parent().expect("blob paths have a parent");
    std::fs::create_dir_all(dir)?;
    std::fs::rename(part, target)?;
    std::fs::File::open(dir)?.sync_all()?;
    std::fs::File::open(blob_dir)?.sync_all()?;
    if let Some(uploads) = part.parent() {
        std::fs::File::open(uploads)?.sync_all()?;
    }
    Ok(())
}

fn subdirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    match std::fs::read_dir(dir) {
        Ok(rd) => Ok(rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The length of a part file; 0 if it is missing (a crash before it was made).
fn part_len(path: &Path) -> ServiceResult<u64> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io_error)?;
            }
            std::fs::File::create(path).map_err(io_error)?;
            Ok(0)
        }
        Err(e) => Err(io_error(e)),
    }
}

/// Runs file work off the async threads; I/O errors become INTERNAL (logged).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> ServiceResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(io_error(e)),
        Err(_) => Err(ServiceError::internal()),
    }
}

fn io_error(e: std::io::Error) -> ServiceError {
    tracing::error!(error = %e, "blob file operation failed");
    ServiceError::internal()
}

/// A blob id: 64 lowercase hex digits.
pub(crate) fn check_id(id: &str, what: &str) -> ServiceResult<()> {
    if id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(ServiceError::invalid(format!(
            "{what} must be 64 lowercase hex digits (a sha256)"
        )))
    }
}

/// A MIME type: `type/subtype`, token characters, at most 127 bytes.
fn check_mime(mime: &str) -> ServiceResult<()> {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match mime.split_once('/') {
        Some((t, s)) if mime.len() <= 127 && token(t) && token(s) => Ok(()),
        _ => Err(ServiceError::invalid(format!(
            "mime {:?} is not a type like image/png or application/pdf",
            mime.chars().take(64).collect::<String>()
        ))),
    }
}

/// An attachment's file name: at most 255 bytes, no '/', no control characters.
fn check_name(name: &str) -> ServiceResult<()> {
    if name.len() > MAX_NAME || name.contains('/') || name.chars().any(char::is_control) {
        return Err(ServiceError::invalid(format!(
            "attachment name must be at most {MAX_NAME} bytes without '/' or control characters"
        )));
    }
    Ok(())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests;
