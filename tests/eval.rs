//! End-to-end tests of `facematch eval verify | identify` on `../shared/faces/deepface` through the real binary:
//! exit status, report files, and the machine-readable summary's fields and values.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Runs the binary with the repo's models; returns (success, stdout, stderr).
fn facematch(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_facematch"))
        .args(["--models-dir", concat!(env!("CARGO_MANIFEST_DIR"), "/models")])
        .args(args)
        .output()
        .expect("the facematch binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn table_names(report: &Value) -> Vec<String> {
    report["tables"].as_array().expect("tables").iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect()
}

/// Checks the report files of `stem` exist and returns (report JSON, summary JSON).
fn outputs(out: &Path, stem: &str) -> (Value, Value) {
    for ext in ["json", "md", "html"] {
        assert!(out.join(format!("{stem}.{ext}")).is_file(), "{stem}.{ext} written");
    }
    let report = read_json(&out.join(format!("{stem}.json")));
    for figure in report["figures"].as_array().expect("figures") {
        let path = figure["path"].as_str().expect("figure path");
        assert!(Path::new(path).is_file(), "figure {path} written");
    }
    (report, read_json(&out.join(format!("{stem}.summary.json"))))
}

fn f64_at(value: &Value, pointer: &str) -> f64 {
    value.pointer(pointer).and_then(Value::as_f64).unwrap_or_else(|| panic!("{pointer} in {value}"))
}

fn verify_and_identify(recognizer: &str, min_accuracy: f64, min_rank1: f64) {
    let deepface = common::deepface();
    let dir = tempfile::tempdir().unwrap();
    let (out, cache) = (dir.path().join("out"), dir.path().join("cache"));
    let (out_s, cache_s) = (out.to_str().unwrap(), cache.to_str().unwrap());
    let pairs = deepface.join("pairs.csv");

    let (ok, stdout, stderr) = facematch(&[
        "--recognizer",
        recognizer,
        "eval",
        "verify",
        deepface.to_str().unwrap(),
        "--pairs",
        pairs.to_str().unwrap(),
        "--out",
        out_s,
        "--cache",
        cache_s,
    ]);
    assert!(ok, "eval verify failed:\n{stderr}");
    assert!(stdout.contains("TAR at FAR"), "terminal report:\n{stdout}");
    let (report, summary) = outputs(&out, &format!("verify-deepface-{recognizer}"));
    assert_eq!(summary["recognizer"]["id"], recognizer);
    assert_eq!(summary["recognizer"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(report["models"][0]["id"], recognizer);
    let pairs_total = summary["mated_pairs"].as_u64().unwrap() + summary["nonmated_pairs"].as_u64().unwrap();
    assert_eq!(pairs_total, common::deepface_pairs().len() as u64);
    let accuracy = f64_at(&summary, "/accuracy/mean");
    assert!(accuracy >= min_accuracy, "{recognizer} 10-fold accuracy {accuracy}");
    assert_eq!(summary["accuracy"]["per_fold"].as_array().unwrap().len(), 10);
    let auc = f64_at(&summary, "/auc");
    assert!(auc > 0.9 && auc <= 1.0, "auc {auc}");
    assert_eq!(summary["failures_to_acquire"], 0, "deepface photos all show a face");
    // Each target is either measured or says it is not; 1e-4 needs 10,000 impostor pairs, which 520 pairs lack.
    let points = summary["tar_at_far"].as_array().unwrap();
    assert_eq!(points.len(), 3);
    for point in points {
        let status = point["status"].as_str().unwrap();
        assert!(status == "measured" || status == "not_measurable", "{point}");
    }
    assert_eq!(points[2]["status"], "not_measurable", "1e-4 needs 10,000 impostor pairs: {}", points[2]);
    let names = table_names(&report);
    for wanted in ["Summary", "TAR at FAR", "k-fold verification accuracy", "Score percentiles"] {
        assert!(names.iter().any(|n| n == wanted), "table {wanted} in {names:?}");
    }

    // Identification reuses the cached templates.
    let (ok, _, stderr) = facematch(&[
        "--recognizer",
        recognizer,
        "eval",
        "identify",
        deepface.to_str().unwrap(),
        "--statistic",
        "margin",
        "--margin-cohort",
        "5",
        "--distractors",
        "1,10",
        "--out",
        out_s,
        "--cache",
        cache_s,
    ]);
    assert!(ok, "eval identify failed:\n{stderr}");
    let (report, summary) = outputs(&out, &format!("identify-deepface-{recognizer}"));
    let identities = common::deepface_photos()
        .iter()
        .map(|p| p.split('/').next().unwrap().to_owned())
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(summary["gallery_size"].as_u64().unwrap() as usize, identities.len());
    assert_eq!(
        summary["mated_searches"].as_u64().unwrap() as usize,
        common::deepface_photos().len() - identities.len()
    );
    assert_eq!(summary["nonmated_searches"], 0, "every deepface identity has two photos or more");
    let rank_rates = summary["rank_rates"].as_array().unwrap();
    assert_eq!(rank_rates[0][0], 1);
    let rank1 = rank_rates[0][1].as_f64().unwrap();
    assert!(rank1 >= min_rank1, "{recognizer} rank-1 {rank1}");
    assert!(rank_rates.windows(2).all(|w| w[0][1].as_f64() <= w[1][1].as_f64()), "CMC never falls");
    assert_eq!(summary["fnir_at_fpir"][0]["status"], "not_measurable");
    assert_eq!(summary["statistic"], serde_json::json!({"name": "margin", "cohort": 5}));
    let sizes: Vec<u64> =
        summary["gallery_sizes"].as_array().unwrap().iter().map(|g| g["gallery_size"].as_u64().unwrap()).collect();
    let base = identities.len() as u64;
    assert_eq!(sizes, vec![base, 2 * base, 11 * base]);
    assert!(table_names(&report).iter().any(|n| n.starts_with("Decision statistics tried")));

    // Without non-mated searches there is nothing to calibrate: a clear error, not an empty table.
    let (ok, _, stderr) = facematch(&[
        "--recognizer",
        recognizer,
        "eval",
        "identify",
        deepface.to_str().unwrap(),
        "--distractors",
        "0",
        "--out",
        out_s,
        "--cache",
        cache_s,
        "--calibration-out",
        dir.path().join("calibration.toml").to_str().unwrap(),
    ]);
    assert!(!ok, "calibration without non-mated searches must fail");
    assert!(stderr.contains("no non-mated search"), "{stderr}");
}

#[test]
fn retail_0095_verify_and_identify_on_deepface() {
    verify_and_identify("face-reid-retail-0095", 0.9, 0.9);
}

#[test]
fn dlib_verify_and_identify_on_deepface() {
    verify_and_identify("dlib-resnet-v1", 0.9, 0.9);
}

#[test]
fn generated_pairs_and_a_bad_pair_list() {
    let deepface = common::deepface();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (ok, _, stderr) = facematch(&[
        "eval",
        "verify",
        deepface.to_str().unwrap(),
        "--nonmated",
        "400",
        "--seed",
        "3",
        "--out",
        out.to_str().unwrap(),
        "--cache",
        dir.path().join("cache").to_str().unwrap(),
    ]);
    assert!(ok, "eval verify with generated pairs failed:\n{stderr}");
    let (_, summary) = outputs(&out, "verify-deepface-face-reid-retail-0095");
    let photos = common::deepface_photos();
    let mut per_identity = std::collections::BTreeMap::<&str, u64>::new();
    for p in &photos {
        *per_identity.entry(p.split('/').next().unwrap()).or_default() += 1;
    }
    let mated: u64 = per_identity.values().map(|n| n * (n - 1) / 2).sum();
    assert_eq!(summary["mated_pairs"].as_u64().unwrap(), mated);
    assert_eq!(summary["nonmated_pairs"], 400);
    assert_eq!(summary["seed"], 3);

    let bad = dir.path().join("pairs.txt");
    std::fs::write(&bad, "id01 1 2\n").unwrap();
    let (ok, _, stderr) = facematch(&["eval", "verify", deepface.to_str().unwrap(), "--pairs", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("is not in the photo folder"), "{stderr}");
}
