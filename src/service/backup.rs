//! Backing up and restoring a gallery: a verified, online copy of the store of record through SQLite's backup API,
//! and its return into a data directory, each audited. The index is not copied: it is rebuilt from the restored
//! store at the next start.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;

use super::storage::{ensure_writable, is_index_file};
use super::{Action, GalleryConfig, Principal, ServiceError};
use crate::gallery::{BackupReport, GalleryError, GalleryStore, SqliteStore, DATABASE_FILE};

/// What a restore put in place.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    #[serde(flatten)]
    pub gallery: BackupReport,
    /// Files of the data directory that were replaced or removed (the old database, its WAL, index files).
    pub replaced: Vec<PathBuf>,
}

fn io<'a>(context: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ServiceError + 'a {
    move |source| ServiceError::Gallery(GalleryError::Io { context, path: path.to_owned(), source })
}

/// Copies the gallery in `config.data_dir` to the new file `to` while the store stays in use (a server may be
/// running), verifies the copy, and audits the backup in the gallery itself. The copy appears at `to` only once
/// verified.
pub fn backup_gallery(config: &GalleryConfig, to: &Path, caller: &Principal) -> Result<BackupReport, ServiceError> {
    let database = config.data_dir.join(DATABASE_FILE);
    if !database.is_file() {
        return Err(ServiceError::InvalidRequest(format!("backup: no gallery database at {}", database.display())));
    }
    if to.exists() {
        return Err(ServiceError::InvalidRequest(format!("backup: {} exists; choose a new file", to.display())));
    }
    let partial = with_suffix(to, ".partial");
    let store = SqliteStore::open(&config.data_dir)?;
    let made = store.backup_to(&partial).and_then(|report| {
        let entry = caller.entry(Action::Backup, Some(to.display().to_string()), json!(report));
        store.append_audit(entry).map(|_| report)
    });
    let report = match made {
        Ok(report) => report,
        Err(error) => {
            // Best effort: an unverified or unaudited copy must not be mistaken for a backup.
            let _ = std::fs::remove_file(&partial);
            return Err(error.into());
        }
    };
    std::fs::rename(&partial, to).map_err(io("put the backup in place", to))?;
    sync_parent(to)?;
    tracing::info!(to = %to.display(), templates = report.templates, generation = report.generation, "gallery backed up");
    Ok(report)
}

/// Puts the backup `from` in place as the gallery of `config.data_dir`: copies it (the backup itself is only read),
/// verifies the copy, then replaces the database and removes its WAL and every index file, so the next start
/// rebuilds the index from the restored store. Refuses a non-empty data directory unless `force`; the service must
/// be stopped. The restore is audited in the restored gallery.
pub fn restore_gallery(
    config: &GalleryConfig,
    from: &Path,
    force: bool,
    caller: &Principal,
) -> Result<RestoreReport, ServiceError> {
    let dir = &config.data_dir;
    if !from.is_file() {
        return Err(ServiceError::InvalidRequest(format!("restore: no backup file at {}", from.display())));
    }
    std::fs::create_dir_all(dir).map_err(|source| ServiceError::DataDir { path: dir.clone(), source })?;
    let existing: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| ServiceError::DataDir { path: dir.clone(), source })?
        .flatten()
        .map(|entry| entry.path())
        .collect();
    if !existing.is_empty() && !force {
        return Err(ServiceError::DataDirNotEmpty { path: dir.clone() });
    }
    ensure_writable(dir)?;
    let incoming = dir.join(format!(".{DATABASE_FILE}.restoring"));
    remove_database_files(&incoming)?;
    let verified = SqliteStore::copy_database(from, &incoming).and_then(|()| SqliteStore::verify_file(&incoming));
    let gallery = match verified {
        Ok(gallery) => gallery,
        Err(error) => {
            let _ = remove_database_files(&incoming);
            return Err(error.into());
        }
    };
    let database = dir.join(DATABASE_FILE);
    let mut replaced = remove_database_files(&database)?;
    for path in existing.iter().filter(|path| is_index_file(path)) {
        std::fs::remove_file(path).map_err(io("remove the old index file", path))?;
        replaced.push(path.clone());
    }
    std::fs::rename(&incoming, &database).map_err(io("put the restored database in place", &database))?;
    sync_parent(&database)?;
    // The anchor vouches for the replaced trail, not the restored one: it is kept aside (to compare with what was
    // restored) and the next start anchors the restored trail afresh, recording that it did (`anchor_started`).
    let anchor = config.audit_anchor.clone().unwrap_or_else(|| dir.join("audit-anchor.jsonl"));
    if anchor.exists() {
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let aside = with_suffix(&anchor, &format!(".replaced-{stamp}"));
        std::fs::rename(&anchor, &aside).map_err(io("keep the replaced audit anchor aside", &anchor))?;
        replaced.push(aside);
    }
    let store = SqliteStore::open(dir)?;
    let details = json!({ "from": from.display().to_string(), "gallery": gallery });
    store.append_audit(caller.entry(Action::Restore, Some(database.display().to_string()), details))?;
    drop(store);
    tracing::info!(from = %from.display(), templates = gallery.templates, generation = gallery.generation, "gallery restored");
    Ok(RestoreReport { gallery, replaced })
}

/// Removes a database file with its WAL and shared-memory files; returns those that existed.
fn remove_database_files(database: &Path) -> Result<Vec<PathBuf>, ServiceError> {
    let mut removed = Vec::new();
    for path in [database.to_owned(), with_suffix(database, "-wal"), with_suffix(database, "-shm")] {
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(io("remove the old database file", &path)(source)),
        }
    }
    Ok(removed)
}

/// `path` with `suffix` appended to its name, in the same directory (so a rename is atomic); SQLite names its side
/// files this way too (`gallery.sqlite3-wal`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// Makes a rename durable: the directory entry is on disk only once the directory itself is synced.
fn sync_parent(path: &Path) -> Result<(), ServiceError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(io("sync the directory", &dir))
}
