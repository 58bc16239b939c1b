//! The service's care of its storage: a clean close (index saved, WAL folded), periodic checkpoints, readiness of
//! the store for writes, the checks at start that refuse a data directory that cannot be written or a gallery that
//! lost its database, and the store identity an index file records.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{ServiceError, WatchlistService};
use crate::gallery::{GalleryStore, SqliteStore, DATABASE_FILE};
use crate::index::IndexStamp;

impl WatchlistService {
    /// Clean shutdown: saves the index, then folds the WAL into the database file, so that the data directory
    /// holds a complete main file and an index that loads. Dropping the service folds the WAL too; this also
    /// reports failures.
    pub fn close(&self) -> Result<(), ServiceError> {
        let saved = self.persist_index();
        self.checkpoint()?;
        saved
    }

    /// Folds the store's write-ahead log into its main file.
    pub fn checkpoint(&self) -> Result<(), ServiceError> {
        Ok(self.store.checkpoint()?)
    }

    /// `Ok` while the store can take writes; `storage_unavailable` after a write was refused for want of storage,
    /// until a probing write succeeds.
    pub fn storage_ready(&self) -> Result<(), ServiceError> {
        Ok(self.store.writable()?)
    }

    /// Folds the WAL every `interval` on a thread of its own (never on the async runtime: a checkpoint writes and
    /// fsyncs the database file) until the returned guard drops or the service is gone.
    pub fn start_checkpoints(self: &Arc<Self>, interval: Duration) -> CheckpointTimer {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let service: Weak<Self> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new().name("wal-checkpoint".into()).spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                let Some(service) = service.upgrade() else { return };
                if let Err(error) = service.checkpoint() {
                    tracing::warn!(error = ?anyhow::Error::from(error), "periodic wal checkpoint failed");
                }
            }
        });
        if let Err(error) = &spawned {
            tracing::warn!(error = %error, "periodic wal checkpoints not started; the wal is folded at shutdown only");
        }
        CheckpointTimer { _stop: stop }
    }
}

/// Where the store stands, as an index file built from it at `generation` records it.
pub(super) fn stamp_of(store: &dyn GalleryStore, store_id: [u8; 16], generation: u64) -> Result<IndexStamp, ServiceError> {
    Ok(IndexStamp { store_id, generation, audit_head: store.audit_head()? })
}

/// Stops the periodic checkpoints when dropped.
#[derive(Debug)]
pub struct CheckpointTimer {
    _stop: std::sync::mpsc::Sender<()>,
}

/// Creates and removes a file in the data directory: SQLite would open a read-only directory's database read-only
/// without a word, and the index could never be saved, so a directory that cannot be written is refused at start.
pub(super) fn ensure_writable(data_dir: &Path) -> Result<(), ServiceError> {
    let probe = data_dir.join(".facematch-write-probe");
    std::fs::write(&probe, b"probe")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|source| ServiceError::DataDirUnwritable { path: data_dir.to_owned(), source })
}

/// An index file beside a missing database, or beside an empty one (the main file of a running server copied
/// without its WAL holds no schema yet), means the gallery was lost: starting would make a new, empty gallery and
/// serve it.
pub(super) fn ensure_database_beside_index(data_dir: &Path) -> Result<(), ServiceError> {
    let entries = std::fs::read_dir(data_dir).map_err(|source| ServiceError::DataDir { path: data_dir.to_owned(), source })?;
    let Some(index) = entries.flatten().map(|entry| entry.path()).find(|path| is_index_file(path)) else {
        return Ok(());
    };
    let database = data_dir.join(DATABASE_FILE);
    let state = if !database.exists() {
        "missing"
    } else if SqliteStore::schema_version_of(&database)? == 0 {
        "empty"
    } else {
        return Ok(());
    };
    Err(ServiceError::DatabaseMissing { database, index, state })
}

/// `index-<model>-<kind>.bin`, the name `open` gives an index file.
pub(super) fn is_index_file(path: &Path) -> bool {
    path.file_name()
        .map(|name| name.to_string_lossy())
        .is_some_and(|name| name.starts_with("index-") && name.ends_with(".bin"))
}

/// An index save killed before its rename leaves its temporary file (`.index-….tmp`); the index file itself is
/// never half-written, but the temporary would stay forever.
pub(super) fn remove_interrupted_index_saves(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".index-") && name.ends_with(".tmp") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(path = %entry.path().display(), "removed an interrupted index save"),
                Err(error) => tracing::warn!(path = %entry.path().display(), error = %error, "interrupted index save not removed"),
            }
        }
    }
}

/// The 16 bytes of a store UUID (`8-4-4-4-12` hex digits), as an index file records them.
pub(super) fn store_id_bytes(id: &str) -> Result<[u8; 16], ServiceError> {
    let digits: Vec<u8> = id.bytes().filter(|&b| b != b'-').collect();
    let mut bytes = [0u8; 16];
    let parsed = digits.len() == 32
        && digits.chunks(2).zip(bytes.iter_mut()).all(|(pair, byte)| {
            std::str::from_utf8(pair).ok().and_then(|hex| u8::from_str_radix(hex, 16).ok()).map(|b| *byte = b).is_some()
        });
    if parsed {
        Ok(bytes)
    } else {
        Err(ServiceError::StoreId { id: id.to_owned() })
    }
}

pub(super) fn format_store_id(bytes: &[u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_ids_round_trip_through_their_bytes() {
        let id = "0f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b";
        assert_eq!(format_store_id(&store_id_bytes(id).expect("a uuid")), id);
        for bad in ["", "0f1e2d3c", "0f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0g", "ü0f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0"] {
            assert!(store_id_bytes(bad).is_err(), "{bad}");
        }
    }
}
