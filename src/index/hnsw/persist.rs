//! The index file: the graph's records written verbatim behind a header, and read back with every structural
//! invariant the search relies on checked, so that a damaged file is refused rather than trusted.
//!
//! File layout (little-endian): header (`slots` = node records, `upper_slots` = upper-layer lists, `free` =
//! free-list length, `entry` = `level << 32 | slot`), then the node records verbatim (`stride` bytes each), the
//! upper-layer lists (`upper_stride` bytes each) and the free list (u32 each).

use std::path::Path;
use std::sync::atomic::Ordering;

use super::{
    bit, unpack_entry, Directory, HnswConfig, HnswIndex, COUNT_MASK, DELETED, DOOMED, EMPTY_ENTRY, FREED, LEVEL_MASK,
    MAX_LEVEL,
};
use crate::index::file::{self, corrupt, Header, IndexReader, Kind};
use crate::index::{IndexError, IndexStamp};

impl HnswIndex {
    /// `AnnIndex::save`: a consistent snapshot, since mutations wait while searches keep running.
    pub(super) fn write_file(&self, path: &Path, stamp: IndexStamp) -> Result<(), IndexError> {
        let _gate = self.gate.write();
        let dir = self.directory.read();
        let mut h = Header::new(Kind::Hnsw, self.layout.dim);
        h.m = self.config.m as u32;
        h.ef_construction = self.config.ef_construction as u32;
        h.ef_search = self.config.ef_search as u32;
        h.seed = self.config.seed;
        h.slots = u64::from(dir.next_slot);
        h.live = dir.live as u64;
        h.deleted = dir.deleted as u64;
        h.stamp = stamp;
        h.entry = self.entry.load(Ordering::Acquire);
        h.upper_slots = u64::from(dir.next_upper);
        h.stride = self.layout.stride as u32;
        h.upper_stride = self.layout.upper_stride as u32;
        h.free = dir.free.len() as u64;
        let free: Vec<u8> = dir.free.iter().flat_map(|s| s.to_le_bytes()).collect();
        // SAFETY: with the gate held exclusively no writer touches the records, and searches only read them.
        let mut sections: Vec<&[u8]> = unsafe {
            self.nodes
                .runs(dir.next_slot as usize)
                .into_iter()
                .chain(self.upper.runs(dir.next_upper as usize))
                .map(|(p, len)| std::slice::from_raw_parts(p.cast_const(), len))
                .collect()
        };
        sections.push(&free);
        file::save_atomically(path, h, &sections)
    }

    /// Builds an index from a saved file; returns it with the gallery stamp stored by `save`. Every structural
    /// invariant the search relies on is checked, so a damaged file yields `Corrupt`, never a panic.
    pub fn load(path: &Path, dimension: usize) -> Result<(Self, IndexStamp), IndexError> {
        let mut reader = IndexReader::open(path, Kind::Hnsw, dimension)?;
        let h = reader.header.clone();
        if !(2..=255).contains(&h.m) || h.ef_construction == 0 || h.ef_search == 0 {
            return Err(corrupt(path, "graph parameters out of range"));
        }
        let config = HnswConfig {
            m: h.m as usize,
            ef_construction: h.ef_construction as usize,
            ef_search: h.ef_search as usize,
            seed: h.seed,
            ..HnswConfig::default()
        };
        let index = Self::new(dimension, config);
        let layout = index.layout;
        if h.stride as usize != layout.stride || h.upper_stride as usize != layout.upper_stride {
            return Err(corrupt(path, "record layout does not match dimension and M"));
        }
        if h.slots >= u64::from(u32::MAX) || h.upper_slots >= u64::from(u32::MAX) || h.free > h.slots {
            return Err(corrupt(path, "counts out of range"));
        }
        let (slots, upper_slots, free) = (h.slots as usize, h.upper_slots as usize, h.free as usize);
        let body = (slots as u64 * layout.stride as u64)
            .checked_add(upper_slots as u64 * layout.upper_stride as u64)
            .and_then(|b| b.checked_add(free as u64 * 4))
            .ok_or_else(|| corrupt(path, "counts out of range"))?;
        reader.expect_body(body)?;
        index.nodes.ensure(slots)?;
        index.upper.ensure(upper_slots)?;
        // SAFETY: the runs cover memory this function owns exclusively (the index is not shared yet).
        for (p, len) in unsafe { index.nodes.runs(slots) } {
            reader.read_section(unsafe { std::slice::from_raw_parts_mut(p, len) })?;
        }
        for (p, len) in unsafe { index.upper.runs(upper_slots) } {
            reader.read_section(unsafe { std::slice::from_raw_parts_mut(p, len) })?;
        }
        let mut free_bytes = vec![0u8; free * 4];
        reader.read_section(&mut free_bytes)?;
        reader.verify()?;
        let free_list: Vec<u32> =
            free_bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let dir = index.validate(reader.path(), &h, free_list)?;
        *index.directory.write() = dir;
        index.entry.store(h.entry, Ordering::Release);
        Ok((index, h.stamp))
    }

    /// Checks a freshly read body and rebuilds the directory from it.
    fn validate(&self, path: &Path, h: &Header, free: Vec<u32>) -> Result<Directory, IndexError> {
        let slots = h.slots as u32;
        let mut levels = vec![0u8; slots as usize];
        let mut freed = vec![0u64; (slots as usize).div_ceil(64)];
        let mut dir = Directory { next_slot: slots, next_upper: h.upper_slots as u32, ..Default::default() };
        for s in 0..slots {
            // SAFETY: `s < slots` and the memory was just read; the index is not shared yet.
            let v = unsafe { self.state(s).load(Ordering::Relaxed) };
            let bad_flags = v & !(LEVEL_MASK | DELETED | DOOMED | FREED) != 0 || (v & DOOMED != 0 && v & FREED == 0);
            if bad_flags || (v & LEVEL_MASK) as usize > MAX_LEVEL {
                return Err(corrupt(path, format!("slot {s} has an invalid state word")));
            }
            levels[s as usize] = (v & LEVEL_MASK) as u8;
            if v & FREED != 0 {
                freed[s as usize / 64] |= 1 << (s % 64);
            }
        }
        for &s in &free {
            if s >= slots || !bit(&freed, s) {
                return Err(corrupt(path, "free list names a slot that is not free"));
            }
        }
        if free.len() != freed.iter().map(|w| w.count_ones() as usize).sum::<usize>() {
            return Err(corrupt(path, "free list and freed slots disagree"));
        }
        for s in 0..slots {
            if bit(&freed, s) {
                continue;
            }
            let level = levels[s as usize] as usize;
            // SAFETY: as above.
            let (upper_first, label, key, deleted) = unsafe {
                (self.upper_first(s), self.label(s), self.key(s), self.state(s).load(Ordering::Relaxed) & DELETED != 0)
            };
            if level > 0 && upper_first as u64 + level as u64 > h.upper_slots {
                return Err(corrupt(path, format!("slot {s} points outside the upper layers")));
            }
            for layer in 0..=level {
                // SAFETY: the upper slots were bounds-checked just above.
                let header = unsafe { self.list(s, layer) };
                let raw = header.load(Ordering::Relaxed);
                let count = (raw & COUNT_MASK) as usize;
                if raw & !COUNT_MASK != 0 || count > self.capacity_of(layer) {
                    return Err(corrupt(path, format!("slot {s} has an invalid neighbour count")));
                }
                for i in 0..count {
                    let n = unsafe { Self::link(header, i).load(Ordering::Relaxed) };
                    if n >= slots || bit(&freed, n) || (levels[n as usize] as usize) < layer {
                        return Err(corrupt(path, format!("slot {s} links to an invalid slot")));
                    }
                }
            }
            if deleted {
                dir.deleted += 1;
            } else {
                if dir.keys.insert(key, s).is_some() {
                    return Err(corrupt(path, format!("key {key} is live twice")));
                }
                dir.labels.entry(label).or_default().push(s);
                dir.live += 1;
            }
        }
        if dir.live as u64 != h.live || dir.deleted as u64 != h.deleted {
            return Err(corrupt(path, "live/deleted counts disagree with the header"));
        }
        if h.entry == EMPTY_ENTRY {
            if dir.live + dir.deleted > 0 {
                return Err(corrupt(path, "entries but no entry point"));
            }
        } else {
            let (e, level) = unpack_entry(h.entry);
            if e >= slots || bit(&freed, e) || levels[e as usize] as usize != level {
                return Err(corrupt(path, "invalid entry point"));
            }
        }
        dir.free = free;
        Ok(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{build, data, DIM};
    use super::*;
    use crate::index::{AnnIndex, ExactIndex, LabelFilter, SearchParams};

    #[test]
    fn save_load_round_trip_gives_identical_results() {
        let (hnsw, _, _) = build(2000, 13);
        for k in 0..100u64 {
            hnsw.remove(k * 3 + 1).expect("remove");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.hnsw");
        let stamp = IndexStamp { store_id: [9; 16], generation: 42, audit_head: 17 };
        hnsw.save(&path, stamp).expect("save");
        let (loaded, loaded_stamp) = HnswIndex::load(&path, DIM).expect("load");
        assert_eq!(loaded_stamp, stamp);
        assert_eq!(loaded.stats().live, hnsw.stats().live);
        assert_eq!(loaded.stats().deleted, 100);
        let queries = data(50, 3);
        for q in queries.chunks(DIM) {
            for params in
                [SearchParams::top(10), SearchParams { k: 5, ef: Some(16), filter: LabelFilter::Only(vec![4]) }]
            {
                assert_eq!(hnsw.search(q, &params).expect("a"), loaded.search(q, &params).expect("b"));
            }
        }
        assert!(matches!(HnswIndex::load(&path, DIM + 1), Err(IndexError::DimensionMismatch { .. })));
        assert!(matches!(ExactIndex::load(&path, DIM), Err(IndexError::WrongKind { .. })));
    }

    #[test]
    fn corrupt_or_truncated_files_are_refused() {
        let (hnsw, _, _) = build(500, 3);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.hnsw");
        hnsw.save(&path, IndexStamp { store_id: [1; 16], generation: 7, audit_head: 0 }).expect("save");
        let good = std::fs::read(&path).expect("read");
        let bad = dir.path().join("bad.hnsw");
        let cases: Vec<Vec<u8>> = vec![
            good[..good.len() - 1].to_vec(),
            good[..100].to_vec(),
            good[..file::HEADER_BYTES + 10].to_vec(),
            {
                let mut b = good.clone();
                b[file::HEADER_BYTES + 5000] ^= 0x10;
                b
            },
            {
                let mut b = good.clone();
                b[0] = b'X';
                b
            },
            {
                // The stamp is covered by the header's checksum: another store's id cannot be patched in.
                let mut b = good.clone();
                b[120] ^= 0x01;
                b
            },
            {
                let mut b = good.clone();
                b.extend_from_slice(&[0; 64]);
                b
            },
            Vec::new(),
        ];
        for (i, bytes) in cases.into_iter().enumerate() {
            std::fs::write(&bad, bytes).expect("write");
            match HnswIndex::load(&bad, DIM) {
                Err(IndexError::Corrupt { .. }) => {}
                other => panic!("case {i}: expected Corrupt, got {:?}", other.map(|(_, g)| g)),
            }
        }
        assert!(matches!(HnswIndex::load(&dir.path().join("missing"), DIM), Err(IndexError::Io { .. })));
    }

    #[test]
    fn structural_damage_behind_a_valid_checksum_is_refused() {
        let (hnsw, _, _) = build(300, 3);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.hnsw");
        hnsw.save(&path, IndexStamp { store_id: [1; 16], generation: 1, audit_head: 0 }).expect("save");
        let mut reader = IndexReader::open(&path, Kind::Hnsw, DIM).expect("open");
        let mut h = reader.header.clone();
        let mut body = vec![0u8; std::fs::metadata(&path).expect("meta").len() as usize - file::HEADER_BYTES];
        reader.read_section(&mut body).expect("body");
        // Point slot 0's first layer-0 link far outside the graph, then re-save with a matching checksum.
        let off = hnsw.layout.links + 4;
        body[off..off + 4].copy_from_slice(&1_000_000u32.to_le_bytes());
        h.body_checksum = 0;
        file::save_atomically(&path, h, &[&body]).expect("resave");
        assert!(matches!(HnswIndex::load(&path, DIM), Err(IndexError::Corrupt { .. })));
    }
}
