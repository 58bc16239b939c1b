//! facematch: biometric face matching — the face pipeline (decode, detect, align, embed), the watchlist gallery
//! with approximate-nearest-neighbour search, the HTTP service and the evaluation harness.
//!
//! A match is a candidate for a person to review, never a verdict.

pub mod align;
pub mod cli;
pub mod config;
pub mod decode;
pub mod detect;
pub mod embed;
pub mod eval;
pub mod gallery;
pub mod http;
pub mod index;
pub mod loadgen;
pub mod manifest;
pub mod pipeline;
pub mod quality;
pub mod runtime;
pub mod service;
