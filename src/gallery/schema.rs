//! SQLite schema of the gallery and its forward-only migrations, versioned with `PRAGMA user_version`.

use rusqlite::{Connection, TransactionBehavior};

use super::error::{DatabaseContext, GalleryError};

/// `MIGRATIONS[n]` upgrades a database at `user_version = n` to `n + 1`. Append only; never edit a shipped step.
const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    r#"
    CREATE TABLE watchlist (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,   -- also the ANN label (u32), never reused
        name        TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL,
        alert_fpir  REAL NOT NULL CHECK (alert_fpir > 0 AND alert_fpir < 1),
        created_at  TEXT NOT NULL
    );

    CREATE TABLE subject (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        watchlist_id INTEGER NOT NULL REFERENCES watchlist(id) ON DELETE RESTRICT,
        external_ref TEXT,
        display_name TEXT NOT NULL,
        metadata     TEXT NOT NULL CHECK (json_valid(metadata) AND json_type(metadata) = 'object'),
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL
    );
    CREATE UNIQUE INDEX subject_external_ref ON subject(watchlist_id, external_ref) WHERE external_ref IS NOT NULL;
    CREATE INDEX subject_watchlist ON subject(watchlist_id, id);

    -- One row per model id: its dimension is fixed by the first enrollment and never changes.
    CREATE TABLE model (
        model_id  TEXT PRIMARY KEY,
        dimension INTEGER NOT NULL CHECK (dimension > 0)
    ) WITHOUT ROWID;

    CREATE TABLE template (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,   -- ANN key, never reused
        subject_id   INTEGER NOT NULL REFERENCES subject(id) ON DELETE CASCADE,
        model_id     TEXT NOT NULL REFERENCES model(model_id),
        dimension    INTEGER NOT NULL,
        embedding    BLOB NOT NULL CHECK (length(embedding) = 4 * dimension),   -- little-endian f32
        quality      TEXT NOT NULL CHECK (json_valid(quality)),
        photo_sha256 TEXT NOT NULL,
        enrolled_at  TEXT NOT NULL,
        enrolled_by  TEXT NOT NULL
    );
    CREATE INDEX template_subject_photo ON template(subject_id, photo_sha256);
    CREATE INDEX template_model ON template(model_id, id);

    -- Kept apart so that streaming embeddings never pages through JPEG bytes.
    CREATE TABLE thumbnail (
        template_id INTEGER PRIMARY KEY REFERENCES template(id) ON DELETE CASCADE,
        jpeg        BLOB NOT NULL
    );

    CREATE TABLE counter (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO counter(name, value) VALUES ('generation', 0);

    CREATE TABLE audit (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        at        TEXT NOT NULL,
        actor     TEXT NOT NULL,
        role      TEXT NOT NULL,
        action    TEXT NOT NULL,
        purpose   TEXT,
        target    TEXT,
        details   TEXT NOT NULL CHECK (json_valid(details)),
        prev_hash TEXT NOT NULL,
        hash      TEXT NOT NULL
    );
    "#,
    // 2: what the templates of each model id are (`ModelManifest::template_fingerprint`), so that a changed model
    // file or manifest under the same id is refused instead of mixing its templates with the old ones. NULL in a
    // gallery made before it: the next service start records its model's fingerprint.
    r#"
    ALTER TABLE model ADD COLUMN fingerprint TEXT;
    "#,
    // 3: API keys (only a slow hash of each secret), and how long a watchlist keeps its subjects.
    r#"
    CREATE TABLE api_key (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        role        TEXT NOT NULL,
        watchlists  TEXT CHECK (watchlists IS NULL OR (json_valid(watchlists) AND json_type(watchlists) = 'array')),
        secret_hash TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        created_by  TEXT NOT NULL,
        expires_at  TEXT,
        revoked_at  TEXT,
        replaces    TEXT REFERENCES api_key(id)
    ) WITHOUT ROWID;

    ALTER TABLE watchlist ADD COLUMN retention_days INTEGER CHECK (retention_days IS NULL OR retention_days > 0);
    "#,
    // 4: the store's identity, a random version-4 UUID made once, when the store is created (or first opened by a
    // build with this step), so that an index file or a backup names the store it belongs to. SQLite's
    // randomblob() draws from the operating system's entropy at first use; no Rust dependency is needed.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO meta(key, value)
    SELECT 'store_id', lower(substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3) || '-'
        || substr('89AB', 1 + (unicode(substr(h, 17, 1)) % 4), 1) || substr(h, 18, 3) || '-' || substr(h, 21, 12))
    FROM (SELECT hex(randomblob(16)) AS h);
    "#,
    // 5: hits (search candidates above their alert threshold) and their human review. A hit keeps the ids of the
    // subject and template it names, not a copy of them, and no foreign key: a subject erased by hand or by
    // retention leaves its hits' decisions on record, with nothing of the subject but its id. The watchlist is kept
    // by name (names never change) so that a key limited to watchlists filters hits without a join.
    r#"
    CREATE TABLE hit (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at        TEXT NOT NULL,
        source            TEXT NOT NULL CHECK (source IN ('checkpoint', 'job')),
        search_id         INTEGER NOT NULL REFERENCES audit(id),
        face              INTEGER NOT NULL CHECK (face >= 0),
        watchlist         TEXT NOT NULL,
        subject_id        INTEGER NOT NULL,
        template_id       INTEGER NOT NULL,
        similarity        REAL NOT NULL,
        decision_score    REAL,
        fpir              REAL,
        fpir_extrapolated INTEGER NOT NULL CHECK (fpir_extrapolated IN (0, 1)),
        searched_by_key   TEXT NOT NULL,
        searched_by_name  TEXT NOT NULL,
        checkpoint        TEXT,
        case_ref          TEXT,
        state             TEXT NOT NULL
            CHECK (state IN ('undecided', 'awaiting_second', 'confirmed', 'rejected', 'disputed')),
        acknowledged_at   TEXT,
        acknowledged_key  TEXT,
        acknowledged_name TEXT
    );
    CREATE INDEX hit_state ON hit(state, id);
    CREATE INDEX hit_case ON hit(case_ref, id) WHERE case_ref IS NOT NULL;

    -- Kept apart so that paging through queues never reads JPEG bytes.
    CREATE TABLE hit_probe (
        hit_id INTEGER PRIMARY KEY REFERENCES hit(id) ON DELETE CASCADE,
        jpeg   BLOB NOT NULL
    );

    -- One decision per reviewer per hit, by key and by the key holder's name (a rotated key keeps its name).
    CREATE TABLE hit_review (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        hit_id        INTEGER NOT NULL REFERENCES hit(id) ON DELETE CASCADE,
        reviewer_key  TEXT NOT NULL,
        reviewer_name TEXT NOT NULL,
        decision      TEXT NOT NULL CHECK (decision IN ('potential_match', 'no_candidate', 'inconclusive')),
        comment       TEXT NOT NULL,
        at            TEXT NOT NULL,
        UNIQUE (hit_id, reviewer_key),
        UNIQUE (hit_id, reviewer_name)
    );
    "#,
    // 6: investigators' bulk search jobs. A job's photos wait on disk under `jobs/<dir>/`; each has a row here that
    // is the queue (a runner claims a photo by moving it from `pending` to `claimed`, so several nodes can share it)
    // and, once searched or refused, its durable result. A hit found by a job names it (`hit.job_id`); the hit and
    // its decisions outlive the job's retention, its probe crop does not.
    r#"
    CREATE TABLE job (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        case_ref       TEXT NOT NULL,
        state          TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'cancelled', 'failed')),
        submitted_key  TEXT NOT NULL,
        submitted_name TEXT NOT NULL,
        purpose        TEXT,
        dir            TEXT NOT NULL UNIQUE,
        created_at     TEXT NOT NULL,
        started_at     TEXT,
        run_started_at TEXT,
        finished_at    TEXT,
        expires_at     TEXT NOT NULL,
        watchlists     TEXT,
        threshold_fpir REAL,
        k              INTEGER NOT NULL CHECK (k > 0),
        expired        INTEGER NOT NULL DEFAULT 0 CHECK (expired IN (0, 1))
    );
    CREATE INDEX job_state ON job(state, id);
    CREATE INDEX job_expiry ON job(expires_at) WHERE expired = 0;

    CREATE TABLE job_photo (
        job_id     INTEGER NOT NULL REFERENCES job(id) ON DELETE CASCADE,
        n          INTEGER NOT NULL CHECK (n >= 0),
        name       TEXT NOT NULL,
        file       TEXT,
        status     TEXT NOT NULL CHECK (status IN ('pending', 'claimed', 'searched', 'refused')),
        code       TEXT,
        message    TEXT,
        faces      INTEGER NOT NULL DEFAULT 0,
        hits       INTEGER NOT NULL DEFAULT 0,
        best_score REAL,
        result     TEXT,
        claimed_at TEXT,
        done_at    TEXT,
        PRIMARY KEY (job_id, n)
    ) WITHOUT ROWID;
    CREATE INDEX job_photo_queue ON job_photo(status, job_id, n);

    ALTER TABLE hit ADD COLUMN job_id INTEGER REFERENCES job(id);
    CREATE INDEX hit_job ON hit(job_id, id) WHERE job_id IS NOT NULL;
    "#,
    // 7: alerts that reach someone: webhooks (the secret is kept so the server can sign; `cursor` is the newest hit the
    // webhook's deliveries were made up to, so any node's dispatcher finds what is new from the store alone) and one
    // delivery per hit and webhook, with every attempt. No foreign key to `hit`: deliveries are bookkeeping, and a
    // hit is never deleted under them. The partial index serves the console's queue of open alerts.
    r#"
    CREATE TABLE webhook (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        url         TEXT NOT NULL,
        watchlists  TEXT CHECK (watchlists IS NULL OR (json_valid(watchlists) AND json_type(watchlists) = 'array')),
        sources     TEXT NOT NULL CHECK (json_valid(sources) AND json_type(sources) = 'array'),
        description TEXT,
        secret      TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        created_by  TEXT NOT NULL,
        cursor      INTEGER NOT NULL
    );

    CREATE TABLE webhook_delivery (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        webhook_id      INTEGER NOT NULL REFERENCES webhook(id) ON DELETE CASCADE,
        hit_id          INTEGER NOT NULL,
        state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
        created_at      TEXT NOT NULL,
        next_attempt_ms INTEGER,
        attempts        TEXT NOT NULL CHECK (json_valid(attempts) AND json_type(attempts) = 'array'),
        UNIQUE (webhook_id, hit_id)
    );
    CREATE INDEX webhook_delivery_due ON webhook_delivery(state, next_attempt_ms) WHERE state = 'pending';

    CREATE INDEX hit_open ON hit(id) WHERE source = 'checkpoint' AND acknowledged_at IS NULL;

    -- Every acknowledgement and decision numbers its hit's change from one counter, so that a stream finds the
    -- hits changed since its cursor in the store (0: never changed).
    ALTER TABLE hit ADD COLUMN changed INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX hit_changed ON hit(changed) WHERE changed > 0;
    INSERT INTO counter(name, value) VALUES ('hit_changes', 0);
    "#,
    // 8: model migrations. `face` keeps each enrolment's face region (a JPEG of the face with a wide margin and its
    // detection in the region's pixels) so that another recognizer can make its own template of it; every template
    // made from it names it, and deleting a face deletes them all. `model_migration` is a gallery's move to another
    // recognizer (at most one in progress) and `migration_failure` the faces it could not remake, kept after their
    // subject is gone like a hit's decisions. The serving model is recorded in `meta` (`serving_model`).
    r#"
    CREATE TABLE face (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        subject_id   INTEGER NOT NULL REFERENCES subject(id) ON DELETE CASCADE,
        photo_sha256 TEXT NOT NULL,
        geometry     TEXT NOT NULL CHECK (json_valid(geometry) AND json_type(geometry) = 'object'),
        jpeg         BLOB NOT NULL,
        created_at   TEXT NOT NULL
    );
    CREATE INDEX face_subject ON face(subject_id);

    ALTER TABLE template ADD COLUMN face_id INTEGER REFERENCES face(id) ON DELETE CASCADE;
    -- One template per face and model: a batch remade twice (two nodes, a retry) cannot add a second.
    CREATE UNIQUE INDEX template_face ON template(face_id, model_id) WHERE face_id IS NOT NULL;

    CREATE TABLE model_migration (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        from_model  TEXT NOT NULL,
        to_model    TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('running', 'ready', 'switched', 'cancelled')),
        accept_gaps INTEGER NOT NULL CHECK (accept_gaps IN (0, 1)),
        started_at  TEXT NOT NULL,
        started_key TEXT NOT NULL,
        started_by  TEXT NOT NULL,
        role        TEXT NOT NULL,
        purpose     TEXT,
        finished_at TEXT
    );
    -- One migration in progress at a time, whichever node started it.
    CREATE UNIQUE INDEX model_migration_active ON model_migration((1)) WHERE state IN ('running', 'ready');

    CREATE TABLE migration_failure (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        migration_id INTEGER NOT NULL REFERENCES model_migration(id) ON DELETE CASCADE,
        subject_id   INTEGER NOT NULL,
        face_id      INTEGER,
        template_id  INTEGER,
        code         TEXT NOT NULL,
        message      TEXT NOT NULL,
        at           TEXT NOT NULL
    );
    CREATE UNIQUE INDEX migration_failure_face ON migration_failure(migration_id, face_id) WHERE face_id IS NOT NULL;
    CREATE UNIQUE INDEX migration_failure_template ON migration_failure(migration_id, template_id)
        WHERE template_id IS NOT NULL;
    "#,
];

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to `SCHEMA_VERSION`; each step commits together with its new `user_version`.
pub fn migrate(conn: &mut Connection) -> Result<i64, GalleryError> {
    loop {
        // IMMEDIATE takes the write lock before reading the version, so two processes cannot both apply a step.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("begin migration")?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .context("read schema version")?;
        if version > SCHEMA_VERSION {
            return Err(GalleryError::SchemaTooNew {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        let Some(step) = usize::try_from(version)
            .ok()
            .and_then(|index| MIGRATIONS.get(index))
        else {
            return Ok(version);
        };
        tx.execute_batch(step).context("apply schema migration")?;
        tx.pragma_update(None, "user_version", version + 1)
            .context("record schema version")?;
        tx.commit().context("commit schema migration")?;
        tracing::info!(from = version, to = version + 1, "gallery schema migrated");
    }
}

/// Builds the schema exactly as release `version` left it (its steps only), for upgrade tests on real files.
#[cfg(test)]
pub(super) fn create_at_version(conn: &Connection, version: usize) {
    for step in &MIGRATIONS[..version] {
        conn.execute_batch(step).expect("a shipped migration step applies");
    }
    conn.pragma_update(None, "user_version", version as i64).expect("schema version recorded");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_reach_the_latest_version_and_are_idempotent() {
        let mut conn = Connection::open_in_memory().expect("in-memory database opens");
        assert_eq!(
            migrate(&mut conn).expect("fresh database migrates"),
            SCHEMA_VERSION
        );
        assert_eq!(
            migrate(&mut conn).expect("second run is a no-op"),
            SCHEMA_VERSION
        );
        let generation: i64 = conn
            .query_row(
                "SELECT value FROM counter WHERE name = 'generation'",
                [],
                |row| row.get(0),
            )
            .expect("generation counter exists");
        assert_eq!(generation, 0);
    }

    #[test]
    fn newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().expect("in-memory database opens");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("version set");
        let error = migrate(&mut conn).expect_err("newer schema refused");
        assert_eq!(error.code(), "schema_too_new");
    }
}
