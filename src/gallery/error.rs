//! Gallery store errors and their stable machine-readable codes.

use std::fmt;
use std::path::PathBuf;

/// Which kind of record a `NotFound` refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Watchlist,
    Subject,
    Template,
    ApiKey,
    Hit,
    Job,
    Webhook,
    /// An enrolment's kept face region.
    Face,
    /// A gallery's move to another recognizer.
    Migration,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::Watchlist => "watchlist",
            Entity::Subject => "subject",
            Entity::Template => "template",
            Entity::ApiKey => "api key",
            Entity::Hit => "hit",
            Entity::Job => "job",
            Entity::Webhook => "webhook",
            Entity::Face => "face",
            Entity::Migration => "migration",
        })
    }
}

/// Why a request clashes with what is already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    DuplicateWatchlist,
    WatchlistNotEmpty,
    DuplicateExternalRef,
    /// The embedding length differs from earlier templates of the same model id.
    DimensionMismatch,
    /// The gallery's templates of a model id were made by another set-up of it (model file or manifest facts).
    ModelChanged,
    DuplicateKey,
    /// The key was revoked already.
    KeyRevoked,
    /// This reviewer (key or key holder) decided on the hit already: nobody reviews their own decision.
    AlreadyDecided,
    /// The hit is confirmed or rejected: its review is over.
    ReviewClosed,
    /// The alert was acknowledged already.
    AlreadyAcknowledged,
    /// Another model migration is in progress: one at a time.
    MigrationInProgress,
    /// The migration is not in a state that allows this (e.g. switching one that is still running).
    MigrationState,
    /// Only a checkpoint's alert is acknowledged; a job's hit is reviewed.
    NotAnAlert,
}

/// Which input rule a request broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidKind {
    /// A kept face region that is not a JPEG, too large, or whose geometry is not an object.
    FaceRegion,
    WatchlistName,
    Description,
    AlertFpir,
    DisplayName,
    ExternalRef,
    Metadata,
    Embedding,
    ModelId,
    PhotoSha256,
    Thumbnail,
    Quality,
    Actor,
    AuditEntry,
    Pagination,
    KeyName,
    KeyId,
    KeyRole,
    Retention,
    /// A review queue filter or page.
    HitQuery,
    Checkpoint,
    CaseRef,
    Comment,
    /// A bulk search job's settings, or a filter or page of the job list.
    JobQuery,
    /// A webhook's address.
    WebhookUrl,
    /// A webhook's filters (watchlists, sources) or a page of its deliveries.
    WebhookQuery,
}

#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    #[error("{what} not found: {id}")]
    NotFound { what: Entity, id: String },

    #[error("conflict: {detail}")]
    Conflict { kind: ConflictKind, detail: String },

    #[error("invalid input: {detail}")]
    Invalid { kind: InvalidKind, detail: String },

    /// The audit hash chain does not hold at `row_id` (the first broken row).
    #[error("audit chain broken at row {row_id}: {reason}")]
    AuditChainBroken { row_id: i64, reason: String },
    #[error("audit anchor key {path} is not 64 hex digits (32 bytes), or no randomness was available to make one")]
    AnchorKey { path: std::path::PathBuf },

    #[error("gallery schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },

    /// The filesystem cannot host a WAL database (e.g. a network share without shared memory).
    #[error("database: journal mode is {mode}, wal is required: {}", path.display())]
    WalUnavailable { path: PathBuf, mode: String },

    /// The disk or directory cannot take writes (full, read-only, failing, unreachable); the write did not happen
    /// and the service answers `storage_unavailable` until a write succeeds again.
    #[error("storage unavailable: {context}: {reason}")]
    StorageUnavailable {
        context: &'static str,
        reason: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    /// The database file is not a SQLite database or its pages are damaged; only a backup brings it back.
    #[error("database damaged: {context}: the gallery database is not a database or is corrupt; restore it from a backup")]
    Damaged {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    /// A copy of the gallery (a backup being written or restored) failed its verification.
    #[error("gallery copy {} failed verification: {reason}", path.display())]
    Verification { path: PathBuf, reason: String },

    #[error("database: {context}")]
    Database {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    #[error("io: {context} {}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl GalleryError {
    /// Stable code for API clients and logs; never changes once published.
    pub fn code(&self) -> &'static str {
        match self {
            GalleryError::NotFound {
                what: Entity::Watchlist,
                ..
            } => "watchlist_not_found",
            GalleryError::NotFound {
                what: Entity::Subject,
                ..
            } => "subject_not_found",
            GalleryError::NotFound {
                what: Entity::Template,
                ..
            } => "template_not_found",
            GalleryError::NotFound {
                what: Entity::ApiKey,
                ..
            } => "key_not_found",
            GalleryError::NotFound {
                what: Entity::Hit,
                ..
            } => "hit_not_found",
            GalleryError::NotFound {
                what: Entity::Job,
                ..
            } => "job_not_found",
            GalleryError::NotFound {
                what: Entity::Webhook,
                ..
            } => "webhook_not_found",
            GalleryError::NotFound {
                what: Entity::Face,
                ..
            } => "face_not_found",
            GalleryError::NotFound {
                what: Entity::Migration,
                ..
            } => "migration_not_found",
            GalleryError::Conflict { kind, .. } => match kind {
                ConflictKind::DuplicateWatchlist => "duplicate_watchlist",
                ConflictKind::WatchlistNotEmpty => "watchlist_not_empty",
                ConflictKind::DuplicateExternalRef => "duplicate_external_ref",
                ConflictKind::DimensionMismatch => "dimension_mismatch",
                ConflictKind::ModelChanged => "model_changed",
                ConflictKind::DuplicateKey => "duplicate_key",
                ConflictKind::KeyRevoked => "key_already_revoked",
                ConflictKind::AlreadyDecided => "already_decided",
                ConflictKind::ReviewClosed => "review_closed",
                ConflictKind::AlreadyAcknowledged => "already_acknowledged",
                ConflictKind::NotAnAlert => "not_an_alert",
                ConflictKind::MigrationInProgress => "migration_in_progress",
                ConflictKind::MigrationState => "migration_state",
            },
            GalleryError::Invalid { kind, .. } => match kind {
                InvalidKind::WatchlistName => "invalid_watchlist_name",
                InvalidKind::Description => "invalid_description",
                InvalidKind::AlertFpir => "invalid_alert_fpir",
                InvalidKind::DisplayName => "invalid_display_name",
                InvalidKind::ExternalRef => "invalid_external_ref",
                InvalidKind::Metadata => "invalid_metadata",
                InvalidKind::Embedding => "invalid_embedding",
                InvalidKind::ModelId => "invalid_model_id",
                InvalidKind::PhotoSha256 => "invalid_photo_sha256",
                InvalidKind::Thumbnail => "invalid_thumbnail",
                InvalidKind::FaceRegion => "invalid_face_region",
                InvalidKind::Quality => "invalid_quality",
                InvalidKind::Actor => "invalid_actor",
                InvalidKind::AuditEntry => "invalid_audit_entry",
                InvalidKind::Pagination => "invalid_pagination",
                InvalidKind::KeyName => "invalid_key_name",
                InvalidKind::KeyId => "invalid_key_id",
                InvalidKind::KeyRole => "invalid_role",
                InvalidKind::Retention => "invalid_retention",
                InvalidKind::HitQuery => "invalid_hit_query",
                InvalidKind::Checkpoint => "invalid_checkpoint",
                InvalidKind::CaseRef => "invalid_case",
                InvalidKind::Comment => "invalid_comment",
                InvalidKind::JobQuery => "invalid_job_query",
                InvalidKind::WebhookUrl => "invalid_webhook_url",
                InvalidKind::WebhookQuery => "invalid_webhook_query",
            },
            GalleryError::AuditChainBroken { .. } => "audit_chain_broken",
            GalleryError::AnchorKey { .. } => "audit_anchor_key",
            GalleryError::SchemaTooNew { .. } => "schema_too_new",
            GalleryError::WalUnavailable { .. } => "wal_unavailable",
            GalleryError::StorageUnavailable { .. } => "storage_unavailable",
            GalleryError::Damaged { .. } => "database_damaged",
            GalleryError::Verification { .. } => "backup_invalid",
            GalleryError::Database { .. } => "database_error",
            GalleryError::Io { .. } => "io_error",
        }
    }

    pub(crate) fn not_found(what: Entity, id: impl fmt::Display) -> Self {
        GalleryError::NotFound {
            what,
            id: id.to_string(),
        }
    }

    pub(crate) fn invalid(kind: InvalidKind, detail: impl Into<String>) -> Self {
        GalleryError::Invalid {
            kind,
            detail: detail.into(),
        }
    }

    pub(crate) fn conflict(kind: ConflictKind, detail: impl Into<String>) -> Self {
        GalleryError::Conflict {
            kind,
            detail: detail.into(),
        }
    }
}

/// Attaches a static context to rusqlite results, keeping the driver error as `#[source]`.
pub(crate) trait DatabaseContext<T> {
    fn context(self, context: &'static str) -> Result<T, GalleryError>;
}

impl<T> DatabaseContext<T> for Result<T, rusqlite::Error> {
    fn context(self, context: &'static str) -> Result<T, GalleryError> {
        self.map_err(|source| classify(context, source))
    }
}

/// Sorts a driver error by what an operator must do about it: free or fix the storage (`StorageUnavailable`),
/// restore a backup (`Damaged`), or read the log (`Database`). Extended result codes (SQLITE_IOERR_WRITE,
/// SQLITE_READONLY_DIRECTORY, …) fold into their primary code here.
pub(crate) fn classify(context: &'static str, source: rusqlite::Error) -> GalleryError {
    use rusqlite::ErrorCode;
    let reason = match source.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => "the disk is full or the database reached its size limit",
        Some(ErrorCode::ReadOnly) => "the database or its data directory is read-only",
        Some(ErrorCode::SystemIoFailure) => "the disk failed a read or write",
        Some(ErrorCode::CannotOpen) => "the database file cannot be opened",
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            return GalleryError::Damaged { context, source };
        }
        _ => return GalleryError::Database { context, source },
    };
    GalleryError::StorageUnavailable { context, reason, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn codes_follow_the_entity_and_kind() {
        assert_eq!(
            GalleryError::not_found(Entity::Subject, 7).code(),
            "subject_not_found"
        );
        assert_eq!(
            GalleryError::not_found(Entity::Watchlist, "x").code(),
            "watchlist_not_found"
        );
        assert_eq!(
            GalleryError::conflict(ConflictKind::WatchlistNotEmpty, "x").code(),
            "watchlist_not_empty"
        );
        assert_eq!(
            GalleryError::invalid(InvalidKind::Embedding, "x").code(),
            "invalid_embedding"
        );
    }

    #[test]
    fn full_read_only_and_failing_storage_are_storage_unavailable() {
        use rusqlite::ffi;
        for code in [ffi::SQLITE_FULL, ffi::SQLITE_READONLY_DIRECTORY, ffi::SQLITE_IOERR_WRITE, ffi::SQLITE_CANTOPEN] {
            let error = classify("commit", rusqlite::Error::SqliteFailure(ffi::Error::new(code), None));
            assert_eq!(error.code(), "storage_unavailable", "sqlite code {code}");
            assert!(error.source().is_some());
        }
        let error = classify("open", rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_NOTADB), None));
        assert_eq!(error.code(), "database_damaged");
        let error = classify("insert", rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_CONSTRAINT), None));
        assert_eq!(error.code(), "database_error");
    }

    #[test]
    fn database_error_keeps_its_source() {
        let result: Result<(), rusqlite::Error> = Err(rusqlite::Error::QueryReturnedNoRows);
        let error = result
            .context("read generation")
            .expect_err("error stays an error");
        assert_eq!(error.code(), "database_error");
        assert_eq!(error.to_string(), "database: read generation");
        assert!(error.source().is_some());
    }
}
