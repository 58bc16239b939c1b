//! The store's connections: pragmas of the writer, the reader pool and its leases, and the `write`/`read`
//! transaction helpers every operation runs through.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use super::SqliteStore;
use crate::gallery::error::{DatabaseContext, GalleryError};

/// Readers beyond the core count only queue on CPU; a handful covers HTTP lookups plus an index rebuild.
pub(super) const READER_CONNECTIONS: usize = 4;

/// Long enough to ride out a checkpoint or an operator holding a lock in the sqlite3 CLI.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Caps the WAL file left behind after a checkpoint; the WAL still grows as needed during a long read.
const JOURNAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

impl SqliteStore {
    /// Runs `body` in an IMMEDIATE transaction on the writer and returns once the commit is durable.
    pub(super) fn write<T>(
        &self,
        body: impl FnOnce(&Transaction<'_>) -> Result<T, GalleryError>,
    ) -> Result<T, GalleryError> {
        let mut conn = self.writer.lock();
        // IMMEDIATE takes the write lock up front: a deferred transaction that reads first and then writes could
        // fail with SQLITE_BUSY if an outside process (sqlite3 CLI) wrote in between.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("begin write transaction")?;
        let Some(anchor) = &self.anchor else {
            let result = body(&tx).and_then(|value| tx.commit().context("commit write transaction").map(|()| value));
            self.note_write(&result);
            return result;
        };
        // The entries this transaction appends are those past the head it found: the write lock is held.
        let result = (move || {
            let head: i64 = tx
                .prepare_cached("SELECT coalesce(max(id), 0) FROM audit")
                .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
                .context("read audit head")?;
            let value = body(&tx)?;
            let appended: Vec<(i64, String)> = tx
                .prepare_cached("SELECT id, hash FROM audit WHERE id > ?1 ORDER BY id")
                .and_then(|mut statement| {
                    statement.query_map([head], |row| Ok((row.get(0)?, row.get(1)?)))?.collect::<Result<_, _>>()
                })
                .context("read appended audit entries")?;
            tx.commit().context("commit write transaction")?;
            Ok((value, appended))
        })();
        self.note_write(&result);
        let (value, appended) = result?;
        // Still under the writer lock, so anchor lines follow commit order. The change is committed: a failed
        // anchor write must not turn it into an error the caller would retry; the entries show as unanchored.
        if let Err(error) = anchor.record(&appended) {
            tracing::error!(error = %error, "audit entries committed but not anchored");
        }
        Ok(value)
    }

    /// Remembers a write refused for want of storage (and forgets it at the next write that commits), so that
    /// readiness reports it.
    fn note_write<T>(&self, result: &Result<T, GalleryError>) {
        match result {
            Ok(_) => *self.unwritable.lock() = None,
            Err(error @ GalleryError::StorageUnavailable { .. }) => *self.unwritable.lock() = Some(error.to_string()),
            Err(_) => {}
        }
    }

    /// Runs `body` in a read transaction, i.e. against one consistent snapshot.
    pub(super) fn read<T>(
        &self,
        body: impl FnOnce(&Transaction<'_>) -> Result<T, GalleryError>,
    ) -> Result<T, GalleryError> {
        let mut conn = self.readers.lease();
        let tx = conn.transaction().context("begin read transaction")?;
        let value = body(&tx)?;
        tx.commit().context("end read transaction")?;
        Ok(value)
    }
}

pub(super) fn configure_writer(conn: &Connection, path: &Path) -> Result<(), GalleryError> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .context("set busy timeout")?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .context("enable write-ahead log")?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(GalleryError::WalUnavailable {
            path: path.to_owned(),
            mode,
        });
    }
    // FULL syncs the WAL on every commit: an acknowledged write survives power loss, not only a process crash.
    conn.pragma_update(None, "synchronous", "FULL")
        .context("set synchronous=FULL")?;
    conn.pragma_update(None, "foreign_keys", true)
        .context("enable foreign keys")?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT_BYTES)
        .context("set journal size limit")?;
    Ok(())
}

pub(super) fn open_reader(path: &Path) -> Result<Connection, GalleryError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .context("open gallery database for reading")?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .context("set busy timeout")?;
    Ok(conn)
}

/// Read-only connections handed out one caller at a time; a caller waits when all are leased.
pub(super) struct ReaderPool {
    idle: Mutex<Vec<Connection>>,
    returned: Condvar,
}

impl ReaderPool {
    pub(super) fn new(connections: Vec<Connection>) -> Self {
        Self {
            idle: Mutex::new(connections),
            returned: Condvar::new(),
        }
    }

    /// Closes every reader; the caller ensures none is leased (the store is being dropped).
    pub(super) fn close_all(&self) {
        self.idle.lock().clear();
    }

    pub(super) fn lease(&self) -> ReaderLease<'_> {
        let mut idle = self.idle.lock();
        loop {
            if let Some(conn) = idle.pop() {
                return ReaderLease {
                    pool: self,
                    conn: Some(conn),
                };
            }
            self.returned.wait(&mut idle);
        }
    }
}

pub(super) struct ReaderLease<'a> {
    pool: &'a ReaderPool,
    /// Always `Some` until drop hands it back.
    conn: Option<Connection>,
}

impl Deref for ReaderLease<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
            .as_ref()
            .unwrap_or_else(|| unreachable!("reader lease holds its connection until drop"))
    }
}

impl DerefMut for ReaderLease<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn
            .as_mut()
            .unwrap_or_else(|| unreachable!("reader lease holds its connection until drop"))
    }
}

impl Drop for ReaderLease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.idle.lock().push(conn);
            self.pool.returned.notify_one();
        }
    }
}
