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
mod search;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

pub use bulk::{list_folder, BulkSummary, PhotoOutcome};
pub use calibration::{Calibration, DecisionStatistic};
pub use enroll::{EnrollOutcome, EnrollRequest, FaceChoice};
pub use error::{ErrorKind, ServiceError};
pub use search::{Candidate, FaceSearch, FaceSummary, SearchMode, SearchRequest, SearchResult, VerifyResult};

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

/// Who is asking and why; recorded in the audit trail with every search and change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Actor {
    pub name: String,
    pub role: String,
    pub purpose: Option<String>,
}

impl Actor {
    pub fn system(purpose: &str) -> Actor {
        Actor { name: "facematch".into(), role: "system".into(), purpose: Some(purpose.into()) }
    }
}

/// Index state for `/readyz` and `/v1/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct IndexState {
    pub stats: crate::index::IndexStats,
    pub generation: u64,
    pub path: PathBuf,
    /// How the index came up at start: `loaded` from its file, or `rebuilt` from the store.
    pub origin: &'static str,
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
    origin: &'static str,
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
        tracing::info!(templates = index.len(), origin, startup_ms, "gallery ready");
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
    pub fn store(&self) -> &Arc<dyn GalleryStore> {
        &self.store
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

    /// Deletes a subject and its templates; returns the template ids removed.
    pub fn delete_subject(&self, id: i64, actor: &Actor) -> Result<Vec<i64>, ServiceError> {
        let removed = {
            let _guard = self.write_lock.lock();
            let removed = self.store.delete_subject(id)?;
            for key in &removed {
                self.index.remove(*key as u64)?;
            }
            self.consolidate_when_due()?;
            removed
        };
        self.audit(actor, "delete_subject", Some(format!("subject/{id}")), serde_json::json!({ "templates": removed }))?;
        Ok(removed)
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

    /// Deletes one template of a subject.
    pub fn delete_template(&self, subject_id: i64, template_id: i64, actor: &Actor) -> Result<bool, ServiceError> {
        let removed = {
            let _guard = self.write_lock.lock();
            let removed = self.store.delete_template(subject_id, template_id)?;
            if removed {
                self.index.remove(template_id as u64)?;
                self.consolidate_when_due()?;
            }
            removed
        };
        if removed {
            self.audit(actor, "delete_template", Some(format!("subject/{subject_id}/faces/{template_id}")), serde_json::json!({}))?;
        }
        Ok(removed)
    }

    /// Updates a subject; moving it to another watchlist relabels its templates in the index.
    pub fn update_subject(
        &self,
        id: i64,
        patch: crate::gallery::SubjectPatch,
        actor: &Actor,
    ) -> Result<crate::gallery::Subject, ServiceError> {
        let subject = {
            let _guard = self.write_lock.lock();
            let before = self.store.get_subject(id)?;
            let subject = self.store.update_subject(id, patch)?;
            if subject.watchlist != before.watchlist {
                let label = self.store.get_watchlist(&subject.watchlist)?.id;
                for (key, embedding) in self.store.subject_embeddings(id, self.model_id())? {
                    self.index.remove(key as u64)?;
                    self.index.insert(key as u64, label, &embedding)?;
                }
                self.consolidate_when_due()?;
            }
            subject
        };
        self.audit(actor, "update_subject", Some(format!("subject/{id}")), serde_json::json!({}))?;
        Ok(subject)
    }

    /// Appends to the tamper-evident audit trail.
    pub fn audit(
        &self,
        actor: &Actor,
        action: &str,
        target: Option<String>,
        details: serde_json::Value,
    ) -> Result<i64, ServiceError> {
        Ok(self.store.append_audit(crate::gallery::AuditEntry {
            actor: actor.name.clone(),
            role: actor.role.clone(),
            action: action.to_string(),
            purpose: actor.purpose.clone(),
            target,
            details,
        })?)
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
) -> Result<(Arc<dyn AnnIndex>, &'static str), ServiceError> {
    let current = store.generation()?;
    if path.is_file() {
        let loaded: Result<(Arc<dyn AnnIndex>, u64), _> = match config.index {
            IndexKind::Hnsw => HnswIndex::load(path, dimension).map(|(i, g)| (Arc::new(i) as Arc<dyn AnnIndex>, g)),
            IndexKind::Exact => ExactIndex::load(path, dimension)
                .map(|(i, g)| (Arc::new(exact_options(i, config)) as Arc<dyn AnnIndex>, g)),
        };
        match loaded {
            Ok((index, generation)) if generation == current => return Ok((index, "loaded")),
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
    Ok((index, "rebuilt"))
}
