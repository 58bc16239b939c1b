//! Alerts that reach someone, as the store keeps them: webhooks (where an admin asked hits to be sent, with the
//! secret that signs them) and their deliveries (one per hit and webhook, with every attempt), and the
//! `AlertStore` half of the store contract. The store is the truth: a dispatcher on any node finds the hits a
//! webhook has not seen yet after its cursor, and pending deliveries survive a restart.

use serde::{Deserialize, Serialize};

use super::error::{GalleryError, InvalidKind};
use super::hits::{Hit, HitQuery, HitSource};
use super::store::AuditFor;

/// Where hits are sent. The secret stays in the store (the server must be able to sign with it) and is shown once,
/// when the webhook is made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Webhook {
    pub id: i64,
    /// `http://` or `https://`; receives `POST {"event":"hit","hit":…}`.
    pub url: String,
    /// Only hits of these watchlists; absent means every watchlist.
    pub watchlists: Option<Vec<String>>,
    /// Only hits of these sources.
    pub sources: Vec<HitSource>,
    pub description: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// The actor that made it.
    pub created_by: String,
    #[serde(skip)]
    #[schema(ignore)]
    pub secret: String,
}

/// A webhook to make; the service makes the secret.
#[derive(Debug, Clone, PartialEq)]
pub struct NewWebhook {
    pub url: String,
    pub watchlists: Option<Vec<String>>,
    pub sources: Vec<HitSource>,
    pub description: Option<String>,
    pub secret: String,
    pub created_by: String,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet; the next attempt is due at `next_attempt_at`.
    Pending,
    /// The receiver answered 2xx. Final.
    Delivered,
    /// Every attempt failed. Final.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub(crate) fn parse_stored(text: &str) -> Option<DeliveryState> {
        [DeliveryState::Pending, DeliveryState::Delivered, DeliveryState::Failed].into_iter().find(|s| s.as_str() == text)
    }
}

/// One try at delivering: the receiver's HTTP status, or why there was none. Never holds hit data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    /// 1 for the first.
    pub n: u32,
    /// RFC 3339.
    pub at: String,
    pub status: Option<u16>,
    /// Why there was no 2xx answer: a connection error, a timeout (absent when the receiver answered).
    pub error: Option<String>,
}

/// One hit to one webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delivery {
    /// Sent as `x-facematch-delivery`: the same on every attempt, so a receiver can drop duplicates.
    pub id: i64,
    pub webhook_id: i64,
    pub hit_id: i64,
    pub state: DeliveryState,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; when the next attempt is due (absent once delivered or failed).
    pub next_attempt_at: Option<String>,
    /// Oldest first.
    pub attempts: Vec<Attempt>,
}

/// One page of a webhook's deliveries, oldest first; `next_after` continues it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<Delivery>,
    pub next_after: Option<i64>,
}

pub const MAX_DELIVERIES_PER_PAGE: usize = 500;
const MAX_URL_CHARS: usize = 2000;
const MAX_DESCRIPTION_CHARS: usize = 500;

/// A receiver's address: `http` or `https`, with a host, no user or password (they would be logged with the URL),
/// no fragment, at most 2000 characters.
pub fn validate_webhook_url(url: &str) -> Result<(), GalleryError> {
    let refuse = |why: &str| GalleryError::invalid(InvalidKind::WebhookUrl, format!("webhook url {why}"));
    if url.is_empty() || url.chars().count() > MAX_URL_CHARS || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(refuse(&format!("must be 1..={MAX_URL_CHARS} characters without spaces")));
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| refuse("must start with http:// or https://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.starts_with(':') {
        return Err(refuse("must name a host"));
    }
    if authority.contains('@') {
        return Err(refuse("must not hold a user or password"));
    }
    if url.contains('#') {
        return Err(refuse("must not have a fragment"));
    }
    Ok(())
}

/// A webhook's description: printable, at most 500 characters.
pub fn validate_webhook_description(text: &str) -> Result<(), GalleryError> {
    if text.chars().count() > MAX_DESCRIPTION_CHARS || text.chars().any(char::is_control) {
        return Err(GalleryError::invalid(
            InvalidKind::Description,
            format!("description must be at most {MAX_DESCRIPTION_CHARS} printable characters"),
        ));
    }
    Ok(())
}

/// The alerts half of the store contract. Every change an admin makes appends its audit entry in the same
/// transaction; deliveries and their attempts are the service's own bookkeeping, not audited one by one.
pub trait AlertStore: Send + Sync {
    /// The newest hit's id (0 while there is none): where a stream that replays nothing starts.
    fn latest_hit_id(&self) -> Result<i64, GalleryError>;
    /// The number of the newest change to a hit (an acknowledgement, a decision); 0 while there is none.
    fn latest_hit_change(&self) -> Result<i64, GalleryError>;
    /// The hits changed after change number `after`, as they are now, with the number of their latest change, in
    /// change order; `query`'s `source`, `within` and `limit` apply.
    fn changed_hits(&self, after: i64, query: &HitQuery) -> Result<Vec<(i64, Hit)>, GalleryError>;
    /// Makes a webhook that receives the hits recorded after it (not the earlier ones).
    fn create_webhook(&self, new: NewWebhook, audit: AuditFor<'_, Webhook>) -> Result<Webhook, GalleryError>;
    /// `webhook_not_found` when there is none.
    fn get_webhook(&self, id: i64) -> Result<Webhook, GalleryError>;
    /// Oldest first.
    fn list_webhooks(&self) -> Result<Vec<Webhook>, GalleryError>;
    /// Deletes the webhook with its deliveries.
    fn delete_webhook(&self, id: i64, audit: AuditFor<'_, Webhook>) -> Result<Webhook, GalleryError>;
    /// Makes a pending delivery, due at `now_ms`, for every hit after each webhook's cursor that its filters
    /// select, and moves the cursors past them, in one transaction; returns how many it made.
    fn enqueue_deliveries(&self, now_ms: i64) -> Result<usize, GalleryError>;
    /// Takes up to `limit` pending deliveries due at `now_ms`, oldest due first, and moves their next attempt to
    /// `lease_until_ms`, so that no other dispatcher takes them meanwhile (and a crash only delays them).
    fn claim_deliveries(&self, now_ms: i64, lease_until_ms: i64, limit: usize) -> Result<Vec<Delivery>, GalleryError>;
    /// Appends an attempt and sets the delivery's state and next attempt (`None` once final).
    fn record_attempt(
        &self,
        id: i64,
        attempt: Attempt,
        state: DeliveryState,
        next_attempt_ms: Option<i64>,
    ) -> Result<Delivery, GalleryError>;
    /// A webhook's deliveries after id `after`, oldest first.
    fn list_deliveries(&self, webhook_id: i64, after: Option<i64>, limit: usize) -> Result<DeliveryPage, GalleryError>;
}

/// The audit entry's target for a webhook.
pub fn webhook_target(id: i64) -> Option<String> {
    Some(format!("webhook/{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_http_or_https_with_a_host_and_no_credentials() {
        for good in ["http://127.0.0.1:8080/hook", "https://alerts.example.org/facematch?x=1", "http://[::1]:9/x"] {
            validate_webhook_url(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "",
            "ftp://example.org/",
            "file:///etc/passwd",
            "http://",
            "http:///path",
            "https://user:pw@example.org/",
            "http://example.org/a b",
            "http://example.org/#frag",
            "javascript:alert(1)",
        ] {
            assert_eq!(validate_webhook_url(bad).unwrap_err().code(), "invalid_webhook_url", "{bad:?}");
        }
        assert!(validate_webhook_url(&format!("http://h/{}", "x".repeat(2000))).is_err());
    }

    #[test]
    fn delivery_states_round_trip_through_their_names() {
        for state in [DeliveryState::Pending, DeliveryState::Delivered, DeliveryState::Failed] {
            assert_eq!(DeliveryState::parse_stored(state.as_str()), Some(state));
            assert_eq!(serde_json::to_value(state).unwrap(), serde_json::json!(state.as_str()));
        }
    }
}
