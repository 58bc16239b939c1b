//! Criterion benches of the gallery index: dot kernels per SIMD level, exact and HNSW search at 10k and 100k
//! templates, and single inserts into a live HNSW graph. Kept short; the full comparison against hnswlib is
//! `facematch bench index` + `scripts/ann_side_by_side.py` (docs/ann-index.md).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use facematch::index::synthetic::{clustered_unit_vectors, ClusterSpec};
use facematch::index::{AnnIndex, ExactIndex, HnswConfig, HnswIndex, SearchParams, SimdLevel};

const DIM: usize = 128;

fn spec() -> ClusterSpec {
    ClusterSpec { dim: DIM, clusters: 1000, spread: 1.0, seed: 42 }
}

fn dot_kernels(c: &mut Criterion) {
    let mut group = c.benchmark_group("dot");
    for dim in [128usize, 256] {
        let v = clustered_unit_vectors(&ClusterSpec { dim, ..spec() }, 2, 0);
        let (a, b) = v.split_at(dim);
        for level in [SimdLevel::Scalar, SimdLevel::Avx2Fma, SimdLevel::Avx512] {
            let level = SimdLevel::detect().capped(level);
            group.bench_function(BenchmarkId::new(format!("{level:?}"), dim), |bench| {
                bench.iter(|| level.dot(black_box(a), black_box(b)))
            });
        }
    }
    group.finish();
}

fn search(c: &mut Criterion) {
    let queries = clustered_unit_vectors(&spec(), 256, 1);
    let mut group = c.benchmark_group("search_k10");
    group.measurement_time(Duration::from_secs(3)).sample_size(20);
    for n in [10_000usize, 100_000] {
        let base = clustered_unit_vectors(&spec(), n, 0);
        let keys: Vec<u64> = (0..n as u64).collect();
        let labels = vec![0u32; n];
        let exact = ExactIndex::new(DIM);
        exact.insert_flat(&keys, &labels, &base).expect("exact build");
        let hnsw = HnswIndex::new(DIM, HnswConfig::default());
        hnsw.insert_flat(&keys, &labels, &base).expect("hnsw build");
        let mut i = 0usize;
        group.bench_function(BenchmarkId::new("exact", n), |bench| {
            bench.iter(|| {
                i = (i + 1) % 256;
                exact.search(&queries[i * DIM..(i + 1) * DIM], &SearchParams::top(10)).expect("search")
            })
        });
        for ef in [32usize, 64] {
            let params = SearchParams { k: 10, ef: Some(ef), filter: Default::default() };
            group.bench_function(BenchmarkId::new(format!("hnsw_ef{ef}"), n), |bench| {
                bench.iter(|| {
                    i = (i + 1) % 256;
                    hnsw.search(&queries[i * DIM..(i + 1) * DIM], &params).expect("search")
                })
            });
        }
    }
    group.finish();
}

fn insert(c: &mut Criterion) {
    let n = 10_000;
    let base = clustered_unit_vectors(&spec(), n, 0);
    let extra = clustered_unit_vectors(&spec(), 4096, 2);
    let keys: Vec<u64> = (0..n as u64).collect();
    let hnsw = HnswIndex::new(DIM, HnswConfig::default());
    hnsw.insert_flat(&keys, &vec![0; n], &base).expect("build");
    let mut next = n as u64;
    let mut group = c.benchmark_group("insert");
    group.measurement_time(Duration::from_secs(3)).sample_size(20);
    group.bench_function("hnsw_into_10k", |bench| {
        bench.iter(|| {
            let row = (next as usize) % 4096;
            hnsw.insert(next, 0, &extra[row * DIM..(row + 1) * DIM]).expect("insert");
            next += 1;
        })
    });
    let exact = ExactIndex::new(DIM);
    exact.insert_flat(&keys, &vec![0; n], &base).expect("build");
    group.bench_function("exact_into_10k", |bench| {
        bench.iter(|| {
            let row = (next as usize) % 4096;
            exact.insert(next, 0, &extra[row * DIM..(row + 1) * DIM]).expect("insert");
            next += 1;
        })
    });
    group.finish();
}

criterion_group!(benches, dot_kernels, search, insert);
criterion_main!(benches);
