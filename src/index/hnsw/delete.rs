//! Deletion: a removed template becomes a tombstone that searches traverse but never return, and consolidation
//! makes tombstones unreachable (repairing the lists that pointed at them) so that inserts can reuse their slots.

use std::sync::atomic::Ordering;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use super::{
    bit, lock_list, pack_entry, unlock_list, unpack_entry, HnswIndex, DELETED, DOOMED, EMPTY_ENTRY, FREED, LEVEL_MASK,
};
use crate::index::rank::{pack, slot};
use crate::index::simd::{dispatch, Kernel, KernelTask};
use crate::index::{IndexError, TemplateKey};

/// What a consolidation did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ConsolidationReport {
    /// Tombstones made unreachable and put on the free list.
    pub freed: usize,
    /// Neighbour lists rewritten because they pointed at a freed tombstone.
    pub repaired_lists: usize,
    pub seconds: f64,
}

/// Buffers reused across the slots one consolidation worker repairs.
#[derive(Default)]
struct RepairWork {
    links: Vec<u32>,
    extra: Vec<u32>,
    cands: Vec<u64>,
    kept: Vec<u64>,
}

impl HnswIndex {
    /// `AnnIndex::remove`: marks the entry deleted, and consolidates once tombstones pass
    /// `HnswConfig::consolidate_fraction`.
    pub(super) fn remove_key(&self, key: TemplateKey) -> Result<bool, IndexError> {
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
}

#[cfg(test)]
mod tests {
    use super::super::testing::{build, data, recall, DIM};
    use super::super::HnswConfig;
    use super::*;
    use crate::index::{AnnIndex, ExactIndex, LabelFilter, SearchParams};
    use std::collections::HashSet;

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
}
