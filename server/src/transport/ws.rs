//! WebSocket as a transport: one binary message carries one protobuf `Frame` (no length
//! prefix). Incoming messages become the same decoded-frame stream the QUIC and TCP
//! codecs give the session; outgoing frames leave the send queue whole and go out as one
//! message each, their length prefix sliced off. The HTTP side (the upgrade, the Origin
//! check, the page) is `http::web`.

use std::io;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, Stream, StreamExt};
use prost::Message as _;
use tern_proto::codec::Decoded;
use tern_proto::{CodecError, Frame, LEN_PREFIX};

use crate::session::writer::FrameWriter;

/// WebSocket messages as decoded frames: one binary message = one Frame.
pub(crate) fn frames(
    stream: SplitStream<WebSocket>,
    max: usize,
) -> impl Stream<Item = Result<Decoded, CodecError>> + Unpin + Send {
    Box::pin(futures_util::stream::unfold(
        stream,
        move |mut s| async move {
            loop {
                let item = match s.next().await? {
                    Ok(Message::Binary(b)) => {
                        if b.len() > max {
                            Err(CodecError::FrameTooLarge { len: b.len(), max })
                        } else {
                            Ok(Frame::decode(b))
                        }
                    }
                    // Text is not a tern frame: let it fail decoding as garbage would.
                    Ok(Message::Text(t)) => Ok(Frame::decode(Bytes::copy_from_slice(t.as_bytes()))),
                    Ok(Message::Close(_)) => return None,
                    Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
                    Err(e) => Err(CodecError::Io(io::Error::other(e))),
                };
                return Some((item, s));
            }
        },
    ))
}

/// The session's frames as binary messages.
pub(crate) struct WsWriter {
    sink: SplitSink<WebSocket, Message>,
}

impl WsWriter {
    pub(crate) fn new(sink: SplitSink<WebSocket, Message>) -> Self {
        Self { sink }
    }
}

impl FrameWriter for WsWriter {
    async fn write_frames(&mut self, frames: &[Bytes]) -> io::Result<()> {
        for f in frames {
            self.sink
                .feed(Message::Binary(f.slice(LEN_PREFIX..)))
                .await
                .map_err(io::Error::other)?;
        }
        self.sink.flush().await.map_err(io::Error::other)
    }

    async fn finish(&mut self) {
        // A normal closure (1000); the reason is in the Closing frame before it.
        let _ = self
            .sink
            .send(Message::Close(Some(CloseFrame {
                code: 1000,
                reason: "session ended".into(),
            })))
            .await;
        let _ = self.sink.close().await;
    }
}
