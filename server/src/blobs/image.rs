//! What an uploaded image is, how big it is, and a small JPEG thumbnail of it, made from
//! bytes the server does not trust.
//!
//! - [`sniff_image`]: the type from the magic numbers of the first bytes (PNG, JPEG, GIF,
//!   WebP), or `None`: "is this an image at all".
//! - [`summarize_file`] / [`summarize_bytes`]: decode within strict limits and make the
//!   thumbnail. Blocking and CPU-bound: callers run them in `spawn_blocking`.
//!
//! Hostile input is bounded before any pixel is decoded: the decoder is built over the
//! header only, and its dimensions are checked against [`MAX_SIDE`] and [`MAX_PIXELS`]
//! ([`ImageError::TooLarge`]); the decoded buffer must fit in [`MAX_DECODE_BYTES`], which is
//! also given to the decoder as `image::Limits::max_alloc` together with the side limits.
//! So the work and the memory of one call are bounded by 40 megapixels whatever the file
//! claims (about 0.3-1.5 s of one core in a release build for the worst cases); and past
//! one megapixel the file must have a byte per [`MAX_PIXELS_PER_BYTE`] pixels, so that a
//! tiny file cannot buy that much work. Truncated or malformed data is
//! [`ImageError::Corrupt`]; a JPEG must reach its end-of-image marker.
//!
//! The thumbnail: the first frame of an animated GIF or WebP (the default image of an
//! APNG), scaled down with its aspect ratio kept so that its longest side is at most
//! [`THUMBNAIL_MAX_SIDE`] (never scaled up; each side at least 1 px), alpha flattened onto
//! white, encoded as baseline JPEG at quality [`THUMBNAIL_QUALITY`]. The EXIF orientation
//! of a JPEG is not applied: the thumbnail has the stored pixel orientation, as does
//! `width` x `height`. Color profiles (ICC) are not applied either.

use std::fs::File;
use std::io::{BufRead, BufReader, Cursor, Seek};
use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::error::{LimitErrorKind, UnsupportedErrorKind};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

/// Longest side of a thumbnail, in pixels.
pub const THUMBNAIL_MAX_SIDE: u32 = 320;
/// JPEG quality of thumbnails.
pub(crate) const THUMBNAIL_QUALITY: u8 = 70;
/// Longest side of an image the server decodes, in pixels.
pub(crate) const MAX_SIDE: u32 = 16_384;
/// Most pixels (width x height) of an image the server decodes: 40 megapixels.
pub(crate) const MAX_PIXELS: u64 = 40_000_000;
/// Most bytes the decoder may allocate at once (the decoded pixels included).
pub(crate) const MAX_DECODE_BYTES: u64 = 256 * 1024 * 1024;
/// Pixels an image may have whatever its size in bytes: cheap to decode (tens of ms).
pub(crate) const FREE_PIXELS: u64 = 1 << 20;
/// Past [`FREE_PIXELS`], most pixels per byte of the file. Decompression bombs claim far
/// more: a 35-byte GIF can declare a 40-megapixel canvas, which costs a second or more of
/// CPU to fill and scale. Real images are far below: a flat-colour 40-megapixel RGBA PNG
/// compressed as hard as deflate can is about 150 KB (~260 pixels per byte), a photo
/// several bits per pixel.
pub(crate) const MAX_PIXELS_PER_BYTE: u64 = 1024;

/// What the server learned from an uploaded image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSummary {
    /// "image/png" | "image/jpeg" | "image/gif" | "image/webp"
    pub mime: &'static str,
    pub width: u32,
    pub height: u32,
    /// JPEG (quality [`THUMBNAIL_QUALITY`]), longest side <= [`THUMBNAIL_MAX_SIDE`],
    /// never upscaled.
    pub thumbnail: Vec<u8>,
    pub thumbnail_width: u32,
    pub thumbnail_height: u32,
}

/// Why an upload is not a usable image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The first bytes are not those of a PNG, JPEG, GIF or WebP file.
    #[error("not a PNG, JPEG, GIF or WebP image")]
    NotAnImage,
    /// An image of a known type using something the decoder does not handle (a color
    /// type, a codec feature).
    #[error("unsupported image: {0}")]
    Unsupported(&'static str),
    /// The header claims more than [`MAX_SIDE`] on a side or [`MAX_PIXELS`] in all, or its
    /// pixels would need more than [`MAX_DECODE_BYTES`], or (past [`FREE_PIXELS`]) more
    /// than [`MAX_PIXELS_PER_BYTE`] pixels per byte of the file. Nothing was decoded.
    #[error("image too large: {width}x{height}")]
    TooLarge { width: u32, height: u32 },
    /// Truncated or malformed data.
    #[error("corrupt image: {0}")]
    Corrupt(String),
    /// Reading the file failed (not the client's fault).
    #[error("reading the image file: {0}")]
    Io(#[from] std::io::Error),
}

/// The image type from the first bytes (magic numbers), or `None`. Needs at most the first
/// 12 bytes.
pub fn sniff_image(prefix: &[u8]) -> Option<&'static str> {
    Some(format_of(prefix)?.1)
}

fn format_of(prefix: &[u8]) -> Option<(ImageFormat, &'static str)> {
    if prefix.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some((ImageFormat::Png, "image/png"))
    } else if prefix.starts_with(b"\xff\xd8\xff") {
        Some((ImageFormat::Jpeg, "image/jpeg"))
    } else if prefix.starts_with(b"GIF87a") || prefix.starts_with(b"GIF89a") {
        Some((ImageFormat::Gif, "image/gif"))
    } else if prefix.len() >= 12 && &prefix[..4] == b"RIFF" && &prefix[8..12] == b"WEBP" {
        Some((ImageFormat::WebP, "image/webp"))
    } else {
        None
    }
}

/// Decodes the image file at `path` (already fully written and verified) within strict
/// limits and makes the thumbnail. Blocking.
pub(crate) fn summarize_file(path: &Path) -> Result<ImageSummary, ImageError> {
    let mut file = BufReader::new(File::open(path)?);
    let prefix = file.fill_buf()?;
    // fill_buf returns at least 12 bytes of any file that has them (the buffer is 8 KiB
    // and the first read of a regular file is not short).
    let format = format_of(prefix).ok_or(ImageError::NotAnImage)?;
    if format.0 == ImageFormat::Jpeg {
        // The JPEG decoder reads the whole file into memory anyway, and the completeness
        // check needs all of it.
        drop(file);
        let bytes = std::fs::read(path)?;
        check_complete_jpeg(&bytes)?;
        return summarize(Cursor::new(&bytes[..]), bytes.len() as u64, format, true);
    }
    let len = file.get_ref().metadata()?.len();
    summarize(file, len, format, true)
}

/// [`summarize_file`] over bytes in memory.
pub fn summarize_bytes(bytes: &[u8]) -> Result<ImageSummary, ImageError> {
    let format = format_of(bytes).ok_or(ImageError::NotAnImage)?;
    if format.0 == ImageFormat::Jpeg {
        check_complete_jpeg(bytes)?;
    }
    summarize(Cursor::new(bytes), bytes.len() as u64, format, false)
}

/// A JPEG must reach its end-of-image marker. The JPEG decoder is lenient: it decodes a
/// truncated file as if the missing part were grey, which would accept a broken upload.
/// This walks the marker segments (skipping their declared lengths, and each scan's
/// entropy-coded data up to the next marker) until EOI; stray bytes between segments are
/// skipped as the decoder does. A linear pass over the bytes; it decodes nothing.
fn check_complete_jpeg(bytes: &[u8]) -> Result<(), ImageError> {
    let truncated = || ImageError::Corrupt("truncated: no end-of-image marker".into());
    let mut i = 2; // after SOI
    loop {
        // The next marker: an 0xFF (after any fill bytes or stray bytes) and its code.
        while bytes.get(i).is_some_and(|&b| b != 0xFF) {
            i += 1;
        }
        while bytes.get(i) == Some(&0xFF) {
            i += 1;
        }
        let marker = *bytes.get(i).ok_or_else(truncated)?;
        i += 1;
        match marker {
            0xD9 => return Ok(()),
            // Standalone markers: SOI, RSTn, TEM; 0x00 is a stuffed byte (stray data).
            0x00 | 0x01 | 0xD0..=0xD8 => {}
            _ => {
                let len = bytes.get(i..i + 2).ok_or_else(truncated)?;
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                if len < 2 {
                    return Err(ImageError::Corrupt(format!(
                        "marker {marker:#04x} with length {len}"
                    )));
                }
                i += len;
                if i > bytes.len() {
                    return Err(truncated());
                }
                if marker == 0xDA {
                    // Entropy-coded data: 0xFF is followed by 0x00 (a stuffed byte) or a
                    // restart marker inside it; any other code ends it.
                    loop {
                        match bytes.get(i..i + 2).ok_or_else(truncated)? {
                            [0xFF, 0x00 | 0xD0..=0xD7 | 0xFF] => i += 1,
                            [0xFF, _] => break,
                            _ => i += 1,
                        }
                    }
                }
            }
        }
    }
}

fn summarize<R: BufRead + Seek>(
    reader: R,
    len: u64,
    (format, mime): (ImageFormat, &'static str),
    from_file: bool,
) -> Result<ImageSummary, ImageError> {
    let io_error = |e: image::ImageError| convert(e, None, from_file);
    let mut reader = ImageReader::with_format(reader, format);
    // Header pass: only the allocation limit (it bounds what parsing the header may
    // allocate), so that an image over the side limit still tells its dimensions.
    let mut header_limits = Limits::default();
    header_limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(header_limits);
    let mut decoder = reader.into_decoder().map_err(io_error)?;
    let (width, height) = decoder.dimensions();
    let dims = Some((width, height));
    if width == 0 || height == 0 {
        return Err(ImageError::Corrupt(format!("empty image {width}x{height}")));
    }
    let pixels = u64::from(width) * u64::from(height);
    if width > MAX_SIDE
        || height > MAX_SIDE
        || pixels > MAX_PIXELS
        || pixels > FREE_PIXELS.max(len.saturating_mul(MAX_PIXELS_PER_BYTE))
    {
        return Err(ImageError::TooLarge { width, height });
    }
    let buffer = decoder.total_bytes();
    if buffer > MAX_DECODE_BYTES {
        return Err(ImageError::TooLarge { width, height });
    }
    // The strict side limits, and what the decoder may allocate beside the pixel buffer
    // (as `ImageReader::decode` does).
    decoder
        .set_limits(limits(MAX_DECODE_BYTES - buffer))
        .map_err(|e| convert(e, dims, from_file))?;
    let image = DynamicImage::from_decoder(decoder).map_err(|e| convert(e, dims, from_file))?;
    let (thumbnail_width, thumbnail_height) = thumbnail_size(width, height);
    let thumbnail = thumbnail_jpeg(&image, thumbnail_width, thumbnail_height)?;
    Ok(ImageSummary {
        mime,
        width,
        height,
        thumbnail,
        thumbnail_width,
        thumbnail_height,
    })
}

fn limits(max_alloc: u64) -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(max_alloc);
    limits
}

/// The thumbnail's size: the longest side scaled to [`THUMBNAIL_MAX_SIDE`] if it is
/// longer, the other in proportion (rounded, at least 1).
fn thumbnail_size(width: u32, height: u32) -> (u32, u32) {
    let longest = width.max(height);
    if longest <= THUMBNAIL_MAX_SIDE {
        return (width, height);
    }
    let scale = |side: u32| -> u32 {
        let scaled = (u64::from(side) * u64::from(THUMBNAIL_MAX_SIDE) + u64::from(longest) / 2)
            / u64::from(longest);
        // <= THUMBNAIL_MAX_SIDE since side <= longest.
        (scaled as u32).max(1)
    };
    (scale(width), scale(height))
}

/// Scales, flattens onto white and encodes as JPEG.
fn thumbnail_jpeg(image: &DynamicImage, width: u32, height: u32) -> Result<Vec<u8>, ImageError> {
    // Scale first (in the image's own pixel type), so that the conversions below copy only
    // the small image.
    let small = if (width, height) == (image.width(), image.height()) {
        image.to_rgba8()
    } else {
        image.thumbnail_exact(width, height).to_rgba8()
    };
    let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
    for p in small.pixels() {
        let [r, g, b, a] = p.0;
        let a = u32::from(a);
        for c in [r, g, b] {
            // c * a + white * (1 - a), rounded; <= 255.
            rgb.push(((u32::from(c) * a + 255 * (255 - a) + 127) / 255) as u8);
        }
    }
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, THUMBNAIL_QUALITY)
        .encode(&rgb, width, height, image::ExtendedColorType::Rgb8)
        .map_err(|e| ImageError::Corrupt(format!("encoding the thumbnail: {e}")))?;
    Ok(out)
}

/// The one place a decoder error becomes an [`ImageError`]. `dims` are the header's
/// dimensions when known.
fn convert(e: image::ImageError, dims: Option<(u32, u32)>, from_file: bool) -> ImageError {
    match e {
        image::ImageError::Limits(l) => match l.kind() {
            LimitErrorKind::DimensionError | LimitErrorKind::InsufficientMemory => {
                match dims {
                    Some((width, height)) => ImageError::TooLarge { width, height },
                    // Refused while reading the header (e.g. a PNG's IHDR over the side
                    // limit): the dimensions never reached us.
                    None => ImageError::TooLarge {
                        width: 0,
                        height: 0,
                    },
                }
            }
            _ => ImageError::Unsupported("a decoding limit"),
        },
        image::ImageError::Unsupported(u) => ImageError::Unsupported(match u.kind() {
            UnsupportedErrorKind::Color(_) | UnsupportedErrorKind::ColorLayout(_) => {
                "its color type"
            }
            UnsupportedErrorKind::ColorspaceCicp(_) => "its color space",
            UnsupportedErrorKind::Format(_) => "its format",
            _ => "a feature of its format",
        }),
        image::ImageError::IoError(io) if from_file && !is_eof(&io) => ImageError::Io(io),
        image::ImageError::IoError(io) => ImageError::Corrupt(format!("truncated: {io}")),
        e @ (image::ImageError::Decoding(_)
        | image::ImageError::Parameter(_)
        | image::ImageError::Encoding(_)) => ImageError::Corrupt(e.to_string()),
    }
}

fn is_eof(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::UnexpectedEof
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::codecs::gif::{GifEncoder, Repeat};
    use image::codecs::png::PngEncoder;
    use image::codecs::webp::WebPEncoder;
    use image::{Delay, Frame, ImageEncoder, Rgb, RgbImage, Rgba, RgbaImage};

    fn png(img: &RgbaImage) -> Vec<u8> {
        let mut out = Vec::new();
        PngEncoder::new(&mut out)
            .write_image(
                img.as_raw(),
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgba8,
            )
            .unwrap();
        out
    }

    fn jpeg(img: &RgbImage) -> Vec<u8> {
        let mut out = Vec::new();
        JpegEncoder::new_with_quality(&mut out, 90)
            .write_image(
                img.as_raw(),
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        out
    }

    /// The decoded thumbnail, checked to be a JPEG of the announced size.
    fn thumb(s: &ImageSummary) -> RgbImage {
        assert_eq!(sniff_image(&s.thumbnail), Some("image/jpeg"));
        let t = image::load_from_memory_with_format(&s.thumbnail, ImageFormat::Jpeg)
            .unwrap()
            .to_rgb8();
        assert_eq!(t.dimensions(), (s.thumbnail_width, s.thumbnail_height));
        assert!(s.thumbnail_width.max(s.thumbnail_height) <= THUMBNAIL_MAX_SIDE);
        t
    }

    fn near(a: Rgb<u8>, b: [u8; 3]) -> bool {
        a.0.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 12)
    }

    #[test]
    fn sniffs_the_four_types_and_nothing_else() {
        assert_eq!(sniff_image(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
        assert_eq!(sniff_image(b"\xff\xd8\xff\xe0"), Some("image/jpeg"));
        assert_eq!(sniff_image(b"GIF89a..."), Some("image/gif"));
        assert_eq!(sniff_image(b"GIF87a"), Some("image/gif"));
        assert_eq!(sniff_image(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff_image(b"RIFF\0\0\0\0WAVEfmt "), None);
        assert_eq!(sniff_image(b"\x89PNG"), None, "a prefix too short to tell");
        assert_eq!(sniff_image(b""), None);
        assert_eq!(sniff_image(b"%PDF-1.7"), None);
        assert_eq!(sniff_image(b"BM\0\0"), None, "BMP is not accepted");
    }

    #[test]
    fn png_with_alpha_is_scaled_down_and_flattened_onto_white() {
        // Left half opaque red, right half fully transparent (some color under it).
        let img = RgbaImage::from_fn(800, 400, |x, _| {
            if x < 400 {
                Rgba([255, 0, 0, 255])
            } else {
                Rgba([0, 0, 255, 0])
            }
        });
        let s = summarize_bytes(&png(&img)).unwrap();
        assert_eq!((s.mime, s.width, s.height), ("image/png", 800, 400));
        assert_eq!((s.thumbnail_width, s.thumbnail_height), (320, 160));
        let t = thumb(&s);
        assert!(
            near(*t.get_pixel(40, 80), [255, 0, 0]),
            "{:?}",
            t.get_pixel(40, 80)
        );
        assert!(
            near(*t.get_pixel(280, 80), [255, 255, 255]),
            "{:?}",
            t.get_pixel(280, 80)
        );
    }

    #[test]
    fn jpeg_portrait_keeps_its_aspect_ratio() {
        let img = RgbImage::from_fn(300, 1000, |_, y| {
            if y < 500 {
                Rgb([0, 200, 0])
            } else {
                Rgb([0, 0, 0])
            }
        });
        let s = summarize_bytes(&jpeg(&img)).unwrap();
        assert_eq!((s.mime, s.width, s.height), ("image/jpeg", 300, 1000));
        assert_eq!((s.thumbnail_width, s.thumbnail_height), (96, 320));
        let t = thumb(&s);
        assert!(
            near(*t.get_pixel(48, 40), [0, 200, 0]),
            "{:?}",
            t.get_pixel(48, 40)
        );
        assert!(
            near(*t.get_pixel(48, 280), [0, 0, 0]),
            "{:?}",
            t.get_pixel(48, 280)
        );
    }

    #[test]
    fn animated_gif_gives_its_first_frame() {
        let frame = |c: [u8; 4]| {
            Frame::from_parts(
                RgbaImage::from_pixel(64, 48, Rgba(c)),
                0,
                0,
                Delay::from_numer_denom_ms(100, 1),
            )
        };
        let mut out = Vec::new();
        {
            let mut enc = GifEncoder::new(&mut out);
            enc.set_repeat(Repeat::Infinite).unwrap();
            enc.encode_frames([frame([0, 0, 255, 255]), frame([255, 255, 0, 255])])
                .unwrap();
        }
        let s = summarize_bytes(&out).unwrap();
        assert_eq!((s.mime, s.width, s.height), ("image/gif", 64, 48));
        assert_eq!(
            (s.thumbnail_width, s.thumbnail_height),
            (64, 48),
            "never upscaled"
        );
        let t = thumb(&s);
        assert!(
            near(*t.get_pixel(32, 24), [0, 0, 255]),
            "{:?}",
            t.get_pixel(32, 24)
        );
    }

    #[test]
    fn webp_lossless() {
        let img = RgbaImage::from_pixel(500, 100, Rgba([10, 20, 30, 255]));
        let mut out = Vec::new();
        WebPEncoder::new_lossless(&mut out)
            .write_image(img.as_raw(), 500, 100, image::ExtendedColorType::Rgba8)
            .unwrap();
        let s = summarize_bytes(&out).unwrap();
        assert_eq!((s.mime, s.width, s.height), ("image/webp", 500, 100));
        assert_eq!((s.thumbnail_width, s.thumbnail_height), (320, 64));
        let t = thumb(&s);
        assert!(
            near(*t.get_pixel(100, 30), [10, 20, 30]),
            "{:?}",
            t.get_pixel(100, 30)
        );
    }

    #[test]
    fn tiny_1x1() {
        let s = summarize_bytes(&png(&RgbaImage::from_pixel(1, 1, Rgba([0, 0, 0, 255])))).unwrap();
        assert_eq!((s.width, s.height), (1, 1));
        assert_eq!((s.thumbnail_width, s.thumbnail_height), (1, 1));
        assert!(near(*thumb(&s).get_pixel(0, 0), [0, 0, 0]));
    }

    #[test]
    fn very_wide_image_gets_a_thumbnail_at_least_1px_high() {
        let s = summarize_bytes(&png(&RgbaImage::from_pixel(
            10_000,
            1,
            Rgba([9, 9, 9, 255]),
        )))
        .unwrap();
        assert_eq!((s.width, s.height), (10_000, 1));
        assert_eq!((s.thumbnail_width, s.thumbnail_height), (320, 1));
        thumb(&s);
        assert_eq!(thumbnail_size(1, 10_000), (1, 320));
        assert_eq!(thumbnail_size(16_384, 2_441), (320, 48));
        assert_eq!(thumbnail_size(320, 320), (320, 320));
        assert_eq!(thumbnail_size(321, 321), (320, 320));
    }

    #[test]
    fn truncated_files_are_corrupt() {
        let full = png(&RgbaImage::from_fn(200, 200, |x, y| {
            Rgba([x as u8, y as u8, (x ^ y) as u8, 255])
        }));
        for cut in [8, 20, 33, 60, full.len() / 2, full.len() - 13] {
            match summarize_bytes(&full[..cut]) {
                Err(ImageError::Corrupt(_)) => {}
                other => panic!("PNG cut at {cut} of {}: {other:?}", full.len()),
            }
        }
        // The JPEG decoder alone would fill a cut-off scan with grey and succeed.
        let full = jpeg(&RgbImage::from_fn(64, 64, |x, y| {
            Rgb([x as u8 * 4, y as u8 * 4, 7])
        }));
        for cut in [3, 10, 40, full.len() / 2, full.len() - 2] {
            match summarize_bytes(&full[..cut]) {
                Err(ImageError::Corrupt(_)) => {}
                other => panic!("JPEG cut at {cut} of {}: {other:?}", full.len()),
            }
        }
        // Data after the end-of-image marker (as in "motion photos") is no harm.
        let mut trailing = full.clone();
        trailing.extend_from_slice(b"\xff\xd8 appended video or whatever");
        assert_eq!(summarize_bytes(&trailing).unwrap().width, 64);

        let mut gif = Vec::new();
        GifEncoder::new(&mut gif)
            .encode_frame(Frame::new(RgbaImage::from_fn(100, 100, |x, y| {
                Rgba([x as u8, y as u8, 0, 255])
            })))
            .unwrap();
        for cut in [6, 13, 30, gif.len() / 2] {
            match summarize_bytes(&gif[..cut]) {
                Err(ImageError::Corrupt(_)) => {}
                other => panic!("GIF cut at {cut} of {}: {other:?}", gif.len()),
            }
        }
        let mut webp = Vec::new();
        WebPEncoder::new_lossless(&mut webp)
            .write_image(
                RgbaImage::from_fn(100, 100, |x, y| Rgba([x as u8, y as u8, 0, 255])).as_raw(),
                100,
                100,
                image::ExtendedColorType::Rgba8,
            )
            .unwrap();
        for cut in [12, 20, 30, webp.len() / 2, webp.len() - 1] {
            match summarize_bytes(&webp[..cut]) {
                Err(ImageError::Corrupt(_)) => {}
                other => panic!("WebP cut at {cut} of {}: {other:?}", webp.len()),
            }
        }
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A PNG signature + an IHDR (8-bit RGBA) with a correct CRC + a few bytes of IDAT.
    fn png_claiming(width: u32, height: u32) -> Vec<u8> {
        png_claiming_padded(width, height, 0)
    }

    /// [`png_claiming`] with an ancillary chunk of `padding` bytes before the IDAT (so the
    /// file is big enough for its pixel count).
    fn png_claiming_padded(width: u32, height: u32, padding: usize) -> Vec<u8> {
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut chunk = |kind: &[u8], data: &[u8]| {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let mut body = kind.to_vec();
            body.extend_from_slice(data);
            out.extend_from_slice(&body);
            out.extend_from_slice(&crc32(&body).to_be_bytes());
        };
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
        chunk(b"IHDR", &ihdr);
        if padding > 0 {
            chunk(b"teSt", &vec![0; padding]);
        }
        chunk(b"IDAT", &[0x78, 0x9c, 0x63, 0, 0, 0, 1, 0, 1]);
        chunk(b"IEND", &[]);
        out
    }

    #[test]
    fn crc32_is_the_png_one() {
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
    }

    #[test]
    fn huge_claimed_dimensions_are_refused_before_decoding() {
        assert!(matches!(
            summarize_bytes(&png_claiming(100_000, 100_000)),
            Err(ImageError::TooLarge {
                width: 100_000,
                height: 100_000
            })
        ));
        // Within the side limit but 16384 x 16384 = 268 megapixels.
        match summarize_bytes(&png_claiming(16_384, 16_384)) {
            Err(ImageError::TooLarge { width, height }) => {
                assert_eq!((width, height), (16_384, 16_384))
            }
            other => panic!("{other:?}"),
        }
        // 40 megapixels exactly pass the size checks (with 40 KB of file: 1000 pixels
        // a byte), then the data is missing.
        assert!(matches!(
            summarize_bytes(&png_claiming_padded(10_000, 4_000, 40_000)),
            Err(ImageError::Corrupt(_))
        ));
        // The same claim from a 70-byte file: a decompression bomb, refused unread.
        assert!(matches!(
            summarize_bytes(&png_claiming(10_000, 4_000)),
            Err(ImageError::TooLarge {
                width: 10_000,
                height: 4_000
            })
        ));
        // A 35-byte GIF whose one 1x1 frame sits on a 6324 x 6324 canvas.
        let mut gif = b"GIF89a".to_vec();
        gif.extend_from_slice(&6324u16.to_le_bytes());
        gif.extend_from_slice(&6324u16.to_le_bytes());
        gif.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 255, 255, 255]);
        gif.extend_from_slice(&[0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 2, 0x4C, 0x01, 0, 0x3B]);
        assert!(matches!(
            summarize_bytes(&gif),
            Err(ImageError::TooLarge {
                width: 6324,
                height: 6324
            })
        ));
        // Up to a megapixel, any size of file is accepted.
        let mut small = gif.clone();
        small[6..10].copy_from_slice(&[0, 4, 0, 4]); // 1024 x 1024
        let s = summarize_bytes(&small).unwrap();
        assert_eq!((s.width, s.height, s.thumbnail_width), (1024, 1024, 320));
        assert!(matches!(
            summarize_bytes(&png_claiming(10_000, 4_001)),
            Err(ImageError::TooLarge {
                width: 10_000,
                height: 4_001
            })
        ));
    }

    #[test]
    fn random_bytes_are_refused() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        };
        for len in [0, 1, 7, 64, 4096] {
            let bytes: Vec<u8> = (0..len).map(|_| next()).collect();
            assert!(matches!(
                summarize_bytes(&bytes),
                Err(ImageError::NotAnImage)
            ));
            // Random bytes behind each magic number: refused, not a panic.
            for magic in [
                &b"\x89PNG\r\n\x1a\n"[..],
                b"\xff\xd8\xff",
                b"GIF89a",
                b"RIFF\xff\0\0\0WEBP",
            ] {
                let mut b = magic.to_vec();
                b.extend_from_slice(&bytes);
                assert!(
                    summarize_bytes(&b).is_err(),
                    "{magic:?} + {len} random bytes"
                );
            }
        }
        assert!(matches!(
            summarize_bytes(b"hello"),
            Err(ImageError::NotAnImage)
        ));
    }

    #[test]
    fn from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upload");
        std::fs::write(
            &path,
            png(&RgbaImage::from_pixel(640, 480, Rgba([0, 0, 0, 128]))),
        )
        .unwrap();
        let s = summarize_file(&path).unwrap();
        assert_eq!(s, summarize_bytes(&std::fs::read(&path).unwrap()).unwrap());
        assert_eq!((s.thumbnail_width, s.thumbnail_height), (320, 240));
        // Half-transparent black on white: mid grey.
        assert!(near(*thumb(&s).get_pixel(10, 10), [128, 128, 128]));

        // A JPEG file: read whole and checked for completeness as from bytes.
        let full = jpeg(&RgbImage::from_pixel(400, 100, Rgb([200, 100, 0])));
        std::fs::write(&path, &full).unwrap();
        let s = summarize_file(&path).unwrap();
        assert_eq!(
            (s.mime, s.thumbnail_width, s.thumbnail_height),
            ("image/jpeg", 320, 80)
        );
        std::fs::write(&path, &full[..full.len() - 100]).unwrap();
        assert!(matches!(summarize_file(&path), Err(ImageError::Corrupt(_))));

        std::fs::write(&path, b"text, not an image").unwrap();
        assert!(matches!(summarize_file(&path), Err(ImageError::NotAnImage)));
        std::fs::write(&path, png_claiming(20_000, 20_000)).unwrap();
        assert!(matches!(
            summarize_file(&path),
            Err(ImageError::TooLarge { .. })
        ));
        assert!(matches!(
            summarize_file(&dir.path().join("missing")),
            Err(ImageError::Io(_))
        ));
    }
}
