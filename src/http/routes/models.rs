//! The routes of model migrations (admin): start moving the gallery to another recognizer, follow its progress and
//! the faces it could not remake, switch one that waits for a decision, or cancel. Each calls one core function.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};

use super::{blocking, caller, ok, parse_id, parse_json, ApiResult, RawBody};
use crate::gallery::ModelMigration;
use crate::http::schema::{ErrorBody, Items};
use crate::http::{ApiError, AppState};
use crate::service::{MigrationReport, MigrationRequest};

#[utoipa::path(post, path = "/v1/models/migrations", tag = "models",
    summary = "Start moving the gallery to another recognizer",
    description = "The new model's templates are made in the background from each enrolment's kept face region while \
                   the current model keeps serving; when every face is done the service builds the new model's index \
                   and switches to it. Faces the new model refuses (quality gate) and templates without a kept face \
                   are listed in the migration's `failures`; if a subject would be left with no template of the new \
                   model the migration waits in state `ready` unless `accept_gaps` is true. One migration at a time \
                   (409 `migration_in_progress`). The new model's licence must be accepted like at start-up \
                   (422 `model_unavailable` otherwise).",
    request_body = MigrationRequest,
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 202, body = ModelMigration),
        (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn start_migration(State(state): State<AppState>, headers: HeaderMap, RawBody(body): RawBody) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let request: MigrationRequest = parse_json(&body)?;
    // Loading a recognizer reads and hashes its model file: not on the async runtime.
    let started = blocking(&state, move |s| s.start_migration(&request, &who)).await?;
    ok(StatusCode::ACCEPTED, started)
}

#[utoipa::path(get, path = "/v1/models/migrations", tag = "models", summary = "Every model migration, newest first",
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, body = Items<ModelMigration>),
    ))]
pub async fn list_migrations(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let items = blocking(&state, move |s| s.list_migrations(&who)).await?;
    ok(StatusCode::OK, Items { items })
}

#[utoipa::path(get, path = "/v1/models/migrations/{id}", tag = "models",
    summary = "A migration's state and progress, with a page of the faces it could not remake",
    params(
        ("id" = i64, Path, description = "migration id"),
        ("page" = Option<usize>, Query, description = "page of failures, from 1 (default 1)"),
        ("per_page" = Option<usize>, Query, description = "failures per page (default 100, at most 1000)"),
    ),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, body = MigrationReport),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
    ))]
pub async fn get_migration(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let id = parse_id(&id, "migration")?;
    let number = |name: &str, default: usize| -> Result<usize, ApiError> {
        match params.get(name).filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(raw) => raw
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request("invalid_query", format!("`{name}`: not a whole number"))),
        }
    };
    let (page, per_page) = (number("page", 1)?, number("per_page", 100)?);
    let report = blocking(&state, move |s| s.migration(id, page, per_page, &who)).await?;
    ok(StatusCode::OK, report)
}

#[utoipa::path(post, path = "/v1/models/migrations/{id}/switch", tag = "models",
    summary = "Switch a migration that waits for a decision, accepting that the listed subjects have no template of the new model",
    params(("id" = i64, Path, description = "migration id")),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, body = ModelMigration),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn switch_migration(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let id = parse_id(&id, "migration")?;
    let switched = blocking(&state, move |s| s.switch_migration(id, &who)).await?;
    ok(StatusCode::OK, switched)
}

#[utoipa::path(post, path = "/v1/models/migrations/{id}/cancel", tag = "models",
    summary = "Stop a migration; the serving model stays, the templates made so far are kept for a later migration",
    params(("id" = i64, Path, description = "migration id")),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, body = ModelMigration),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn cancel_migration(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let id = parse_id(&id, "migration")?;
    let cancelled = blocking(&state, move |s| s.cancel_migration(id, &who)).await?;
    ok(StatusCode::OK, cancelled)
}
