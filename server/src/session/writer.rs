//! The session's writer task: drains the send queue into the transport, many frames per
//! write, and on finish writes what is left plus the last frame (the Closing).
//!
//! The queue holds whole encoded frames (length prefix included). A [`FrameWriter`] puts
//! a batch of them on its transport: a byte stream writes them as they are
//! ([`StreamWriter`], TCP and QUIC); a message transport sends each frame without its
//! prefix as one message (the WebSocket writer in `transport::ws`).

use std::future::Future;
use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tern_proto::pb::CloseReason;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::delivery::send_queue::SendQueue;

/// Writes at most this many bytes per write call when draining the queue.
pub(crate) const WRITE_BATCH: usize = 64 * 1024;

/// A transport's output side, one batch of encoded frames at a time.
pub trait FrameWriter: Send + 'static {
    /// Writes the frames (each with its length prefix), in order, and flushes.
    fn write_frames(&mut self, frames: &[Bytes]) -> impl Future<Output = io::Result<()>> + Send;
    /// Ends the transport's output (after the last frame); `closing` is why the session
    /// ended when it sent a Closing (a message transport may say it in its own close).
    fn finish(&mut self, closing: Option<(CloseReason, &str)>) -> impl Future<Output = ()> + Send;
    /// The queue ran empty: give back buffers an idle connection need not hold.
    fn idle(&mut self) {}
}

/// A byte stream (TLS over TCP, a QUIC stream, an in-memory pipe): frames go out as they
/// are, concatenated.
pub struct StreamWriter<W> {
    inner: W,
    /// Allocated only while there is something to write: an idle connection holds no
    /// write buffer.
    buf: BytesMut,
}

impl<W> StreamWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
        }
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> FrameWriter for StreamWriter<W> {
    async fn write_frames(&mut self, frames: &[Bytes]) -> io::Result<()> {
        match frames {
            [] => {}
            // The common case of one frame: write the shared bytes as they are.
            [one] => self.inner.write_all(one).await?,
            many => {
                for f in many {
                    self.buf.extend_from_slice(f);
                }
                let r = self.inner.write_all(&self.buf).await;
                self.buf.clear();
                r?;
            }
        }
        self.inner.flush().await
    }

    async fn finish(&mut self, _closing: Option<(CloseReason, &str)>) {
        let _ = self.inner.shutdown().await;
    }

    fn idle(&mut self) {
        self.buf = BytesMut::new();
    }
}

/// The Closing frame a session ends with, and why.
pub(crate) struct LastFrame {
    pub frame: Bytes,
    pub reason: CloseReason,
    pub message: String,
}

/// Drains `queue` into `w` until `finish` fires; then writes what is queued and the last
/// frame, and ends the transport. When it returns, the queue refuses further frames.
pub(crate) async fn write_loop<W: FrameWriter>(
    mut w: W,
    queue: Arc<SendQueue>,
    mut finish: oneshot::Receiver<Option<LastFrame>>,
) {
    let mut batch: Vec<Bytes> = Vec::new();
    let mut closing: Option<LastFrame> = None;
    loop {
        tokio::select! {
            biased;
            first = queue.pop() => {
                let mut bytes = first.len();
                batch.push(first);
                while bytes < WRITE_BATCH {
                    match queue.try_pop() {
                        Some(b) => {
                            bytes += b.len();
                            batch.push(b);
                        }
                        None => break,
                    }
                }
                let written = w.write_frames(&batch).await;
                batch.clear();
                if queue.is_empty() {
                    batch = Vec::new();
                    w.idle();
                }
                if written.is_err() {
                    break;
                }
            }
            last = &mut finish => {
                while let Some(b) = queue.try_pop() {
                    batch.push(b);
                }
                if let Ok(Some(last)) = last {
                    batch.push(last.frame.clone());
                    closing = Some(last);
                }
                let _ = w.write_frames(&batch).await;
                break;
            }
        }
    }
    queue.close();
    w.finish(closing.as_ref().map(|l| (l.reason, l.message.as_str())))
        .await;
}
