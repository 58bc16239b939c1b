//! The watchlist service core shared by the HTTP edge and the CLI: enrollment, search and verification over the
//! gallery (store of record), the ANN index (derived, rebuildable) and the face pipeline.
//!
//! Consistency: every change goes to the store first (durable when acknowledged), then to the index, under one
//! write lock, so the index always equals the store at some generation. Search results are resolved against the
//! store, so a template deleted a moment ago never appears even if a concurrent search saw it in the index.

mod access;
mod alerts;
mod audit;
mod audit_details;
mod backup;
mod bulk;
mod calibration;
mod enroll;
mod error;
mod hits;
mod job_intake;
mod job_runner;
mod jobs;
mod keys;
mod migration;
mod principal;
mod records;
mod retention;
mod search;
mod storage;
mod webhooks;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

pub use access::Permission;
pub use alerts::{AlertFeed, AlertFilter, AlertsConfig};
pub use audit::{Adoption, AuditStatus, AuditVerdict};
pub use backup::{backup_gallery, restore_gallery, RestoreReport};
pub use bulk::{list_folder, BulkSummary, PhotoOutcome, PhotoStatus};
pub use calibration::{Calibration, DecisionStatistic};
pub use enroll::{EnrollOutcome, EnrollRequest, FaceChoice};
pub use error::{ErrorKind, ServiceError};
pub use hits::{HitContext, HitsConfig};
pub use job_intake::{sniff, IntakeLimits, Sniffed, StagedPart};
pub use job_runner::{JobRunner, YieldTo};
pub use jobs::{photo_line, JobRequest, JobsConfig, MAX_JOB_K};
pub use migration::{MigrationReport, MigrationRequest};
pub use keys::{validate_purpose, AccessConfig, AuthFailure, IssuedKey, KeyRequest};
pub use principal::{Action, Principal, Role, UnknownRole};
pub use records::{ServiceStats, WatchlistRequest};
pub use retention::{Membership, MembershipReport};
pub use storage::CheckpointTimer;
pub use webhooks::{backoff, signature, DeliveryJob, IssuedWebhook, WebhookRequest};
pub use search::{
    Candidate, FaceSearch, FaceSummary, SearchMode, SearchRequest, SearchResult, VerifyDecision, VerifyResult,
};

use crate::gallery::{AuditAnchor, GalleryStore, SqliteStore};
use crate::index::{AnnIndex, ExactIndex, HnswConfig, HnswIndex, IndexStamp};
use crate::pipeline::FacePipeline;
use crate::quality::QualityPolicy;
use storage::{
    ensure_database_beside_index, ensure_writable, format_store_id, remove_interrupted_index_saves, stamp_of,
    store_id_bytes,
};

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
    /// Keep each enrolment's face region (the face with a wide margin, at most 512 px a side, as JPEG; about
    /// 30–60 KB) with its templates, so that `facematch models migrate` can make another recognizer's templates
    /// without the enrolment photos (default true). Deleted with the subject and by retention like its templates.
    /// Off, a gallery cannot move to another model: every template would have to be enrolled again.
    pub keep_enrolment_faces: bool,
    /// Seconds between the server's retention sweeps, which delete subjects past their watchlist's retention
    /// period (default 3600; the server also sweeps at start).
    pub retention_sweep_secs: u64,
    /// The audit anchor file: one signed line per audit entry, outside the database (default
    /// `<data_dir>/audit-anchor.jsonl`; put it, or a copy shipped as it grows, on another volume or host).
    pub audit_anchor: Option<PathBuf>,
    /// The key that signs the anchor (default `<data_dir>/audit-anchor.key`, made on first start, mode 0600);
    /// whoever can read it can forge anchor lines, so keep it where the database's other users cannot.
    pub audit_anchor_key: Option<PathBuf>,
    /// Open the gallery for inspection only (default false): skip the start checks against the audit anchor and
    /// do not adopt unanchored entries, so that `facematch audit verify` reports on a gallery the service would
    /// refuse, and changes nothing.
    pub audit_inspection: bool,
    /// Faces of one probe photo that are searched, the largest first (default 50): a crowd photo is answered for
    /// its 50 largest faces, with `faces_detected` and `faces_truncated` saying so, rather than costing a search
    /// per face without bound.
    pub max_faces_per_photo: usize,
    /// Seconds between folds of the database's write-ahead log into its main file while the server runs (default
    /// 300; 0: only at shutdown). Keeps the WAL short and the main file close to complete between clean stops.
    pub checkpoint_interval_s: u64,
    /// Hard cap on the database file, in SQLite pages of 4 KiB (default none). A write beyond it is refused with
    /// `storage_unavailable`, as on a full disk, and `/readyz` answers 503 until there is room.
    pub max_db_pages: Option<u64>,
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
            keep_enrolment_faces: true,
            retention_sweep_secs: 3600,
            audit_anchor: None,
            audit_anchor_key: None,
            audit_inspection: false,
            max_faces_per_photo: 50,
            checkpoint_interval_s: 300,
            max_db_pages: None,
        }
    }
}

/// How the index came up at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IndexOrigin {
    /// From its file, which recorded the store's generation.
    Loaded,
    /// From the store, because the file was missing, stale, unreadable or of another store.
    Rebuilt,
}

/// Index state for `/readyz` and `/v1/stats`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IndexState {
    pub stats: crate::index::IndexStats,
    pub generation: u64,
    /// The index file's name in the data directory (never its absolute path: answers do not map the server's disk).
    pub file: String,
    pub origin: IndexOrigin,
    pub startup_ms: f64,
}

/// The recognizer that serves searches, with its index and calibration: one value, replaced as a whole when a
/// model migration switches the gallery to another recognizer. Every operation takes one snapshot
/// ([`WatchlistService::engine`]) and uses it throughout, so a probe is never embedded by one model and searched
/// in another's index.
pub(crate) struct Engine {
    pub(crate) pipeline: Arc<FacePipeline>,
    pub(crate) index: Arc<dyn AnnIndex>,
    pub(crate) calibration: Option<Calibration>,
    pub(crate) index_path: PathBuf,
}

impl Engine {
    pub(crate) fn model_id(&self) -> &Arc<str> {
        self.pipeline.recognizer().model_id()
    }
}

/// The core: pipeline + store + index.
pub struct WatchlistService {
    engine: parking_lot::RwLock<Arc<Engine>>,
    store: Arc<dyn GalleryStore>,
    quality: QualityPolicy,
    config: GalleryConfig,
    /// Serialises store+index changes so that the index equals the store at a known generation; a model switch
    /// holds it too, so a change made under it goes to the engine that serves.
    write_lock: Mutex<()>,
    /// The store's UUID as the index file records it.
    store_id: [u8; 16],
    origin: IndexOrigin,
    startup_ms: f64,
    access: AccessConfig,
    keys: keys::KeyGate,
    /// Signs every audit entry the store commits, outside the database.
    anchor: Arc<AuditAnchor>,
    jobs: JobsConfig,
    hits: HitsConfig,
    /// Wakes the job runner's idle workers when a job is submitted.
    job_signal: job_runner::JobSignal,
    alerts: AlertsConfig,
    /// Wakes alert streams and the webhook dispatcher when this node records or changes hits.
    hit_signal: tokio::sync::watch::Sender<u64>,
    /// The recognizer a running model migration moves to.
    migration_target: migration::MigrationTarget,
}

impl WatchlistService {
    /// Opens the store in `config.data_dir`, then loads the index file if it names this store at its generation,
    /// or rebuilds it from the store (and saves it). Refuses to start on a data directory that cannot be written,
    /// on a database that is missing beside its index file, and on a store that is behind its index file (it lost
    /// changes): serving either would serve a partial gallery as if it were whole.
    pub fn open(pipeline: Arc<FacePipeline>, config: GalleryConfig, quality: QualityPolicy) -> Result<Self, ServiceError> {
        let started = Instant::now();
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| ServiceError::DataDir { path: config.data_dir.clone(), source })?;
        ensure_writable(&config.data_dir)?;
        ensure_database_beside_index(&config.data_dir)?;
        remove_interrupted_index_saves(&config.data_dir);
        let anchor = Arc::new(AuditAnchor::open(
            &config.audit_anchor.clone().unwrap_or_else(|| config.data_dir.join("audit-anchor.jsonl")),
            &config.audit_anchor_key.clone().unwrap_or_else(|| config.data_dir.join("audit-anchor.key")),
        )?);
        let store: Arc<dyn GalleryStore> = Arc::new(SqliteStore::open(&config.data_dir)?.with_anchor(anchor.clone()));
        store.cap_size(config.max_db_pages)?;
        if !config.audit_inspection {
            audit::check_anchor(&*store, &anchor)?;
        }
        let store_id = store_id_bytes(&store.store_id()?)?;
        // An inspection (`facematch audit verify`) reads whatever model the gallery serves and records nothing.
        if !config.audit_inspection {
            migration::check_serving_model(&*store, pipeline.recognizer().model_id())?;
        }
        let (engine, origin) = engine_for(pipeline, &*store, store_id, &config)?;
        let startup_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(templates = engine.index.len(), ?origin, startup_ms, "gallery ready");
        Ok(WatchlistService {
            engine: parking_lot::RwLock::new(Arc::new(engine)),
            store,
            quality,
            config,
            write_lock: Mutex::new(()),
            store_id,
            origin,
            startup_ms,
            access: AccessConfig::default(),
            keys: keys::KeyGate::default(),
            anchor,
            jobs: JobsConfig::default(),
            hits: HitsConfig::default(),
            job_signal: job_runner::JobSignal::default(),
            alerts: AlertsConfig::default(),
            hit_signal: tokio::sync::watch::Sender::new(0),
            migration_target: migration::MigrationTarget::default(),
        })
    }

    /// Sets the per-key rate limits and what answers without a key.
    pub fn with_access(mut self, access: AccessConfig) -> Self {
        self.access = access;
        self
    }

    /// Sets the bulk search jobs' workers and limits, and how long hits keep their probe crops.
    pub fn with_jobs(mut self, jobs: JobsConfig, hits: HitsConfig) -> Self {
        self.jobs = jobs;
        self.hits = hits;
        self
    }

    pub fn access(&self) -> &AccessConfig {
        &self.access
    }

    /// The serving engine at this moment (see [`Engine`]).
    pub(crate) fn engine(&self) -> Arc<Engine> {
        self.engine.read().clone()
    }

    /// The serving face pipeline.
    pub fn pipeline(&self) -> Arc<FacePipeline> {
        self.engine().pipeline.clone()
    }
    pub fn config(&self) -> &GalleryConfig {
        &self.config
    }
    /// The serving recognizer's id.
    pub fn model_id(&self) -> Arc<str> {
        self.engine().model_id().clone()
    }
    pub fn calibration(&self) -> Option<Calibration> {
        self.engine().calibration.clone()
    }

    pub fn index_state(&self) -> Result<IndexState, ServiceError> {
        let engine = self.engine();
        Ok(IndexState {
            stats: engine.index.stats(),
            generation: self.store.generation()?,
            file: engine.index_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            origin: self.origin,
            startup_ms: self.startup_ms,
        })
    }

    /// Writes the index file at the store's current generation (on shutdown, so the next start loads instead of
    /// rebuilding).
    pub fn persist_index(&self) -> Result<(), ServiceError> {
        let _guard = self.write_lock.lock();
        let engine = self.engine();
        let stamp = stamp_of(&*self.store, self.store_id, self.store.generation()?)?;
        tracing::debug!(path = %engine.index_path.display(), "saving index");
        engine.index.save(&engine.index_path, stamp)?;
        tracing::info!(generation = stamp.generation, path = %engine.index_path.display(), "index saved");
        Ok(())
    }

    /// Consolidates the index once tombstones pass `consolidate_deleted_share`; the caller holds the write lock,
    /// so the index still equals the store at its generation afterwards.
    fn consolidate_when_due(&self) -> Result<(), ServiceError> {
        // Runs on every deletion: `stats` would walk the whole exact index, these two counters are O(1).
        let index = self.engine().index.clone();
        let (deleted, live) = (index.tombstones(), index.len());
        if deleted == 0 || (deleted as f64) < self.config.consolidate_deleted_share * (live + deleted) as f64 {
            return Ok(());
        }
        let report = index.consolidate()?;
        tracing::info!(removed = deleted, live, seconds = report.seconds, "index consolidated");
        Ok(())
    }

    /// Appends the audit entry of a use (a search, a verification): uses change nothing, so the entry is the only
    /// write.
    fn audit_use(&self, entry: crate::gallery::AuditEntry) -> Result<i64, ServiceError> {
        Ok(self.store.append_audit(entry)?)
    }
}

/// The engine of `pipeline`'s recognizer over `store`: binds the model to the gallery, then loads its index file or
/// rebuilds the index from the store.
fn engine_for(
    pipeline: Arc<FacePipeline>,
    store: &dyn GalleryStore,
    store_id: [u8; 16],
    config: &GalleryConfig,
) -> Result<(Engine, IndexOrigin), ServiceError> {
    let manifest = pipeline.recognizer().manifest();
    let calibration = manifest.calibration.as_ref().map(Calibration::from_spec).transpose()?;
    let model_id = manifest.id.clone();
    let dimension = pipeline.recognizer().dimension();
    store.bind_model(&model_id, dimension, &manifest.template_fingerprint())?;
    let index_path = config.data_dir.join(format!("index-{model_id}-{}.bin", kind_name(config.index)));
    let (index, origin) = open_index(store, store_id, &model_id, dimension, config, &index_path)?;
    Ok((Engine { pipeline, index, calibration, index_path }, origin))
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
    store_id: [u8; 16],
    model_id: &str,
    dimension: usize,
    config: &GalleryConfig,
    path: &Path,
) -> Result<(Arc<dyn AnnIndex>, IndexOrigin), ServiceError> {
    let current = stamp_of(store, store_id, store.generation()?)?;
    if path.is_file() {
        let loaded: Result<(Arc<dyn AnnIndex>, IndexStamp), _> = match config.index {
            IndexKind::Hnsw => HnswIndex::load(path, dimension).map(|(i, g)| (Arc::new(i) as Arc<dyn AnnIndex>, g)),
            IndexKind::Exact => ExactIndex::load(path, dimension)
                .map(|(i, g)| (Arc::new(exact_options(i, config)) as Arc<dyn AnnIndex>, g)),
        };
        match loaded {
            Ok((_, stamp)) if stamp.store_id != store_id => tracing::warn!(
                path = %path.display(),
                index_store = %format_store_id(&stamp.store_id),
                store = %format_store_id(&store_id),
                "index file belongs to another gallery store (copied from elsewhere?); rebuilding from this store"
            ),
            // The index saw changes or audit entries the store no longer has: the store lost committed work, and
            // serving it would serve a partial gallery as if it were whole.
            Ok((_, stamp)) if stamp.generation > current.generation || stamp.audit_head > current.audit_head => {
                return Err(ServiceError::StoreBehindIndex { store: current, index: stamp, path: path.to_owned() })
            }
            Ok((index, stamp)) if stamp.generation == current.generation => return Ok((index, IndexOrigin::Loaded)),
            Ok((_, stamp)) => tracing::warn!(
                generation = stamp.generation,
                current = current.generation,
                "index file is stale; rebuilding from the store"
            ),
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
    index.save(path, IndexStamp { generation, ..current })?;
    Ok((index, IndexOrigin::Rebuilt))
}
