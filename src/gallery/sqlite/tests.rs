//! SQLite-specific tests: the file, its reopening and upgrade, WAL readers, crash safety and raw-row checks.
//! Everything the trait alone can show lives in the shared `conformance` suite, run here against SQLite.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rusqlite::{params, Connection, TransactionBehavior};

use super::queries::bump_generation;
use super::{SqliteStore, DATABASE_FILE};
use crate::gallery::conformance::{
    add_template, audit_entries, create_subject, create_watchlist, entry, new_subject,
    new_template, new_watchlist, observe, photo_hash, random_embedding, stream,
    subject_created, subject_deleted, subject_updated, template_added, template_deleted,
    templates_added, watchlist_created, watchlist_deleted, Observed,
};
use crate::gallery::error::GalleryError;
use crate::gallery::model::{NewTemplate, SubjectPatch};
use crate::gallery::schema;
use crate::gallery::store::GalleryStore;

fn open_store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).expect("store opens");
    (dir, store)
}

crate::gallery::conformance::conformance_suite!(open_store);

fn raw_connection(store: &SqliteStore) -> Connection {
    Connection::open(store.path()).expect("raw connection")
}

#[test]
fn a_model_binding_survives_reopening_the_file() {
    let (dir, store) = open_store();
    create_watchlist(&store, "wanted");
    let subject = create_subject(&store, "wanted", "Jane Roe", None);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    add_template(
        &store,
        new_template(subject.id, "model-a", random_embedding(&mut rng, 4), 1),
    );
    store
        .bind_model("model-a", 4, &"a".repeat(64))
        .expect("adopts the fingerprint");
    // The binding is stored, not remembered by this process.
    drop(store);
    let reopened = SqliteStore::open(dir.path()).expect("store reopens");
    let still = reopened
        .bind_model("model-a", 4, &"b".repeat(64))
        .expect_err("still bound");
    assert_eq!(still.code(), "model_changed");
    assert_eq!(
        stream(&reopened, "model-a").1.len(),
        1,
        "nothing enrolled is lost"
    );
}

#[test]
fn a_version_1_gallery_file_is_upgraded_in_place_and_keeps_everything_enrolled() {
    // A gallery written by the first release: schema 1, with no fingerprint column on `model`.
    let dir = tempfile::tempdir().expect("temp dir");
    let embedding: Vec<f32> = vec![0.5, -0.25, 0.125, 1.0];
    let blob: Vec<u8> = embedding.iter().flat_map(|v| v.to_le_bytes()).collect();
    {
        let conn = Connection::open(dir.path().join(DATABASE_FILE)).expect("raw connection");
        schema::create_at_version(&conn, 1);
        conn.execute_batch(
            "INSERT INTO watchlist(name, description, alert_fpir, created_at)
                 VALUES ('wanted', 'wanted persons', 0.003, '2026-01-01T00:00:00Z');
             INSERT INTO subject(watchlist_id, external_ref, display_name, metadata, created_at, updated_at)
                 VALUES (1, 'N-1', 'Jane Roe', '{}', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z');
             INSERT INTO model(model_id, dimension) VALUES ('model-a', 4);
             UPDATE counter SET value = 1 WHERE name = 'generation';",
        )
        .expect("version-1 rows");
        conn.execute(
            "INSERT INTO template(subject_id, model_id, dimension, embedding, quality, photo_sha256, enrolled_at,
                 enrolled_by) VALUES (1, 'model-a', 4, ?1, '{}', ?2, '2026-01-01T00:00:00Z', 'operator-1')",
            rusqlite::params![blob, photo_hash(1)],
        )
        .expect("version-1 template");
    }
    let store = SqliteStore::open(dir.path()).expect("a version-1 gallery opens");
    let version: i64 = store
        .writer
        .lock()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .expect("version");
    assert_eq!(version, schema::SCHEMA_VERSION);
    assert_eq!(
        store
            .get_watchlist("wanted")
            .expect("watchlist kept")
            .alert_fpir,
        0.003
    );
    assert_eq!(
        store
            .get_subject(1)
            .expect("subject kept")
            .external_ref
            .as_deref(),
        Some("N-1")
    );
    assert_eq!(store.generation().expect("generation"), 1);
    let (_, templates) = stream(&store, "model-a");
    assert_eq!(templates.len(), 1, "the enrolled template is kept");
    assert_eq!(templates[0].2, embedding, "bit for bit");
    // Its model row had no fingerprint: the first start records the loaded set-up's, and holds to it.
    store
        .bind_model("model-a", 4, &"a".repeat(64))
        .expect("adopts the fingerprint");
    assert_eq!(
        store
            .bind_model("model-a", 4, &"b".repeat(64))
            .expect_err("changed")
            .code(),
        "model_changed"
    );
}

#[test]
fn deleting_a_subject_leaves_no_thumbnail_rows_behind() {
    let (_dir, store) = open_store();
    crate::gallery::conformance::delete_subject_cascades_to_templates_and_thumbnails(&store);
    // The trait cannot see orphaned rows; the file can.
    let thumbnails: i64 = raw_connection(&store)
        .query_row("SELECT count(*) FROM thumbnail", [], |row| row.get(0))
        .expect("count");
    assert_eq!(thumbnails, 1, "only the kept template's thumbnail remains");
}

#[test]
fn everything_persists_across_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let (subject, template, embedding, generation, audited) = {
        let store = SqliteStore::open(dir.path()).expect("store opens");
        create_watchlist(&store, "wanted");
        let subject = create_subject(&store, "wanted", "Jane Roe", Some("N-1"));
        let embedding = random_embedding(&mut rng, 16);
        let template =
            add_template(&store, new_template(subject.id, "m", embedding.clone(), 1));
        store
            .append_audit(entry("search", "N-1".to_owned()))
            .expect("audited");
        (
            store.get_subject(subject.id).expect("subject"),
            template,
            embedding,
            store.generation().expect("gen"),
            audit_entries(&store),
        )
    };
    let store = SqliteStore::open(dir.path()).expect("store reopens");
    assert_eq!(store.get_subject(subject.id).expect("subject"), subject);
    assert_eq!(
        store.list_templates(subject.id).expect("templates"),
        vec![template.clone()]
    );
    let (reopened_generation, streamed) = stream(&store, "m");
    assert_eq!(reopened_generation, generation);
    assert_eq!(
        streamed,
        vec![(
            template.id,
            store.get_watchlist("wanted").expect("wl").id,
            embedding
        )]
    );
    // Three changes and one search, each with its entry.
    assert_eq!(audited, 4);
    assert_eq!(store.verify_audit_chain().expect("chain"), audited);
    let version: i64 = store
        .writer
        .lock()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .expect("v");
    assert_eq!(version, schema::SCHEMA_VERSION);
    let journal: String = store
        .writer
        .lock()
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .expect("j");
    assert_eq!(journal, "wal");
    // Keys are never reused, even after the newest template is deleted and the store reopened.
    assert_eq!(store
        .delete_template(subject.id, template.id, template_deleted(template.id))
        .expect("deleted").len(), 1);
    drop(store);
    let store = SqliteStore::open(dir.path()).expect("store reopens");
    let next = add_template(
        &store,
        new_template(subject.id, "m", random_embedding(&mut rng, 16), 2),
    );
    assert!(next.id > template.id);
}

#[test]
fn a_tampered_audit_row_is_named_by_verification() {
    let (_dir, store) = open_store();
    for index in 0..5 {
        let id = store
            .append_audit(entry("search", format!("probe-{index}")))
            .expect("appended");
        assert_eq!(id, index + 1);
    }
    assert_eq!(store.verify_audit_chain().expect("intact"), 5);

    let raw = raw_connection(&store);
    raw.execute("UPDATE audit SET purpose = 'curiosity' WHERE id = 3", [])
        .expect("tamper");
    match store.verify_audit_chain() {
        Err(GalleryError::AuditChainBroken { row_id, .. }) => assert_eq!(row_id, 3),
        other => panic!("tampered row 3 must be named, got {other:?}"),
    }
    raw.execute(
        "UPDATE audit SET purpose = 'case 2024/117' WHERE id = 3",
        [],
    )
    .expect("restore");
    assert_eq!(store.verify_audit_chain().expect("restored"), 5);

    raw.execute("DELETE FROM audit WHERE id = 2", [])
        .expect("remove a row");
    let error = store.verify_audit_chain().expect_err("removal detected");
    assert_eq!(error.code(), "audit_chain_broken");
    assert!(matches!(
        error,
        GalleryError::AuditChainBroken { row_id: 3, .. }
    ));
}

/// Asserts that a change failed inside the database, because of the audit trigger, and left nothing behind.
fn assert_rolled_back<T: std::fmt::Debug>(
    store: &SqliteStore,
    before: &Observed,
    change: &str,
    result: Result<T, GalleryError>,
) {
    let error = result.expect_err(change);
    assert_eq!(error.code(), "database_error", "{change}: {error}");
    let cause = std::error::Error::source(&error)
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(
        cause.contains("audit unavailable"),
        "{change} failed for another reason: {error}: {cause}"
    );
    assert_eq!(&observe(store), before, "{change} left something behind");
}

#[test]
fn a_failing_audit_append_rolls_back_the_change() {
    let (_dir, store) = open_store();
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    create_watchlist(&store, "wanted");
    create_watchlist(&store, "missing");
    create_watchlist(&store, "empty");
    let jane = create_subject(&store, "wanted", "Jane Roe", Some("N-1"));
    let kept = add_template(
        &store,
        new_template(jane.id, "m", random_embedding(&mut rng, 4), 1),
    );

    // Stands in for a full disk or a broken audit table: every valid entry reaches the database and fails there.
    let raw = raw_connection(&store);
    raw.execute_batch(
        "CREATE TRIGGER fail_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'audit unavailable'); END;",
    )
    .expect("trigger installed");
    let before = observe(&store);

    let result = store.create_watchlist(new_watchlist("extra"), &watchlist_created);
    assert_rolled_back(&store, &before, "create_watchlist", result);
    let result = store.create_subject(
        new_subject("wanted", "John Doe", Some("N-2")),
        &subject_created,
    );
    assert_rolled_back(&store, &before, "create_subject", result);
    let move_and_rename = SubjectPatch {
        display_name: Some("Jane R. Roe".to_owned()),
        watchlist: Some("missing".to_owned()),
        ..SubjectPatch::default()
    };
    let result = store.update_subject(jane.id, move_and_rename, &subject_updated);
    assert_rolled_back(&store, &before, "update_subject", result);
    let fresh_model = new_template(jane.id, "fresh-model", random_embedding(&mut rng, 6), 2);
    let result = store.add_template(fresh_model, &template_added);
    assert_rolled_back(&store, &before, "add_template", result);
    let batch = (3..5)
        .map(|seed| new_template(jane.id, "m", random_embedding(&mut rng, 4), seed))
        .collect();
    let result = store.add_templates(batch, &templates_added);
    assert_rolled_back(&store, &before, "add_templates", result);
    let result = store.delete_template(jane.id, kept.id, template_deleted(kept.id));
    assert_rolled_back(&store, &before, "delete_template", result);
    let result = store.delete_subject(jane.id, &subject_deleted(jane.id));
    assert_rolled_back(&store, &before, "delete_subject", result);
    let result = store.delete_watchlist("empty", watchlist_deleted("empty"));
    assert_rolled_back(&store, &before, "delete_watchlist", result);
    let result = store.append_audit(entry("search", "probe".to_owned()));
    assert_rolled_back(&store, &before, "append_audit", result);

    raw.execute_batch("DROP TRIGGER fail_audit;")
        .expect("trigger dropped");
    create_watchlist(&store, "extra");
    assert_eq!(store
        .delete_template(jane.id, kept.id, template_deleted(kept.id))
        .expect("template deleted").len(), 1);
    store
        .delete_subject(jane.id, &subject_deleted(jane.id))
        .expect("subject deleted");
    store
        .delete_watchlist("empty", watchlist_deleted("empty"))
        .expect("watchlist deleted");
    assert_eq!(audit_entries(&store), before.audit.len() + 4);
    assert_eq!(
        store.generation().expect("generation"),
        before.generation + 1
    );
    assert_eq!(
        store.verify_audit_chain().expect("chain intact"),
        before.audit.len() + 4
    );
}

#[test]
fn readers_are_not_blocked_by_an_open_write() {
    let (_dir, store) = open_store();
    create_watchlist(&store, "wanted");
    let subject = create_subject(&store, "wanted", "Jane Roe", None);
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    add_template(
        &store,
        new_template(subject.id, "m", random_embedding(&mut rng, 4), 1),
    );

    let mut writer = store.writer.lock();
    let tx = writer
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .expect("write lock");
    tx.execute(
        "INSERT INTO template(subject_id, model_id, dimension, embedding, quality, photo_sha256, enrolled_at, \
         enrolled_by) VALUES (?1, 'm', 1, x'0000803f', '{}', 'x', 'now', 'test')",
        [subject.id],
    )
    .expect("uncommitted insert");
    bump_generation(&tx).expect("uncommitted bump");
    // The write transaction is open and holds SQLite's write lock; readers still see the committed snapshot.
    assert_eq!(store.count_templates("m").expect("count while writing"), 1);
    assert_eq!(store.generation().expect("generation while writing"), 1);
    tx.commit().expect("commit");
    drop(writer);
    assert_eq!(store.count_templates("m").expect("count after commit"), 2);
    assert_eq!(store.generation().expect("generation after commit"), 2);
}

const CRASH_DIR_VAR: &str = "GALLERY_CRASH_TEST_DIR";
const CRASH_SUBJECT_VAR: &str = "GALLERY_CRASH_TEST_SUBJECT";

/// Child half of `acknowledged_enrollments_survive_kill_9`: enrolls until killed, printing each acknowledgement.
#[test]
#[ignore = "runs only as the child process of acknowledged_enrollments_survive_kill_9"]
fn crash_child_enrolls_until_killed() {
    let (Ok(dir), Ok(subject)) = (
        std::env::var(CRASH_DIR_VAR),
        std::env::var(CRASH_SUBJECT_VAR),
    ) else {
        return;
    };
    let subject_id: i64 = subject.parse().expect("subject id from parent");
    let store = SqliteStore::open(Path::new(&dir)).expect("child opens store");
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    for seed in 0.. {
        let embedding = random_embedding(&mut rng, 64);
        let template = add_template(
            &store,
            new_template(subject_id, "m", embedding.clone(), seed),
        );
        println!(
            "acked {} {}",
            template.id,
            serde_json::to_string(&embedding).expect("embedding as json")
        );
    }
}

#[test]
fn acknowledged_enrollments_survive_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let subject_id = {
        let store = SqliteStore::open(dir.path()).expect("store opens");
        create_watchlist(&store, "wanted");
        create_subject(&store, "wanted", "Jane Roe", None).id
    };
    let test_path = module_path!()
        .split_once("::")
        .map_or(module_path!(), |(_, rest)| rest);
    let mut child =
        std::process::Command::new(std::env::current_exe().expect("test binary path"))
            .args([
                &format!("{test_path}::crash_child_enrolls_until_killed"),
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(CRASH_DIR_VAR, dir.path())
            .env(CRASH_SUBJECT_VAR, subject_id.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("child starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut acknowledged: Vec<(i64, Vec<f32>)> = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("child output");
        let Some(rest) = line.strip_prefix("acked ") else {
            continue;
        };
        let (id, embedding) = rest.split_once(' ').expect("id and embedding");
        acknowledged.push((
            id.parse().expect("id"),
            serde_json::from_str(embedding).expect("embedding"),
        ));
        if acknowledged.len() == 40 {
            break;
        }
    }
    // SIGKILL mid-stream: the child is somewhere inside its next enrollment.
    child.kill().expect("kill -9 child");
    child.wait().expect("child reaped");
    assert_eq!(
        acknowledged.len(),
        40,
        "child acknowledged enough enrollments before dying"
    );

    let store = SqliteStore::open(dir.path()).expect("store reopens after crash");
    let (generation, streamed) = stream(&store, "m");
    let streamed: HashMap<i64, Vec<f32>> = streamed
        .into_iter()
        .map(|(key, _, value)| (key, value))
        .collect();
    for (id, embedding) in &acknowledged {
        assert_eq!(
            streamed.get(id),
            Some(embedding),
            "acknowledged template {id} lost or altered"
        );
    }
    assert!(generation >= acknowledged.len() as u64);
    assert_eq!(
        streamed.len() as u64,
        generation,
        "generation and template set agree after recovery"
    );
    // Each enrollment and its audit entry committed together: one entry per template, plus the set-up's two.
    assert_eq!(
        audit_entries(&store),
        streamed.len() + 2,
        "every surviving template has its audit entry"
    );
    assert_eq!(
        store
            .verify_audit_chain()
            .expect("chain intact after crash"),
        streamed.len() + 2
    );
}

/// Measures streaming of 1M 256-d templates (the ANN rebuild path). Not a CI test:
/// `GALLERY_BENCH_TEMPLATES=1000000 cargo test --release -- --ignored --nocapture stream_one_million`
#[test]
#[ignore = "benchmark: builds a ~1.2 GB database"]
fn stream_one_million_templates() {
    let count: usize = std::env::var("GALLERY_BENCH_TEMPLATES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(1_000_000);
    let dimension = 256;
    let per_subject = 4;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).expect("store opens");
    let labels = [
        create_watchlist(&store, "wanted").id,
        create_watchlist(&store, "missing").id,
    ];

    let started = std::time::Instant::now();
    let subjects = count.div_ceil(per_subject);
    {
        // Subjects go in through raw SQL in one transaction: create_subject's one fsync each is not what
        // this measures.
        let mut writer = store.writer.lock();
        let tx = writer.transaction().expect("bulk transaction");
        for index in 0..subjects {
            tx.execute(
                "INSERT INTO subject(watchlist_id, display_name, metadata, created_at, updated_at) \
                 VALUES (?1, ?2, '{}', 'now', 'now')",
                params![labels[index % 2], format!("Subject {index}")],
            )
            .expect("subject inserted");
        }
        tx.commit().expect("bulk commit");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let mut enrolled = 0;
    while enrolled < count {
        let batch: Vec<NewTemplate> = (enrolled..(enrolled + 10_000).min(count))
            .map(|index| {
                let mut template = new_template(
                    (index / per_subject) as i64 + 1,
                    "bench",
                    random_embedding(&mut rng, dimension),
                    index as u64,
                );
                template.thumbnail_jpeg = None;
                template
            })
            .collect();
        enrolled += batch.len();
        store
            .add_templates(batch, &templates_added)
            .expect("batch added");
    }
    eprintln!(
        "built {count} templates ({subjects} subjects) in {:.1?}",
        started.elapsed()
    );
    drop(store);
    let store = SqliteStore::open(dir.path()).expect("store reopens");

    for run in 0..3 {
        let started = std::time::Instant::now();
        let mut checksum = 0.0f64;
        let mut streamed = 0usize;
        store
            .for_each_template("bench", &mut |_key, label, embedding| {
                streamed += 1;
                checksum += f64::from(embedding[0]) + f64::from(label);
            })
            .expect("stream");
        eprintln!(
            "run {run}: streamed {streamed} templates in {:.2?} (checksum {checksum:.3})",
            started.elapsed()
        );
    }
    let started = std::time::Instant::now();
    let counted = store.count_templates("bench").expect("count");
    eprintln!("count_templates = {counted} in {:.2?}", started.elapsed());
    let ids: Vec<i64> = (0..100)
        .map(|_| rng.random_range(1..=count as i64))
        .collect();
    let started = std::time::Instant::now();
    let owners = store.template_owners(&ids).expect("owners");
    let subject_ids: Vec<i64> = owners.values().map(|owner| owner.subject_id).collect();
    let subjects = store.subjects_by_ids(&subject_ids).expect("subjects");
    eprintln!(
        "template_owners + subjects_by_ids for 100 ids in {:.2?} ({} subjects)",
        started.elapsed(),
        subjects.len()
    );
    let size = std::fs::metadata(dir.path().join(DATABASE_FILE))
        .expect("database file")
        .len();
    eprintln!("database file {:.2} GB", size as f64 / 1e9);
}

/// A store with a watchlist, a subject and `templates` templates of model `m`.
fn filled_store(templates: u64) -> (tempfile::TempDir, SqliteStore) {
    let (dir, store) = open_store();
    create_watchlist(&store, "wanted");
    let subject = create_subject(&store, "wanted", "Jane Roe", None);
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for seed in 0..templates {
        add_template(&store, new_template(subject.id, "m", random_embedding(&mut rng, 64), seed));
    }
    (dir, store)
}

#[test]
fn after_a_clean_close_the_main_file_alone_holds_every_row() {
    let (dir, store) = filled_store(40);
    let before = stream(&store, "m");
    let id = store.store_id().expect("store id");
    drop(store);
    let wal = dir.path().join(format!("{DATABASE_FILE}-wal"));
    assert!(!wal.exists() || std::fs::metadata(&wal).expect("wal").len() == 0, "rows left in the wal");

    // What a site copying only the main file gets.
    let copy = tempfile::tempdir().expect("temp dir");
    std::fs::copy(dir.path().join(DATABASE_FILE), copy.path().join(DATABASE_FILE)).expect("copy main file");
    let copied = SqliteStore::open(copy.path()).expect("the copy opens");
    assert_eq!(stream(&copied, "m"), before);
    assert_eq!(copied.store_id().expect("store id"), id, "a copy is the same store");
    copied.verify_audit_chain().expect("audit chain intact");
}

#[test]
fn an_online_backup_is_a_verified_copy_of_the_same_store() {
    let (dir, store) = filled_store(12);
    let to = dir.path().join("backup.sqlite3");
    let report = store.backup_to(&to).expect("backup");
    assert_eq!(report.templates, 12);
    assert_eq!((report.watchlists, report.subjects), (1, 1));
    assert_eq!(report.generation, store.generation().expect("generation"));
    assert_eq!(report.store_id, store.store_id().expect("store id"));
    assert_eq!(report.audit_entries, store.verify_audit_chain().expect("chain"));
    // The store goes on taking writes after (and during) a backup.
    let subject = create_subject(&store, "wanted", "John Doe", None);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    add_template(&store, new_template(subject.id, "m", random_embedding(&mut rng, 64), 99));

    let restored = tempfile::tempdir().expect("temp dir");
    let database = restored.path().join(DATABASE_FILE);
    SqliteStore::copy_database(&to, &database).expect("copy back");
    let again = SqliteStore::verify_file(&database).expect("verified");
    assert_eq!(again, SqliteStore::verify_file(&to).expect("the backup verifies again"));
    assert_eq!(again.templates, 12, "the backup is the snapshot it was taken at");
}

#[test]
fn a_damaged_copy_fails_verification() {
    let (dir, store) = filled_store(12);
    let to = dir.path().join("backup.sqlite3");
    store.backup_to(&to).expect("backup");
    let mut bytes = std::fs::read(&to).expect("read backup");
    // Garbage over the pages after the first: the header still says SQLite, the b-trees do not hold.
    let start = 4096.min(bytes.len() / 2);
    for byte in &mut bytes[start..] {
        *byte = 0x5a;
    }
    std::fs::write(&to, &bytes).expect("write damage");
    let error = SqliteStore::verify_file(&to).expect_err("damage found");
    assert!(
        matches!(error, GalleryError::Damaged { .. } | GalleryError::Verification { .. }),
        "{error:?}"
    );
}

#[test]
fn a_file_of_garbage_is_refused_as_damaged() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join(DATABASE_FILE), vec![0x5a; 64 * 1024]).expect("garbage");
    let error = SqliteStore::open(dir.path()).expect_err("refused");
    assert_eq!(error.code(), "database_damaged", "{error}");
    assert!(error.to_string().contains("restore it from a backup"), "{error}");
}
