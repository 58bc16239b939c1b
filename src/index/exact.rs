//! The exact index: a flat row-major f32 matrix scanned with the SIMD dot kernel. It is the ground truth for the
//! HNSW recall measurements and the right index for small galleries. Optionally it keeps an int8 copy of every
//! row and scans that first (a quarter of the memory traffic), re-ranking a shortlist exactly in f32.
//!
//! Consistency: one `RwLock` guards the matrix; a search holds it shared for one scan, a write holds it exclusively
//! for O(dimension) work (append or swap-remove), so writers wait at most one scan and readers at most one append.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::Path;

use parking_lot::RwLock;
use rayon::prelude::*;

use super::file::{self, corrupt, Header, IndexReader, Kind};
use super::rank::{pack, similarity, slot};
use super::simd::{dispatch, Kernel, KernelTask, SimdLevel};
use super::{
    check_params, check_vector, hash_table_bytes, AnnIndex, IndexError, IndexStamp, IndexStats, LabelSet, Neighbour, SearchParams,
    TemplateKey,
};

#[derive(Default)]
struct Rows {
    vectors: Vec<f32>,
    keys: Vec<TemplateKey>,
    labels: Vec<u32>,
    by_key: HashMap<TemplateKey, u32>,
    /// Int8 codes of `vectors`, row-major, when the pre-filter is on; empty otherwise.
    codes: Vec<i8>,
    quantized: bool,
}

impl Rows {
    /// Whether a search restricted to `labels` may return `row`.
    #[inline(always)]
    fn searchable(&self, labels: &LabelSet, row: usize) -> bool {
        labels.is_all() || labels.allows(self.labels[row])
    }

    fn push(&mut self, key: TemplateKey, label: u32, vector: &[f32]) {
        self.by_key.insert(key, self.keys.len() as u32);
        self.keys.push(key);
        self.labels.push(label);
        self.vectors.extend_from_slice(vector);
        if self.quantized {
            self.codes.extend(vector.iter().map(|&x| quantize(x)));
        }
    }
}

/// Components of a unit vector lie in [-1, 1]; 127 steps per unit keep the int8 dot product within 1 % of the
/// f32 one for face-like vectors, which is all a shortlist needs.
const CODE_SCALE: f32 = 127.0;

fn quantize(x: f32) -> i8 {
    (x * CODE_SCALE).round().clamp(-127.0, 127.0) as i8
}

/// How the int8 pre-filter shortlists before the exact re-rank.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Int8Prefilter {
    /// The shortlist holds `max(k * factor, k + floor)` rows.
    pub factor: usize,
    pub floor: usize,
}

impl Default for Int8Prefilter {
    fn default() -> Self {
        Int8Prefilter { factor: 10, floor: 100 }
    }
}

impl Int8Prefilter {
    fn shortlist(&self, k: usize) -> usize {
        (k * self.factor).max(k + self.floor)
    }
}

/// Brute-force cosine search over all rows.
pub struct ExactIndex {
    dim: usize,
    simd: SimdLevel,
    prefilter: Option<Int8Prefilter>,
    rows: RwLock<Rows>,
}

impl ExactIndex {
    pub fn new(dimension: usize) -> Self {
        Self { dim: dimension, simd: SimdLevel::detect(), prefilter: None, rows: RwLock::new(Rows::default()) }
    }

    /// Scans int8 codes first and re-ranks the shortlist exactly (results still carry exact f32 similarities,
    /// but a true neighbour outside the shortlist is missed: recall is measured by `facematch bench index`).
    pub fn with_int8_prefilter(mut self, prefilter: Int8Prefilter) -> Self {
        self.prefilter = Some(prefilter);
        let mut rows = self.rows.write();
        rows.quantized = true;
        let codes: Vec<i8> = rows.vectors.iter().map(|&x| quantize(x)).collect();
        rows.codes = codes;
        drop(rows);
        self
    }

    /// Runs the kernel at `level` or below (whatever this CPU supports); for benches and tests.
    pub fn with_simd(mut self, level: SimdLevel) -> Self {
        self.simd = SimdLevel::detect().capped(level);
        self
    }

    /// Bulk insert from flat arrays (`vectors` is `keys.len() * dimension` long), validated as a whole first.
    pub fn insert_flat(&self, keys: &[TemplateKey], labels: &[u32], vectors: &[f32]) -> Result<(), IndexError> {
        let dim = self.dim;
        if labels.len() != keys.len() || vectors.len() != keys.len() * dim {
            return Err(IndexError::DimensionMismatch { expected: keys.len() * dim, actual: vectors.len() });
        }
        vectors.par_chunks(dim.max(1)).try_for_each(|v| check_vector(dim, v))?;
        let mut rows = self.rows.write();
        let mut seen = HashSet::with_capacity(keys.len());
        if let Some(&dup) = keys.iter().find(|k| rows.by_key.contains_key(k) || !seen.insert(**k)) {
            return Err(IndexError::DuplicateKey(dup));
        }
        rows.vectors.reserve(vectors.len());
        for (i, &key) in keys.iter().enumerate() {
            rows.push(key, labels[i], &vectors[i * dim..(i + 1) * dim]);
        }
        Ok(())
    }

    /// Searches many queries (row-major, `dimension` each) in parallel on the current rayon pool.
    pub fn search_batch(&self, queries: &[f32], params: &SearchParams) -> Result<Vec<Vec<Neighbour>>, IndexError> {
        queries.par_chunks(self.dim.max(1)).map(|q| self.search(q, params)).collect()
    }

    /// The stored vector of `key`, if present.
    pub fn vector(&self, key: TemplateKey) -> Option<Vec<f32>> {
        let rows = self.rows.read();
        rows.by_key.get(&key).map(|&r| rows.vectors[r as usize * self.dim..(r as usize + 1) * self.dim].to_vec())
    }

    /// Builds an index from a file written by `save`; returns it with the stored gallery stamp.
    pub fn load(path: &Path, dimension: usize) -> Result<(Self, IndexStamp), IndexError> {
        let mut reader = IndexReader::open(path, Kind::Exact, dimension)?;
        let h = reader.header.clone();
        if h.stride as usize != dimension * 4 || h.slots >= u64::from(u32::MAX) {
            return Err(corrupt(path, "row layout does not match the dimension"));
        }
        let n = h.slots as usize;
        reader.expect_body(n as u64 * (dimension as u64 * 4 + 8 + 4))?;
        let mut vectors = vec![0f32; n * dimension];
        let mut keys = vec![0u64; n];
        let mut labels = vec![0u32; n];
        // SAFETY: plain-old-data buffers viewed as bytes for the read; every bit pattern is a valid f32/u64/u32.
        unsafe {
            reader
                .read_section(std::slice::from_raw_parts_mut(vectors.as_mut_ptr().cast::<u8>(), n * dimension * 4))?;
            reader.read_section(std::slice::from_raw_parts_mut(keys.as_mut_ptr().cast::<u8>(), n * 8))?;
            reader.read_section(std::slice::from_raw_parts_mut(labels.as_mut_ptr().cast::<u8>(), n * 4))?;
        }
        reader.verify()?;
        let mut by_key = HashMap::with_capacity(n);
        for (i, &k) in keys.iter().enumerate() {
            if by_key.insert(k, i as u32).is_some() {
                return Err(corrupt(path, format!("key {k} appears twice")));
            }
        }
        if h.live != n as u64 {
            return Err(corrupt(path, "row count disagrees with the header"));
        }
        let index = Self::new(dimension);
        *index.rows.write() = Rows { vectors, keys, labels, by_key, codes: Vec::new(), quantized: false };
        Ok((index, h.stamp))
    }
}

/// One query's scan over the rows.
struct Scan<'a> {
    rows: &'a Rows,
    query: &'a [f32],
    k: usize,
    labels: &'a LabelSet,
}

impl KernelTask for Scan<'_> {
    type Output = Vec<u64>;

    #[inline(always)]
    fn run<K: Kernel>(self) -> Vec<u64> {
        let dim = self.query.len();
        let mut heap = BinaryHeap::with_capacity(self.k + 1);
        let mut worst = u64::MAX;
        for (row, v) in self.rows.vectors.chunks_exact(dim.max(1)).enumerate() {
            if !self.rows.searchable(self.labels, row) {
                continue;
            }
            // SAFETY: both slices hold `dim` floats.
            let p = pack(unsafe { K::dot(self.query.as_ptr(), v.as_ptr(), dim) }, row as u32);
            if p < worst {
                heap.push(p);
                if heap.len() > self.k {
                    heap.pop();
                }
                if heap.len() == self.k {
                    worst = heap.peek().copied().unwrap_or(u64::MAX);
                }
            }
        }
        heap.into_vec()
    }
}

/// One query's int8 scan: the `shortlist` best rows by integer dot product.
struct CodeScan<'a> {
    rows: &'a Rows,
    query: &'a [i8],
    shortlist: usize,
    labels: &'a LabelSet,
}

impl KernelTask for CodeScan<'_> {
    type Output = Vec<u32>;

    #[inline(always)]
    fn run<K: Kernel>(self) -> Vec<u32> {
        let dim = self.query.len().max(1);
        // Min-heap of (score, row) through Reverse, so the weakest of the shortlist is on top.
        let mut heap: BinaryHeap<std::cmp::Reverse<(i32, u32)>> = BinaryHeap::with_capacity(self.shortlist + 1);
        for (row, code) in self.rows.codes.chunks_exact(dim).enumerate() {
            if !self.rows.searchable(self.labels, row) {
                continue;
            }
            // Widening multiply-add over i8 lanes; inlined into the kernel's target-feature trampoline, it
            // vectorises there.
            let score: i32 = code.iter().zip(self.query).map(|(&a, &b)| i32::from(a) * i32::from(b)).sum();
            if heap.len() < self.shortlist {
                heap.push(std::cmp::Reverse((score, row as u32)));
            } else if heap.peek().is_some_and(|w| score > w.0 .0) {
                heap.pop();
                heap.push(std::cmp::Reverse((score, row as u32)));
            }
        }
        heap.into_iter().map(|r| r.0 .1).collect()
    }
}

/// Exact re-rank of shortlisted rows: the `k` best as packed (similarity, row) keys.
struct Rerank<'a> {
    rows: &'a Rows,
    query: &'a [f32],
    candidates: &'a [u32],
    k: usize,
}

impl KernelTask for Rerank<'_> {
    type Output = Vec<u64>;

    #[inline(always)]
    fn run<K: Kernel>(self) -> Vec<u64> {
        let dim = self.query.len();
        let mut packed: Vec<u64> = self
            .candidates
            .iter()
            .map(|&row| {
                let v = &self.rows.vectors[row as usize * dim..(row as usize + 1) * dim];
                // SAFETY: both slices hold `dim` floats.
                pack(unsafe { K::dot(self.query.as_ptr(), v.as_ptr(), dim) }, row)
            })
            .collect();
        packed.sort_unstable();
        packed.truncate(self.k);
        packed
    }
}

impl AnnIndex for ExactIndex {
    fn dimension(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.rows.read().keys.len()
    }

    fn insert(&self, key: TemplateKey, label: u32, vector: &[f32]) -> Result<(), IndexError> {
        check_vector(self.dim, vector)?;
        let mut rows = self.rows.write();
        if rows.by_key.contains_key(&key) {
            return Err(IndexError::DuplicateKey(key));
        }
        rows.push(key, label, vector);
        Ok(())
    }

    fn insert_batch(&self, items: &[(TemplateKey, u32, Vec<f32>)]) -> Result<(), IndexError> {
        items.par_iter().try_for_each(|(_, _, v)| check_vector(self.dim, v))?;
        let mut rows = self.rows.write();
        let mut seen = HashSet::with_capacity(items.len());
        if let Some((dup, _, _)) = items.iter().find(|(k, _, _)| rows.by_key.contains_key(k) || !seen.insert(*k)) {
            return Err(IndexError::DuplicateKey(*dup));
        }
        for (key, label, vector) in items {
            rows.push(*key, *label, vector);
        }
        Ok(())
    }

    fn remove(&self, key: TemplateKey) -> Result<bool, IndexError> {
        let mut rows = self.rows.write();
        let Some(row) = rows.by_key.remove(&key) else {
            return Ok(false);
        };
        let row = row as usize;
        let last = rows.keys.len() - 1;
        if row != last {
            let dim = self.dim;
            rows.vectors.copy_within(last * dim..(last + 1) * dim, row * dim);
            let moved = rows.keys[last];
            rows.keys[row] = moved;
            rows.labels[row] = rows.labels[last];
            rows.by_key.insert(moved, row as u32);
        }
        if rows.quantized && row != last {
            let dim = self.dim;
            rows.codes.copy_within(last * dim..(last + 1) * dim, row * dim);
        }
        rows.keys.truncate(last);
        rows.labels.truncate(last);
        rows.vectors.truncate(last * self.dim);
        if rows.quantized {
            rows.codes.truncate(last * self.dim);
        }
        Ok(true)
    }

    fn search(&self, query: &[f32], params: &SearchParams) -> Result<Vec<Neighbour>, IndexError> {
        check_vector(self.dim, query)?;
        check_params(params)?;
        let labels = LabelSet::from_filter(&params.filter);
        let rows = self.rows.read();
        let mut packed = match self.prefilter {
            Some(prefilter) if rows.quantized => {
                let code: Vec<i8> = query.iter().map(|&x| quantize(x)).collect();
                let shortlist = prefilter.shortlist(params.k);
                let candidates = dispatch(self.simd, CodeScan { rows: &rows, query: &code, shortlist, labels: &labels });
                dispatch(self.simd, Rerank { rows: &rows, query, candidates: &candidates, k: params.k })
            }
            _ => dispatch(self.simd, Scan { rows: &rows, query, k: params.k, labels: &labels }),
        };
        packed.sort_unstable();
        Ok(packed.iter().map(|&p| Neighbour { key: rows.keys[slot(p) as usize], similarity: similarity(p) }).collect())
    }

    fn stats(&self) -> IndexStats {
        let rows = self.rows.read();
        let labels: HashSet<u32> = rows.labels.iter().copied().collect();
        IndexStats {
            kind: "exact",
            dimension: self.dim,
            live: rows.keys.len(),
            deleted: 0,
            free_slots: 0,
            labels: labels.len(),
            memory_bytes: rows.vectors.capacity() * 4
                + rows.codes.capacity()
                + rows.keys.capacity() * 8
                + rows.labels.capacity() * 4
                + hash_table_bytes(rows.by_key.capacity(), 16),
            reserved_bytes: 0,
            max_level: 0,
            simd: self.simd,
        }
    }

    /// File layout (little-endian): header (`slots` = `live` = rows, `stride` = dimension * 4), then the vectors
    /// row-major, the keys (u64) and the labels (u32).
    fn save(&self, path: &Path, stamp: IndexStamp) -> Result<(), IndexError> {
        let rows = self.rows.read();
        let n = rows.keys.len();
        let mut h = Header::new(Kind::Exact, self.dim);
        h.slots = n as u64;
        h.live = n as u64;
        h.stride = (self.dim * 4) as u32;
        h.stamp = stamp;
        // SAFETY: plain-old-data slices viewed as bytes.
        let sections: [&[u8]; 3] = unsafe {
            [
                std::slice::from_raw_parts(rows.vectors.as_ptr().cast::<u8>(), rows.vectors.len() * 4),
                std::slice::from_raw_parts(rows.keys.as_ptr().cast::<u8>(), n * 8),
                std::slice::from_raw_parts(rows.labels.as_ptr().cast::<u8>(), n * 4),
            ]
        };
        file::save_atomically(path, h, &sections)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::synthetic::{clustered_unit_vectors, ClusterSpec};
    use crate::index::LabelFilter;

    const DIM: usize = 24;

    fn filled(n: usize) -> (ExactIndex, Vec<f32>) {
        let v = clustered_unit_vectors(&ClusterSpec { dim: DIM, clusters: 5, spread: 1.0, seed: 3 }, n, 0);
        let idx = ExactIndex::new(DIM);
        let keys: Vec<u64> = (0..n as u64).map(|k| k + 100).collect();
        let labels: Vec<u32> = (0..n as u32).map(|i| i % 7).collect();
        idx.insert_flat(&keys, &labels, &v).expect("insert");
        (idx, v)
    }

    /// Reference answer computed independently of the index (f64 dots, full sort).
    fn reference(v: &[f32], q: &[f32], k: usize, allowed: impl Fn(usize) -> bool) -> Vec<u64> {
        let mut all: Vec<(f64, u64)> = v
            .chunks(DIM)
            .enumerate()
            .filter(|(i, _)| allowed(*i))
            .map(|(i, x)| (x.iter().zip(q).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum(), i as u64 + 100))
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        all.into_iter().take(k).map(|x| x.1).collect()
    }

    #[test]
    fn int8_prefilter_keeps_recall_exact_similarities_filters_and_removals() {
        let (plain, v) = filled(3000);
        let pre = ExactIndex::new(DIM).with_int8_prefilter(Int8Prefilter::default());
        let keys: Vec<u64> = (0..3000u64).map(|k| k + 100).collect();
        let labels: Vec<u32> = (0..3000u32).map(|i| i % 7).collect();
        pre.insert_flat(&keys, &labels, &v).expect("insert");
        let (mut found, mut wanted) = (0usize, 0usize);
        for q in v.chunks(DIM).step_by(61) {
            let exact = plain.search(q, &SearchParams::top(10)).expect("exact");
            let got = pre.search(q, &SearchParams::top(10)).expect("int8");
            assert!(got.windows(2).all(|w| w[0].similarity >= w[1].similarity));
            for n in &got {
                // Re-ranked in f32 with the same kernel: the similarity of a key is the exact one.
                let same = exact.iter().find(|e| e.key == n.key);
                if let Some(e) = same {
                    assert_eq!(e.similarity, n.similarity);
                }
            }
            wanted += exact.len();
            found += exact.iter().filter(|e| got.iter().any(|n| n.key == e.key)).count();
        }
        assert!(found as f64 >= 0.98 * wanted as f64, "recall {found}/{wanted}");
        let q = &v[5 * DIM..6 * DIM];
        let only = SearchParams { k: 5, ef: None, filter: LabelFilter::Only(vec![3]) };
        let got = pre.search(q, &only).expect("filtered");
        assert_eq!(got.len(), 5);
        assert!(got.iter().all(|n| (n.key - 100) % 7 == 3));
        // Removing a row moves the last row's code with its vector: every row still finds itself first.
        assert!(pre.remove(105).expect("remove"));
        assert!(pre.search(q, &SearchParams::top(3)).expect("search").iter().all(|n| n.key != 105));
        let last = &v[2999 * DIM..3000 * DIM];
        assert_eq!(pre.search(last, &SearchParams::top(1)).expect("search")[0].key, 3099);
    }

    #[test]
    fn scan_matches_an_independent_reference_with_and_without_filter() {
        let (idx, v) = filled(500);
        let q = &v[37 * DIM..38 * DIM];
        let got: Vec<u64> = idx.search(q, &SearchParams::top(8)).expect("search").iter().map(|n| n.key).collect();
        assert_eq!(got, reference(&v, q, 8, |_| true));
        let params = SearchParams { k: 8, ef: None, filter: LabelFilter::Only(vec![2, 5]) };
        let got: Vec<u64> = idx.search(q, &params).expect("search").iter().map(|n| n.key).collect();
        assert_eq!(got, reference(&v, q, 8, |i| i % 7 == 2 || i % 7 == 5));
        let batch = idx.search_batch(&v[..3 * DIM], &SearchParams::top(1)).expect("batch");
        assert_eq!(batch.iter().map(|h| h[0].key).collect::<Vec<_>>(), vec![100, 101, 102]);
    }

    #[test]
    fn remove_keeps_rows_consistent() {
        let (idx, v) = filled(50);
        assert!(idx.remove(100).expect("remove"));
        assert!(!idx.remove(100).expect("again"));
        assert_eq!(idx.len(), 49);
        // The last row moved into row 0 and must still be found under its own key.
        let last = &v[49 * DIM..50 * DIM];
        assert_eq!(idx.search(last, &SearchParams::top(1)).expect("search")[0].key, 149);
        assert_eq!(idx.vector(149).as_deref(), Some(last));
        assert!(idx.search(&v[..DIM], &SearchParams::top(50)).expect("search").iter().all(|n| n.key != 100));
        assert!(matches!(idx.insert(149, 0, last), Err(IndexError::DuplicateKey(149))));
    }

    #[test]
    fn save_load_round_trip_and_refusals() {
        let (idx, v) = filled(200);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("e.idx");
        let stamp = IndexStamp { store_id: [3; 16], generation: 5, audit_head: 8 };
        idx.save(&path, stamp).expect("save");
        let (back, loaded) = ExactIndex::load(&path, DIM).expect("load");
        assert_eq!(loaded, stamp);
        for q in v.chunks(DIM).take(20) {
            assert_eq!(
                idx.search(q, &SearchParams::top(5)).expect("a"),
                back.search(q, &SearchParams::top(5)).expect("b")
            );
        }
        let mut raw = std::fs::read(&path).expect("read");
        raw.truncate(raw.len() - 3);
        std::fs::write(&path, &raw).expect("write");
        assert!(matches!(ExactIndex::load(&path, DIM), Err(IndexError::Corrupt { .. })));
        assert!(matches!(idx.insert(1, 0, &[0.1; DIM]), Err(IndexError::NotUnitLength { .. })));
        assert!(matches!(idx.search(&[0.0; 3], &SearchParams::top(1)), Err(IndexError::DimensionMismatch { .. })));
    }
}
