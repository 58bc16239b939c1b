//! Service errors: one enum for everything a request can run into, each with a stable machine-readable code and
//! a kind that the HTTP edge (and only the edge) maps to a status.

use std::path::PathBuf;

use crate::decode::DecodeError;
use crate::gallery::{ConflictKind, GalleryError};
use crate::index::{IndexError, IndexStamp};
use crate::pipeline::PipelineError;

use super::access::Permission;
use super::keys::AuthFailure;
use super::Role;

/// What sort of failure, independent of transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    NotFound,
    Conflict,
    PayloadTooLarge,
    UnsupportedMedia,
    Unprocessable,
    Unavailable,
    Internal,
    /// No usable credentials.
    Unauthorized,
    /// Credentials fine, permission lacking.
    Forbidden,
    TooManyRequests,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Gallery(#[from] GalleryError),
    #[error("ann index")]
    Index(#[from] IndexError),
    #[error("no face detected in the photo")]
    NoFace,
    #[error("the photo shows {count} faces; choose one with `face` (0 = best detector score)")]
    SeveralFaces { count: usize },
    #[error("face {index} was chosen but the photo shows {count}")]
    NoSuchFace { index: usize, count: usize },
    #[error("face quality too low for enrollment: {}", .reasons.join("; "))]
    PoorQuality { reasons: Vec<String> },
    #[error("this photo is already enrolled for subject {subject_id}")]
    DuplicatePhoto { subject_id: i64 },
    #[error("embedding has {actual} values; model {model} produces {expected}")]
    EmbeddingDimension { model: String, expected: usize, actual: usize },
    #[error("embedding is not usable: zero, not finite, or of the wrong model")]
    InvalidEmbedding,
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("calibration in the model manifest is invalid")]
    Calibration(#[source] crate::score::ScoreError),
    #[error("calibration in the model manifest names an unusable decision statistic")]
    Statistic(#[source] crate::score::DecisionError),
    #[error("calibration in the model manifest: per-comparison rates describe top1 scores, not statistic {statistic}")]
    ComparisonsNeedTop1 { statistic: String },
    #[error("data directory {path}: cannot be created")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("audit anchor: {0}")]
    AuditAnchor(String),
    #[error("thumbnail: cannot be encoded")]
    Thumbnail(#[source] image::ImageError),
    #[error("{}", .0.message())]
    Unauthenticated(AuthFailure),
    #[error("role {role} may not {}", .permission.as_str())]
    Forbidden { role: Role, permission: Permission },
    #[error("this key is not allowed on watchlist {watchlist}")]
    WatchlistForbidden { watchlist: String },
    #[error("investigation-mode searches need a stated purpose, e.g. a case number (x-facematch-purpose)")]
    PurposeRequired,
    #[error("purpose must be printable text of at most {max_chars} characters")]
    InvalidPurpose { max_chars: usize },
    #[error("too many requests with this key; retry in {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    #[error("api key: the operating system's randomness failed: {0}")]
    Randomness(String),
    #[error("api key: hashing failed: {0}")]
    KeyHash(String),
    #[error("data directory {path}: cannot be written (read-only or full); the gallery needs a writable directory")]
    DataDirUnwritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "gallery database {database} is {state} but its index file {index} exists; restore the database from a \
         backup (facematch restore), or remove the index file to start an empty gallery"
    )]
    DatabaseMissing { database: PathBuf, index: PathBuf, state: &'static str },
    #[error(
        "gallery store is behind its index file {}: the store holds generation {} and audit entry {}, the index \
         recorded generation {} and audit entry {}; the database file was replaced by an older copy or its WAL lost \
         frames; restore from a backup (facematch restore), or remove the index file to accept the older gallery",
        path.display(), store.generation, store.audit_head, index.generation, index.audit_head
    )]
    StoreBehindIndex { store: IndexStamp, index: IndexStamp, path: PathBuf },
    #[error("gallery store id {id:?} is not a uuid")]
    StoreId { id: String },
    #[error("restore into {path}: the data directory is not empty; stop the service and pass --force to replace it")]
    DataDirNotEmpty { path: PathBuf },
    #[error("the job is over its limit of {limit} {what}")]
    JobTooLarge { what: &'static str, limit: u64 },
    #[error("the job holds no photo: send `photo` files or an `archive`")]
    JobEmpty,
    #[error("job files: {context}")]
    JobFiles {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("enrolment face region: cannot be kept")]
    FaceRegion(#[source] crate::face_region::RegionError),
    #[error("the gallery switched from model {analysed} to {serving} while this request was answered; send it again")]
    ModelSwitched { analysed: String, serving: String },
    #[error(
        "the gallery serves model {serving} but the configuration loads {configured}; set models.recognizer = \
         \"{serving}\" (a migration switched the gallery), or move the gallery with `facematch models migrate --to \
         {configured}` while it serves {serving}"
    )]
    ServingModelDiffers { serving: String, configured: String },
    #[error(
        "the gallery's templates are of model {templates}, none of {configured}, the configured model; set \
         models.recognizer = \"{templates}\", then move the gallery with `facematch models migrate --to {configured}`"
    )]
    GalleryOfAnotherModel { templates: String, configured: String },
    #[error("model {model}: cannot be loaded for a migration")]
    ModelUnavailable {
        model: String,
        #[source]
        source: Box<crate::pipeline::PipelineLoadError>,
    },
    #[error("the gallery already serves model {model}")]
    AlreadyServing { model: String },
}

impl From<AuthFailure> for ServiceError {
    fn from(failure: AuthFailure) -> ServiceError {
        ServiceError::Unauthenticated(failure)
    }
}

/// Whether an i/o failure means the disk or directory cannot take writes: full (ENOSPC), over quota (EDQUOT),
/// read-only (EROFS) or not ours to write (EACCES).
fn storage_full_or_read_only(error: &std::io::Error) -> bool {
    use std::io::ErrorKind as Io;
    matches!(error.kind(), Io::StorageFull | Io::QuotaExceeded | Io::ReadOnlyFilesystem | Io::PermissionDenied)
}

impl ServiceError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::Pipeline(e) => e.code(),
            ServiceError::Gallery(e) => e.code(),
            ServiceError::Index(IndexError::DimensionMismatch { .. }) => "dimension_mismatch",
            ServiceError::Index(IndexError::NotUnitLength { .. } | IndexError::NotFinite { .. }) => "invalid_embedding",
            ServiceError::Index(IndexError::Io { source, .. }) if storage_full_or_read_only(source) => {
                "storage_unavailable"
            }
            ServiceError::Index(_) => "index_error",
            ServiceError::NoFace => "no_face_detected",
            ServiceError::SeveralFaces { .. } => "several_faces",
            ServiceError::NoSuchFace { .. } => "no_such_face",
            ServiceError::PoorQuality { .. } => "poor_quality",
            ServiceError::DuplicatePhoto { .. } => "duplicate_photo",
            ServiceError::EmbeddingDimension { .. } => "dimension_mismatch",
            ServiceError::InvalidEmbedding => "invalid_embedding",
            ServiceError::InvalidRequest(_) => "invalid_request",
            ServiceError::Calibration(_) | ServiceError::Statistic(_) | ServiceError::ComparisonsNeedTop1 { .. } => {
                "calibration_invalid"
            }
            ServiceError::DataDir { .. } => "data_dir_unavailable",
            ServiceError::AuditAnchor(_) => "audit_anchor_mismatch",
            ServiceError::Thumbnail(_) | ServiceError::Randomness(_) | ServiceError::KeyHash(_) => "internal_error",
            ServiceError::Unauthenticated(failure) => failure.code(),
            ServiceError::Forbidden { .. } => "forbidden",
            ServiceError::WatchlistForbidden { .. } => "watchlist_forbidden",
            ServiceError::PurposeRequired => "purpose_required",
            ServiceError::InvalidPurpose { .. } => "invalid_purpose",
            ServiceError::RateLimited { .. } => "rate_limited",
            ServiceError::DataDirUnwritable { .. } => "storage_unavailable",
            ServiceError::DatabaseMissing { .. } => "database_missing",
            ServiceError::StoreBehindIndex { .. } => "store_behind_index",
            ServiceError::StoreId { .. } => "store_id_invalid",
            ServiceError::DataDirNotEmpty { .. } => "data_dir_not_empty",
            ServiceError::JobTooLarge { .. } => "job_too_large",
            ServiceError::JobEmpty => "no_photos",
            ServiceError::JobFiles { source, .. } if storage_full_or_read_only(source) => "storage_unavailable",
            ServiceError::JobFiles { .. } => "job_files_failed",
            ServiceError::FaceRegion(_) => "internal_error",
            ServiceError::ModelSwitched { .. } => "model_switched",
            ServiceError::ServingModelDiffers { .. } => "serving_model_differs",
            ServiceError::GalleryOfAnotherModel { .. } => "gallery_of_another_model",
            ServiceError::ModelUnavailable { .. } => "model_unavailable",
            ServiceError::AlreadyServing { .. } => "already_serving",
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            ServiceError::Pipeline(PipelineError::Decode(d)) => match d {
                DecodeError::TooManyBytes { .. } => ErrorKind::PayloadTooLarge,
                DecodeError::UnsupportedFormat => ErrorKind::UnsupportedMedia,
                DecodeError::Busy => ErrorKind::Unavailable,
                _ => ErrorKind::Unprocessable,
            },
            ServiceError::Pipeline(_) => ErrorKind::Internal,
            ServiceError::Gallery(g) => match g {
                GalleryError::NotFound { .. } => ErrorKind::NotFound,
                GalleryError::Conflict { kind: ConflictKind::DimensionMismatch, .. } => ErrorKind::Unprocessable,
                GalleryError::Conflict { .. } => ErrorKind::Conflict,
                GalleryError::Invalid {
                    kind:
                        crate::gallery::InvalidKind::KeyName
                        | crate::gallery::InvalidKind::HitQuery
                        | crate::gallery::InvalidKind::WebhookQuery
                        | crate::gallery::InvalidKind::Checkpoint
                        | crate::gallery::InvalidKind::CaseRef
                        | crate::gallery::InvalidKind::JobQuery,
                    ..
                } => ErrorKind::BadRequest,
                GalleryError::Invalid { .. } => ErrorKind::Unprocessable,
                GalleryError::StorageUnavailable { .. } => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            },
            ServiceError::Index(
                IndexError::DimensionMismatch { .. } | IndexError::NotUnitLength { .. } | IndexError::NotFinite { .. },
            ) => ErrorKind::Unprocessable,
            ServiceError::Index(IndexError::Io { source, .. }) if storage_full_or_read_only(source) => {
                ErrorKind::Unavailable
            }
            ServiceError::Index(_) => ErrorKind::Internal,
            ServiceError::NoFace
            | ServiceError::SeveralFaces { .. }
            | ServiceError::NoSuchFace { .. }
            | ServiceError::PoorQuality { .. }
            | ServiceError::EmbeddingDimension { .. }
            | ServiceError::InvalidEmbedding => ErrorKind::Unprocessable,
            ServiceError::DuplicatePhoto { .. } => ErrorKind::Conflict,
            ServiceError::InvalidRequest(_) => ErrorKind::BadRequest,
            ServiceError::Calibration(_)
            | ServiceError::Statistic(_)
            | ServiceError::ComparisonsNeedTop1 { .. }
            | ServiceError::DataDir { .. }
            | ServiceError::AuditAnchor(_)
            | ServiceError::Thumbnail(_)
            | ServiceError::Randomness(_)
            | ServiceError::KeyHash(_)
            | ServiceError::DatabaseMissing { .. }
            | ServiceError::StoreBehindIndex { .. }
            | ServiceError::StoreId { .. } => ErrorKind::Internal,
            ServiceError::DataDirUnwritable { .. } => ErrorKind::Unavailable,
            ServiceError::DataDirNotEmpty { .. } => ErrorKind::Conflict,
            ServiceError::Unauthenticated(_) => ErrorKind::Unauthorized,
            ServiceError::Forbidden { .. } | ServiceError::WatchlistForbidden { .. } => ErrorKind::Forbidden,
            ServiceError::PurposeRequired | ServiceError::InvalidPurpose { .. } => ErrorKind::BadRequest,
            ServiceError::RateLimited { .. } => ErrorKind::TooManyRequests,
            ServiceError::JobTooLarge { .. } => ErrorKind::PayloadTooLarge,
            ServiceError::JobEmpty => ErrorKind::BadRequest,
            ServiceError::JobFiles { source, .. } if storage_full_or_read_only(source) => ErrorKind::Unavailable,
            ServiceError::JobFiles { .. } => ErrorKind::Internal,
            ServiceError::FaceRegion(_)
            | ServiceError::ServingModelDiffers { .. }
            | ServiceError::GalleryOfAnotherModel { .. } => ErrorKind::Internal,
            ServiceError::ModelSwitched { .. } => ErrorKind::Unavailable,
            ServiceError::ModelUnavailable { .. } => ErrorKind::Unprocessable,
            ServiceError::AlreadyServing { .. } => ErrorKind::Conflict,
        }
    }

    /// Seconds a client should wait before retrying, where the error says.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            ServiceError::RateLimited { retry_after_s } => Some(*retry_after_s),
            ServiceError::ModelSwitched { .. } => Some(1),
            _ => None,
        }
    }
}
