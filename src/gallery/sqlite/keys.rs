//! `KeyStore` for `SqliteStore`: the `api_key` table.

use rusqlite::{params, OptionalExtension, Row, Transaction};

use super::queries::{append_audit_in, now_rfc3339};
use super::rows::conversion_failure;
use super::SqliteStore;
use crate::gallery::error::{ConflictKind, DatabaseContext, Entity, GalleryError};
use crate::gallery::keys::{validate_key_id, validate_key_name, ApiKey, KeyStore, NewApiKey};
use crate::gallery::model::AuditEntry;
use crate::gallery::store::AuditFor;

const SELECT_KEY: &str = "SELECT id, name, role, watchlists, created_at, created_by, expires_at, revoked_at, replaces, \
                          secret_hash FROM api_key ";

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<ApiKey> {
    let watchlists: Option<String> = row.get(3)?;
    let watchlists = watchlists
        .map(|text| serde_json::from_str(&text).map_err(|e| conversion_failure(3, rusqlite::types::Type::Text, e)))
        .transpose()?;
    Ok(ApiKey {
        id: row.get(0)?,
        name: row.get(1)?,
        role: row.get(2)?,
        watchlists,
        created_at: row.get(4)?,
        created_by: row.get(5)?,
        expires_at: row.get(6)?,
        revoked_at: row.get(7)?,
        replaces: row.get(8)?,
        secret_hash: row.get(9)?,
    })
}

fn fetch_key(tx: &Transaction<'_>, id: &str) -> Result<ApiKey, GalleryError> {
    tx.prepare_cached(&format!("{SELECT_KEY} WHERE id = ?1"))
        .and_then(|mut statement| statement.query_row([id], key_from_row).optional())
        .context("read api key")?
        .ok_or_else(|| GalleryError::not_found(Entity::ApiKey, id))
}

fn insert_key(tx: &Transaction<'_>, new: NewApiKey, replaces: Option<&str>) -> Result<ApiKey, GalleryError> {
    validate_key_id(&new.id)?;
    validate_key_name(&new.name)?;
    let taken: bool = tx
        .query_row("SELECT EXISTS(SELECT 1 FROM api_key WHERE id = ?1)", [&new.id], |row| row.get(0))
        .context("check api key id")?;
    if taken {
        return Err(GalleryError::conflict(ConflictKind::DuplicateKey, format!("api key {} already exists", new.id)));
    }
    let watchlists = new.watchlists.as_ref().map(|names| serde_json::Value::from(names.clone()).to_string());
    tx.execute(
        "INSERT INTO api_key(id, name, role, watchlists, secret_hash, created_at, created_by, expires_at, replaces) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![new.id, new.name, new.role, watchlists, new.secret_hash, now_rfc3339(), new.created_by, new.expires_at, replaces],
    )
    .context("insert api key")?;
    fetch_key(tx, &new.id)
}

fn mark_revoked(tx: &Transaction<'_>, id: &str) -> Result<(), GalleryError> {
    let key = fetch_key(tx, id)?;
    if key.revoked_at.is_some() {
        return Err(GalleryError::conflict(ConflictKind::KeyRevoked, format!("api key {id} is revoked already")));
    }
    tx.execute("UPDATE api_key SET revoked_at = ?2 WHERE id = ?1", params![id, now_rfc3339()])
        .context("revoke api key")?;
    Ok(())
}

impl KeyStore for SqliteStore {
    fn create_key(&self, new: NewApiKey, audit: AuditFor<'_, ApiKey>) -> Result<ApiKey, GalleryError> {
        self.write(|tx| {
            let key = insert_key(tx, new, None)?;
            append_audit_in(tx, audit(&key))?;
            Ok(key)
        })
    }

    fn get_key(&self, id: &str) -> Result<ApiKey, GalleryError> {
        self.read(|tx| fetch_key(tx, id))
    }

    fn list_keys(&self) -> Result<Vec<ApiKey>, GalleryError> {
        self.read(|tx| {
            let mut statement = tx.prepare_cached(&format!("{SELECT_KEY} ORDER BY created_at, id")).context("list api keys")?;
            let rows = statement.query_map([], key_from_row).context("list api keys")?;
            rows.collect::<Result<Vec<_>, _>>().context("read api key")
        })
    }

    fn revoke_key(&self, id: &str, audit: AuditEntry) -> Result<ApiKey, GalleryError> {
        self.write(|tx| {
            mark_revoked(tx, id)?;
            append_audit_in(tx, audit)?;
            fetch_key(tx, id)
        })
    }

    fn rotate_key(&self, id: &str, new: NewApiKey, audit: AuditFor<'_, ApiKey>) -> Result<ApiKey, GalleryError> {
        self.write(|tx| {
            mark_revoked(tx, id)?;
            let key = insert_key(tx, new, Some(id))?;
            append_audit_in(tx, audit(&key))?;
            Ok(key)
        })
    }
}
