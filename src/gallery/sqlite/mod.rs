//! SQLite implementation of `GalleryStore`: WAL with `synchronous=FULL`, one writer connection, a pool of readers.
//!
//! A `rusqlite::Connection` is `Send` but not `Sync`, so writes are serialised through one connection behind a
//! mutex (SQLite allows one writer at a time anyway) while a few read-only connections serve lookups; under WAL
//! they read the last committed snapshot without waiting for a write in progress.

mod connection;
mod queries;
mod rows;
mod store;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags};

use self::connection::{configure_writer, open_reader, ReaderPool, READER_CONNECTIONS};
use super::error::{DatabaseContext, GalleryError};
use super::schema;

/// File name inside the data directory.
pub const DATABASE_FILE: &str = "gallery.sqlite3";

/// The gallery's store of record in `data_dir/gallery.sqlite3`.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: ReaderPool,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the gallery database and migrates it to the current schema.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, GalleryError> {
        std::fs::create_dir_all(data_dir).map_err(|source| GalleryError::Io {
            context: "create gallery data directory",
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(DATABASE_FILE);
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
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
