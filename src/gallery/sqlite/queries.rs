//! Statements several `GalleryStore` operations share, each run inside the caller's transaction: the generation
//! counter, subject and watchlist lookups, template insertion and the audit append.

use std::time::SystemTime;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::rows::{encode_embedding, select_subject, subject_from_row};
use crate::gallery::audit::{self, ChainFields, GENESIS_HASH};
use crate::gallery::error::{ConflictKind, DatabaseContext, Entity, GalleryError};
use crate::gallery::model::{AuditEntry, NewTemplate, Subject, Template, TemplateFace};
use crate::gallery::validation;

pub(super) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

pub(super) fn read_generation(conn: &Connection) -> Result<u64, GalleryError> {
    conn.prepare_cached("SELECT value FROM counter WHERE name = 'generation'")
        .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
        .context("read generation")
}

/// Must run inside every transaction that changes the template set or a template's label.
pub(super) fn bump_generation(tx: &Transaction<'_>) -> Result<(), GalleryError> {
    tx.prepare_cached("UPDATE counter SET value = value + 1 WHERE name = 'generation'")
        .and_then(|mut statement| statement.execute([]))
        .context("bump generation")?;
    Ok(())
}

pub(super) fn watchlist_label(conn: &Connection, name: &str) -> Result<u32, GalleryError> {
    conn.prepare_cached("SELECT id FROM watchlist WHERE name = ?1")
        .and_then(|mut statement| statement.query_row([name], |row| row.get(0)).optional())
        .context("look up watchlist")?
        .ok_or_else(|| GalleryError::not_found(Entity::Watchlist, name))
}

pub(super) fn fetch_subject(conn: &Connection, id: i64) -> Result<Subject, GalleryError> {
    conn.prepare_cached(select_subject!("WHERE s.id = ?1"))
        .and_then(|mut statement| statement.query_row([id], subject_from_row).optional())
        .context("read subject")?
        .ok_or_else(|| GalleryError::not_found(Entity::Subject, id))
}

pub(super) fn subject_exists(conn: &Connection, id: i64) -> Result<bool, GalleryError> {
    conn.prepare_cached("SELECT EXISTS(SELECT 1 FROM subject WHERE id = ?1)")
        .and_then(|mut statement| statement.query_row([id], |row| row.get(0)))
        .context("check subject exists")
}

/// Refuses a second subject with the same external reference on one watchlist.
pub(super) fn ensure_external_ref_free(
    conn: &Connection,
    label: u32,
    external_ref: &str,
    except_subject: Option<i64>,
) -> Result<(), GalleryError> {
    let holder: Option<i64> = conn
        .prepare_cached("SELECT id FROM subject WHERE watchlist_id = ?1 AND external_ref = ?2")
        .and_then(|mut statement| {
            statement
                .query_row(params![label, external_ref], |row| row.get(0))
                .optional()
        })
        .context("check external reference")?;
    match holder {
        Some(other) if Some(other) != except_subject => Err(GalleryError::conflict(
            ConflictKind::DuplicateExternalRef,
            format!("external_ref {external_ref:?} already belongs to subject {other} on this watchlist"),
        )),
        _ => Ok(()),
    }
}

/// Checked input of one template, ready to insert.
pub(super) struct ValidTemplate {
    pub(super) new: NewTemplate,
    photo_sha256: String,
    quality_json: String,
}

pub(super) fn validate_template(new: NewTemplate) -> Result<ValidTemplate, GalleryError> {
    validation::validate_model_id(&new.model_id)?;
    validation::validate_embedding(&new.embedding)?;
    validation::validate_actor(&new.enrolled_by)?;
    if let Some(jpeg) = &new.thumbnail_jpeg {
        validation::validate_thumbnail(jpeg)?;
    }
    if let TemplateFace::Keep { jpeg, geometry } = &new.face {
        validation::validate_face_region(jpeg, geometry)?;
    }
    let photo_sha256 = validation::normalise_photo_sha256(&new.photo_sha256)?;
    let quality_json = validation::canonicalise_quality(&new.quality)?;
    Ok(ValidTemplate {
        new,
        photo_sha256,
        quality_json,
    })
}

/// Registers the model's dimension on first use and refuses any other dimension afterwards.
pub(super) fn ensure_model_dimension(
    tx: &Transaction<'_>,
    model_id: &str,
    dimension: usize,
) -> Result<(), GalleryError> {
    let registered: Option<usize> = tx
        .prepare_cached("SELECT dimension FROM model WHERE model_id = ?1")
        .and_then(|mut statement| statement.query_row([model_id], |row| row.get(0)).optional())
        .context("read model dimension")?;
    match registered {
        Some(expected) if expected == dimension => Ok(()),
        Some(expected) => Err(GalleryError::conflict(
            ConflictKind::DimensionMismatch,
            format!("model {model_id:?} templates have dimension {expected}, got an embedding of {dimension}"),
        )),
        None => {
            tx.prepare_cached("INSERT INTO model(model_id, dimension) VALUES (?1, ?2)")
                .and_then(|mut statement| statement.execute(params![model_id, dimension as i64]))
                .context("register model")?;
            Ok(())
        }
    }
}

pub(super) fn insert_template(
    tx: &Transaction<'_>,
    valid: ValidTemplate,
    enrolled_at: &str,
) -> Result<Template, GalleryError> {
    let ValidTemplate {
        new,
        photo_sha256,
        quality_json,
    } = valid;
    let dimension = new.embedding.len();
    ensure_model_dimension(tx, &new.model_id, dimension)?;
    let face_id = match &new.face {
        TemplateFace::NotKept => None,
        TemplateFace::Keep { jpeg, geometry } => {
            tx.prepare_cached(
                "INSERT INTO face(subject_id, photo_sha256, geometry, jpeg, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut statement| {
                statement.execute(params![new.subject_id, photo_sha256, geometry.to_string(), jpeg, enrolled_at])
            })
            .context("insert face")?;
            Some(tx.last_insert_rowid())
        }
        TemplateFace::Existing(face_id) => {
            let owner: Option<i64> = tx
                .prepare_cached("SELECT subject_id FROM face WHERE id = ?1")
                .and_then(|mut statement| statement.query_row([face_id], |row| row.get(0)).optional())
                .context("read face")?;
            if owner != Some(new.subject_id) {
                return Err(GalleryError::not_found(Entity::Face, *face_id));
            }
            Some(*face_id)
        }
    };
    tx.prepare_cached(
        "INSERT INTO template(subject_id, model_id, dimension, embedding, quality, photo_sha256, enrolled_at, \
         enrolled_by, face_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            new.subject_id,
            new.model_id,
            dimension as i64,
            encode_embedding(&new.embedding),
            quality_json,
            photo_sha256,
            enrolled_at,
            new.enrolled_by,
            face_id,
        ])
    })
    .context("insert template")?;
    let id = tx.last_insert_rowid();
    let has_thumbnail = new.thumbnail_jpeg.is_some();
    if let Some(jpeg) = &new.thumbnail_jpeg {
        tx.prepare_cached("INSERT INTO thumbnail(template_id, jpeg) VALUES (?1, ?2)")
            .and_then(|mut statement| statement.execute(params![id, jpeg]))
            .context("insert thumbnail")?;
    }
    Ok(Template {
        id,
        subject_id: new.subject_id,
        model_id: new.model_id,
        dimension,
        quality: new.quality,
        photo_sha256,
        has_thumbnail,
        face_kept: face_id.is_some(),
        enrolled_at: enrolled_at.to_owned(),
        enrolled_by: new.enrolled_by,
    })
}

pub(super) fn count_rows(conn: &Connection, sql: &str, context: &'static str) -> Result<usize, GalleryError> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
        .context(context)
}

/// `json_each` turns the id list into a table, so any number of ids is one prepared statement and one query.
pub(super) fn ids_as_json(ids: &[i64]) -> String {
    let mut out = String::with_capacity(ids.len() * 8 + 2);
    out.push('[');
    for (position, id) in ids.iter().enumerate() {
        if position > 0 {
            out.push(',');
        }
        out.push_str(&id.to_string());
    }
    out.push(']');
    out
}

/// Appends one entry to the audit chain inside the caller's write transaction, so the entry commits or rolls back
/// with the change it records. The writer lock is held, so nobody can append between reading the head and linking
/// to it.
pub(super) fn append_audit_in(tx: &Transaction<'_>, entry: AuditEntry) -> Result<i64, GalleryError> {
    let details_json = audit::validate_entry(&entry)?;
    let at = now_rfc3339();
    let prev_hash: String = tx
        .prepare_cached("SELECT hash FROM audit ORDER BY id DESC LIMIT 1")
        .and_then(|mut statement| statement.query_row([], |row| row.get(0)).optional())
        .context("read audit chain head")?
        .unwrap_or_else(|| GENESIS_HASH.to_owned());
    // The id is part of the hashed row, so insert first and fill in the hash once the id is known.
    tx.prepare_cached(
        "INSERT INTO audit(at, actor, role, action, purpose, target, details, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, '')",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            at,
            entry.actor,
            entry.role,
            entry.action,
            entry.purpose,
            entry.target,
            details_json,
            prev_hash
        ])
    })
    .context("insert audit entry")?;
    let id = tx.last_insert_rowid();
    let fields = ChainFields {
        id,
        at: &at,
        actor: &entry.actor,
        role: &entry.role,
        action: &entry.action,
        purpose: entry.purpose.as_deref(),
        target: entry.target.as_deref(),
        details_json: &details_json,
    };
    let hash = audit::hash_row(&prev_hash, &fields);
    tx.prepare_cached("UPDATE audit SET hash = ?2 WHERE id = ?1")
        .and_then(|mut statement| statement.execute(params![id, hash]))
        .context("seal audit entry")?;
    Ok(id)
}
