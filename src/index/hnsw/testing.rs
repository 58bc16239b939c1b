//! Fixtures the HNSW unit tests share: clustered unit vectors, a small graph built beside an exact scan of the same
//! data, and recall against that scan.

use super::{HnswConfig, HnswIndex};
use crate::index::synthetic::{clustered_unit_vectors, recall_at_k, ClusterSpec};
use crate::index::{AnnIndex, ExactIndex, Neighbour, SearchParams};

pub(super) const DIM: usize = 32;

pub(super) fn data(n: usize, stream: u64) -> Vec<f32> {
    clustered_unit_vectors(&ClusterSpec { dim: DIM, clusters: 20, spread: 1.0, seed: 1 }, n, stream)
}

pub(super) fn build(n: usize, labels: u32) -> (HnswIndex, ExactIndex, Vec<f32>) {
    let v = data(n, 1);
    let keys: Vec<u64> = (0..n as u64).map(|k| k * 3 + 1).collect();
    let labs: Vec<u32> = (0..n as u32).map(|i| i % labels).collect();
    let hnsw = HnswIndex::new(DIM, HnswConfig { m: 8, ef_construction: 64, ef_search: 32, ..Default::default() });
    hnsw.insert_flat(&keys, &labs, &v).expect("hnsw build");
    let exact = ExactIndex::new(DIM);
    exact.insert_flat(&keys, &labs, &v).expect("exact build");
    (hnsw, exact, v)
}

pub(super) fn recall(hnsw: &HnswIndex, exact: &ExactIndex, queries: &[f32], params: &SearchParams) -> f64 {
    let got: Vec<Vec<Neighbour>> = queries.chunks(DIM).map(|q| hnsw.search(q, params).expect("search")).collect();
    let truth: Vec<Vec<Neighbour>> = queries.chunks(DIM).map(|q| exact.search(q, params).expect("exact")).collect();
    recall_at_k(&got, &truth, params.k)
}
