//! The routes of alerts as they happen: the stream of hits (server-sent events, read by the console with `fetch()`
//! and a bearer key, so no secret ever sits in a URL) and the admin's webhooks with their deliveries. Each calls the
//! core with the caller; the stream calls it again for every page it reads.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{blocking, caller, ok, parse_id, parse_json, ApiResult, RawBody};
use crate::gallery::{DeliveryPage, Hit, HitSource, Webhook};
use crate::http::schema::{ErrorBody, Items};
use crate::http::{ApiError, AppState};
use crate::service::{AlertFeed, AlertFilter, IssuedWebhook, Principal, WebhookRequest};

fn query_error(name: &str, problem: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_query", format!("`{name}`: {problem}"))
}

fn whole_number(name: &str, raw: &str) -> Result<i64, ApiError> {
    raw.trim().parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| query_error(name, "not a whole number"))
}

/// The stream's filters and where it resumes: `Last-Event-ID` (a reconnecting client) before `after`.
fn stream_request(params: &[(String, String)], headers: &HeaderMap) -> Result<(AlertFilter, Option<i64>), ApiError> {
    let mut filter = AlertFilter::default();
    let mut after = None;
    for (name, value) in params {
        match name.as_str() {
            "watchlist" if !value.is_empty() => filter.watchlists.get_or_insert_with(Vec::new).push(value.clone()),
            "source" if !value.is_empty() => {
                filter.source = Some(value.parse::<HitSource>().map_err(|e| query_error("source", e))?)
            }
            "after" if !value.is_empty() => after = Some(whole_number("after", value)?),
            _ => {}
        }
    }
    if let Some(last) = headers.get("last-event-id") {
        let text = last.to_str().map_err(|_| query_error("last-event-id", "not a whole number"))?;
        if !text.trim().is_empty() {
            after = Some(whole_number("last-event-id", text)?);
        }
    }
    Ok((filter, after))
}

#[utoipa::path(get, path = "/v1/alerts/stream", tag = "alerts",
    summary = "Hits as they happen, as server-sent events: `id: <hit id>`, `event: hit`, `data: <the hit as GET /v1/hits/{id} shows it>`",
    description = "Replays the hits after `Last-Event-ID` (or `after`) from the store first, then sends new ones; without \
                   either it starts with the next hit. Only hits of the key's watchlists. A comment line every \
                   `alerts.keepalive_s` (15 s) keeps proxies from closing it; a hit it sent that is acknowledged or \
                   reviewed comes again as `event: hit_updated` (no `id:`); it ends when the server stops (reconnect \
                   with `Last-Event-ID`). Read it with `fetch()` and `Authorization: Bearer`.",
    params(
        ("watchlist" = Option<Vec<String>>, Query, description = "only these watchlists' hits (repeat the parameter)"),
        ("source" = Option<String>, Query, description = "checkpoint or job; default: both"),
        ("after" = Option<i64>, Query, description = "replay the hits after this id first"),
        ("Last-Event-ID" = Option<i64>, Header, description = "as `after`, and taking precedence: a reconnecting client's last event"),
    ),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, content_type = "text/event-stream", body = String),
        (status = 400, body = ErrorBody), (status = 422, body = ErrorBody),
    ))]
pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let (filter, resume) = stream_request(&params, &headers)?;
    let opener = who.clone();
    let feed = blocking(&state, move |s| s.open_alert_feed(filter, resume, &opener)).await?;
    let config = state.service.alerts_config();
    // Kept to present the key again at each keep-alive: a key revoked or expired while its stream is open stops
    // receiving hits within `alerts.keepalive_s`, as it would at its next request.
    let mut credentials = HeaderMap::new();
    for name in [header::AUTHORIZATION.as_str(), "x-facematch-purpose"] {
        if let Some(value) = headers.get(name) {
            credentials.insert(name, value.clone());
        }
    }
    let stream = EventStream {
        credentials,
        cursor: feed.start_after,
        changes: feed.changes_after,
        feed: Arc::new(feed),
        who: Arc::new(who),
        queue: VecDeque::new(),
        hits: state.service.hit_signal(),
        closing: state.closing.subscribe(),
        poll: Duration::from_secs_f64(config.poll_interval_s.max(0.01)),
        keepalive: Duration::from_secs_f64(config.keepalive_s.max(0.1)),
        keepalive_at: Instant::now(),
        opened: false,
        done: false,
        state,
    };
    let body = Body::from_stream(futures_util::stream::unfold(stream, EventStream::next));
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    // Proxies that buffer (nginx) must pass each event on as it comes.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// One open stream: where it is, what it still has to send, and what wakes it.
struct EventStream {
    state: AppState,
    /// The request's key and purpose.
    credentials: HeaderMap,
    who: Arc<Principal>,
    feed: Arc<AlertFeed>,
    /// The newest hit id read from the store.
    cursor: i64,
    /// The newest change number of a hit read from the store.
    changes: i64,
    queue: VecDeque<Outgoing>,
    hits: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
    poll: Duration,
    keepalive: Duration,
    keepalive_at: Instant,
    opened: bool,
    done: bool,
}

impl EventStream {
    /// The next chunk of the body; `None` ends it (the server is stopping, or the feed failed).
    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, EventStream)> {
        if self.done || *self.closing.borrow() {
            return None;
        }
        if !self.opened {
            // A first line at once: the client sees the stream is open before any hit.
            self.opened = true;
            self.keepalive_at = Instant::now() + self.keepalive;
            return Some((Ok(Bytes::from_static(b": facematch alerts\nretry: 2000\n\n")), self));
        }
        loop {
            match self.queue.pop_front() {
                Some(Outgoing::New(hit)) => return Some((Ok(hit_event(&hit)), self)),
                Some(Outgoing::Changed(hit)) => return Some((Ok(hit_updated_event(&hit)), self)),
                None => {}
            }
            let (feed, who, after, changes) = (self.feed.clone(), self.who.clone(), self.cursor, self.changes);
            // New hits first, then changes: a hit is always sent as `hit` before any `hit_updated` of it.
            let read = blocking(&self.state, move |s| {
                let hits = s.alerts_after(&feed, after, &who)?;
                let changed = if hits.is_empty() { s.alert_changes_after(&feed, changes, &who)? } else { Vec::new() };
                Ok((hits, changed))
            });
            match read.await {
                Ok((hits, _)) if !hits.is_empty() => {
                    self.cursor = hits.last().map_or(after, |hit| hit.id);
                    self.queue.extend(hits.into_iter().map(Outgoing::New));
                    continue;
                }
                Ok((_, changed)) if !changed.is_empty() => {
                    self.changes = changed.last().map_or(changes, |(seq, _)| *seq);
                    // A change to a hit this stream has not reached yet (it replays from further back) comes with
                    // the hit itself, as it is now.
                    let cursor = self.cursor;
                    self.queue.extend(changed.into_iter().filter(|(_, hit)| hit.id <= cursor).map(|(_, hit)| Outgoing::Changed(hit)));
                    continue;
                }
                Ok(_) => {}
                Err(error) => {
                    // The client reconnects with its last id; the error says why the stream ended.
                    return Some((Ok(error_event(&error)), self.finished()));
                }
            }
            let keepalive_at = self.keepalive_at;
            let woken = tokio::select! {
                _ = changed_or_never(&mut self.hits) => Wake::Read,
                _ = tokio::time::sleep(self.poll) => Wake::Read,
                _ = tokio::time::sleep_until(keepalive_at) => Wake::KeepAlive,
                _ = self.closing.wait_for(|closing| *closing) => Wake::Close,
            };
            match woken {
                Wake::Read => {}
                Wake::KeepAlive => {
                    self.keepalive_at = Instant::now() + self.keepalive;
                    match caller(&self.state, &self.credentials).await {
                        Ok(who) => self.who = Arc::new(who),
                        // Revoked, expired, or its role changed: the stream ends as the next request would be refused.
                        Err(error) if matches!(error.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                            return Some((Ok(error_event(&error)), self.finished()));
                        }
                        // A full rate bucket or a busy store: the key stays as it was checked last.
                        Err(_) => {}
                    }
                    return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), self));
                }
                Wake::Close => return None,
            }
        }
    }
}

impl EventStream {
    /// Sends nothing more.
    fn finished(mut self) -> EventStream {
        self.done = true;
        self
    }
}

/// `event: error` with the error shape: why the stream ends.
fn error_event(error: &ApiError) -> Bytes {
    let body = serde_json::json!({ "error": { "code": error.code, "message": error.message } });
    Bytes::from(format!("event: error\ndata: {body}\n\n"))
}

/// Why a waiting stream woke.
enum Wake {
    /// A hit on this node, or the poll: read the store.
    Read,
    KeepAlive,
    /// The server is stopping.
    Close,
}

/// Waits for the next change; never returns once the sender is gone (the poll still runs).
async fn changed_or_never(receiver: &mut watch::Receiver<u64>) {
    if receiver.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// What a stream sends next.
enum Outgoing {
    /// A hit not sent before: `event: hit`.
    New(Hit),
    /// A hit acknowledged or reviewed since: `event: hit_updated`.
    Changed(Hit),
}

/// `event: hit_updated` and the hit's JSON as it is now, without `id:`, so that a reconnecting client's
/// `Last-Event-ID` stays the last new hit it saw.
fn hit_updated_event(hit: &Hit) -> Bytes {
    let data = serde_json::to_string(hit).unwrap_or_else(|_| "{}".to_owned());
    Bytes::from(format!("event: hit_updated\ndata: {data}\n\n"))
}

/// `id`, `event: hit` and the hit's JSON on one `data` line (serde_json writes no line breaks).
fn hit_event(hit: &Hit) -> Bytes {
    let data = serde_json::to_string(hit).unwrap_or_else(|_| "{}".to_owned());
    Bytes::from(format!("id: {}\nevent: hit\ndata: {data}\n\n", hit.id))
}

#[utoipa::path(post, path = "/v1/webhooks", tag = "alerts",
    summary = "Send every new hit the filters select to a receiver, signed; the signing secret is shown only in this answer",
    description = "The receiver gets `POST {\"event\":\"hit\",\"hit\":<Hit>}` with `x-facematch-event`, `x-facematch-delivery`, \
                   `x-facematch-timestamp` and `x-facematch-signature: sha256=<hex HMAC-SHA256(secret, \"<timestamp>.<body>\")>`. \
                   The body names people and scores (never a photo): the receiver must be trusted with hits.",
    request_body = WebhookRequest,
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 201, body = IssuedWebhook),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn create_webhook(State(state): State<AppState>, headers: HeaderMap, RawBody(body): RawBody) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let request: WebhookRequest = parse_json(&body)?;
    let issued = blocking(&state, move |s| s.create_webhook(request, &who)).await?;
    ok(StatusCode::CREATED, issued)
}

#[utoipa::path(get, path = "/v1/webhooks", tag = "alerts", summary = "List webhooks (never their secrets)",
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, body = Items<Webhook>),
    ))]
pub async fn list_webhooks(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let items = blocking(&state, move |s| s.list_webhooks(&who)).await?;
    ok(StatusCode::OK, Items { items })
}

#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "alerts", summary = "Delete a webhook and its deliveries",
    params(("id" = i64, Path, description = "webhook id")),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, body = Webhook),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn delete_webhook(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let id = parse_id(&id, "webhook")?;
    let webhook = blocking(&state, move |s| s.delete_webhook(id, &who)).await?;
    ok(StatusCode::OK, webhook)
}

#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "alerts",
    summary = "A webhook's deliveries, oldest first, with every attempt's status or error (no hit data)",
    params(
        ("id" = i64, Path, description = "webhook id"),
        ("after" = Option<i64>, Query, description = "the `next_after` of the previous page"),
        ("limit" = Option<usize>, Query, description = "default 50, at most 500"),
    ),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, body = DeliveryPage),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn deliveries(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let id = parse_id(&id, "webhook")?;
    let mut after = None;
    let mut limit = 50;
    for (name, value) in &params {
        match name.as_str() {
            "after" if !value.is_empty() => after = Some(whole_number("after", value)?),
            "limit" if !value.is_empty() => limit = whole_number("limit", value)? as usize,
            _ => {}
        }
    }
    let page = blocking(&state, move |s| s.webhook_deliveries(id, after, limit, &who)).await?;
    ok(StatusCode::OK, page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_event_id_takes_precedence_over_after() {
        let params = vec![("after".to_owned(), "3".to_owned()), ("watchlist".to_owned(), "a".to_owned()), ("watchlist".to_owned(), "b".to_owned())];
        let mut headers = HeaderMap::new();
        let (filter, after) = stream_request(&params, &headers).unwrap();
        assert_eq!((filter.watchlists, after), (Some(vec!["a".to_owned(), "b".to_owned()]), Some(3)));
        headers.insert("last-event-id", HeaderValue::from_static("9"));
        assert_eq!(stream_request(&params, &headers).unwrap().1, Some(9));
        headers.insert("last-event-id", HeaderValue::from_static("nine"));
        assert_eq!(stream_request(&params, &headers).unwrap_err().code, "invalid_query");
        let bad = vec![("source".to_owned(), "camera".to_owned())];
        assert_eq!(stream_request(&bad, &HeaderMap::new()).unwrap_err().code, "invalid_query");
    }
}
