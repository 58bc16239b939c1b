//! Fuzz target: arbitrary bytes through photo decoding and face detection, as an upload reaches them. Any panic,
//! abort or runaway allocation is a finding; typed refusals are the expected outcome for nearly every input.
#![no_main]

use std::sync::OnceLock;

use facematch::config::Config;
use facematch::decode::DecodeLimits;
use facematch::pipeline::FacePipeline;
use libfuzzer_sys::fuzz_target;

/// The real pipeline, loaded once; models from `FACEMATCH_MODELS` or the checkout's `models/`.
fn pipeline() -> &'static FacePipeline {
    static PIPELINE: OnceLock<FacePipeline> = OnceLock::new();
    PIPELINE.get_or_init(|| {
        let mut config = Config::default();
        let models = std::env::var_os("FACEMATCH_MODELS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models"));
        config.models.dir = Some(models);
        config.runtime.sessions = 1;
        // Small limits keep every execution short; the limits' own logic is what is under test, not their size.
        config.limits = DecodeLimits { max_dimension: 2048, max_pixels: 2_000_000, budget_bytes: 64 << 20, ..DecodeLimits::default() };
        FacePipeline::load(&config.pipeline()).expect("the pipeline loads (run scripts/setup.sh)")
    })
}

fuzz_target!(|data: &[u8]| {
    let pipeline = pipeline();
    if let Ok(photo) = pipeline.decode(data) {
        let _ = pipeline.detector().detect_with(&photo.image, 0.0);
    }
});
