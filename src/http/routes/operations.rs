//! Health, readiness, Prometheus metrics and the OpenAPI document.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};

use super::{blocking, ok, ApiResult};
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

#[utoipa::path(get, path = "/readyz", tag = "operations", summary = "Readiness: models loaded, index ready",
    responses((status = 200, body = Readiness), (status = 503, body = ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult {
    match blocking(&state, |s| s.index_state()).await {
        Ok(index) => {
            ok(StatusCode::OK, Readiness { status: "ready".into(), model: state.service.model_id().to_owned(), index })
        }
        Err(e) => Ok(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", e.message).into_response()),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations", summary = "Prometheus metrics",
    responses((status = 200, content_type = "text/plain", body = String), (status = 500, body = ErrorBody)))]
pub async fn metrics(State(state): State<AppState>) -> ApiResult {
    let index = blocking(&state, |s| s.index_state()).await?;
    let text = state.metrics.render(&[
        ("facematch_gallery_templates", "Live templates in the ANN index.", index.stats.live as f64),
        ("facematch_index_deleted", "Deleted templates still held as tombstones.", index.stats.deleted as f64),
        ("facematch_index_memory_bytes", "ANN index memory.", index.stats.memory_bytes as f64),
        ("facematch_gallery_generation", "Store change counter.", index.generation as f64),
    ]);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations", summary = "This document",
    responses((status = 200, content_type = "application/json", body = Object)))]
pub async fn openapi(Extension(document): Extension<OpenApiJson>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document.0.to_string())
}
