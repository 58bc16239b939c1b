//! The `GalleryStore` contract every store of record (SQLite now, PostgreSQL later) implements.

use std::collections::HashMap;

use super::alerts::AlertStore;
use super::error::GalleryError;
use super::hits::HitStore;
use super::jobs::JobStore;
use super::keys::KeyStore;
use super::migration::MigrationStore;
use super::model::{
    AuditEntry, AuditQuery, AuditRecord, ExpiredSubject, GalleryStats, WatchlistPatch, NewSubject, NewTemplate, NewWatchlist, Page, Subject,
    SubjectPatch, SubjectQuery, Template, Watchlist,
};

/// Owner of one template, as needed to assemble a search result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateOwner {
    pub subject_id: i64,
    /// Watchlist id, i.e. the ANN label.
    pub label: u32,
}

/// Receives `(template key, watchlist label, embedding)` for every live template of one model.
pub type TemplateSink<'a> = dyn FnMut(i64, u32, &[f32]) + 'a;

/// Makes the audit entry of a change from what the change produced (the new subject's id, the removed template
/// keys). It runs inside the change's transaction: the entry is appended there, so a change and its audit entry are
/// committed together or not at all.
pub type AuditFor<'a, T> = &'a dyn Fn(&T) -> AuditEntry;

/// Durable gallery of watchlists, subjects, templates and the audit trail.
///
/// Every method that changes data takes the audit entry of the change and appends it to the audit chain in the same
/// transaction; it returns only after that transaction committed durably. A change whose audit entry cannot be
/// appended (invalid, or the append fails) leaves nothing behind. Every change to the set of templates, or to the
/// label of a template, bumps `generation()` in the same transaction.
pub trait GalleryStore: KeyStore + HitStore + JobStore + AlertStore + MigrationStore + Send + Sync {
    fn create_watchlist(&self, new: NewWatchlist, audit: AuditFor<'_, Watchlist>) -> Result<Watchlist, GalleryError>;
    fn list_watchlists(&self) -> Result<Vec<Watchlist>, GalleryError>;
    fn get_watchlist(&self, name: &str) -> Result<Watchlist, GalleryError>;
    /// Changes a watchlist's description, alert FPIR or retention period.
    fn update_watchlist(&self, name: &str, patch: WatchlistPatch, audit: AuditFor<'_, Watchlist>)
        -> Result<Watchlist, GalleryError>;
    /// Subjects whose watchlist's retention period ran out at `as_of` (RFC 3339), oldest id first.
    fn expired_subjects(&self, as_of: &str) -> Result<Vec<ExpiredSubject>, GalleryError>;
    /// Refuses a watchlist that still has subjects (`watchlist_not_empty`).
    fn delete_watchlist(&self, name: &str, audit: AuditEntry) -> Result<(), GalleryError>;

    fn create_subject(&self, new: NewSubject, audit: AuditFor<'_, Subject>) -> Result<Subject, GalleryError>;
    fn get_subject(&self, id: i64) -> Result<Subject, GalleryError>;
    fn update_subject(&self, id: i64, patch: SubjectPatch, audit: AuditFor<'_, Subject>) -> Result<Subject, GalleryError>;
    /// Deletes the subject with its templates and thumbnails; returns the removed template keys.
    fn delete_subject(&self, id: i64, audit: AuditFor<'_, [i64]>) -> Result<Vec<i64>, GalleryError>;
    fn list_subjects(&self, query: &SubjectQuery) -> Result<Page<Subject>, GalleryError>;
    fn find_subject_by_external_ref(
        &self,
        watchlist: &str,
        external_ref: &str,
    ) -> Result<Option<Subject>, GalleryError>;
    /// Subjects for up to a few hundred ids in one query; unknown ids are absent from the map.
    fn subjects_by_ids(&self, ids: &[i64]) -> Result<HashMap<i64, Subject>, GalleryError>;

    fn add_template(&self, new: NewTemplate, audit: AuditFor<'_, Template>) -> Result<Template, GalleryError>;
    /// All-or-nothing batch in one transaction (one fsync) with one audit entry, for seeding large galleries.
    fn add_templates(&self, new: Vec<NewTemplate>, audit: AuditFor<'_, [Template]>) -> Result<Vec<Template>, GalleryError>;
    /// Deletes the template with the face it was made from and every other model's template of that face; returns
    /// the removed template keys, empty when the subject exists but has no such template (then the audit entry is
    /// not appended).
    fn delete_template(&self, subject_id: i64, template_id: i64, audit: AuditEntry) -> Result<Vec<i64>, GalleryError>;
    fn list_templates(&self, subject_id: i64) -> Result<Vec<Template>, GalleryError>;
    /// `Ok(None)` when the template exists but was enrolled without a thumbnail.
    fn get_thumbnail(&self, template_id: i64) -> Result<Option<Vec<u8>>, GalleryError>;
    /// Whether this photo (any model) was already enrolled for the subject, so bulk enrollment can resume.
    fn has_photo(&self, subject_id: i64, photo_sha256: &str) -> Result<bool, GalleryError>;
    /// Owners of up to a few hundred template keys in one query; unknown keys are absent from the map.
    fn template_owners(
        &self,
        template_ids: &[i64],
    ) -> Result<HashMap<i64, TemplateOwner>, GalleryError>;
    /// Streams every live template of `model_id` from one consistent snapshot and returns that snapshot's
    /// generation, which is what an index built from the stream must record. Keys arrive in ascending order.
    /// The sink must not call back into the store: it runs while a pooled reader connection is leased.
    fn for_each_template(
        &self,
        model_id: &str,
        sink: &mut TemplateSink<'_>,
    ) -> Result<u64, GalleryError>;
    /// A subject's templates of one model with their embeddings (1:1 verification against a subject; relabelling
    /// the index when a subject moves to another watchlist).
    fn subject_embeddings(&self, subject_id: i64, model_id: &str) -> Result<Vec<(i64, Vec<f32>)>, GalleryError>;
    fn count_templates(&self, model_id: &str) -> Result<usize, GalleryError>;
    /// Binds a model id to its dimension and template fingerprint before any template of it is written or
    /// searched: registers both on first use (and the fingerprint of a gallery made before fingerprints), and
    /// refuses with `model_changed` when the gallery's templates of this id were made by another set-up.
    fn bind_model(&self, model_id: &str, dimension: usize, fingerprint: &str) -> Result<(), GalleryError>;
    /// Persisted change counter of the template set; an ANN index recorded at another generation is stale.
    fn generation(&self) -> Result<u64, GalleryError>;
    /// The id of the newest audit entry (0 while there is none). It only grows, so a store whose head is behind
    /// what an index file recorded lost entries that were committed once.
    fn audit_head(&self) -> Result<u64, GalleryError>;
    /// The store's identity: a UUID made when the store was created, the same in its backups and restores, and
    /// different for every other store. An index file records it so that another gallery's index is never loaded.
    fn store_id(&self) -> Result<String, GalleryError>;
    /// Makes the store's durable state self-contained (SQLite: folds the WAL into the main file); on clean shutdown
    /// and periodically.
    fn checkpoint(&self) -> Result<(), GalleryError>;
    /// `Ok` while the store can take writes; after a write was refused for want of storage, probes with a real
    /// write until one succeeds (`storage_unavailable` until then).
    fn writable(&self) -> Result<(), GalleryError>;
    /// Caps the store's size in pages (`None`: no cap); a write beyond it fails as on a full disk. For sites that
    /// want a hard size limit and for tests of a full disk.
    fn cap_size(&self, max_pages: Option<u64>) -> Result<(), GalleryError>;
    fn stats(&self) -> Result<GalleryStats, GalleryError>;

    /// Appends an entry that records a use rather than a change (a search, a view of a subject's photos).
    fn append_audit(&self, entry: AuditEntry) -> Result<i64, GalleryError>;
    /// Checks the whole chain; the error names the first broken row.
    fn verify_audit_chain(&self) -> Result<usize, GalleryError>;
    /// The entries the query selects, newest first unless it asks otherwise.
    fn list_audit(&self, query: &AuditQuery) -> Result<Page<AuditRecord>, GalleryError>;
    /// `(id, hash)` of up to `limit` entries after `after_id`, in order: what the audit anchor is checked against.
    fn audit_hashes(&self, after_id: i64, limit: usize) -> Result<Vec<(i64, String)>, GalleryError>;
}
