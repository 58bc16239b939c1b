//! The load generator against a real in-process server: a seeded synthetic gallery, the real models and a real
//! photo. Its counts must agree with what it sent and with what the server's `/metrics` saw.

mod common;

use std::time::Duration;

use common::TestServer;
use facematch::gallery::SqliteStore;
use facematch::http::ServerConfig;
use facematch::service::Role;
use facematch::loadgen::{load_report, run_load, seed_gallery, LoadPlan, ProbeMode, ProbePhoto, SeedPlan};
use indicatif::ProgressBar;

const MODEL: &str = "face-reid-retail-0095";

#[test]
fn load_generator_counts_agree_with_the_server() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        let plan = SeedPlan {
            model_id: MODEL.into(),
            dimension: 256,
            templates: 300,
            watchlists: 2,
            templates_per_subject: 1,
            batch: 128,
            clusters: 16,
            seed: 3,
            alert_fpir: 0.003,
        };
        let summary = seed_gallery(&store, &plan, &|_| {}).unwrap();
        assert_eq!((summary.templates, summary.subjects), (300, 300));
    }
    let test_server = TestServer::start(dir.path(), ServerConfig::default());

    // A portrait with exactly one face (the pipeline tests rely on the same photo).
    let photo = ProbePhoto::read(&common::deepface().join("id01").join("img11.jpg")).unwrap();
    let plan = LoadPlan {
        base_url: test_server.base.clone(),
        photos: vec![photo],
        concurrency: vec![2],
        requests: 10,
        max_duration: Duration::from_secs(600),
        mode: ProbeMode::Investigation,
        k: Some(5),
        warmup: 1,
        request_timeout: Duration::from_secs(120),
        api_key: Some(test_server.key(Role::Investigator).to_owned()),
        metrics_key: Some(test_server.key(Role::Admin).to_owned()),
    };
    let outcome = run_load(&plan, &ProgressBar::hidden()).unwrap();
    assert_eq!(outcome.model_id.as_deref(), Some(MODEL));
    assert_eq!(outcome.gallery_templates, Some(300));
    assert!(outcome.warmup_errors.is_empty(), "{:?}", outcome.warmup_errors);
    let level = &outcome.levels[0];
    assert_eq!((level.sent, level.ok, level.errors), (10, 10, 0), "{level:?}");
    assert_eq!(level.status_counts.get(&200), Some(&10));
    assert_eq!(level.stopped_by, "request count");
    assert_eq!(level.faces_per_answer, 1.0);
    let latency = level.latency_ms.expect("ten successes");
    assert_eq!(latency.count, 10);
    assert!(latency.p50 <= latency.max && latency.p50 > 0.0, "{latency:?}");
    // The server saw exactly the timed requests, each through every stage.
    assert_eq!(level.server.search_route.map(|r| r.count), Some(10));
    for stage in facematch::loadgen::SERVER_STAGES {
        let mean = level.server.stages.get(stage).unwrap_or_else(|| panic!("stage {stage} missing: {:?}", level.server));
        assert_eq!(mean.count, 10, "{stage}");
        assert!(mean.mean_ms > 0.0, "{stage}");
    }
    // Seen from the client, a request cannot be faster than the server's handler for it.
    assert!(latency.mean >= level.server.search_route.map_or(0.0, |r| r.mean_ms));

    let figures = dir.path().join("report");
    let report = load_report(&outcome, &plan, Vec::new(), Some(&figures)).unwrap();
    assert_eq!(report.gallery_sizes, vec![300]);
    assert_eq!(report.figures.len(), 2);
    assert!(report.figures.iter().all(|f| f.path.is_file()));
    assert!(report.render_markdown().contains("| 2 | 10 | 10 | 0 |"), "{}", report.render_markdown());

    // Refusals are counted by status and by the code of the JSON error body, as the server counts them.
    let not_a_photo = ProbePhoto { name: "notes.jpg".into(), bytes: b"this is not a photo".to_vec() };
    let refused = LoadPlan { photos: vec![not_a_photo], concurrency: vec![1], requests: 3, warmup: 0, ..plan };
    let outcome = run_load(&refused, &ProgressBar::hidden()).unwrap();
    let level = &outcome.levels[0];
    assert_eq!((level.sent, level.ok, level.errors), (3, 0, 3), "{level:?}");
    assert!(level.latency_ms.is_none());
    assert_eq!(level.errors_by_code.values().sum::<usize>(), 3);
    assert!(!level.errors_by_code.contains_key("unparsed"), "{:?}", level.errors_by_code);
    assert!(level.status_counts.keys().all(|s| (400..500).contains(s)), "{:?}", level.status_counts);
    let client: Vec<(String, u64)> = level.errors_by_code.iter().map(|(c, n)| (c.clone(), *n as u64)).collect();
    let server: Vec<(String, u64)> = level.server.errors_by_code.iter().map(|(c, n)| (c.clone(), *n)).collect();
    assert_eq!(client, server);
    test_server.stop();
}

/// A short soak beside slow senders against a server with one-second timeouts: every scheduled search is sent and
/// answered, and every slow connection is closed by the server rather than held.
#[test]
fn soak_answers_every_arrival_while_slow_senders_are_cut_off() {
    use facematch::loadgen::soak::{run_soak, SlowStyle, SoakPlan};

    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        let plan = SeedPlan {
            model_id: MODEL.into(),
            dimension: 256,
            templates: 50,
            watchlists: 1,
            templates_per_subject: 1,
            batch: 50,
            clusters: 4,
            seed: 5,
            alert_fpir: 0.003,
        };
        seed_gallery(&store, &plan, &|_| {}).unwrap();
    }
    let server = ServerConfig { header_timeout_s: 1, idle_timeout_s: 1, ..ServerConfig::default() };
    let test_server = TestServer::start(dir.path(), server);
    let plan = SoakPlan {
        base_url: test_server.base.clone(),
        photos: vec![ProbePhoto::read(&common::deepface().join("id01").join("img11.jpg")).unwrap()],
        rate_per_second: 4.0,
        duration: Duration::from_secs(4),
        window: Duration::from_secs(2),
        max_in_flight: 64,
        mode: ProbeMode::Identification,
        request_timeout: Duration::from_secs(120),
        api_key: Some(test_server.key(Role::Checkpoint).to_owned()),
        // The server runs in this process: its memory and open files are this process's.
        server_pid: Some(std::process::id()),
        slow_senders: 6,
        slow_style: SlowStyle::Mixed,
    };
    let outcome = run_soak(&plan, &|_| {}).unwrap();
    let totals = &outcome.totals;
    assert_eq!(outcome.windows.len(), 2);
    // Arrivals every 250 ms for 4 s: 16, all sent, all answered.
    assert_eq!(outcome.windows.iter().map(|w| w.scheduled).sum::<usize>(), 16);
    assert_eq!((totals.sent, totals.ok, totals.not_sent), (16, 16, 0), "{totals:?}");
    assert_eq!(totals.status_counts.get(&200), Some(&16));
    assert!(outcome.windows.iter().all(|w| w.server.is_some_and(|s| s.rss_mib > 0.0 && s.open_files > 0)));
    // Each slow sender was cut off at least once, long before the run ended.
    assert!(totals.slow_closed_by_server >= 6, "{totals:?}");
    assert!(totals.slow_longest_held_s < 3.5, "{totals:?}");
    test_server.stop();
}
