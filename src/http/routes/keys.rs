//! The routes of API keys: who the calling key is (any key), and the admin's: create (the only answer that holds
//! the secret), list, revoke, rotate.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use super::{blocking, caller, ok, parse_json, ApiResult, RawBody};
use crate::gallery::ApiKey;
use crate::http::schema::{ErrorBody, Items};
use crate::http::AppState;
use crate::service::{IssuedKey, KeyRequest, Permission, Role};

/// The calling key as the core sees it: a client (the console) offers only what `permissions` allows; the core
/// checks every call all the same.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Identity {
    pub key_id: Option<String>,
    /// The key holder's name.
    pub name: String,
    pub role: Role,
    /// The watchlists the key is limited to; absent: all.
    pub watchlists: Option<Vec<String>>,
    /// What the role may do, by stable name (`search_identification`, `review_hits`, …).
    pub permissions: Vec<&'static str>,
}

#[utoipa::path(get, path = "/v1/me", tag = "keys", summary = "The calling key: its holder, role, watchlists and permissions",
    responses(
        (status = 200, body = Identity),
        (status = 401, body = ErrorBody), (status = 429, body = ErrorBody),
    ))]
pub async fn whoami(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let permissions = Permission::ALL.into_iter().filter(|p| who.role.may(*p)).map(Permission::code).collect();
    ok(StatusCode::OK, Identity { key_id: who.key_id, name: who.name, role: who.role, watchlists: who.watchlists, permissions })
}

#[utoipa::path(post, path = "/v1/keys", tag = "keys", summary = "Create an API key; its secret is shown only in this answer",
    request_body = KeyRequest,
    responses(
        (status = 201, body = IssuedKey),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody),
    ))]
pub async fn create_key(State(state): State<AppState>, headers: HeaderMap, RawBody(body): RawBody) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let request: KeyRequest = parse_json(&body)?;
    let issued = blocking(&state, move |s| s.create_key(request, &who)).await?;
    ok(StatusCode::CREATED, issued)
}

#[utoipa::path(get, path = "/v1/keys", tag = "keys", summary = "List API keys (never their secrets)",
    responses(
        (status = 200, body = Items<ApiKey>),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
    ))]
pub async fn list_keys(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let items = blocking(&state, move |s| s.list_keys(&who)).await?;
    ok(StatusCode::OK, Items { items })
}

#[utoipa::path(post, path = "/v1/keys/{id}/revoke", tag = "keys", summary = "Revoke an API key at once",
    params(("id" = String, Path, description = "the key's public id")),
    responses(
        (status = 200, body = ApiKey),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 429, body = ErrorBody),
    ))]
pub async fn revoke_key(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let key = blocking(&state, move |s| s.revoke_key(&id, &who)).await?;
    ok(StatusCode::OK, key)
}

#[utoipa::path(post, path = "/v1/keys/{id}/rotate", tag = "keys",
    summary = "Replace an API key with a new secret of the same name, role, watchlists and expiry",
    params(("id" = String, Path, description = "the key's public id")),
    responses(
        (status = 201, body = IssuedKey),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 429, body = ErrorBody),
    ))]
pub async fn rotate_key(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let issued = blocking(&state, move |s| s.rotate_key(&id, &who)).await?;
    ok(StatusCode::CREATED, issued)
}
