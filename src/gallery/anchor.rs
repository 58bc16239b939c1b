//! The audit anchor: an append-only file outside the database, one HMAC-signed line per audit entry the service
//! itself committed, so that editing, removing, reordering, inserting or truncating entries in the database —
//! even with the hash chain recomputed — no longer matches what was signed.
//!
//! Each line is `{"row":17,"hash":"<hex>","mac":"<hex>"}` with `mac = HMAC-SHA256(key, "facematch-audit-anchor\0"
//! row "\0" hash)`. The key is 32 random bytes kept in its own file (hex, mode 0600), made on first use. Someone who
//! can rewrite the database but not the key cannot forge lines; keeping the key and a copy of the anchor off the
//! data volume (`gallery.audit_anchor_key`, `gallery.audit_anchor`) is what makes that true (README "Audit anchor").
//! Lines are appended after the entry's transaction committed, so the anchor never names an entry the database
//! lacks; a crash between the two leaves the newest entries unanchored, which the next start adopts openly.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::error::GalleryError;

/// Bytes of the anchor key.
const KEY_BYTES: usize = 32;

/// One anchored audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorLine {
    pub row: i64,
    pub hash: String,
    pub mac: String,
}

/// What comparing the database's audit entries with the anchor found, first problem of each kind first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum AuditProblem {
    /// The hash chain inside the database breaks at this row.
    ChainBroken { row: i64, reason: String },
    /// An anchor line's signature does not verify: the anchor file itself was edited.
    ForgedAnchorLine { line: usize },
    /// The database holds another hash for an anchored entry: it was edited (or the chain recomputed).
    Edited { row: i64 },
    /// An anchored entry is missing from the database, with newer ones still there.
    Removed { row: i64 },
    /// The newest anchored entries are missing: the trail was truncated from this row on.
    Truncated { from_row: i64 },
    /// An entry older than the newest anchored one that the service never anchored: written behind its back.
    NotAnchored { row: i64 },
}

/// The anchor file and its key.
pub struct AuditAnchor {
    path: PathBuf,
    key: Vec<u8>,
    file: Mutex<File>,
}

impl std::fmt::Debug for AuditAnchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditAnchor").field("path", &self.path).finish_non_exhaustive()
    }
}

fn io_error<'a>(context: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> GalleryError + 'a {
    move |source| GalleryError::Io { context, path: path.to_owned(), source }
}

impl AuditAnchor {
    /// Opens (or starts) the anchor at `path`, signing with the key in `key_path` (made when missing).
    pub fn open(path: &Path, key_path: &Path) -> Result<AuditAnchor, GalleryError> {
        let key = read_or_make_key(key_path)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_error("open audit anchor", path))?;
        Ok(AuditAnchor { path: path.to_owned(), key, file: Mutex::new(file) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn mac(&self, row: i64, hash: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("hmac takes any key length");
        mac.update(b"facematch-audit-anchor\0");
        mac.update(row.to_string().as_bytes());
        mac.update(b"\0");
        mac.update(hash.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Appends one signed line per committed entry, in one write. Not synced here: the database already holds
    /// the entries durably, and a line lost to power failure shows as an unanchored tail, adopted openly.
    pub fn record(&self, rows: &[(i64, String)]) -> Result<(), GalleryError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut text = String::with_capacity(rows.len() * 180);
        for (row, hash) in rows {
            let line = AnchorLine { row: *row, hash: hash.clone(), mac: self.mac(*row, hash) };
            text.push_str(&serde_json::to_string(&line).expect("anchor lines serialise"));
            text.push('\n');
        }
        self.file.lock().write_all(text.as_bytes()).map_err(io_error("append to audit anchor", &self.path))
    }

    /// Flushes the anchor to disk (clean shutdown, backups).
    pub fn sync(&self) -> Result<(), GalleryError> {
        self.file.lock().sync_all().map_err(io_error("sync audit anchor", &self.path))
    }

    /// Every anchored entry (`row → hash`), and the lines whose signature fails. A torn last line (a crash in
    /// the middle of an append) is ignored: it never finished being written.
    pub fn read(&self) -> Result<(BTreeMap<i64, String>, Vec<AuditProblem>), GalleryError> {
        let file = File::open(&self.path).map_err(io_error("read audit anchor", &self.path))?;
        let mut anchored = BTreeMap::new();
        let mut problems = Vec::new();
        let lines: Vec<String> =
            BufReader::new(file).lines().collect::<Result<_, _>>().map_err(io_error("read audit anchor", &self.path))?;
        let last = lines.len();
        for (index, text) in lines.iter().enumerate() {
            if text.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<AnchorLine>(text) {
                Ok(line) if self.mac(line.row, &line.hash) == line.mac => {
                    anchored.insert(line.row, line.hash);
                }
                Err(_) if index + 1 == last => {}
                _ => problems.push(AuditProblem::ForgedAnchorLine { line: index + 1 }),
            }
        }
        Ok((anchored, problems))
    }

    /// Compares the database's entries, `(id, hash)` in id order, with the anchor. Entries newer than the newest
    /// anchored one are returned as the unanchored tail (entries still being anchored, or a crash's), not as
    /// problems.
    pub fn compare(
        anchored: &BTreeMap<i64, String>,
        database: impl IntoIterator<Item = (i64, String)>,
    ) -> (Vec<AuditProblem>, Vec<i64>) {
        let newest_anchored = anchored.keys().next_back().copied().unwrap_or(0);
        let mut problems = Vec::new();
        let mut tail = Vec::new();
        let mut expected = anchored.iter().peekable();
        for (row, hash) in database {
            while let Some((&missing, _)) = expected.next_if(|(&anchored_row, _)| anchored_row < row) {
                problems.push(AuditProblem::Removed { row: missing });
            }
            match expected.next_if(|(&anchored_row, _)| anchored_row == row) {
                Some((_, anchored_hash)) if *anchored_hash != hash => problems.push(AuditProblem::Edited { row }),
                Some(_) => {}
                None if row > newest_anchored => tail.push(row),
                None => problems.push(AuditProblem::NotAnchored { row }),
            }
        }
        if let Some((&from_row, _)) = expected.next() {
            problems.push(AuditProblem::Truncated { from_row });
        }
        (problems, tail)
    }
}

fn read_or_make_key(path: &Path) -> Result<Vec<u8>, GalleryError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = hex::decode(text.trim()).ok().filter(|key| key.len() == KEY_BYTES);
            key.ok_or_else(|| GalleryError::AnchorKey { path: path.to_owned() })
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut key = vec![0u8; KEY_BYTES];
            getrandom::fill(&mut key).map_err(|_| GalleryError::AnchorKey { path: path.to_owned() })?;
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path).map_err(io_error("create audit anchor key", path))?;
            file.write_all(hex::encode(&key).as_bytes()).map_err(io_error("write audit anchor key", path))?;
            file.sync_all().map_err(io_error("sync audit anchor key", path))?;
            Ok(key)
        }
        Err(error) => Err(io_error("read audit anchor key", path)(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchor() -> (tempfile::TempDir, AuditAnchor) {
        let dir = tempfile::tempdir().unwrap();
        let anchor = AuditAnchor::open(&dir.path().join("anchor.jsonl"), &dir.path().join("anchor.key")).unwrap();
        (dir, anchor)
    }

    fn rows(ids: &[i64]) -> Vec<(i64, String)> {
        ids.iter().map(|id| (*id, format!("h{id}"))).collect()
    }

    #[test]
    fn an_intact_trail_matches_and_its_newest_entries_form_the_tail() {
        let (_dir, anchor) = anchor();
        anchor.record(&rows(&[1, 2, 3])).unwrap();
        let (anchored, forged) = anchor.read().unwrap();
        assert!(forged.is_empty());
        let (problems, tail) = AuditAnchor::compare(&anchored, rows(&[1, 2, 3, 4, 5]));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(tail, vec![4, 5]);
    }

    #[test]
    fn edits_removals_insertions_and_truncation_are_each_named() {
        let (_dir, anchor) = anchor();
        anchor.record(&rows(&[1, 2, 3, 4, 5])).unwrap();
        let (anchored, _) = anchor.read().unwrap();
        let mut edited = rows(&[1, 2, 3, 4, 5]);
        edited[1].1 = "other".into();
        assert_eq!(AuditAnchor::compare(&anchored, edited).0, vec![AuditProblem::Edited { row: 2 }]);
        assert_eq!(AuditAnchor::compare(&anchored, rows(&[1, 2, 4, 5])).0, vec![AuditProblem::Removed { row: 3 }]);
        assert_eq!(AuditAnchor::compare(&anchored, rows(&[1, 2, 3])).0, vec![AuditProblem::Truncated { from_row: 4 }]);
        anchor.record(&rows(&[7])).unwrap();
        let (anchored, _) = anchor.read().unwrap();
        assert_eq!(
            AuditAnchor::compare(&anchored, rows(&[1, 2, 3, 4, 5, 6, 7])).0,
            vec![AuditProblem::NotAnchored { row: 6 }]
        );
    }

    #[test]
    fn a_line_signed_with_another_key_is_forged_and_the_key_persists() {
        let (dir, anchor) = anchor();
        anchor.record(&rows(&[1])).unwrap();
        let (other_dir, other) = {
            let d = tempfile::tempdir().unwrap();
            let a = AuditAnchor::open(&d.path().join("a.jsonl"), &d.path().join("a.key")).unwrap();
            (d, a)
        };
        other.record(&rows(&[2])).unwrap();
        let forged = std::fs::read_to_string(other.path()).unwrap();
        std::fs::OpenOptions::new().append(true).open(anchor.path()).unwrap().write_all(forged.as_bytes()).unwrap();
        let reopened = AuditAnchor::open(anchor.path(), &dir.path().join("anchor.key")).unwrap();
        let (anchored, problems) = reopened.read().unwrap();
        assert_eq!(anchored.len(), 1);
        assert_eq!(problems, vec![AuditProblem::ForgedAnchorLine { line: 2 }]);
        drop(other_dir);
    }
}
