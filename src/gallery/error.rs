//! Gallery store errors and their stable machine-readable codes.

use std::fmt;
use std::path::PathBuf;

/// Which kind of record a `NotFound` refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Watchlist,
    Subject,
    Template,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::Watchlist => "watchlist",
            Entity::Subject => "subject",
            Entity::Template => "template",
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
}

/// Which input rule a request broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidKind {
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

    #[error("gallery schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },

    /// The filesystem cannot host a WAL database (e.g. a network share without shared memory).
    #[error("database: journal mode is {mode}, wal is required: {}", path.display())]
    WalUnavailable { path: PathBuf, mode: String },

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
            GalleryError::Conflict { kind, .. } => match kind {
                ConflictKind::DuplicateWatchlist => "duplicate_watchlist",
                ConflictKind::WatchlistNotEmpty => "watchlist_not_empty",
                ConflictKind::DuplicateExternalRef => "duplicate_external_ref",
                ConflictKind::DimensionMismatch => "dimension_mismatch",
                ConflictKind::ModelChanged => "model_changed",
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
                InvalidKind::Quality => "invalid_quality",
                InvalidKind::Actor => "invalid_actor",
                InvalidKind::AuditEntry => "invalid_audit_entry",
                InvalidKind::Pagination => "invalid_pagination",
            },
            GalleryError::AuditChainBroken { .. } => "audit_chain_broken",
            GalleryError::SchemaTooNew { .. } => "schema_too_new",
            GalleryError::WalUnavailable { .. } => "wal_unavailable",
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
        self.map_err(|source| GalleryError::Database { context, source })
    }
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
