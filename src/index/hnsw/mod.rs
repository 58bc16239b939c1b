//! The HNSW index type (`HnswIndex`, `HnswConfig`): its node record and the accessors to it, the bookkeeping every
//! operation shares, and the `AnnIndex` contract; building, searching, deletion and the file format sit in the
//! submodules.
//!
//! Our HNSW graph: flat `u32` slot ids, one fixed-stride record per template (f32 vector, state, label, layer-0
//! neighbour list, key) in stable-address slot storage, upper layers in a second slot store, lock-free reads with
//! per-list spin locks for writers, tombstone deletion with consolidation (neighbour repair + slot reuse), label
//! filtering with an exact-scan fallback, and a flat file format.
//!
//! Consistency a search sees: every entry whose `insert` returned before the search began and whose `remove` had not
//! begun is findable (subject to the approximate recall); entries inserted or removed concurrently may or may not
//! appear. A removed key is never returned once `remove` has returned. Results always carry exact similarities.

mod delete;
mod graph;
mod persist;
mod search;
#[cfg(test)]
mod testing;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use rayon::prelude::*;
use serde::Serialize;

use super::simd::{prefetch, SimdLevel};
use super::slots::Slots;
use super::{check_vector, hash_table_bytes, AnnIndex, IndexError, IndexStamp, IndexStats, Neighbour, SearchParams, TemplateKey};
pub use delete::ConsolidationReport;
use search::Scratch;

const COUNT_MASK: u32 = 0xffff;
const LOCK_BIT: u32 = 1 << 31;
const LEVEL_MASK: u32 = 0xff;
/// Removed: traversed by searches but never returned.
const DELETED: u32 = 1 << 8;
/// Chosen by a running consolidation: no new link may point here any more.
const DOOMED: u32 = 1 << 9;
/// Unreachable and on the free list, waiting for reuse.
const FREED: u32 = 1 << 10;
const MAX_LEVEL: usize = 15;
const EMPTY_ENTRY: u64 = u64::MAX;

/// Tuning of the graph; `Default` is M 16, ef_construction 200, ef_search 64.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HnswConfig {
    /// Links per node on upper layers; layer 0 keeps up to `2 * m`. Clamped to 2..=255.
    pub m: usize,
    /// Candidate list size while inserting.
    pub ef_construction: usize,
    /// Candidate list size of a search that does not name its own `ef`.
    pub ef_search: usize,
    /// Seeds the level draw (hashed with the key, so a build is reproducible whatever the thread interleaving).
    pub seed: u64,
    /// `remove` consolidates (repairs links, frees slots) once tombstones exceed this fraction of all entries;
    /// `None` leaves it to explicit `consolidate` calls.
    pub consolidate_fraction: Option<f32>,
    /// A filtered search scans the allowed templates exactly when `allowed^2 <= filter_scan_factor * ef * live`;
    /// measured crossover, see docs/ann-index.md.
    pub filter_scan_factor: f64,
}

impl Default for HnswConfig {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 200,
            ef_search: 64,
            seed: 0x5eed_f00d,
            consolidate_fraction: Some(0.25),
            filter_scan_factor: 20.0,
        }
    }
}

/// Byte offsets inside one node record. The vector comes first so that it is 64-byte aligned; state and label sit
/// right behind it so that the lines prefetched for a distance also answer "may this node be returned?".
#[derive(Debug, Clone, Copy)]
struct Layout {
    dim: usize,
    m: usize,
    m0: usize,
    state: usize,
    label: usize,
    links: usize,
    upper: usize,
    key: usize,
    stride: usize,
    upper_stride: usize,
    prefetch_lines: usize,
}

impl Layout {
    fn new(dim: usize, m: usize) -> Self {
        let m0 = 2 * m;
        let state = dim * 4;
        let label = state + 4;
        let links = label + 4;
        let upper = links + 4 + 4 * m0;
        let key = (upper + 4).next_multiple_of(8);
        let stride = (key + 8).next_multiple_of(64);
        Self {
            dim,
            m,
            m0,
            state,
            label,
            links,
            upper,
            key,
            stride,
            upper_stride: 4 * (1 + m),
            prefetch_lines: (links + 4).div_ceil(64),
        }
    }
}

/// Key, label and slot bookkeeping; touched briefly by writers and by filtered searches, never by plain searches.
#[derive(Default)]
struct Directory {
    keys: HashMap<TemplateKey, u32>,
    /// Keys whose insert is in flight (slot reserved, not yet linked).
    pending: HashSet<TemplateKey>,
    labels: HashMap<u32, Vec<u32>>,
    free: Vec<u32>,
    next_slot: u32,
    next_upper: u32,
    live: usize,
    deleted: usize,
    /// While set, inserts take fresh slots so that consolidation can read every older slot without racing a reuse.
    consolidating: bool,
}

impl Directory {
    fn drop_label(&mut self, label: u32, slot_id: u32) {
        if let Some(list) = self.labels.get_mut(&label) {
            if let Some(pos) = list.iter().position(|&s| s == slot_id) {
                list.swap_remove(pos);
            }
            if list.is_empty() {
                self.labels.remove(&label);
            }
        }
    }
}

/// A hierarchical navigable small-world graph over unit vectors; see the module docs for the consistency contract.
pub struct HnswIndex {
    config: HnswConfig,
    layout: Layout,
    simd: SimdLevel,
    level_mult: f64,
    nodes: Slots,
    upper: Slots,
    /// `level << 32 | slot` of the entry node, or `EMPTY_ENTRY`.
    entry: AtomicU64,
    entry_lock: Mutex<()>,
    directory: RwLock<Directory>,
    /// Held shared by every search and insert; consolidation takes it exclusively twice, briefly, as a barrier
    /// (so that nobody still holds a slot that is about to be freed or reused).
    reclaim: RwLock<()>,
    /// Held shared by every mutation; `save` takes it exclusively so that it writes a consistent snapshot while
    /// searches keep running.
    gate: RwLock<()>,
    consolidating: Mutex<()>,
    scratch: Mutex<Vec<Scratch>>,
}

// Shared by the submodules, some inside hot loops: `#[inline]` lets every caller's codegen unit inline them.

#[inline]
fn pack_entry(s: u32, level: usize) -> u64 {
    ((level as u64) << 32) | u64::from(s)
}

#[inline]
fn unpack_entry(e: u64) -> (u32, usize) {
    (e as u32, (e >> 32) as usize)
}

/// Takes a neighbour-list lock (the top bit of its header word); returns the list length. Critical sections are a
/// few dozen dot products, so spinning (then yielding) beats parking.
#[inline]
fn lock_list(header: &AtomicU32) -> usize {
    let mut spins = 0u32;
    loop {
        let cur = header.load(Ordering::Relaxed);
        if cur & LOCK_BIT == 0
            && header.compare_exchange_weak(cur, cur | LOCK_BIT, Ordering::Acquire, Ordering::Relaxed).is_ok()
        {
            return (cur & COUNT_MASK) as usize;
        }
        spins += 1;
        if spins < 128 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// Publishes the new length and releases the lock; entries written before this are visible to readers after it.
#[inline]
fn unlock_list(header: &AtomicU32, len: usize) {
    header.store(len as u32, Ordering::Release);
}

#[inline]
fn bit(bits: &[u64], s: u32) -> bool {
    bits.get(s as usize / 64).is_some_and(|w| w >> (s % 64) & 1 == 1)
}

impl HnswIndex {
    pub fn new(dimension: usize, config: HnswConfig) -> Self {
        let mut config = config;
        config.m = config.m.clamp(2, 255);
        config.ef_construction = config.ef_construction.max(1);
        config.ef_search = config.ef_search.max(1);
        let layout = Layout::new(dimension, config.m);
        Self {
            level_mult: 1.0 / (config.m as f64).ln(),
            config,
            simd: SimdLevel::detect(),
            nodes: Slots::new(layout.stride),
            upper: Slots::new(layout.upper_stride),
            layout,
            entry: AtomicU64::new(EMPTY_ENTRY),
            entry_lock: Mutex::new(()),
            directory: RwLock::new(Directory::default()),
            reclaim: RwLock::new(()),
            gate: RwLock::new(()),
            consolidating: Mutex::new(()),
            scratch: Mutex::new(Vec::new()),
        }
    }

    /// Runs the kernels at `level` or below (whatever this CPU supports); for benches and tests.
    pub fn with_simd(mut self, level: SimdLevel) -> Self {
        self.simd = SimdLevel::detect().capped(level);
        self
    }

    pub fn config(&self) -> &HnswConfig {
        &self.config
    }

    /// Moves the filtered-search crossover (see `HnswConfig::filter_scan_factor`); 0 always walks the graph,
    /// infinity always scans.
    pub fn set_filter_scan_factor(&mut self, factor: f64) {
        self.config.filter_scan_factor = factor;
    }

    /// Changes when `remove` consolidates on its own (see `HnswConfig::consolidate_fraction`).
    pub fn set_consolidate_fraction(&mut self, fraction: Option<f32>) {
        self.config.consolidate_fraction = fraction;
    }

    /// Live templates carrying any of `labels`.
    pub fn count_labels(&self, labels: &[u32]) -> usize {
        let dir = self.directory.read();
        let mut labels = labels.to_vec();
        labels.sort_unstable();
        labels.dedup();
        labels.iter().filter_map(|l| dir.labels.get(l)).map(Vec::len).sum()
    }

    /// Bytes of one node record (vector, links, state, label, key); fixed by dimension and M.
    pub fn record_bytes(&self) -> usize {
        self.layout.stride
    }

    // ---- record access -------------------------------------------------------------------------------------------
    // SAFETY (all accessors): `s` must be a slot below a capacity the caller has observed, i.e. obtained from the
    // directory, the entry point or a neighbour list under the `reclaim` read lock.

    #[inline(always)]
    unsafe fn vector(&self, s: u32) -> *const f32 {
        unsafe { self.nodes.ptr(s).cast::<f32>() }
    }

    #[inline(always)]
    unsafe fn state(&self, s: u32) -> &AtomicU32 {
        unsafe { &*self.nodes.ptr(s).add(self.layout.state).cast::<AtomicU32>() }
    }

    #[inline(always)]
    unsafe fn label(&self, s: u32) -> u32 {
        unsafe { self.nodes.ptr(s).add(self.layout.label).cast::<u32>().read() }
    }

    #[inline(always)]
    unsafe fn key(&self, s: u32) -> TemplateKey {
        unsafe { self.nodes.ptr(s).add(self.layout.key).cast::<u64>().read() }
    }

    #[inline(always)]
    unsafe fn upper_first(&self, s: u32) -> u32 {
        unsafe { self.nodes.ptr(s).add(self.layout.upper).cast::<u32>().read() }
    }

    /// Header word of `s`'s neighbour list on `layer`; the entries follow it.
    #[inline(always)]
    unsafe fn list(&self, s: u32, layer: usize) -> &AtomicU32 {
        unsafe {
            let p = if layer == 0 {
                self.nodes.ptr(s).add(self.layout.links)
            } else {
                self.upper.ptr(self.upper_first(s) + layer as u32 - 1)
            };
            &*p.cast::<AtomicU32>()
        }
    }

    #[inline(always)]
    unsafe fn link(header: &AtomicU32, i: usize) -> &AtomicU32 {
        unsafe { &*(header as *const AtomicU32).add(1 + i) }
    }

    #[inline(always)]
    fn capacity_of(&self, layer: usize) -> usize {
        if layer == 0 {
            self.layout.m0
        } else {
            self.layout.m
        }
    }

    /// A snapshot of a neighbour list (bounded by the list's capacity even if a header were torn).
    #[inline(always)]
    unsafe fn read_links(&self, s: u32, layer: usize, out: &mut Vec<u32>) {
        unsafe {
            let header = self.list(s, layer);
            let count = ((header.load(Ordering::Acquire) & COUNT_MASK) as usize).min(self.capacity_of(layer));
            out.clear();
            for i in 0..count {
                out.push(Self::link(header, i).load(Ordering::Acquire));
            }
        }
    }

    #[inline(always)]
    unsafe fn prefetch_node(&self, s: u32) {
        unsafe {
            let p = self.nodes.ptr(s);
            for line in 0..self.layout.prefetch_lines {
                prefetch(p.add(line * 64));
            }
        }
    }
}

impl AnnIndex for HnswIndex {
    fn dimension(&self) -> usize {
        self.layout.dim
    }

    fn len(&self) -> usize {
        self.directory.read().live
    }

    fn tombstones(&self) -> usize {
        self.directory.read().deleted
    }

    fn insert(&self, key: TemplateKey, label: u32, vector: &[f32]) -> Result<(), IndexError> {
        check_vector(self.layout.dim, vector)?;
        self.insert_checked(key, label, vector)
    }

    fn insert_batch(&self, items: &[(TemplateKey, u32, Vec<f32>)]) -> Result<(), IndexError> {
        let n = self.check_batch(items.iter().map(|(k, _, v)| (*k, v.as_slice())))?;
        self.reserve(n)?;
        items.par_iter().try_for_each(|(key, label, vector)| self.insert_checked(*key, *label, vector))
    }

    fn remove(&self, key: TemplateKey) -> Result<bool, IndexError> {
        self.remove_key(key)
    }

    fn search(&self, query: &[f32], params: &SearchParams) -> Result<Vec<Neighbour>, IndexError> {
        self.run_search(query, params)
    }

    fn stats(&self) -> IndexStats {
        let dir = self.directory.read();
        let scratch: usize = self.scratch.lock().iter().map(Scratch::bytes).sum();
        let key_map = hash_table_bytes(dir.keys.capacity(), 16) + hash_table_bytes(dir.pending.capacity(), 8);
        let labels: usize = dir.labels.values().map(|v| v.capacity() * 4 + 32).sum();
        let max_level = match self.entry.load(Ordering::Acquire) {
            EMPTY_ENTRY => 0,
            e => unpack_entry(e).1,
        };
        IndexStats {
            kind: "hnsw",
            dimension: self.layout.dim,
            live: dir.live,
            deleted: dir.deleted,
            free_slots: dir.free.len(),
            labels: dir.labels.len(),
            memory_bytes: dir.next_slot as usize * self.layout.stride
                + dir.next_upper as usize * self.layout.upper_stride
                + key_map
                + labels
                + dir.free.capacity() * 4
                + scratch,
            reserved_bytes: self.nodes.reserved_bytes() + self.upper.reserved_bytes(),
            max_level,
            simd: self.simd,
        }
    }

    fn save(&self, path: &Path, stamp: IndexStamp) -> Result<(), IndexError> {
        self.write_file(path, stamp)
    }

    fn consolidate(&self) -> Result<ConsolidationReport, IndexError> {
        HnswIndex::consolidate(self)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{data, DIM};
    use super::*;
    use crate::index::synthetic::{clustered_unit_vectors, ClusterSpec};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn bad_vectors_are_refused_with_errors() {
        let hnsw = HnswIndex::new(DIM, HnswConfig::default());
        let mut v = vec![0.0f32; DIM];
        v[0] = 1.0;
        hnsw.insert(1, 0, &v).expect("good");
        assert!(matches!(hnsw.insert(1, 0, &v), Err(IndexError::DuplicateKey(1))));
        assert!(matches!(hnsw.insert(2, 0, &v[..DIM - 1]), Err(IndexError::DimensionMismatch { .. })));
        let mut nan = v.clone();
        nan[3] = f32::NAN;
        assert!(matches!(hnsw.insert(2, 0, &nan), Err(IndexError::NotFinite { position: 3 })));
        assert!(matches!(hnsw.insert(2, 0, &[0.5; DIM]), Err(IndexError::NotUnitLength { .. })));
        assert!(matches!(hnsw.search(&nan, &SearchParams::top(1)), Err(IndexError::NotFinite { .. })));
        assert!(matches!(hnsw.search(&v, &SearchParams::top(0)), Err(IndexError::InvalidParams { .. })));
        let batch = vec![(5u64, 0u32, v.clone()), (6, 0, nan)];
        assert!(hnsw.insert_batch(&batch).is_err());
        assert_eq!(hnsw.len(), 1, "a refused batch inserts nothing");
        let dup_batch = vec![(5u64, 0u32, v.clone()), (5, 0, v.clone())];
        assert!(matches!(hnsw.insert_batch(&dup_batch), Err(IndexError::DuplicateKey(5))));
        for dim in [128usize, 256, 7] {
            let idx = HnswIndex::new(dim, HnswConfig::default());
            let vs = clustered_unit_vectors(&ClusterSpec { dim, clusters: 3, spread: 0.5, seed: 2 }, 50, 0);
            let keys: Vec<u64> = (0..50).collect();
            idx.insert_flat(&keys, &[0; 50], &vs).expect("build");
            assert_eq!(idx.search(&vs[..dim], &SearchParams::top(1)).expect("search")[0].key, 0);
        }
    }

    #[test]
    fn concurrent_search_insert_and_remove_lose_nothing() {
        let hnsw = Arc::new(HnswIndex::new(
            DIM,
            HnswConfig { m: 8, ef_construction: 48, consolidate_fraction: Some(0.2), ..Default::default() },
        ));
        let v = Arc::new(data(6000, 9));
        let keys: Vec<u64> = (0..2000).collect();
        hnsw.insert_flat(&keys, &vec![0; 2000], &v[..2000 * DIM]).expect("seed");
        let stop = Arc::new(AtomicBool::new(false));
        let searchers: Vec<_> = (0..2)
            .map(|t| {
                let (hnsw, v, stop) = (hnsw.clone(), v.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) || n < 50 {
                        let q = &v[(n * 7 + t) % 6000 * DIM..][..DIM];
                        let hits = hnsw.search(q, &SearchParams::top(5)).expect("search");
                        assert!(hits.windows(2).all(|w| w[0].similarity >= w[1].similarity));
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let inserter = {
            let (hnsw, v) = (hnsw.clone(), v.clone());
            std::thread::spawn(move || {
                for i in 2000..6000u64 {
                    hnsw.insert(i, (i % 3) as u32, &v[i as usize * DIM..][..DIM]).expect("insert");
                }
            })
        };
        let remover = {
            let hnsw = hnsw.clone();
            std::thread::spawn(move || {
                for i in (0..2000u64).filter(|i| i % 2 == 0) {
                    assert!(hnsw.remove(i).expect("remove"));
                }
            })
        };
        inserter.join().expect("inserter");
        remover.join().expect("remover");
        stop.store(true, Ordering::Relaxed);
        for s in searchers {
            assert!(s.join().expect("searcher") >= 50);
        }
        assert_eq!(hnsw.len(), 5000);
        hnsw.consolidate().expect("consolidate");
        // Every live key is still findable by its own vector; no removed one comes back.
        let mut misses = 0;
        for i in 0..6000u64 {
            let hits = hnsw.search(&v[i as usize * DIM..][..DIM], &SearchParams::top(3)).expect("search");
            let removed = i < 2000 && i % 2 == 0;
            assert!(!hits.iter().any(|h| h.key == i) || !removed, "ghost {i}");
            if !removed && hits.first().map(|h| h.key) != Some(i) {
                misses += 1;
            }
        }
        assert!(misses <= 25, "{misses} live keys not found");
    }
}
