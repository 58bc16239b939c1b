//! The one error shape of the API, `{ "error": { "code": "…", "message": "…" } }`, and the mapping of domain
//! errors to HTTP statuses — done here, at the edge, and nowhere else.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::schema::{ErrorBody, ErrorDetail};

use crate::service::{ErrorKind, ServiceError};

/// `Retry-After` of a 503 `storage_unavailable`.
const STORAGE_RETRY_AFTER_S: u64 = 30;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after_s: None }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The heavy-work queue is full: come back shortly.
    pub fn busy() -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "overloaded",
            message: "too many photo analyses queued; retry shortly".into(),
            retry_after_s: Some(1),
        }
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        let status = match e.kind() {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UnsupportedMedia => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            // The chain names files and library errors: log it, but tell the client only the code.
            tracing::error!(error = ?anyhow::Error::from(e), "request failed");
            return ApiError::new(status, "internal_error", "internal error; see the server log");
        }
        // Storage that cannot take writes comes back when an operator makes room: worth a retry, not a hammering.
        // Only the top-level message: sources may name server paths.
        let retry_after_s = e.retry_after_s().or_else(|| {
            (status == StatusCode::SERVICE_UNAVAILABLE)
                .then_some(if e.code() == "storage_unavailable" { STORAGE_RETRY_AFTER_S } else { 1 })
        });
        ApiError { status, code: e.code(), message: e.to_string(), retry_after_s }
    }
}

impl From<axum::extract::multipart::MultipartError> for ApiError {
    fn from(e: axum::extract::multipart::MultipartError) -> ApiError {
        let status = e.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "request_too_large" } else { "invalid_multipart" };
        ApiError::new(status, code, e.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_owned(), message: clip_message(&self.message) } };
        let mut response = (self.status, axum::Json(body)).into_response();
        response.extensions_mut().insert(ErrorCode(self.code));
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"facematch\""));
        }
        if let Some(s) = self.retry_after_s {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}

/// Longest quoted piece of a request an error message repeats, in characters.
pub const MAX_ECHO_CHARS: usize = 64;
/// Longest error message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// An error message as a client may read it: every quoted span (`` `…` `` or `"…"`, where messages and serde's
/// errors put what the client sent) cut to [`MAX_ECHO_CHARS`], the whole to [`MAX_MESSAGE_CHARS`]. A 10 MB id or
/// JSON string came back whole in the error body before.
pub fn clip_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE_CHARS * 4));
    let mut chars = message.chars();
    let mut written = 0usize;
    while let Some(c) = chars.next() {
        if written >= MAX_MESSAGE_CHARS {
            out.push('…');
            return out;
        }
        out.push(c);
        written += 1;
        if c == '`' || c == '"' {
            let mut span = 0usize;
            let mut closed = false;
            for inner in chars.by_ref() {
                if inner == c {
                    closed = true;
                    break;
                }
                span += 1;
                if span <= MAX_ECHO_CHARS {
                    out.push(inner);
                    written += 1;
                }
            }
            if span > MAX_ECHO_CHARS {
                out.push('…');
            }
            if closed {
                out.push(c);
                written += 1;
            }
        }
    }
    out
}

/// Tag on error responses so the metrics layer can count errors by code.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_quoted_input_is_cut_to_an_excerpt() {
        let huge = "x".repeat(10_000);
        let clipped = clip_message(&format!("subject id `{huge}` is not an integer"));
        assert_eq!(clipped, format!("subject id `{}…` is not an integer", "x".repeat(MAX_ECHO_CHARS)));
        let serde = clip_message(&format!("invalid type: string \"{huge}\", expected f32"));
        assert!(serde.starts_with("invalid type: string \"xxx") && serde.ends_with("…\", expected f32"), "{serde}");
        assert_eq!(clip_message("short `id` stays"), "short `id` stays");
        // An unclosed quote still ends in an excerpt.
        assert!(clip_message(&format!("bad `{huge}")).chars().count() <= MAX_ECHO_CHARS + 10);
        assert!(clip_message(&huge).chars().count() <= MAX_MESSAGE_CHARS + 1);
    }
}
