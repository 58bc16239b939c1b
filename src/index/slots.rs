//! Fixed-stride slot storage whose addresses never move: geometric segments of anonymous memory, so that readers
//! can hold raw pointers into it while writers grow it, without a lock on the read path.
//!
//! Segment `k` holds `base << k` slots. Anonymous mappings are zero-filled and committed lazily by the kernel, so the
//! doubling reserve costs address space, not resident memory.

use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use memmap2::MmapMut;
use parking_lot::Mutex;

use super::IndexError;

const MAX_SEGMENTS: usize = 40;
const MIN_BASE_LOG2: u32 = 10;

pub(crate) struct Slots {
    stride: usize,
    /// log2 of the first segment's slot count; fixed by the first growth.
    base_log2: AtomicU32,
    segments: [AtomicPtr<u8>; MAX_SEGMENTS],
    capacity: AtomicUsize,
    /// Owns the mappings (dropping them unmaps); the lock also serialises growth.
    maps: Mutex<Vec<MmapMut>>,
}

impl Slots {
    pub(crate) fn new(stride: usize) -> Self {
        Self {
            stride,
            base_log2: AtomicU32::new(MIN_BASE_LOG2),
            segments: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
            capacity: AtomicUsize::new(0),
            maps: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Acquire)
    }

    /// Bytes of address space reserved so far.
    pub(crate) fn reserved_bytes(&self) -> usize {
        self.capacity() * self.stride
    }

    /// Grows until at least `slots` slots exist. The first growth sizes the first segment to `slots`, so that a bulk
    /// load or a known batch lands in one contiguous segment.
    pub(crate) fn ensure(&self, slots: usize) -> Result<(), IndexError> {
        if self.capacity() >= slots {
            return Ok(());
        }
        let mut maps = self.maps.lock();
        if maps.is_empty() {
            let base_log2 = slots.max(1).next_power_of_two().trailing_zeros().max(MIN_BASE_LOG2);
            self.base_log2.store(base_log2, Ordering::Relaxed);
        }
        let base_log2 = self.base_log2.load(Ordering::Relaxed);
        while self.capacity.load(Ordering::Relaxed) < slots {
            let k = maps.len();
            if k >= MAX_SEGMENTS {
                return Err(IndexError::Full { capacity: self.capacity.load(Ordering::Relaxed) });
            }
            let count = 1usize << (base_log2 as usize + k);
            let bytes = count.checked_mul(self.stride).ok_or(IndexError::Full { capacity: count })?;
            let mut map = MmapMut::map_anon(bytes).map_err(|source| IndexError::Allocation { bytes, source })?;
            // Graph walks touch records at random: 2 MiB pages turn most of their TLB misses into hits. A hint only
            // (the kernel may decline), so a refusal is not an error.
            #[cfg(target_os = "linux")]
            let _ = map.advise(memmap2::Advice::HugePage);
            self.segments[k].store(map.as_mut_ptr(), Ordering::Release);
            maps.push(map);
            let capacity = ((1usize << (k + 1)) - 1) << base_log2;
            // Release: a reader that sees the new capacity also sees the segment pointer.
            self.capacity.store(capacity, Ordering::Release);
        }
        Ok(())
    }

    /// Address of `slot`.
    ///
    /// # Safety
    /// `slot` must be below a capacity this thread has observed (through `ensure` or a happens-before chain from it).
    #[inline(always)]
    pub(crate) unsafe fn ptr(&self, slot: u32) -> *mut u8 {
        let base_log2 = self.base_log2.load(Ordering::Relaxed);
        let j = u64::from(slot) + (1u64 << base_log2);
        let top = 63 - j.leading_zeros();
        let k = (top - base_log2) as usize;
        let offset = (j - (1u64 << top)) as usize;
        // SAFETY: the caller guarantees the slot exists, so segment `k` is mapped and `offset` is inside it.
        unsafe { self.segments.get_unchecked(k).load(Ordering::Acquire).add(offset * self.stride) }
    }

    /// The first `slots` slots as contiguous byte runs, in slot order (for saving and loading).
    ///
    /// # Safety
    /// `slots` must not exceed the capacity; the caller must ensure no one writes the runs while they are read
    /// through the returned pointers, or that it is the only writer.
    pub(crate) unsafe fn runs(&self, slots: usize) -> Vec<(*mut u8, usize)> {
        let base_log2 = self.base_log2.load(Ordering::Relaxed) as usize;
        let mut runs = Vec::new();
        let mut done = 0usize;
        let mut k = 0usize;
        while done < slots {
            let count = (1usize << (base_log2 + k)).min(slots - done);
            runs.push((self.segments[k].load(Ordering::Acquire), count * self.stride));
            done += count;
            k += 1;
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_keep_their_contents_and_addresses_across_growth() {
        let slots = Slots::new(12);
        slots.ensure(5).expect("first segment");
        let first = unsafe { slots.ptr(3) };
        for s in 0..5u32 {
            unsafe { slots.ptr(s).cast::<u32>().write(s * 7) };
        }
        slots.ensure(50_000).expect("growth");
        assert_eq!(unsafe { slots.ptr(3) }, first);
        for s in 0..5u32 {
            assert_eq!(unsafe { slots.ptr(s).cast::<u32>().read() }, s * 7);
        }
        for s in 0..50_000u32 {
            unsafe { slots.ptr(s).add(4).cast::<u32>().write(s) };
        }
        for s in (0..50_000u32).step_by(977) {
            assert_eq!(unsafe { slots.ptr(s).add(4).cast::<u32>().read() }, s);
        }
        let runs = unsafe { slots.runs(50_000) };
        assert_eq!(runs.iter().map(|r| r.1).sum::<usize>(), 50_000 * 12);
        assert_eq!(runs[0].0, unsafe { slots.ptr(0) });
    }

    #[test]
    fn first_growth_sizes_one_contiguous_segment() {
        let slots = Slots::new(64);
        slots.ensure(300_000).expect("reserve");
        let runs = unsafe { slots.runs(300_000) };
        assert_eq!(runs.len(), 1);
    }
}
