//! Image and file messages from the command line (docs/PROTOCOL.md 9.14):
//! `tern send --file PATH`, `tern download BLOB_ID --output PATH` and
//! `tern profile set --avatar FILE`.
//!
//! The kind of a file comes from its first bytes, not its name: PNG, JPEG, GIF and WebP
//! are images (the server checks them and makes the thumbnail), PDF and ZIP are named as
//! such, anything else is `application/octet-stream`. On a terminal, a progress line on
//! stderr; in scripts, nothing but the JSON answer on stdout.

use std::collections::HashSet;
use std::future::Future;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use tern_sdk::proto::pb;
use tern_sdk::{AttachmentRef, ClientError, SendOptions};

use crate::commands::Dest;
use crate::error::Failure;
use crate::output;
use crate::session::{Ctx, Cursors, Session};

/// The MIME type of a file from its first bytes.
pub fn sniff_mime(head: &[u8]) -> &'static str {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if head.starts_with(&[0xff, 0xd8, 0xff]) {
        "image/jpeg"
    } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        "image/gif"
    } else if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        "image/webp"
    } else if head.starts_with(b"%PDF-") {
        "application/pdf"
    } else if head.starts_with(b"PK\x03\x04") {
        "application/zip"
    } else {
        "application/octet-stream"
    }
}

fn file_head(path: &Path) -> Result<(Vec<u8>, u64)> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
    let size = f.metadata()?.len();
    if size == 0 {
        return Err(Failure::usage(format!("{} is empty", path.display())));
    }
    let mut head = vec![0u8; 16];
    let n = f.read(&mut head)?;
    head.truncate(n);
    Ok((head, size))
}

/// A progress line on stderr when it is a terminal.
struct Progress {
    on: bool,
    what: String,
    last_pct: Option<u64>,
}

impl Progress {
    fn new(what: String) -> Self {
        Self {
            on: std::io::stderr().is_terminal(),
            what,
            last_pct: None,
        }
    }

    fn update(&mut self, done: u64, total: u64) {
        if !self.on || total == 0 {
            return;
        }
        let pct = done * 100 / total;
        if self.last_pct == Some(pct) {
            return;
        }
        self.last_pct = Some(pct);
        let bar = "#".repeat((pct / 4) as usize);
        let mut e = std::io::stderr();
        let _ = write!(
            e,
            "\r{} [{bar:<25}] {pct:>3}% {}/{} KiB",
            self.what,
            done / 1024,
            total / 1024
        );
        if done >= total {
            let _ = writeln!(e);
        }
        let _ = e.flush();
    }
}

/// Runs a long transfer while the session keeps reading events (no request timeout: a
/// big file takes as long as it takes; a lost connection is resumed by the SDK).
async fn transfer<T>(
    sess: &mut Session,
    fut: impl Future<Output = Result<T, ClientError>>,
    what: &str,
) -> Result<T> {
    let mut fut = std::pin::pin!(fut);
    loop {
        tokio::select! {
            biased;
            ev = sess.next_event() => { ev?; }
            r = &mut fut => return match r {
                Ok(v) => Ok(v),
                Err(ClientError::Stopped(_)) => Err(sess.stopped_error().await),
                Err(e) => Err(anyhow::Error::new(e).context(what.to_string())),
            },
        }
    }
}

/// The ack line of a file message: the usual ack plus what was stored.
#[derive(Serialize)]
struct FileAckLine<'a> {
    conv: &'a str,
    seq: u64,
    client_msg_id: &'a str,
    duplicate: bool,
    blob: &'a str,
    size: u64,
    sha256: &'a str,
}

/// `tern send (--to USER | --group GID) --file PATH [TEXT]`: uploads the file and sends
/// it as an image or file message with TEXT as its caption.
pub async fn send_file(ctx: &Ctx, dest: Dest, path: PathBuf, caption: String) -> Result<()> {
    dest.check()?;
    let (head, size) = file_head(&path)?;
    let mime = sniff_mime(&head);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    let mut progress = Progress::new(format!("uploading {name}"));
    let uploaded = transfer(
        &mut sess,
        client.upload_file(&path, mime, |d, t| progress.update(d, t)),
        &format!("cannot upload {}", path.display()),
    )
    .await;
    let info = match uploaded {
        Ok(i) => i,
        Err(e) => {
            sess.close(&HashSet::new()).await;
            return Err(e);
        }
    };
    let options = SendOptions {
        attachment: Some(AttachmentRef {
            blob_id: info.blob_id.clone(),
            name,
        }),
        ..Default::default()
    };
    let ticket = client
        .send_with_options(dest.target(), caption.into_bytes().into(), options)
        .await?;
    let id = ticket.client_msg_id.clone();
    let acked = transfer(&mut sess, ticket, "the file message was refused").await;
    let unconfirmed: HashSet<String> = if acked.is_err() {
        [id].into_iter().collect()
    } else {
        HashSet::new()
    };
    sess.close(&unconfirmed).await;
    let ack = acked?;
    output::json_line(&FileAckLine {
        conv: &ack.conversation,
        seq: ack.seq,
        client_msg_id: &ack.client_msg_id,
        duplicate: ack.duplicate,
        blob: &info.blob_id,
        size: info.size,
        sha256: &info.blob_id,
    })?;
    let _ = size;
    Ok(())
}

#[derive(Serialize)]
struct DownloadLine<'a> {
    blob: &'a str,
    size: u64,
    sha256: &'a str,
    mime: &'a str,
}

/// `tern download BLOB_ID --output PATH`: writes the file whole (sha256 checked) or not
/// at all.
pub async fn download(ctx: &Ctx, blob: String, output: PathBuf) -> Result<()> {
    if blob.len() != 64 || !blob.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Failure::usage(
            "BLOB_ID is the 64 hex digits of a blob (from a message's \"blob\" field)",
        ));
    }
    let blob = blob.to_ascii_lowercase();
    let (client, mut sess) = Session::start(ctx, Cursors::Keep, false).await?;
    let mut progress = Progress::new(format!("downloading {}", &blob[..12]));
    let r = transfer(
        &mut sess,
        client.download_to(&blob, &output, |d, t| progress.update(d, t)),
        "cannot download",
    )
    .await;
    sess.close(&HashSet::new()).await;
    let (size, mime) = r.with_context(|| format!("blob {blob} to {}", output.display()))?;
    output::json_line(&DownloadLine {
        blob: &blob,
        size,
        sha256: &blob,
        mime: &mime,
    })
}

/// `tern profile set --avatar FILE`: uploads the image and makes it the avatar; "" as
/// FILE removes the avatar.
pub async fn set_avatar(
    sess: &mut Session,
    client: &tern_sdk::Client,
    file: &str,
) -> Result<pb::Profile> {
    if file.is_empty() {
        return transfer(sess, client.set_avatar(""), "cannot remove the avatar").await;
    }
    let path = PathBuf::from(file);
    let (head, _) = file_head(&path)?;
    let mime = sniff_mime(&head);
    if !mime.starts_with("image/") {
        return Err(Failure::usage(format!(
            "{file} is not a PNG, JPEG, GIF or WebP image"
        )));
    }
    let mut progress = Progress::new("uploading avatar".into());
    let info = transfer(
        sess,
        client.upload_file(&path, mime, |d, t| progress.update(d, t)),
        &format!("cannot upload {file}"),
    )
    .await?;
    transfer(
        sess,
        client.set_avatar(&info.blob_id),
        "cannot set the avatar",
    )
    .await
}
