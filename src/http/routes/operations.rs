//! Health, readiness, Prometheus metrics and the OpenAPI document.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};

use super::{blocking, caller, ok, ApiResult};
use crate::service::Permission;
use crate::http::schema::{ErrorBody, Health, Readiness};
use crate::http::{ApiError, AppState};

/// The served OpenAPI document, rendered once when the router is built.
#[derive(Debug, Clone)]
pub struct OpenApiJson(pub Arc<str>);

#[utoipa::path(get, path = "/healthz", tag = "operations", summary = "Liveness",
    responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    summary = "Readiness: models loaded, index ready, store writable",
    description = "503 `storage_unavailable` while the store cannot take writes (full disk, read-only storage); \
        ready again, without a restart, once a write succeeds.",
    responses((status = 200, body = Readiness), (status = 503, body = ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult {
    match blocking(&state, |s| s.storage_ready().and_then(|()| s.index_state())).await {
        Ok(index) => {
            ok(StatusCode::OK, Readiness { status: "ready".into(), model: state.service.model_id().to_string(), index })
        }
        Err(e) if e.code == "storage_unavailable" => Ok(e.into_response()),
        Err(e) => Ok(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", e.message).into_response()),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    summary = "Prometheus metrics (an admin key, unless `access.open_metrics`)",
    responses(
        (status = 200, content_type = "text/plain", body = String), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody), (status = 500, body = ErrorBody),
    ))]
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    if !state.service.access().open_metrics {
        caller(&state, &headers).await?.require(Permission::ReadStats)?;
    }
    let index = blocking(&state, |s| s.index_state()).await?;
    let text = state.metrics.render(&[
        ("facematch_gallery_templates", "Live templates in the ANN index.", index.stats.live as f64),
        ("facematch_index_deleted", "Deleted templates still held as tombstones.", index.stats.deleted as f64),
        ("facematch_index_memory_bytes", "ANN index memory.", index.stats.memory_bytes as f64),
        ("facematch_gallery_generation", "Store change counter.", index.generation as f64),
    ]);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations",
    summary = "This document (any valid key, unless `access.open_openapi`, the default)",
    responses(
        (status = 200, content_type = "application/json", body = Object), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody),
    ))]
pub async fn openapi(State(state): State<AppState>, headers: HeaderMap, Extension(document): Extension<OpenApiJson>) -> ApiResult {
    if !state.service.access().open_openapi {
        caller(&state, &headers).await?;
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], document.0.to_string()).into_response())
}
