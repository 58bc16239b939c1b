//! Webhooks: an admin names a receiver, the service signs and sends it every new hit its filters select, and keeps
//! every attempt. What the core decides lives here (who may manage webhooks, the secret, the signature, when to try
//! again); the HTTP dispatcher (http/dispatch.rs) only sends what `due_deliveries` hands it and reports back.
//!
//! The body carries the hit as `GET /v1/hits/{id}` shows it — names, references, scores, who searched where —
//! never the probe photo or an embedding. Whoever controls the receiver reads it; that is why only admins make
//! webhooks, why each is audited, and why a key limited to watchlists may only send those watchlists' hits.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;

use crate::gallery::alerts::{webhook_target, MAX_DELIVERIES_PER_PAGE};
use crate::gallery::{
    validation, Attempt, Delivery, DeliveryPage, DeliveryState, GalleryError, HitSource, InvalidKind, NewWebhook,
    Webhook,
};

use super::{Action, Permission, Principal, ServiceError, WatchlistService};

const SECRET_PREFIX: &str = "whsec_";
const SECRET_BYTES: usize = 32;
/// Deliveries one dispatcher takes at once.
const CLAIM_BATCH: usize = 32;
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// A webhook to make (`POST /v1/webhooks`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// `http://…` or `https://…`; receives `POST` with `{"event":"hit","hit":…}`.
    pub url: String,
    /// Only hits of these watchlists (default: every watchlist the caller's key may touch).
    #[serde(default)]
    pub watchlists: Option<Vec<String>>,
    /// Only hits of these sources (default: `checkpoint` and `job`).
    #[serde(default)]
    pub sources: Option<Vec<HitSource>>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A webhook as just made: the only time its signing secret is shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IssuedWebhook {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// `whsec_` and 64 hex digits: the HMAC-SHA256 key of `x-facematch-signature`. It cannot be shown again.
    pub secret: String,
}

/// One attempt to make: where, what, and how to sign it.
#[derive(Debug, Clone)]
pub struct DeliveryJob {
    pub delivery: Delivery,
    pub url: String,
    pub secret: String,
    /// `{"event":"hit","hit":<Hit>}`.
    pub body: Vec<u8>,
}

/// `sha256=` and the hex HMAC-SHA256 of `"<timestamp>.<body>"` under the webhook's secret (the whole `whsec_…`
/// text is the key): what a receiver recomputes to know the body came from this service, unchanged, recently.
pub fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("hmac takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// How long to wait after failed attempt `n` (1 for the first): `base`, doubling each time, at most an hour.
pub fn backoff(base_s: f64, n: u32) -> Duration {
    let base = if base_s.is_finite() && base_s > 0.0 { base_s } else { 0.0 };
    let seconds = base * 2f64.powi(n.saturating_sub(1).min(60) as i32);
    Duration::from_secs_f64(seconds.min(MAX_BACKOFF.as_secs_f64()))
}

fn millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn new_secret() -> Result<String, ServiceError> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| ServiceError::Randomness(e.to_string()))?;
    Ok(format!("{SECRET_PREFIX}{}", hex::encode(bytes)))
}

fn webhook_details(webhook: &Webhook) -> serde_json::Value {
    json!({ "url": webhook.url, "watchlists": webhook.watchlists, "sources": webhook.sources })
}

impl WatchlistService {
    /// Makes a webhook; it receives the hits recorded from now on that its filters select.
    pub fn create_webhook(&self, request: WebhookRequest, caller: &Principal) -> Result<IssuedWebhook, ServiceError> {
        caller.require(Permission::ManageWebhooks)?;
        crate::gallery::alerts::validate_webhook_url(&request.url)?;
        if request.url.starts_with("https://") {
            // Refused now rather than failing every attempt later.
            let detail = "webhook url: this build sends plain http only (no tls client); use http:// on a trusted network";
            return Err(GalleryError::invalid(InvalidKind::WebhookUrl, detail).into());
        }
        // A key limited to watchlists sends only theirs: by default exactly those, and never another.
        let watchlists = request.watchlists.or_else(|| caller.watchlists.clone());
        for name in watchlists.iter().flatten() {
            validation::validate_watchlist_name(name)?;
            caller.require_watchlist(name)?;
        }
        let mut sources = request.sources.unwrap_or_else(|| vec![HitSource::Checkpoint, HitSource::Job]);
        sources.sort_by_key(|s| s.as_str());
        sources.dedup();
        let secret = new_secret()?;
        let new = NewWebhook {
            url: request.url,
            watchlists,
            sources,
            description: request.description,
            secret: secret.clone(),
            created_by: caller.actor(),
        };
        let webhook = self.store.create_webhook(new, &|w: &Webhook| {
            caller.entry(Action::CreateWebhook, webhook_target(w.id), webhook_details(w))
        })?;
        Ok(IssuedWebhook { webhook, secret })
    }

    /// The webhooks the caller could manage (never their secrets).
    pub fn list_webhooks(&self, caller: &Principal) -> Result<Vec<Webhook>, ServiceError> {
        caller.require(Permission::ManageWebhooks)?;
        let mut webhooks = self.store.list_webhooks()?;
        webhooks.retain(|w| self.check_webhook_scope(w, caller).is_ok());
        Ok(webhooks)
    }

    /// Deletes a webhook and its deliveries; nothing more is sent to it.
    pub fn delete_webhook(&self, id: i64, caller: &Principal) -> Result<Webhook, ServiceError> {
        caller.require(Permission::ManageWebhooks)?;
        self.check_webhook_scope(&self.store.get_webhook(id)?, caller)?;
        Ok(self.store.delete_webhook(id, &|w: &Webhook| {
            caller.entry(Action::DeleteWebhook, webhook_target(w.id), webhook_details(w))
        })?)
    }

    /// A webhook's deliveries, oldest first, with every attempt (statuses and errors, never hit data).
    pub fn webhook_deliveries(
        &self,
        id: i64,
        after: Option<i64>,
        limit: usize,
        caller: &Principal,
    ) -> Result<DeliveryPage, ServiceError> {
        caller.require(Permission::ManageWebhooks)?;
        self.check_webhook_scope(&self.store.get_webhook(id)?, caller)?;
        if limit == 0 || limit > MAX_DELIVERIES_PER_PAGE {
            let detail = format!("limit must lie between 1 and {MAX_DELIVERIES_PER_PAGE}");
            return Err(GalleryError::invalid(InvalidKind::WebhookQuery, detail).into());
        }
        Ok(self.store.list_deliveries(id, after, limit)?)
    }

    /// An admin limited to watchlists manages only webhooks that send nothing else.
    fn check_webhook_scope(&self, webhook: &Webhook, caller: &Principal) -> Result<(), ServiceError> {
        if caller.watchlists.is_none() {
            return Ok(());
        }
        let names = webhook.watchlists.as_deref().ok_or(ServiceError::WatchlistForbidden { watchlist: "*".into() })?;
        names.iter().try_for_each(|name| caller.require_watchlist(name))
    }

    /// The dispatcher's work at `now`: makes the deliveries of hits new since the last call (from the store, so
    /// hits of other nodes too), then takes the due ones, each leased for the attempt's timeout and a margin so
    /// that no other dispatcher sends it meanwhile.
    pub fn due_deliveries(&self, now: SystemTime, caller: &Principal) -> Result<Vec<DeliveryJob>, ServiceError> {
        caller.require(Permission::ManageWebhooks)?;
        let now_ms = millis(now);
        self.store.enqueue_deliveries(now_ms)?;
        // Twice the attempt's timeout and a margin: long enough that an attempt in progress is never sent twice at
        // once, short enough that one cut off by a stop or a crash is sent again soon.
        let lease = Duration::from_secs_f64(2.0 * self.alerts.webhook_timeout_s.max(0.0)) + Duration::from_secs(5);
        let claimed = self.store.claim_deliveries(now_ms, now_ms + lease.as_millis() as i64, CLAIM_BATCH)?;
        let mut jobs = Vec::with_capacity(claimed.len());
        for delivery in claimed {
            let webhook = match self.store.get_webhook(delivery.webhook_id) {
                Ok(webhook) => webhook,
                // Deleted since: its deliveries went with it.
                Err(GalleryError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let hit = self.store.get_hit(delivery.hit_id)?;
            let body = serde_json::to_vec(&json!({ "event": "hit", "hit": hit }))
                .map_err(|e| ServiceError::InvalidRequest(format!("webhook body: {e}")))?;
            jobs.push(DeliveryJob { delivery, url: webhook.url, secret: webhook.secret, body });
        }
        Ok(jobs)
    }

    /// Records how attempt of `delivery` went (the receiver's status, or why there was none) and when to try
    /// again: delivered on a 2xx, failed after `webhook_max_attempts`, otherwise pending after the backoff.
    pub fn delivery_attempted(
        &self,
        delivery: &Delivery,
        outcome: Result<u16, String>,
        at: SystemTime,
        caller: &Principal,
    ) -> Result<Delivery, ServiceError> {
        caller.require(Permission::ManageWebhooks)?;
        let n = delivery.attempts.len() as u32 + 1;
        let (status, error) = match outcome {
            Ok(status) => (Some(status), None),
            Err(error) => (None, Some(error)),
        };
        let delivered = status.is_some_and(|s| (200..300).contains(&s));
        let (state, next) = if delivered {
            (DeliveryState::Delivered, None)
        } else if n >= self.alerts.webhook_max_attempts.max(1) {
            (DeliveryState::Failed, None)
        } else {
            (DeliveryState::Pending, Some(millis(at) + backoff(self.alerts.webhook_backoff_s, n).as_millis() as i64))
        };
        let attempt = Attempt { n, at: humantime::format_rfc3339_millis(at).to_string(), status, error };
        Ok(self.store.record_attempt(delivery.id, attempt, state, next)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body() {
        // Reference value: printf '1700000000.{"event":"hit"}' | openssl dgst -sha256 -hmac whsec_test
        let signed = signature("whsec_test", 1_700_000_000, br#"{"event":"hit"}"#);
        assert!(signed.starts_with("sha256=") && signed.len() == 7 + 64, "{signed}");
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"whsec_test").unwrap();
        mac.update(br#"1700000000.{"event":"hit"}"#);
        assert_eq!(signed, format!("sha256={}", hex::encode(mac.finalize().into_bytes())));
        assert_ne!(signed, signature("whsec_test", 1_700_000_001, br#"{"event":"hit"}"#), "the timestamp is signed");
        assert_ne!(signed, signature("whsec_other", 1_700_000_000, br#"{"event":"hit"}"#));
        assert_ne!(signed, signature("whsec_test", 1_700_000_000, br#"{"event":"hit "}"#));
    }

    #[test]
    fn backoff_doubles_from_its_base_up_to_an_hour() {
        assert_eq!(backoff(2.0, 1), Duration::from_secs(2));
        assert_eq!(backoff(2.0, 2), Duration::from_secs(4));
        assert_eq!(backoff(2.0, 7), Duration::from_secs(128));
        assert_eq!(backoff(2.0, 12), Duration::from_secs(3600));
        assert_eq!(backoff(2.0, u32::MAX), Duration::from_secs(3600));
        assert_eq!(backoff(0.05, 3), Duration::from_millis(200));
        assert_eq!(backoff(f64::NAN, 3), Duration::ZERO);
    }

    #[test]
    fn secrets_are_fresh_and_shaped() {
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with(SECRET_PREFIX) && a.len() == SECRET_PREFIX.len() + 64, "{a}");
    }
}
