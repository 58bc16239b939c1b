//! `GalleryStore` for `SqliteStore`: the SQL of each operation and the transaction it runs in.

use std::collections::HashMap;

use rusqlite::types::Type;
use rusqlite::{params, OptionalExtension};

use super::queries::{
    append_audit_in, bump_generation, count_rows, ensure_external_ref_free, ensure_model_dimension,
    fetch_subject, ids_as_json, insert_template, now_rfc3339, read_generation, subject_exists,
    validate_template, watchlist_label,
};
use super::rows::{
    conversion_failure, decode_embedding, select_audit, select_subject, select_template, serving_model_only,
    select_watchlist, subject_from_row, template_from_row, watchlist_from_row, StoredAudit,
};
use super::SqliteStore;
use crate::gallery::audit::ChainVerifier;
use crate::gallery::error::{ConflictKind, DatabaseContext, Entity, GalleryError};
use crate::gallery::model::{
    AuditQuery, ExpiredSubject, WatchlistPatch,
    AuditEntry, AuditRecord, GalleryStats, ModelStats, NewSubject, NewTemplate, NewWatchlist, Page,
    Subject, SubjectPatch, SubjectQuery, Template, Watchlist, WatchlistStats,
};
use crate::gallery::store::{AuditFor, GalleryStore, TemplateOwner, TemplateSink};
use crate::gallery::validation;

impl GalleryStore for SqliteStore {
    fn create_watchlist(&self, new: NewWatchlist, audit: AuditFor<'_, Watchlist>) -> Result<Watchlist, GalleryError> {
        validation::validate_watchlist_name(&new.name)?;
        validation::validate_watchlist_fields(&new.description, new.alert_fpir)?;
        validation::validate_retention(new.retention_days)?;
        let created_at = now_rfc3339();
        self.write(|tx| {
            let taken: bool = tx
                .query_row("SELECT EXISTS(SELECT 1 FROM watchlist WHERE name = ?1)", [&new.name], |row| row.get(0))
                .context("check watchlist name")?;
            if taken {
                return Err(GalleryError::conflict(
                    ConflictKind::DuplicateWatchlist,
                    format!("watchlist {:?} already exists", new.name),
                ));
            }
            tx.execute(
                "INSERT INTO watchlist(name, description, alert_fpir, created_at, retention_days) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![new.name, new.description, new.alert_fpir, created_at, new.retention_days],
            )
            .context("insert watchlist")?;
            let rowid = tx.last_insert_rowid();
            // The id is the ANN label; refusing (and rolling back) beats silently truncating it.
            let id = u32::try_from(rowid)
                .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, rowid))
                .context("assign watchlist label")?;
            let watchlist = Watchlist {
                id,
                name: new.name,
                description: new.description,
                alert_fpir: new.alert_fpir,
                retention_days: new.retention_days,
                created_at,
            };
            append_audit_in(tx, audit(&watchlist))?;
            Ok(watchlist)
        })
    }

    fn list_watchlists(&self) -> Result<Vec<Watchlist>, GalleryError> {
        self.read(|tx| {
            let mut statement = tx
                .prepare_cached(select_watchlist!("ORDER BY id"))
                .context("list watchlists")?;
            let rows = statement
                .query_map([], watchlist_from_row)
                .context("list watchlists")?;
            rows.collect::<Result<Vec<_>, _>>()
                .context("read watchlist")
        })
    }

    fn get_watchlist(&self, name: &str) -> Result<Watchlist, GalleryError> {
        self.read(|tx| {
            tx.prepare_cached(select_watchlist!("WHERE name = ?1"))
                .and_then(|mut statement| {
                    statement.query_row([name], watchlist_from_row).optional()
                })
                .context("read watchlist")?
                .ok_or_else(|| GalleryError::not_found(Entity::Watchlist, name))
        })
    }

    fn update_watchlist(
        &self,
        name: &str,
        patch: WatchlistPatch,
        audit: AuditFor<'_, Watchlist>,
    ) -> Result<Watchlist, GalleryError> {
        self.write(|tx| {
            let mut watchlist = tx
                .prepare_cached(select_watchlist!("WHERE name = ?1"))
                .and_then(|mut statement| statement.query_row([name], watchlist_from_row).optional())
                .context("read watchlist")?
                .ok_or_else(|| GalleryError::not_found(Entity::Watchlist, name))?;
            if let Some(description) = patch.description {
                watchlist.description = description;
            }
            if let Some(alert_fpir) = patch.alert_fpir {
                watchlist.alert_fpir = alert_fpir;
            }
            if let Some(retention_days) = patch.retention_days {
                watchlist.retention_days = retention_days;
            }
            validation::validate_watchlist_fields(&watchlist.description, watchlist.alert_fpir)?;
            validation::validate_retention(watchlist.retention_days)?;
            tx.execute(
                "UPDATE watchlist SET description = ?1, alert_fpir = ?2, retention_days = ?3 WHERE id = ?4",
                params![watchlist.description, watchlist.alert_fpir, watchlist.retention_days, watchlist.id],
            )
            .context("update watchlist")?;
            append_audit_in(tx, audit(&watchlist))?;
            Ok(watchlist)
        })
    }

    fn expired_subjects(&self, as_of: &str) -> Result<Vec<ExpiredSubject>, GalleryError> {
        self.read(|tx| {
            tx.prepare_cached(
                "SELECT s.id, w.name, s.updated_at, w.retention_days FROM subject s \
                 JOIN watchlist w ON w.id = s.watchlist_id \
                 WHERE w.retention_days IS NOT NULL AND julianday(s.updated_at) + w.retention_days <= julianday(?1) \
                 ORDER BY s.id",
            )
            .and_then(|mut statement| {
                statement
                    .query_map([as_of], |row| {
                        Ok(ExpiredSubject {
                            subject_id: row.get(0)?,
                            watchlist: row.get(1)?,
                            updated_at: row.get(2)?,
                            retention_days: row.get(3)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()
            })
            .context("find expired subjects")
        })
    }

    fn delete_watchlist(&self, name: &str, audit: AuditEntry) -> Result<(), GalleryError> {
        self.write(|tx| {
            let label = watchlist_label(tx, name)?;
            let subjects: usize = tx
                .query_row(
                    "SELECT count(*) FROM subject WHERE watchlist_id = ?1",
                    [label],
                    |row| row.get(0),
                )
                .context("count watchlist subjects")?;
            if subjects > 0 {
                return Err(GalleryError::conflict(
                    ConflictKind::WatchlistNotEmpty,
                    format!("watchlist {name:?} still has {subjects} subjects"),
                ));
            }
            tx.execute("DELETE FROM watchlist WHERE id = ?1", [label])
                .context("delete watchlist")?;
            append_audit_in(tx, audit)?;
            Ok(())
        })
    }

    fn create_subject(&self, new: NewSubject, audit: AuditFor<'_, Subject>) -> Result<Subject, GalleryError> {
        validation::validate_display_name(&new.display_name)?;
        validation::validate_external_ref(new.external_ref.as_deref())?;
        let metadata_json = validation::canonicalise_metadata(&new.metadata)?;
        let now = now_rfc3339();
        self.write(|tx| {
            let label = watchlist_label(tx, &new.watchlist)?;
            if let Some(external_ref) = &new.external_ref {
                ensure_external_ref_free(tx, label, external_ref, None)?;
            }
            tx.execute(
                "INSERT INTO subject(watchlist_id, external_ref, display_name, metadata, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![label, new.external_ref, new.display_name, metadata_json, now],
            )
            .context("insert subject")?;
            let subject = fetch_subject(tx, tx.last_insert_rowid())?;
            append_audit_in(tx, audit(&subject))?;
            Ok(subject)
        })
    }

    fn get_subject(&self, id: i64) -> Result<Subject, GalleryError> {
        self.read(|tx| fetch_subject(tx, id))
    }

    fn update_subject(&self, id: i64, patch: SubjectPatch, audit: AuditFor<'_, Subject>) -> Result<Subject, GalleryError> {
        if let Some(display_name) = &patch.display_name {
            validation::validate_display_name(display_name)?;
        }
        if let Some(external_ref) = &patch.external_ref {
            validation::validate_external_ref(external_ref.as_deref())?;
        }
        let metadata_json = patch
            .metadata
            .as_ref()
            .map(validation::canonicalise_metadata)
            .transpose()?;
        let now = now_rfc3339();
        self.write(|tx| {
            let (current_label, current_ref): (u32, Option<String>) = tx
                .query_row("SELECT watchlist_id, external_ref FROM subject WHERE id = ?1", [id], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()
                .context("read subject for update")?
                .ok_or_else(|| GalleryError::not_found(Entity::Subject, id))?;
            let label = match &patch.watchlist {
                Some(name) => watchlist_label(tx, name)?,
                None => current_label,
            };
            let external_ref = patch.external_ref.clone().unwrap_or(current_ref);
            if let Some(reference) = &external_ref {
                ensure_external_ref_free(tx, label, reference, Some(id))?;
            }
            tx.execute(
                "UPDATE subject SET watchlist_id = ?2, external_ref = ?3, \
                 display_name = coalesce(?4, display_name), metadata = coalesce(?5, metadata), updated_at = ?6 \
                 WHERE id = ?1",
                params![id, label, external_ref, patch.display_name, metadata_json, now],
            )
            .context("update subject")?;
            if label != current_label {
                // The subject's templates now carry another ANN label, so a saved index is stale.
                bump_generation(tx)?;
            }
            let subject = fetch_subject(tx, id)?;
            append_audit_in(tx, audit(&subject))?;
            Ok(subject)
        })
    }

    fn delete_subject(&self, id: i64, audit: AuditFor<'_, [i64]>) -> Result<Vec<i64>, GalleryError> {
        self.write(|tx| {
            if !subject_exists(tx, id)? {
                return Err(GalleryError::not_found(Entity::Subject, id));
            }
            let template_ids = tx
                .prepare_cached("SELECT id FROM template WHERE subject_id = ?1 ORDER BY id")
                .and_then(|mut statement| {
                    statement
                        .query_map([id], |row| row.get(0))?
                        .collect::<Result<Vec<i64>, _>>()
                })
                .context("list subject templates")?;
            // Templates and thumbnails go with it through ON DELETE CASCADE.
            tx.execute("DELETE FROM subject WHERE id = ?1", [id])
                .context("delete subject")?;
            if !template_ids.is_empty() {
                bump_generation(tx)?;
            }
            append_audit_in(tx, audit(&template_ids))?;
            Ok(template_ids)
        })
    }

    fn list_subjects(&self, query: &SubjectQuery) -> Result<Page<Subject>, GalleryError> {
        let offset = validation::page_offset(query.page, query.per_page)?;
        // SQLite's lower() folds ASCII only, so the needle is folded the same way.
        let needle = query
            .q
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(str::to_ascii_lowercase);
        self.read(|tx| {
            let label = query.watchlist.as_deref().map(|name| watchlist_label(tx, name)).transpose()?;
            let within = query.within.as_ref().map(|names| serde_json::Value::from(names.clone()).to_string());
            let total: usize = tx
                .prepare_cached(
                    "SELECT count(*) FROM subject s WHERE (?1 IS NULL OR s.watchlist_id = ?1) AND (?2 IS NULL \
                     OR instr(lower(s.display_name), ?2) > 0 OR instr(lower(coalesce(s.external_ref, '')), ?2) > 0) \
                     AND (?5 IS NULL OR s.watchlist_id IN \
                     (SELECT w2.id FROM watchlist w2 WHERE w2.name IN (SELECT value FROM json_each(?5))))",
                )
                .and_then(|mut statement| statement.query_row(params![label, needle, None::<i64>, None::<i64>, within], |row| row.get(0)))
                .context("count subjects")?;
            let items = tx
                .prepare_cached(select_subject!(
                    "WHERE (?1 IS NULL OR s.watchlist_id = ?1) AND (?2 IS NULL \
                     OR instr(lower(s.display_name), ?2) > 0 OR instr(lower(coalesce(s.external_ref, '')), ?2) > 0) \
                     AND (?5 IS NULL OR s.watchlist_id IN \
                     (SELECT w2.id FROM watchlist w2 WHERE w2.name IN (SELECT value FROM json_each(?5)))) \
                     ORDER BY s.id LIMIT ?3 OFFSET ?4"
                ))
                .and_then(|mut statement| {
                    statement
                        .query_map(params![label, needle, query.per_page as i64, offset, within], subject_from_row)?
                        .collect::<Result<Vec<_>, _>>()
                })
                .context("list subjects")?;
            Ok(Page { items, page: query.page, per_page: query.per_page, total })
        })
    }

    fn find_subject_by_external_ref(
        &self,
        watchlist: &str,
        external_ref: &str,
    ) -> Result<Option<Subject>, GalleryError> {
        self.read(|tx| {
            let label = watchlist_label(tx, watchlist)?;
            tx.prepare_cached(select_subject!(
                "WHERE s.watchlist_id = ?1 AND s.external_ref = ?2"
            ))
            .and_then(|mut statement| {
                statement
                    .query_row(params![label, external_ref], subject_from_row)
                    .optional()
            })
            .context("find subject by external reference")
        })
    }

    fn subjects_by_ids(&self, ids: &[i64]) -> Result<HashMap<i64, Subject>, GalleryError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let ids_json = ids_as_json(ids);
        self.read(|tx| {
            tx.prepare_cached(select_subject!(
                "WHERE s.id IN (SELECT value FROM json_each(?1))"
            ))
            .and_then(|mut statement| {
                statement
                    .query_map([&ids_json], subject_from_row)?
                    .map(|subject| subject.map(|subject| (subject.id, subject)))
                    .collect::<Result<HashMap<_, _>, _>>()
            })
            .context("read subjects by id")
        })
    }

    fn add_template(&self, new: NewTemplate, audit: AuditFor<'_, Template>) -> Result<Template, GalleryError> {
        let mut added = self.add_templates(vec![new], &|added: &[Template]| audit(&added[0]))?;
        added.pop().ok_or_else(|| GalleryError::Database {
            context: "insert template",
            source: rusqlite::Error::QueryReturnedNoRows,
        })
    }

    fn add_templates(&self, new: Vec<NewTemplate>, audit: AuditFor<'_, [Template]>) -> Result<Vec<Template>, GalleryError> {
        if new.is_empty() {
            return Ok(Vec::new());
        }
        let valid = new
            .into_iter()
            .map(validate_template)
            .collect::<Result<Vec<_>, _>>()?;
        let enrolled_at = now_rfc3339();
        self.write(|tx| {
            let mut known_subjects: Vec<i64> = Vec::new();
            let mut added = Vec::with_capacity(valid.len());
            for template in valid {
                let subject_id = template.new.subject_id;
                if !known_subjects.contains(&subject_id) {
                    if !subject_exists(tx, subject_id)? {
                        return Err(GalleryError::not_found(Entity::Subject, subject_id));
                    }
                    known_subjects.push(subject_id);
                }
                added.push(insert_template(tx, template, &enrolled_at)?);
            }
            bump_generation(tx)?;
            append_audit_in(tx, audit(&added))?;
            Ok(added)
        })
    }

    fn delete_template(&self, subject_id: i64, template_id: i64, audit: AuditEntry) -> Result<Vec<i64>, GalleryError> {
        self.write(|tx| {
            if !subject_exists(tx, subject_id)? {
                return Err(GalleryError::not_found(Entity::Subject, subject_id));
            }
            let face: Option<Option<i64>> = tx
                .prepare_cached("SELECT face_id FROM template WHERE id = ?1 AND subject_id = ?2")
                .and_then(|mut statement| statement.query_row([template_id, subject_id], |row| row.get(0)).optional())
                .context("read template")?;
            let removed: Vec<i64> = match face {
                None => return Ok(Vec::new()),
                Some(None) => vec![template_id],
                // The face goes with every template made of it (ON DELETE CASCADE), whichever model made them.
                Some(Some(face_id)) => tx
                    .prepare_cached("SELECT id FROM template WHERE face_id = ?1 ORDER BY id")
                    .and_then(|mut statement| statement.query_map([face_id], |row| row.get(0))?.collect())
                    .context("list the face's templates")?,
            };
            tx.execute("DELETE FROM template WHERE id = ?1 AND subject_id = ?2", [template_id, subject_id])
                .context("delete template")?;
            if let Some(Some(face_id)) = face {
                tx.execute("DELETE FROM face WHERE id = ?1", [face_id]).context("delete face")?;
            }
            bump_generation(tx)?;
            append_audit_in(tx, audit)?;
            Ok(removed)
        })
    }

    fn list_templates(&self, subject_id: i64) -> Result<Vec<Template>, GalleryError> {
        self.read(|tx| {
            if !subject_exists(tx, subject_id)? {
                return Err(GalleryError::not_found(Entity::Subject, subject_id));
            }
            tx.prepare_cached(select_template!("WHERE t.subject_id = ?1 AND ", serving_model_only!(), " ORDER BY t.id"))
                .and_then(|mut statement| {
                    statement
                        .query_map([subject_id], template_from_row)?
                        .collect::<Result<Vec<_>, _>>()
                })
                .context("list templates")
        })
    }

    fn get_thumbnail(&self, template_id: i64) -> Result<Option<Vec<u8>>, GalleryError> {
        self.read(|tx| {
            let found: Option<Option<Vec<u8>>> = tx
                .prepare_cached(
                    "SELECT h.jpeg FROM template t LEFT JOIN thumbnail h ON h.template_id = t.id WHERE t.id = ?1",
                )
                .and_then(|mut statement| statement.query_row([template_id], |row| row.get(0)).optional())
                .context("read thumbnail")?;
            found.ok_or_else(|| GalleryError::not_found(Entity::Template, template_id))
        })
    }

    fn has_photo(&self, subject_id: i64, photo_sha256: &str) -> Result<bool, GalleryError> {
        let photo_sha256 = validation::normalise_photo_sha256(photo_sha256)?;
        self.read(|tx| {
            if !subject_exists(tx, subject_id)? {
                return Err(GalleryError::not_found(Entity::Subject, subject_id));
            }
            tx.prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM template WHERE subject_id = ?1 AND photo_sha256 = ?2)",
            )
            .and_then(|mut statement| {
                statement.query_row(params![subject_id, photo_sha256], |row| row.get(0))
            })
            .context("check enrolled photo")
        })
    }

    fn template_owners(
        &self,
        template_ids: &[i64],
    ) -> Result<HashMap<i64, TemplateOwner>, GalleryError> {
        if template_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let ids_json = ids_as_json(template_ids);
        self.read(|tx| {
            tx.prepare_cached(
                "SELECT t.id, t.subject_id, s.watchlist_id FROM template t JOIN subject s ON s.id = t.subject_id \
                 WHERE t.id IN (SELECT value FROM json_each(?1))",
            )
            .and_then(|mut statement| {
                statement
                    .query_map([&ids_json], |row| {
                        Ok((row.get(0)?, TemplateOwner { subject_id: row.get(1)?, label: row.get(2)? }))
                    })?
                    .collect::<Result<HashMap<_, _>, _>>()
            })
            .context("read template owners")
        })
    }

    fn for_each_template(
        &self,
        model_id: &str,
        sink: &mut TemplateSink<'_>,
    ) -> Result<u64, GalleryError> {
        self.read(|tx| {
            // Read inside the same transaction as the scan, so the generation names exactly the streamed snapshot.
            let generation = read_generation(tx)?;
            let mut statement = tx
                .prepare_cached(
                    "SELECT t.id, s.watchlist_id, t.embedding FROM template t JOIN subject s ON s.id = t.subject_id \
                     WHERE t.model_id = ?1 ORDER BY t.id",
                )
                .context("stream templates")?;
            let mut rows = statement.query([model_id]).context("stream templates")?;
            let mut embedding = Vec::new();
            while let Some(row) = rows.next().context("stream templates")? {
                let key: i64 = row.get(0).context("read template key")?;
                let label: u32 = row.get(1).context("read template label")?;
                let blob = row
                    .get_ref(2)
                    .and_then(|value| value.as_blob().map_err(|source| conversion_failure(2, Type::Blob, source)))
                    .context("read template embedding")?;
                decode_embedding(blob, &mut embedding)
                    .map_err(|source| conversion_failure(2, Type::Blob, source))
                    .context("decode template embedding")?;
                sink(key, label, &embedding);
            }
            Ok(generation)
        })
    }

    fn subject_embeddings(&self, subject_id: i64, model_id: &str) -> Result<Vec<(i64, Vec<f32>)>, GalleryError> {
        self.read(|tx| {
            if !subject_exists(tx, subject_id)? {
                return Err(GalleryError::not_found(Entity::Subject, subject_id));
            }
            let mut statement = tx
                .prepare_cached("SELECT id, embedding FROM template WHERE subject_id = ?1 AND model_id = ?2 ORDER BY id")
                .context("read subject embeddings")?;
            let mut rows = statement.query(params![subject_id, model_id]).context("read subject embeddings")?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().context("read subject embeddings")? {
                let key: i64 = row.get(0).context("read template key")?;
                let blob = row
                    .get_ref(1)
                    .and_then(|value| value.as_blob().map_err(|source| conversion_failure(1, Type::Blob, source)))
                    .context("read template embedding")?;
                let mut embedding = Vec::new();
                decode_embedding(blob, &mut embedding)
                    .map_err(|source| conversion_failure(1, Type::Blob, source))
                    .context("decode template embedding")?;
                out.push((key, embedding));
            }
            Ok(out)
        })
    }

    fn bind_model(&self, model_id: &str, dimension: usize, fingerprint: &str) -> Result<(), GalleryError> {
        validation::validate_model_id(model_id)?;
        self.write(|tx| {
            ensure_model_dimension(tx, model_id, dimension)?;
            let recorded: Option<String> = tx
                .prepare_cached("SELECT fingerprint FROM model WHERE model_id = ?1")
                .and_then(|mut statement| statement.query_row([model_id], |row| row.get(0)))
                .context("read model fingerprint")?;
            match recorded {
                Some(recorded) if recorded == fingerprint => Ok(()),
                Some(recorded) => Err(GalleryError::conflict(
                    ConflictKind::ModelChanged,
                    format!(
                        "model {model_id:?}: the gallery's templates were made by another set-up of this model \
                         (template fingerprint {recorded}, the loaded model's is {fingerprint}); restore the model \
                         file and manifest they were made with, or enrol under a new model id"
                    ),
                )),
                None => {
                    tx.prepare_cached("UPDATE model SET fingerprint = ?2 WHERE model_id = ?1")
                        .and_then(|mut statement| statement.execute(params![model_id, fingerprint]))
                        .context("record model fingerprint")?;
                    Ok(())
                }
            }
        })
    }

    fn count_templates(&self, model_id: &str) -> Result<usize, GalleryError> {
        self.read(|tx| {
            tx.prepare_cached("SELECT count(*) FROM template WHERE model_id = ?1")
                .and_then(|mut statement| statement.query_row([model_id], |row| row.get(0)))
                .context("count templates")
        })
    }

    fn generation(&self) -> Result<u64, GalleryError> {
        self.read(|tx| read_generation(tx))
    }

    fn audit_head(&self) -> Result<u64, GalleryError> {
        self.read(|tx| {
            tx.query_row("SELECT coalesce(max(id), 0) FROM audit", [], |row| row.get(0)).context("read audit head")
        })
    }

    fn store_id(&self) -> Result<String, GalleryError> {
        self.read(|tx| SqliteStore::read_store_id(tx))
    }

    fn checkpoint(&self) -> Result<(), GalleryError> {
        self.checkpoint_now()
    }

    fn writable(&self) -> Result<(), GalleryError> {
        self.writable_now()
    }

    fn cap_size(&self, max_pages: Option<u64>) -> Result<(), GalleryError> {
        self.cap_pages(max_pages)
    }

    fn stats(&self) -> Result<GalleryStats, GalleryError> {
        self.read(|tx| {
            let watchlists = tx
                .prepare_cached(
                    "SELECT w.name, w.id, \
                     (SELECT count(*) FROM subject s WHERE s.watchlist_id = w.id), \
                     (SELECT count(*) FROM subject s JOIN template t ON t.subject_id = s.id \
                      WHERE s.watchlist_id = w.id) \
                     FROM watchlist w ORDER BY w.id",
                )
                .and_then(|mut statement| {
                    statement
                        .query_map([], |row| {
                            Ok(WatchlistStats {
                                watchlist: row.get(0)?,
                                label: row.get(1)?,
                                subjects: row.get(2)?,
                                templates: row.get(3)?,
                            })
                        })?
                        .collect::<Result<Vec<_>, _>>()
                })
                .context("count per watchlist")?;
            let models = tx
                .prepare_cached(
                    "SELECT m.model_id, m.dimension, (SELECT count(*) FROM template t WHERE t.model_id = m.model_id) \
                     FROM model m ORDER BY m.model_id",
                )
                .and_then(|mut statement| {
                    statement
                        .query_map([], |row| {
                            Ok(ModelStats { model_id: row.get(0)?, dimension: row.get(1)?, templates: row.get(2)? })
                        })?
                        .collect::<Result<Vec<_>, _>>()
                })
                .context("count per model")?;
            Ok(GalleryStats {
                watchlists,
                models,
                generation: read_generation(tx)?,
                audit_entries: count_rows(tx, "SELECT count(*) FROM audit", "count audit entries")?,
            })
        })
    }

    fn append_audit(&self, entry: AuditEntry) -> Result<i64, GalleryError> {
        self.write(|tx| append_audit_in(tx, entry))
    }

    fn verify_audit_chain(&self) -> Result<usize, GalleryError> {
        self.read(|tx| {
            let mut statement = tx
                .prepare_cached(select_audit!("ORDER BY id"))
                .context("read audit chain")?;
            let mut rows = statement.query([]).context("read audit chain")?;
            let mut verifier = ChainVerifier::default();
            while let Some(row) = rows.next().context("read audit chain")? {
                let stored = StoredAudit::from_row(row).context("read audit row")?;
                verifier.check(&stored.chain_fields(), &stored.prev_hash, &stored.hash)?;
            }
            Ok(verifier.checked())
        })
    }

    fn list_audit(&self, query: &AuditQuery) -> Result<Page<AuditRecord>, GalleryError> {
        let (page, per_page) = (query.page, query.per_page);
        let offset = validation::page_offset(page, per_page)?;
        let subject = query.subject.map(|id| format!("subject/{id}"));
        let filters = params![
            query.since,
            query.until,
            query.actor,
            query.action,
            subject,
            query.case,
        ];
        // Times compare as instants (julianday), not as text, so any RFC 3339 spelling works.
        const FILTER: &str = "WHERE (?1 IS NULL OR julianday(at) >= julianday(?1)) \
             AND (?2 IS NULL OR julianday(at) < julianday(?2)) \
             AND (?3 IS NULL OR instr(actor, ?3) > 0) \
             AND (?4 IS NULL OR action = ?4) \
             AND (?5 IS NULL OR target = ?5 OR substr(target, 1, length(?5) + 1) = ?5 || '/') \
             AND (?6 IS NULL OR instr(coalesce(purpose, ''), ?6) > 0)";
        let order = if query.oldest_first { "ORDER BY id" } else { "ORDER BY id DESC" };
        self.read(|tx| {
            let total: usize = tx
                .prepare_cached(&format!("SELECT count(*) FROM audit {FILTER}"))
                .and_then(|mut statement| statement.query_row(filters, |row| row.get(0)))
                .context("count audit entries")?;
            let sql = format!("{} {FILTER} {order} LIMIT ?7 OFFSET ?8", select_audit!(""));
            let items = tx
                .prepare_cached(&sql)
                .and_then(|mut statement| {
                    let mut all: Vec<&dyn rusqlite::ToSql> = filters.to_vec();
                    let (limit, offset) = (per_page as i64, offset);
                    all.push(&limit);
                    all.push(&offset);
                    statement
                        .query_map(all.as_slice(), |row| StoredAudit::from_row(row)?.into_record())?
                        .collect::<Result<Vec<_>, _>>()
                })
                .context("list audit entries")?;
            Ok(Page { items, page, per_page, total })
        })
    }

    fn audit_hashes(&self, after_id: i64, limit: usize) -> Result<Vec<(i64, String)>, GalleryError> {
        self.read(|tx| {
            tx.prepare_cached("SELECT id, hash FROM audit WHERE id > ?1 ORDER BY id LIMIT ?2")
                .and_then(|mut statement| {
                    statement
                        .query_map(params![after_id, limit as i64], |row| Ok((row.get(0)?, row.get(1)?)))?
                        .collect::<Result<Vec<_>, _>>()
                })
                .context("read audit hashes")
        })
    }
}
