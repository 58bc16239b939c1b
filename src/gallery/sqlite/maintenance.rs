//! Keeping the SQLite file whole and copyable: WAL checkpoints, the write probe behind readiness, the size cap,
//! the store's identity, and online backups through SQLite's backup API with their verification.

use std::path::Path;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use super::queries::read_generation;
use super::SqliteStore;
use crate::gallery::error::{DatabaseContext, GalleryError};
use crate::gallery::store::GalleryStore;

/// SQLite's own ceiling for `max_page_count`, i.e. no cap.
const NO_PAGE_LIMIT: u64 = 0xffff_fffe;

/// Needs pages of its own, more than an enrollment writes (a template and its thumbnail, a few tens of KiB), so the
/// probe hits a full disk or the size cap as an enrollment would; and WAL space that a refused enrollment left
/// allocated cannot make a full disk look writable.
const PROBE_BYTES: i64 = 256 * 1024;

/// How long a copy waits before retrying a step that found the source locked, and how often it tries (10 s in all).
const BUSY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);
const BUSY_RETRIES: usize = 200;

/// What a verified copy of a gallery holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupReport {
    pub store_id: String,
    pub generation: u64,
    pub watchlists: usize,
    pub subjects: usize,
    pub templates: usize,
    /// Audit rows whose hash chain was checked.
    pub audit_entries: usize,
    /// Size of the copy in bytes.
    pub bytes: u64,
}

impl SqliteStore {
    /// `PRAGMA wal_checkpoint(TRUNCATE)`: copies every committed frame into the main file and empties the WAL.
    /// A reader outside the service inside a long transaction can keep it from finishing; that is reported, not
    /// waited for.
    pub(super) fn checkpoint_now(&self) -> Result<(), GalleryError> {
        let conn = self.writer.lock();
        let (busy, wal_frames, copied): (i64, i64, i64) = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .context("checkpoint the write-ahead log")?;
        if busy != 0 {
            tracing::warn!(wal_frames, copied, "wal checkpoint incomplete: another connection holds a read transaction");
        } else {
            tracing::debug!(wal_frames, copied, "wal folded into the database file");
        }
        Ok(())
    }

    /// A write that allocates pages and commits (then leaves no row behind): fails with `storage_unavailable`
    /// exactly when an enrollment would. Costs one fsync, so readiness runs it only after a write failed.
    pub(super) fn probe_write(&self) -> Result<(), GalleryError> {
        self.write(|tx| {
            tx.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('write_probe', zeroblob(?1))", [PROBE_BYTES])
                .context("probe a write")?;
            tx.execute("DELETE FROM meta WHERE key = 'write_probe'", []).context("probe a write")?;
            Ok(())
        })
    }

    pub(super) fn writable_now(&self) -> Result<(), GalleryError> {
        if self.unwritable.lock().is_none() {
            return Ok(());
        }
        self.probe_write()
    }

    pub(super) fn cap_pages(&self, max_pages: Option<u64>) -> Result<(), GalleryError> {
        let pages = max_pages.unwrap_or(NO_PAGE_LIMIT).min(NO_PAGE_LIMIT);
        // SQLite never sets the cap below the file's current size; it answers with the cap in force.
        let _: i64 = self
            .writer
            .lock()
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |row| row.get(0))
            .context("cap the database size")?;
        Ok(())
    }

    pub(super) fn read_store_id(conn: &Connection) -> Result<String, GalleryError> {
        conn.prepare_cached("SELECT value FROM meta WHERE key = 'store_id'")
            .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
            .context("read store id")
    }

    /// Copies the live database page by page into `to` from one read snapshot (writers go on meanwhile), then
    /// opens the copy and verifies it: SQLite's integrity check, the audit hash chain, its counts and its identity.
    pub fn backup_to(&self, to: &Path) -> Result<BackupReport, GalleryError> {
        copy_pages(&self.readers.lease(), to)?;
        let report = SqliteStore::verify_file(to)?;
        let expected = self.store_id()?;
        if report.store_id != expected {
            return Err(GalleryError::Verification {
                path: to.to_owned(),
                reason: format!("the copy names store {}, not {expected}", report.store_id),
            });
        }
        Ok(report)
    }

    /// The schema version of the database at `path`, read without changing it: 0 for a file that holds no schema yet.
    pub fn schema_version_of(path: &Path) -> Result<i64, GalleryError> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .context("open gallery database for reading")?;
        conn.query_row("PRAGMA user_version", [], |row| row.get(0)).context("read schema version")
    }

    /// Opens a copied gallery file as a store (which upgrades an older schema) and checks it whole. The store is
    /// dropped before returning, so the file is checkpointed and stands alone.
    pub fn verify_file(path: &Path) -> Result<BackupReport, GalleryError> {
        let store = SqliteStore::open_file(path)?;
        let problems: Vec<String> = {
            let conn = store.writer.lock();
            let mut statement = conn.prepare("PRAGMA integrity_check").context("check database integrity")?;
            let rows = statement.query_map([], |row| row.get::<_, String>(0)).context("check database integrity")?;
            rows.collect::<Result<Vec<_>, _>>().context("check database integrity")?
        };
        if problems != ["ok"] {
            return Err(GalleryError::Verification {
                path: path.to_owned(),
                reason: format!("integrity check: {}", problems.join("; ")),
            });
        }
        let audit_entries = store.verify_audit_chain()?;
        let (store_id, generation, watchlists, subjects, templates) = store.read(|tx| {
            let count = |sql: &str| -> Result<usize, GalleryError> {
                tx.query_row(sql, [], |row| row.get(0)).context("count rows of the copy")
            };
            Ok((
                SqliteStore::read_store_id(tx)?,
                read_generation(tx)?,
                count("SELECT count(*) FROM watchlist")?,
                count("SELECT count(*) FROM subject")?,
                count("SELECT count(*) FROM template")?,
            ))
        })?;
        drop(store);
        let bytes = std::fs::metadata(path)
            .map_err(|source| GalleryError::Io { context: "measure the copy", path: path.to_owned(), source })?
            .len();
        Ok(BackupReport { store_id, generation, watchlists, subjects, templates, audit_entries, bytes })
    }

    /// Copies the gallery file `from` into `to` through the backup API, leaving `from` untouched (it is opened
    /// read-only), so that a restore verifies a copy and never the operator's only backup.
    pub fn copy_database(from: &Path, to: &Path) -> Result<(), GalleryError> {
        let source = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .context("open the backup file")?;
        copy_pages(&source, to)
    }
}

/// Copies every page of `source` into a new database at `to` through the backup API in one step, i.e. inside one
/// read transaction of the source: the copy is one consistent snapshot, and writers of the source go on meanwhile.
/// A step that finds the source locked is retried for a while.
fn copy_pages(source: &Connection, to: &Path) -> Result<(), GalleryError> {
    let mut copy = Connection::open_with_flags(
        to,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .context("create the copy")?;
    let backup = Backup::new(source, &mut copy).context("start the copy")?;
    for _ in 0..BUSY_RETRIES {
        match backup.step(-1).context("copy the database")? {
            StepResult::Done => return Ok(()),
            StepResult::Busy | StepResult::Locked => std::thread::sleep(BUSY_PAUSE),
            // `More` only follows a step of fewer pages than all; take the next one at once.
            _ => {}
        }
    }
    Err(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None))
        .context("copy the database: the source stayed locked")
}
