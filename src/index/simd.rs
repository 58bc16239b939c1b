//! Dot-product kernels (AVX-512, AVX2+FMA, portable scalar) chosen once at run time, and the dispatch that compiles
//! a whole search or insert for the chosen instruction set so that the kernel inlines into its hot loop.

use serde::{Deserialize, Serialize};

/// The instruction set the kernels run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum SimdLevel {
    Scalar,
    Avx2Fma,
    Avx512,
}

impl SimdLevel {
    /// The best level this CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Self::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Self::Avx2Fma;
            }
        }
        Self::Scalar
    }

    /// `self` if the CPU supports it, otherwise the best supported level below it; lets tests and benches pin a
    /// slower path without risking an illegal instruction.
    pub fn capped(self, cap: SimdLevel) -> Self {
        let rank = |l: SimdLevel| match l {
            SimdLevel::Scalar => 0,
            SimdLevel::Avx2Fma => 1,
            SimdLevel::Avx512 => 2,
        };
        if rank(cap) < rank(self) {
            cap
        } else {
            self
        }
    }

    /// Dot product for cold paths (validation, tests); hot loops go through `dispatch`.
    pub fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        struct Dot<'a>(&'a [f32], &'a [f32]);
        impl KernelTask for Dot<'_> {
            type Output = f32;
            #[inline(always)]
            fn run<K: Kernel>(self) -> f32 {
                let n = self.0.len().min(self.1.len());
                // SAFETY: both pointers are valid for `n` reads.
                unsafe { K::dot(self.0.as_ptr(), self.1.as_ptr(), n) }
            }
        }
        dispatch(self, Dot(a, b))
    }
}

/// A dot-product implementation; `dot` must only be called inside `dispatch` for the matching level.
pub(crate) trait Kernel {
    /// # Safety
    /// `a` and `b` must be valid for `n` f32 reads, and the CPU must support the kernel's instruction set.
    unsafe fn dot(a: *const f32, b: *const f32, n: usize) -> f32;
}

/// Work that is compiled once per kernel; `run` must be `#[inline(always)]` so that it (and the kernel calls in
/// it) inline into the `#[target_feature]` trampoline.
pub(crate) trait KernelTask {
    type Output;
    fn run<K: Kernel>(self) -> Self::Output;
}

/// Runs `task` with the kernel for `level`.
#[inline]
pub(crate) fn dispatch<T: KernelTask>(level: SimdLevel, task: T) -> T::Output {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level` only names a SIMD level that `detect` found on this CPU (or a lower one via `capped`).
        SimdLevel::Avx512 => unsafe { x86::run_avx512(task) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        SimdLevel::Avx2Fma => unsafe { x86::run_avx2(task) },
        _ => task.run::<ScalarKernel>(),
    }
}

pub(crate) struct ScalarKernel;

impl Kernel for ScalarKernel {
    #[inline(always)]
    unsafe fn dot(a: *const f32, b: *const f32, n: usize) -> f32 {
        // SAFETY: the caller guarantees `n` valid reads from both.
        let (a, b) = unsafe { (std::slice::from_raw_parts(a, n), std::slice::from_raw_parts(b, n)) };
        // Eight independent sums so that the compiler can keep them in vector lanes without reassociating.
        let mut acc = [0.0f32; 8];
        let mut ca = a.chunks_exact(8);
        let mut cb = b.chunks_exact(8);
        for (x, y) in (&mut ca).zip(&mut cb) {
            for i in 0..8 {
                acc[i] += x[i] * y[i];
            }
        }
        let mut tail = 0.0;
        for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
            tail += x * y;
        }
        (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
    }
}

/// Asks the cache hierarchy for the line holding `p`; a hint, so any address is safe.
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Kernel, KernelTask};

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    pub(super) unsafe fn run_avx512<T: KernelTask>(task: T) -> T::Output {
        task.run::<Avx512Kernel>()
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run_avx2<T: KernelTask>(task: T) -> T::Output {
        task.run::<Avx2Kernel>()
    }

    pub(super) struct Avx512Kernel;

    impl Kernel for Avx512Kernel {
        #[inline(always)]
        unsafe fn dot(a: *const f32, b: *const f32, n: usize) -> f32 {
            // SAFETY: only reached through `run_avx512`, so AVX-512F is enabled; reads stay below `n` (the tail
            // uses masked loads).
            unsafe {
                let mut s0 = _mm512_setzero_ps();
                let mut s1 = _mm512_setzero_ps();
                let mut s2 = _mm512_setzero_ps();
                let mut s3 = _mm512_setzero_ps();
                let mut i = 0;
                while i + 64 <= n {
                    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a.add(i)), _mm512_loadu_ps(b.add(i)), s0);
                    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a.add(i + 16)), _mm512_loadu_ps(b.add(i + 16)), s1);
                    s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a.add(i + 32)), _mm512_loadu_ps(b.add(i + 32)), s2);
                    s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a.add(i + 48)), _mm512_loadu_ps(b.add(i + 48)), s3);
                    i += 64;
                }
                while i + 16 <= n {
                    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a.add(i)), _mm512_loadu_ps(b.add(i)), s0);
                    i += 16;
                }
                if i < n {
                    let mask: __mmask16 = (1u16 << (n - i)) - 1;
                    let x = _mm512_maskz_loadu_ps(mask, a.add(i));
                    let y = _mm512_maskz_loadu_ps(mask, b.add(i));
                    s1 = _mm512_fmadd_ps(x, y, s1);
                }
                _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)))
            }
        }
    }

    pub(super) struct Avx2Kernel;

    impl Kernel for Avx2Kernel {
        #[inline(always)]
        unsafe fn dot(a: *const f32, b: *const f32, n: usize) -> f32 {
            // SAFETY: only reached through `run_avx2`, so AVX2 and FMA are enabled; reads stay below `n`.
            unsafe {
                let mut s0 = _mm256_setzero_ps();
                let mut s1 = _mm256_setzero_ps();
                let mut s2 = _mm256_setzero_ps();
                let mut s3 = _mm256_setzero_ps();
                let mut i = 0;
                while i + 32 <= n {
                    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(b.add(i)), s0);
                    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i + 8)), _mm256_loadu_ps(b.add(i + 8)), s1);
                    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i + 16)), _mm256_loadu_ps(b.add(i + 16)), s2);
                    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i + 24)), _mm256_loadu_ps(b.add(i + 24)), s3);
                    i += 32;
                }
                while i + 8 <= n {
                    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(b.add(i)), s0);
                    i += 8;
                }
                let s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
                let lo = _mm256_castps256_ps128(s);
                let hi = _mm256_extractf128_ps::<1>(s);
                let q = _mm_add_ps(lo, hi);
                let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
                let q = _mm_add_ss(q, _mm_shuffle_ps::<0b01>(q, q));
                let mut total = _mm_cvtss_f32(q);
                while i < n {
                    total += *a.add(i) * *b.add(i);
                    i += 1;
                }
                total
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn every_supported_kernel_matches_f64_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let best = SimdLevel::detect();
        for n in [1usize, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 100, 128, 129, 256, 512, 1000] {
            let a: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let reference: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
            for level in [SimdLevel::Scalar, SimdLevel::Avx2Fma, SimdLevel::Avx512] {
                let level = best.capped(level);
                let got = level.dot(&a, &b);
                assert!((f64::from(got) - reference).abs() < 1e-4 * (n as f64).sqrt(), "{level:?} n={n}");
            }
        }
    }

    #[test]
    fn capped_never_exceeds_the_cpu() {
        let best = SimdLevel::detect();
        assert_eq!(best.capped(SimdLevel::Avx512), best);
        assert_eq!(best.capped(SimdLevel::Scalar), SimdLevel::Scalar);
    }
}
