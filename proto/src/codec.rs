//! Length-prefixed frames: a 4-byte big-endian payload length, then the protobuf `Frame`.
//!
//! [`decode_frame`] is a pure function over a byte buffer: `Ok(None)` means "need more
//! bytes". The length is checked against the maximum before anything is allocated for the
//! payload, so a hostile prefix (say 2^32-1) costs nothing but an error.
//!
//! A payload that is not valid protobuf does not break framing (its length was known), so
//! the decoder yields it as `Ok(Some(Err(..)))` and the connection can carry on; only a
//! frame that is too large or truncated by EOF is a stream error.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

use crate::{Frame, LEN_PREFIX};

/// Errors after which the byte stream can no longer be trusted.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("connection ended in the middle of a frame ({have} of {need} bytes)")]
    Truncated { have: usize, need: usize },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Result of decoding one payload: a frame, or the reason its bytes are not a Frame.
pub type Decoded = Result<Frame, prost::DecodeError>;

/// Takes one whole frame off the front of `buf`, if there is one.
///
/// - `Ok(None)`: not enough bytes yet; nothing consumed.
/// - `Ok(Some(Ok(frame)))`: one frame consumed.
/// - `Ok(Some(Err(e)))`: one frame's bytes consumed, but they are not a valid `Frame`.
/// - `Err(FrameTooLarge)`: the length prefix exceeds `max`; nothing allocated.
pub fn decode_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Decoded>, CodecError> {
    let Some(payload) = split_frame(buf, max)? else {
        return Ok(None);
    };
    Ok(Some(Frame::decode(payload)))
}

/// Splits one length-prefixed payload off `buf` without decoding it.
pub fn split_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, CodecError> {
    if buf.len() < LEN_PREFIX {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max {
        return Err(CodecError::FrameTooLarge { len, max });
    }
    if buf.len() < LEN_PREFIX + len {
        // Reserve only up to the announced (and already bounded) size.
        buf.reserve(LEN_PREFIX + len - buf.len());
        return Ok(None);
    }
    buf.advance(LEN_PREFIX);
    Ok(Some(buf.split_to(len).freeze()))
}

/// Encodes a frame with its length prefix, ready to be written (or shared among many
/// connections: the `Bytes` clone is a reference count).
pub fn encode_frame(frame: &Frame) -> Bytes {
    let len = frame.encoded_len();
    let mut out = BytesMut::with_capacity(LEN_PREFIX + len);
    out.put_u32(len as u32);
    frame
        .encode(&mut out)
        .expect("BytesMut grows, so encoding cannot run out of space");
    out.freeze()
}

/// An empty read buffer bigger than this is dropped rather than kept for the next frame.
const RELEASE_EMPTY_BUFFER_OVER: usize = 16 * 1024;

/// `tokio_util` codec: decodes [`Decoded`] items and writes pre-encoded frames
/// (the output of [`encode_frame`]) as they are.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max: usize,
}

impl FrameCodec {
    pub fn new(max_frame: usize) -> Self {
        Self { max: max_frame }
    }
}

impl tokio_util::codec::Decoder for FrameCodec {
    type Item = Decoded;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        let frame = decode_frame(src, self.max)?;
        if src.is_empty() && src.capacity() > RELEASE_EMPTY_BUFFER_OVER {
            // A burst or a big frame grew the buffer; an idle connection should not keep it.
            *src = BytesMut::new();
        }
        Ok(frame)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        match self.decode(buf)? {
            Some(item) => Ok(Some(item)),
            None if buf.is_empty() => Ok(None),
            None => {
                let need = if buf.len() >= LEN_PREFIX {
                    LEN_PREFIX + u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize
                } else {
                    LEN_PREFIX
                };
                Err(CodecError::Truncated {
                    have: buf.len(),
                    need,
                })
            }
        }
    }
}

impl tokio_util::codec::Encoder<Bytes> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), Self::Error> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{pb, Body};
    use tokio_util::codec::Decoder;

    fn ping(req_id: u64) -> Frame {
        Frame {
            req_id,
            body: Some(Body::Ping(pb::Ping { client_time_ms: 7 })),
        }
    }

    #[test]
    fn an_emptied_big_read_buffer_is_released_a_small_one_kept() {
        let mut codec = FrameCodec::new(1 << 20);
        let big = Frame {
            req_id: 1,
            body: Some(Body::Send(pb::Send {
                body: vec![7u8; 40_000].into(),
                ..Default::default()
            })),
        };
        let mut buf = BytesMut::from(&encode_frame(&big)[..]);
        let got = codec.decode(&mut buf).unwrap().unwrap().unwrap();
        assert_eq!(got, big);
        assert_eq!(
            buf.capacity(),
            0,
            "idle connections must not keep a 40 KB buffer"
        );

        let mut small = BytesMut::with_capacity(256);
        small.extend_from_slice(&encode_frame(&ping(2)));
        codec.decode(&mut small).unwrap().unwrap().unwrap();
        assert!(small.capacity() > 0, "a small buffer is reused");
    }

    #[test]
    fn round_trip_one_byte_at_a_time() {
        let wire = encode_frame(&ping(42));
        let mut buf = BytesMut::new();
        for (i, b) in wire.iter().enumerate() {
            let got = decode_frame(&mut buf, 1024).unwrap();
            assert!(got.is_none(), "decoded early at byte {i}");
            buf.put_u8(*b);
        }
        let frame = decode_frame(&mut buf, 1024).unwrap().unwrap().unwrap();
        assert_eq!(frame, ping(42));
        assert!(buf.is_empty());
    }

    #[test]
    fn two_frames_in_one_buffer() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&encode_frame(&ping(1)));
        buf.extend_from_slice(&encode_frame(&ping(2)));
        assert_eq!(
            decode_frame(&mut buf, 1024)
                .unwrap()
                .unwrap()
                .unwrap()
                .req_id,
            1
        );
        assert_eq!(
            decode_frame(&mut buf, 1024)
                .unwrap()
                .unwrap()
                .unwrap()
                .req_id,
            2
        );
        assert!(decode_frame(&mut buf, 1024).unwrap().is_none());
    }

    #[test]
    fn oversized_prefix_is_rejected_without_allocating() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        let cap_before = buf.capacity();
        match decode_frame(&mut buf, 1024) {
            Err(CodecError::FrameTooLarge { len, max }) => {
                assert_eq!(len, u32::MAX as usize);
                assert_eq!(max, 1024);
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        assert_eq!(buf.capacity(), cap_before);
    }

    #[test]
    fn zero_length_frame_is_an_empty_frame() {
        // A zero-length payload is a valid (empty) protobuf message: a Frame with no body.
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
        let frame = decode_frame(&mut buf, 1024).unwrap().unwrap().unwrap();
        assert_eq!(frame.body, None);
    }

    #[test]
    fn garbage_payload_keeps_framing() {
        let mut buf = BytesMut::new();
        buf.put_u32(3);
        buf.extend_from_slice(&[0xff, 0xff, 0xff]);
        buf.extend_from_slice(&encode_frame(&ping(9)));
        assert!(decode_frame(&mut buf, 1024).unwrap().unwrap().is_err());
        assert_eq!(
            decode_frame(&mut buf, 1024)
                .unwrap()
                .unwrap()
                .unwrap()
                .req_id,
            9
        );
    }

    #[test]
    fn eof_mid_frame_is_truncated() {
        use tokio_util::codec::Decoder;
        let wire = encode_frame(&ping(5));
        let mut buf = BytesMut::from(&wire[..wire.len() - 1]);
        let mut codec = FrameCodec::new(1024);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(CodecError::Truncated { .. })
        ));
    }
}
