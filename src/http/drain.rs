//! Reading what a handler left of a request body, so that a refusal (413, 400, 415) reaches a client that is
//! still sending instead of a connection reset.
//!
//! A handler that refuses a body stops reading it. Closing a TCP socket with unread data in its receive buffer
//! sends a reset, and a client still writing its upload sees a broken pipe before it reads the answer. So the body
//! is pumped through a channel: the handler reads from the channel, and once it has answered, the pump discards
//! the rest of the body, up to a bound, before the answer is sent.
//!
//! A body declared larger than the limit is refused before a byte of it is read. With `Expect: 100-continue` the
//! client waits for leave to send: it gets the 413 instead of `100 Continue` (hyper sends that only when the body
//! is first read) and the connection closes, so nothing of the body is ever read.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::limits::closing;
use super::ApiError;

/// How much of a body the server reads, at most, after its handler stopped reading it.
#[derive(Debug, Clone, Copy)]
pub struct DrainPolicy {
    /// The body limit: a larger declared length is refused at once.
    pub limit: u64,
    /// Bytes discarded at most; a client that declared more gets the answer on a closing connection.
    pub max_bytes: u64,
    /// How long the discarding may take.
    pub max_wait: Duration,
    /// The body limit of a job's upload (`POST /v1/jobs`, streamed to disk): `jobs.max_bytes`.
    pub job_limit: u64,
}

/// Whether the request is a job's upload, which has its own body limit and deadline: a case's photos do not fit
/// the limits of one photo's search.
pub(super) fn is_job_upload(request: &Request) -> bool {
    request.method() == axum::http::Method::POST && request.uri().path() == "/v1/jobs"
}

/// The middleware: a request without a body passes untouched.
pub async fn drain_unread_body(State(policy): State<DrainPolicy>, request: Request, next: Next) -> Response {
    if !has_body(&request) {
        return next.run(request).await;
    }
    let (limit, max_bytes) = if is_job_upload(&request) {
        (policy.job_limit, policy.job_limit.saturating_add(1 << 20))
    } else {
        (policy.limit, policy.max_bytes)
    };
    if let Some(length) = declared_length(&request).filter(|&length| length > limit) {
        let refusal = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("request body of {length} bytes is over the limit of {limit}"),
        )
        .into_response();
        if expects_continue(&request) || length > max_bytes {
            return closing(refusal);
        }
        let pump = tokio::spawn(discard(request.into_body(), max_bytes));
        let _ = tokio::time::timeout(policy.max_wait, pump).await;
        return refusal;
    }
    let (parts, body) = request.into_parts();
    let (sender, receiver) = mpsc::channel::<Result<Bytes, axum::Error>>(8);
    let pump = tokio::spawn(pump(body, sender, max_bytes));
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    let response = next.run(Request::from_parts(parts, Body::from_stream(stream))).await;
    // Whether or not the pump finishes in time, the answer goes out; a client that is too slow gets it on a
    // connection that then closes.
    let _ = tokio::time::timeout(policy.max_wait, pump).await;
    response
}

/// Forwards the body to the handler while it reads, then discards up to `max_bytes` of what is left.
async fn pump(body: Body, sender: mpsc::Sender<Result<Bytes, axum::Error>>, max_bytes: u64) {
    let mut stream = body.into_data_stream();
    let mut discarded = 0u64;
    let mut forwarding = true;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) if forwarding => {
                let length = bytes.len() as u64;
                if sender.send(Ok(bytes)).await.is_err() {
                    forwarding = false;
                    discarded += length;
                }
            }
            Ok(bytes) => discarded += bytes.len() as u64,
            Err(error) => {
                if forwarding {
                    let _ = sender.send(Err(error)).await;
                }
                return;
            }
        }
        if discarded > max_bytes {
            return;
        }
    }
}

async fn discard(body: Body, max_bytes: u64) {
    let mut stream = body.into_data_stream();
    let mut discarded = 0u64;
    while let Some(Ok(chunk)) = stream.next().await {
        discarded += chunk.len() as u64;
        if discarded > max_bytes {
            return;
        }
    }
}

fn expects_continue(request: &Request) -> bool {
    request.headers().get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

pub(super) fn has_body(request: &Request) -> bool {
    request.headers().contains_key(header::TRANSFER_ENCODING) || declared_length(request).is_some_and(|n| n > 0)
}

fn declared_length(request: &Request) -> Option<u64> {
    request.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}
