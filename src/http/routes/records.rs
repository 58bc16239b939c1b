//! The routes that read and change records — subjects, their faces, watchlists — and the audit trail and
//! gallery figures. Each calls one core method with the caller.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};

use super::{blocking, caller, ok, parse_id, parse_json, ApiResult, RawBody};
use crate::gallery::{
    AuditQuery, AuditRecord, NewSubject, Page, Subject, SubjectPatch, SubjectQuery, Template, Watchlist, WatchlistPatch,
};
use crate::http::schema::{ErrorBody, Items, SubjectDeleted, TemplateDeleted, WatchlistDeleted};
use crate::http::{ApiError, AppState};
use crate::service::{AuditVerdict, MembershipReport, ServiceStats, WatchlistRequest};

/// A 1-based page number or size from the query string: absent takes the default, anything else must be a
/// positive integer.
fn page_number(params: &HashMap<String, String>, name: &str, default: usize) -> Result<usize, ApiError> {
    match params.get(name) {
        None => Ok(default),
        Some(raw) => raw
            .parse()
            .ok()
            .filter(|&n: &usize| n >= 1)
            .ok_or_else(|| ApiError::bad_request("invalid_query", format!("`{name}` must be a positive integer, not `{raw}`"))),
    }
}

#[utoipa::path(post, path = "/v1/subjects", tag = "subjects", summary = "Create a subject",
    request_body = NewSubject,
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 201, body = Subject),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn create_subject(State(state): State<AppState>, headers: HeaderMap, RawBody(body): RawBody) -> ApiResult {
    let who = caller(&state, &headers).await?;
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
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, body = Page<Subject>),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
    ))]
pub async fn list_subjects(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let query = SubjectQuery {
        watchlist: params.get("watchlist").cloned().filter(|s| !s.is_empty()),
        q: params.get("q").cloned().filter(|s| !s.is_empty()),
        page: page_number(&params, "page", 1)?,
        per_page: page_number(&params, "per_page", 50)?,
        within: None,
    };
    let page = blocking(&state, move |s| s.list_subjects(&query, &who)).await?;
    ok(StatusCode::OK, page)
}

#[utoipa::path(get, path = "/v1/subjects/{id}", tag = "subjects", summary = "Get a subject",
    params(("id" = i64, Path, description = "subject id")),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody), (status = 200, body = Subject), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_subject(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let id = parse_id(&id, "subject")?;
    let subject = blocking(&state, move |s| s.get_subject(id, &who)).await?;
    ok(StatusCode::OK, subject)
}

#[utoipa::path(patch, path = "/v1/subjects/{id}", tag = "subjects",
    summary = "Update a subject (moving it to another watchlist relabels its templates)",
    params(("id" = i64, Path, description = "subject id")),
    request_body = SubjectPatch,
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, body = Subject),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn update_subject(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let id = parse_id(&id, "subject")?;
    let patch: SubjectPatch = parse_json(&body)?;
    let subject = blocking(&state, move |s| s.update_subject(id, patch, &who)).await?;
    ok(StatusCode::OK, subject)
}

#[utoipa::path(delete, path = "/v1/subjects/{id}", tag = "subjects", summary = "Delete a subject and all its templates",
    params(("id" = i64, Path, description = "subject id")),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, body = SubjectDeleted),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn delete_subject(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let id = parse_id(&id, "subject")?;
    let removed = blocking(&state, move |s| s.delete_subject(id, &who)).await?;
    ok(StatusCode::OK, SubjectDeleted { deleted: id, templates_removed: removed })
}

#[utoipa::path(get, path = "/v1/subjects/{id}/faces", tag = "subjects", summary = "List a subject's templates",
    params(("id" = i64, Path, description = "subject id")),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody), (status = 200, body = Items<Template>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_faces(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let id = parse_id(&id, "subject")?;
    let items = blocking(&state, move |s| s.list_templates(id, &who)).await?;
    ok(StatusCode::OK, Items { items })
}

#[utoipa::path(delete, path = "/v1/subjects/{id}/faces/{template}", tag = "subjects", summary = "Delete one template",
    params(("id" = i64, Path, description = "subject id"), ("template" = i64, Path, description = "template id")),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, body = TemplateDeleted),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn delete_face(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, template)): Path<(String, String)>,
) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let subject_id = parse_id(&id, "subject")?;
    let template_id = parse_id(&template, "template")?;
    blocking(&state, move |s| s.delete_template(subject_id, template_id, &who)).await?;
    ok(StatusCode::OK, TemplateDeleted { deleted: template_id })
}

#[utoipa::path(get, path = "/v1/watchlists", tag = "watchlists", summary = "List watchlists",
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody), (status = 200, body = Items<Watchlist>), (status = 400, body = ErrorBody)))]
pub async fn list_watchlists(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let items = blocking(&state, move |s| s.list_watchlists(&who)).await?;
    ok(StatusCode::OK, Items { items })
}

#[utoipa::path(post, path = "/v1/watchlists", tag = "watchlists", summary = "Create a watchlist",
    request_body = WatchlistRequest,
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 201, body = Watchlist),
        (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn create_watchlist(State(state): State<AppState>, headers: HeaderMap, RawBody(body): RawBody) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let request: WatchlistRequest = parse_json(&body)?;
    let watchlist = blocking(&state, move |s| s.create_watchlist(request, &who)).await?;
    ok(StatusCode::CREATED, watchlist)
}

#[utoipa::path(get, path = "/v1/watchlists/{name}", tag = "watchlists", summary = "Get a watchlist",
    params(("name" = String, Path, description = "watchlist name")),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody), (status = 200, body = Watchlist), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_watchlist(State(state): State<AppState>, headers: HeaderMap, Path(name): Path<String>) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let watchlist = blocking(&state, move |s| s.get_watchlist(&name, &who)).await?;
    ok(StatusCode::OK, watchlist)
}

#[utoipa::path(patch, path = "/v1/watchlists/{name}", tag = "watchlists",
    summary = "Change a watchlist's description, alert FPIR or retention period",
    params(("name" = String, Path, description = "watchlist name")),
    request_body = WatchlistPatch,
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, body = Watchlist),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
pub async fn update_watchlist(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawBody(body): RawBody,
) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let patch: WatchlistPatch = parse_json(&body)?;
    let watchlist = blocking(&state, move |s| s.update_watchlist(&name, patch, &who)).await?;
    ok(StatusCode::OK, watchlist)
}

#[utoipa::path(delete, path = "/v1/watchlists/{name}", tag = "watchlists", summary = "Delete an empty watchlist",
    params(("name" = String, Path, description = "watchlist name")),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, body = WatchlistDeleted),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn delete_watchlist(State(state): State<AppState>, headers: HeaderMap, Path(name): Path<String>) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let deleted = name.clone();
    blocking(&state, move |s| s.delete_watchlist(&name, &who)).await?;
    ok(StatusCode::OK, WatchlistDeleted { deleted })
}

#[utoipa::path(get, path = "/v1/stats", tag = "operations", summary = "Counts and index state",
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody), (status = 200, body = ServiceStats), (status = 400, body = ErrorBody)))]
pub async fn stats(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let stats = blocking(&state, move |s| s.stats(&who)).await?;
    ok(StatusCode::OK, stats)
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", summary = "Audit trail, newest first, filtered",
    params(
        ("page" = Option<usize>, Query, description = "1-based (default 1)"),
        ("per_page" = Option<usize>, Query, description = "default 50, at most 1000"),
        ("since" = Option<String>, Query, description = "entries at or after this RFC 3339 time"),
        ("until" = Option<String>, Query, description = "entries before this RFC 3339 time"),
        ("actor" = Option<String>, Query, description = "substring of the actor: a key's name or id"),
        ("action" = Option<String>, Query, description = "exact action, e.g. `search`"),
        ("subject" = Option<i64>, Query, description = "entries about this subject or its faces"),
        ("case" = Option<String>, Query, description = "substring of the stated purpose, e.g. a case number"),
        ("order" = Option<String>, Query, description = "`newest` (default) or `oldest` first"),
    ),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody), (status = 200, body = Page<AuditRecord>), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list_audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let text = |name: &str| params.get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let subject = match params.get("subject") {
        None => None,
        Some(raw) => Some(parse_id(raw, "subject")?),
    };
    let oldest_first = match params.get("order").map(String::as_str) {
        None | Some("newest") => false,
        Some("oldest") => true,
        Some(_) => return Err(ApiError::bad_request("invalid_query", "`order` must be `newest` or `oldest`")),
    };
    let query = AuditQuery {
        page: page_number(&params, "page", 1)?,
        per_page: page_number(&params, "per_page", 50)?,
        since: text("since"),
        until: text("until"),
        actor: text("actor"),
        action: text("action"),
        subject,
        case: text("case"),
        oldest_first,
    };
    let records = blocking(&state, move |s| s.list_audit(&query, &who)).await?;
    ok(StatusCode::OK, records)
}

#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", summary = "Verify the audit trail's hash chain",
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody), (status = 200, description = "the verdict, intact or not", body = AuditVerdict), (status = 400, body = ErrorBody)))]
pub async fn verify_audit(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let verdict = blocking(&state, move |s| s.verify_audit(&who)).await?;
    ok(StatusCode::OK, verdict)
}

#[utoipa::path(get, path = "/v1/audit/membership", tag = "audit",
    summary = "Who was on a watchlist at a given time, replayed from the audit trail",
    params(
        ("watchlist" = String, Query, description = "watchlist name"),
        ("on" = String, Query, description = "RFC 3339 time"),
    ),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, body = MembershipReport), (status = 400, body = ErrorBody)))]
pub async fn audit_membership(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let watchlist = params
        .get("watchlist")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("invalid_query", "`watchlist` is required"))?;
    let on = params
        .get("on")
        .and_then(|raw| humantime::parse_rfc3339_weak(raw).ok())
        .ok_or_else(|| ApiError::bad_request("invalid_query", "`on` must be an RFC 3339 time"))?;
    let report = blocking(&state, move |s| s.membership_on(&watchlist, on, &who)).await?;
    ok(StatusCode::OK, report)
}
