//! Photo decoding: format sniffing, size limits checked from the header before the pixels are decoded
//! (decompression bombs), a memory budget shared by concurrent decodes, EXIF orientation, and conversion of every
//! colour type to 8-bit RGB.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("photo is empty")]
    Empty,
    #[error("photo is {bytes} bytes, over the limit of {limit}")]
    TooManyBytes { bytes: usize, limit: usize },
    #[error("photo format is not supported (supported: jpeg, png, webp, bmp, gif, tiff)")]
    UnsupportedFormat,
    #[error("photo is {width}x{height}, over the limit of {limit} pixels per side")]
    DimensionTooLarge { width: u32, height: u32, limit: u32 },
    #[error("photo is {width}x{height} = {pixels} pixels, over the limit of {limit}")]
    TooManyPixels { width: u32, height: u32, pixels: u64, limit: u64 },
    #[error("photo is {width}x{height}, too small to hold a face")]
    TooSmall { width: u32, height: u32 },
    #[error("photo is {width}x{height}: decoding it takes {bytes} bytes, over the decode budget of {budget}")]
    OverBudget { width: u32, height: u32, bytes: u64, budget: u64 },
    #[error("photo decoding is busy: other photos hold the decode budget; retry shortly")]
    Busy,
    #[error("photo is cut short ({format:?} without its end marker)")]
    Truncated { format: ImageFormat },
    #[error("photo cannot be decoded ({format:?})")]
    Corrupt {
        format: ImageFormat,
        #[source]
        source: image::ImageError,
    },
}

impl DecodeError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty_photo",
            DecodeError::TooManyBytes { .. } => "photo_too_large",
            DecodeError::UnsupportedFormat => "unsupported_format",
            DecodeError::DimensionTooLarge { .. } | DecodeError::TooManyPixels { .. } | DecodeError::OverBudget { .. } => {
                "photo_too_many_pixels"
            }
            DecodeError::Busy => "overloaded",
            DecodeError::TooSmall { .. } => "photo_too_small",
            DecodeError::Truncated { .. } | DecodeError::Corrupt { .. } => "corrupt_photo",
        }
    }
}

/// Limits applied before decoding. Defaults: 25 MiB, 12,000 px per side, 80 megapixels, at least 32 px per side,
/// 512 MiB of decoded pixels across concurrent decodes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeLimits {
    /// Largest accepted file, in bytes (default 25 MiB).
    pub max_bytes: usize,
    /// Largest accepted width or height (default 12,000).
    pub max_dimension: u32,
    /// Largest accepted width × height (default 80,000,000).
    pub max_pixels: u64,
    /// Smallest accepted width or height (default 32).
    pub min_dimension: u32,
    /// Bytes of decoded pixels all photos being analysed may hold together (default 512 MiB). A photo's share is
    /// its pixel count times the bytes per pixel of its decoded buffer plus its RGB copy; a photo whose share alone
    /// is larger is refused, others wait for room (see [`DecodeBudget`]).
    pub budget_bytes: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_bytes: 25 << 20, max_dimension: 12_000, max_pixels: 80_000_000, min_dimension: 32, budget_bytes: 512 << 20 }
    }
}

/// How long a decode waits for its share of the budget before the request is refused as busy.
const BUDGET_WAIT: Duration = Duration::from_secs(30);

/// Bytes of decoded pixels shared by every decode of a pipeline, so that many small files that each declare tens of
/// megapixels (a 35-byte GIF, a 10 KB PNG) cannot together take gigabytes: each waits for its share. A photo keeps
/// its share until it is dropped, that is for its whole analysis.
#[derive(Debug)]
pub struct DecodeBudget {
    total: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

impl DecodeBudget {
    pub fn new(total: u64) -> Arc<DecodeBudget> {
        Arc::new(DecodeBudget { total: total.max(1), used: Mutex::new(0), freed: Condvar::new() })
    }

    /// Bytes held now.
    pub fn in_use(&self) -> u64 {
        *self.used.lock()
    }

    fn acquire(self: &Arc<Self>, bytes: u64, wait: Duration) -> Option<BudgetShare> {
        let deadline = std::time::Instant::now() + wait;
        let mut used = self.used.lock();
        while *used + bytes > self.total {
            if self.freed.wait_until(&mut used, deadline).timed_out() && *used + bytes > self.total {
                return None;
            }
        }
        *used += bytes;
        Some(BudgetShare { budget: self.clone(), bytes })
    }
}

/// A photo's share of the decode budget, given back when the photo is dropped.
#[derive(Debug)]
pub struct BudgetShare {
    budget: Arc<DecodeBudget>,
    bytes: u64,
}

impl Drop for BudgetShare {
    fn drop(&mut self) {
        *self.budget.used.lock() -= self.bytes;
        self.budget.freed.notify_all();
    }
}

/// A decoded photo, upright, 8-bit RGB, with the sha256 of the bytes it came from (for audit and de-duplication).
#[derive(Debug, Clone)]
pub struct Photo {
    pub image: RgbImage,
    pub format: ImageFormat,
    pub sha256: String,
    /// Its share of the decode budget, when decoded within one.
    pub share: Option<Arc<BudgetShare>>,
}

impl Photo {
    pub fn width(&self) -> u32 {
        self.image.width()
    }
    pub fn height(&self) -> u32 {
        self.image.height()
    }
}

/// Decodes a photo from its encoded bytes, outside any budget (tools, tests, benchmarks).
pub fn decode_photo(bytes: &[u8], limits: &DecodeLimits) -> Result<Photo, DecodeError> {
    decode_photo_within(bytes, limits, None)
}

/// Decodes a photo, first taking its share of `budget` (the service's decodes).
pub fn decode_photo_within(bytes: &[u8], limits: &DecodeLimits, budget: Option<&Arc<DecodeBudget>>) -> Result<Photo, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(DecodeError::TooManyBytes { bytes: bytes.len(), limit: limits.max_bytes });
    }
    let format = image::guess_format(bytes).map_err(|_| DecodeError::UnsupportedFormat)?;
    if !matches!(
        format,
        ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Bmp | ImageFormat::Gif | ImageFormat::Tiff
    ) {
        return Err(DecodeError::UnsupportedFormat);
    }
    // JPEG decoders fill a cut-off scan with grey and call it a photo; a search of half a face is not one.
    if format == ImageFormat::Jpeg && !bytes.windows(2).any(|w| w == [0xFF, 0xD9]) {
        return Err(DecodeError::Truncated { format });
    }
    let corrupt = |source| DecodeError::Corrupt { format, source };
    let reader = || {
        let mut r = ImageReader::with_format(Cursor::new(bytes), format);
        let mut l = image::Limits::default();
        l.max_image_width = Some(limits.max_dimension);
        l.max_image_height = Some(limits.max_dimension);
        // RGBA at 16 bits is the widest buffer a decoder builds; anything beyond that, or beyond the whole budget,
        // is not a photo we accept.
        l.max_alloc = Some(limits.max_pixels.saturating_mul(8).min(limits.budget_bytes.max(1 << 20)));
        r.limits(l);
        r
    };
    // The header alone gives the size; refuse before a single pixel is decoded.
    let mut decoder = reader().into_decoder().map_err(|e| match e {
        image::ImageError::Limits(_) => DecodeError::DimensionTooLarge { width: 0, height: 0, limit: limits.max_dimension },
        other => corrupt(other),
    })?;
    let (width, height) = decoder.dimensions();
    check_size(width, height, limits)?;
    let orientation = decoder.orientation().map_err(corrupt)?;
    // The decoder's own buffer, its turned copy when EXIF says to turn it, and the RGB copy made from that: the
    // most this photo holds at once.
    let turned = u64::from(orientation != image::metadata::Orientation::NoTransforms);
    let cost = width as u64 * height as u64 * (decoder.color_type().bytes_per_pixel() as u64 * (1 + turned) + 3);
    if cost > limits.budget_bytes {
        return Err(DecodeError::OverBudget { width, height, bytes: cost, budget: limits.budget_bytes });
    }
    let share = match budget {
        Some(budget) => Some(Arc::new(budget.acquire(cost, BUDGET_WAIT).ok_or(DecodeError::Busy)?)),
        None => None,
    };
    let mut image = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    image.apply_orientation(orientation);
    let image = match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageLuma8(gray) => gray_to_rgb(&gray),
        other => other.to_rgb8(),
    };
    Ok(Photo { image, format, sha256: sha256_hex(bytes), share })
}

/// Lower-case hex sha256 of photo bytes: how photos are named in the gallery and the audit trail.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Grey to RGB by repeating each sample. `DynamicImage::to_rgb8` goes through the generic colour-space path,
/// which costs as much as decoding a small grayscale JPEG (LFW is all grayscale).
fn gray_to_rgb(gray: &image::GrayImage) -> RgbImage {
    let mut rgb = Vec::with_capacity(gray.as_raw().len() * 3);
    rgb.extend(gray.as_raw().iter().flat_map(|&g| [g, g, g]));
    RgbImage::from_raw(gray.width(), gray.height(), rgb).expect("three samples per grey pixel by construction")
}

fn check_size(width: u32, height: u32, limits: &DecodeLimits) -> Result<(), DecodeError> {
    if width > limits.max_dimension || height > limits.max_dimension {
        return Err(DecodeError::DimensionTooLarge { width, height, limit: limits.max_dimension });
    }
    let pixels = width as u64 * height as u64;
    if pixels > limits.max_pixels {
        return Err(DecodeError::TooManyPixels { width, height, pixels, limit: limits.max_pixels });
    }
    if width < limits.min_dimension || height < limits.min_dimension {
        return Err(DecodeError::TooSmall { width, height });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, Rgb};

    /// A 64x48 test card: red left half, blue right half, a green square top-left so orientation is visible.
    fn card() -> RgbImage {
        ImageBuffer::from_fn(64, 48, |x, y| {
            if x < 8 && y < 8 {
                Rgb([0, 255, 0])
            } else if x < 32 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        })
    }

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn close(a: &Rgb<u8>, b: [u8; 3], tol: i32) -> bool {
        a.0.iter().zip(b).all(|(x, y)| (*x as i32 - y as i32).abs() <= tol)
    }

    #[test]
    fn every_supported_format_decodes_to_rgb() {
        let img = DynamicImage::ImageRgb8(card());
        for (format, tol) in [
            (ImageFormat::Png, 0),
            (ImageFormat::Bmp, 0),
            (ImageFormat::Tiff, 0),
            (ImageFormat::WebP, 0),
            (ImageFormat::Gif, 8),
            (ImageFormat::Jpeg, 40),
        ] {
            let photo = decode_photo(&encode(&img, format), &DecodeLimits::default()).unwrap();
            assert_eq!(photo.format, format);
            assert_eq!((photo.width(), photo.height()), (64, 48), "{format:?}");
            assert!(close(photo.image.get_pixel(2, 2), [0, 255, 0], tol), "{format:?}");
            assert!(close(photo.image.get_pixel(20, 30), [255, 0, 0], tol), "{format:?}");
            assert!(close(photo.image.get_pixel(50, 30), [0, 0, 255], tol), "{format:?}");
        }
    }

    #[test]
    fn grayscale_and_sixteen_bit_become_rgb8() {
        let gray = DynamicImage::ImageLuma8(ImageBuffer::from_fn(40, 40, |x, _| Luma([(x * 6) as u8])));
        let photo = decode_photo(&encode(&gray, ImageFormat::Png), &DecodeLimits::default()).unwrap();
        assert_eq!(photo.image.get_pixel(10, 3).0, [60, 60, 60]);
        let deep = DynamicImage::ImageRgb16(ImageBuffer::from_fn(40, 40, |_, _| Rgb([65535u16, 32896, 0])));
        let photo = decode_photo(&encode(&deep, ImageFormat::Png), &DecodeLimits::default()).unwrap();
        assert_eq!(photo.image.get_pixel(5, 5).0, [255, 128, 0]);
    }

    #[test]
    fn exif_orientation_is_applied() {
        let jpeg = encode(&DynamicImage::ImageRgb8(card()), ImageFormat::Jpeg);
        // Insert an APP1 Exif segment right after SOI: little-endian TIFF, one IFD entry, Orientation (0x0112) = 6
        // ("rotate 90° clockwise to display").
        let mut tiff = b"II*\0\x08\0\0\0".to_vec();
        tiff.extend_from_slice(&1u16.to_le_bytes());
        tiff.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0]);
        tiff.extend_from_slice(&0u32.to_le_bytes());
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut bytes = jpeg[..2].to_vec();
        bytes.extend_from_slice(&[0xFF, 0xE1]);
        bytes.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        bytes.extend_from_slice(&app1);
        bytes.extend_from_slice(&jpeg[2..]);
        let photo = decode_photo(&bytes, &DecodeLimits::default()).unwrap();
        assert_eq!((photo.width(), photo.height()), (48, 64));
        // The green corner moves from top-left to top-right after a clockwise quarter turn.
        assert!(close(photo.image.get_pixel(44, 2), [0, 255, 0], 40));
        assert!(!close(photo.image.get_pixel(2, 2), [0, 255, 0], 40));
    }

    #[test]
    fn limits_are_checked_from_the_header() {
        let img = DynamicImage::ImageRgb8(card());
        let png = encode(&img, ImageFormat::Png);
        let tight = DecodeLimits { max_dimension: 50, ..DecodeLimits::default() };
        assert_eq!(decode_photo(&png, &tight).unwrap_err().code(), "photo_too_many_pixels");
        let few = DecodeLimits { max_pixels: 1000, ..DecodeLimits::default() };
        assert!(matches!(decode_photo(&png, &few), Err(DecodeError::TooManyPixels { pixels: 3072, .. })));
        let small = DecodeLimits { max_bytes: 10, ..DecodeLimits::default() };
        assert_eq!(decode_photo(&png, &small).unwrap_err().code(), "photo_too_large");
        let tiny = DynamicImage::ImageRgb8(ImageBuffer::new(8, 8));
        assert_eq!(decode_photo(&encode(&tiny, ImageFormat::Png), &DecodeLimits::default()).unwrap_err().code(), "photo_too_small");
    }

    #[test]
    fn a_png_bomb_header_is_refused_without_decoding() {
        // A valid PNG signature and IHDR claiming 100,000 x 100,000 pixels, followed by nothing.
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        bytes.extend_from_slice(&13u32.to_be_bytes());
        bytes.extend_from_slice(&ihdr);
        let crc = crc32(&ihdr);
        bytes.extend_from_slice(&crc.to_be_bytes());
        let err = decode_photo(&bytes, &DecodeLimits::default()).unwrap_err();
        assert_eq!(err.code(), "photo_too_many_pixels", "{err:?}");
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    #[test]
    fn garbage_and_truncation_are_typed_errors() {
        assert_eq!(decode_photo(b"", &DecodeLimits::default()).unwrap_err().code(), "empty_photo");
        assert_eq!(decode_photo(b"hello, this is text", &DecodeLimits::default()).unwrap_err().code(), "unsupported_format");
        let png = encode(&DynamicImage::ImageRgb8(card()), ImageFormat::Png);
        let cut = &png[..png.len() / 2];
        assert_eq!(decode_photo(cut, &DecodeLimits::default()).unwrap_err().code(), "corrupt_photo");
        // A JPEG cut in its scan decodes to grey without complaint; it is refused for its missing end marker.
        let jpeg = encode(&DynamicImage::ImageRgb8(card()), ImageFormat::Jpeg);
        assert!(decode_photo(&jpeg, &DecodeLimits::default()).is_ok());
        let cut = decode_photo(&jpeg[..jpeg.len() / 2], &DecodeLimits::default()).unwrap_err();
        assert!(matches!(cut, DecodeError::Truncated { format: ImageFormat::Jpeg }), "{cut}");
    }

    #[test]
    fn a_photo_holds_its_share_of_the_budget_until_dropped() {
        let png = encode(&DynamicImage::ImageRgb8(card()), ImageFormat::Png);
        // 64x48 RGB: 3 bytes decoded + 3 for the copy.
        let cost = 64 * 48 * 6;
        let budget = DecodeBudget::new(cost + 10);
        let limits = DecodeLimits::default();
        let first = decode_photo_within(&png, &limits, Some(&budget)).unwrap();
        assert_eq!(budget.in_use(), cost);
        assert!(budget.acquire(cost, Duration::from_millis(10)).is_none(), "no room for a second photo");
        drop(first);
        assert_eq!(budget.in_use(), 0);
        let second = decode_photo_within(&png, &limits, Some(&budget)).unwrap();
        assert_eq!(budget.in_use(), cost);
        drop(second);
        let small = DecodeLimits { budget_bytes: cost - 1, ..limits };
        assert!(matches!(decode_photo(&png, &small), Err(DecodeError::OverBudget { bytes, .. }) if bytes == cost));
    }

    #[test]
    fn sha256_names_the_bytes() {
        let png = encode(&DynamicImage::ImageRgb8(card()), ImageFormat::Png);
        let a = decode_photo(&png, &DecodeLimits::default()).unwrap();
        assert_eq!(a.sha256, hex::encode(Sha256::digest(&png)));
    }
}
