//! Criterion benchmarks of the face pipeline's stages on real photos, one session per model at one thread: decode,
//! detect (fixed 640×640 YuNet and the dynamic-size one), align, embed (both recognizers), and the whole pipeline.
//!
//! Photos: a 250×250 LFW portrait and a 2500×1728 deepface photo from `../shared` (or `$FACEMATCH_SHARED`).
//! Sample sizes are small so `cargo bench --bench pipeline` finishes in a few minutes on a shared machine; the
//! side-by-side with the Python reference is `scripts/bench_pipeline.sh`, not this.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use facematch::align::align_face;
use facematch::config::Config;
use facematch::decode::{decode_photo, DecodeLimits, Photo};
use facematch::pipeline::{AnalyzeOptions, FacePipeline};

/// (label, path relative to `faces/`) of the photos every stage is measured on.
const PHOTOS: [(&str, &str); 2] = [
    ("lfw-250px", "lfw-dev/Aaron_Eckhart/Aaron_Eckhart_0001.jpg"),
    ("deepface-2500px", "deepface/id01/img4.jpg"),
];
const DETECTORS: [&str; 2] = ["yunet-2023mar", "yunet-s-dynamic"];
const RECOGNIZERS: [&str; 4] = ["face-reid-retail-0095", "dlib-resnet-v1", "face-reid-retail-0095-int8", "dlib-resnet-v1-int8"];

fn shared_dir() -> PathBuf {
    std::env::var_os("FACEMATCH_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("shared"))
}

fn photo_bytes() -> Vec<(&'static str, Vec<u8>)> {
    let faces = shared_dir().join("faces");
    PHOTOS
        .iter()
        .map(|(label, rel)| {
            let path = faces.join(rel);
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("benchmark photo {}: {e}", path.display()));
            (*label, bytes)
        })
        .collect()
}

/// The pipeline as `facematch bench pipeline` runs it: one session per model, one intra-op thread.
fn pipeline(detector: &str, recognizer: &str) -> FacePipeline {
    let mut config = Config::default();
    config.models.dir = Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"));
    config.models.detector = Some(detector.to_string());
    config.models.recognizer = recognizer.to_string();
    config.runtime.intra_threads = 1;
    config.runtime.sessions = 1;
    FacePipeline::load(&config.pipeline())
        .unwrap_or_else(|e| panic!("pipeline {detector} + {recognizer} (run scripts/setup.sh): {e}"))
}

fn configure<'c>(c: &'c mut Criterion, name: &str) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    group
}

fn stages(c: &mut Criterion) {
    let photos = photo_bytes();
    let decoded: Vec<(&str, Photo)> = photos
        .iter()
        .map(|(label, bytes)| (*label, decode_photo(bytes, &DecodeLimits::default()).expect("benchmark photo decodes")))
        .collect();

    let mut group = configure(c, "decode");
    for (label, bytes) in &photos {
        group.bench_with_input(BenchmarkId::from_parameter(label), bytes, |b, bytes| {
            b.iter(|| decode_photo(bytes, &DecodeLimits::default()).expect("benchmark photo decodes"))
        });
    }
    group.finish();

    let mut group = configure(c, "detect");
    for detector in DETECTORS {
        let pipeline = pipeline(detector, RECOGNIZERS[0]);
        for (label, photo) in &decoded {
            group.bench_with_input(BenchmarkId::new(detector, label), photo, |b, photo| {
                b.iter(|| pipeline.detector().detect(&photo.image).expect("detection runs"))
            });
        }
    }
    group.finish();

    for recognizer in RECOGNIZERS {
        let pipeline = pipeline(DETECTORS[1], recognizer);
        let alignment = pipeline.recognizer().manifest().alignment.clone().expect("recognizers have a template");
        let mut align_group = configure(c, &format!("align/{recognizer}"));
        let mut crops = Vec::new();
        for (label, photo) in &decoded {
            let face = pipeline.detector().detect(&photo.image).expect("detection runs");
            let Some(face) = face.first().copied() else { panic!("benchmark photo {label}: no face") };
            align_group.bench_with_input(BenchmarkId::from_parameter(label), photo, |b, photo| {
                b.iter(|| align_face(&photo.image, &face.landmarks, &alignment).expect("alignment runs"))
            });
            crops.push((*label, align_face(&photo.image, &face.landmarks, &alignment).expect("alignment runs")));
        }
        align_group.finish();

        let mut embed_group = configure(c, &format!("embed/{recognizer}"));
        for batch in [1usize, 4] {
            let faces: Vec<_> = std::iter::repeat_n(&crops[0].1, batch).collect();
            embed_group.bench_with_input(BenchmarkId::new("faces", batch), &faces, |b, faces| {
                b.iter(|| pipeline.recognizer().embed(faces).expect("embedding runs"))
            });
        }
        embed_group.finish();

        let mut whole = configure(c, &format!("pipeline/{recognizer}"));
        for (label, bytes) in &photos {
            whole.bench_with_input(BenchmarkId::from_parameter(label), bytes, |b, bytes| {
                let one_face = AnalyzeOptions { min_face_px: None, max_faces: Some(1) };
                b.iter(|| pipeline.analyze_bytes(bytes, one_face).expect("pipeline runs"))
            });
        }
        whole.finish();
    }
}

criterion_group!(benches, stages);
criterion_main!(benches);
