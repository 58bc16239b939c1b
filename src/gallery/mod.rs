//! Watchlist gallery: the durable store of record for watchlists, subjects, face templates and the audit trail.
//!
//! Callers depend on the `GalleryStore` trait; `SqliteStore` is the embedded implementation (see
//! `docs/gallery-store.md` for the schema, durability settings and consistency rules).

pub mod alerts;
pub mod anchor;
pub mod audit;
#[cfg(test)]
mod conformance;
pub mod error;
pub mod hits;
pub mod jobs;
pub mod keys;
pub mod migration;
pub mod model;
pub mod schema;
pub mod sqlite;
pub mod store;
pub mod validation;

pub use alerts::{AlertStore, Attempt, Delivery, DeliveryPage, DeliveryState, NewWebhook, Webhook};
pub use anchor::{AuditProblem, AuditAnchor};
pub use hits::{Decision, Hit, HitPage, HitQuery, HitSource, HitState, HitStore, NewHit, NewReview, Person, Review};
pub use jobs::{ClaimedPhoto, Job, JobPage, JobQuery, JobState, JobStore, NewJob, NewJobPhoto, PhotoDone, PhotoResult, Refusal, ResultOrder};
pub use keys::{ApiKey, KeyStore, NewApiKey};
pub use migration::{
    MigrationFailure, MigrationProgress, MigrationState, MigrationStore, ModelMigration, NewMigration, NewMigrationFailure,
    StoredFace, StoredFaceRef,
};
pub use error::{ConflictKind, Entity, GalleryError, InvalidKind};
pub use model::{
    AuditEntry, AuditQuery, AuditRecord, ExpiredSubject, GalleryStats, ModelStats, NewSubject, NewTemplate, NewWatchlist, Page,
    Subject, SubjectPatch, SubjectQuery, Template, TemplateFace, Watchlist, WatchlistPatch, WatchlistStats,
};
pub use sqlite::{BackupReport, SqliteStore, DATABASE_FILE};
pub use store::{AuditFor, GalleryStore, TemplateOwner, TemplateSink};
