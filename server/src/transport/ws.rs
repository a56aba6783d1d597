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
use tern_proto::pb::CloseReason;
use tern_proto::{CodecError, Frame, LEN_PREFIX};

use crate::session::writer::FrameWriter;
use crate::session::FRAME_TOO_LARGE_CLOSE;

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
                    Err(e) => Err(too_long(&e)
                        .map(|len| CodecError::FrameTooLarge { len, max })
                        .unwrap_or_else(|| CodecError::Io(io::Error::other(e)))),
                };
                return Some((item, s));
            }
        },
    ))
}

/// The size of a message the WebSocket layer refused as over its limit (before reading
/// it), if that is what `e` is.
fn too_long(e: &axum::Error) -> Option<usize> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = src {
        if let Some(tungstenite::Error::Capacity(
            tungstenite::error::CapacityError::MessageTooLong { size, .. },
        )) = err.downcast_ref::<tungstenite::Error>()
        {
            return Some(*size);
        }
        src = err.source();
    }
    None
}

/// The WebSocket close code for how the session ended: 1009 (message too big) after a
/// frame over the limit, 1002 (protocol error) for other protocol errors, 1001 (going
/// away) when the server shuts down, else 1000 (normal).
fn close_code(reason: Option<CloseReason>, message: &str) -> u16 {
    match reason {
        Some(CloseReason::ProtocolError) if message == FRAME_TOO_LARGE_CLOSE => 1009,
        Some(CloseReason::ProtocolError) => 1002,
        Some(CloseReason::Shutdown) => 1001,
        _ => 1000,
    }
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

    async fn finish(&mut self, closing: Option<(CloseReason, &str)>) {
        // The reason is in the Closing frame before it; the code says it to the browser.
        let (reason, message) = match closing {
            Some((r, m)) => (Some(r), m),
            None => (None, "session ended"),
        };
        let _ = self
            .sink
            .send(Message::Close(Some(CloseFrame {
                code: close_code(reason, message),
                reason: message.chars().take(100).collect::<String>().into(),
            })))
            .await;
        let _ = self.sink.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_say_why() {
        assert_eq!(
            close_code(Some(CloseReason::ProtocolError), FRAME_TOO_LARGE_CLOSE),
            1009
        );
        assert_eq!(
            close_code(Some(CloseReason::ProtocolError), "garbage"),
            1002
        );
        assert_eq!(close_code(Some(CloseReason::Shutdown), "bye"), 1001);
        assert_eq!(close_code(Some(CloseReason::LoggedOut), "bye"), 1000);
        assert_eq!(close_code(None, "session ended"), 1000);
    }
}
