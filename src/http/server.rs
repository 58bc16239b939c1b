//! The connection layer: accepting behind a cap on open connections, TLS when configured, hyper's HTTP/1 with header
//! and idle timeouts, graceful shutdown of every connection, and the open-file limit raised at start.
//!
//! `axum::serve` has no timeouts and no cap: a few hundred idle or trickling clients held their connections
//! forever, and once the process ran out of file descriptors even `/healthz` went unanswered.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use futures_util::StreamExt;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use super::ServerConfig;

/// File descriptors kept for everything but client connections: the store, the index, models, logs, threads.
const RESERVED_FILES: u64 = 64;

/// Connections refused at once, at most, while each gets its short 503; past that a new one is simply closed.
const MAX_REFUSING: usize = 64;

/// How long a connection may take to finish after it was asked to close (shutdown or idle), on top of the body
/// timeout: a request still in flight gets that long to complete.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The timeouts of one connection.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header: Duration,
    idle: Duration,
    hard_close: Duration,
}

/// Accepts and serves connections until `shutdown` resolves, then asks each to finish and waits for them.
pub(super) async fn run(
    listener: TcpListener,
    router: Router,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = super::tls::acceptor(config.tls.as_ref())?;
    let cap = connection_cap(config.max_connections, raise_file_limit());
    tracing::info!(max_connections = cap, tls = tls.is_some(), "accepting connections");
    let timeouts = Timeouts {
        header: Duration::from_secs(config.header_timeout_s.max(1)),
        idle: Duration::from_secs(config.idle_timeout_s.max(1)),
        hard_close: Duration::from_secs(config.body_timeout_s) + CLOSE_GRACE,
    };
    // hyper answers an over-long head itself, with an empty body; its bounds sit well above ours, so that the
    // middleware (`limits.rs`) answers in the API's JSON shape for everything between the two.
    let hyper_max_headers = config.max_headers.saturating_mul(4).max(100);
    let permits = Arc::new(Semaphore::new(cap));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or a connection reset before it was accepted: the listener itself is fine.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Over TLS a plain answer would be noise to the client: the connection is just closed.
            if tls.is_some() {
                continue;
            }
            if let Ok(slot) = refusing.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(slot);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let stop = stop_rx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, router, timeouts, hyper_max_headers, stop).await,
                // The handshake is part of the head: it has the header timeout to finish.
                Some(acceptor) => match tokio::time::timeout(timeouts.header, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(stream, router, timeouts, hyper_max_headers, stop).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "tls handshake failed"),
                    Err(_) => tracing::debug!("tls handshake timed out"),
                },
            }
            drop(permit);
        });
    }
    let _ = stop_tx.send(true);
    // Every connection holds a permit until it ends: all of them back means every connection has finished.
    let _ = permits.acquire_many(cap as u32).await;
    Ok(())
}

/// The configured cap, lowered to what the open-file limit leaves room for.
fn connection_cap(configured: usize, file_limit: Option<u64>) -> usize {
    let room = file_limit.map(|n| n.saturating_sub(RESERVED_FILES).max(1) as usize).unwrap_or(usize::MAX);
    configured.clamp(1, room).min(u32::MAX as usize)
}

/// Raises the soft open-file limit to the hard one and returns the soft limit now in force.
#[cfg(unix)]
fn raise_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer, which outlives the calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    // `rlim_t` is 32 bits wide on some targets.
    #[allow(clippy::unnecessary_cast)]
    let soft = limit.rlim_cur as u64;
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(soft)
}

#[cfg(not(unix))]
fn raise_file_limit() -> Option<u64> {
    None
}

/// When a connection last finished a request, and how many it is serving now.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    fn begin(self: &Arc<Self>) -> ActivityGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        ActivityGuard(self.clone())
    }
}

struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        *self.0.last.lock() = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve_connection<S>(stream: S, router: Router, timeouts: Timeouts, max_headers: usize, mut stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity { in_flight: AtomicUsize::new(0), last: Mutex::new(Instant::now()) });
    let tower = TowerToHyperService::new(router);
    let tracked = activity.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let busy = tracked.begin();
        let answer = hyper::service::Service::call(&tower, request);
        async move {
            let response = answer.await;
            match response {
                // A stream (server-sent events) is in flight until its body ends, not when its head is sent: the
                // idle timer must not close a connection that is streaming alerts.
                Ok(response) if is_event_stream(&response) => Ok(response.map(|body| {
                    axum::body::Body::from_stream(body.into_data_stream().map(move |chunk| {
                        let _streaming = &busy;
                        chunk
                    }))
                })),
                other => {
                    drop(busy);
                    other
                }
            }
        }
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(timeouts.header).max_headers(max_headers);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut closing_since: Option<Instant> = None;
    loop {
        let idle_deadline = *activity.last.lock() + timeouts.idle;
        let hard_deadline = closing_since.map(|t| t + timeouts.hard_close);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if closing_since.is_none() => {
                if changed.is_err() || *stop.borrow() {
                    connection.as_mut().graceful_shutdown();
                    closing_since = Some(Instant::now());
                }
            }
            _ = tokio::time::sleep_until(idle_deadline), if closing_since.is_none() => {
                if activity.in_flight.load(Ordering::SeqCst) == 0 && *activity.last.lock() + timeouts.idle <= Instant::now() {
                    connection.as_mut().graceful_shutdown();
                    closing_since = Some(Instant::now());
                }
            }
            _ = sleep_until_option(hard_deadline) => return,
        }
    }
}

fn is_event_stream<B>(response: &hyper::Response<B>) -> bool {
    response.headers().get(hyper::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

async fn sleep_until_option(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Answers a connection over the cap with a short JSON 503 and closes it; a liveness probe (`GET /healthz`) still
/// gets its 200, so a flood of connections never makes an orchestrator restart a process that is alive. What the
/// client already sent is read first (briefly, boundedly), because closing a socket with unread data resets it and
/// the client would lose the answer.
async fn refuse(mut stream: TcpStream) {
    let mut buffer = [0u8; 4096];
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Ok(n) = stream.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buffer[..n]);
            if seen.windows(4).any(|w| w == b"\r\n\r\n") || seen.len() > 64 << 10 {
                break;
            }
        }
    })
    .await;
    let answer = refusal(&seen);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// The whole answer to a connection over the cap, given what it sent.
fn refusal(seen: &[u8]) -> String {
    let liveness = seen.starts_with(b"GET /healthz ") || seen.starts_with(b"GET /healthz?");
    let (status, extra, body) = if liveness {
        ("200 OK", "", r#"{"status":"ok"}"#)
    } else {
        (
            "503 Service Unavailable",
            "retry-after: 1\r\n",
            r#"{"error":{"code":"too_many_connections","message":"the server has too many open connections; retry shortly"}}"#,
        )
    };
    let mut answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}connection: close\r\n",
        body.len()
    );
    for (name, value) in super::limits::SECURITY_HEADERS {
        answer.push_str(&format!("{name}: {value}\r\n"));
    }
    answer.push_str("\r\n");
    answer.push_str(body);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_the_service_own_files() {
        assert_eq!(connection_cap(512, Some(256)), 192);
        assert_eq!(connection_cap(512, Some(1 << 20)), 512);
        assert_eq!(connection_cap(512, None), 512);
        assert_eq!(connection_cap(512, Some(10)), 1);
        assert_eq!(connection_cap(0, None), 1);
    }

    #[test]
    fn over_the_cap_liveness_is_answered_and_the_rest_refused() {
        assert!(refusal(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").starts_with("HTTP/1.1 200 OK\r\n"));
        let refused = refusal(b"GET /healthzz HTTP/1.1\r\n\r\n");
        assert!(refused.starts_with("HTTP/1.1 503 ") && refused.contains("too_many_connections"), "{refused}");
        assert!(refused.contains("x-content-type-options: nosniff\r\n"));
        let (head, body) = refused.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
    }

    #[test]
    fn the_soft_file_limit_is_raised_to_the_hard_one() {
        let soft = raise_file_limit();
        #[cfg(unix)]
        {
            let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: as in raise_file_limit.
            assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
            assert_eq!(limit.rlim_cur, limit.rlim_max);
            if limit.rlim_cur != libc::RLIM_INFINITY {
                assert_eq!(soft.map(u128::from), Some(u128::from(limit.rlim_cur)));
            }
        }
    }
}
