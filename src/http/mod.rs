//! The HTTP edge: `app(state) -> Router`, `serve(listener, shutdown)`, and the admission control that keeps heavy
//! photo work bounded. Handlers are thin: parse, call the service core off the async runtime, map errors.

mod admission;
mod console;
mod dispatch;
mod drain;
mod error;
mod limits;
pub mod metrics;
mod routes;
pub mod schema;
mod server;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

pub use admission::Admission;
pub use error::ApiError;
pub use tls::{TlsConfig, TlsError};

use crate::service::{Principal, WatchlistService};

/// HTTP server settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// Largest request body in bytes (default 30 MiB; photos are further limited by `limits.max_bytes`).
    pub max_body_bytes: usize,
    /// Analysis threads, i.e. photo analyses running at once (default: number of cores + 1; on 2 cores three
    /// threads measured ahead of two, pinned or not, at concurrency 8: research/README.md). Pair it with
    /// `runtime.sessions`, or analyses wait for a session.
    pub max_concurrent_analyses: usize,
    /// Analyses allowed to wait for a thread before requests are refused with 503 + Retry-After (default 32).
    pub max_queued_analyses: usize,
    /// Open connections at most (default 512, and never more than the open-file limit leaves room for); beyond it a
    /// new connection is answered 503 `too_many_connections` and closed at once.
    pub max_connections: usize,
    /// Seconds a client has to send a request's line and headers, counted from its first byte (default 10).
    pub header_timeout_s: u64,
    /// Seconds a client has to send a whole request body (default 30); a slower one gets 408 `body_timeout`.
    pub body_timeout_s: u64,
    /// Seconds a keep-alive connection may sit with no request before it is closed (default 30).
    pub idle_timeout_s: u64,
    /// Longest request target, path and query, in bytes (default 8 KiB; longer: 414 `uri_too_long`).
    pub max_uri_bytes: usize,
    /// Largest request header block, names and values, in bytes (default 32 KiB; larger: 431 `headers_too_large`).
    pub max_header_bytes: usize,
    /// Most request headers (default 100; more: 431 `headers_too_large`).
    pub max_headers: usize,
    /// Browser origins allowed to call the API (CORS), e.g. `["https://review.example.org"]`. Empty by default:
    /// a request carrying any other `Origin` is refused with 403 `origin_not_allowed`, preflights included.
    pub cors_origins: Vec<String>,
    /// Serve the web console at `/console/` (default true). It is static pages calling this API with the user's
    /// key; turning it off leaves the API unchanged.
    pub console: bool,
    /// HTTPS with this certificate and key (`[server.tls]`, feature `tls`); absent by default: plain HTTP.
    pub tls: Option<TlsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 30 << 20,
            max_concurrent_analyses: cores + 1,
            max_queued_analyses: 32,
            max_connections: 512,
            header_timeout_s: 10,
            body_timeout_s: 30,
            idle_timeout_s: 30,
            max_uri_bytes: 8 << 10,
            max_header_bytes: 32 << 10,
            max_headers: 100,
            cors_origins: Vec::new(),
            console: true,
            tls: None,
        }
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<WatchlistService>,
    pub admission: Admission,
    pub metrics: Arc<metrics::Metrics>,
    pub config: ServerConfig,
    /// Turns true when the server begins to stop: open alert streams end, so that stopping never waits on them.
    pub closing: Arc<tokio::sync::watch::Sender<bool>>,
}

impl AppState {
    /// Fails only when the analysis threads cannot be started.
    pub fn new(service: Arc<WatchlistService>, config: ServerConfig) -> std::io::Result<AppState> {
        Ok(AppState {
            admission: Admission::new(config.max_concurrent_analyses, config.max_queued_analyses)?,
            metrics: Arc::new(metrics::Metrics::default()),
            service,
            config,
            closing: Arc::new(tokio::sync::watch::Sender::new(false)),
        })
    }
}

/// The router.
pub fn app(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    // A refused upload is read to its end (up to four times the limit, for half a minute at most) so the client
    // reads the refusal instead of a reset.
    let drain = drain::DrainPolicy {
        limit: limit as u64,
        max_bytes: 4 * limit as u64 + (1 << 20),
        max_wait: std::time::Duration::from_secs(30),
        job_limit: state.service.jobs_config().max_bytes,
    };
    let job_body_timeout = std::time::Duration::from_secs(state.service.jobs_config().upload_timeout_s.max(1));
    let edge = limits::EdgePolicy { job_body_timeout, ..limits::EdgePolicy::new(&state.config) };
    let (router, document) = routes::routes();
    let router = if state.config.console { router.merge(console::routes()) } else { router };
    let document = document.to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    router
        .layer(axum::Extension(routes::OpenApiJson(document.into())))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn_with_state(drain, drain::drain_unread_body))
        .layer(middleware::from_fn_with_state(edge, limits::check_request))
        .layer(middleware::from_fn(limits::security_headers))
        .with_state(state)
}

/// Records latency per matched route and errors by code.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let started = Instant::now();
    tracing::debug!(route = %route, method = %method, "request started");
    let response = next.run(request).await;
    state.metrics.observe_request(&route, &method, started.elapsed().as_secs_f64());
    if let Some(code) = response.extensions().get::<error::ErrorCode>() {
        state.metrics.count_error(code.0);
    } else if response.status().is_client_error() || response.status().is_server_error() {
        state.metrics.count_error("http_error");
    }
    response
}

/// Serves until `shutdown` resolves, then ends alert streams, finishes in-flight requests, stops the webhook
/// dispatcher, saves the index and folds the database's WAL into its main file. Meanwhile the WAL is folded every
/// `gallery.checkpoint_interval_s`.
pub async fn serve(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let service = state.service.clone();
    let interval = service.config().checkpoint_interval_s;
    let checkpoints = (interval > 0).then(|| service.start_checkpoints(std::time::Duration::from_secs(interval)));
    let config = state.config.clone();
    tracing::info!(address = %listener.local_addr()?, "listening");
    let sweeps = tokio::spawn(sweep_retention(service.clone()));
    // Jobs' workers step aside while checkpoint searches wait for an analysis thread.
    let admission = state.admission.clone();
    let jobs = service.start_job_runner(Arc::new(move || admission.queued() > 0));
    let dispatcher = tokio::spawn(dispatch::run(service.clone(), state.closing.subscribe()));
    let closing = state.closing.clone();
    // Streams end as the server begins to stop, before connections are asked to finish: a stream never ends on
    // its own, and the drain would otherwise wait for it until the hard close.
    let shutdown = async move {
        shutdown.await;
        closing.send_replace(true);
    };
    let served = server::run(listener, app(state.clone()), &config, shutdown).await;
    state.closing.send_replace(true);
    sweeps.abort();
    // Each worker finishes the photo it is on, so a clean stop leaves no claim behind; that takes a photo's time.
    let stopped = tokio::task::spawn_blocking(move || drop(jobs)).await;
    if let Err(e) = stopped {
        tracing::warn!(error = %e, "jobs: workers did not stop cleanly");
    }
    if tokio::time::timeout(std::time::Duration::from_secs(5), dispatcher).await.is_err() {
        tracing::warn!("webhook dispatcher did not stop in time; pending deliveries resume at the next start");
    }
    drop(checkpoints);
    served?;
    let closed = tokio::task::spawn_blocking(move || service.close()).await;
    match closed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(
            error = ?anyhow::Error::from(e),
            "clean shutdown incomplete: the index is rebuilt at the next start, the wal is replayed"
        ),
        Err(e) => tracing::warn!(error = %e, "shutdown task failed"),
    }
    Ok(())
}

/// Deletes subjects past their watchlist's retention at start and then every `gallery.retention_sweep_secs`.
/// Every node may sweep: expiring a subject another node already deleted is a no-op.
async fn sweep_retention(service: Arc<WatchlistService>) {
    let every = std::time::Duration::from_secs(service.config().retention_sweep_secs.max(1));
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        let sweeper = service.clone();
        let swept = tokio::task::spawn_blocking(move || {
            sweeper.expire_subjects(std::time::SystemTime::now(), &Principal::system("retention sweep"))
        })
        .await;
        match swept {
            Ok(Ok(expired)) if !expired.is_empty() => tracing::info!(subjects = expired.len(), "retention: expired subjects deleted"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "retention sweep failed; it is retried at the next one"),
            Err(e) => tracing::warn!(error = %e, "retention sweep task failed"),
        }
        let sweeper = service.clone();
        let swept = tokio::task::spawn_blocking(move || {
            let service = sweeper;
            let system = Principal::system("retention sweep");
            let now = std::time::SystemTime::now();
            Ok::<_, crate::service::ServiceError>((service.expire_jobs(now, &system)?, service.expire_hit_probes(now, &system)?))
        })
        .await;
        match swept {
            Ok(Ok((jobs, probes))) if !jobs.is_empty() || !probes.is_empty() => {
                tracing::info!(jobs = jobs.len(), probe_crops = probes.len(), "retention: expired jobs and probe crops deleted")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "retention sweep of jobs failed; it is retried at the next one"),
            Err(e) => tracing::warn!(error = %e, "retention sweep task failed"),
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
