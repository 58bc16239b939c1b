//! Synthetic templates for the index's tests and benchmarks: a seeded clustered-unit-vector generator, and recall@k,
//! the measure an approximate search is scored by against the exact one.
//!
//! Generator: `clusters` centres drawn uniformly on the unit sphere (normalised gaussians); each point picks a
//! centre uniformly and adds isotropic gaussian noise of total expected norm `spread` (per-component sigma
//! `spread / sqrt(dim)`), then is normalised. With `spread` 1.0 a point's cosine to its centre is about 0.71 and two
//! points of one cluster about 0.5, so neighbours inside a cluster are close to ties and the search has real work to
//! do; queries come from the same centres with an independent noise stream.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::Neighbour;

/// Shape of a clustered unit-vector data set; the same spec and stream always give the same vectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterSpec {
    pub dim: usize,
    pub clusters: usize,
    /// Expected norm of the noise added to a centre before normalising.
    pub spread: f32,
    /// Seeds the centres.
    pub seed: u64,
}

/// SplitMix64's finaliser: derives independent seeds, and a fixed pseudo-random order of keys for the bench.
pub(super) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Standard normal sample (Box–Muller; one of the pair is enough here).
fn gaussian(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt() as f32;
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// `n` unit vectors (row-major) around the spec's centres; `stream` selects an independent noise sequence (base set
/// and queries use different streams). Generated in parallel in fixed chunks, so the output does not depend on the
/// thread count.
pub fn clustered_unit_vectors(spec: &ClusterSpec, n: usize, stream: u64) -> Vec<f32> {
    const CHUNK: usize = 4096;
    let dim = spec.dim.max(1);
    let clusters = spec.clusters.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(mix(spec.seed));
    let mut centres = vec![0f32; clusters * dim];
    for c in centres.chunks_mut(dim) {
        c.iter_mut().for_each(|x| *x = gaussian(&mut rng));
        normalise(c);
    }
    let sigma = spec.spread / (dim as f32).sqrt();
    let mut out = vec![0f32; n * dim];
    out.par_chunks_mut(CHUNK * dim).enumerate().for_each(|(chunk, rows)| {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(spec.seed ^ mix(stream.wrapping_add(1)) ^ mix(chunk as u64 + 7)));
        for v in rows.chunks_mut(dim) {
            let c = rng.random_range(0..clusters);
            for (x, centre) in v.iter_mut().zip(&centres[c * dim..(c + 1) * dim]) {
                *x = centre + sigma * gaussian(&mut rng);
            }
            normalise(v);
        }
    });
    out
}

/// Mean fraction of the true top-k found (ties are not special-cased: exact similarities rarely tie).
pub fn recall_at_k(got: &[Vec<Neighbour>], truth: &[Vec<Neighbour>], k: usize) -> f64 {
    let mut sum = 0.0;
    let mut counted = 0usize;
    for (g, t) in got.iter().zip(truth) {
        let want = t.len().min(k);
        if want == 0 {
            continue;
        }
        let hits = t[..want].iter().filter(|n| g.iter().take(k).any(|x| x.key == n.key)).count();
        sum += hits as f64 / want as f64;
        counted += 1;
    }
    if counted == 0 {
        1.0
    } else {
        sum / counted as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_unit_and_clustered() {
        let spec = ClusterSpec { dim: 64, clusters: 10, spread: 1.0, seed: 5 };
        let a = clustered_unit_vectors(&spec, 5000, 0);
        assert_eq!(a, clustered_unit_vectors(&spec, 5000, 0));
        assert_ne!(a, clustered_unit_vectors(&spec, 5000, 1));
        for v in a.chunks(64) {
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4);
        }
        // Each point's nearest other point is far more similar than a random pair: the data is clustered.
        let dot =
            |i: usize, j: usize| a[i * 64..][..64].iter().zip(&a[j * 64..][..64]).map(|(x, y)| x * y).sum::<f32>();
        let best: f32 = (1..5000).map(|j| dot(0, j)).fold(f32::MIN, f32::max);
        let mean: f32 = (1..5000).map(|j| dot(0, j)).sum::<f32>() / 4999.0;
        assert!(best > 0.4 && mean.abs() < 0.2, "best {best}, mean {mean}");
    }
}
