//! What every request passes before a handler sees it, and what every answer carries: request-head limits answered
//! in the API's JSON shape (414, 431), the browser rules (origins, CORS preflights), the body's deadline (408), and
//! the security headers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::{ApiError, ServerConfig};

/// Sent with every answer. The API serves JSON and JPEG thumbnails only, never a page: nothing may be sniffed into
/// HTML, framed, cached by a shared proxy (answers name people) or leak the URL (it may hold ids) as a referrer.
pub const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'; sandbox"),
];

/// The settings the checks read, taken once from the server's.
#[derive(Debug, Clone)]
pub struct EdgePolicy {
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub cors_origins: Arc<[String]>,
    pub body_timeout: Duration,
    /// The deadline of a job's upload (`jobs.upload_timeout_s`).
    pub job_body_timeout: Duration,
}

impl EdgePolicy {
    pub fn new(config: &ServerConfig) -> EdgePolicy {
        EdgePolicy {
            max_uri_bytes: config.max_uri_bytes,
            max_header_bytes: config.max_header_bytes,
            max_headers: config.max_headers,
            cors_origins: config.cors_origins.iter().map(|o| o.trim_end_matches('/').to_string()).collect(),
            body_timeout: Duration::from_secs(config.body_timeout_s),
            job_body_timeout: Duration::from_secs(config.body_timeout_s),
        }
    }
}

/// The outermost layer: adds the security headers to whatever comes back, refusals included. A page that sets
/// its own content-security policy (the console's) keeps it; everything else gets the API's, which forbids all.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        if name == "content-security-policy" && headers.contains_key(name) {
            continue;
        }
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Whether `origin` is this server's own, as the request's `Host` names it (`http://host:port` or `https://…`):
/// the console's requests. Browsers set `Origin` themselves, so a page elsewhere cannot claim ours.
fn same_origin(origin: &[u8], headers: &header::HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).map(HeaderValue::as_bytes) else {
        return false;
    };
    [b"http://".as_slice(), b"https://".as_slice()]
        .iter()
        .any(|scheme| origin.strip_prefix(*scheme) == Some(host))
}

/// Head limits, then the browser rules, then the body's deadline.
pub async fn check_request(State(policy): State<EdgePolicy>, request: Request, next: Next) -> Response {
    if let Err(refusal) = check_head(&policy, &request) {
        return closing(refusal.into_response());
    }
    let origin = request.headers().get(header::ORIGIN).map(|v| v.as_bytes().to_vec());
    let allowed = match &origin {
        None => None,
        Some(origin) => match policy.cors_origins.iter().find(|o| o.as_bytes() == origin.as_slice()) {
            Some(o) => Some(o.clone()),
            // The console served by this server: the browser names our own origin, so no CORS answer is needed.
            None if same_origin(origin, request.headers()) => None,
            None => {
                // A browser page of another origin: its form posts (multipart, text/plain) are "simple" requests
                // that no preflight stops, so they are refused here, before any handler can act on them.
                return ApiError::new(StatusCode::FORBIDDEN, "origin_not_allowed", "requests from this origin are not allowed")
                    .into_response();
            }
        },
    };
    let is_preflight =
        request.method() == Method::OPTIONS && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if is_preflight && allowed.is_some() {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, PATCH, DELETE"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            // A console on an allowed origin sends its key as a bearer token, states its purpose, and resumes an
            // alert stream from the last event it saw.
            HeaderValue::from_static("authorization, content-type, x-facematch-purpose, last-event-id"),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        r
    } else {
        let timeout = if super::drain::is_job_upload(&request) { policy.job_body_timeout } else { policy.body_timeout };
        with_body_deadline(timeout, request, next).await
    };
    if let Some(origin) = allowed {
        if let Ok(value) = HeaderValue::from_str(&origin) {
            response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            response.headers_mut().insert(header::VARY, HeaderValue::from_static("origin"));
        }
    }
    response
}

fn check_head(policy: &EdgePolicy, request: &Request) -> Result<(), ApiError> {
    let target = request.uri().path_and_query().map(|p| p.as_str().len()).unwrap_or(0);
    if target > policy.max_uri_bytes {
        return Err(ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("request target is {target} bytes, over the limit of {}", policy.max_uri_bytes),
        ));
    }
    let headers = request.headers();
    let count = headers.len();
    let bytes: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
    if count > policy.max_headers || bytes > policy.max_header_bytes {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "{count} headers of {bytes} bytes, over the limit of {} headers or {} bytes",
                policy.max_headers, policy.max_header_bytes
            ),
        ));
    }
    Ok(())
}

/// The request's body must arrive whole within `limit` of the head; a client that trickles or stops gets 408 on
/// a closing connection, and the handler reading it gets an error instead of waiting forever.
async fn with_body_deadline(limit: Duration, request: Request, next: Next) -> Response {
    if !super::drain::has_body(&request) {
        return next.run(request).await;
    }
    let deadline = tokio::time::Instant::now() + limit;
    let expired = Arc::new(AtomicBool::new(false));
    let flag = expired.clone();
    let (parts, body) = request.into_parts();
    let timed = futures_util::stream::unfold((body.into_data_stream(), false), move |(mut stream, done)| {
        let flag = flag.clone();
        async move {
            if done {
                return None;
            }
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(item)) => Some((item, (stream, false))),
                Ok(None) => None,
                Err(_) => {
                    flag.store(true, Ordering::SeqCst);
                    let error = std::io::Error::new(std::io::ErrorKind::TimedOut, "request body not received in time");
                    Some((Err(axum::Error::new(error)), (stream, true)))
                }
            }
        }
    });
    let response = next.run(Request::from_parts(parts, Body::from_stream(timed))).await;
    if expired.load(Ordering::SeqCst) {
        let refusal = ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("the request body did not arrive within {} s", limit.as_secs()),
        );
        return closing(refusal.into_response());
    }
    response
}

/// Marks an answer as the connection's last: what the client sends after it is not read.
pub fn closing(mut response: Response) -> Response {
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> EdgePolicy {
        EdgePolicy::new(&ServerConfig { max_uri_bytes: 32, max_header_bytes: 64, max_headers: 3, ..ServerConfig::default() })
    }

    #[test]
    fn the_head_limits_refuse_with_their_own_codes() {
        let ok = Request::builder().uri("/v1/search?k=5").body(Body::empty()).unwrap();
        assert!(check_head(&policy(), &ok).is_ok());
        let long = Request::builder().uri(format!("/v1/subjects?q={}", "a".repeat(40))).body(Body::empty()).unwrap();
        let e = check_head(&policy(), &long).unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::URI_TOO_LONG, "uri_too_long"));
        let big = Request::builder().uri("/").header("x-a", "b".repeat(80)).body(Body::empty()).unwrap();
        assert_eq!(check_head(&policy(), &big).unwrap_err().code, "headers_too_large");
        let mut many = Request::builder().uri("/");
        for i in 0..4 {
            many = many.header(format!("x-{i}"), "1");
        }
        assert_eq!(check_head(&policy(), &many.body(Body::empty()).unwrap()).unwrap_err().code, "headers_too_large");
    }

    #[test]
    fn only_the_servers_own_origin_counts_as_the_same() {
        let mut headers = header::HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(b"http://127.0.0.1:8080", &headers));
        assert!(same_origin(b"https://127.0.0.1:8080", &headers));
        assert!(!same_origin(b"http://127.0.0.1:8081", &headers));
        assert!(!same_origin(b"http://evil.example", &headers));
        assert!(!same_origin(b"http://127.0.0.1:8080.evil.example", &headers));
        assert!(!same_origin(b"null", &headers));
        assert!(!same_origin(b"http://127.0.0.1:8080", &header::HeaderMap::new()));
    }
}
