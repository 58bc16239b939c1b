//! facematch: biometric face matching — the face pipeline (decode, detect, align, embed), scoring, the watchlist
//! gallery with approximate-nearest-neighbour search and the HTTP service; with the `lab` feature also the
//! evaluation harness, the load generator and the benchmarks, which sit beside the service and are never linked
//! into it otherwise.
//!
//! A match is a candidate for a person to review, never a verdict.

pub mod align;
pub mod cli;
pub mod config;
pub mod decode;
pub mod detect;
pub mod embed;
#[cfg(feature = "lab")]
pub mod eval;
pub mod face_region;
pub mod gallery;
pub mod http;
pub mod index;
#[cfg(feature = "lab")]
pub mod loadgen;
pub mod manifest;
pub mod pipeline;
pub mod quality;
pub mod runtime;
pub mod score;
pub mod service;
