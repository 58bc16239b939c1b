//! Answering a query: the pooled per-search working memory, the greedy descent through the upper layers, the
//! best-first search of one layer (which inserts use too), and filtered searches that scan the allowed templates
//! exactly where that costs less than walking the graph.

use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;

use super::{unpack_entry, HnswIndex, COUNT_MASK, DELETED, EMPTY_ENTRY};
use crate::index::rank::{pack, similarity, slot};
use crate::index::simd::{dispatch, prefetch, Kernel, KernelTask};
use crate::index::{check_params, check_vector, IndexError, LabelSet, Neighbour, SearchParams};

/// Neighbours whose records are being fetched ahead of the one being scored: enough to overlap several memory
/// latencies, few enough (4 records of ~10 lines) to stay within the core's outstanding-miss capacity.
const PREFETCH_AHEAD: usize = 4;

/// Per-search working memory, pooled so that searches allocate nothing in steady state.
pub(super) struct Scratch {
    visited: Vec<u16>,
    stamp: u16,
    candidates: BinaryHeap<u64>,
    pub(super) results: BinaryHeap<u64>,
    fresh: Vec<u32>,
    pub(super) sorted: Vec<u64>,
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
    pub(super) fn begin(&mut self, slots: usize) {
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

    pub(super) fn bytes(&self) -> usize {
        self.visited.capacity() * 2
            + (self.candidates.capacity() + self.results.capacity() + self.sorted.capacity()) * 8
    }
}

impl HnswIndex {
    /// `AnnIndex::search`: the filter picks between an exact scan of the allowed templates and the graph walk.
    #[inline]
    pub(super) fn run_search(&self, query: &[f32], params: &SearchParams) -> Result<Vec<Neighbour>, IndexError> {
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

    pub(super) fn take_scratch(&self) -> Scratch {
        self.scratch.lock().pop().unwrap_or_else(Scratch::new)
    }

    pub(super) fn return_scratch(&self, s: Scratch) {
        self.scratch.lock().push(s);
    }

    /// Greedy walk on an upper layer: move to the best neighbour until none improves.
    #[inline(always)]
    pub(super) unsafe fn greedy<K: Kernel>(
        &self,
        q: *const f32,
        mut cur: u32,
        mut cur_sim: f32,
        layer: usize,
    ) -> (u32, f32) {
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
    pub(super) unsafe fn search_layer<K: Kernel>(
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
}

#[cfg(test)]
mod tests {
    use super::super::testing::{build, data, recall, DIM};
    use super::super::HnswConfig;
    use super::*;
    use crate::index::{AnnIndex, LabelFilter, SimdLevel};

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
}
