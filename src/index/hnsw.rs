//! Our HNSW graph: flat `u32` slot ids, one fixed-stride record per template (f32 vector, state, label, layer-0
//! neighbour list, key) in stable-address slot storage, upper layers in a second slot store, lock-free reads with
//! per-list spin locks for writers, tombstone deletion with consolidation (neighbour repair + slot reuse), label
//! filtering with an exact-scan fallback, and a flat file format.
//!
//! Consistency a search sees: every entry whose `insert` returned before the search began and whose `remove` had not
//! begun is findable (subject to the approximate recall); entries inserted or removed concurrently may or may not
//! appear. A removed key is never returned once `remove` has returned. Results always carry exact similarities.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use rayon::prelude::*;
use serde::Serialize;

use super::file::{self, corrupt, Header, IndexReader, Kind};
use super::rank::{pack, similarity, slot};
use super::simd::{dispatch, prefetch, Kernel, KernelTask, SimdLevel};
use super::slots::Slots;
use super::{
    check_params, check_vector, hash_table_bytes, AnnIndex, IndexError, IndexStats, LabelSet, Neighbour, SearchParams,
    TemplateKey,
};

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
/// Neighbours whose records are being fetched ahead of the one being scored: enough to overlap several memory
/// latencies, few enough (4 records of ~10 lines) to stay within the core's outstanding-miss capacity.
const PREFETCH_AHEAD: usize = 4;

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

/// What a consolidation did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ConsolidationReport {
    /// Tombstones made unreachable and put on the free list.
    pub freed: usize,
    /// Neighbour lists rewritten because they pointed at a freed tombstone.
    pub repaired_lists: usize,
    pub seconds: f64,
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

/// Buffers reused across the slots one consolidation worker repairs.
#[derive(Default)]
struct RepairWork {
    links: Vec<u32>,
    extra: Vec<u32>,
    cands: Vec<u64>,
    kept: Vec<u64>,
}

/// Per-search working memory, pooled so that searches allocate nothing in steady state.
struct Scratch {
    visited: Vec<u16>,
    stamp: u16,
    candidates: BinaryHeap<u64>,
    results: BinaryHeap<u64>,
    fresh: Vec<u32>,
    sorted: Vec<u64>,
}

impl Scratch {
    fn new() -> Self {
        Self {
            visited: Vec::new(),
            stamp: 0,
            candidates: BinaryHeap::new(),
            results: BinaryHeap::new(),
            fresh: Vec::new(),
            sorted: Vec::new(),
        }
    }

    /// Starts a new visit generation; the stamp array is only wiped when the 16-bit stamp wraps.
    fn begin(&mut self, slots: usize) {
        if self.visited.len() < slots {
            self.visited.resize(slots.next_power_of_two(), 0);
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.visited.fill(0);
            self.stamp = 1;
        }
    }

    /// Marks `s` visited; returns whether it was new.
    #[inline(always)]
    fn visit(&mut self, s: u32) -> bool {
        let stamp = self.stamp;
        match self.visited.get_mut(s as usize) {
            Some(v) if *v == stamp => false,
            Some(v) => {
                *v = stamp;
                true
            }
            None => {
                // A node linked after `begin` sized the array.
                self.visited.resize((s as usize + 1).next_power_of_two(), 0);
                self.visited[s as usize] = stamp;
                true
            }
        }
    }

    #[inline(always)]
    fn prefetch_visited(&self, s: u32) {
        if let Some(v) = self.visited.get(s as usize) {
            prefetch((v as *const u16).cast());
        }
    }

    fn bytes(&self) -> usize {
        self.visited.capacity() * 2
            + (self.candidates.capacity() + self.results.capacity() + self.sorted.capacity()) * 8
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

fn pack_entry(s: u32, level: usize) -> u64 {
    ((level as u64) << 32) | u64::from(s)
}

fn unpack_entry(e: u64) -> (u32, usize) {
    (e as u32, (e >> 32) as usize)
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Takes a neighbour-list lock (the top bit of its header word); returns the list length. Critical sections are a
/// few dozen dot products, so spinning (then yielding) beats parking.
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
fn unlock_list(header: &AtomicU32, len: usize) {
    header.store(len as u32, Ordering::Release);
}

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

    fn level_for(&self, key: TemplateKey) -> usize {
        let h = splitmix64(self.config.seed ^ splitmix64(key));
        let u = ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        ((-u.ln() * self.level_mult) as usize).min(MAX_LEVEL)
    }

    fn take_scratch(&self) -> Scratch {
        self.scratch.lock().pop().unwrap_or_else(Scratch::new)
    }

    fn return_scratch(&self, s: Scratch) {
        self.scratch.lock().push(s);
    }

    // ---- search core -----------------------------------------------------------------------------------------------

    /// Greedy walk on an upper layer: move to the best neighbour until none improves.
    #[inline(always)]
    unsafe fn greedy<K: Kernel>(&self, q: *const f32, mut cur: u32, mut cur_sim: f32, layer: usize) -> (u32, f32) {
        let dim = self.layout.dim;
        loop {
            let mut changed = false;
            unsafe {
                let header = self.list(cur, layer);
                let count = ((header.load(Ordering::Acquire) & COUNT_MASK) as usize).min(self.layout.m);
                for i in 0..count {
                    prefetch(self.vector(Self::link(header, i).load(Ordering::Relaxed)).cast());
                }
                for i in 0..count {
                    let n = Self::link(header, i).load(Ordering::Acquire);
                    let s = K::dot(q, self.vector(n), dim);
                    if s > cur_sim {
                        cur_sim = s;
                        cur = n;
                        changed = true;
                    }
                }
            }
            if !changed {
                return (cur, cur_sim);
            }
        }
    }

    /// Best-first search of one layer from one entry, leaving up to `ef` accepted nodes in `scratch.results`.
    /// Nodes with any bit of `reject` set, or a label outside `labels`, are traversed but not accepted.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn search_layer<K: Kernel>(
        &self,
        q: *const f32,
        entry: u32,
        entry_sim: f32,
        ef: usize,
        layer: usize,
        reject: u32,
        labels: &LabelSet,
        scratch: &mut Scratch,
    ) {
        let dim = self.layout.dim;
        let cap = self.capacity_of(layer);
        scratch.candidates.clear();
        scratch.results.clear();
        let accept = |s: u32| unsafe {
            self.state(s).load(Ordering::Acquire) & reject == 0 && (labels.is_all() || labels.allows(self.label(s)))
        };
        scratch.visit(entry);
        let first = pack(entry_sim, entry);
        if accept(entry) {
            scratch.results.push(first);
        }
        let mut lower = scratch.results.peek().copied().unwrap_or(u64::MAX);
        scratch.candidates.push(!first);
        while let Some(&top) = scratch.candidates.peek() {
            let c = !top;
            if c > lower && scratch.results.len() >= ef {
                break;
            }
            scratch.candidates.pop();
            let node = slot(c);
            unsafe {
                let header = self.list(node, layer);
                let count = ((header.load(Ordering::Acquire) & COUNT_MASK) as usize).min(cap);
                for i in 0..count {
                    scratch.prefetch_visited(Self::link(header, i).load(Ordering::Relaxed));
                }
                scratch.fresh.clear();
                for i in 0..count {
                    let n = Self::link(header, i).load(Ordering::Acquire);
                    if scratch.visit(n) {
                        if scratch.fresh.len() < PREFETCH_AHEAD {
                            self.prefetch_node(n);
                        }
                        scratch.fresh.push(n);
                    }
                }
                for j in 0..scratch.fresh.len() {
                    let n = *scratch.fresh.get_unchecked(j);
                    if let Some(&next) = scratch.fresh.get(j + PREFETCH_AHEAD) {
                        self.prefetch_node(next);
                    }
                    let p = pack(K::dot(q, self.vector(n), dim), n);
                    if scratch.results.len() < ef || p < lower {
                        scratch.candidates.push(!p);
                        if accept(n) {
                            scratch.results.push(p);
                            if scratch.results.len() > ef {
                                scratch.results.pop();
                            }
                        }
                        if let Some(&worst) = scratch.results.peek() {
                            lower = worst;
                        }
                    }
                }
            }
        }
    }

    /// The HNSW neighbour heuristic: walk candidates best first and keep one unless an already kept node is closer
    /// to it than the base is. `candidates` are packed (similarity to the base, slot), sorted best first.
    #[inline(always)]
    unsafe fn select<K: Kernel>(&self, candidates: &[u64], m: usize, out: &mut Vec<u64>) {
        out.clear();
        if candidates.len() <= m {
            out.extend_from_slice(candidates);
            return;
        }
        let dim = self.layout.dim;
        for &p in candidates {
            let to_base = similarity(p);
            let vc = unsafe { self.vector(slot(p)) };
            let mut diverse = true;
            for &kept in out.iter() {
                if unsafe { K::dot(vc, self.vector(slot(kept)), dim) } > to_base {
                    diverse = false;
                    break;
                }
            }
            if diverse {
                out.push(p);
                if out.len() >= m {
                    break;
                }
            }
        }
    }

    /// Adds `new` to `target`'s list on `layer`, pruning with the heuristic when the list is full.
    #[inline(always)]
    unsafe fn add_link<K: Kernel>(
        &self,
        target: u32,
        new: u32,
        layer: usize,
        new_sim: f32,
        work: &mut (Vec<u64>, Vec<u64>),
    ) {
        let cap = self.capacity_of(layer);
        let dim = self.layout.dim;
        unsafe {
            let header = self.list(target, layer);
            let count = lock_list(header).min(cap);
            if (0..count).any(|i| Self::link(header, i).load(Ordering::Relaxed) == new) {
                unlock_list(header, count);
                return;
            }
            if count < cap {
                Self::link(header, count).store(new, Ordering::Release);
                unlock_list(header, count + 1);
                return;
            }
            let base = self.vector(target);
            let (cands, kept) = work;
            cands.clear();
            // The target's neighbours are rarely in cache; fetch them all before the dot products need them.
            for i in 0..count {
                self.prefetch_node(Self::link(header, i).load(Ordering::Relaxed));
            }
            for i in 0..count {
                let e = Self::link(header, i).load(Ordering::Relaxed);
                if self.state(e).load(Ordering::Acquire) & DOOMED == 0 {
                    cands.push(pack(K::dot(base, self.vector(e), dim), e));
                }
            }
            cands.push(pack(new_sim, new));
            cands.sort_unstable();
            self.select::<K>(cands, cap, kept);
            for (i, &p) in kept.iter().enumerate() {
                Self::link(header, i).store(slot(p), Ordering::Release);
            }
            unlock_list(header, kept.len());
        }
    }

    /// Links the freshly written node `s` (level `level`) into the graph.
    #[inline(always)]
    unsafe fn connect<K: Kernel>(&self, s: u32, level: usize, scratch: &mut Scratch) {
        let dim = self.layout.dim;
        let mut entry = self.entry.load(Ordering::Acquire);
        if entry == EMPTY_ENTRY {
            let _e = self.entry_lock.lock();
            entry = self.entry.load(Ordering::Acquire);
            if entry == EMPTY_ENTRY {
                self.entry.store(pack_entry(s, level), Ordering::Release);
                return;
            }
        }
        let (ep, max_level) = unpack_entry(entry);
        let mut work = (Vec::new(), Vec::new());
        unsafe {
            let q = self.vector(s);
            let mut cur = ep;
            let mut cur_sim = K::dot(q, self.vector(ep), dim);
            for layer in (level + 1..=max_level).rev() {
                (cur, cur_sim) = self.greedy::<K>(q, cur, cur_sim, layer);
            }
            let mut selected = Vec::with_capacity(self.layout.m);
            for layer in (0..=level.min(max_level)).rev() {
                scratch.begin(self.nodes.capacity());
                // Tombstones are acceptable link targets only while no live node is in reach; doomed ones never.
                self.search_layer::<K>(
                    q,
                    cur,
                    cur_sim,
                    self.config.ef_construction,
                    layer,
                    DOOMED,
                    &LabelSet::All,
                    scratch,
                );
                scratch.sorted.clear();
                scratch.sorted.extend(scratch.results.drain().filter(|&p| slot(p) != s));
                scratch.sorted.sort_unstable();
                if scratch.sorted.is_empty() {
                    continue;
                }
                let best = scratch.sorted[0];
                if scratch.sorted.iter().any(|&p| self.state(slot(p)).load(Ordering::Acquire) & DELETED == 0) {
                    scratch.sorted.retain(|&p| self.state(slot(p)).load(Ordering::Acquire) & DELETED == 0);
                }
                self.select::<K>(&scratch.sorted, self.layout.m, &mut selected);
                let header = self.list(s, layer);
                lock_list(header);
                for (i, &p) in selected.iter().enumerate() {
                    Self::link(header, i).store(slot(p), Ordering::Release);
                }
                unlock_list(header, selected.len());
                for &p in &selected {
                    self.add_link::<K>(slot(p), s, layer, similarity(p), &mut work);
                }
                cur = slot(best);
                cur_sim = similarity(best);
            }
        }
        if level > max_level {
            let _e = self.entry_lock.lock();
            let now = self.entry.load(Ordering::Acquire);
            if now == EMPTY_ENTRY || level > unpack_entry(now).1 {
                self.entry.store(pack_entry(s, level), Ordering::Release);
            }
        }
    }

    /// Whole query: descend the upper layers greedily, then search layer 0 with `ef`.
    #[inline(always)]
    unsafe fn query<K: Kernel>(&self, q: &[f32], entry: u64, ef: usize, labels: &LabelSet, scratch: &mut Scratch) {
        let (ep, max_level) = unpack_entry(entry);
        let qp = q.as_ptr();
        unsafe {
            let mut cur = ep;
            let mut cur_sim = K::dot(qp, self.vector(ep), self.layout.dim);
            for layer in (1..=max_level).rev() {
                (cur, cur_sim) = self.greedy::<K>(qp, cur, cur_sim, layer);
            }
            scratch.begin(self.nodes.capacity());
            self.search_layer::<K>(qp, cur, cur_sim, ef, 0, DELETED, labels, scratch);
        }
    }

    /// Exact top-k over an explicit set of slots (the filtered-search fallback).
    #[inline(always)]
    unsafe fn scan<K: Kernel>(&self, q: &[f32], slots: &[u32], k: usize, out: &mut BinaryHeap<u64>) {
        const AHEAD: usize = 6;
        out.clear();
        unsafe {
            for &s in slots.iter().take(AHEAD) {
                self.prefetch_node(s);
            }
            for (i, &s) in slots.iter().enumerate() {
                if let Some(&next) = slots.get(i + AHEAD) {
                    self.prefetch_node(next);
                }
                if self.state(s).load(Ordering::Acquire) & DELETED != 0 {
                    continue;
                }
                let p = pack(K::dot(q.as_ptr(), self.vector(s), self.layout.dim), s);
                if out.len() < k {
                    out.push(p);
                } else if out.peek().is_some_and(|&w| p < w) {
                    out.pop();
                    out.push(p);
                }
            }
        }
    }

    /// Whether a filtered search allowing `allowed` templates should scan them exactly instead of walking the graph.
    /// The graph walk visits roughly `ef * live / allowed` nodes, the scan `allowed`; see docs/ann-index.md.
    fn prefers_scan(&self, allowed: usize, ef: usize, live: usize) -> bool {
        (allowed as f64) * (allowed as f64) <= self.config.filter_scan_factor * ef as f64 * live as f64
    }

    // ---- mutation ----------------------------------------------------------------------------------------------------

    /// Inserts an already validated vector.
    fn insert_checked(&self, key: TemplateKey, label: u32, vector: &[f32]) -> Result<(), IndexError> {
        let _gate = self.gate.read();
        let _reclaim = self.reclaim.read();
        let level = self.level_for(key);
        let (s, upper_first) = {
            let mut dir = self.directory.write();
            if dir.keys.contains_key(&key) || dir.pending.contains(&key) {
                return Err(IndexError::DuplicateKey(key));
            }
            let reuse = if dir.consolidating { None } else { dir.free.pop() };
            let s = match reuse {
                Some(s) => s,
                None => {
                    let s = dir.next_slot;
                    if s == u32::MAX {
                        return Err(IndexError::Full { capacity: s as usize });
                    }
                    self.nodes.ensure(s as usize + 1)?;
                    dir.next_slot += 1;
                    s
                }
            };
            // SAFETY: `s` is reserved to this thread; a reused slot is unreachable (consolidation's barrier).
            let old_level = if reuse.is_some() {
                (unsafe { self.state(s).load(Ordering::Acquire) } & LEVEL_MASK) as usize
            } else {
                0
            };
            let upper_first = if level == 0 {
                0
            } else if reuse.is_some() && old_level >= level {
                unsafe { self.upper_first(s) }
            } else {
                let first = dir.next_upper;
                let end = first as usize + level;
                if end >= u32::MAX as usize {
                    if reuse.is_some() {
                        dir.free.push(s);
                    }
                    return Err(IndexError::Full { capacity: first as usize });
                }
                if let Err(e) = self.upper.ensure(end) {
                    if reuse.is_some() {
                        dir.free.push(s);
                    }
                    return Err(e);
                }
                dir.next_upper = end as u32;
                first
            };
            dir.pending.insert(key);
            (s, upper_first)
        };
        // SAFETY: the slot (and its upper lists) belong to this thread until they are linked below; nothing reads them
        // before that.
        unsafe {
            let p = self.nodes.ptr(s);
            std::ptr::copy_nonoverlapping(vector.as_ptr(), p.cast::<f32>(), self.layout.dim);
            p.add(self.layout.label).cast::<u32>().write(label);
            p.add(self.layout.upper).cast::<u32>().write(upper_first);
            p.add(self.layout.key).cast::<u64>().write(key);
            (*p.add(self.layout.links).cast::<AtomicU32>()).store(0, Ordering::Relaxed);
            for layer in 1..=level {
                (*self.upper.ptr(upper_first + layer as u32 - 1).cast::<AtomicU32>()).store(0, Ordering::Relaxed);
            }
            self.state(s).store(level as u32, Ordering::Release);
        }
        let mut scratch = self.take_scratch();
        struct Connect<'a> {
            index: &'a HnswIndex,
            s: u32,
            level: usize,
            scratch: &'a mut Scratch,
        }
        impl KernelTask for Connect<'_> {
            type Output = ();
            #[inline(always)]
            fn run<K: Kernel>(self) {
                // SAFETY: the slot was written above and is reserved to this insert.
                unsafe { self.index.connect::<K>(self.s, self.level, self.scratch) }
            }
        }
        dispatch(self.simd, Connect { index: self, s, level, scratch: &mut scratch });
        self.return_scratch(scratch);
        let mut dir = self.directory.write();
        dir.pending.remove(&key);
        dir.keys.insert(key, s);
        dir.labels.entry(label).or_default().push(s);
        dir.live += 1;
        Ok(())
    }

    /// Validates a whole batch (shape and duplicates) before anything is inserted.
    fn check_batch<'a>(&self, items: impl Iterator<Item = (TemplateKey, &'a [f32])>) -> Result<usize, IndexError> {
        let mut seen = HashSet::new();
        let dir = self.directory.read();
        for (key, vector) in items {
            check_vector(self.layout.dim, vector)?;
            if !seen.insert(key) || dir.keys.contains_key(&key) || dir.pending.contains(&key) {
                return Err(IndexError::DuplicateKey(key));
            }
        }
        Ok(seen.len())
    }

    fn reserve(&self, additional: usize) -> Result<(), IndexError> {
        let next = self.directory.read().next_slot as usize;
        self.nodes.ensure(next + additional)
    }

    /// Bulk insert from flat arrays (`vectors` is `keys.len() * dimension` long) without one allocation per item;
    /// parallel on the current rayon pool, validated as a whole first.
    pub fn insert_flat(&self, keys: &[TemplateKey], labels: &[u32], vectors: &[f32]) -> Result<(), IndexError> {
        let dim = self.layout.dim;
        if labels.len() != keys.len() || vectors.len() != keys.len() * dim {
            return Err(IndexError::DimensionMismatch { expected: keys.len() * dim, actual: vectors.len() });
        }
        let n = self.check_batch(keys.iter().enumerate().map(|(i, &k)| (k, &vectors[i * dim..(i + 1) * dim])))?;
        self.reserve(n)?;
        (0..keys.len())
            .into_par_iter()
            .try_for_each(|i| self.insert_checked(keys[i], labels[i], &vectors[i * dim..(i + 1) * dim]))
    }

    /// Makes every tombstone unreachable and puts its slot on the free list: lists that point at one are rebuilt
    /// from their live entries plus the tombstone's own neighbours (pruned with the HNSW heuristic), and a deleted
    /// entry point is replaced. Searches and inserts keep running; they only wait at two brief barriers.
    pub fn consolidate(&self) -> Result<ConsolidationReport, IndexError> {
        let _one = self.consolidating.lock();
        let _gate = self.gate.read();
        let started = Instant::now();
        let (doomed, doomed_bits, slots) = {
            let _barrier = self.reclaim.write();
            let mut dir = self.directory.write();
            let slots = dir.next_slot;
            let mut doomed = Vec::new();
            let mut bits = vec![0u64; (slots as usize).div_ceil(64)];
            for s in 0..slots {
                // SAFETY: below `next_slot`, and no insert is in flight (exclusive `reclaim`).
                let state = unsafe { self.state(s) };
                let v = state.load(Ordering::Acquire);
                if v & DELETED != 0 && v & FREED == 0 {
                    state.store(v | DOOMED, Ordering::Release);
                    doomed.push(s);
                    bits[s as usize / 64] |= 1 << (s % 64);
                }
            }
            if !doomed.is_empty() {
                dir.consolidating = true;
            }
            (doomed, bits, slots)
        };
        if doomed.is_empty() {
            return Ok(ConsolidationReport { seconds: started.elapsed().as_secs_f64(), ..Default::default() });
        }
        {
            let _e = self.entry_lock.lock();
            let entry = self.entry.load(Ordering::Acquire);
            if entry != EMPTY_ENTRY && bit(&doomed_bits, unpack_entry(entry).0) {
                let mut best: Option<(u32, usize)> = None;
                for s in 0..slots {
                    // SAFETY: below `next_slot`; states are atomics.
                    let v = unsafe { self.state(s).load(Ordering::Acquire) };
                    if v & (DOOMED | FREED) == 0 && best.is_none_or(|(_, l)| (v & LEVEL_MASK) as usize > l) {
                        best = Some((s, (v & LEVEL_MASK) as usize));
                    }
                }
                let replacement = best.map_or(EMPTY_ENTRY, |(s, l)| pack_entry(s, l));
                self.entry.store(replacement, Ordering::Release);
            }
        }
        struct Repair<'a> {
            index: &'a HnswIndex,
            doomed: &'a [u64],
            s: u32,
            work: &'a mut RepairWork,
        }
        impl KernelTask for Repair<'_> {
            type Output = usize;
            #[inline(always)]
            fn run<K: Kernel>(self) -> usize {
                // SAFETY: every slot below the snapshot was fully written before the barrier, and none is reused
                // before the closing barrier (`consolidating` keeps inserts on fresh slots).
                unsafe { self.index.repair::<K>(self.doomed, self.s, self.work) }
            }
        }
        // One dispatch per slot (not one around the loop) so that the kernel inlines inside rayon's closures too.
        let repaired_lists: usize = (0..slots)
            .into_par_iter()
            .map_init(RepairWork::default, |work, s| {
                dispatch(self.simd, Repair { index: self, doomed: &doomed_bits, s, work })
            })
            .sum();
        {
            let _barrier = self.reclaim.write();
            let mut dir = self.directory.write();
            for &s in &doomed {
                // SAFETY: below `next_slot`.
                unsafe { self.state(s).fetch_or(FREED, Ordering::AcqRel) };
            }
            dir.free.extend_from_slice(&doomed);
            dir.deleted -= doomed.len();
            dir.consolidating = false;
        }
        Ok(ConsolidationReport { freed: doomed.len(), repaired_lists, seconds: started.elapsed().as_secs_f64() })
    }

    /// Rewrites `s`'s lists that point at doomed slots; returns how many lists changed.
    #[inline(always)]
    unsafe fn repair<K: Kernel>(&self, doomed: &[u64], s: u32, work: &mut RepairWork) -> usize {
        let dim = self.layout.dim;
        let mut repaired = 0;
        unsafe {
            let v = self.state(s).load(Ordering::Acquire);
            if v & (DOOMED | FREED) != 0 {
                return 0;
            }
            for layer in 0..=(v & LEVEL_MASK) as usize {
                self.read_links(s, layer, &mut work.links);
                if !work.links.iter().any(|&n| bit(doomed, n)) {
                    continue;
                }
                let header = self.list(s, layer);
                let count = lock_list(header).min(self.capacity_of(layer));
                work.extra.clear();
                for i in 0..count {
                    let n = Self::link(header, i).load(Ordering::Relaxed);
                    if !bit(doomed, n) {
                        work.extra.push(n);
                    } else {
                        self.read_links(n, layer, &mut work.links);
                        work.extra.extend(work.links.iter().copied().filter(|&x| x != s && !bit(doomed, x)));
                    }
                }
                work.extra.sort_unstable();
                work.extra.dedup();
                let base = self.vector(s);
                work.cands.clear();
                for &n in &work.extra {
                    work.cands.push(pack(K::dot(base, self.vector(n), dim), n));
                }
                work.cands.sort_unstable();
                self.select::<K>(&work.cands, self.capacity_of(layer), &mut work.kept);
                for (i, &p) in work.kept.iter().enumerate() {
                    Self::link(header, i).store(slot(p), Ordering::Release);
                }
                unlock_list(header, work.kept.len());
                repaired += 1;
            }
        }
        repaired
    }

    /// Exact top-k over the templates with the given labels (what the filtered search falls back to).
    fn scan_labels(&self, query: &[f32], labels: &[u32], k: usize) -> Vec<Neighbour> {
        let slots: Vec<u32> = {
            let dir = self.directory.read();
            labels.iter().filter_map(|l| dir.labels.get(l)).flatten().copied().collect()
        };
        struct Scan<'a> {
            index: &'a HnswIndex,
            query: &'a [f32],
            slots: &'a [u32],
            k: usize,
            out: &'a mut BinaryHeap<u64>,
        }
        impl KernelTask for Scan<'_> {
            type Output = ();
            #[inline(always)]
            fn run<K: Kernel>(self) {
                // SAFETY: the slots came from the directory under the caller's `reclaim` read lock.
                unsafe { self.index.scan::<K>(self.query, self.slots, self.k, self.out) }
            }
        }
        let mut heap = BinaryHeap::with_capacity(k + 1);
        dispatch(self.simd, Scan { index: self, query, slots: &slots, k, out: &mut heap });
        self.neighbours(&mut heap.into_vec(), k)
    }

    fn neighbours(&self, packed: &mut Vec<u64>, k: usize) -> Vec<Neighbour> {
        packed.sort_unstable();
        packed.truncate(k);
        // SAFETY: the slots came from this search under the caller's `reclaim` read lock.
        packed.iter().map(|&p| Neighbour { key: unsafe { self.key(slot(p)) }, similarity: similarity(p) }).collect()
    }

    /// Builds an index from a saved file; returns it with the gallery generation stored by `save`. Every structural
    /// invariant the search relies on is checked, so a damaged file yields `Corrupt`, never a panic.
    pub fn load(path: &Path, dimension: usize) -> Result<(Self, u64), IndexError> {
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
        Ok((index, h.generation))
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
        let trigger = {
            let _gate = self.gate.read();
            let mut dir = self.directory.write();
            let Some(s) = dir.keys.remove(&key) else {
                return Ok(false);
            };
            // SAFETY: `s` came from the directory, so it is a written slot.
            let label = unsafe {
                self.state(s).fetch_or(DELETED, Ordering::AcqRel);
                self.label(s)
            };
            dir.drop_label(label, s);
            dir.live -= 1;
            dir.deleted += 1;
            self.config
                .consolidate_fraction
                .is_some_and(|f| dir.deleted as f64 > f64::from(f) * (dir.live + dir.deleted) as f64)
        };
        if trigger && self.consolidating.try_lock().is_some() {
            // Another remover may start a consolidation between the probe and this call; it then just waits.
            self.consolidate()?;
        }
        Ok(true)
    }

    fn search(&self, query: &[f32], params: &SearchParams) -> Result<Vec<Neighbour>, IndexError> {
        check_vector(self.layout.dim, query)?;
        check_params(params)?;
        let labels = LabelSet::from_filter(&params.filter);
        let ef = params.ef.unwrap_or(self.config.ef_search).max(params.k);
        let _reclaim = self.reclaim.read();
        let entry = self.entry.load(Ordering::Acquire);
        if entry == EMPTY_ENTRY {
            return Ok(Vec::new());
        }
        if let LabelSet::Only(allowed_labels) = &labels {
            let (allowed, live) = {
                let dir = self.directory.read();
                (allowed_labels.iter().filter_map(|l| dir.labels.get(l)).map(Vec::len).sum::<usize>(), dir.live)
            };
            if allowed == 0 {
                return Ok(Vec::new());
            }
            if self.prefers_scan(allowed, ef, live) {
                return Ok(self.scan_labels(query, allowed_labels, params.k));
            }
        }
        let mut scratch = self.take_scratch();
        struct Query<'a> {
            index: &'a HnswIndex,
            query: &'a [f32],
            entry: u64,
            ef: usize,
            labels: &'a LabelSet,
            scratch: &'a mut Scratch,
        }
        impl KernelTask for Query<'_> {
            type Output = ();
            #[inline(always)]
            fn run<K: Kernel>(self) {
                // SAFETY: the entry was read under the caller's `reclaim` read lock.
                unsafe { self.index.query::<K>(self.query, self.entry, self.ef, self.labels, self.scratch) }
            }
        }
        dispatch(self.simd, Query { index: self, query, entry, ef, labels: &labels, scratch: &mut scratch });
        let mut packed = std::mem::take(&mut scratch.sorted);
        packed.clear();
        packed.extend(scratch.results.drain());
        let hits = self.neighbours(&mut packed, params.k);
        scratch.sorted = packed;
        self.return_scratch(scratch);
        Ok(hits)
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

    /// File layout (little-endian): header (`slots` = node records, `upper_slots` = upper-layer lists, `free` =
    /// free-list length, `entry` = `level << 32 | slot`), then the node records verbatim (`stride` bytes each), the
    /// upper-layer lists (`upper_stride` bytes each) and the free list (u32 each).
    fn save(&self, path: &Path, generation: u64) -> Result<(), IndexError> {
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
        h.generation = generation;
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

    fn consolidate(&self) -> Result<ConsolidationReport, IndexError> {
        HnswIndex::consolidate(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::bench::{clustered_unit_vectors, recall_at_k, ClusterSpec};
    use crate::index::{ExactIndex, LabelFilter};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    const DIM: usize = 32;

    fn data(n: usize, stream: u64) -> Vec<f32> {
        clustered_unit_vectors(&ClusterSpec { dim: DIM, clusters: 20, spread: 1.0, seed: 1 }, n, stream)
    }

    fn build(n: usize, labels: u32) -> (HnswIndex, ExactIndex, Vec<f32>) {
        let v = data(n, 1);
        let keys: Vec<u64> = (0..n as u64).map(|k| k * 3 + 1).collect();
        let labs: Vec<u32> = (0..n as u32).map(|i| i % labels).collect();
        let hnsw = HnswIndex::new(DIM, HnswConfig { m: 8, ef_construction: 64, ef_search: 32, ..Default::default() });
        hnsw.insert_flat(&keys, &labs, &v).expect("hnsw build");
        let exact = ExactIndex::new(DIM);
        exact.insert_flat(&keys, &labs, &v).expect("exact build");
        (hnsw, exact, v)
    }

    fn recall(hnsw: &HnswIndex, exact: &ExactIndex, queries: &[f32], params: &SearchParams) -> f64 {
        let got: Vec<Vec<Neighbour>> = queries.chunks(DIM).map(|q| hnsw.search(q, params).expect("search")).collect();
        let truth: Vec<Vec<Neighbour>> = queries.chunks(DIM).map(|q| exact.search(q, params).expect("exact")).collect();
        recall_at_k(&got, &truth, params.k)
    }

    #[test]
    fn recall_at_10_matches_exact_scan_on_clustered_data() {
        let (hnsw, exact, _) = build(3000, 1);
        let stats = hnsw.stats();
        assert_eq!((stats.live, stats.deleted, stats.kind, stats.dimension), (3000, 0, "hnsw", DIM));
        assert!(stats.memory_bytes >= 3000 * hnsw.record_bytes() && stats.memory_bytes <= stats.reserved_bytes * 2);
        let queries = data(100, 99);
        let r = recall(&hnsw, &exact, &queries, &SearchParams { k: 10, ef: Some(64), filter: LabelFilter::All });
        assert!(r >= 0.97, "recall {r}");
        let q = &queries[..DIM];
        let hits = hnsw.search(q, &SearchParams::top(10)).expect("search");
        assert_eq!(hits.len(), 10);
        assert!(hits.windows(2).all(|w| w[0].similarity >= w[1].similarity));
        for h in &hits {
            let row = ((h.key - 1) / 3) as usize;
            let v = &data(3000, 1)[row * DIM..(row + 1) * DIM];
            assert_eq!(h.similarity, SimdLevel::detect().dot(q, v), "similarity must be exact");
        }
    }

    #[test]
    fn every_simd_level_builds_the_same_quality_graph() {
        let v = data(1500, 4);
        let keys: Vec<u64> = (0..1500).collect();
        let labs = vec![0u32; 1500];
        let exact = ExactIndex::new(DIM);
        exact.insert_flat(&keys, &labs, &v).expect("exact");
        let queries = data(50, 5);
        for level in [SimdLevel::Scalar, SimdLevel::Avx2Fma, SimdLevel::Avx512] {
            let hnsw =
                HnswIndex::new(DIM, HnswConfig { m: 8, ef_construction: 64, ..Default::default() }).with_simd(level);
            hnsw.insert_flat(&keys, &labs, &v).expect("build");
            let r = recall(&hnsw, &exact, &queries, &SearchParams { k: 10, ef: Some(64), filter: LabelFilter::All });
            assert!(r >= 0.97, "{level:?}: recall {r}");
        }
    }

    #[test]
    fn deleted_keys_never_come_back_and_recall_holds() {
        let (hnsw, exact, _) = build(3000, 1);
        let cfg_off = hnsw.config.consolidate_fraction;
        assert!(cfg_off.is_some());
        let queries = data(100, 77);
        let params = SearchParams { k: 10, ef: Some(64), filter: LabelFilter::All };
        // Remove half, in two steps; the automatic consolidation kicks in past 25 %.
        for step in 0..2 {
            for k in (0..3000u64).filter(|k| k % 4 == step) {
                let key = k * 3 + 1;
                assert!(hnsw.remove(key).expect("remove"));
                assert!(exact.remove(key).expect("remove exact"));
                assert!(!hnsw.remove(key).expect("second remove"), "removed twice");
            }
            let removed: HashSet<u64> = (0..3000u64).filter(|k| k % 4 <= step).map(|k| k * 3 + 1).collect();
            for q in queries.chunks(DIM) {
                for h in hnsw.search(q, &params).expect("search") {
                    assert!(!removed.contains(&h.key), "ghost {}", h.key);
                }
            }
            let r = recall(&hnsw, &exact, &queries, &params);
            assert!(r >= 0.95, "step {step}: recall {r}");
        }
        assert_eq!(hnsw.len(), 1500);
        let stats = hnsw.stats();
        assert!(stats.free_slots > 0, "auto consolidation never ran: {stats:?}");
        // Freed slots are reused and the re-inserted keys are found.
        let fresh = data(500, 123);
        for (i, v) in fresh.chunks(DIM).enumerate() {
            hnsw.insert(10_000_000 + i as u64, 0, v).expect("reinsert");
        }
        assert!(hnsw.stats().free_slots < stats.free_slots);
        let found = fresh
            .chunks(DIM)
            .enumerate()
            .filter(|(i, v)| hnsw.search(v, &SearchParams::top(1)).expect("search")[0].key == 10_000_000 + *i as u64);
        assert!(found.count() >= 495);
    }

    #[test]
    fn tombstones_alone_keep_recall_and_consolidation_repairs() {
        let v = data(3000, 1);
        let keys: Vec<u64> = (0..3000).collect();
        let labs = vec![0u32; 3000];
        let hnsw = HnswIndex::new(
            DIM,
            HnswConfig { m: 8, ef_construction: 64, consolidate_fraction: None, ..Default::default() },
        );
        hnsw.insert_flat(&keys, &labs, &v).expect("build");
        let exact = ExactIndex::new(DIM);
        exact.insert_flat(&keys, &labs, &v).expect("exact");
        for k in (0..3000u64).filter(|k| k % 2 == 0) {
            hnsw.remove(k).expect("remove");
            exact.remove(k).expect("remove");
        }
        assert_eq!(hnsw.stats().deleted, 1500);
        let queries = data(100, 8);
        let params = SearchParams { k: 10, ef: Some(64), filter: LabelFilter::All };
        let tomb = recall(&hnsw, &exact, &queries, &params);
        let report = hnsw.consolidate().expect("consolidate");
        assert_eq!(report.freed, 1500);
        assert!(report.repaired_lists > 0);
        let repaired = recall(&hnsw, &exact, &queries, &params);
        assert!(tomb >= 0.95 && repaired >= 0.95, "tombstones {tomb}, repaired {repaired}");
        assert_eq!(hnsw.stats().deleted, 0);
        assert_eq!(hnsw.consolidate().expect("again").freed, 0);
    }

    impl HnswIndex {
        /// Links from unfreed slots to freed or doomed ones (must be 0 after a consolidation).
        fn dangling_links(&self) -> usize {
            let slots = self.directory.read().next_slot;
            let mut dangling = 0;
            for s in 0..slots {
                let v = unsafe { self.state(s).load(Ordering::Acquire) };
                if v & FREED != 0 {
                    continue;
                }
                for layer in 0..=(v & LEVEL_MASK) as usize {
                    let mut links = Vec::new();
                    unsafe { self.read_links(s, layer, &mut links) };
                    dangling += links
                        .iter()
                        .filter(|&&n| unsafe { self.state(n).load(Ordering::Acquire) } & (FREED | DOOMED) != 0)
                        .count();
                }
            }
            dangling
        }
    }

    #[test]
    fn consolidation_leaves_no_link_to_a_freed_slot() {
        let v = data(4000, 1);
        let keys: Vec<u64> = (0..4000).collect();
        let hnsw = HnswIndex::new(
            DIM,
            HnswConfig { m: 8, ef_construction: 64, consolidate_fraction: None, ..Default::default() },
        );
        hnsw.insert_flat(&keys, &[0; 4000], &v).expect("build");
        let mut prev = 0u64;
        for target in [400u64, 2000, 3600] {
            for k in prev..target {
                assert!(hnsw.remove((k * 7919) % 4000).expect("remove"));
            }
            let report = hnsw.consolidate().expect("consolidate");
            assert_eq!(report.freed as u64, target - prev);
            assert_eq!(hnsw.dangling_links(), 0, "after {target} removals");
            prev = target;
        }
    }

    #[test]
    fn removing_everything_then_inserting_again_works() {
        let (hnsw, _, v) = build(300, 1);
        for k in 0..300u64 {
            hnsw.remove(k * 3 + 1).expect("remove");
        }
        assert!(hnsw.is_empty());
        assert!(hnsw.search(&v[..DIM], &SearchParams::top(5)).expect("search").is_empty());
        hnsw.consolidate().expect("consolidate");
        for (i, x) in v.chunks(DIM).enumerate().take(100) {
            hnsw.insert(i as u64, 1, x).expect("insert");
        }
        for (i, x) in v.chunks(DIM).enumerate().take(100) {
            assert_eq!(hnsw.search(x, &SearchParams::top(1)).expect("search")[0].key, i as u64);
        }
    }

    #[test]
    fn filtered_search_returns_only_allowed_labels_with_recall() {
        let (hnsw, exact, _) = build(4000, 100);
        let queries = data(60, 31);
        for labels in [vec![7u32], vec![1, 2, 3, 50], (0..40).collect::<Vec<_>>()] {
            let params = SearchParams { k: 10, ef: Some(64), filter: LabelFilter::Only(labels.clone()) };
            for q in queries.chunks(DIM) {
                for h in hnsw.search(q, &params).expect("search") {
                    let label = ((h.key - 1) / 3) as u32 % 100;
                    assert!(labels.contains(&label), "label {label} leaked");
                }
            }
            let r = recall(&hnsw, &exact, &queries, &params);
            assert!(r >= 0.95, "labels {labels:?}: recall {r}");
        }
        // Both paths (scan and graph) honour the filter: force the graph walk with a zero scan factor.
        let mut forced = HnswIndex::new(DIM, HnswConfig { m: 8, ef_construction: 64, ..Default::default() });
        forced.config.filter_scan_factor = 0.0;
        let v = data(4000, 1);
        let keys: Vec<u64> = (0..4000).collect();
        let labs: Vec<u32> = (0..4000u32).map(|i| i % 10).collect();
        forced.insert_flat(&keys, &labs, &v).expect("build");
        let params = SearchParams { k: 10, ef: Some(32), filter: LabelFilter::Only(vec![3]) };
        for q in queries.chunks(DIM) {
            let hits = forced.search(q, &params).expect("search");
            assert_eq!(hits.len(), 10);
            assert!(hits.iter().all(|h| h.key % 10 == 3));
        }
        let none = SearchParams { k: 10, ef: None, filter: LabelFilter::Only(vec![999]) };
        assert!(hnsw.search(&queries[..DIM], &none).expect("search").is_empty());
    }

    #[test]
    fn save_load_round_trip_gives_identical_results() {
        let (hnsw, _, _) = build(2000, 13);
        for k in 0..100u64 {
            hnsw.remove(k * 3 + 1).expect("remove");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.hnsw");
        hnsw.save(&path, 42).expect("save");
        let (loaded, generation) = HnswIndex::load(&path, DIM).expect("load");
        assert_eq!(generation, 42);
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
        hnsw.save(&path, 7).expect("save");
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
        hnsw.save(&path, 1).expect("save");
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
