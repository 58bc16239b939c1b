//! The OpenAPI document served at `/v1/openapi.json`; `tests/http.rs` checks it lists exactly the routes the
//! router serves.

pub const DOCUMENT: &str = include_str!("openapi.json");
