//! SQLite implementation of `GalleryStore`: WAL with `synchronous=FULL`, one writer connection, a pool of readers.
//!
//! A `rusqlite::Connection` is `Send` but not `Sync`, so writes are serialised through one connection behind a
//! mutex (SQLite allows one writer at a time anyway) while a few read-only connections serve lookups; under WAL
//! they read the last committed snapshot without waiting for a write in progress.

mod alerts;
mod connection;
mod hits;
mod jobs;
mod keys;
mod maintenance;
mod migration;
mod queries;
mod rows;
mod store;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags};

pub use self::maintenance::BackupReport;
use self::connection::{configure_writer, open_reader, ReaderPool, READER_CONNECTIONS};
use super::anchor::AuditAnchor;
use super::error::{DatabaseContext, GalleryError};
use super::schema;

/// File name inside the data directory.
pub const DATABASE_FILE: &str = "gallery.sqlite3";

/// The gallery's store of record in `data_dir/gallery.sqlite3`.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: ReaderPool,
    /// Where the audit entries this store commits are anchored (`with_anchor`); none in unit tests.
    anchor: Option<std::sync::Arc<AuditAnchor>>,
    /// Why the last write failed for want of storage, until a write succeeds again: `/readyz` answers from it and
    /// re-probes only while it is set, so a healthy store costs readiness no write.
    unwritable: Mutex<Option<String>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the gallery database and migrates it to the current schema. A store that cannot
    /// take a write (read-only directory or file, full disk) is refused here with `storage_unavailable`, instead of
    /// starting and failing every change.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, GalleryError> {
        std::fs::create_dir_all(data_dir).map_err(|source| GalleryError::Io {
            context: "create gallery data directory",
            path: data_dir.to_owned(),
            source,
        })?;
        let store = SqliteStore::open_file(&data_dir.join(DATABASE_FILE))?;
        store.probe_write()?;
        Ok(store)
    }

    /// Opens the database at `path` itself (a gallery's file, or a backup being verified).
    pub(crate) fn open_file(path: &Path) -> Result<SqliteStore, GalleryError> {
        let path = path.to_owned();
        let mut writer = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .context("open gallery database for writing")?;
        configure_writer(&writer, &path)?;
        let version = schema::migrate(&mut writer)?;
        // Readers open after the writer switched to WAL, so the -wal and -shm files they need exist.
        let readers = (0..READER_CONNECTIONS)
            .map(|_| open_reader(&path))
            .collect::<Result<Vec<_>, _>>()?;
        tracing::info!(path = %path.display(), schema_version = version, "gallery store opened");
        Ok(SqliteStore {
            path,
            writer: Mutex::new(writer),
            readers: ReaderPool::new(readers),
            anchor: None,
            unwritable: Mutex::new(None),
        })
    }

    /// Anchors every audit entry this store commits from now on.
    pub fn with_anchor(mut self, anchor: std::sync::Arc<AuditAnchor>) -> SqliteStore {
        self.anchor = Some(anchor);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SqliteStore {
    /// Folds the WAL into the main file, so that after a clean stop the main file alone holds every row (a site
    /// copying only `gallery.sqlite3` gets the whole gallery). The readers close first: SQLite checkpoints and
    /// removes the WAL only when its last connection closes, and a read-only connection cannot checkpoint.
    fn drop(&mut self) {
        self.readers.close_all();
        if let Err(error) = self.checkpoint_now() {
            tracing::warn!(error = %error, path = %self.path.display(), "wal not folded into the database on close");
        }
    }
}
