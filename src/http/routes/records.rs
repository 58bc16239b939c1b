//! The routes that read and change records — subjects, their faces, watchlists — and the audit trail and
//! gallery figures. Each calls one core method with the caller.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};

use super::{blocking, caller, ok, parse_id, parse_json, ApiResult, RawBody};
use crate::gallery::{AuditRecord, NewSubject, Page, Subject, SubjectPatch, SubjectQuery, Template, Watchlist};
use crate::http::schema::{AuditVerdict, ErrorBody, Items, SubjectDeleted, TemplateDeleted, WatchlistDeleted};
use crate::http::{ApiError, AppState};
use crate::service::{ServiceStats, WatchlistRequest};

/// A 1-based page number or size from the query string: absent takes the default, anything else must be a
/// positive integer.
fn page_number(params: &HashMap<String, String>, name: &str, default: usize) -> Result<usize, ApiError> {
    match params.get(name) {
        None => Ok(default),
        Some(raw) => raw
            .parse()
            .map_err(|_| ApiError::bad_request("invalid_query", format!("`{name}` must be a positive integer, not `{raw}`"))),
    }
}

#[utoipa::path(post, path = "/v1/subjects", tag = "subjects", summary = "Create a subject",
    request_body = NewSubject,
    responses(
        (status = 201, body = Subject),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
    ))]
pub async fn create_subject(State(state): State<AppState>, headers: HeaderMap, RawBody(body): RawBody) -> ApiResult {
    let who = caller(&headers)?;
    let new: NewSubject = parse_json(&body)?;
    let subject = blocking(&state, move |s| s.create_subject(new, &who)).await?;
    ok(StatusCode::CREATED, subject)
}

#[utoipa::path(get, path = "/v1/subjects", tag = "subjects", summary = "List subjects",
    params(
        ("watchlist" = Option<String>, Query, description = "only this watchlist's subjects"),
        ("q" = Option<String>, Query, description = "case-insensitive substring of the name or external reference"),
        ("page" = Option<usize>, Query, description = "1-based (default 1)"),
        ("per_page" = Option<usize>, Query, description = "default 50"),
    ),
    responses(
        (status = 200, body = Page<Subject>),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
    ))]
pub async fn list_subjects(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    let who = caller(&headers)?;
    let query = SubjectQuery {
        watchlist: params.get("watchlist").cloned().filter(|s| !s.is_empty()),
        q: params.get("q").cloned().filter(|s| !s.is_empty()),
        page: page_number(&params, "page", 1)?,
        per_page: page_number(&params, "per_page", 50)?,
    };
    let page = blocking(&state, move |s| s.list_subjects(&query, &who)).await?;
    ok(StatusCode::OK, page)
}

#[utoipa::path(get, path = "/v1/subjects/{id}", tag = "subjects", summary = "Get a subject",
    params(("id" = i64, Path, description = "subject id")),
    responses((status = 200, body = Subject), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_subject(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let who = caller(&headers)?;
    let id = parse_id(&id, "subject")?;
    let subject = blocking(&state, move |s| s.get_subject(id, &who)).await?;
    ok(StatusCode::OK, subject)
}

#[utoipa::path(patch, path = "/v1/subjects/{id}", tag = "subjects",
    summary = "Update a subject (moving it to another watchlist relabels its templates)",
    params(("id" = i64, Path, description = "subject id")),
    request_body = SubjectPatch,
    responses(
        (status = 200, body = Subject),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
    ))]
pub async fn update_subject(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> ApiResult {
    let who = caller(&headers)?;
    let id = parse_id(&id, "subject")?;
    let patch: SubjectPatch = parse_json(&body)?;
    let subject = blocking(&state, move |s| s.update_subject(id, patch, &who)).await?;
    ok(StatusCode::OK, subject)
}

#[utoipa::path(delete, path = "/v1/subjects/{id}", tag = "subjects", summary = "Delete a subject and all its templates",
    params(("id" = i64, Path, description = "subject id")),
    responses((status = 200, body = SubjectDeleted), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_subject(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let who = caller(&headers)?;
    let id = parse_id(&id, "subject")?;
    let removed = blocking(&state, move |s| s.delete_subject(id, &who)).await?;
    ok(StatusCode::OK, SubjectDeleted { deleted: id, templates_removed: removed })
}

#[utoipa::path(get, path = "/v1/subjects/{id}/faces", tag = "subjects", summary = "List a subject's templates",
    params(("id" = i64, Path, description = "subject id")),
    responses((status = 200, body = Items<Template>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_faces(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let who = caller(&headers)?;
    let id = parse_id(&id, "subject")?;
    let items = blocking(&state, move |s| s.list_templates(id, &who)).await?;
    ok(StatusCode::OK, Items { items })
}

#[utoipa::path(delete, path = "/v1/subjects/{id}/faces/{template}", tag = "subjects", summary = "Delete one template",
    params(("id" = i64, Path, description = "subject id"), ("template" = i64, Path, description = "template id")),
    responses((status = 200, body = TemplateDeleted), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_face(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, template)): Path<(String, String)>,
) -> ApiResult {
    let who = caller(&headers)?;
    let subject_id = parse_id(&id, "subject")?;
    let template_id = parse_id(&template, "template")?;
    blocking(&state, move |s| s.delete_template(subject_id, template_id, &who)).await?;
    ok(StatusCode::OK, TemplateDeleted { deleted: template_id })
}

#[utoipa::path(get, path = "/v1/watchlists", tag = "watchlists", summary = "List watchlists",
    responses((status = 200, body = Items<Watchlist>), (status = 400, body = ErrorBody)))]
pub async fn list_watchlists(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    let who = caller(&headers)?;
    let items = blocking(&state, move |s| s.list_watchlists(&who)).await?;
    ok(StatusCode::OK, Items { items })
}

#[utoipa::path(post, path = "/v1/watchlists", tag = "watchlists", summary = "Create a watchlist",
    request_body = WatchlistRequest,
    responses(
        (status = 201, body = Watchlist),
        (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
pub async fn create_watchlist(State(state): State<AppState>, headers: HeaderMap, RawBody(body): RawBody) -> ApiResult {
    let who = caller(&headers)?;
    let request: WatchlistRequest = parse_json(&body)?;
    let watchlist = blocking(&state, move |s| s.create_watchlist(request, &who)).await?;
    ok(StatusCode::CREATED, watchlist)
}

#[utoipa::path(get, path = "/v1/watchlists/{name}", tag = "watchlists", summary = "Get a watchlist",
    params(("name" = String, Path, description = "watchlist name")),
    responses((status = 200, body = Watchlist), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_watchlist(State(state): State<AppState>, headers: HeaderMap, Path(name): Path<String>) -> ApiResult {
    let who = caller(&headers)?;
    let watchlist = blocking(&state, move |s| s.get_watchlist(&name, &who)).await?;
    ok(StatusCode::OK, watchlist)
}

#[utoipa::path(delete, path = "/v1/watchlists/{name}", tag = "watchlists", summary = "Delete an empty watchlist",
    params(("name" = String, Path, description = "watchlist name")),
    responses(
        (status = 200, body = WatchlistDeleted),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    ))]
pub async fn delete_watchlist(State(state): State<AppState>, headers: HeaderMap, Path(name): Path<String>) -> ApiResult {
    let who = caller(&headers)?;
    let deleted = name.clone();
    blocking(&state, move |s| s.delete_watchlist(&name, &who)).await?;
    ok(StatusCode::OK, WatchlistDeleted { deleted })
}

#[utoipa::path(get, path = "/v1/stats", tag = "operations", summary = "Counts and index state",
    responses((status = 200, body = ServiceStats), (status = 400, body = ErrorBody)))]
pub async fn stats(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    let who = caller(&headers)?;
    let stats = blocking(&state, move |s| s.stats(&who)).await?;
    ok(StatusCode::OK, stats)
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", summary = "Audit trail, newest first",
    params(
        ("page" = Option<usize>, Query, description = "1-based (default 1)"),
        ("per_page" = Option<usize>, Query, description = "default 50"),
    ),
    responses((status = 200, body = Page<AuditRecord>), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list_audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    let who = caller(&headers)?;
    let page = page_number(&params, "page", 1)?;
    let per_page = page_number(&params, "per_page", 50)?;
    let records = blocking(&state, move |s| s.list_audit(page, per_page, &who)).await?;
    ok(StatusCode::OK, records)
}

#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", summary = "Verify the audit trail's hash chain",
    responses((status = 200, body = AuditVerdict), (status = 400, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn verify_audit(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    let who = caller(&headers)?;
    let rows_checked = blocking(&state, move |s| s.verify_audit(&who)).await?;
    ok(StatusCode::OK, AuditVerdict { status: "intact".into(), rows_checked })
}
