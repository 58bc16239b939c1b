//! Row mapping: the column lists of each SELECT, rows to `Watchlist`/`Subject`/`Template`/audit records, and the
//! little-endian f32 BLOB an embedding is stored as.

use rusqlite::types::Type;
use rusqlite::Row;

use crate::gallery::audit::ChainFields;
use crate::gallery::model::{AuditEntry, AuditRecord, Subject, Template, Watchlist};

/// SQL condition on a template `t`: of the gallery's serving model (every model while none is recorded, as in a
/// store no service has opened). Listings and counts show what searches use; a migration's templates of the next
/// model stay out of them until it switches.
macro_rules! serving_model_only {
    () => {
        "(t.model_id = (SELECT value FROM meta WHERE key = 'serving_model') \
         OR NOT EXISTS (SELECT 1 FROM meta WHERE key = 'serving_model'))"
    };
}
pub(super) use serving_model_only;

/// Columns of `Subject`, in the order `subject_from_row` reads them.
macro_rules! select_subject {
    ($tail:literal) => {
        concat!(
            "SELECT s.id, w.name, s.external_ref, s.display_name, s.metadata, s.created_at, s.updated_at, ",
            "(SELECT count(*) FROM template t WHERE t.subject_id = s.id AND ",
            $crate::gallery::sqlite::rows::serving_model_only!(),
            ") ",
            "FROM subject s JOIN watchlist w ON w.id = s.watchlist_id ",
            $tail
        )
    };
}
pub(super) use select_subject;

/// Columns of `Template`, in the order `template_from_row` reads them.
macro_rules! select_template {
    ($($tail:expr),+) => {
        concat!(
            "SELECT t.id, t.subject_id, t.model_id, t.dimension, t.quality, t.photo_sha256, ",
            "EXISTS(SELECT 1 FROM thumbnail h WHERE h.template_id = t.id), t.enrolled_at, t.enrolled_by, ",
            "t.face_id IS NOT NULL ",
            "FROM template t ",
            $($tail),+
        )
    };
}
pub(super) use select_template;

macro_rules! select_watchlist {
    ($tail:literal) => {
        concat!(
            "SELECT id, name, description, alert_fpir, created_at, retention_days FROM watchlist ",
            $tail
        )
    };
}
pub(super) use select_watchlist;

macro_rules! select_audit {
    ($tail:literal) => {
        concat!("SELECT id, at, actor, role, action, purpose, target, details, prev_hash, hash FROM audit ", $tail)
    };
}
pub(super) use select_audit;

fn json_column(row: &Row<'_>, index: usize) -> rusqlite::Result<serde_json::Value> {
    let text = row
        .get_ref(index)?
        .as_str()
        .map_err(|source| conversion_failure(index, Type::Text, source))?;
    serde_json::from_str(text).map_err(|source| conversion_failure(index, Type::Text, source))
}

pub(super) fn conversion_failure(
    index: usize,
    kind: Type,
    source: impl std::error::Error + Send + Sync + 'static,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, kind, Box::new(source))
}

#[derive(Debug, thiserror::Error)]
#[error("embedding blob of {0} bytes is not a whole number of f32 values")]
pub(super) struct RaggedEmbedding(usize);

/// Decodes a little-endian f32 BLOB into `out`, reusing its allocation.
pub(super) fn decode_embedding(blob: &[u8], out: &mut Vec<f32>) -> Result<(), RaggedEmbedding> {
    if !blob.len().is_multiple_of(4) {
        return Err(RaggedEmbedding(blob.len()));
    }
    out.clear();
    out.extend(
        blob.chunks_exact(4)
            .map(|bytes| f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])),
    );
    Ok(())
}

pub(super) fn encode_embedding(embedding: &[f32]) -> Vec<u8> {
    embedding
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect()
}

pub(super) fn watchlist_from_row(row: &Row<'_>) -> rusqlite::Result<Watchlist> {
    Ok(Watchlist {
        id: row.get(0)?,
        name: row.get(1)?,
        description: row.get(2)?,
        alert_fpir: row.get(3)?,
        created_at: row.get(4)?,
        retention_days: row.get(5)?,
    })
}

pub(super) fn subject_from_row(row: &Row<'_>) -> rusqlite::Result<Subject> {
    Ok(Subject {
        id: row.get(0)?,
        watchlist: row.get(1)?,
        external_ref: row.get(2)?,
        display_name: row.get(3)?,
        metadata: json_column(row, 4)?,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
        template_count: row.get(7)?,
    })
}

pub(super) fn template_from_row(row: &Row<'_>) -> rusqlite::Result<Template> {
    Ok(Template {
        id: row.get(0)?,
        subject_id: row.get(1)?,
        model_id: row.get(2)?,
        dimension: row.get(3)?,
        quality: json_column(row, 4)?,
        photo_sha256: row.get(5)?,
        has_thumbnail: row.get(6)?,
        enrolled_at: row.get(7)?,
        enrolled_by: row.get(8)?,
        face_kept: row.get(9)?,
    })
}

/// An audit row as stored: details stay as their canonical text because that text is what was hashed.
pub(super) struct StoredAudit {
    id: i64,
    at: String,
    actor: String,
    role: String,
    action: String,
    purpose: Option<String>,
    target: Option<String>,
    details_json: String,
    pub(super) prev_hash: String,
    pub(super) hash: String,
}

impl StoredAudit {
    pub(super) fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(StoredAudit {
            id: row.get(0)?,
            at: row.get(1)?,
            actor: row.get(2)?,
            role: row.get(3)?,
            action: row.get(4)?,
            purpose: row.get(5)?,
            target: row.get(6)?,
            details_json: row.get(7)?,
            prev_hash: row.get(8)?,
            hash: row.get(9)?,
        })
    }

    pub(super) fn chain_fields(&self) -> ChainFields<'_> {
        ChainFields {
            id: self.id,
            at: &self.at,
            actor: &self.actor,
            role: &self.role,
            action: &self.action,
            purpose: self.purpose.as_deref(),
            target: self.target.as_deref(),
            details_json: &self.details_json,
        }
    }

    pub(super) fn into_record(self) -> rusqlite::Result<AuditRecord> {
        let details = serde_json::from_str(&self.details_json)
            .map_err(|source| conversion_failure(7, Type::Text, source))?;
        Ok(AuditRecord {
            id: self.id,
            at: self.at,
            entry: AuditEntry {
                actor: self.actor,
                role: self.role,
                action: self.action,
                purpose: self.purpose,
                target: self.target,
                details,
            },
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}
