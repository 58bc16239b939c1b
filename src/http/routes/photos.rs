//! The routes that take photos: search, 1:1 verification, enrolment, and the enrolled face a reviewer compares.

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;

use super::{blocking, caller, heavy, is_json, ok, parse_id, parse_json, ApiResult, Form, RawBody};
use crate::http::schema::{
    EnrollForm, EnrollRefusal, EnrollReport, ErrorBody, ErrorDetail, PhotoResult, SearchForm, VerifyForm,
};
use crate::http::{ApiError, AppState};
use crate::service::{EnrollRequest, FaceChoice, SearchMode, SearchRequest, SearchResult, VerifyResult};

/// `POST /v1/search` with a JSON body: an embedding the caller already has, and the search options.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingSearch {
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
    checked_options(SearchRequest {
        mode,
        k: form.number("k")?,
        watchlists: (!watchlists.is_empty()).then_some(watchlists),
        min_quality: form.number("min_quality")?,
        min_face_px: form.number("min_face_px")?,
        checkpoint: form.text("checkpoint").map(str::to_owned),
        case: form.text("case").map(str::to_owned),
    })
}

/// The numeric options must be finite and in range: a JSON `1e999` reaches an `f32` as infinity, and a non-finite
/// `min_face_px` used to switch the small-face pass off without a word.
fn checked_options(options: SearchRequest) -> Result<SearchRequest, ApiError> {
    let refuse = |name: &str, range: &str| ApiError::bad_request("invalid_field", format!("`{name}` must be a finite number {range}"));
    if options.min_quality.is_some_and(|q| !(q.is_finite() && (0.0..=1.0).contains(&q))) {
        return Err(refuse("min_quality", "from 0 to 1"));
    }
    if options.min_face_px.is_some_and(|px| !(px.is_finite() && px >= 0.0)) {
        return Err(refuse("min_face_px", "of at least 0"));
    }
    Ok(options)
}

#[utoipa::path(post, path = "/v1/search", tag = "search",
    summary = "Search every face of a photo (or an embedding) against the watchlists",
    request_body(
        content((SearchForm = "multipart/form-data"), (EmbeddingSearch = "application/json")),
    ),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, body = SearchResult),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn search(State(state): State<AppState>, headers: HeaderMap, request: Request) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let result = if is_json(&headers) {
        let RawBody(body) = RawBody::from_request(request, &state).await?;
        let mut query: EmbeddingSearch = parse_json(&body)?;
        query.options = checked_options(query.options)?;
        blocking(&state, move |s| s.search_embedding(&query.embedding, &query.options, &who)).await?
    } else {
        let form = Form::read(request, &state).await?;
        let options = search_options(&form)?;
        if let Some(raw) = form.text("embedding") {
            let embedding: Vec<f32> = parse_json(raw.as_bytes())?;
            blocking(&state, move |s| s.search_embedding(&embedding, &options, &who)).await?
        } else {
            let photo = form.file("photo").ok_or_else(|| ApiError::bad_request("missing_photo", "send a `photo` file or an `embedding`"))?;
            let (request, analyst) = (options.clone(), who.clone());
            let analysis = heavy(&state, move |s| s.analyze_probe(&photo, &request, &analyst)).await?;
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

#[utoipa::path(post, path = "/v1/verify", tag = "search", summary = "1:1 verification: photo vs photo, or photo vs subject",
    request_body(content = VerifyForm, content_type = "multipart/form-data"),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, body = VerifyResult),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn verify(State(state): State<AppState>, headers: HeaderMap, request: Request) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let form = Form::read(request, &state).await?;
    let result = match (form.file("photo_a"), form.file("photo_b"), form.file("photo"), form.number::<i64>("subject_id")?) {
        (Some(a), Some(b), _, _) => heavy(&state, move |s| s.verify_photos(&a, &b, &who)).await?,
        (_, _, Some(photo), Some(subject)) => heavy(&state, move |s| s.verify_subject(&photo, subject, &who)).await?,
        _ => return Err(ApiError::bad_request("missing_photo", "send `photo_a` and `photo_b`, or `photo` and `subject_id`")),
    };
    ok(StatusCode::OK, result)
}

#[utoipa::path(post, path = "/v1/subjects/{id}/faces", tag = "subjects", summary = "Enroll one or more photos of the subject",
    params(("id" = i64, Path, description = "subject id")),
    request_body(content = EnrollForm, content_type = "multipart/form-data"),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 201, description = "at least one photo enrolled", body = EnrollReport),
        (status = 422, description = "one photo refused (its error), or every photo of several refused (the report)", body = EnrollRefusal),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn enroll(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>, request: Request) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let subject_id = parse_id(&id, "subject")?;
    let form = Form::read(request, &state).await?;
    let face: Option<usize> = form.number("face")?;
    let photos: Vec<_> = form.files.iter().filter(|(n, _)| n.starts_with("photo")).map(|(_, b)| b.clone()).collect();
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
                results.push(PhotoResult::Enrolled {
                    template: outcome.template,
                    quality: outcome.quality,
                    faces_in_photo: outcome.faces_in_photo,
                });
            }
            // One photo: its refusal is the answer. Several: report each, so one bad photo does not hide the rest.
            Err(e) if single => return Err(e),
            Err(e) => results.push(PhotoResult::Refused { error: ErrorDetail { code: e.code.to_owned(), message: e.message } }),
        }
    }
    let status = if enrolled > 0 { StatusCode::CREATED } else { StatusCode::UNPROCESSABLE_ENTITY };
    ok(status, EnrollReport { subject_id, enrolled, results })
}

#[utoipa::path(get, path = "/v1/subjects/{id}/faces/{template}/thumbnail", tag = "subjects",
    summary = "The aligned face stored with a template (a view of a subject's photo: audited)",
    params(("id" = i64, Path, description = "subject id"), ("template" = i64, Path, description = "template id")),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, content_type = "image/jpeg", body = Vec<u8>),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn thumbnail(State(state): State<AppState>, headers: HeaderMap, Path((id, template)): Path<(String, String)>) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let subject_id = parse_id(&id, "subject")?;
    let template_id = parse_id(&template, "template")?;
    let jpeg = blocking(&state, move |s| s.thumbnail(subject_id, template_id, &who)).await?;
    match jpeg {
        Some(bytes) => Ok(([(header::CONTENT_TYPE, "image/jpeg")], bytes).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "thumbnail_not_found", "this template was enrolled without a thumbnail")),
    }
}
