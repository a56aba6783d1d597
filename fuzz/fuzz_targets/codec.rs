//! The frame codec over arbitrary bytes: never panics, never allocates past the maximum,
//! and every frame it decodes re-encodes to an equal frame.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tern_proto::{decode_frame, encode_frame};

fuzz_target!(|data: &[u8]| {
    const MAX: usize = 64 * 1024;
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match decode_frame(&mut buf, MAX) {
            Ok(Some(Ok(frame))) => {
                let wire = encode_frame(&frame);
                let mut again = BytesMut::from(&wire[..]);
                let back = decode_frame(&mut again, usize::MAX)
                    .expect("re-encoded frame has a valid length")
                    .expect("whole frame")
                    .expect("re-encoded frame decodes");
                assert_eq!(back, frame);
                assert!(again.is_empty());
            }
            Ok(Some(Err(_))) => {}
            Ok(None) | Err(_) => break,
        }
        assert!(buf.len() < before, "progress on every decoded frame");
        assert!(buf.capacity() <= data.len().max(MAX + 4) * 2, "no allocation past the cap");
    }
});
