//! Bodies that exist only at the HTTP edge — the error shape, deletion receipts, enrolment reports, health and
//! the multipart forms — typed so that the OpenAPI document is derived from the same types the handlers answer
//! with.

use serde::Serialize;
use utoipa::ToSchema;

use crate::gallery::Template;
use crate::quality::FaceQuality;
use crate::service::{IndexState, SearchMode};

/// `{ "error": { "code": "…", "message": "…" } }`: every refusal and failure.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// A stable machine-readable code and a message for people.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// e.g. `no_face_detected`, `watchlist_not_found`, `request_too_large`.
    pub code: String,
    pub message: String,
}

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// Readiness: the models are loaded and the index is up.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// Always `ready` (a service that is not answers 503 with an error body).
    pub status: String,
    pub model: String,
    pub index: IndexState,
}

/// A list that is not paginated.
#[derive(Debug, Serialize, ToSchema)]
pub struct Items<T> {
    pub items: Vec<T>,
}

/// What a subject deletion removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubjectDeleted {
    pub deleted: i64,
    /// Template ids removed with the subject.
    pub templates_removed: Vec<i64>,
}

/// A template removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateDeleted {
    pub deleted: i64,
}

/// A watchlist removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct WatchlistDeleted {
    pub deleted: String,
}

/// The answer to an enrolment of one or more photos.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollReport {
    pub subject_id: i64,
    /// Photos enrolled.
    pub enrolled: usize,
    /// One per photo, in the order sent.
    pub results: Vec<PhotoResult>,
}

/// What became of one photo of an enrolment.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PhotoResult {
    Enrolled { template: Template, quality: FaceQuality, faces_in_photo: usize },
    /// Only when several photos were sent: a single refused photo is answered with its error.
    Refused { error: ErrorDetail },
}

/// `POST /v1/search` as a multipart form: a `photo`, or an `embedding` as a JSON array.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct SearchForm {
    #[schema(value_type = String, format = Binary)]
    pub photo: Option<Vec<u8>>,
    /// JSON array of the model's dimension, instead of a photo.
    pub embedding: Option<String>,
    pub mode: Option<SearchMode>,
    pub k: Option<usize>,
    /// Comma-separated or repeated.
    pub watchlists: Option<String>,
    pub min_quality: Option<f32>,
    pub min_face_px: Option<f32>,
}

/// `POST /v1/verify`: `photo_a` and `photo_b`, or `photo` and `subject_id`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct VerifyForm {
    #[schema(value_type = String, format = Binary)]
    pub photo_a: Option<Vec<u8>>,
    #[schema(value_type = String, format = Binary)]
    pub photo_b: Option<Vec<u8>>,
    #[schema(value_type = String, format = Binary)]
    pub photo: Option<Vec<u8>>,
    pub subject_id: Option<i64>,
}

/// `POST /v1/subjects/{id}/faces`: one or more files in fields named `photo…`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct EnrollForm {
    #[schema(value_type = Vec<String>, format = Binary)]
    pub photo: Vec<Vec<u8>>,
    /// Which face to enroll when the photo shows several (0 = best detector score).
    pub face: Option<usize>,
}

/// A refused enrolment: one photo's error, or the report of several photos that were all refused.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum EnrollRefusal {
    One(ErrorBody),
    Several(EnrollReport),
}
