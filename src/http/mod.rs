//! The HTTP edge: routes, request parsing and the mapping of domain errors to HTTP statuses.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// HTTP server settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// Largest request body in bytes (default 30 MiB; photos are further limited by `limits.max_bytes`).
    pub max_body_bytes: usize,
    /// Photo analyses running at once (default: number of cores).
    pub max_concurrent_analyses: usize,
    /// Analyses allowed to wait for a slot before requests are refused with 503 (default 32).
    pub max_queued_analyses: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 30 << 20,
            max_concurrent_analyses: cores,
            max_queued_analyses: 32,
        }
    }
}
