//! A job's photos as they arrive: uploaded photos checked by their first bytes, zip archives unpacked member by
//! member into the job's folder. A bad member is refused with a reason code and the rest go on; only the job's own
//! caps (photos, bytes) refuse the whole submission.
//!
//! Zip bombs: a member's size in the archive's directory is whatever its author wrote, so the cap counts the bytes
//! actually written while extracting: a member is cut off as `too_large` past the photo byte limit, or past
//! `max_compression_ratio` times its compressed size (photos barely compress; a bomb compresses a thousandfold).

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use crate::gallery::NewJobPhoto;

use super::ServiceError;

/// Bytes a member may expand to before its compression ratio is checked: small files compress arbitrarily well
/// without being a danger.
const RATIO_GRACE_BYTES: u64 = 1 << 20;

/// What the edge wrote into the job's folder, in the order it came.
#[derive(Debug, Clone, PartialEq)]
pub enum StagedPart {
    /// A `photo` part stored as `file`.
    Photo { name: String, file: String },
    /// An `archive` part stored as `file`.
    Archive { name: String, file: String },
    /// A part refused while it arrived (over the photo byte limit).
    Refused { name: String, code: String, message: String },
}

/// The caps of one job's intake.
#[derive(Debug, Clone, Copy)]
pub struct IntakeLimits {
    pub max_photo_bytes: u64,
    pub max_compression_ratio: u64,
    pub max_photos: usize,
    pub max_bytes: u64,
}

/// What the first bytes of a file say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    Image,
    Archive,
    Other,
}

/// JPEG, PNG, GIF, BMP, WebP and TIFF are photos; zip, gzip, 7z, rar, bzip2 and xz are archives.
pub fn sniff(head: &[u8]) -> Sniffed {
    let starts = |magic: &[u8]| head.starts_with(magic);
    if starts(b"\xFF\xD8\xFF")
        || starts(b"\x89PNG\r\n\x1a\n")
        || starts(b"GIF87a")
        || starts(b"GIF89a")
        || starts(b"BM")
        || (starts(b"RIFF") && head.get(8..12) == Some(b"WEBP"))
        || starts(b"II*\0")
        || starts(b"MM\0*")
    {
        Sniffed::Image
    } else if starts(b"PK\x03\x04") || starts(b"PK\x05\x06") || starts(b"\x1f\x8b") || starts(b"7z\xBC\xAF\x27\x1C")
        || starts(b"Rar!") || starts(b"BZh") || starts(b"\xFD7zXZ\0")
    {
        Sniffed::Archive
    } else {
        Sniffed::Other
    }
}

/// Whether a member's name announces an archive, whatever its bytes.
fn archive_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".zip", ".jar", ".tar", ".gz", ".tgz", ".7z", ".rar", ".bz2", ".xz", ".zst"].iter().any(|ext| lower.ends_with(ext))
}

/// Whether a member's name stays inside the folder it is unpacked to: relative, no `..`, no drive or root.
pub fn safe_member_name(name: &str) -> bool {
    let escapes = name.is_empty()
        || name.starts_with(['/', '\\'])
        || name.contains('\0')
        || name.split(['/', '\\']).any(|part| part == "..")
        || (name.len() >= 2 && name.as_bytes()[1] == b':');
    !escapes
}

fn refusal(name: &str, code: &str, message: impl Into<String>) -> NewJobPhoto {
    NewJobPhoto { name: name.to_owned(), file: None, refusal: Some((code.to_owned(), message.into())) }
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> ServiceError {
    move |source| ServiceError::JobFiles { context, source }
}

/// Turns the staged parts into the job's photos: archives unpacked into `folder` (and then deleted), every file
/// checked by its first bytes.
pub fn expand(folder: &Path, parts: Vec<StagedPart>, limits: IntakeLimits) -> Result<Vec<NewJobPhoto>, ServiceError> {
    let mut photos = Vec::new();
    let mut bytes = 0u64;
    let mut extracted = 0usize;
    for part in parts {
        match part {
            StagedPart::Refused { name, code, message } => photos.push(refusal(&name, &code, message)),
            StagedPart::Photo { name, file } => {
                let path = folder.join(&file);
                let mut head = [0u8; 16];
                let read = File::open(&path).and_then(|mut f| f.read(&mut head)).map_err(io("read an uploaded photo"))?;
                bytes += std::fs::metadata(&path).map_err(io("read an uploaded photo"))?.len();
                match sniff(&head[..read]) {
                    Sniffed::Image => photos.push(NewJobPhoto { name, file: Some(file), refusal: None }),
                    found => {
                        std::fs::remove_file(&path).map_err(io("remove a refused photo"))?;
                        let (code, message) = match found {
                            Sniffed::Archive => ("nested_archive", "an archive sent as a photo: send it as `archive`"),
                            _ => ("not_an_image", "not a JPEG, PNG, GIF, BMP, WebP or TIFF photo"),
                        };
                        photos.push(refusal(&name, code, message));
                    }
                }
            }
            StagedPart::Archive { name, file } => {
                let path = folder.join(&file);
                unpack(folder, &path, &name, limits, &mut photos, &mut bytes, &mut extracted)?;
                std::fs::remove_file(&path).map_err(io("remove an unpacked archive"))?;
            }
        }
        if photos.len() > limits.max_photos {
            return Err(ServiceError::JobTooLarge { what: "photos", limit: limits.max_photos as u64 });
        }
        if bytes > limits.max_bytes {
            return Err(ServiceError::JobTooLarge { what: "bytes", limit: limits.max_bytes });
        }
    }
    Ok(photos)
}

fn unpack(
    folder: &Path,
    path: &Path,
    archive_name_sent: &str,
    limits: IntakeLimits,
    photos: &mut Vec<NewJobPhoto>,
    bytes: &mut u64,
    extracted: &mut usize,
) -> Result<(), ServiceError> {
    let file = File::open(path).map_err(io("open an uploaded archive"))?;
    let mut archive = match zip::ZipArchive::new(file) {
        Ok(archive) => archive,
        Err(e) => {
            photos.push(refusal(archive_name_sent, "unreadable", format!("not a readable zip archive: {e}")));
            return Ok(());
        }
    };
    // The directory alone may list millions of members: refuse before walking them.
    if archive.len() > limits.max_photos.saturating_mul(2) + 1_000 {
        return Err(ServiceError::JobTooLarge { what: "photos", limit: limits.max_photos as u64 });
    }
    for index in 0..archive.len() {
        if photos.len() > limits.max_photos || *bytes > limits.max_bytes {
            break;
        }
        let mut member = match archive.by_index(index) {
            Ok(member) => member,
            Err(e) => {
                photos.push(refusal(&format!("{archive_name_sent}#{index}"), "unreadable", format!("member {index}: {e}")));
                continue;
            }
        };
        let name = match member.name() {
            Ok(name) => name.into_owned(),
            Err(e) => {
                photos.push(refusal(&format!("{archive_name_sent}#{index}"), "unreadable", format!("member {index}: {e}")));
                continue;
            }
        };
        if member.is_dir() {
            continue;
        }
        if !safe_member_name(&name) || member.enclosed_name().is_none() {
            photos.push(refusal(&name, "unsafe_path", "member name leaves the archive's folder (absolute or `..`)"));
            continue;
        }
        if archive_name(&name) {
            photos.push(refusal(&name, "nested_archive", "archives inside the archive are not opened"));
            continue;
        }
        *extracted += 1;
        let stored = format!("m{}", *extracted);
        let target = folder.join(&stored);
        let cap = limits
            .max_photo_bytes
            .min(member.compressed_size().max(1).saturating_mul(limits.max_compression_ratio).max(RATIO_GRACE_BYTES));
        let written = copy_capped(&mut member, &target, cap);
        let refused = match written {
            Ok(Copied { bytes: n, over: false, head }) => {
                *bytes += n;
                match sniff(&head) {
                    Sniffed::Image => None,
                    Sniffed::Archive => Some(("nested_archive", "archives inside the archive are not opened".to_owned())),
                    Sniffed::Other => Some(("not_an_image", "not a JPEG, PNG, GIF, BMP, WebP or TIFF photo".to_owned())),
                }
            }
            Ok(Copied { over: true, .. }) => Some((
                "too_large",
                format!(
                    "expands past {} bytes (the photo limit, or {}× its compressed size)",
                    cap, limits.max_compression_ratio
                ),
            )),
            Err(CopyError::Write(source)) => return Err(ServiceError::JobFiles { context: "write an archive member", source }),
            Err(CopyError::Read(e)) => Some(("unreadable", format!("cannot be read: {e}"))),
        };
        match refused {
            None => photos.push(NewJobPhoto { name, file: Some(stored), refusal: None }),
            Some((code, message)) => {
                let _ = std::fs::remove_file(&target);
                photos.push(refusal(&name, code, message));
            }
        }
    }
    Ok(())
}

struct Copied {
    bytes: u64,
    /// Stopped at the cap.
    over: bool,
    head: Vec<u8>,
}

enum CopyError {
    Read(std::io::Error),
    Write(std::io::Error),
}

/// Copies at most `cap` bytes of `reader` to a new file at `target`, counting what is actually decompressed.
fn copy_capped(reader: &mut impl Read, target: &Path, cap: u64) -> Result<Copied, CopyError> {
    let mut out = File::create(target).map_err(CopyError::Write)?;
    let mut buffer = vec![0u8; 64 << 10];
    let mut copied = Copied { bytes: 0, over: false, head: Vec::new() };
    loop {
        let n = reader.read(&mut buffer).map_err(CopyError::Read)?;
        if n == 0 {
            break;
        }
        if copied.bytes + n as u64 > cap {
            copied.over = true;
            break;
        }
        if copied.head.len() < 16 {
            copied.head.extend_from_slice(&buffer[..n.min(16 - copied.head.len())]);
        }
        out.write_all(&buffer[..n]).map_err(CopyError::Write)?;
        copied.bytes += n as u64;
    }
    out.flush().map_err(CopyError::Write)?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photos_and_archives_are_told_by_their_first_bytes() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0rest"), Sniffed::Image);
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), Sniffed::Image);
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Sniffed::Image);
        assert_eq!(sniff(b"PK\x03\x04rest"), Sniffed::Archive);
        assert_eq!(sniff(b"\x1f\x8b\x08"), Sniffed::Archive);
        assert_eq!(sniff(b"hello, world"), Sniffed::Other);
        assert_eq!(sniff(b""), Sniffed::Other);
    }

    #[test]
    fn member_names_must_stay_inside_the_folder() {
        for fine in ["a.jpg", "case/2026/a.jpg", "..a.jpg", "a..b.jpg"] {
            assert!(safe_member_name(fine), "{fine}");
        }
        for unsafe_name in ["../evil.jpg", "a/../../evil.jpg", "/etc/passwd", "\\\\server\\x.jpg", "C:evil.jpg", "a\\..\\b", ""] {
            assert!(!safe_member_name(unsafe_name), "{unsafe_name}");
        }
    }

    #[test]
    fn a_copy_stops_at_its_cap_counting_real_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        let copied = copy_capped(&mut std::io::repeat(0).take(10 << 20), &target, 1 << 20).ok().unwrap();
        assert!(copied.over && copied.bytes <= 1 << 20);
        let copied = copy_capped(&mut &b"\xFF\xD8\xFFsmall"[..], &target, 1 << 20).ok().unwrap();
        assert!(!copied.over && copied.bytes == 8 && sniff(&copied.head) == Sniffed::Image);
    }
}
