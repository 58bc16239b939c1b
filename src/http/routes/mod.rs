//! The route table, registered together with each route's OpenAPI operation so the served document and the served
//! routes cannot drift, and what every handler shares: the caller, running core calls off the async runtime, and
//! reading bodies into the API's error shape.

mod operations;
mod photos;
mod records;

pub use operations::OpenApiJson;

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, AppState};
use crate::service::{Principal, Role, ServiceError, WatchlistService};

/// The document's frame; the operations and schemas come from the handlers and their types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "facematch",
        version = "1",
        description = "Face search against watchlists. Every candidate is for a person to review, never a verdict. \
                       Callers name themselves in `x-facematch-actor`, `x-facematch-role` and `x-facematch-purpose`; \
                       every search, view and change is audited with them. Errors: `{\"error\":{\"code\",\"message\"}}`."
    ),
    tags(
        (name = "search", description = "Searches and 1:1 comparisons"),
        (name = "subjects", description = "Subjects and their enrolled faces"),
        (name = "watchlists", description = "Watchlists"),
        (name = "audit", description = "The tamper-evident audit trail"),
        (name = "operations", description = "Health, readiness, metrics, this document")
    )
)]
struct ApiFrame;

/// The router and the OpenAPI document of every route it serves.
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, document) = OpenApiRouter::with_openapi(ApiFrame::openapi())
        .routes(routes!(operations::healthz))
        .routes(routes!(operations::readyz))
        .routes(routes!(operations::metrics))
        .routes(routes!(operations::openapi))
        .routes(routes!(photos::search))
        .routes(routes!(photos::verify))
        .routes(routes!(records::list_subjects, records::create_subject))
        .routes(routes!(records::get_subject, records::update_subject, records::delete_subject))
        .routes(routes!(records::list_faces, photos::enroll))
        .routes(routes!(records::delete_face))
        .routes(routes!(photos::thumbnail))
        .routes(routes!(records::list_watchlists, records::create_watchlist))
        .routes(routes!(records::get_watchlist, records::delete_watchlist))
        .routes(routes!(records::stats))
        .routes(routes!(records::list_audit))
        .routes(routes!(records::verify_audit))
        .split_for_parts();
    let router = router
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
        });
    (router, document)
}

type ApiResult = Result<Response, ApiError>;

/// Who is calling and why. Until API keys with roles land, callers name themselves in headers; the audit trail
/// records exactly what they said, and a role that is not one of the service's roles is refused.
fn caller(headers: &HeaderMap) -> Result<Principal, ApiError> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|s| !s.is_empty());
    let role = match get("x-facematch-role") {
        None => Role::Unauthenticated,
        Some(text) => text.parse::<Role>().map_err(|e| ApiError::bad_request("invalid_role", e.to_string()))?,
    };
    if role == Role::System {
        return Err(ApiError::bad_request("invalid_role", "role `system` is the service's own"));
    }
    Ok(Principal::new(
        get("x-facematch-actor").unwrap_or("anonymous").chars().take(200).collect::<String>(),
        role,
        get("x-facematch-purpose").map(|p| p.chars().take(500).collect()),
    ))
}

/// Runs a quick service call (store reads and writes) on the blocking pool.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&WatchlistService) -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ApiError> {
    let service = state.service.clone();
    tokio::task::spawn_blocking(move || f(&service))
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
        .map_err(ApiError::from)
}

/// Runs a photo analysis through admission control.
async fn heavy<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&WatchlistService) -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ApiError> {
    let service = state.service.clone();
    state.admission.run(move || f(&service)).await?.map_err(ApiError::from)
}

/// A whole request body, refused with the API's JSON error (413 `request_too_large` past the body limit) rather
/// than axum's plain-text rejection.
struct RawBody(Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<RawBody, ApiError> {
        Bytes::from_request(request, state).await.map(RawBody).map_err(|e| {
            let status = e.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "request_too_large" } else { "invalid_body" };
            ApiError::new(status, code, e.body_text())
        })
    }
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request("invalid_json", format!("request body: {e}")))
}

fn parse_id(raw: &str, what: &str) -> Result<i64, ApiError> {
    raw.parse().map_err(|_| ApiError::bad_request("invalid_id", format!("{what} id `{raw}` is not an integer")))
}

fn ok<T: serde::Serialize>(status: StatusCode, value: T) -> ApiResult {
    Ok((status, Json(value)).into_response())
}

/// A multipart form held in memory: files by field name, text fields by name.
#[derive(Default)]
struct Form {
    files: Vec<(String, Bytes)>,
    texts: HashMap<String, Vec<String>>,
}

impl Form {
    async fn read(request: Request, state: &AppState) -> Result<Form, ApiError> {
        let is_multipart = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("multipart/form-data"));
        if !is_multipart {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected_multipart",
                "send photos as multipart/form-data",
            ));
        }
        let mut multipart = Multipart::from_request(request, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
        let mut form = Form::default();
        while let Some(field) = multipart.next_field().await? {
            let name = field.name().unwrap_or_default().to_string();
            if field.file_name().is_some() || name.starts_with("photo") {
                form.files.push((name, field.bytes().await?));
            } else {
                form.texts.entry(name).or_default().push(field.text().await?);
            }
        }
        Ok(form)
    }

    fn file(&self, name: &str) -> Option<Bytes> {
        self.files.iter().find(|(n, _)| n == name).map(|(_, b)| b.clone())
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.texts.get(name).and_then(|v| v.first()).map(String::as_str)
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        self.text(name)
            .map(|t| t.trim().parse().map_err(|_| ApiError::bad_request("invalid_field", format!("field `{name}` is not a number"))))
            .transpose()
    }
}
