//! The watchlist service core shared by the HTTP edge and the CLI: enrollment, search and verification over the
//! gallery (store of record), the ANN index (derived, rebuildable) and the face pipeline.
//!
//! Consistency: every change goes to the store first (durable when acknowledged), then to the index, under one
//! write lock, so the index always equals the store at some generation. Search results are resolved against the
//! store, so a template deleted a moment ago never appears even if a concurrent search saw it in the index.

mod bulk;
mod calibration;
mod enroll;
mod error;
mod principal;
mod records;
mod search;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

pub use bulk::{list_folder, BulkSummary, PhotoOutcome, PhotoStatus};
pub use calibration::{Calibration, DecisionStatistic};
pub use enroll::{EnrollOutcome, EnrollRequest, FaceChoice};
pub use error::{ErrorKind, ServiceError};
pub use principal::{Action, Principal, Role, UnknownRole};
pub use records::{ServiceStats, WatchlistRequest};
pub use search::{
    Candidate, FaceSearch, FaceSummary, SearchMode, SearchRequest, SearchResult, VerifyDecision, VerifyResult,
};

use crate::gallery::{GalleryStore, SqliteStore};
use crate::index::{AnnIndex, ExactIndex, HnswConfig, HnswIndex};
use crate::pipeline::FacePipeline;
use crate::quality::QualityPolicy;

/// Which ANN index serves searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    /// Exact SIMD scan: exact results, linear cost; right below ~50k templates.
    Exact,
    /// HNSW graph: sub-linear, recall ≥ 0.99 at the default effort.
    Hnsw,
}

/// Gallery and search settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GalleryConfig {
    /// Data directory holding the SQLite store of record and the ANN index file (default `data/`).
    pub data_dir: PathBuf,
    /// ANN index kind (default `hnsw`).
    pub index: IndexKind,
    /// HNSW links per node (default 16).
    pub hnsw_m: usize,
    /// HNSW build effort (default 200).
    pub hnsw_ef_construction: usize,
    /// HNSW search effort (default 256: recall@10 0.9993 at a million 256-d templates for 0.3 ms a query, where 128
    /// gives 0.9895 — docs/ann-index.md; raised
    /// when a search needs more candidates).
    pub hnsw_ef_search: usize,
    /// Opt-in: HNSW search effort of a first, short walk for identification-mode searches that decide on the top-1
    /// score (default none: every search walks at `hnsw_ef_search`). A traveller whose nearest template found lies
    /// more than `hnsw_identification_margin` below every alert threshold is then answered "no match" from the short
    /// walk; any other search is repeated in full. At a million templates ef 64 gives about 10 % more searches per
    /// second at concurrency 8, but on clustered synthetic templates it misses the true nearest for 6 % of queries,
    /// some by 0.4 cosine (docs/benchmarks.md): enable it only after measuring recall@1 and the top-1 shortfall on
    /// your own gallery (`facematch bench index` reports both).
    pub hnsw_ef_identification: Option<usize>,
    /// How close (cosine) to the lowest alert threshold the short walk's best template may come before the search
    /// is repeated in full (default 0.1); it must exceed the top-1 shortfall measured at that effort.
    pub hnsw_identification_margin: f32,
    /// With `index = "exact"`: scan int8 copies of the templates first and re-rank a shortlist of 10·k exactly
    /// (default false; faster at large sizes, recall measured by `facematch bench index`).
    pub exact_int8_prefilter: bool,
    /// Share of removed templates, among all the index holds, at which a deletion also consolidates the index
    /// (repairs the links around tombstones and frees their slots; default 0.2). Tombstones alone keep recall,
    /// they cost speed and memory; consolidation takes about 20 s per million templates, during which enrollments
    /// wait and searches go on.
    pub consolidate_deleted_share: f64,
    /// Candidates returned in investigation mode when the request does not say (default 50).
    pub default_k: usize,
    /// Largest k a request may ask for (default 200).
    pub max_k: usize,
    /// Alert FPIR of watchlists created without one (default 0.003, a checkpoint setting).
    pub default_alert_fpir: f64,
    /// Store a JPEG of the aligned face with each template, for reviewers (default true).
    pub store_thumbnails: bool,
}

impl Default for GalleryConfig {
    fn default() -> Self {
        GalleryConfig {
            data_dir: PathBuf::from("data"),
            index: IndexKind::Hnsw,
            hnsw_m: 16,
            hnsw_ef_construction: 200,
            hnsw_ef_search: 256,
            hnsw_ef_identification: None,
            hnsw_identification_margin: 0.1,
            exact_int8_prefilter: false,
            consolidate_deleted_share: 0.2,
            default_k: 50,
            max_k: 200,
            default_alert_fpir: 0.003,
            store_thumbnails: true,
        }
    }
}

/// How the index came up at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IndexOrigin {
    /// From its file, which recorded the store's generation.
    Loaded,
    /// From the store, because the file was missing, stale or unreadable.
    Rebuilt,
}

/// Index state for `/readyz` and `/v1/stats`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IndexState {
    pub stats: crate::index::IndexStats,
    pub generation: u64,
    #[schema(value_type = String)]
    pub path: PathBuf,
    pub origin: IndexOrigin,
    pub startup_ms: f64,
}

/// The core: pipeline + store + index.
pub struct WatchlistService {
    pipeline: Arc<FacePipeline>,
    store: Arc<dyn GalleryStore>,
    index: Arc<dyn AnnIndex>,
    calibration: Option<Calibration>,
    quality: QualityPolicy,
    config: GalleryConfig,
    /// Serialises store+index changes so that the index equals the store at a known generation.
    write_lock: Mutex<()>,
    index_path: PathBuf,
    origin: IndexOrigin,
    startup_ms: f64,
}

impl WatchlistService {
    /// Opens the store in `config.data_dir`, then loads the index file if it matches the store's generation or
    /// rebuilds it from the store (and saves it).
    pub fn open(pipeline: Arc<FacePipeline>, config: GalleryConfig, quality: QualityPolicy) -> Result<Self, ServiceError> {
        let started = Instant::now();
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| ServiceError::DataDir { path: config.data_dir.clone(), source })?;
        let store: Arc<dyn GalleryStore> = Arc::new(SqliteStore::open(&config.data_dir)?);
        let manifest = pipeline.recognizer().manifest();
        let calibration = manifest.calibration.as_ref().map(Calibration::from_spec).transpose()?;
        let model_id = manifest.id.clone();
        let dimension = pipeline.recognizer().dimension();
        store.bind_model(&model_id, dimension, &manifest.template_fingerprint())?;
        let index_path = config.data_dir.join(format!("index-{model_id}-{}.bin", kind_name(config.index)));
        let (index, origin) = open_index(&*store, &model_id, dimension, &config, &index_path)?;
        let startup_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(templates = index.len(), ?origin, startup_ms, "gallery ready");
        Ok(WatchlistService {
            pipeline,
            store,
            index,
            calibration,
            quality,
            config,
            write_lock: Mutex::new(()),
            index_path,
            origin,
            startup_ms,
        })
    }

    pub fn pipeline(&self) -> &Arc<FacePipeline> {
        &self.pipeline
    }
    pub fn config(&self) -> &GalleryConfig {
        &self.config
    }
    pub fn model_id(&self) -> &str {
        &self.pipeline.recognizer().manifest().id
    }
    pub fn calibration(&self) -> Option<&Calibration> {
        self.calibration.as_ref()
    }

    pub fn index_state(&self) -> Result<IndexState, ServiceError> {
        Ok(IndexState {
            stats: self.index.stats(),
            generation: self.store.generation()?,
            path: self.index_path.clone(),
            origin: self.origin,
            startup_ms: self.startup_ms,
        })
    }

    /// Writes the index file at the store's current generation (on shutdown, so the next start loads instead of
    /// rebuilding).
    pub fn persist_index(&self) -> Result<(), ServiceError> {
        let _guard = self.write_lock.lock();
        let generation = self.store.generation()?;
        self.index.save(&self.index_path, generation)?;
        tracing::info!(generation, path = %self.index_path.display(), "index saved");
        Ok(())
    }

    /// Consolidates the index once tombstones pass `consolidate_deleted_share`; the caller holds the write lock,
    /// so the index still equals the store at its generation afterwards.
    fn consolidate_when_due(&self) -> Result<(), ServiceError> {
        // Runs on every deletion: `stats` would walk the whole exact index, these two counters are O(1).
        let (deleted, live) = (self.index.tombstones(), self.index.len());
        if deleted == 0 || (deleted as f64) < self.config.consolidate_deleted_share * (live + deleted) as f64 {
            return Ok(());
        }
        let report = self.index.consolidate()?;
        tracing::info!(removed = deleted, live, seconds = report.seconds, "index consolidated");
        Ok(())
    }

    /// Appends the audit entry of a use (a search, a verification): uses change nothing, so the entry is the only
    /// write.
    fn audit_use(&self, entry: crate::gallery::AuditEntry) -> Result<i64, ServiceError> {
        Ok(self.store.append_audit(entry)?)
    }
}

fn kind_name(kind: IndexKind) -> &'static str {
    match kind {
        IndexKind::Exact => "exact",
        IndexKind::Hnsw => "hnsw",
    }
}

fn hnsw_config(config: &GalleryConfig) -> HnswConfig {
    HnswConfig {
        m: config.hnsw_m,
        ef_construction: config.hnsw_ef_construction,
        ef_search: config.hnsw_ef_search,
        ..HnswConfig::default()
    }
}

/// Loads the index file when it records the store's current generation; otherwise rebuilds from the store.
fn exact_options(index: ExactIndex, config: &GalleryConfig) -> ExactIndex {
    if config.exact_int8_prefilter {
        index.with_int8_prefilter(crate::index::Int8Prefilter::default())
    } else {
        index
    }
}

fn open_index(
    store: &dyn GalleryStore,
    model_id: &str,
    dimension: usize,
    config: &GalleryConfig,
    path: &Path,
) -> Result<(Arc<dyn AnnIndex>, IndexOrigin), ServiceError> {
    let current = store.generation()?;
    if path.is_file() {
        let loaded: Result<(Arc<dyn AnnIndex>, u64), _> = match config.index {
            IndexKind::Hnsw => HnswIndex::load(path, dimension).map(|(i, g)| (Arc::new(i) as Arc<dyn AnnIndex>, g)),
            IndexKind::Exact => ExactIndex::load(path, dimension)
                .map(|(i, g)| (Arc::new(exact_options(i, config)) as Arc<dyn AnnIndex>, g)),
        };
        match loaded {
            Ok((index, generation)) if generation == current => return Ok((index, IndexOrigin::Loaded)),
            Ok((_, generation)) => tracing::warn!(generation, current, "index file is stale; rebuilding from the store"),
            Err(error) => tracing::warn!(error = %error, "index file unreadable; rebuilding from the store"),
        }
    }
    let index: Arc<dyn AnnIndex> = match config.index {
        IndexKind::Hnsw => Arc::new(HnswIndex::new(dimension, hnsw_config(config))),
        IndexKind::Exact => Arc::new(exact_options(ExactIndex::new(dimension), config)),
    };
    let mut items = Vec::new();
    let generation = store.for_each_template(model_id, &mut |key, label, embedding| {
        items.push((key as u64, label, embedding.to_vec()));
    })?;
    index.insert_batch(&items)?;
    index.save(path, generation)?;
    Ok((index, IndexOrigin::Rebuilt))
}
