//! The routes of hits and their review: the queues, one hit with its decisions, its probe crop, a decision, an
//! officer's acknowledgement, and a case's confirmed hits as JSON lines. Each calls one core method with the caller.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;

use super::{blocking, caller, ok, parse_id, parse_json, ApiResult, RawBody};
use crate::gallery::{Decision, Hit, HitPage, HitQuery};
use crate::http::schema::ErrorBody;
use crate::http::{ApiError, AppState};

/// `POST /v1/hits/{id}/decisions`: what the reviewer decided and why.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub decision: Decision,
    /// Why, in 1..=2000 characters (the audit trail records its length, never its text).
    pub comment: String,
}

fn query_error(name: &str, problem: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_query", format!("`{name}`: {problem}"))
}

/// The queue filters of the query string; absent or empty ones select everything.
fn hit_query(params: &HashMap<String, String>) -> Result<HitQuery, ApiError> {
    let text = |name: &str| params.get(name).filter(|v| !v.is_empty()).cloned();
    let number = |name: &str| -> Result<Option<i64>, ApiError> {
        text(name)
            .map(|raw| raw.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| query_error(name, "not a whole number")))
            .transpose()
    };
    Ok(HitQuery {
        state: text("state").map(|s| s.parse()).transpose().map_err(|e| query_error("state", e))?,
        source: text("source").map(|s| s.parse()).transpose().map_err(|e| query_error("source", e))?,
        watchlist: text("watchlist"),
        case: text("case"),
        checkpoint: text("checkpoint"),
        job: number("job")?,
        open: text("open")
            .map(|raw| raw.parse::<bool>().map_err(|_| query_error("open", "use true or false")))
            .transpose()?
            .unwrap_or(false),
        after: number("after")?,
        limit: number("limit")?.map_or(50, |n| n as usize),
        within: None,
    })
}

#[utoipa::path(get, path = "/v1/hits", tag = "hits", summary = "A review queue: hits oldest first, paged by id",
    params(
        ("state" = Option<String>, Query, description = "undecided, awaiting_second, confirmed, rejected or disputed"),
        ("watchlist" = Option<String>, Query, description = "only this watchlist's hits"),
        ("case" = Option<String>, Query, description = "only hits of searches that stated this case"),
        ("checkpoint" = Option<String>, Query, description = "only hits of searches that stated this checkpoint"),
        ("source" = Option<String>, Query, description = "checkpoint or job"),
        ("job" = Option<i64>, Query, description = "only hits of this bulk search job"),
        ("open" = Option<bool>, Query, description = "true: only open alerts (checkpoint hits not acknowledged yet)"),
        ("after" = Option<i64>, Query, description = "the `next_after` of the previous page"),
        ("limit" = Option<usize>, Query, description = "default 50, at most 500"),
    ),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, body = HitPage),
        (status = 400, body = ErrorBody),
    ))]
pub async fn list_hits(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let query = hit_query(&params)?;
    let page = blocking(&state, move |s| s.list_hits(query, &who)).await?;
    ok(StatusCode::OK, page)
}

#[utoipa::path(get, path = "/v1/hits/{id}", tag = "hits", summary = "A hit with every decision on it",
    params(("id" = i64, Path, description = "hit id")),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, body = Hit),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn get_hit(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let id = parse_id(&id, "hit")?;
    let hit = blocking(&state, move |s| s.get_hit(id, &who)).await?;
    ok(StatusCode::OK, hit)
}

#[utoipa::path(get, path = "/v1/hits/{id}/probe.jpg", tag = "hits",
    summary = "The probe face of a hit, aligned like the enrolled thumbnails (a view of a traveller's face: audited)",
    params(("id" = i64, Path, description = "hit id")),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, content_type = "image/jpeg", body = Vec<u8>),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn probe(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let id = parse_id(&id, "hit")?;
    match blocking(&state, move |s| s.hit_probe(id, &who)).await? {
        Some(bytes) => Ok(([(header::CONTENT_TYPE, "image/jpeg")], bytes).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "probe_not_found", "this hit came from a search without a photo")),
    }
}

#[utoipa::path(post, path = "/v1/hits/{id}/decisions", tag = "hits",
    summary = "Record the caller's decision; two different reviewers agreeing confirm or reject the hit",
    params(("id" = i64, Path, description = "hit id")),
    request_body = DecisionRequest,
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 201, body = Hit),
        (status = 409, description = "`already_decided`: this key or person decided on the hit already; \
                                      `review_closed`: it is confirmed or rejected", body = ErrorBody),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn decide(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>, RawBody(body): RawBody) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let id = parse_id(&id, "hit")?;
    let request: DecisionRequest = parse_json(&body)?;
    let hit = blocking(&state, move |s| s.review_hit(id, request.decision, request.comment, &who)).await?;
    ok(StatusCode::CREATED, hit)
}

#[utoipa::path(post, path = "/v1/hits/{id}/acknowledge", tag = "hits",
    summary = "An officer acknowledges an open checkpoint alert (not a review)",
    params(("id" = i64, Path, description = "hit id")),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, body = Hit),
        (status = 409, description = "`already_acknowledged`, or `not_an_alert` for a job's hit", body = ErrorBody),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn acknowledge(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let id = parse_id(&id, "hit")?;
    let hit = blocking(&state, move |s| s.acknowledge_hit(id, &who)).await?;
    ok(StatusCode::OK, hit)
}

#[utoipa::path(get, path = "/v1/cases/{case}/confirmed", tag = "hits",
    summary = "Export a case's confirmed hits as JSON lines, one hit with its decisions per line (audited)",
    params(("case" = String, Path, description = "the case the searches stated (percent-encode a `/`)")),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, content_type = "application/x-ndjson", body = String),
        (status = 400, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn export_confirmed(State(state): State<AppState>, headers: HeaderMap, Path(case): Path<String>) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let hits = blocking(&state, move |s| s.export_confirmed(&case, &who)).await?;
    let mut lines = Vec::new();
    for hit in &hits {
        serde_json::to_writer(&mut lines, hit).map_err(|e| ApiError::internal(format!("export: {e}")))?;
        lines.push(b'\n');
    }
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], lines).into_response())
}
