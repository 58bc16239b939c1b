//! Route table and handlers: parse the request, run the service call off the async runtime, answer JSON.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState};
use crate::gallery::{NewSubject, NewWatchlist, SubjectPatch, SubjectQuery};
use crate::service::{Actor, EnrollRequest, FaceChoice, SearchMode, SearchRequest, ServiceError, WatchlistService};

/// Every route, as documented in the OpenAPI document (a test keeps the two equal).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.json"),
    ("post", "/v1/search"),
    ("post", "/v1/verify"),
    ("get", "/v1/subjects"),
    ("post", "/v1/subjects"),
    ("get", "/v1/subjects/{id}"),
    ("patch", "/v1/subjects/{id}"),
    ("delete", "/v1/subjects/{id}"),
    ("get", "/v1/subjects/{id}/faces"),
    ("post", "/v1/subjects/{id}/faces"),
    ("delete", "/v1/subjects/{id}/faces/{template}"),
    ("get", "/v1/subjects/{id}/faces/{template}/thumbnail"),
    ("get", "/v1/watchlists"),
    ("post", "/v1/watchlists"),
    ("get", "/v1/watchlists/{name}"),
    ("delete", "/v1/watchlists/{name}"),
    ("get", "/v1/stats"),
    ("get", "/v1/audit"),
    ("get", "/v1/audit/verify"),
];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/search", post(search))
        .route("/v1/verify", post(verify))
        .route("/v1/subjects", get(list_subjects).post(create_subject))
        .route("/v1/subjects/{id}", get(get_subject).patch(update_subject).delete(delete_subject))
        .route("/v1/subjects/{id}/faces", get(list_faces).post(enroll))
        .route("/v1/subjects/{id}/faces/{template}", delete(delete_face))
        .route("/v1/subjects/{id}/faces/{template}/thumbnail", get(thumbnail))
        .route("/v1/watchlists", get(list_watchlists).post(create_watchlist))
        .route("/v1/watchlists/{name}", get(get_watchlist).delete(delete_watchlist))
        .route("/v1/stats", get(stats))
        .route("/v1/audit", get(list_audit))
        .route("/v1/audit/verify", get(verify_audit))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
        })
}

type ApiResult = Result<Response, ApiError>;

/// Who is calling and why. Until API keys with roles land, callers name themselves in headers; the audit trail
/// records exactly what they said.
fn actor(headers: &HeaderMap) -> Actor {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|s| !s.is_empty());
    Actor {
        name: get("x-facematch-actor").unwrap_or("anonymous").chars().take(200).collect(),
        role: get("x-facematch-role").unwrap_or("unauthenticated").chars().take(50).collect(),
        purpose: get("x-facematch-purpose").map(|p| p.chars().take(500).collect()),
    }
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

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> ApiResult {
    match blocking(&state, |s| s.index_state()).await {
        Ok(index) => ok(StatusCode::OK, json!({ "status": "ready", "model": state.service.model_id(), "index": index })),
        Err(e) => Ok(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", e.message).into_response()),
    }
}

async fn metrics(State(state): State<AppState>) -> ApiResult {
    let index = blocking(&state, |s| s.index_state()).await?;
    let text = state.metrics.render(&[
        ("facematch_gallery_templates", "Live templates in the ANN index.", index.stats.live as f64),
        ("facematch_index_deleted", "Deleted templates still held as tombstones.", index.stats.deleted as f64),
        ("facematch_index_memory_bytes", "ANN index memory.", index.stats.memory_bytes as f64),
        ("facematch_gallery_generation", "Store change counter.", index.generation as f64),
    ]);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], super::openapi::DOCUMENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingSearch {
    embedding: Vec<f32>,
    #[serde(flatten)]
    options: SearchRequest,
}

fn search_options(form: &Form) -> Result<SearchRequest, ApiError> {
    let mode = match form.text("mode") {
        None | Some("identification") => SearchMode::Identification,
        Some("investigation") => SearchMode::Investigation,
        Some(other) => {
            return Err(ApiError::bad_request("invalid_field", format!("mode `{other}`: use identification or investigation")))
        }
    };
    let watchlists: Vec<String> = form
        .texts
        .get("watchlists")
        .map(|v| v.iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
        .unwrap_or_default();
    Ok(SearchRequest {
        mode,
        k: form.number("k")?,
        watchlists: (!watchlists.is_empty()).then_some(watchlists),
        min_quality: form.number("min_quality")?,
        min_face_px: form.number("min_face_px")?,
    })
}

async fn search(State(state): State<AppState>, headers: HeaderMap, request: Request) -> ApiResult {
    let who = actor(&headers);
    let is_json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    let result = if is_json {
        let body = Bytes::from_request(request, &state).await.map_err(|e| ApiError::new(e.status(), "invalid_body", e.body_text()))?;
        let query: EmbeddingSearch = parse_json(&body)?;
        blocking(&state, move |s| s.search_embedding(&query.embedding, &query.options, &who)).await?
    } else {
        let form = Form::read(request, &state).await?;
        let options = search_options(&form)?;
        if let Some(raw) = form.text("embedding") {
            let embedding: Vec<f32> = parse_json(raw.as_bytes())?;
            blocking(&state, move |s| s.search_embedding(&embedding, &options, &who)).await?
        } else {
            let photo = form.file("photo").ok_or_else(|| ApiError::bad_request("missing_photo", "send a `photo` file or an `embedding`"))?;
            let request = options.clone();
            let analysis = heavy(&state, move |s| s.analyze_probe(&photo, &request)).await?;
            blocking(&state, move |s| s.search_analysis(analysis, &options, &who)).await?
        }
    };
    let t = &result.timings_ms;
    for (stage, ms) in [("decode", t.decode_ms), ("detect", t.detect_ms), ("align", t.align_ms), ("embed", t.embed_ms), ("search", result.search_ms)] {
        if ms > 0.0 {
            state.metrics.observe_stage(stage, ms / 1000.0);
        }
    }
    ok(StatusCode::OK, result)
}

async fn verify(State(state): State<AppState>, headers: HeaderMap, request: Request) -> ApiResult {
    let who = actor(&headers);
    let form = Form::read(request, &state).await?;
    let result = match (form.file("photo_a"), form.file("photo_b"), form.file("photo"), form.number::<i64>("subject_id")?) {
        (Some(a), Some(b), _, _) => heavy(&state, move |s| s.verify_photos(&a, &b, &who)).await?,
        (_, _, Some(photo), Some(subject)) => heavy(&state, move |s| s.verify_subject(&photo, subject, &who)).await?,
        _ => return Err(ApiError::bad_request("missing_photo", "send `photo_a` and `photo_b`, or `photo` and `subject_id`")),
    };
    ok(StatusCode::OK, result)
}

async fn create_subject(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let who = actor(&headers);
    let new: NewSubject = parse_json(&body)?;
    let subject = blocking(&state, move |s| {
        let subject = s.store().create_subject(new)?;
        s.audit(&who, "create_subject", Some(format!("subject/{}", subject.id)), json!({ "watchlist": subject.watchlist }))?;
        Ok(subject)
    })
    .await?;
    ok(StatusCode::CREATED, subject)
}

async fn list_subjects(State(state): State<AppState>, Query(params): Query<HashMap<String, String>>) -> ApiResult {
    let number = |name: &str, default: usize| -> Result<usize, ApiError> {
        params
            .get(name)
            .map(|v| v.parse().map_err(|_| ApiError::bad_request("invalid_query", format!("`{name}` is not a number"))))
            .unwrap_or(Ok(default))
    };
    let query = SubjectQuery {
        watchlist: params.get("watchlist").cloned().filter(|s| !s.is_empty()),
        q: params.get("q").cloned().filter(|s| !s.is_empty()),
        page: number("page", 1)?,
        per_page: number("per_page", 50)?,
    };
    let page = blocking(&state, move |s| Ok(s.store().list_subjects(&query)?)).await?;
    ok(StatusCode::OK, page)
}

async fn get_subject(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id, "subject")?;
    let subject = blocking(&state, move |s| Ok(s.store().get_subject(id)?)).await?;
    ok(StatusCode::OK, subject)
}

async fn update_subject(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let who = actor(&headers);
    let id = parse_id(&id, "subject")?;
    let patch: SubjectPatch = parse_json(&body)?;
    let subject = blocking(&state, move |s| s.update_subject(id, patch, &who)).await?;
    ok(StatusCode::OK, subject)
}

async fn delete_subject(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let who = actor(&headers);
    let id = parse_id(&id, "subject")?;
    let removed = blocking(&state, move |s| s.delete_subject(id, &who)).await?;
    ok(StatusCode::OK, json!({ "deleted": id, "templates_removed": removed }))
}

async fn list_faces(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id, "subject")?;
    let templates = blocking(&state, move |s| Ok(s.store().list_templates(id)?)).await?;
    ok(StatusCode::OK, json!({ "items": templates }))
}

async fn enroll(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>, request: Request) -> ApiResult {
    let who = actor(&headers);
    let subject_id = parse_id(&id, "subject")?;
    let form = Form::read(request, &state).await?;
    let face: Option<usize> = form.number("face")?;
    let photos: Vec<Bytes> = form.files.iter().filter(|(n, _)| n.starts_with("photo")).map(|(_, b)| b.clone()).collect();
    if photos.is_empty() {
        return Err(ApiError::bad_request("missing_photo", "send one or more `photo` files"));
    }
    let single = photos.len() == 1;
    let mut results = Vec::with_capacity(photos.len());
    let mut enrolled = 0;
    for photo in photos {
        let who = who.clone();
        let face = face.map(FaceChoice::Index).unwrap_or(FaceChoice::Only);
        let request = EnrollRequest { subject_id, photo: photo.to_vec(), face };
        match heavy(&state, move |s| s.enroll(&request, &who)).await {
            Ok(outcome) => {
                enrolled += 1;
                results.push(json!({ "status": "enrolled", "template": outcome.template, "quality": outcome.quality, "faces_in_photo": outcome.faces_in_photo }));
            }
            // One photo: its refusal is the answer. Several: report each, so one bad photo does not hide the rest.
            Err(e) if single => return Err(e),
            Err(e) => results.push(json!({ "status": "refused", "error": { "code": e.code, "message": e.message } })),
        }
    }
    let status = if enrolled > 0 { StatusCode::CREATED } else { StatusCode::UNPROCESSABLE_ENTITY };
    ok(status, json!({ "subject_id": subject_id, "enrolled": enrolled, "results": results }))
}

async fn delete_face(State(state): State<AppState>, headers: HeaderMap, Path((id, template)): Path<(String, String)>) -> ApiResult {
    let who = actor(&headers);
    let subject_id = parse_id(&id, "subject")?;
    let template_id = parse_id(&template, "template")?;
    let removed = blocking(&state, move |s| s.delete_template(subject_id, template_id, &who)).await?;
    if !removed {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "template_not_found", format!("subject {subject_id} has no template {template_id}")));
    }
    ok(StatusCode::OK, json!({ "deleted": template_id }))
}

async fn thumbnail(State(state): State<AppState>, headers: HeaderMap, Path((id, template)): Path<(String, String)>) -> ApiResult {
    let who = actor(&headers);
    let subject_id = parse_id(&id, "subject")?;
    let template_id = parse_id(&template, "template")?;
    let jpeg = blocking(&state, move |s| {
        let owner = s.store().template_owners(&[template_id])?;
        if owner.get(&template_id).map(|o| o.subject_id) != Some(subject_id) {
            return Err(ServiceError::Gallery(crate::gallery::GalleryError::NotFound {
                what: crate::gallery::Entity::Template,
                id: template_id.to_string(),
            }));
        }
        let jpeg = s.store().get_thumbnail(template_id)?;
        s.audit(&who, "view_thumbnail", Some(format!("subject/{subject_id}/faces/{template_id}")), json!({}))?;
        Ok(jpeg)
    })
    .await?;
    match jpeg {
        Some(bytes) => Ok(([(header::CONTENT_TYPE, "image/jpeg")], bytes).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "thumbnail_not_found", "this template was enrolled without a thumbnail")),
    }
}

async fn list_watchlists(State(state): State<AppState>) -> ApiResult {
    let items = blocking(&state, |s| Ok(s.store().list_watchlists()?)).await?;
    ok(StatusCode::OK, json!({ "items": items }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchlistBody {
    name: String,
    #[serde(default)]
    description: String,
    alert_fpir: Option<f64>,
}

async fn create_watchlist(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let who = actor(&headers);
    let body: WatchlistBody = parse_json(&body)?;
    let watchlist = blocking(&state, move |s| {
        let new = NewWatchlist {
            name: body.name,
            description: body.description,
            alert_fpir: body.alert_fpir.unwrap_or(s.config().default_alert_fpir),
        };
        let w = s.store().create_watchlist(new)?;
        s.audit(&who, "create_watchlist", Some(format!("watchlist/{}", w.name)), json!({ "alert_fpir": w.alert_fpir }))?;
        Ok(w)
    })
    .await?;
    ok(StatusCode::CREATED, watchlist)
}

async fn get_watchlist(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let w = blocking(&state, move |s| Ok(s.store().get_watchlist(&name)?)).await?;
    ok(StatusCode::OK, w)
}

async fn delete_watchlist(State(state): State<AppState>, headers: HeaderMap, Path(name): Path<String>) -> ApiResult {
    let who = actor(&headers);
    let deleted = name.clone();
    blocking(&state, move |s| {
        s.store().delete_watchlist(&name)?;
        s.audit(&who, "delete_watchlist", Some(format!("watchlist/{name}")), json!({}))?;
        Ok(())
    })
    .await?;
    ok(StatusCode::OK, json!({ "deleted": deleted }))
}

async fn stats(State(state): State<AppState>) -> ApiResult {
    let (gallery, index) = blocking(&state, |s| Ok((s.store().stats()?, s.index_state()?))).await?;
    ok(StatusCode::OK, json!({ "model": state.service.model_id(), "gallery": gallery, "index": index }))
}

async fn list_audit(State(state): State<AppState>, Query(params): Query<HashMap<String, String>>) -> ApiResult {
    let page = params.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let per_page = params.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(50);
    let records = blocking(&state, move |s| Ok(s.store().list_audit(page, per_page)?)).await?;
    ok(StatusCode::OK, records)
}

async fn verify_audit(State(state): State<AppState>) -> ApiResult {
    let rows = blocking(&state, |s| Ok(s.store().verify_audit_chain()?)).await?;
    ok(StatusCode::OK, json!({ "status": "intact", "rows_checked": rows }))
}
