//! `AlertStore` for `SqliteStore`: the `webhook` and `webhook_delivery` tables.

use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::queries::{append_audit_in, now_rfc3339};
use super::rows::conversion_failure;
use super::hits::{hit_from_row, reviews_of, SELECT_HIT};
use super::SqliteStore;
use crate::gallery::alerts::{
    validate_webhook_description, validate_webhook_url, AlertStore, Attempt, Delivery, DeliveryPage, DeliveryState,
    NewWebhook, Webhook, MAX_DELIVERIES_PER_PAGE,
};
use crate::gallery::error::{DatabaseContext, Entity, GalleryError, InvalidKind};
use crate::gallery::hits::{Hit, HitQuery, HitSource};
use crate::gallery::store::AuditFor;
use crate::gallery::validation;

const SELECT_WEBHOOK: &str =
    "SELECT id, url, watchlists, sources, description, secret, created_at, created_by FROM webhook ";
const SELECT_DELIVERY: &str =
    "SELECT id, webhook_id, hit_id, state, created_at, next_attempt_ms, attempts FROM webhook_delivery ";

fn json_column<T: serde::de::DeserializeOwned>(row: &Row<'_>, index: usize) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    serde_json::from_str(&text).map_err(|e| conversion_failure(index, Type::Text, e))
}

fn webhook_from_row(row: &Row<'_>) -> rusqlite::Result<Webhook> {
    let watchlists: Option<String> = row.get(2)?;
    let watchlists = watchlists
        .map(|text| serde_json::from_str(&text).map_err(|e| conversion_failure(2, Type::Text, e)))
        .transpose()?;
    Ok(Webhook {
        id: row.get(0)?,
        url: row.get(1)?,
        watchlists,
        sources: json_column(row, 3)?,
        description: row.get(4)?,
        secret: row.get(5)?,
        created_at: row.get(6)?,
        created_by: row.get(7)?,
    })
}

/// Milliseconds since the epoch as RFC 3339, for answers.
fn rfc3339_of_ms(ms: i64) -> String {
    // RFC 3339 ends with the year 9999; a time past it (a lease "forever") reads as its last millisecond.
    const LAST_MS: i64 = 253_402_300_799_999;
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.clamp(0, LAST_MS) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

fn delivery_from_row(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    let text: String = row.get(3)?;
    let state = DeliveryState::parse_stored(&text)
        .ok_or_else(|| conversion_failure(3, Type::Text, UnknownState(text)))?;
    let next: Option<i64> = row.get(5)?;
    Ok(Delivery {
        id: row.get(0)?,
        webhook_id: row.get(1)?,
        hit_id: row.get(2)?,
        state,
        created_at: row.get(4)?,
        next_attempt_at: next.filter(|_| state == DeliveryState::Pending).map(rfc3339_of_ms),
        attempts: json_column(row, 6)?,
    })
}

#[derive(Debug, thiserror::Error)]
#[error("stored delivery state {0:?} is not one this build knows")]
struct UnknownState(String);

fn fetch_webhook(conn: &Connection, id: i64) -> Result<Webhook, GalleryError> {
    conn.prepare_cached(&format!("{SELECT_WEBHOOK} WHERE id = ?1"))
        .and_then(|mut statement| statement.query_row([id], webhook_from_row).optional())
        .context("read webhook")?
        .ok_or_else(|| GalleryError::not_found(Entity::Webhook, id))
}

fn fetch_delivery(conn: &Connection, id: i64) -> Result<Delivery, GalleryError> {
    conn.prepare_cached(&format!("{SELECT_DELIVERY} WHERE id = ?1"))
        .and_then(|mut statement| statement.query_row([id], delivery_from_row).optional())
        .context("read webhook delivery")?
        .ok_or_else(|| GalleryError::invalid(InvalidKind::WebhookQuery, format!("no delivery {id}")))
}

fn validate_new_webhook(new: &NewWebhook) -> Result<(), GalleryError> {
    validate_webhook_url(&new.url)?;
    if let Some(description) = &new.description {
        validate_webhook_description(description)?;
    }
    for name in new.watchlists.iter().flatten() {
        validation::validate_watchlist_name(name)?;
    }
    if new.sources.is_empty() {
        return Err(GalleryError::invalid(InvalidKind::WebhookQuery, "sources must name checkpoint, job or both"));
    }
    if new.secret.len() < 32 {
        return Err(GalleryError::invalid(InvalidKind::WebhookQuery, "the signing secret is too short"));
    }
    validation::validate_actor(&new.created_by)
}

/// Numbers a change of hit `id` (an acknowledgement, a decision) in the change's transaction.
pub(super) fn mark_changed(tx: &Transaction<'_>, id: i64) -> Result<(), GalleryError> {
    tx.execute("UPDATE counter SET value = value + 1 WHERE name = 'hit_changes'", []).context("count hit change")?;
    tx.execute("UPDATE hit SET changed = (SELECT value FROM counter WHERE name = 'hit_changes') WHERE id = ?1", [id])
        .context("mark hit changed")?;
    Ok(())
}

impl AlertStore for SqliteStore {
    fn latest_hit_change(&self) -> Result<i64, GalleryError> {
        self.read(|tx| {
            tx.query_row("SELECT value FROM counter WHERE name = 'hit_changes'", [], |row| row.get(0))
                .context("read hit changes")
        })
    }

    fn changed_hits(&self, after: i64, query: &HitQuery) -> Result<Vec<(i64, Hit)>, GalleryError> {
        let within = query.within.as_ref().map(|names| serde_json::Value::from(names.clone()).to_string());
        let limit = query.limit.clamp(1, crate::gallery::hits::MAX_HITS_PER_PAGE) as i64;
        self.read(|tx| {
            let mut statement = tx
                .prepare_cached(&format!(
                    "{SELECT_HIT} WHERE h.changed > ?1 AND (?2 IS NULL OR h.source = ?2) \
                     AND (?3 IS NULL OR h.watchlist IN (SELECT value FROM json_each(?3))) ORDER BY h.changed LIMIT ?4"
                ))
                .context("list changed hits")?;
            let mut hits = statement
                .query_map(params![after, query.source.map(HitSource::as_str), within, limit], hit_from_row)
                .context("list changed hits")?
                .collect::<Result<Vec<_>, _>>()
                .context("read hit")?;
            let ids: Vec<i64> = hits.iter().map(|hit| hit.id).collect();
            let mut reviews = reviews_of(tx, &ids)?;
            let mut changed = Vec::with_capacity(hits.len());
            for mut hit in hits.drain(..) {
                hit.reviews = reviews.remove(&hit.id).unwrap_or_default();
                let seq: i64 = tx
                    .query_row("SELECT changed FROM hit WHERE id = ?1", [hit.id], |row| row.get(0))
                    .context("read hit change")?;
                changed.push((seq, hit));
            }
            Ok(changed)
        })
    }

    fn latest_hit_id(&self) -> Result<i64, GalleryError> {
        self.read(|tx| tx.query_row("SELECT COALESCE(MAX(id), 0) FROM hit", [], |row| row.get(0)).context("read newest hit"))
    }

    fn create_webhook(&self, new: NewWebhook, audit: AuditFor<'_, Webhook>) -> Result<Webhook, GalleryError> {
        validate_new_webhook(&new)?;
        let watchlists = new.watchlists.as_ref().map(|names| serde_json::Value::from(names.clone()).to_string());
        let sources: Vec<&str> = new.sources.iter().map(|s| s.as_str()).collect();
        let sources = serde_json::Value::from(sources).to_string();
        self.write(|tx| {
            // Only hits recorded from now on: a new receiver is not flooded with the past.
            tx.execute(
                "INSERT INTO webhook(url, watchlists, sources, description, secret, created_at, created_by, cursor) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, (SELECT COALESCE(MAX(id), 0) FROM hit))",
                params![new.url, watchlists, sources, new.description, new.secret, now_rfc3339(), new.created_by],
            )
            .context("insert webhook")?;
            let webhook = fetch_webhook(tx, tx.last_insert_rowid())?;
            append_audit_in(tx, audit(&webhook))?;
            Ok(webhook)
        })
    }

    fn get_webhook(&self, id: i64) -> Result<Webhook, GalleryError> {
        self.read(|tx| fetch_webhook(tx, id))
    }

    fn list_webhooks(&self) -> Result<Vec<Webhook>, GalleryError> {
        self.read(|tx| {
            let mut statement = tx.prepare_cached(&format!("{SELECT_WEBHOOK} ORDER BY id")).context("list webhooks")?;
            let rows = statement.query_map([], webhook_from_row).context("list webhooks")?;
            rows.collect::<Result<Vec<_>, _>>().context("read webhook")
        })
    }

    fn delete_webhook(&self, id: i64, audit: AuditFor<'_, Webhook>) -> Result<Webhook, GalleryError> {
        self.write(|tx| {
            let webhook = fetch_webhook(tx, id)?;
            tx.execute("DELETE FROM webhook WHERE id = ?1", [id]).context("delete webhook")?;
            append_audit_in(tx, audit(&webhook))?;
            Ok(webhook)
        })
    }

    fn enqueue_deliveries(&self, now_ms: i64) -> Result<usize, GalleryError> {
        self.write(|tx| {
            let newest: i64 =
                tx.query_row("SELECT COALESCE(MAX(id), 0) FROM hit", [], |row| row.get(0)).context("read newest hit")?;
            let made = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO webhook_delivery(webhook_id, hit_id, state, created_at, next_attempt_ms, attempts) \
                     SELECT w.id, h.id, 'pending', ?1, ?2, '[]' FROM webhook w JOIN hit h ON h.id > w.cursor AND h.id <= ?3 \
                     WHERE (w.watchlists IS NULL OR h.watchlist IN (SELECT value FROM json_each(w.watchlists))) \
                     AND h.source IN (SELECT value FROM json_each(w.sources))",
                )
                .and_then(|mut statement| statement.execute(params![now_rfc3339(), now_ms, newest]))
                .context("enqueue webhook deliveries")?;
            tx.execute("UPDATE webhook SET cursor = ?1 WHERE cursor < ?1", [newest]).context("move webhook cursors")?;
            Ok(made)
        })
    }

    fn claim_deliveries(&self, now_ms: i64, lease_until_ms: i64, limit: usize) -> Result<Vec<Delivery>, GalleryError> {
        self.write(|tx| {
            let ids: Vec<i64> = tx
                .prepare_cached(
                    "SELECT id FROM webhook_delivery WHERE state = 'pending' AND next_attempt_ms <= ?1 \
                     ORDER BY next_attempt_ms, id LIMIT ?2",
                )
                .and_then(|mut statement| {
                    statement.query_map(params![now_ms, limit as i64], |row| row.get(0))?.collect::<Result<Vec<_>, _>>()
                })
                .context("find due webhook deliveries")?;
            let mut claimed = Vec::with_capacity(ids.len());
            for id in ids {
                tx.execute("UPDATE webhook_delivery SET next_attempt_ms = ?2 WHERE id = ?1", params![id, lease_until_ms])
                    .context("lease webhook delivery")?;
                claimed.push(fetch_delivery(tx, id)?);
            }
            Ok(claimed)
        })
    }

    fn record_attempt(
        &self,
        id: i64,
        attempt: Attempt,
        state: DeliveryState,
        next_attempt_ms: Option<i64>,
    ) -> Result<Delivery, GalleryError> {
        self.write(|tx| {
            let mut delivery = fetch_delivery(tx, id)?;
            delivery.attempts.push(attempt);
            let attempts = serde_json::to_string(&delivery.attempts)
                .map_err(|e| GalleryError::invalid(InvalidKind::WebhookQuery, format!("attempt: {e}")))?;
            tx.execute(
                "UPDATE webhook_delivery SET state = ?2, next_attempt_ms = ?3, attempts = ?4 WHERE id = ?1",
                params![id, state.as_str(), next_attempt_ms, attempts],
            )
            .context("record webhook attempt")?;
            fetch_delivery(tx, id)
        })
    }

    fn list_deliveries(&self, webhook_id: i64, after: Option<i64>, limit: usize) -> Result<DeliveryPage, GalleryError> {
        if limit == 0 || limit > MAX_DELIVERIES_PER_PAGE {
            return Err(GalleryError::invalid(
                InvalidKind::WebhookQuery,
                format!("limit must lie between 1 and {MAX_DELIVERIES_PER_PAGE}"),
            ));
        }
        self.read(|tx| {
            fetch_webhook(tx, webhook_id)?;
            let mut items = tx
                .prepare_cached(&format!("{SELECT_DELIVERY} WHERE webhook_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"))
                .and_then(|mut statement| {
                    statement
                        .query_map(params![webhook_id, after.unwrap_or(0), (limit + 1) as i64], delivery_from_row)?
                        .collect::<Result<Vec<_>, _>>()
                })
                .context("list webhook deliveries")?;
            let more = items.len() > limit;
            items.truncate(limit);
            let next_after = if more { items.last().map(|d| d.id) } else { None };
            Ok(DeliveryPage { items, next_after })
        })
    }
}
