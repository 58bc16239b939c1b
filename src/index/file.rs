//! The on-disk format both indexes share: a fixed 144-byte header (magic, version, kind, shape, counts, the stamp of
//! the gallery it was built from, a checksum of the body and one of the header itself) followed by flat body
//! sections; written to a temporary file, fsynced and renamed into place so that a crash never leaves a
//! half-written index behind.

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{IndexError, IndexStamp};

pub(crate) const MAGIC: [u8; 8] = *b"FMANNIDX";
/// Version 2 added the store's identity and audit head; a version-1 file is refused as unsupported, so it is
/// rebuilt.
pub(crate) const VERSION: u32 = 2;
pub(crate) const HEADER_BYTES: usize = 144;
/// Where the header's own checksum sits: after the fields it covers.
const HEADER_SUM_AT: usize = 136;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Hnsw = 1,
    Exact = 2,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Hnsw => "hnsw",
            Kind::Exact => "exact",
        }
    }
}

/// Header fields; their meaning per kind is documented where each index saves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub kind: Kind,
    pub dim: u32,
    pub m: u32,
    pub ef_construction: u32,
    pub ef_search: u32,
    pub seed: u64,
    pub slots: u64,
    pub live: u64,
    pub deleted: u64,
    /// The gallery store the index was built from, and where that store stood.
    pub stamp: IndexStamp,
    pub entry: u64,
    pub upper_slots: u64,
    pub stride: u32,
    pub upper_stride: u32,
    pub free: u64,
    pub body_checksum: u64,
}

impl Header {
    pub(crate) fn new(kind: Kind, dim: usize) -> Self {
        Self {
            kind,
            dim: dim as u32,
            m: 0,
            ef_construction: 0,
            ef_search: 0,
            seed: 0,
            slots: 0,
            live: 0,
            deleted: 0,
            stamp: IndexStamp::default(),
            entry: 0,
            upper_slots: 0,
            stride: 0,
            upper_stride: 0,
            free: 0,
            body_checksum: 0,
        }
    }

    fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(self.kind as u32).to_le_bytes());
        b[16..20].copy_from_slice(&self.dim.to_le_bytes());
        b[20..24].copy_from_slice(&self.m.to_le_bytes());
        b[24..28].copy_from_slice(&self.ef_construction.to_le_bytes());
        b[28..32].copy_from_slice(&self.ef_search.to_le_bytes());
        b[32..40].copy_from_slice(&self.seed.to_le_bytes());
        b[40..48].copy_from_slice(&self.slots.to_le_bytes());
        b[48..56].copy_from_slice(&self.live.to_le_bytes());
        b[56..64].copy_from_slice(&self.deleted.to_le_bytes());
        b[64..72].copy_from_slice(&self.stamp.generation.to_le_bytes());
        b[72..80].copy_from_slice(&self.entry.to_le_bytes());
        b[80..88].copy_from_slice(&self.upper_slots.to_le_bytes());
        b[88..92].copy_from_slice(&self.stride.to_le_bytes());
        b[92..96].copy_from_slice(&self.upper_stride.to_le_bytes());
        b[96..104].copy_from_slice(&self.free.to_le_bytes());
        b[104..112].copy_from_slice(&self.body_checksum.to_le_bytes());
        b[112..128].copy_from_slice(&self.stamp.store_id);
        b[128..136].copy_from_slice(&self.stamp.audit_head.to_le_bytes());
        let mut sum = Checksum::new();
        sum.update(&b[..HEADER_SUM_AT]);
        b[HEADER_SUM_AT..HEADER_SUM_AT + 8].copy_from_slice(&sum.finish().to_le_bytes());
        b
    }

    fn decode(b: &[u8; HEADER_BYTES], path: &Path) -> Result<Self, IndexError> {
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(w)
        };
        if b[0..8] != MAGIC {
            return Err(corrupt(path, "not an index file (bad magic)"));
        }
        let version = u32_at(8);
        if version != VERSION {
            return Err(IndexError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: version,
                supported: VERSION,
            });
        }
        let mut sum = Checksum::new();
        sum.update(&b[..HEADER_SUM_AT]);
        if sum.finish() != u64_at(HEADER_SUM_AT) {
            return Err(corrupt(path, "header checksum mismatch"));
        }
        let kind = match u32_at(12) {
            1 => Kind::Hnsw,
            2 => Kind::Exact,
            _ => return Err(corrupt(path, "unknown index kind")),
        };
        Ok(Self {
            kind,
            dim: u32_at(16),
            m: u32_at(20),
            ef_construction: u32_at(24),
            ef_search: u32_at(28),
            seed: u64_at(32),
            slots: u64_at(40),
            live: u64_at(48),
            deleted: u64_at(56),
            entry: u64_at(72),
            upper_slots: u64_at(80),
            stride: u32_at(88),
            upper_stride: u32_at(92),
            free: u64_at(96),
            body_checksum: u64_at(104),
            stamp: IndexStamp {
                store_id: {
                    let mut id = [0u8; 16];
                    id.copy_from_slice(&b[112..128]);
                    id
                },
                generation: u64_at(64),
                audit_head: u64_at(128),
            },
        })
    }
}

pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> IndexError {
    IndexError::Corrupt { path: path.to_path_buf(), reason: reason.into() }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io { path: path.to_path_buf(), source }
}

/// A fast 64-bit checksum (four multiply-rotate lanes over 8-byte words, xxHash-style rounds) that streams at
/// memory speed, so that the whole body can be verified on every load.
pub(crate) struct Checksum {
    lanes: [u64; 4],
    pending: [u8; 32],
    pending_len: usize,
    total: u64,
}

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;

impl Checksum {
    pub(crate) fn new() -> Self {
        Self { lanes: [P1, P2, P3, P1 ^ P2], pending: [0; 32], pending_len: 0, total: 0 }
    }

    #[inline(always)]
    fn round(acc: u64, word: u64) -> u64 {
        acc.wrapping_add(word.wrapping_mul(P2)).rotate_left(31).wrapping_mul(P1)
    }

    fn block(&mut self, block: &[u8]) {
        for (lane, w) in self.lanes.iter_mut().zip(block.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(w);
            *lane = Self::round(*lane, u64::from_le_bytes(word));
        }
    }

    pub(crate) fn update(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if self.pending_len > 0 {
            let take = (32 - self.pending_len).min(bytes.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&bytes[..take]);
            self.pending_len += take;
            bytes = &bytes[take..];
            if self.pending_len < 32 {
                return;
            }
            let block = self.pending;
            self.block(&block);
            self.pending_len = 0;
        }
        let mut blocks = bytes.chunks_exact(32);
        for block in &mut blocks {
            self.block(block);
        }
        let rest = blocks.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    pub(crate) fn finish(&self) -> u64 {
        let mut h = self.lanes[0].rotate_left(1)
            ^ self.lanes[1].rotate_left(7)
            ^ self.lanes[2].rotate_left(12)
            ^ self.lanes[3].rotate_left(18);
        h = h.wrapping_add(self.total.wrapping_mul(P3));
        for &byte in &self.pending[..self.pending_len] {
            h = (h ^ u64::from(byte).wrapping_mul(P1)).rotate_left(11).wrapping_mul(P2);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(P2);
        h ^= h >> 29;
        h = h.wrapping_mul(P3);
        h ^ (h >> 32)
    }
}

/// Writes `header` and the body `sections` to `path` atomically: a sibling temporary file, fsync, rename, then an
/// fsync of the directory so the rename itself is durable.
pub(crate) fn save_atomically(path: &Path, mut header: Header, sections: &[&[u8]]) -> Result<(), IndexError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "index".to_owned());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp).map_err(io(&tmp))?;
        file.write_all(&[0u8; HEADER_BYTES]).map_err(io(&tmp))?;
        let mut sum = Checksum::new();
        for section in sections {
            sum.update(section);
            file.write_all(section).map_err(io(&tmp))?;
        }
        header.body_checksum = sum.finish();
        file.seek(SeekFrom::Start(0)).map_err(io(&tmp))?;
        file.write_all(&header.encode()).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(io(path))?;
        File::open(&dir).and_then(|d| d.sync_all()).map_err(io(&dir))
    })();
    if result.is_err() {
        // Best effort: the temporary file is garbage either way and must not linger next to the real index.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads a saved index: header first, then body sections straight into their final memory.
pub(crate) struct IndexReader {
    file: File,
    path: PathBuf,
    len: u64,
    sum: Checksum,
    pub(crate) header: Header,
}

impl IndexReader {
    pub(crate) fn open(path: &Path, kind: Kind, dim: usize) -> Result<Self, IndexError> {
        let mut file = File::open(path).map_err(io(path))?;
        let len = file.metadata().map_err(io(path))?.len();
        if len < HEADER_BYTES as u64 {
            return Err(corrupt(path, format!("file has {len} bytes, shorter than the header")));
        }
        let mut raw = [0u8; HEADER_BYTES];
        file.read_exact(&mut raw).map_err(io(path))?;
        let header = Header::decode(&raw, path)?;
        if header.kind != kind {
            return Err(IndexError::WrongKind {
                path: path.to_path_buf(),
                found: header.kind.name(),
                expected: kind.name(),
            });
        }
        if header.dim as usize != dim {
            return Err(IndexError::DimensionMismatch { expected: dim, actual: header.dim as usize });
        }
        Ok(Self { file, path: path.to_path_buf(), len, sum: Checksum::new(), header })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Refuses the file unless its length is exactly header + `body` bytes (truncation or trailing junk).
    pub(crate) fn expect_body(&self, body: u64) -> Result<(), IndexError> {
        let expected = (HEADER_BYTES as u64).checked_add(body);
        if expected != Some(self.len) {
            return Err(corrupt(
                &self.path,
                format!(
                    "file has {} bytes, header describes {}",
                    self.len,
                    expected.map_or("overflowing".into(), |e| e.to_string())
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn read_section(&mut self, dst: &mut [u8]) -> Result<(), IndexError> {
        self.file.read_exact(dst).map_err(|source| {
            if source.kind() == ErrorKind::UnexpectedEof {
                corrupt(&self.path, "file ends inside the body")
            } else {
                IndexError::Io { path: self.path.clone(), source }
            }
        })?;
        self.sum.update(dst);
        Ok(())
    }

    /// Confirms the body read so far matches the header's checksum.
    pub(crate) fn verify(&self) -> Result<(), IndexError> {
        if self.sum.finish() != self.header.body_checksum {
            return Err(corrupt(&self.path, "body checksum mismatch"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_independent_of_chunking_and_sensitive_to_flips() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let mut whole = Checksum::new();
        whole.update(&data);
        for split in [1usize, 7, 31, 32, 33, 4097] {
            let mut parts = Checksum::new();
            for chunk in data.chunks(split) {
                parts.update(chunk);
            }
            assert_eq!(parts.finish(), whole.finish(), "chunk {split}");
        }
        let mut flipped = data.clone();
        flipped[5_000] ^= 1;
        let mut other = Checksum::new();
        other.update(&flipped);
        assert_ne!(other.finish(), whole.finish());
        let mut shorter = Checksum::new();
        shorter.update(&data[..9_999]);
        assert_ne!(shorter.finish(), whole.finish());
    }

    #[test]
    fn header_round_trips_and_detects_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.idx");
        let mut h = Header::new(Kind::Exact, 3);
        h.slots = 2;
        h.stamp = IndexStamp { store_id: [7; 16], generation: 99, audit_head: 12 };
        let body = [1u8, 2, 3, 4, 5];
        save_atomically(&path, h.clone(), &[&body[..2], &body[2..]]).expect("save");
        let mut r = IndexReader::open(&path, Kind::Exact, 3).expect("open");
        assert_eq!(r.header.stamp, IndexStamp { store_id: [7; 16], generation: 99, audit_head: 12 });
        r.expect_body(5).expect("length");
        let mut back = [0u8; 5];
        r.read_section(&mut back).expect("read");
        r.verify().expect("checksum");
        assert_eq!(back, body);
        assert!(matches!(IndexReader::open(&path, Kind::Hnsw, 3), Err(IndexError::WrongKind { .. })));
        assert!(matches!(IndexReader::open(&path, Kind::Exact, 4), Err(IndexError::DimensionMismatch { .. })));

        let mut raw = std::fs::read(&path).expect("read file");
        raw[20] ^= 0x40;
        std::fs::write(&path, &raw).expect("write");
        assert!(matches!(IndexReader::open(&path, Kind::Exact, 3), Err(IndexError::Corrupt { .. })));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(leftovers.len(), 1, "temporary file left behind");
    }
}
