//! Model migrations as the store keeps them: which recognizer the gallery serves, a migration's state and progress
//! (read from the templates themselves, so never out of step), the kept faces still to remake, and the faces that
//! could not be remade; with the `MigrationStore` half of the store contract.

use serde::{Deserialize, Serialize};

use super::error::GalleryError;
use super::hits::Person;
use super::model::{AuditEntry, NewTemplate, Page, Template};
use super::store::AuditFor;

/// Where a migration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MigrationState {
    /// The new model's templates are being made while the old model serves.
    Running,
    /// Every kept face was tried, but some subjects would have no template of the new model: it waits for an
    /// administrator to switch anyway (`accept_gaps`) or to cancel.
    Ready,
    /// The gallery serves the new model.
    Switched,
    /// Stopped; the templates made so far are kept and a later migration to the same model reuses them.
    Cancelled,
}

impl MigrationState {
    pub const ALL: [MigrationState; 4] =
        [MigrationState::Running, MigrationState::Ready, MigrationState::Switched, MigrationState::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            MigrationState::Running => "running",
            MigrationState::Ready => "ready",
            MigrationState::Switched => "switched",
            MigrationState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<MigrationState> {
        MigrationState::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether it is in progress (at most one is).
    pub fn is_active(self) -> bool {
        matches!(self, MigrationState::Running | MigrationState::Ready)
    }
}

/// How far a migration got, counted from the store at the moment it is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MigrationProgress {
    /// Kept enrolment faces in the gallery.
    pub faces: usize,
    /// Faces with a template of the new model.
    pub done: usize,
    /// Faces the new model could not use (quality gate, alignment), listed in `failures`.
    pub failed: usize,
    /// Faces still to do.
    pub remaining: usize,
    /// Templates of the old model whose face was not kept (enrolled before faces were kept, or with
    /// `gallery.keep_enrolment_faces = false`): they cannot be remade and are listed in `failures`.
    pub without_face: usize,
    /// Subjects with templates that would have none of the new model if it switched now.
    pub subjects_without_template: usize,
}

/// A gallery's move from one recognizer to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelMigration {
    pub id: i64,
    pub from_model: String,
    pub to_model: String,
    pub state: MigrationState,
    /// Switch even if some subjects would have no template of the new model.
    pub accept_gaps: bool,
    /// RFC 3339.
    pub started_at: String,
    pub started_by: Person,
    pub role: String,
    pub purpose: Option<String>,
    pub finished_at: Option<String>,
    /// Counted when the migration is read on its own or listed; absent where the store skipped counting (the
    /// background worker's reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<MigrationProgress>,
}

/// What starts a migration.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMigration {
    pub from_model: String,
    pub to_model: String,
    pub accept_gaps: bool,
    pub started_by: Person,
    pub role: String,
    pub purpose: Option<String>,
}

/// A kept enrolment face to remake.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFace {
    pub id: i64,
    pub subject_id: i64,
    pub photo_sha256: String,
    /// `RegionGeometry` as JSON.
    pub geometry: serde_json::Value,
    pub jpeg: Vec<u8>,
}

/// A face, or a template without a kept face, that a migration could not remake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MigrationFailure {
    pub subject_id: i64,
    /// Absent when the subject was deleted since.
    pub display_name: Option<String>,
    pub watchlist: Option<String>,
    pub face_id: Option<i64>,
    /// The old model's template, when no face was kept for it.
    pub template_id: Option<i64>,
    /// `poor_quality`, `no_face_kept`, or the pipeline's code (e.g. `alignment_failed`).
    pub code: String,
    pub message: String,
}

/// A face the new model could not use, to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMigrationFailure {
    pub face: StoredFaceRef,
    pub code: String,
    pub message: String,
}

/// The face a failure is about.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoredFaceRef {
    pub face_id: i64,
    pub subject_id: i64,
}

/// Model migrations and the serving model, stored with the gallery so that every node sees the same.
pub trait MigrationStore {
    /// The model the gallery's searches use; `None` until a service first opened the store.
    fn serving_model(&self) -> Result<Option<String>, GalleryError>;
    /// Records `model_id` as the serving model when none is recorded; returns the serving model either way.
    fn adopt_serving_model(&self, model_id: &str) -> Result<String, GalleryError>;
    /// Model ids that have templates, with their counts.
    fn template_models(&self) -> Result<Vec<(String, usize)>, GalleryError>;

    /// Starts a migration; refused with `migration_in_progress` while another is running or ready.
    fn start_migration(&self, new: NewMigration, audit: AuditFor<'_, ModelMigration>) -> Result<ModelMigration, GalleryError>;
    fn get_migration(&self, id: i64) -> Result<ModelMigration, GalleryError>;
    /// The running or ready migration, if any, without its progress (counting it reads every template).
    fn active_migration(&self) -> Result<Option<ModelMigration>, GalleryError>;
    /// Every migration, newest first.
    fn list_migrations(&self) -> Result<Vec<ModelMigration>, GalleryError>;
    /// Up to `limit` kept faces with ids above `after` without a template of the migration's new model that it has
    /// not failed on yet, oldest first. A worker passes the last id it got, so each batch reads on from there instead
    /// of passing every face already done; `0` reads from the start (faces enrolled meanwhile come later).
    fn faces_to_migrate(&self, migration_id: i64, after: i64, limit: usize) -> Result<Vec<StoredFace>, GalleryError>;
    /// Records every template of the migration's old model that has no kept face as a `no_face_kept` failure
    /// (once each); returns how many are recorded in all.
    fn record_faceless_templates(&self, migration_id: i64) -> Result<usize, GalleryError>;
    /// Adds the new model's templates of kept faces (`TemplateFace::Existing`) and records the failures, in one
    /// transaction with one audit entry. A face deleted meanwhile is skipped, not an error.
    fn add_migrated_templates(
        &self,
        migration_id: i64,
        templates: Vec<NewTemplate>,
        failures: Vec<NewMigrationFailure>,
        audit: AuditFor<'_, [Template]>,
    ) -> Result<Vec<Template>, GalleryError>;
    fn migration_failures(&self, migration_id: i64, page: usize, per_page: usize) -> Result<Page<MigrationFailure>, GalleryError>;
    /// Moves an active migration to `ready` or `cancelled` (`migration_state` from any other state).
    fn set_migration_state(&self, migration_id: i64, state: MigrationState, audit: AuditEntry) -> Result<ModelMigration, GalleryError>;
    /// Makes the migration's new model the serving one and marks it switched, in one transaction.
    fn switch_serving_model(&self, migration_id: i64, audit: AuditEntry) -> Result<ModelMigration, GalleryError>;
}
