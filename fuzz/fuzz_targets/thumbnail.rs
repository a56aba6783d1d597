//! Uploaded images (server/src/blobs/image.rs): `summarize_bytes` over arbitrary bytes
//! never panics, stays within the decode limits (libFuzzer's -rss_limit_mb and
//! -malloc_limit_mb catch an allocation past them), and whatever it accepts is consistent:
//! the type is the sniffed one, the sizes are within the limits, and the thumbnail is a
//! JPEG no larger than the image and no longer than THUMBNAIL_MAX_SIDE on either side.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_server::fuzzing::{sniff_image, summarize_bytes, ImageError, THUMBNAIL_MAX_SIDE};

fuzz_target!(|data: &[u8]| {
    let sniffed = sniff_image(data);
    match summarize_bytes(data) {
        Ok(s) => {
            assert_eq!(Some(s.mime), sniffed);
            assert!(s.width >= 1 && s.height >= 1 && s.width <= 16_384 && s.height <= 16_384);
            assert!(u64::from(s.width) * u64::from(s.height) <= 40_000_000);
            assert!(s.thumbnail_width >= 1 && s.thumbnail_height >= 1);
            assert!(s.thumbnail_width <= s.width && s.thumbnail_height <= s.height);
            assert!(s.thumbnail_width.max(s.thumbnail_height) <= THUMBNAIL_MAX_SIDE);
            assert_eq!(sniff_image(&s.thumbnail), Some("image/jpeg"));
        }
        Err(ImageError::NotAnImage) => assert_eq!(sniffed, None),
        Err(ImageError::Io(e)) => panic!("I/O error from bytes in memory: {e}"),
        Err(_) => assert!(sniffed.is_some()),
    }
});
