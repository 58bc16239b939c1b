//! Building the graph: the layer a new template reaches, the HNSW neighbour heuristic, linking a new node in (and
//! pruning the lists it joins), and single and bulk inserts.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};

use rayon::prelude::*;

use super::search::Scratch;
use super::{
    lock_list, pack_entry, unlock_list, unpack_entry, HnswIndex, DELETED, DOOMED, EMPTY_ENTRY, LEVEL_MASK, MAX_LEVEL,
};
use crate::index::rank::{pack, similarity, slot};
use crate::index::simd::{dispatch, Kernel, KernelTask};
use crate::index::{check_vector, IndexError, LabelSet, TemplateKey};

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl HnswIndex {
    fn level_for(&self, key: TemplateKey) -> usize {
        let h = splitmix64(self.config.seed ^ splitmix64(key));
        let u = ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        ((-u.ln() * self.level_mult) as usize).min(MAX_LEVEL)
    }

    /// The HNSW neighbour heuristic: walk candidates best first and keep one unless an already kept node is closer
    /// to it than the base is. `candidates` are packed (similarity to the base, slot), sorted best first.
    #[inline(always)]
    pub(super) unsafe fn select<K: Kernel>(&self, candidates: &[u64], m: usize, out: &mut Vec<u64>) {
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

    /// Inserts an already validated vector.
    pub(super) fn insert_checked(&self, key: TemplateKey, label: u32, vector: &[f32]) -> Result<(), IndexError> {
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
    pub(super) fn check_batch<'a>(
        &self,
        items: impl Iterator<Item = (TemplateKey, &'a [f32])>,
    ) -> Result<usize, IndexError> {
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

    pub(super) fn reserve(&self, additional: usize) -> Result<(), IndexError> {
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
}

#[cfg(test)]
mod tests {
    use super::super::testing::{data, recall, DIM};
    use super::super::HnswConfig;
    use super::*;
    use crate::index::{ExactIndex, LabelFilter, SearchParams, SimdLevel};

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
}
