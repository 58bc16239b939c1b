//! The HTTP edge: `app(state) -> Router`, `serve(listener, shutdown)`, and the admission control that keeps heavy
//! photo work bounded. Handlers are thin: parse, call the service core off the async runtime, map errors.

mod admission;
mod drain;
mod error;
pub mod metrics;
mod routes;
pub mod schema;

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

use crate::service::WatchlistService;

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
}

impl Default for ServerConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 30 << 20,
            max_concurrent_analyses: cores + 1,
            max_queued_analyses: 32,
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
}

impl AppState {
    /// Fails only when the analysis threads cannot be started.
    pub fn new(service: Arc<WatchlistService>, config: ServerConfig) -> std::io::Result<AppState> {
        Ok(AppState {
            admission: Admission::new(config.max_concurrent_analyses, config.max_queued_analyses)?,
            metrics: Arc::new(metrics::Metrics::default()),
            service,
            config,
        })
    }
}

/// The router.
pub fn app(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    // A refused upload is read to its end (up to four times the limit, for half a minute at most) so the client
    // reads the refusal instead of a reset.
    let drain = drain::DrainPolicy { max_bytes: 4 * limit as u64 + (1 << 20), max_wait: std::time::Duration::from_secs(30) };
    let (router, document) = routes::routes();
    let document = document.to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    router
        .layer(axum::Extension(routes::OpenApiJson(document.into())))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn_with_state(drain, drain::drain_unread_body))
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

/// Serves until `shutdown` resolves, then finishes in-flight requests and saves the index.
pub async fn serve(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let service = state.service.clone();
    tracing::info!(address = %listener.local_addr()?, "listening");
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown).await?;
    let saved = tokio::task::spawn_blocking(move || service.persist_index()).await;
    match saved {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = ?anyhow::Error::from(e), "index not saved; it will be rebuilt at the next start"),
        Err(e) => tracing::warn!(error = %e, "index save task failed"),
    }
    Ok(())
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
