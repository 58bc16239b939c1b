//! `MigrationStore` for `SqliteStore`: the `model_migration` and `migration_failure` tables, the kept `face` rows a
//! migration remakes, and the serving model in `meta`. Progress is counted from the templates at read time.

use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::queries::{append_audit_in, bump_generation, insert_template, now_rfc3339, validate_template};
use super::rows::conversion_failure;
use super::SqliteStore;
use crate::gallery::error::{ConflictKind, DatabaseContext, Entity, GalleryError};
use crate::gallery::hits::Person;
use crate::gallery::migration::{
    MigrationFailure, MigrationProgress, MigrationState, MigrationStore, ModelMigration, NewMigration,
    NewMigrationFailure, StoredFace,
};
use crate::gallery::model::{AuditEntry, NewTemplate, Page, Template, TemplateFace};
use crate::gallery::store::AuditFor;
use crate::gallery::validation;

const SELECT_MIGRATION: &str = "SELECT id, from_model, to_model, state, accept_gaps, started_at, started_key, started_by, \
     role, purpose, finished_at FROM model_migration ";

#[derive(Debug, thiserror::Error)]
#[error("stored migration state is not one this build reads: {0}")]
struct BadState(String);

fn migration_from_row(row: &Row<'_>) -> rusqlite::Result<ModelMigration> {
    let state: String = row.get(3)?;
    let state = MigrationState::parse(&state).ok_or_else(|| conversion_failure(3, Type::Text, BadState(state)))?;
    Ok(ModelMigration {
        id: row.get(0)?,
        from_model: row.get(1)?,
        to_model: row.get(2)?,
        state,
        accept_gaps: row.get(4)?,
        started_at: row.get(5)?,
        started_by: Person { key_id: row.get(6)?, name: row.get(7)? },
        role: row.get(8)?,
        purpose: row.get(9)?,
        finished_at: row.get(10)?,
        progress: None,
    })
}

fn count(conn: &Connection, sql: &str, values: impl rusqlite::Params, context: &'static str) -> Result<usize, GalleryError> {
    conn.prepare_cached(sql).and_then(|mut statement| statement.query_row(values, |row| row.get(0))).context(context)
}

fn progress_of(conn: &Connection, m: &ModelMigration) -> Result<MigrationProgress, GalleryError> {
    let faces = count(conn, "SELECT count(*) FROM face", [], "count faces")?;
    let done = count(
        conn,
        "SELECT count(*) FROM face f WHERE EXISTS (SELECT 1 FROM template t WHERE t.face_id = f.id AND t.model_id = ?1)",
        [&m.to_model],
        "count remade faces",
    )?;
    let failed = count(
        conn,
        "SELECT count(*) FROM migration_failure x JOIN face f ON f.id = x.face_id WHERE x.migration_id = ?1 AND NOT EXISTS \
         (SELECT 1 FROM template t WHERE t.face_id = f.id AND t.model_id = ?2)",
        params![m.id, m.to_model],
        "count failed faces",
    )?;
    let without_face = count(
        conn,
        "SELECT count(*) FROM template WHERE model_id = ?1 AND face_id IS NULL",
        [&m.from_model],
        "count templates without a face",
    )?;
    // Subjects with templates less those with one of the new model: two index scans, where a per-subject NOT EXISTS
    // would scan the new model's templates once per subject.
    let with_templates = count(conn, "SELECT count(DISTINCT subject_id) FROM template", [], "count subjects with templates")?;
    let with_new = count(
        conn,
        "SELECT count(DISTINCT subject_id) FROM template WHERE model_id = ?1",
        [&m.to_model],
        "count subjects with a template of the new model",
    )?;
    let subjects_without_template = with_templates.saturating_sub(with_new);
    Ok(MigrationProgress {
        faces,
        done,
        failed,
        remaining: faces.saturating_sub(done + failed),
        without_face,
        subjects_without_template,
    })
}

/// The migration's row, without its progress (counting it reads the whole gallery's templates).
fn migration_row(conn: &Connection, id: i64) -> Result<ModelMigration, GalleryError> {
    let found = conn
        .prepare_cached(&format!("{SELECT_MIGRATION}WHERE id = ?1"))
        .and_then(|mut statement| statement.query_row([id], migration_from_row).optional())
        .context("read migration")?;
    found.ok_or_else(|| GalleryError::not_found(Entity::Migration, id))
}

/// The migration with its progress counted.
fn fetch_migration(conn: &Connection, id: i64) -> Result<ModelMigration, GalleryError> {
    let mut migration = migration_row(conn, id)?;
    migration.progress = Some(progress_of(conn, &migration)?);
    Ok(migration)
}

fn active_in(conn: &Connection) -> Result<Option<i64>, GalleryError> {
    conn.prepare_cached("SELECT id FROM model_migration WHERE state IN ('running', 'ready')")
        .and_then(|mut statement| statement.query_row([], |row| row.get(0)).optional())
        .context("read active migration")
}

fn set_state(tx: &Transaction<'_>, id: i64, state: MigrationState) -> Result<(), GalleryError> {
    let finished = (!state.is_active()).then(now_rfc3339);
    tx.prepare_cached("UPDATE model_migration SET state = ?2, finished_at = ?3 WHERE id = ?1")
        .and_then(|mut statement| statement.execute(params![id, state.as_str(), finished]))
        .context("update migration state")?;
    Ok(())
}

fn require_state(migration: &ModelMigration, allowed: &[MigrationState], doing: &str) -> Result<(), GalleryError> {
    if allowed.contains(&migration.state) {
        return Ok(());
    }
    Err(GalleryError::conflict(
        ConflictKind::MigrationState,
        format!("migration {}: cannot {doing} a migration that is {}", migration.id, migration.state.as_str()),
    ))
}

impl MigrationStore for SqliteStore {
    fn serving_model(&self) -> Result<Option<String>, GalleryError> {
        self.read(|tx| {
            tx.prepare_cached("SELECT value FROM meta WHERE key = 'serving_model'")
                .and_then(|mut statement| statement.query_row([], |row| row.get(0)).optional())
                .context("read serving model")
        })
    }

    fn adopt_serving_model(&self, model_id: &str) -> Result<String, GalleryError> {
        validation::validate_model_id(model_id)?;
        self.write(|tx| {
            tx.prepare_cached("INSERT OR IGNORE INTO meta(key, value) VALUES ('serving_model', ?1)")
                .and_then(|mut statement| statement.execute([model_id]))
                .context("record serving model")?;
            tx.prepare_cached("SELECT value FROM meta WHERE key = 'serving_model'")
                .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
                .context("read serving model")
        })
    }

    fn template_models(&self) -> Result<Vec<(String, usize)>, GalleryError> {
        self.read(|tx| {
            tx.prepare_cached("SELECT model_id, count(*) FROM template GROUP BY model_id ORDER BY model_id")
                .and_then(|mut statement| statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?.collect())
                .context("count templates by model")
        })
    }

    fn start_migration(&self, new: NewMigration, audit: AuditFor<'_, ModelMigration>) -> Result<ModelMigration, GalleryError> {
        validation::validate_model_id(&new.from_model)?;
        validation::validate_model_id(&new.to_model)?;
        validation::validate_actor(&new.started_by.name)?;
        self.write(|tx| {
            if let Some(active) = active_in(tx)? {
                return Err(GalleryError::conflict(
                    ConflictKind::MigrationInProgress,
                    format!("migration {active} is in progress: switch or cancel it first"),
                ));
            }
            tx.prepare_cached(
                "INSERT INTO model_migration(from_model, to_model, state, accept_gaps, started_at, started_key, \
                 started_by, role, purpose) VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    new.from_model,
                    new.to_model,
                    new.accept_gaps,
                    now_rfc3339(),
                    new.started_by.key_id,
                    new.started_by.name,
                    new.role,
                    new.purpose,
                ])
            })
            .context("insert migration")?;
            let migration = fetch_migration(tx, tx.last_insert_rowid())?;
            append_audit_in(tx, audit(&migration))?;
            Ok(migration)
        })
    }

    fn get_migration(&self, id: i64) -> Result<ModelMigration, GalleryError> {
        self.read(|tx| fetch_migration(tx, id))
    }

    fn active_migration(&self) -> Result<Option<ModelMigration>, GalleryError> {
        self.read(|tx| active_in(tx)?.map(|id| migration_row(tx, id)).transpose())
    }

    fn list_migrations(&self) -> Result<Vec<ModelMigration>, GalleryError> {
        self.read(|tx| {
            let ids: Vec<i64> = tx
                .prepare_cached("SELECT id FROM model_migration ORDER BY id DESC")
                .and_then(|mut statement| statement.query_map([], |row| row.get(0))?.collect())
                .context("list migrations")?;
            ids.into_iter().map(|id| fetch_migration(tx, id)).collect()
        })
    }

    fn faces_to_migrate(&self, migration_id: i64, after: i64, limit: usize) -> Result<Vec<StoredFace>, GalleryError> {
        self.read(|tx| {
            let to_model: String = tx
                .prepare_cached("SELECT to_model FROM model_migration WHERE id = ?1")
                .and_then(|mut statement| statement.query_row([migration_id], |row| row.get(0)).optional())
                .context("read migration")?
                .ok_or_else(|| GalleryError::not_found(Entity::Migration, migration_id))?;
            let mut statement = tx
                .prepare_cached(
                    "SELECT f.id, f.subject_id, f.photo_sha256, f.geometry, f.jpeg FROM face f \
                     WHERE NOT EXISTS (SELECT 1 FROM template t WHERE t.face_id = f.id AND t.model_id = ?1) \
                     AND NOT EXISTS (SELECT 1 FROM migration_failure x WHERE x.migration_id = ?2 AND x.face_id = f.id) \
                     AND f.id > ?4 ORDER BY f.id LIMIT ?3",
                )
                .context("list faces to migrate")?;
            let rows = statement
                .query_map(params![to_model, migration_id, limit as i64, after], |row| {
                    let geometry: String = row.get(3)?;
                    Ok(StoredFace {
                        id: row.get(0)?,
                        subject_id: row.get(1)?,
                        photo_sha256: row.get(2)?,
                        geometry: serde_json::from_str(&geometry)
                            .map_err(|source| conversion_failure(3, Type::Text, source))?,
                        jpeg: row.get(4)?,
                    })
                })
                .context("list faces to migrate")?;
            rows.collect::<Result<Vec<_>, _>>().context("read face to migrate")
        })
    }

    fn record_faceless_templates(&self, migration_id: i64) -> Result<usize, GalleryError> {
        self.write(|tx| {
            let migration = migration_row(tx, migration_id)?;
            tx.prepare_cached(
                "INSERT OR IGNORE INTO migration_failure(migration_id, subject_id, template_id, code, message, at) \
                 SELECT ?1, t.subject_id, t.id, 'no_face_kept', \
                 'the enrolment''s face was not kept, so the new model cannot remake this template; enrol the photo again', ?3 \
                 FROM template t WHERE t.model_id = ?2 AND t.face_id IS NULL",
            )
            .and_then(|mut statement| statement.execute(params![migration_id, migration.from_model, now_rfc3339()]))
            .context("record templates without a face")?;
            count(
                tx,
                "SELECT count(*) FROM migration_failure WHERE migration_id = ?1 AND template_id IS NOT NULL",
                [migration_id],
                "count templates without a face",
            )
        })
    }

    fn add_migrated_templates(
        &self,
        migration_id: i64,
        templates: Vec<NewTemplate>,
        failures: Vec<NewMigrationFailure>,
        audit: AuditFor<'_, [Template]>,
    ) -> Result<Vec<Template>, GalleryError> {
        let valid = templates.into_iter().map(validate_template).collect::<Result<Vec<_>, _>>()?;
        let enrolled_at = now_rfc3339();
        self.write(|tx| {
            let migration = migration_row(tx, migration_id)?;
            require_state(&migration, &[MigrationState::Running, MigrationState::Ready], "add templates to")?;
            let face_alive = |face_id: i64, subject_id: i64| -> Result<bool, GalleryError> {
                tx.prepare_cached("SELECT 1 FROM face WHERE id = ?1 AND subject_id = ?2")
                    .and_then(|mut statement| statement.exists(params![face_id, subject_id]))
                    .context("read face")
            };
            let remade = |face_id: i64| -> Result<bool, GalleryError> {
                tx.prepare_cached("SELECT 1 FROM template WHERE face_id = ?1 AND model_id = ?2")
                    .and_then(|mut statement| statement.exists(params![face_id, migration.to_model]))
                    .context("read face's templates")
            };
            let mut added = Vec::with_capacity(valid.len());
            for template in valid {
                let TemplateFace::Existing(face_id) = &template.new.face else {
                    return Err(GalleryError::not_found(Entity::Face, "(a migrated template names no kept face)"));
                };
                if template.new.model_id != migration.to_model
                    || !face_alive(*face_id, template.new.subject_id)?
                    || remade(*face_id)?
                {
                    continue;
                }
                added.push(insert_template(tx, template, &enrolled_at)?);
            }
            for failure in failures {
                if !face_alive(failure.face.face_id, failure.face.subject_id)? {
                    continue;
                }
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO migration_failure(migration_id, subject_id, face_id, code, message, at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut statement| {
                    statement.execute(params![
                        migration_id,
                        failure.face.subject_id,
                        failure.face.face_id,
                        failure.code,
                        failure.message,
                        enrolled_at
                    ])
                })
                .context("record migration failure")?;
            }
            if !added.is_empty() {
                bump_generation(tx)?;
            }
            append_audit_in(tx, audit(&added))?;
            Ok(added)
        })
    }

    fn migration_failures(&self, migration_id: i64, page: usize, per_page: usize) -> Result<Page<MigrationFailure>, GalleryError> {
        let offset = validation::page_offset(page, per_page)?;
        self.read(|tx| {
            migration_row(tx, migration_id)?;
            // A face remade after all (a retry) is no longer a failure; a template without a face always is.
            let live = "FROM migration_failure x JOIN model_migration m ON m.id = x.migration_id \
                 LEFT JOIN subject s ON s.id = x.subject_id LEFT JOIN watchlist w ON w.id = s.watchlist_id \
                 WHERE x.migration_id = ?1 AND (x.face_id IS NULL OR NOT EXISTS \
                 (SELECT 1 FROM template t WHERE t.face_id = x.face_id AND t.model_id = m.to_model))";
            let total = count(tx, &format!("SELECT count(*) {live}"), [migration_id], "count migration failures")?;
            let items = tx
                .prepare(&format!(
                    "SELECT x.subject_id, s.display_name, w.name, x.face_id, x.template_id, x.code, x.message {live} \
                     ORDER BY x.id LIMIT ?2 OFFSET ?3"
                ))
                .and_then(|mut statement| {
                    statement
                        .query_map(params![migration_id, per_page as i64, offset], |row| {
                            Ok(MigrationFailure {
                                subject_id: row.get(0)?,
                                display_name: row.get(1)?,
                                watchlist: row.get(2)?,
                                face_id: row.get(3)?,
                                template_id: row.get(4)?,
                                code: row.get(5)?,
                                message: row.get(6)?,
                            })
                        })?
                        .collect::<Result<Vec<_>, _>>()
                })
                .context("list migration failures")?;
            Ok(Page { items, page, per_page, total })
        })
    }

    fn set_migration_state(&self, migration_id: i64, state: MigrationState, audit: AuditEntry) -> Result<ModelMigration, GalleryError> {
        self.write(|tx| {
            let migration = migration_row(tx, migration_id)?;
            match state {
                MigrationState::Ready => require_state(&migration, &[MigrationState::Running], "hold for a decision")?,
                MigrationState::Cancelled => {
                    require_state(&migration, &[MigrationState::Running, MigrationState::Ready], "cancel")?
                }
                MigrationState::Running | MigrationState::Switched => require_state(&migration, &[], state.as_str())?,
            }
            set_state(tx, migration_id, state)?;
            append_audit_in(tx, audit)?;
            fetch_migration(tx, migration_id)
        })
    }

    fn switch_serving_model(&self, migration_id: i64, audit: AuditEntry) -> Result<ModelMigration, GalleryError> {
        self.write(|tx| {
            let migration = migration_row(tx, migration_id)?;
            require_state(&migration, &[MigrationState::Running, MigrationState::Ready], "switch")?;
            tx.prepare_cached("INSERT INTO meta(key, value) VALUES ('serving_model', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1")
                .and_then(|mut statement| statement.execute([&migration.to_model]))
                .context("record serving model")?;
            // No generation bump: index files are per model, and the new model's was built at this generation.
            set_state(tx, migration_id, MigrationState::Switched)?;
            append_audit_in(tx, audit)?;
            fetch_migration(tx, migration_id)
        })
    }
}
