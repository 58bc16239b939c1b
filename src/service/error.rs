//! Service errors: one enum for everything a request can run into, each with a stable machine-readable code and
//! a kind that the HTTP edge (and only the edge) maps to a status.

use std::path::PathBuf;

use crate::decode::DecodeError;
use crate::gallery::{ConflictKind, GalleryError};
use crate::index::IndexError;
use crate::pipeline::PipelineError;

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
    #[error("thumbnail: cannot be encoded")]
    Thumbnail(#[source] image::ImageError),
}

impl ServiceError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::Pipeline(e) => e.code(),
            ServiceError::Gallery(e) => e.code(),
            ServiceError::Index(IndexError::DimensionMismatch { .. }) => "dimension_mismatch",
            ServiceError::Index(IndexError::NotUnitLength { .. } | IndexError::NotFinite { .. }) => "invalid_embedding",
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
            ServiceError::Thumbnail(_) => "internal_error",
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            ServiceError::Pipeline(PipelineError::Decode(d)) => match d {
                DecodeError::TooManyBytes { .. } => ErrorKind::PayloadTooLarge,
                DecodeError::UnsupportedFormat => ErrorKind::UnsupportedMedia,
                _ => ErrorKind::Unprocessable,
            },
            ServiceError::Pipeline(_) => ErrorKind::Internal,
            ServiceError::Gallery(g) => match g {
                GalleryError::NotFound { .. } => ErrorKind::NotFound,
                GalleryError::Conflict { kind: ConflictKind::DimensionMismatch, .. } => ErrorKind::Unprocessable,
                GalleryError::Conflict { .. } => ErrorKind::Conflict,
                GalleryError::Invalid { .. } => ErrorKind::Unprocessable,
                _ => ErrorKind::Internal,
            },
            ServiceError::Index(
                IndexError::DimensionMismatch { .. } | IndexError::NotUnitLength { .. } | IndexError::NotFinite { .. },
            ) => ErrorKind::Unprocessable,
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
            | ServiceError::Thumbnail(_) => ErrorKind::Internal,
        }
    }
}
