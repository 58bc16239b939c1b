//! The route table, registered together with each route's OpenAPI operation so the served document and the served
//! routes cannot drift, and what every handler shares: the caller, running core calls off the async runtime, and
//! reading bodies into the API's error shape.

mod alerts;
mod hits;
mod jobs;
mod keys;
mod models;
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
use crate::service::{AuthFailure, Principal, ServiceError, WatchlistService};

/// The document's frame; the operations and schemas come from the handlers and their types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "facematch",
        version = "1",
        description = "Face search against watchlists. Every candidate is for a person to review, never a verdict. \
                       Every call but health, readiness and this document needs an API key \
                       (`Authorization: Bearer fmk_…`); its role decides what it may do, and every search, view and \
                       change is audited with the key's id and name and the purpose stated in `x-facematch-purpose`. Errors: `{\"error\":{\"code\",\"message\"}}`."
    ),
    tags(
        (name = "search", description = "Searches and 1:1 comparisons"),
        (name = "subjects", description = "Subjects and their enrolled faces"),
        (name = "watchlists", description = "Watchlists"),
        (name = "audit", description = "The tamper-evident audit trail"),
        (name = "hits", description = "Hits (alerts and candidates above their threshold) and their review by two people"),
        (name = "jobs", description = "Investigators' bulk search jobs: many photos searched in the background, hits for review"),
        (name = "alerts", description = "Hits as they happen: a stream of server-sent events, and signed webhooks (admin)"),
        (name = "keys", description = "API keys and their roles (admin)"),
        (name = "models", description = "Moving the gallery to another recognizer without losing it (admin)"),
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
        .routes(routes!(records::get_watchlist, records::update_watchlist, records::delete_watchlist))
        .routes(routes!(records::stats))
        .routes(routes!(records::list_audit))
        .routes(routes!(records::verify_audit))
        .routes(routes!(records::audit_membership))
        .routes(routes!(keys::whoami))
        .routes(routes!(keys::list_keys, keys::create_key))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(keys::rotate_key))
        .routes(routes!(hits::list_hits))
        .routes(routes!(hits::get_hit))
        .routes(routes!(hits::probe))
        .routes(routes!(hits::decide))
        .routes(routes!(hits::acknowledge))
        .routes(routes!(hits::export_confirmed))
        .routes(routes!(jobs::list_jobs, jobs::submit_job))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(jobs::job_results))
        .routes(routes!(alerts::stream))
        .routes(routes!(alerts::list_webhooks, alerts::create_webhook))
        .routes(routes!(alerts::delete_webhook))
        .routes(routes!(alerts::deliveries))
        .routes(routes!(models::list_migrations, models::start_migration))
        .routes(routes!(models::get_migration))
        .routes(routes!(models::switch_migration))
        .routes(routes!(models::cancel_migration))
        .split_for_parts();
    let router = router
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
        });
    (router, document)
}

type ApiResult = Result<Response, ApiError>;

/// Who is calling and why: the holder of the API key in `Authorization: Bearer fmk_…`, with the purpose they
/// state in `x-facematch-purpose` (required for investigation-mode searches). The core checks the key (on the
/// blocking pool: a first presentation costs an argon2id verification) and every operation checks the role.
async fn caller(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let key = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let text = value.to_str().map_err(|_| ApiError::from(ServiceError::from(AuthFailure::Malformed)))?;
            let (scheme, key) = text.trim().split_once(' ').unwrap_or((text, ""));
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(ServiceError::from(AuthFailure::Malformed).into());
            }
            Some(key.trim().to_owned())
        }
    };
    let purpose = match headers.get("x-facematch-purpose") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| ApiError::from(ServiceError::InvalidPurpose { max_chars: 200 }))?
                .to_owned(),
        ),
    };
    blocking(state, move |service| service.authenticate(key.as_deref(), purpose)).await
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

/// A whole JSON request body, refused with the API's JSON error (413 `request_too_large` past the body limit) rather
/// than axum's plain-text rejection. Its content type must say JSON (415 `expected_json`): a browser sends
/// `text/plain` cross-origin without a preflight, `application/json` never.
struct RawBody(Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<RawBody, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected_json",
                "send this body as application/json",
            ));
        }
        Bytes::from_request(request, state).await.map(RawBody).map_err(|e| {
            let status = e.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "request_too_large" } else { "invalid_body" };
            ApiError::new(status, code, e.body_text())
        })
    }
}

/// Whether the request says its body is JSON (`application/json`, parameters allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
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

    /// A numeric field; `NaN` and infinities, which Rust's float parsing accepts, are refused like any other
    /// non-number rather than silently disabling the setting they feed.
    fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        let refuse = || ApiError::bad_request("invalid_field", format!("field `{name}` is not a finite number"));
        self.text(name)
            .map(|t| {
                let t = t.trim();
                let lower = t.to_ascii_lowercase();
                if lower.contains("nan") || lower.contains("inf") {
                    return Err(refuse());
                }
                t.parse().map_err(|_| refuse())
            })
            .transpose()
    }
}
