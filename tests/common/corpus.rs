//! Generated hostile and seed photos, shared by the hostile-input test, the fuzz corpus replay and the fuzz seed
//! script (`cargo run --example fuzz_seeds`): nothing binary is checked in.
#![allow(dead_code)]

use std::io::Cursor;

use image::{DynamicImage, ImageBuffer, ImageFormat, Rgb};

pub fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A 96x64 test card: no face, every format can hold it.
pub fn card() -> DynamicImage {
    DynamicImage::ImageRgb8(ImageBuffer::from_fn(96, 64, |x, y| Rgb([(x * 2) as u8, (y * 3) as u8, 128])))
}

pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    crc.sum()
}

pub fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A PNG whose header declares `width` x `height`, followed by a few bytes of compressed nothing.
pub fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A GIF of 36 bytes whose logical screen is `width` x `height` and whose one frame is a single pixel: decoders
/// build the whole screen.
pub fn gif_screen(width: u16, height: u16) -> Vec<u8> {
    let mut out = b"GIF89a".to_vec();
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 255, 255, 255]); // two-colour global table
    out.extend_from_slice(&[0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0]); // one 1x1 frame at the origin
    out.extend_from_slice(&[2, 2, 0x44, 0x01, 0, 0x3B]); // LZW: clear, 0, end; trailer
    out
}

/// A WebP (lossless) whose header declares `width` x `height`, up to 16384 per side.
pub fn webp_header(width: u32, height: u32) -> Vec<u8> {
    let bits = (width - 1) | ((height - 1) << 14);
    let mut vp8l = vec![0x2F];
    vp8l.extend_from_slice(&bits.to_le_bytes());
    vp8l.extend_from_slice(&[0; 8]);
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&((4 + 8 + vp8l.len()) as u32).to_le_bytes());
    out.extend_from_slice(b"WEBPVP8L");
    out.extend_from_slice(&(vp8l.len() as u32).to_le_bytes());
    out.extend_from_slice(&vp8l);
    out
}

/// A little-endian TIFF whose one IFD declares `width` x `height` grey pixels in one empty strip.
pub fn tiff_header(width: u32, height: u32) -> Vec<u8> {
    grey_tiff(width, height, 1, &[])
}

/// A little-endian TIFF of `width` x `height` 8-bit grey pixels in one strip of `strip`, compressed with
/// `compression` (1: none, 8: Deflate).
fn grey_tiff(width: u32, height: u32, compression: u32, strip: &[u8]) -> Vec<u8> {
    const ENTRIES: usize = 9;
    let entries: [(u16, u16, u32); ENTRIES] = [
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, compression),
        (262, 3, 1),
        (273, 4, (8 + 2 + ENTRIES * 12 + 4) as u32), // the strip follows the IFD
        (277, 3, 1),
        (278, 4, height),
        (279, 4, strip.len() as u32),
    ];
    let mut out = b"II*\0".to_vec();
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&(ENTRIES as u16).to_le_bytes());
    for (tag, kind, value) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&value.to_le_bytes());
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(strip);
    out
}

/// A real JPEG whose frame header is rewritten to declare `width` x `height`.
pub fn jpeg_declaring(width: u16, height: u16) -> Vec<u8> {
    let mut jpeg = encode(&card(), ImageFormat::Jpeg);
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline JPEG has SOF0");
    jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    jpeg
}

/// A JPEG with an Exif segment that lies: an IFD of 65,535 entries, offsets past the end, orientation 9999.
pub fn jpeg_absurd_exif() -> Vec<u8> {
    let jpeg = encode(&card(), ImageFormat::Jpeg);
    let mut tiff = b"II*\0\x08\0\0\0".to_vec();
    tiff.extend_from_slice(&u16::MAX.to_le_bytes());
    tiff.extend_from_slice(&[0x12, 0x01, 3, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x27, 0, 0]);
    tiff.extend_from_slice(&[0x69, 0x87, 4, 0, 1, 0, 0, 0, 0xF0, 0xFF, 0xFF, 0x7F]);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// A GIF of a thousand 64x64 frames.
pub fn gif_thousand_frames() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut out);
        let frames = (0..1000u32).map(|i| {
            let buffer = ImageBuffer::from_fn(64, 64, |x, y| image::Rgba([(x + i) as u8, y as u8, (i % 255) as u8, 255]));
            image::Frame::new(buffer)
        });
        encoder.encode_frames(frames).unwrap();
    }
    out
}

/// A zlib stream of `rows` rows of `width` bytes, every row `row(index)`, compressed as it is made (a 400 MB
/// image never exists whole).
fn zlib_rows(rows: u32, mut row: impl FnMut(u32) -> Vec<u8>) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    for y in 0..rows {
        encoder.write_all(&row(y)).unwrap();
    }
    encoder.finish().unwrap()
}

/// A mostly uniform grey PNG of `width` x `height`, a few dark specks on its first rows, compressed about a
/// thousand to one: 8000² (64 megapixels) is about 60 KB, 20000² about 400 KB.
pub fn png_uniform(width: u32, height: u32) -> Vec<u8> {
    let idat = zlib_rows(height, |y| {
        let mut row = vec![200u8; width as usize + 1];
        row[0] = 0; // filter: none
        if y < 16 {
            row[1 + (y as usize * 97) % width as usize] = 10;
        }
        row
    });
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit grey
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(&mut out, b"IDAT", &idat);
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A uniform 8000x8000 grey PNG: 64 megapixels from about 60 KB.
pub fn png_uniform_bomb() -> Vec<u8> {
    png_uniform(8000, 8000)
}

/// A uniform grey TIFF of `width` x `height` in one Deflate-compressed strip (8000² is about 64 KB).
pub fn tiff_deflate_bomb(width: u32, height: u32) -> Vec<u8> {
    grey_tiff(width, height, 8, &zlib_rows(height, |_| vec![150u8; width as usize]))
}

/// A uniform lossless WebP of `width` x `height`.
pub fn webp_uniform(width: u32, height: u32) -> Vec<u8> {
    encode(&DynamicImage::ImageRgb8(ImageBuffer::from_pixel(width, height, Rgb([90, 120, 150]))), ImageFormat::WebP)
}

/// A CMYK JPEG (as Adobe writes them, inverted) of `image`.
pub fn jpeg_cmyk(image: &DynamicImage) -> Vec<u8> {
    let rgb = image.to_rgb8();
    let cmyk: Vec<u8> = rgb
        .pixels()
        .flat_map(|p| {
            let [r, g, b] = p.0.map(|c| c as f32 / 255.0);
            let k = 1.0 - r.max(g).max(b);
            let part = |c: f32| if k >= 1.0 { 0.0 } else { (1.0 - c - k) / (1.0 - k) };
            [part(r), part(g), part(b), k].map(|v| 255 - (v * 255.0).round() as u8)
        })
        .collect();
    let mut out = Vec::new();
    let encoder = jpeg_encoder::Encoder::new(&mut out, 90);
    encoder.encode(&cmyk, rgb.width() as u16, rgb.height() as u16, jpeg_encoder::ColorType::Cmyk).unwrap();
    out
}

/// The fuzzer's seeds: the test card and a real face in every supported format, cut short, headers that declare
/// too much, small deflate bombs and a CMYK face.
pub fn seeds(face: &DynamicImage) -> Vec<(String, Vec<u8>)> {
    let face = face.resize(160, 160, image::imageops::FilterType::Triangle);
    let mut out = Vec::new();
    for (ext, format) in [
        ("jpg", ImageFormat::Jpeg),
        ("png", ImageFormat::Png),
        ("webp", ImageFormat::WebP),
        ("bmp", ImageFormat::Bmp),
        ("gif", ImageFormat::Gif),
        ("tiff", ImageFormat::Tiff),
    ] {
        let whole = encode(&face, format);
        out.push((format!("face.{ext}"), whole.clone()));
        out.push((format!("face-cut.{ext}"), whole[..whole.len() / 2].to_vec()));
        out.push((format!("card.{ext}"), encode(&card(), format)));
    }
    out.push(("png-60000.png".into(), png_header(60_000, 60_000)));
    out.push(("gif-screen.gif".into(), gif_screen(4000, 4000)));
    out.push(("webp-16384.webp".into(), webp_header(16_384, 16_384)));
    out.push(("tiff-60000.tiff".into(), tiff_header(60_000, 60_000)));
    out.push(("jpeg-60000.jpg".into(), jpeg_declaring(60_000, 60_000)));
    out.push(("exif.jpg".into(), jpeg_absurd_exif()));
    // Deflate bombs just past the fuzz target's pixel limit (2 MP), and the colour type no other seed has.
    out.push(("png-uniform-1500.png".into(), png_uniform(1500, 1500)));
    out.push(("tiff-deflate-1500.tiff".into(), tiff_deflate_bomb(1500, 1500)));
    out.push(("face-cmyk.jpg".into(), jpeg_cmyk(&face)));
    out
}
