//! The routes of investigators' bulk search jobs: submit (a multipart upload streamed to the job's folder, never
//! held whole in memory), list, read, cancel, and the per-photo results streamed as JSON lines or CSV. Each calls
//! the core with the caller.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use tokio::io::AsyncWriteExt;

use super::{blocking, caller, ok, parse_id, ApiResult};
use crate::gallery::{Job, JobPage, JobQuery, PhotoResult, ResultOrder};
use crate::http::schema::ErrorBody;
use crate::http::{ApiError, AppState};
use crate::service::{photo_line, JobRequest, StagedPart};

/// Results read from the store per step of the stream.
const RESULTS_PAGE: usize = 200;
/// Longest text field of a submission.
const MAX_FIELD_BYTES: usize = 1024;

/// `POST /v1/jobs` (multipart/form-data).
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub struct JobForm {
    /// The case the job is for (printable, at most 100 characters). Required.
    case: String,
    /// A watchlist to search; repeat the field for several (default: all of the caller's).
    watchlist: Option<String>,
    /// A candidate at or below this FPIR becomes a hit (default: each watchlist's alert FPIR).
    threshold_fpir: Option<f64>,
    /// Candidates kept per face (default 5, at most 50).
    k: Option<usize>,
    /// Days the photos and results are kept (default `jobs.retention_days`, 90).
    retention_days: Option<u32>,
    /// A photo; repeat for several.
    #[schema(value_type = String, format = Binary)]
    photo: Option<Vec<u8>>,
    /// A zip archive of photos; repeat for several.
    #[schema(value_type = String, format = Binary)]
    archive: Option<Vec<u8>>,
}

/// Removes a submission's folder unless the job was recorded.
struct FolderGuard(Option<std::path::PathBuf>);

impl Drop for FolderGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

fn multipart_error(e: multer::Error) -> ApiError {
    ApiError::bad_request("invalid_multipart", format!("multipart body: {e}"))
}

fn field_error(name: &str, problem: &str) -> ApiError {
    ApiError::bad_request("invalid_field", format!("field `{name}` {problem}"))
}

fn number<T: std::str::FromStr>(texts: &HashMap<String, Vec<String>>, name: &str) -> Result<Option<T>, ApiError> {
    texts
        .get(name)
        .and_then(|v| v.first())
        .map(|t| {
            let t = t.trim();
            let lower = t.to_ascii_lowercase();
            if lower.contains("nan") || lower.contains("inf") {
                return Err(field_error(name, "is not a finite number"));
            }
            t.parse().map_err(|_| field_error(name, "is not a finite number"))
        })
        .transpose()
}

#[utoipa::path(post, path = "/v1/jobs", tag = "jobs",
    summary = "Submit a bulk search job: photos and zip archives searched in investigation mode in the background",
    request_body(content = JobForm, content_type = "multipart/form-data"),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 202, description = "queued; refused members are listed in `refusals`", body = Job),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn submit_job(State(state): State<AppState>, headers: HeaderMap, request: Request) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !content_type.starts_with("multipart/form-data") {
        return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected_multipart", "send a job as multipart/form-data"));
    }
    let boundary = multer::parse_boundary(content_type).map_err(multipart_error)?;
    let submitter = who.clone();
    let (folder, path) = blocking(&state, move |s| s.new_job_folder(&submitter)).await?;
    let mut guard = FolderGuard(Some(path.clone()));
    let max_photo = state.service.pipeline().limits().max_bytes as u64;
    let max_job = state.service.jobs_config().max_bytes;
    // multer over the raw body rather than axum's extractor, whose limit is the one-request body limit: a job's
    // upload is bounded by `jobs.max_bytes` below and by the edge (`drain.rs`).
    let mut multipart = multer::Multipart::new(request.into_body().into_data_stream(), boundary);
    let mut texts: HashMap<String, Vec<String>> = HashMap::new();
    let mut parts = Vec::new();
    let mut total = 0u64;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name != "photo" && name != "archive" {
            let mut text = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                text.extend_from_slice(&chunk);
                if text.len() > MAX_FIELD_BYTES {
                    return Err(field_error(&name, "is too long"));
                }
            }
            let text = String::from_utf8(text).map_err(|_| field_error(&name, "is not utf-8 text"))?;
            texts.entry(name).or_default().push(text);
            continue;
        }
        let number = parts.len();
        let sent = field.file_name().map(str::to_owned).unwrap_or_else(|| format!("{name}-{number}"));
        let file = format!("u{number}");
        let mut out = tokio::fs::File::create(path.join(&file)).await.map_err(|e| ApiError::internal(format!("job upload: {e}")))?;
        let mut written = 0u64;
        let mut over = false;
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            written += chunk.len() as u64;
            total += chunk.len() as u64;
            if total > max_job {
                return Err(crate::service::ServiceError::JobTooLarge { what: "bytes", limit: max_job }.into());
            }
            // A photo past the photo limit is refused alone; the rest of it is read and dropped.
            if name == "photo" && written > max_photo {
                over = true;
                continue;
            }
            out.write_all(&chunk).await.map_err(|e| ApiError::internal(format!("job upload: {e}")))?;
        }
        out.flush().await.map_err(|e| ApiError::internal(format!("job upload: {e}")))?;
        drop(out);
        parts.push(match (name.as_str(), over) {
            (_, true) => {
                let _ = tokio::fs::remove_file(path.join(&file)).await;
                StagedPart::Refused {
                    name: sent,
                    code: "too_large".into(),
                    message: format!("over the photo limit of {max_photo} bytes"),
                }
            }
            ("photo", false) => StagedPart::Photo { name: sent, file },
            _ => StagedPart::Archive { name: sent, file },
        });
    }
    let text = |name: &str| texts.get(name).and_then(|v| v.first()).map(|t| t.trim().to_owned());
    let case = text("case").filter(|c| !c.is_empty()).ok_or_else(|| ApiError::bad_request("missing_case", "send the job's `case`"))?;
    let watchlists: Vec<String> = ["watchlist", "watchlists"]
        .iter()
        .flat_map(|field| texts.get(*field).into_iter().flatten())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let request = JobRequest {
        case,
        watchlists: (!watchlists.is_empty()).then_some(watchlists),
        threshold_fpir: number(&texts, "threshold_fpir")?,
        k: number(&texts, "k")?,
        retention_days: number(&texts, "retention_days")?,
    };
    let job = blocking(&state, move |s| s.submit_job(request, &folder, parts, &who)).await?;
    guard.0 = None;
    ok(StatusCode::ACCEPTED, job)
}

#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", summary = "Jobs the caller may see, newest first, paged by id",
    params(
        ("state" = Option<String>, Query, description = "queued, running, done, cancelled or failed"),
        ("case" = Option<String>, Query, description = "only this case's jobs"),
        ("after" = Option<i64>, Query, description = "the `next_after` of the previous page"),
        ("limit" = Option<usize>, Query, description = "default 50, at most 200"),
    ),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, body = JobPage),
        (status = 400, body = ErrorBody),
    ))]
pub async fn list_jobs(State(state): State<AppState>, headers: HeaderMap, Query(params): Query<HashMap<String, String>>) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let text = |name: &str| params.get(name).filter(|v| !v.is_empty()).cloned();
    let query_error = |name: &str| ApiError::bad_request("invalid_query", format!("`{name}`: not a whole number"));
    let number = |name: &str| -> Result<Option<i64>, ApiError> {
        text(name).map(|raw| raw.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| query_error(name))).transpose()
    };
    let query = JobQuery {
        state: text("state")
            .map(|s| s.parse())
            .transpose()
            .map_err(|e: crate::gallery::GalleryError| ApiError::bad_request("invalid_query", format!("`state`: {e}")))?,
        case: text("case"),
        after: number("after")?,
        limit: number("limit")?.map_or(50, |n| n as usize),
        within: None,
    };
    let page = blocking(&state, move |s| s.list_jobs(query, &who)).await?;
    ok(StatusCode::OK, page)
}

#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", summary = "A job with its progress, ETA and first refusals",
    params(("id" = i64, Path, description = "job id")),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, body = Job),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn get_job(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let id = parse_id(&id, "job")?;
    let job = blocking(&state, move |s| s.get_job(id, &who)).await?;
    ok(StatusCode::OK, job)
}

#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    summary = "Stop a job between two photos (the photos done are kept); a job that ended is answered as it is",
    params(("id" = i64, Path, description = "job id")),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, body = Job),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn cancel_job(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let id = parse_id(&id, "job")?;
    let job = blocking(&state, move |s| s.cancel_job(id, &who)).await?;
    ok(StatusCode::OK, job)
}

#[utoipa::path(get, path = "/v1/jobs/{id}/results", tag = "jobs",
    summary = "A job's per-photo results, streamed: JSON lines (one photo a line) or CSV (one candidate a row); audited",
    params(
        ("id" = i64, Path, description = "job id"),
        ("format" = Option<String>, Query, description = "jsonl (default) or csv"),
        ("sort" = Option<String>, Query, description = "photo (submitted order, default) or best_score (best first)"),
    ),
    responses(
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 200, description = "one photo a line (jsonl), or one candidate a row (csv)",
            content((String = "application/x-ndjson"), (String = "text/csv"))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn job_results(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    let who = caller(&state, &headers).await?;
    let id = parse_id(&id, "job")?;
    let csv = match params.get("format").map(String::as_str) {
        None | Some("") | Some("jsonl") => false,
        Some("csv") => true,
        Some(other) => return Err(ApiError::bad_request("invalid_query", format!("`format` {other:?}: use jsonl or csv"))),
    };
    let order = match params.get("sort").map(String::as_str) {
        None | Some("") | Some("photo") => ResultOrder::Photo,
        Some("best_score") => ResultOrder::BestScore,
        Some(other) => return Err(ApiError::bad_request("invalid_query", format!("`sort` {other:?}: use photo or best_score"))),
    };
    let exporter = who.clone();
    let format = if csv { "csv" } else { "jsonl" };
    blocking(&state, move |s| s.export_job_results(id, format, &exporter)).await?;
    let stream = futures_util::stream::unfold(Some((state, who, 0usize)), move |step| async move {
        let (state, who, offset) = step?;
        let reader = who.clone();
        let page = blocking(&state, move |s| s.job_results(id, order, offset, RESULTS_PAGE, &reader)).await;
        let rows: Vec<PhotoResult> = match page {
            Ok(rows) => rows,
            Err(e) => return Some((Err(std::io::Error::other(e.message)), None)),
        };
        let mut text = String::new();
        if csv && offset == 0 {
            text.push_str(CSV_HEADER);
        }
        if rows.is_empty() {
            return if text.is_empty() { None } else { Some((Ok(Bytes::from(text)), None)) };
        }
        for row in &rows {
            let line = photo_line(row);
            if csv {
                csv_rows(&line, &mut text);
            } else {
                text.push_str(&line.to_string());
                text.push('\n');
            }
        }
        let next = (rows.len() == RESULTS_PAGE).then_some((state, who, offset + rows.len()));
        Some((Ok::<_, std::io::Error>(Bytes::from(text)), next))
    });
    let content_type = if csv { "text/csv; charset=utf-8" } else { "application/x-ndjson" };
    Ok(([(header::CONTENT_TYPE, content_type)], Body::from_stream(stream)).into_response())
}

const CSV_HEADER: &str = "photo,status,code,face,rank,watchlist,subject_id,display_name,similarity,fpir,hit_id\n";

/// A field quoted when it needs to be (RFC 4180), and never read as a formula by a spreadsheet.
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) && text.parse::<f64>().is_err() { format!("'{text}") } else { text.to_owned() };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

fn plain(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One row per candidate of a photo's line; a photo without candidates (refused, or no face) gets one row.
fn csv_rows(line: &serde_json::Value, out: &mut String) {
    let head = [plain(&line["photo"]), plain(&line["status"]), plain(&line["code"])];
    let mut wrote = false;
    for face in line["faces"].as_array().into_iter().flatten() {
        for candidate in face["candidates"].as_array().into_iter().flatten() {
            let fields = [
                plain(&face["face"]),
                plain(&candidate["rank"]),
                plain(&candidate["watchlist"]),
                plain(&candidate["subject_id"]),
                plain(&candidate["display_name"]),
                plain(&candidate["similarity"]),
                plain(&candidate["fpir"]),
                plain(&candidate["hit_id"]),
            ];
            let row: Vec<String> = head.iter().chain(fields.iter()).map(|f| csv_field(f)).collect();
            out.push_str(&row.join(","));
            out.push('\n');
            wrote = true;
        }
    }
    if !wrote {
        let row: Vec<String> = head.iter().map(|f| csv_field(f)).collect();
        out.push_str(&row.join(","));
        out.push_str(",,,,,,,,\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_rows_are_one_per_candidate_and_quoted() {
        let line = json!({"photo": "a,b.jpg", "status": "searched", "faces": [{"face": 0, "candidates": [
            {"rank": 1, "watchlist": "wanted", "subject_id": 7, "display_name": "=cmd()", "similarity": 0.5, "fpir": null, "hit_id": 3},
            {"rank": 2, "watchlist": "wanted", "subject_id": 8, "display_name": "Ann \"A\"", "similarity": 0.25, "fpir": 0.1, "hit_id": null}]}]});
        let mut out = String::new();
        csv_rows(&line, &mut out);
        let rows: Vec<&str> = out.lines().collect();
        assert_eq!(rows[0], "\"a,b.jpg\",searched,,0,1,wanted,7,'=cmd(),0.5,,3");
        assert_eq!(rows[1], "\"a,b.jpg\",searched,,0,2,wanted,8,\"Ann \"\"A\"\"\",0.25,0.1,");
        let mut out = String::new();
        csv_rows(&json!({"photo": "x.txt", "status": "refused", "code": "not_an_image", "faces": []}), &mut out);
        assert_eq!(out.trim_end().split(',').count(), CSV_HEADER.trim_end().split(',').count());
    }
}
