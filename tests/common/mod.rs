//! Shared test fixtures: where `../shared` is, and loading the real pipeline. Tests that need `../shared` fail
//! (never skip) when it is missing, so CI cannot pass without the data.
#![allow(dead_code)]

use std::path::PathBuf;

use facematch::config::Config;
use facematch::pipeline::FacePipeline;

/// `../shared` beside the checkout (or `FACEMATCH_SHARED`).
pub fn shared_dir() -> PathBuf {
    let dir = std::env::var_os("FACEMATCH_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("shared"));
    assert!(
        dir.join("faces").is_dir(),
        "test data missing: {} has no faces/ (CI needs ../shared beside the checkout)",
        dir.display()
    );
    dir
}

pub fn deepface() -> PathBuf {
    shared_dir().join("faces").join("deepface")
}

/// Config for tests: the repo's models, a given recognizer, two sessions.
pub fn config_for(recognizer: &str) -> Config {
    let mut config = Config::default();
    config.models.dir = Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"));
    config.models.recognizer = recognizer.to_string();
    config.runtime.sessions = 2;
    config
}

pub fn pipeline(recognizer: &str) -> FacePipeline {
    FacePipeline::load(&config_for(recognizer))
        .unwrap_or_else(|e| panic!("pipeline with {recognizer} must load (run scripts/setup.sh): {e}"))
}

/// Labelled pairs of `deepface/pairs.csv`: (photo a, photo b, same person).
pub fn deepface_pairs() -> Vec<(String, String, bool)> {
    let text = std::fs::read_to_string(deepface().join("pairs.csv")).expect("deepface/pairs.csv");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[1].to_string(), f[2].trim() == "1")
        })
        .collect()
}

/// Every photo of deepface/, as paths relative to it.
pub fn deepface_photos() -> Vec<String> {
    let mut out = Vec::new();
    for id in std::fs::read_dir(deepface()).expect("deepface/") {
        let id = id.unwrap().path();
        if !id.is_dir() {
            continue;
        }
        for photo in std::fs::read_dir(&id).unwrap() {
            let p = photo.unwrap().path();
            out.push(format!("{}/{}", id.file_name().unwrap().to_string_lossy(), p.file_name().unwrap().to_string_lossy()));
        }
    }
    out.sort();
    out
}
