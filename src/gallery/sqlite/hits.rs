//! `HitStore` for `SqliteStore`: the `hit`, `hit_probe` and `hit_review` tables.

use std::collections::HashMap;

use rusqlite::types::{ToSql, Type};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::queries::{append_audit_in, ids_as_json, now_rfc3339};
use super::rows::conversion_failure;
use super::SqliteStore;
use crate::gallery::error::{ConflictKind, DatabaseContext, Entity, GalleryError, InvalidKind};
use crate::gallery::hits::{
    validate_comment, validate_label, Decision, Hit, HitPage, HitQuery, HitSource, HitState, HitStore, NewHit,
    NewReview, Person, Review, MAX_HITS_PER_PAGE,
};
use crate::gallery::model::AuditEntry;
use crate::gallery::store::AuditFor;
use crate::gallery::validation;

pub(super) const SELECT_HIT: &str = "SELECT h.id, h.created_at, h.source, h.search_id, h.face, h.watchlist, h.subject_id, \
     h.template_id, h.similarity, h.decision_score, h.fpir, h.fpir_extrapolated, h.searched_by_key, \
     h.searched_by_name, h.checkpoint, h.case_ref, h.state, h.acknowledged_at, h.acknowledged_key, \
     h.acknowledged_name, EXISTS(SELECT 1 FROM hit_probe p WHERE p.hit_id = h.id), s.display_name, s.external_ref, \
     h.job_id \
     FROM hit h LEFT JOIN subject s ON s.id = h.subject_id ";

/// A stored enum's text, refused as a conversion failure when it is none of the names (a damaged row).
fn parsed<T>(row: &Row<'_>, index: usize, parse: impl Fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    parse(&text).ok_or_else(|| conversion_failure(index, Type::Text, UnknownName(text)))
}

#[derive(Debug, thiserror::Error)]
#[error("stored name {0:?} is not one this build knows")]
struct UnknownName(String);

pub(super) fn hit_from_row(row: &Row<'_>) -> rusqlite::Result<Hit> {
    let acknowledged_key: Option<String> = row.get(18)?;
    let acknowledged_name: Option<String> = row.get(19)?;
    Ok(Hit {
        id: row.get(0)?,
        created_at: row.get(1)?,
        source: parsed(row, 2, |t| t.parse::<HitSource>().ok())?,
        search_id: row.get(3)?,
        face: row.get(4)?,
        watchlist: row.get(5)?,
        subject_id: row.get(6)?,
        template_id: row.get(7)?,
        similarity: row.get::<_, f64>(8)? as f32,
        decision_score: row.get::<_, Option<f64>>(9)?.map(|s| s as f32),
        fpir: row.get(10)?,
        fpir_extrapolated: row.get(11)?,
        searched_by: Person { key_id: row.get(12)?, name: row.get(13)? },
        checkpoint: row.get(14)?,
        case: row.get(15)?,
        state: parsed(row, 16, |t| t.parse::<HitState>().ok())?,
        acknowledged_at: row.get(17)?,
        acknowledged_by: acknowledged_key.zip(acknowledged_name).map(|(key_id, name)| Person { key_id, name }),
        has_probe: row.get(20)?,
        display_name: row.get(21)?,
        external_ref: row.get(22)?,
        job_id: row.get(23)?,
        reviews: Vec::new(),
    })
}

/// Every review of the given hits, oldest first, by hit.
pub(super) fn reviews_of(conn: &Connection, ids: &[i64]) -> Result<HashMap<i64, Vec<Review>>, GalleryError> {
    let mut statement = conn
        .prepare_cached(
            "SELECT hit_id, reviewer_key, reviewer_name, decision, comment, at FROM hit_review \
             WHERE hit_id IN (SELECT value FROM json_each(?1)) ORDER BY id",
        )
        .context("read hit reviews")?;
    let rows = statement
        .query_map([ids_as_json(ids)], |row| {
            let review = Review {
                reviewer: Person { key_id: row.get(1)?, name: row.get(2)? },
                decision: parsed(row, 3, Decision::parse_stored)?,
                comment: row.get(4)?,
                at: row.get(5)?,
            };
            Ok((row.get::<_, i64>(0)?, review))
        })
        .context("read hit reviews")?;
    let mut by_hit: HashMap<i64, Vec<Review>> = HashMap::new();
    for row in rows {
        let (hit, review) = row.context("read hit review")?;
        by_hit.entry(hit).or_default().push(review);
    }
    Ok(by_hit)
}

pub(super) fn fetch_hit(conn: &Connection, id: i64) -> Result<Hit, GalleryError> {
    let mut hit = conn
        .prepare_cached(&format!("{SELECT_HIT} WHERE h.id = ?1"))
        .and_then(|mut statement| statement.query_row([id], hit_from_row).optional())
        .context("read hit")?
        .ok_or_else(|| GalleryError::not_found(Entity::Hit, id))?;
    hit.reviews = reviews_of(conn, &[id])?.remove(&id).unwrap_or_default();
    Ok(hit)
}

fn validate_person(person: &Person) -> Result<(), GalleryError> {
    validation::validate_actor(&person.key_id)?;
    validation::validate_actor(&person.name)
}

pub(super) fn validate_new_hit(new: &NewHit) -> Result<(), GalleryError> {
    validation::validate_watchlist_name(&new.watchlist)?;
    validate_person(&new.searched_by)?;
    if let Some(checkpoint) = &new.checkpoint {
        validate_label(InvalidKind::Checkpoint, "checkpoint", checkpoint)?;
    }
    if let Some(case) = &new.case {
        validate_label(InvalidKind::CaseRef, "case", case)?;
    }
    if let Some(jpeg) = &new.probe_jpeg {
        validation::validate_thumbnail(jpeg)?;
    }
    Ok(())
}

pub(super) fn insert_hit(tx: &Transaction<'_>, new: &NewHit, search_id: i64, created_at: &str) -> Result<i64, GalleryError> {
    tx.prepare_cached(
        "INSERT INTO hit(created_at, source, search_id, face, watchlist, subject_id, template_id, similarity, \
         decision_score, fpir, fpir_extrapolated, searched_by_key, searched_by_name, checkpoint, case_ref, state, job_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            created_at,
            new.source.as_str(),
            search_id,
            new.face as i64,
            new.watchlist,
            new.subject_id,
            new.template_id,
            f64::from(new.similarity),
            new.decision_score.map(f64::from),
            new.fpir,
            new.fpir_extrapolated,
            new.searched_by.key_id,
            new.searched_by.name,
            new.checkpoint,
            new.case,
            HitState::Undecided.as_str(),
            new.job_id,
        ])
    })
    .context("insert hit")?;
    let id = tx.last_insert_rowid();
    if let Some(jpeg) = &new.probe_jpeg {
        tx.prepare_cached("INSERT INTO hit_probe(hit_id, jpeg) VALUES (?1, ?2)")
            .and_then(|mut statement| statement.execute(params![id, jpeg]))
            .context("insert hit probe")?;
    }
    Ok(id)
}

impl HitStore for SqliteStore {
    fn record_hits(&self, hits: Vec<NewHit>, audit: AuditEntry) -> Result<(i64, Vec<Hit>), GalleryError> {
        for new in &hits {
            validate_new_hit(new)?;
        }
        let created_at = now_rfc3339();
        self.write(|tx| {
            let search_id = append_audit_in(tx, audit)?;
            let mut recorded = Vec::with_capacity(hits.len());
            for new in &hits {
                let id = insert_hit(tx, new, search_id, &created_at)?;
                recorded.push(fetch_hit(tx, id)?);
            }
            Ok((search_id, recorded))
        })
    }

    fn get_hit(&self, id: i64) -> Result<Hit, GalleryError> {
        self.read(|tx| fetch_hit(tx, id))
    }

    fn get_hit_probe(&self, id: i64) -> Result<Option<Vec<u8>>, GalleryError> {
        self.read(|tx| {
            fetch_hit(tx, id)?;
            tx.prepare_cached("SELECT jpeg FROM hit_probe WHERE hit_id = ?1")
                .and_then(|mut statement| statement.query_row([id], |row| row.get(0)).optional())
                .context("read hit probe")
        })
    }

    fn list_hits(&self, query: &HitQuery) -> Result<HitPage, GalleryError> {
        if query.limit == 0 || query.limit > MAX_HITS_PER_PAGE {
            return Err(GalleryError::invalid(
                InvalidKind::HitQuery,
                format!("limit must lie between 1 and {MAX_HITS_PER_PAGE}"),
            ));
        }
        let within = query.within.as_ref().map(|names| serde_json::Value::from(names.clone()).to_string());
        let filters: [&dyn ToSql; 10] = [
            &query.state.map(HitState::as_str),
            &query.watchlist,
            &query.case,
            &query.checkpoint,
            &query.source.map(HitSource::as_str),
            &query.after.unwrap_or(0),
            &within,
            // One more than a page, to know whether another follows.
            &((query.limit + 1) as i64),
            &query.job,
            &query.open,
        ];
        self.read(|tx| {
            let mut statement = tx
                .prepare_cached(&format!(
                    "{SELECT_HIT} WHERE (?1 IS NULL OR h.state = ?1) AND (?2 IS NULL OR h.watchlist = ?2) \
                     AND (?3 IS NULL OR h.case_ref = ?3) AND (?4 IS NULL OR h.checkpoint = ?4) \
                     AND (?5 IS NULL OR h.source = ?5) AND h.id > ?6 \
                     AND (?7 IS NULL OR h.watchlist IN (SELECT value FROM json_each(?7))) \
                     AND (?9 IS NULL OR h.job_id = ?9) \
                     AND (?10 = 0 OR (h.source = 'checkpoint' AND h.acknowledged_at IS NULL)) \
                     ORDER BY h.id LIMIT ?8"
                ))
                .context("list hits")?;
            let mut items = statement
                .query_map(filters.as_slice(), hit_from_row)
                .context("list hits")?
                .collect::<Result<Vec<_>, _>>()
                .context("read hit")?;
            let more = items.len() > query.limit;
            items.truncate(query.limit);
            let ids: Vec<i64> = items.iter().map(|hit| hit.id).collect();
            let mut reviews = reviews_of(tx, &ids)?;
            for hit in &mut items {
                hit.reviews = reviews.remove(&hit.id).unwrap_or_default();
            }
            let next_after = if more { items.last().map(|hit| hit.id) } else { None };
            Ok(HitPage { items, next_after })
        })
    }

    fn review_hit(&self, id: i64, review: NewReview, audit: AuditFor<'_, Hit>) -> Result<Hit, GalleryError> {
        validate_person(&review.reviewer)?;
        validate_comment(&review.comment)?;
        self.write(|tx| {
            let hit = fetch_hit(tx, id)?;
            if hit.state.is_final() {
                return Err(GalleryError::conflict(
                    ConflictKind::ReviewClosed,
                    format!("hit {id} is {} already; its review is over", hit.state.as_str()),
                ));
            }
            let reviewer = &review.reviewer;
            if let Some(earlier) =
                hit.reviews.iter().find(|r| r.reviewer.key_id == reviewer.key_id || r.reviewer.name == reviewer.name)
            {
                return Err(GalleryError::conflict(
                    ConflictKind::AlreadyDecided,
                    format!(
                        "hit {id}: {} decided {} already; a second review must come from another person",
                        earlier.reviewer.name,
                        earlier.decision.as_str()
                    ),
                ));
            }
            let mut decisions: Vec<Decision> = hit.reviews.iter().map(|r| r.decision).collect();
            decisions.push(review.decision);
            let state = HitState::of(&decisions);
            tx.prepare_cached(
                "INSERT INTO hit_review(hit_id, reviewer_key, reviewer_name, decision, comment, at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    id,
                    reviewer.key_id,
                    reviewer.name,
                    review.decision.as_str(),
                    review.comment,
                    now_rfc3339()
                ])
            })
            .context("insert hit review")?;
            tx.prepare_cached("UPDATE hit SET state = ?2 WHERE id = ?1")
                .and_then(|mut statement| statement.execute(params![id, state.as_str()]))
                .context("update hit state")?;
            super::alerts::mark_changed(tx, id)?;
            let hit = fetch_hit(tx, id)?;
            append_audit_in(tx, audit(&hit))?;
            Ok(hit)
        })
    }

    fn acknowledge_hit(&self, id: i64, by: Person, audit: AuditFor<'_, Hit>) -> Result<Hit, GalleryError> {
        validate_person(&by)?;
        self.write(|tx| {
            let hit = fetch_hit(tx, id)?;
            if hit.source != HitSource::Checkpoint {
                return Err(GalleryError::conflict(
                    ConflictKind::NotAnAlert,
                    format!("hit {id} came from a job: it is reviewed, not acknowledged"),
                ));
            }
            if let Some(earlier) = &hit.acknowledged_by {
                return Err(GalleryError::conflict(
                    ConflictKind::AlreadyAcknowledged,
                    format!("hit {id} was acknowledged by {} already", earlier.name),
                ));
            }
            tx.prepare_cached(
                "UPDATE hit SET acknowledged_at = ?2, acknowledged_key = ?3, acknowledged_name = ?4 WHERE id = ?1",
            )
            .and_then(|mut statement| statement.execute(params![id, now_rfc3339(), by.key_id, by.name]))
            .context("acknowledge hit")?;
            super::alerts::mark_changed(tx, id)?;
            let hit = fetch_hit(tx, id)?;
            append_audit_in(tx, audit(&hit))?;
            Ok(hit)
        })
    }
}
