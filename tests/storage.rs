//! Storage integrity and faults on real SQLite files, real models and real servers (the binary, or the library's
//! server over HTTP): the WAL is folded at a clean stop and while serving; backup and restore; a server killed in
//! the middle of saving its index loses nothing; an index file of another store or a damaged one is rebuilt; a store
//! behind its index file (WAL frames lost), a missing or damaged database or model and a read-only data directory
//! are refused at start with a message that says what to do; a full disk answers 503 `storage_unavailable`, and
//! `/readyz` follows it and recovers without a restart.
//!
//! The read-only directory and the full disk are real: a read-only bind mount and a small tmpfs, made in a mount
//! namespace of the server's own (`unshare`), so they work as root (CI), where permissions would not stop a write,
//! and leave nothing mounted behind.

mod common;

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{refused_start, serve_args, serve_command, spawn, spawn_server, ServerProcess};
use facematch::gallery::DATABASE_FILE;
use facematch::service::{GalleryConfig, ServiceError, WatchlistService};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};

const RECOGNIZER: &str = "face-reid-retail-0095";

/// The roles these tests act in.
const ROLES: [&str; 4] = ["admin", "enroller", "investigator", "auditor"];

/// An HTTP client that sends each request with the key of a role that may make it (`common::role_for`).
struct Client {
    http: reqwest::Client,
    keys: std::collections::HashMap<String, String>,
}

impl Client {
    /// Keys made with `facematch keys create` on the data directory, before a server opens it.
    fn minted(data_dir: &Path) -> Client {
        let keys = ROLES.iter().map(|role| (role.to_string(), common::cli_key(data_dir, role))).collect();
        Client { http: reqwest::Client::new(), keys }
    }

    /// Keys written as `<role>.json` by `facematch keys create` (inside a server's own mount namespace).
    fn from_files(dir: &Path) -> Client {
        let read = |role: &str| {
            let text = std::fs::read_to_string(dir.join(format!("{role}.json"))).expect("key file");
            serde_json::from_str::<Value>(&text).unwrap()["secret"].as_str().unwrap().to_owned()
        };
        Client { http: reqwest::Client::new(), keys: ROLES.iter().map(|role| (role.to_string(), read(role))).collect() }
    }

    fn request(&self, method: Method, url: String) -> RequestBuilder {
        let path = url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap_or_default();
        let role = common::role_for(&method, &path).to_string();
        self.http.request(method, url).bearer_auth(&self.keys[&role]).header("x-facematch-purpose", "storage test")
    }

    fn get(&self, url: String) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    fn post(&self, url: String) -> RequestBuilder {
        self.request(Method::POST, url)
    }
}

fn gallery(dir: &Path) -> GalleryConfig {
    // No periodic checkpoints unless a test asks: the tests decide when the WAL is folded.
    GalleryConfig { data_dir: dir.to_path_buf(), checkpoint_interval_s: 0, ..Default::default() }
}

fn open(dir: &Path) -> Result<WatchlistService, ServiceError> {
    let config = common::config_for(RECOGNIZER);
    WatchlistService::open(Arc::new(common::pipeline(RECOGNIZER)), gallery(dir), config.quality)
}

fn start(dir: &Path) -> common::TestServer {
    common::TestServer::start_with(gallery(dir), facematch::http::ServerConfig::default())
}

fn photos() -> Vec<PathBuf> {
    common::deepface_photos().into_iter().map(|rel| common::deepface().join(rel)).collect()
}

fn photos_of(id: &str) -> Vec<PathBuf> {
    photos().into_iter().filter(|p| p.parent().is_some_and(|d| d.ends_with(id))).collect()
}

/// A subject on watchlist `wanted` (made on first use); returns its id.
async fn subject(client: &Client, base: &str, name: &str) -> i64 {
    let r = client.post(format!("{base}/v1/watchlists")).json(&json!({ "name": "wanted" })).send().await.unwrap();
    assert!(matches!(r.status(), StatusCode::CREATED | StatusCode::CONFLICT), "{}", r.text().await.unwrap());
    let r = client
        .post(format!("{base}/v1/subjects"))
        .json(&json!({ "watchlist": "wanted", "display_name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
}

async fn enroll(client: &Client, base: &str, subject: i64, photo: &Path) -> reqwest::Response {
    // `face=0`: group photos are fine here, the tests are about storage.
    let form = common::photo_form(&[("photo", photo)]).text("face", "0");
    client.post(format!("{base}/v1/subjects/{subject}/faces")).multipart(form).send().await.unwrap()
}

/// Enrolls every photo; returns the acknowledged template ids.
async fn enroll_ok(client: &Client, base: &str, subject: i64, photos: &[PathBuf]) -> Vec<i64> {
    let mut ids = Vec::new();
    for photo in photos {
        let r = enroll(client, base, subject, photo).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{}", photo.display());
        ids.push(r.json::<Value>().await.unwrap()["results"][0]["template"]["id"].as_i64().unwrap());
    }
    ids
}

async fn templates_of(client: &Client, base: &str, subject: i64) -> Vec<i64> {
    let faces: Value = client.get(format!("{base}/v1/subjects/{subject}/faces")).send().await.unwrap().json().await.unwrap();
    faces["items"].as_array().unwrap().iter().map(|t| t["id"].as_i64().unwrap()).collect()
}

/// The candidates of an investigation search with `photo`, best first.
async fn search(client: &Client, base: &str, photo: &Path) -> Vec<Value> {
    let form = common::photo_form(&[("photo", photo)]).text("mode", "investigation").text("k", "10");
    let r = client
        .post(format!("{base}/v1/search"))
                .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let result: Value = r.json().await.unwrap();
    result["faces"][0]["candidates"].as_array().expect("candidates").clone()
}

/// The candidates of an investigation search with `photo`, best first, as (subject, template).
async fn candidates(client: &Client, base: &str, photo: &Path) -> Vec<(i64, i64)> {
    let found = search(client, base, photo).await;
    found.iter().map(|c| (c["subject_id"].as_i64().unwrap(), c["template_id"].as_i64().unwrap())).collect()
}

async fn readyz(client: &Client, base: &str) -> (StatusCode, Value) {
    let r = client.get(format!("{base}/readyz")).send().await.unwrap();
    (r.status(), r.json().await.unwrap())
}

async fn audit_verify(client: &Client, base: &str) -> Value {
    let r = client.get(format!("{base}/v1/audit/verify")).send().await.unwrap();
    r.json().await.unwrap()
}

fn sorted(mut ids: Vec<i64>) -> Vec<i64> {
    ids.sort_unstable();
    ids
}

fn wal(dir: &Path) -> PathBuf {
    dir.join(format!("{DATABASE_FILE}-wal"))
}

fn index_file(dir: &Path) -> PathBuf {
    dir.join(format!("index-{RECOGNIZER}-hnsw.bin"))
}

fn wal_is_empty(dir: &Path) -> bool {
    std::fs::metadata(wal(dir)).map_or(true, |m| m.len() == 0)
}

/// SIGTERM, and the clean exit that follows it (index saved, WAL folded).
fn stop_cleanly(mut server: ServerProcess) {
    let status = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "clean exit: {exit:?}");
}

/// A server over `dir` with one subject of that name, and a client.
async fn serving(dir: &Path, name: &str) -> (Client, common::TestServer, i64) {
    let client = Client::minted(dir);
    let server = start(dir);
    let subject = subject(&client, &server.base, name).await;
    (client, server, subject)
}

/// A gallery of the first `n` photos on one subject in `dir`, stopped cleanly (index saved, WAL folded).
async fn gallery_of(dir: &Path, n: usize) {
    let (client, server, subject) = serving(dir, "many photos").await;
    enroll_ok(&client, &server.base, subject, &photos()[..n]).await;
    server.stop();
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").expect("/proc is mounted").uid() == 0
}

/// `facematch serve` over `data_dir` in a mount namespace of its own, where the shell `setup` first changed what
/// `data_dir` is. Root (CI) needs no user namespace for it; another user gets one where the system allows it. The
/// mounts live and die with the server: nothing stays mounted if a test fails.
fn serve_in_mount_namespace(data_dir: &Path, setup: &str) -> Command {
    let mut command = Command::new("unshare");
    if !running_as_root() {
        command.arg("--map-root-user");
    }
    command
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!("{setup} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_facematch"));
    serve_args(&mut command, data_dir);
    command
}

/// Waits for `condition`, checking every 50 ms, for up to `deadline`.
fn wait_for(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !condition() {
        assert!(Instant::now() < until, "{what}: not within {deadline:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_leaves_every_row_in_the_main_file() {
    let dir = tempfile::tempdir().unwrap();
    gallery_of(dir.path(), 4).await;
    assert!(wal_is_empty(dir.path()), "rows left in the wal");

    // A site that copies only the main file gets the whole gallery.
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join(DATABASE_FILE), copy.path().join(DATABASE_FILE)).unwrap();
    let service = open(copy.path()).expect("the copied main file opens");
    assert_eq!(service.index_state().unwrap().stats.live, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_folded_into_the_main_file_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::minted(dir.path());
    let config = GalleryConfig { checkpoint_interval_s: 1, ..gallery(dir.path()) };
    let server = common::TestServer::start_with(config, facematch::http::ServerConfig::default());
    let subject = subject(&client, &server.base, "many photos").await;
    enroll_ok(&client, &server.base, subject, &photos()[..2]).await;
    assert!(!wal_is_empty(dir.path()), "the enrollments went to the wal first");
    // Nothing writes now but the periodic checkpoint, which empties the WAL (TRUNCATE) within a second or so.
    wait_for("the periodic checkpoint folds the wal", Duration::from_secs(60), || wal_is_empty(dir.path()));
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join(DATABASE_FILE), copy.path().join(DATABASE_FILE)).unwrap();
    assert_eq!(open(copy.path()).expect("the main file opens alone").index_state().unwrap().stats.live, 2);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_copy_a_running_gallery_that_finds_the_same_people() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::minted(dir.path());
    let server = start(dir.path());
    let (first, second) = (photos_of("id01"), photos_of("id02"));
    let one = subject(&client, &server.base, "first").await;
    let two = subject(&client, &server.base, "second").await;
    enroll_ok(&client, &server.base, one, &first[..3]).await;
    enroll_ok(&client, &server.base, two, &second[..3]).await;
    let probes = [&first[3], &second[3]];
    let mut before = Vec::new();
    for probe in probes {
        before.push(candidates(&client, &server.base, probe).await);
    }
    assert_eq!(before[0][0].0, one, "{before:?}");
    assert_eq!(before[1][0].0, two, "{before:?}");

    // Online: the server keeps running (and writing) while the backup is taken.
    let out = tempfile::tempdir().unwrap();
    let backup = out.path().join("gallery.backup");
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_facematch"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .expect("facematch runs")
    };
    let data_dir = dir.path().to_str().unwrap();
    let made = cli(&["backup", "--data-dir", data_dir, "--to", backup.to_str().unwrap()]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let report: Value = serde_json::from_slice(&made.stdout).unwrap();
    assert_eq!(report["verified"]["templates"], 6, "{report}");
    assert_eq!(report["verified"]["subjects"], 2, "{report}");
    enroll_ok(&client, &server.base, one, &first[4..5]).await;
    let again = cli(&["backup", "--data-dir", data_dir, "--to", backup.to_str().unwrap()]);
    assert!(!again.status.success(), "an existing backup file is never overwritten");
    server.stop();

    // A data directory that is not empty is refused without --force, and left as it was.
    let refused = cli(&["restore", "--data-dir", data_dir, "--from", backup.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not empty"), "{}", String::from_utf8_lossy(&refused.stderr));
    assert_eq!(open(dir.path()).unwrap().index_state().unwrap().stats.live, 7);

    let restored = cli(&["restore", "--force", "--data-dir", data_dir, "--from", backup.to_str().unwrap()]);
    assert!(restored.status.success(), "{}", String::from_utf8_lossy(&restored.stderr));
    let fresh = tempfile::tempdir().unwrap();
    let into_empty = cli(&["restore", "--data-dir", fresh.path().to_str().unwrap(), "--from", backup.to_str().unwrap()]);
    assert!(into_empty.status.success(), "{}", String::from_utf8_lossy(&into_empty.stderr));

    for restored in [dir.path(), fresh.path()] {
        let server = start(restored);
        let (status, ready) = readyz(&client, &server.base).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ready["index"]["stats"]["live"], 6, "the backup's snapshot: {ready}");
        assert_eq!(ready["index"]["origin"], "rebuilt", "the index is rebuilt from the restored store");
        for (probe, found) in probes.iter().zip(&before) {
            assert_eq!(&candidates(&client, &server.base, probe).await, found, "the same people, the same templates");
        }
        let audit: Value = client
            .get(server.url("/v1/audit?per_page=200"))
            
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
        // Newest first: the two searches above, then the restore (the test server's keys and the anchor started
        // on the restored trail aside).
        let before: Vec<&str> = actions
            .iter()
            .copied()
            .take_while(|action| *action != "restore")
            .filter(|action| !matches!(*action, "create_key" | "anchor_started"))
            .collect();
        assert!(before == ["search", "search"] && actions.contains(&"restore"), "{actions:?}");
        assert!(!actions.contains(&"backup"), "the backup's own entry is written after its snapshot: {actions:?}");
        assert_eq!(audit_verify(&client, &server.base).await["status"], "intact");
        server.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_in_the_middle_of_saving_its_index_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::minted(dir.path());
    let all = photos();
    // A first life ends cleanly: its index file is saved at its generation.
    let server = spawn_server(dir.path());
    let subject = subject(&client, &server.base, "many photos").await;
    let mut acknowledged = enroll_ok(&client, &server.base, subject, &all[..2]).await;
    stop_cleanly(server);
    let first_index = std::fs::read(index_file(dir.path())).unwrap();

    // The second life enrolls more, then dies in the middle of writing its index at shutdown: a file-size limit far
    // below the index's size makes the kernel kill it (SIGXFSZ) at the write that passes it, at a known point of
    // the save and with no clean-up, as kill -9 would.
    let mut server = spawn_server(dir.path());
    acknowledged.extend(enroll_ok(&client, &server.base, subject, &all[2..6]).await);
    let pid = server.child.id().to_string();
    let limited = Command::new("prlimit").args(["--pid", &pid, "--fsize=2048", "--core=0"]).status().unwrap();
    assert!(limited.success());
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let exit = server.child.wait().unwrap();
    assert_eq!(exit.signal(), Some(25), "killed by SIGXFSZ while writing the index: {exit:?}");
    let partial: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert_eq!(partial.len(), 1, "the interrupted save left its temporary file: {partial:?}");
    assert_eq!(std::fs::metadata(&partial[0]).unwrap().len(), 2048, "cut off at the limit");
    assert_eq!(std::fs::read(index_file(dir.path())).unwrap(), first_index, "the index file itself is untouched");
    assert!(!wal_is_empty(dir.path()), "no checkpoint ran: the second life's enrollments are in the wal");

    let server = spawn_server(dir.path());
    assert!(
        server.startup.iter().any(|l| l.contains("removed an interrupted index save")),
        "{:#?}",
        server.startup
    );
    assert!(!partial[0].exists());
    let (status, ready) = readyz(&client, &server.base).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready["index"]["origin"], "rebuilt", "the first life's index is stale: {ready}");
    assert_eq!(ready["index"]["stats"]["live"], 6, "{ready}");
    let stored = templates_of(&client, &server.base, subject).await;
    for id in &acknowledged {
        assert!(stored.contains(id), "acknowledged template {id} lost (stored: {stored:?})");
    }
    let found = candidates(&client, &server.base, &all[5]).await;
    assert_eq!(found[0], (subject, acknowledged[5]), "the newest template is searchable: {found:?}");
    assert_eq!(audit_verify(&client, &server.base).await["status"], "intact");
    server.kill();
}

/// Copies the files of a running gallery as a careless site would: the main file, then the WAL.
fn copy_of_running_files(dir: &Path, to: &Path) {
    std::fs::copy(dir.join(DATABASE_FILE), to.join("main")).unwrap();
    std::fs::copy(wal(dir), to.join("wal")).unwrap();
}

/// Puts copied files back with `flip` applied to the WAL's bytes, as a damaged disk or a torn copy would leave them.
fn put_back(copy: &Path, dir: &Path, flip: impl FnOnce(&mut Vec<u8>)) {
    std::fs::copy(copy.join("main"), dir.join(DATABASE_FILE)).unwrap();
    let mut frames = std::fs::read(copy.join("wal")).unwrap();
    flip(&mut frames);
    std::fs::write(wal(dir), &frames).unwrap();
    let _ = std::fs::remove_file(dir.join(format!("{DATABASE_FILE}-shm")));
}

fn flip(bytes: &mut [u8]) {
    for byte in bytes {
        *byte ^= 0xff;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_wal_bytes_that_lose_enrollments_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (client, server, subject) = serving(dir.path(), "many photos").await;
    enroll_ok(&client, &server.base, subject, &photos()[..3]).await;
    let copy = tempfile::tempdir().unwrap();
    copy_of_running_files(dir.path(), copy.path());
    enroll_ok(&client, &server.base, subject, &photos()[3..6]).await;
    server.stop(); // saves the index at the newest generation

    // SQLite drops every WAL frame from the first one whose checksum fails: the copy's last enrollments are gone.
    put_back(copy.path(), dir.path(), |frames| {
        let at = frames.len() * 3 / 4;
        flip(&mut frames[at..at + 64]);
    });
    // The index file's stamp and the audit anchor each see it; the anchor is checked first.
    let error = open(dir.path()).err().expect("a store behind its index file is refused");
    assert!(matches!(error.code(), "store_behind_index" | "audit_anchor_mismatch"), "{error}");
    let stderr = refused_start(serve_command(dir.path()));
    assert!(
        (stderr.contains("behind its index file") || stderr.contains("went backwards")) && stderr.contains("restore"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_wal_bytes_that_lose_only_audit_entries_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (client, server, subject) = serving(dir.path(), "many photos").await;
    let all = photos();
    enroll_ok(&client, &server.base, subject, &all[..2]).await;
    // Searches change no template, so the generation stays where it is; only their audit entries go to the WAL.
    for probe in &all[2..4] {
        candidates(&client, &server.base, probe).await;
    }
    let copy = tempfile::tempdir().unwrap();
    copy_of_running_files(dir.path(), copy.path());
    server.stop();

    // The last frame, the last search's audit entry, fails its checksum: the searches' trail is one entry short.
    put_back(copy.path(), dir.path(), |frames| {
        let end = frames.len();
        flip(&mut frames[end - 64..]);
    });
    let error = open(dir.path()).err().expect("a store whose audit trail lost its head is refused");
    assert!(matches!(error.code(), "store_behind_index" | "audit_anchor_mismatch"), "{error}");
    assert!(error.to_string().contains("audit entry") || error.to_string().contains("lacks entry"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_file_of_another_store_or_a_damaged_one_is_rebuilt() {
    let (ours, theirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    gallery_of(ours.path(), 2).await;
    let (client, server, subject) = serving(theirs.path(), "someone else").await;
    enroll_ok(&client, &server.base, subject, &photos()[4..6]).await;
    server.stop();
    // Same generation, same audit head, other store: without store identities this loaded without a word.
    // Our keys first: a command on the data directory would itself find (and replace) the foreign index.
    drop(client);
    let client = Client::minted(ours.path());
    std::fs::copy(index_file(theirs.path()), index_file(ours.path())).unwrap();
    let server = spawn_server(ours.path());
    assert!(
        server.startup.iter().any(|l| l.contains("WARN") && l.contains("belongs to another gallery store")),
        "{:#?}",
        server.startup
    );
    let (_, ready) = readyz(&client, &server.base).await;
    assert_eq!(ready["index"]["origin"], "rebuilt", "{ready}");
    assert_eq!(ready["index"]["stats"]["live"], 2);
    // Both galleries number their templates 1 and 2: an index of the other one would answer with its faces under
    // our ids. The photo of our template 1 finds it as itself.
    let found = search(&client, &server.base, &photos()[0]).await;
    assert_eq!(found[0]["template_id"], 1, "{found:?}");
    assert!(found[0]["similarity"].as_f64().unwrap() > 0.99, "our own face, not another gallery's: {found:?}");
    stop_cleanly(server);
    assert_eq!(format!("{:?}", open(ours.path()).unwrap().index_state().unwrap().origin), "Loaded");

    let mut bytes = std::fs::read(index_file(ours.path())).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(index_file(ours.path()), &bytes).unwrap();
    let service = open(ours.path()).expect("opens");
    let state = service.index_state().unwrap();
    assert_eq!(format!("{:?}", state.origin), "Rebuilt");
    assert_eq!(state.stats.live, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_damaged_database_beside_its_index_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    gallery_of(dir.path(), 1).await;
    let database = dir.path().join(DATABASE_FILE);
    let kept = std::fs::read(&database).unwrap();

    std::fs::remove_file(&database).unwrap();
    assert_eq!(open(dir.path()).err().expect("refused").code(), "database_missing");
    let stderr = refused_start(serve_command(dir.path()));
    assert!(stderr.contains("is missing but its index file") && stderr.contains("facematch restore"), "{stderr}");
    assert!(!database.exists(), "no empty gallery was made in its place");

    // The main file of a running server copied without its WAL: every row, the schema too, is still in the WAL.
    let running = tempfile::tempdir().unwrap();
    let server = start(running.path());
    std::fs::copy(running.path().join(DATABASE_FILE), &database).unwrap();
    server.stop();
    assert_eq!(open(dir.path()).err().expect("refused").code(), "database_missing");
    let stderr = refused_start(serve_command(dir.path()));
    assert!(stderr.contains("is empty but its index file"), "{stderr}");

    std::fs::write(&database, vec![0x5a; kept.len()]).unwrap();
    assert_eq!(open(dir.path()).err().expect("refused").code(), "database_damaged");
    let stderr = refused_start(serve_command(dir.path()));
    assert!(stderr.contains("database damaged") && stderr.contains("restore it from a backup"), "{stderr}");

    std::fs::write(&database, &kept).unwrap();
    assert_eq!(open(dir.path()).expect("the real file opens again").index_state().unwrap().stats.live, 1);
}

#[test]
fn a_missing_or_damaged_model_file_is_refused() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let copy = tempfile::tempdir().unwrap();
    let recognizer = copy.path().join(format!("{RECOGNIZER}.onnx"));
    for entry in std::fs::read_dir(&models).unwrap() {
        let path = entry.unwrap().path();
        let to = copy.path().join(path.file_name().unwrap());
        if to == recognizer || path.extension().is_none_or(|e| e != "onnx") {
            std::fs::copy(&path, &to).unwrap();
        } else {
            std::os::unix::fs::symlink(path.canonicalize().unwrap(), &to).unwrap();
        }
    }
    let data = tempfile::tempdir().unwrap();
    let serve = || {
        let mut command = serve_command(data.path());
        command.env("FACEMATCH_MODELS__DIR", copy.path());
        command
    };

    let mut bytes = std::fs::read(&recognizer).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&recognizer, &bytes).unwrap();
    let stderr = refused_start(serve());
    assert!(stderr.contains("sha256"), "{stderr}");

    std::fs::remove_file(&recognizer).unwrap();
    let stderr = refused_start(serve());
    assert!(stderr.contains("is missing"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_data_directory_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    gallery_of(dir.path(), 1).await;
    let path = dir.path().display();
    let stderr = refused_start(serve_in_mount_namespace(dir.path(), &format!("mount --bind -o ro '{path}' '{path}'")));
    assert!(stderr.contains("cannot be written (read-only or full)"), "{stderr}");
    assert_eq!(open(dir.path()).expect("the gallery is intact").index_state().unwrap().stats.live, 1);
}

/// Fills the file system under `dir` (as the server sees it) to the last page; returns the filler file.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).expect("filler file");
    for chunk in [1 << 20, 4096, 1] {
        let block = vec![0x5a_u8; chunk];
        let full = loop {
            if let Err(error) = file.write_all(&block).and_then(|()| file.sync_all()) {
                break error;
            }
        };
        assert_eq!(full.kind(), std::io::ErrorKind::StorageFull, "{full}");
    }
    filler
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_readiness_recovers_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().display();
    let keys = tempfile::tempdir().unwrap();
    let mint = format!(
        "for r in {}; do \"$0\" keys create --name \"test $r\" --role $r --data-dir '{path}' > '{}/'$r.json || exit 1; done",
        ROLES.join(" "),
        keys.path().display()
    );
    let setup = format!("mount -t tmpfs -o size=24m tmpfs '{path}' && {mint}");
    let server = spawn(serve_in_mount_namespace(dir.path(), &setup));
    // The data directory as the server sees it: its own tmpfs, reached through its root.
    let seen = PathBuf::from(format!("/proc/{}/root{path}", server.child.id()));
    assert!(seen.join(DATABASE_FILE).is_file() && !dir.path().join(DATABASE_FILE).exists(), "the gallery is on the tmpfs");
    let client = Client::from_files(keys.path());
    let subject = subject(&client, &server.base, "many photos").await;
    let all = photos();
    let mut acknowledged = enroll_ok(&client, &server.base, subject, &all[..2]).await;
    assert_eq!(readyz(&client, &server.base).await.0, StatusCode::OK);

    let filler = fill(&seen);
    let mut refused = None;
    for photo in &all[2..12] {
        let r = enroll(&client, &server.base, subject, photo).await;
        if r.status() == StatusCode::CREATED {
            // Room the WAL already had; the disk is full all the same.
            acknowledged.push(r.json::<Value>().await.unwrap()["results"][0]["template"]["id"].as_i64().unwrap());
            continue;
        }
        let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        refused = Some((r.status(), retry_after, r.json::<Value>().await.unwrap()));
        break;
    }
    let (status, retry_after, body) = refused.expect("a full disk refuses an enrollment");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("disk is full"), "{body}");
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().is_ok()), "a 503 says when to retry");
    let (status, body) = readyz(&client, &server.base).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "storage_unavailable");
    // Reads go on while writes cannot.
    acknowledged.sort_unstable();
    assert_eq!(sorted(templates_of(&client, &server.base, subject).await), acknowledged);
    assert_eq!(readyz(&client, &server.base).await.0, StatusCode::SERVICE_UNAVAILABLE, "still full");

    std::fs::remove_file(filler).unwrap();
    assert_eq!(readyz(&client, &server.base).await.0, StatusCode::OK, "ready again once there is room, no restart");
    acknowledged.extend(enroll_ok(&client, &server.base, subject, &all[12..13]).await);
    assert_eq!(sorted(templates_of(&client, &server.base, subject).await), acknowledged);
    assert_eq!(audit_verify(&client, &server.base).await["status"], "intact");
    server.kill();
}
