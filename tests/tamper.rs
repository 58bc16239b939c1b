//! An audit trail that proves itself: real gallery files are tampered with the way someone with access to the
//! database file could — an edited entry, an edit with the hash chain recomputed, a removed, reordered or appended
//! entry, the newest entries cut off, the anchor itself edited — and `facematch audit verify` (or the start of the
//! service) must name each.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use facematch::gallery::audit::{hash_row, ChainFields, GENESIS_HASH};
use rusqlite::Connection;
use serde_json::Value;

const DATABASE: &str = "gallery.sqlite3";

/// Runs `facematch ARGS --data-dir DIR` with `key`; returns success, stdout as JSON (or null) and stderr.
fn facematch(dir: &Path, key: &str, args: &[&str]) -> (bool, Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_facematch"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("FACEMATCH_API_KEY", key)
        .env("FACEMATCH_LOG", "warn")
        .output()
        .expect("the facematch binary runs");
    let stdout = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output.status.success(), stdout, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// A gallery with a few dozen audit entries made through the command line, and its auditor's and admin's keys.
struct Gallery {
    _dir: tempfile::TempDir,
    path: PathBuf,
    auditor: String,
    admin: String,
}

fn gallery() -> Gallery {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let auditor = common::cli_key(&path, "auditor");
    let admin = common::cli_key(&path, "admin");
    for name in ["wanted", "missing", "fighters"] {
        let (ok, _, stderr) = facematch(&path, &admin, &["watchlists", "create", name]);
        assert!(ok, "{stderr}");
    }
    Gallery { _dir: dir, path, auditor, admin }
}

/// A copy of the gallery's files (database, anchor and its key) to tamper with.
fn copy_of(gallery: &Gallery) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    std::fs::create_dir(&path).unwrap();
    for entry in std::fs::read_dir(&gallery.path).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), path.join(entry.file_name())).unwrap();
        }
    }
    (dir, path)
}

/// An audit row's hashed columns: id, at, actor, role, action, purpose, target, details.
type AuditRow = (i64, String, String, String, String, Option<String>, Option<String>, String);

/// Recomputes every entry's hash from `from` on, as a forger who knows the chain's rule would.
fn rechain(db: &Connection, from: i64) {
    let mut rows: Vec<AuditRow> = db
        .prepare("SELECT id, at, actor, role, action, purpose, target, details FROM audit ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut prev = GENESIS_HASH.to_owned();
    for (id, at, actor, role, action, purpose, target, details) in rows.drain(..) {
        let fields = ChainFields {
            id,
            at: &at,
            actor: &actor,
            role: &role,
            action: &action,
            purpose: purpose.as_deref(),
            target: target.as_deref(),
            details_json: &details,
        };
        let hash = hash_row(&prev, &fields);
        if id >= from {
            db.execute("UPDATE audit SET prev_hash = ?2, hash = ?3 WHERE id = ?1", rusqlite::params![id, prev, hash]).unwrap();
        } else {
            let stored: String = db.query_row("SELECT hash FROM audit WHERE id = ?1", [id], |r| r.get(0)).unwrap();
            assert_eq!(stored, hash, "the test's chain rule must be the service's");
        }
        prev = db.query_row("SELECT hash FROM audit WHERE id = ?1", [id], |r| r.get(0)).unwrap();
    }
}

fn tampered(gallery: &Gallery, tamper: impl FnOnce(&Connection, &Path)) -> (tempfile::TempDir, PathBuf) {
    let (dir, path) = copy_of(gallery);
    let db = Connection::open(path.join(DATABASE)).unwrap();
    tamper(&db, &path);
    drop(db);
    (dir, path)
}

fn verify(gallery: &Gallery, path: &Path) -> (bool, Value) {
    let (ok, verdict, stderr) = facematch(path, &gallery.auditor, &["audit", "verify"]);
    assert!(verdict.is_object(), "audit verify printed no verdict: {stderr}");
    (ok, verdict)
}

fn has_problem(verdict: &Value, kind: &str, row: i64) -> bool {
    verdict["problems"].as_array().unwrap().iter().any(|p| {
        p["kind"] == kind && (p["row"] == row || p["from_row"] == row)
    })
}

fn entries(db: &Connection) -> i64 {
    db.query_row("SELECT max(id) FROM audit", [], |r| r.get(0)).unwrap()
}

#[test]
fn every_kind_of_tampering_with_the_audit_trail_is_named() {
    let gallery = gallery();
    let (ok, verdict) = verify(&gallery, &gallery.path);
    assert!(ok, "{verdict}");
    assert_eq!(verdict["status"], "intact", "{verdict}");
    let newest = verdict["rows_checked"].as_i64().unwrap();
    assert!(newest >= 5, "{verdict}");
    assert_eq!(verdict["anchored_through"], newest);

    // An edited entry: the chain breaks there.
    let (_d, path) = tampered(&gallery, |db, _| {
        db.execute("UPDATE audit SET purpose = 'curiosity' WHERE id = 3", []).unwrap();
    });
    let (ok, verdict) = verify(&gallery, &path);
    assert!(!ok && verdict["status"] == "broken" && has_problem(&verdict, "chain_broken", 3), "{verdict}");

    // The same edit with the whole chain recomputed: the chain holds, the anchor does not.
    let (_d, path) = tampered(&gallery, |db, _| {
        db.execute("UPDATE audit SET purpose = 'curiosity' WHERE id = 3", []).unwrap();
        rechain(db, 3);
    });
    let (ok, verdict) = verify(&gallery, &path);
    assert!(!ok && has_problem(&verdict, "edited", 3), "{verdict}");
    assert!(!has_problem(&verdict, "chain_broken", 3), "the recomputed chain itself verifies: {verdict}");

    // A removed entry, the chain relinked around it.
    let (_d, path) = tampered(&gallery, |db, _| {
        db.execute("DELETE FROM audit WHERE id = 4", []).unwrap();
        rechain(db, 5);
    });
    let (ok, verdict) = verify(&gallery, &path);
    assert!(!ok && has_problem(&verdict, "removed", 4), "{verdict}");

    // Two entries swapped (their contents exchanged, the chain recomputed).
    let (_d, path) = tampered(&gallery, |db, _| {
        db.execute_batch(
            "UPDATE audit SET id = -1 WHERE id = 2; UPDATE audit SET id = 2 WHERE id = 3; UPDATE audit SET id = 3 WHERE id = -1;",
        )
        .unwrap();
        rechain(db, 2);
    });
    let (ok, verdict) = verify(&gallery, &path);
    assert!(!ok && has_problem(&verdict, "edited", 2) && has_problem(&verdict, "edited", 3), "{verdict}");

    // The newest two entries cut off: verify names the truncation, and the service refuses to start on it.
    let (_d, path) = tampered(&gallery, |db, _| {
        db.execute("DELETE FROM audit WHERE id > ?1", [newest - 2]).unwrap();
    });
    let (ok, verdict) = verify(&gallery, &path);
    assert!(!ok && has_problem(&verdict, "truncated", newest - 1), "{verdict}");
    let (ok, _, stderr) = facematch(&path, &gallery.admin, &["watchlists", "list"]);
    assert!(!ok && stderr.contains("went backwards"), "a truncated trail must not be served: {stderr}");

    // An entry appended behind the service's back, correctly chained: unanchored, so not intact.
    let forge = |db: &Connection, _: &Path| {
        db.execute(
            "INSERT INTO audit(at, actor, role, action, purpose, target, details, prev_hash, hash) \
             VALUES ('2026-12-01T00:00:00.000Z', 'facematch', 'system', 'delete_subject', NULL, 'subject/1', '{}', '', '')",
            [],
        )
        .unwrap();
        rechain(db, entries(db));
    };
    let (_d, path) = tampered(&gallery, forge);
    let (ok, verdict) = verify(&gallery, &path);
    assert!(!ok && verdict["status"] == "unanchored", "{verdict}");
    assert_eq!(verdict["unanchored_tail"], serde_json::json!([newest + 1]), "{verdict}");
    // Started on, the service adopts it openly: the trail then asks for a review of exactly that entry.
    let (ok, _, stderr) = facematch(&path, &gallery.admin, &["watchlists", "create", "later"]);
    assert!(ok, "{stderr}");
    let (ok, verdict) = verify(&gallery, &path);
    assert!(ok && verdict["status"] == "review", "{verdict}");
    assert_eq!(verdict["adoptions"][0]["from_row"], newest + 1, "{verdict}");
    assert_eq!(verdict["adoptions"][0]["to_row"], newest + 1, "{verdict}");

    // The anchor itself edited to match an edited entry: its signature no longer verifies.
    let (_d, path) = tampered(&gallery, |_, path| {
        let anchor = path.join("audit-anchor.jsonl");
        let text = std::fs::read_to_string(&anchor).unwrap();
        let mut lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        lines[2]["hash"] = Value::String("0".repeat(64));
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&anchor, text).unwrap();
    });
    let (ok, verdict) = verify(&gallery, &path);
    assert!(!ok && verdict["problems"].to_string().contains("forged_anchor_line"), "{verdict}");
    let (ok, _, stderr) = facematch(&path, &gallery.admin, &["watchlists", "list"]);
    assert!(!ok && stderr.contains("anchor"), "an edited anchor must stop the service: {stderr}");

    // Nothing above touched the original.
    let (ok, verdict) = verify(&gallery, &gallery.path);
    assert!(ok && verdict["status"] == "intact", "{verdict}");
}
