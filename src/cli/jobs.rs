//! `facematch jobs submit|status|cancel|results`: investigators' bulk search jobs against a running server, over
//! HTTP with an API key. A folder's photos are streamed from disk one `photo` part each (nothing is zipped); a zip
//! is sent as one `archive` part. After submitting, a progress bar follows the job until it ends.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::client::{Api, ServerArgs};
use crate::service::{sniff, Sniffed};

/// How often the progress bar asks how the job stands.
const POLL_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// Submit a folder of photos or a zip archive as a job, then follow it with a progress bar.
    Submit {
        /// A folder (its image files, not its subfolders) or a `.zip`.
        path: PathBuf,
        /// The case the job is for.
        #[arg(long)]
        case: String,
        /// Search this watchlist (repeatable; default: all of the key's).
        #[arg(long = "watchlist")]
        watchlists: Vec<String>,
        /// A candidate at or below this FPIR becomes a hit (default: each watchlist's alert FPIR).
        #[arg(long)]
        threshold_fpir: Option<f64>,
        /// Candidates kept per face (default 5, at most 50).
        #[arg(long)]
        k: Option<usize>,
        /// Why, for the audit trail (default: `case <case>`).
        #[arg(long)]
        purpose: Option<String>,
        /// Print the job and return at once.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print a job with its progress.
    Status {
        id: i64,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Stop a job between two photos.
    Cancel {
        id: i64,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Write a job's per-photo results: JSON lines, or CSV with one row per candidate.
    Results {
        id: i64,
        /// jsonl (default) or csv.
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// photo (default) or best_score.
        #[arg(long, default_value = "photo")]
        sort: String,
        /// Write to this file (default: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub fn run(command: &JobsCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        match command {
            JobsCommand::Submit { path, case, watchlists, threshold_fpir, k, purpose, no_wait, server } => {
                let api = Api::new(server, purpose.as_deref())?;
                let job = submit(&api, path, case, watchlists, *threshold_fpir, *k).await?;
                if *no_wait {
                    println!("{}", serde_json::to_string_pretty(&job)?);
                    return Ok(ExitCode::SUCCESS);
                }
                follow(&api, &job).await
            }
            JobsCommand::Status { id, server } => {
                let api = Api::new(server, None)?;
                let job = api.json(api.client.get(api.url(&format!("/v1/jobs/{id}")))).await?;
                println!("{}", serde_json::to_string_pretty(&job)?);
                Ok(ExitCode::SUCCESS)
            }
            JobsCommand::Cancel { id, server } => {
                let api = Api::new(server, None)?;
                let job = api.json(api.client.post(api.url(&format!("/v1/jobs/{id}/cancel")))).await?;
                println!("{}", serde_json::to_string_pretty(&job)?);
                Ok(ExitCode::SUCCESS)
            }
            JobsCommand::Results { id, format, sort, output, server } => {
                let api = Api::new(server, None)?;
                results(&api, *id, format, sort, output.as_deref()).await
            }
        }
    })
}

async fn submit(
    api: &Api,
    path: &Path,
    case: &str,
    watchlists: &[String],
    threshold_fpir: Option<f64>,
    k: Option<usize>,
) -> anyhow::Result<Value> {
    let mut form = reqwest::multipart::Form::new().text("case", case.to_owned());
    for name in watchlists {
        form = form.text("watchlist", name.clone());
    }
    if let Some(threshold) = threshold_fpir {
        form = form.text("threshold_fpir", threshold.to_string());
    }
    if let Some(k) = k {
        form = form.text("k", k.to_string());
    }
    if path.is_dir() {
        let photos = folder_photos(path)?;
        anyhow::ensure!(!photos.is_empty(), "{} holds no photo", path.display());
        eprintln!("sending {} photos from {}", photos.len(), path.display());
        for photo in photos {
            let part = reqwest::multipart::Part::file(&photo).await.with_context(|| format!("{}", photo.display()))?;
            form = form.part("photo", part);
        }
    } else {
        let part = reqwest::multipart::Part::file(path).await.with_context(|| format!("{}", path.display()))?;
        form = form.part("archive", part.mime_str("application/zip")?);
    }
    api.json(api.client.post(api.url("/v1/jobs")).multipart(form)).await
}

/// The folder's image files (by their first bytes), in name order; subfolders are not walked.
fn folder_photos(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut photos = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let path = entry?.path();
        if !path.is_file() {
            continue;
        }
        let mut head = [0u8; 16];
        let read = std::io::Read::read(&mut std::fs::File::open(&path)?, &mut head)?;
        if sniff(&head[..read]) == Sniffed::Image {
            photos.push(path);
        }
    }
    photos.sort();
    Ok(photos)
}

/// Follows the job with a progress bar until it ends; a job that did not finish is a failure exit.
async fn follow(api: &Api, job: &Value) -> anyhow::Result<ExitCode> {
    let id = job["id"].as_i64().context("the server's answer has no job id")?;
    let bar = ProgressBar::new(job["total"].as_u64().unwrap_or(0));
    bar.set_style(
        ProgressStyle::with_template("job {prefix} {bar:40} {pos}/{len} photos {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(id.to_string());
    let job = loop {
        let job = api.json(api.client.get(api.url(&format!("/v1/jobs/{id}")))).await?;
        bar.set_length(job["total"].as_u64().unwrap_or(0));
        bar.set_position(job["done"].as_u64().unwrap_or(0));
        let eta = job["eta_s"].as_f64().map(|s| format!(", eta {}", humantime::format_duration(Duration::from_secs(s.round() as u64)))).unwrap_or_default();
        bar.set_message(format!("{} faces, {} hits, {} refused{eta}", job["faces"], job["hits"], job["refused"]));
        if matches!(job["state"].as_str(), Some("done" | "cancelled" | "failed")) {
            break job;
        }
        tokio::time::sleep(POLL_EVERY).await;
    };
    bar.finish();
    for refusal in job["refusals"].as_array().into_iter().flatten() {
        eprintln!("refused {}: {}: {}", refusal["photo"].as_str().unwrap_or("?"), refusal["code"].as_str().unwrap_or("?"), refusal["message"].as_str().unwrap_or(""));
    }
    println!("{}", serde_json::to_string_pretty(&job)?);
    Ok(if job["state"] == "done" { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Streams the results to the file or standard output as they arrive.
async fn results(api: &Api, id: i64, format: &str, sort: &str, output: Option<&Path>) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(format.chars().chain(sort.chars()).all(|c| c.is_ascii_alphanumeric() || c == '_'), "format and sort are words");
    let url = api.url(&format!("/v1/jobs/{id}/results?format={format}&sort={sort}"));
    let response = api.client.get(url).send().await?;
    if !response.status().is_success() {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        anyhow::bail!("{status}: {}", body["error"]["message"].as_str().unwrap_or("no message"));
    }
    let mut out: Box<dyn Write> = match output {
        Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("{}", path.display()))?)),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        out.write_all(&chunk?)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
