//! Nearest-neighbour search over the gallery's templates: the `AnnIndex` trait, its shared types and errors, an
//! exact scan (`ExactIndex`) and our own HNSW graph (`HnswIndex`).
//!
//! Similarity is the dot product of unit vectors (cosine); higher is closer. Every vector handed to an index is
//! checked (dimension, finite, unit length within `UNIT_TOLERANCE`) and refused with an error, never a panic.

#[cfg(feature = "lab")]
pub mod bench;
mod exact;
mod file;
mod hnsw;
mod simd;
mod slots;
#[cfg(any(test, feature = "lab"))]
pub mod synthetic;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use exact::{ExactIndex, Int8Prefilter};
pub use hnsw::{ConsolidationReport, HnswConfig, HnswIndex};
pub use simd::SimdLevel;

/// The gallery's template id.
pub type TemplateKey = u64;

/// How far a vector's norm may stray from 1 before it is refused.
pub const UNIT_TOLERANCE: f32 = 1e-3;

/// One search hit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Neighbour {
    pub key: TemplateKey,
    /// Cosine similarity (dot product of unit vectors), computed exactly in f32.
    pub similarity: f32,
}

/// Which templates a search may return; labels are watchlist ids and each template has exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LabelFilter {
    #[default]
    All,
    Only(Vec<u32>),
}

/// What a search asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchParams {
    pub k: usize,
    /// Size of the dynamic candidate list (HNSW); `None` uses the index's configured default. Ignored by the exact scan.
    pub ef: Option<usize>,
    pub filter: LabelFilter,
}

impl SearchParams {
    /// The `k` best over all labels with the index's default effort.
    pub fn top(k: usize) -> Self {
        Self { k, ef: None, filter: LabelFilter::All }
    }
}

/// A snapshot of an index's size and footprint.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct IndexStats {
    /// `hnsw` or `exact`.
    #[schema(value_type = String)]
    pub kind: &'static str,
    pub dimension: usize,
    /// Entries a search can return.
    pub live: usize,
    /// Removed entries still kept as traversable tombstones (HNSW; always 0 for the exact scan).
    pub deleted: usize,
    /// Slots freed by consolidation and waiting to be reused by inserts.
    pub free_slots: usize,
    /// Distinct labels among live entries.
    pub labels: usize,
    /// Bytes the index holds in use (vectors, graph, maps); untouched reserve is not counted.
    pub memory_bytes: usize,
    /// Address space reserved for growth (lazily committed by the OS, so mostly not resident).
    pub reserved_bytes: usize,
    /// Highest HNSW layer (0 for the exact scan).
    pub max_level: usize,
    pub simd: SimdLevel,
}

/// Which gallery an index file was built from: the store's UUID, its change counter and its newest audit entry at
/// the time. An index is only valid for the store it names, at exactly that generation; a store whose generation or
/// audit head is behind the stamp's lost changes that the index saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexStamp {
    pub store_id: [u8; 16],
    pub generation: u64,
    pub audit_head: u64,
}

/// Everything that can go wrong in an index operation.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("vector dimension mismatch: index has {expected}, vector has {actual}")]
    DimensionMismatch { expected: usize, actual: usize },
    #[error("vector is not unit length: norm {norm}")]
    NotUnitLength { norm: f32 },
    #[error("vector component {position} is not finite")]
    NotFinite { position: usize },
    #[error("template key {0} is already in the index")]
    DuplicateKey(TemplateKey),
    #[error("search parameters invalid: {reason}")]
    InvalidParams { reason: &'static str },
    #[error("index is full: at most {capacity} slots")]
    Full { capacity: usize },
    #[error("index memory: mapping {bytes} bytes failed")]
    Allocation {
        bytes: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("index file {path}: i/o failed")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("index file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("index file {path} holds a {found} index, not {expected}")]
    WrongKind { path: PathBuf, found: &'static str, expected: &'static str },
    #[error("index file {path} has version {found}, this build reads {supported}")]
    UnsupportedVersion { path: PathBuf, found: u32, supported: u32 },
    #[cfg(feature = "lab")]
    #[error("index bench: thread pool could not be built")]
    ThreadPool(#[source] rayon::ThreadPoolBuildError),
    #[cfg(feature = "lab")]
    #[error("index bench: report {path} could not be encoded")]
    Report {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The contract every gallery index fulfils. All methods take `&self`: indexes use interior mutability so that
/// searches can run while inserts and removals happen.
pub trait AnnIndex: Send + Sync {
    fn dimension(&self) -> usize;
    /// Live entries.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn insert(&self, key: TemplateKey, label: u32, vector: &[f32]) -> Result<(), IndexError>;
    /// Inserts many entries in parallel on the current rayon pool. The batch is validated as a whole first (shape,
    /// duplicates within the batch and against the index), so a bad batch inserts nothing.
    fn insert_batch(&self, items: &[(TemplateKey, u32, Vec<f32>)]) -> Result<(), IndexError>;
    /// Returns whether the key was present.
    fn remove(&self, key: TemplateKey) -> Result<bool, IndexError>;
    /// Sorted best first; similarities are exact f32 dot products.
    fn search(&self, query: &[f32], params: &SearchParams) -> Result<Vec<Neighbour>, IndexError>;
    fn stats(&self) -> IndexStats;
    /// Writes the index atomically (temporary file, fsync, rename); `stamp` names the gallery store and the
    /// generation the index was built at, returned again by `load`.
    fn save(&self, path: &Path, stamp: IndexStamp) -> Result<(), IndexError>;
    /// Removed entries still held as tombstones (what `consolidate` would free); cheap, unlike `stats`.
    fn tombstones(&self) -> usize {
        0
    }
    /// Drops tombstones from the structure so that their slots can be reused; a no-op where there are none.
    fn consolidate(&self) -> Result<ConsolidationReport, IndexError> {
        Ok(ConsolidationReport::default())
    }
}

/// Refuses vectors a cosine index cannot rank: wrong dimension, NaN/infinite components, or not unit length.
pub fn check_vector(dimension: usize, vector: &[f32]) -> Result<(), IndexError> {
    if vector.len() != dimension {
        return Err(IndexError::DimensionMismatch { expected: dimension, actual: vector.len() });
    }
    if let Some(position) = vector.iter().position(|x| !x.is_finite()) {
        return Err(IndexError::NotFinite { position });
    }
    // f64 accumulation so that the tolerance test itself is not the source of error at large dimensions.
    let norm = vector.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt() as f32;
    if (norm - 1.0).abs() > UNIT_TOLERANCE {
        return Err(IndexError::NotUnitLength { norm });
    }
    Ok(())
}

/// The allowed labels of a search, in a form cheap to test per candidate.
#[derive(Debug, Clone)]
pub(crate) enum LabelSet {
    All,
    Only(Vec<u32>),
}

impl LabelSet {
    pub(crate) fn from_filter(filter: &LabelFilter) -> Self {
        match filter {
            LabelFilter::All => Self::All,
            LabelFilter::Only(labels) => {
                let mut labels = labels.clone();
                labels.sort_unstable();
                labels.dedup();
                Self::Only(labels)
            }
        }
    }

    #[inline]
    pub(crate) fn allows(&self, label: u32) -> bool {
        match self {
            Self::All => true,
            // Watchlist filters are short; a linear scan beats hashing for the handful of labels usual here.
            Self::Only(labels) if labels.len() <= 16 => labels.contains(&label),
            Self::Only(labels) => labels.binary_search(&label).is_ok(),
        }
    }

    pub(crate) fn is_all(&self) -> bool {
        matches!(self, Self::All)
    }
}

/// Heap bytes of a std `HashMap`/`HashSet` with `capacity` and `entry` bytes per element: a power-of-two bucket
/// array at most 7/8 full, plus one control byte per bucket.
pub(crate) fn hash_table_bytes(capacity: usize, entry: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    (capacity * 8 / 7).next_power_of_two() * (entry + 1)
}

fn check_params(params: &SearchParams) -> Result<(), IndexError> {
    if params.k == 0 {
        return Err(IndexError::InvalidParams { reason: "k must be at least 1" });
    }
    if params.ef == Some(0) {
        return Err(IndexError::InvalidParams { reason: "ef must be at least 1" });
    }
    Ok(())
}

/// Top-k selection keyed by `order_key(-similarity) << 32 | row`, shared by both indexes.
pub(crate) mod rank {
    /// Maps an f32 to a u32 whose unsigned order is the float's order (finite values).
    #[inline(always)]
    pub(crate) fn order_key(x: f32) -> u32 {
        let bits = x.to_bits();
        if bits >> 31 == 1 {
            !bits
        } else {
            bits | 0x8000_0000
        }
    }

    #[inline(always)]
    pub(crate) fn from_order_key(key: u32) -> f32 {
        if key >> 31 == 1 {
            f32::from_bits(key & 0x7fff_ffff)
        } else {
            f32::from_bits(!key)
        }
    }

    /// Packs a similarity and a slot so that a smaller u64 is a better (more similar) hit.
    #[inline(always)]
    pub(crate) fn pack(similarity: f32, slot: u32) -> u64 {
        (u64::from(order_key(-similarity)) << 32) | u64::from(slot)
    }

    #[inline(always)]
    pub(crate) fn similarity(packed: u64) -> f32 {
        -from_order_key((packed >> 32) as u32)
    }

    #[inline(always)]
    pub(crate) fn slot(packed: u64) -> u32 {
        packed as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_vector_refuses_bad_shapes_and_values() {
        let mut v = vec![0.0f32; 8];
        v[0] = 1.0;
        assert!(check_vector(8, &v).is_ok());
        assert!(matches!(check_vector(9, &v), Err(IndexError::DimensionMismatch { expected: 9, actual: 8 })));
        v[3] = f32::NAN;
        assert!(matches!(check_vector(8, &v), Err(IndexError::NotFinite { position: 3 })));
        v[3] = f32::INFINITY;
        assert!(matches!(check_vector(8, &v), Err(IndexError::NotFinite { position: 3 })));
        v[3] = 0.5;
        assert!(matches!(check_vector(8, &v), Err(IndexError::NotUnitLength { .. })));
        assert!(matches!(check_vector(8, &[0.0; 8]), Err(IndexError::NotUnitLength { .. })));
    }

    #[test]
    fn packed_keys_order_by_similarity_and_round_trip() {
        let sims = [-1.0f32, -0.25, 0.0, 1e-7, 0.3, 0.999, 1.0];
        for pair in sims.windows(2) {
            assert!(rank::pack(pair[1], 7) < rank::pack(pair[0], 3), "{pair:?}");
        }
        for &s in &sims {
            let p = rank::pack(s, 42);
            assert_eq!(rank::similarity(p), s);
            assert_eq!(rank::slot(p), 42);
        }
    }

    #[test]
    fn label_set_matches_filter() {
        let few = LabelSet::from_filter(&LabelFilter::Only(vec![5, 1, 5]));
        assert!(few.allows(1) && few.allows(5) && !few.allows(2));
        let many = LabelSet::from_filter(&LabelFilter::Only((0..100).map(|x| x * 3).collect()));
        assert!(many.allows(297) && !many.allows(298));
        assert!(LabelSet::from_filter(&LabelFilter::All).allows(12345));
    }
}
