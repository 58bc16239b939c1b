//! The fuzz target's work (decode, then detect) replayed without nightly: on the generated seeds, on every input
//! that once crashed it (`fuzz/regressions/decode_detect/`, checked in), and on the fuzzer's corpus and artifacts
//! when a local run left them in `fuzz/`, so a finding fixed once stays fixed in a normal `cargo test`.

mod common;

use facematch::decode::DecodeLimits;
use facematch::pipeline::FacePipeline;

fn replay(pipeline: &FacePipeline, name: &str, bytes: &[u8]) -> bool {
    match pipeline.decode(bytes) {
        Ok(photo) => {
            pipeline.detector().detect_with(&photo.image, 0.0).unwrap_or_else(|e| panic!("{name}: detection failed: {e}"));
            true
        }
        Err(e) => {
            // Every refusal is one of the typed, documented ones.
            assert!(!e.code().is_empty(), "{name}");
            false
        }
    }
}

#[test]
fn the_fuzz_corpus_and_seeds_decode_or_are_refused() {
    let mut config = common::config_for("face-reid-retail-0095");
    // The fuzz target's limits.
    config.limits = DecodeLimits { max_dimension: 2048, max_pixels: 2_000_000, budget_bytes: 64 << 20, ..DecodeLimits::default() };
    let pipeline = FacePipeline::load(&config.pipeline()).expect("pipeline loads");
    let face = image::open(common::deepface().join("id01").join("img10.jpg")).unwrap();
    let seeds = common::corpus::seeds(&face);
    let decoded = seeds.iter().filter(|(name, bytes)| replay(&pipeline, name, bytes)).count();
    // The whole photos decode, the cut and bomb ones do not.
    assert!(decoded >= 12 && decoded < seeds.len(), "{decoded} of {} seeds decoded", seeds.len());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for dir in ["regressions/decode_detect", "corpus/decode_detect", "artifacts/decode_detect"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            replay(&pipeline, &path.display().to_string(), &std::fs::read(&path).unwrap());
            replayed += 1;
        }
    }
    eprintln!("{} seeds and {replayed} fuzzer inputs replayed", seeds.len());
}
