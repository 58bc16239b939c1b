//! `facematch bench seed`: fills a data directory with synthetic templates (seeded clustered unit vectors) for
//! gallery-size benchmarks, through the store's own durable batches.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::progress_bar;
use crate::config::Config;
use crate::gallery::{AuditEntry, GalleryError, GalleryStore, NewSubject, NewTemplate, NewWatchlist, SqliteStore};
use crate::index::synthetic::{clustered_unit_vectors, ClusterSpec};
use crate::manifest::ModelManifest;


/// Why seeding failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("seed plan: {problem}")]
    InvalidPlan { problem: String },
    #[error("seeding the gallery")]
    Gallery(#[source] GalleryError),
}

/// How many synthetic templates to add, of which model, spread over how many watchlists.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedPlan {
    pub model_id: String,
    pub dimension: usize,
    pub templates: usize,
    pub watchlists: usize,
    /// Templates per synthetic subject (1: one subject per template, the realistic worst case for the store).
    pub templates_per_subject: usize,
    /// Templates per `add_templates` transaction.
    pub batch: usize,
    /// Cluster centres of the generator; see `crate::index::synthetic`.
    pub clusters: usize,
    pub seed: u64,
    pub alert_fpir: f64,
}

/// What seeding did and how long each part took.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedSummary {
    pub templates: usize,
    pub subjects: usize,
    pub watchlists: Vec<String>,
    pub seconds: f64,
    /// Time in `create_subject` (one durable commit each).
    pub subject_seconds: f64,
    /// Time in `add_templates` (one durable commit per batch).
    pub template_seconds: f64,
    /// Time generating vectors.
    pub generate_seconds: f64,
    pub templates_per_second: f64,
    pub generation: u64,
}

/// Name of the i-th synthetic watchlist.
pub fn synthetic_watchlist(i: usize) -> String {
    format!("synthetic-{i}")
}

/// The audit entry of one seeding change: the service acting for the benchmark, never a person.
fn seed_entry(action: &str, target: Option<String>, plan: &SeedPlan) -> AuditEntry {
    AuditEntry {
        actor: "facematch".into(),
        role: "system".into(),
        action: action.into(),
        purpose: Some("benchmark gallery".into()),
        target,
        details: serde_json::json!({ "seed": plan.seed, "model_id": plan.model_id }),
    }
}

/// Adds `plan.templates` seeded clustered unit vectors to `store` as synthetic subjects, round-robin over
/// `plan.watchlists` watchlists (created when missing, reused otherwise, so a second run adds to the first).
/// `progress` receives the number of templates whose subject exists so far.
pub fn seed_gallery(store: &dyn GalleryStore, plan: &SeedPlan, progress: &dyn Fn(usize)) -> Result<SeedSummary, SeedError> {
    let invalid = |problem: &str| SeedError::InvalidPlan { problem: problem.to_string() };
    if plan.watchlists == 0 || plan.templates_per_subject == 0 || plan.batch == 0 || plan.dimension == 0 {
        return Err(invalid("watchlists, templates per subject, batch and dimension must be at least 1"));
    }
    let started = Instant::now();
    let mut labels = Vec::with_capacity(plan.watchlists);
    for i in 0..plan.watchlists {
        let name = synthetic_watchlist(i);
        match store.get_watchlist(&name) {
            Ok(w) => labels.push(w.name),
            Err(GalleryError::NotFound { .. }) => {
                let new = NewWatchlist {
                    retention_days: None,
                    name,
                    description: "synthetic templates for benchmarks (facematch bench seed)".into(),
                    alert_fpir: plan.alert_fpir,
                };
                let created = store
                    .create_watchlist(new, &|w| seed_entry("create_watchlist", Some(format!("watchlist/{}", w.name)), plan))
                    .map_err(SeedError::Gallery)?;
                labels.push(created.name);
            }
            Err(e) => return Err(SeedError::Gallery(e)),
        }
    }
    let spec = ClusterSpec { dim: plan.dimension, clusters: plan.clusters.max(1), spread: 1.0, seed: plan.seed };
    let (mut subject_seconds, mut template_seconds, mut generate_seconds) = (0.0, 0.0, 0.0);
    let mut subjects = 0;
    let mut current: Option<(usize, i64)> = None;
    for (batch_index, start) in (0..plan.templates).step_by(plan.batch).enumerate() {
        let end = (start + plan.batch).min(plan.templates);
        let t = Instant::now();
        let vectors = clustered_unit_vectors(&spec, end - start, batch_index as u64);
        generate_seconds += t.elapsed().as_secs_f64();
        let mut batch = Vec::with_capacity(end - start);
        for (j, embedding) in (start..end).zip(vectors.chunks_exact(plan.dimension)) {
            let subject = j / plan.templates_per_subject;
            let subject_id = match current {
                Some((index, id)) if index == subject => id,
                _ => {
                    let t = Instant::now();
                    let new = NewSubject {
                        watchlist: labels[subject % labels.len()].clone(),
                        external_ref: None,
                        display_name: format!("synthetic {}/{subject}", plan.seed),
                        metadata: serde_json::json!({ "synthetic": true, "seed": plan.seed }),
                    };
                    let created = store
                        .create_subject(new, &|s| seed_entry("create_subject", Some(format!("subject/{}", s.id)), plan))
                        .map_err(SeedError::Gallery)?;
                    subject_seconds += t.elapsed().as_secs_f64();
                    subjects += 1;
                    current = Some((subject, created.id));
                    if subjects % 256 == 0 {
                        progress(j);
                    }
                    created.id
                }
            };
            batch.push(NewTemplate {
                subject_id,
                model_id: plan.model_id.clone(),
                embedding: embedding.to_vec(),
                quality: serde_json::json!({ "synthetic": true }),
                photo_sha256: hex::encode(Sha256::digest(format!("synthetic:{}:{j}", plan.seed).as_bytes())),
                thumbnail_jpeg: None,
                face: crate::gallery::TemplateFace::NotKept,
                enrolled_by: "facematch bench seed".into(),
            });
        }
        let t = Instant::now();
        store
            .add_templates(batch, &|added| {
                let mut entry = seed_entry("seed_synthetic", None, plan);
                entry.details["templates"] = added.len().into();
                entry
            })
            .map_err(SeedError::Gallery)?;
        template_seconds += t.elapsed().as_secs_f64();
        progress(end);
    }
    let generation = store.generation().map_err(SeedError::Gallery)?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(SeedSummary {
        templates: plan.templates,
        subjects,
        watchlists: labels,
        seconds,
        subject_seconds,
        template_seconds,
        generate_seconds,
        templates_per_second: if seconds > 0.0 { plan.templates as f64 / seconds } else { 0.0 },
        generation,
    })
}

/// `facematch bench seed`.
#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// Data directory whose store receives the templates (the server must be stopped).
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    pub templates: usize,
    /// Watchlists `synthetic-0…` the subjects are spread over, round-robin.
    #[arg(long, default_value_t = 1)]
    pub watchlists: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Templates per synthetic subject (1 is realistic; each subject costs one durable commit).
    #[arg(long, default_value_t = 1)]
    pub templates_per_subject: usize,
    /// Templates per durable batch.
    #[arg(long, default_value_t = 10_000)]
    pub batch: usize,
    /// Cluster centres of the vector generator.
    #[arg(long, default_value_t = 1024)]
    pub clusters: usize,
}

pub fn run_seed_cli(config: &Config, args: &SeedArgs) -> anyhow::Result<ExitCode> {
    let dir = config.models.resolve_dir()?;
    let manifest = ModelManifest::load(&dir, &config.models.recognizer)?;
    let dimension = manifest
        .recognizer
        .as_ref()
        .map(|r| r.dimension)
        .with_context(|| format!("bench seed: {} is not a recognizer", manifest.id))?;
    let plan = SeedPlan {
        model_id: manifest.id.clone(),
        dimension,
        templates: args.templates,
        watchlists: args.watchlists,
        templates_per_subject: args.templates_per_subject,
        batch: args.batch,
        clusters: args.clusters,
        seed: args.seed,
        alert_fpir: config.gallery.default_alert_fpir,
    };
    let store = SqliteStore::open(&args.data_dir).with_context(|| format!("bench seed: store in {}", args.data_dir.display()))?;
    let bar = progress_bar(args.templates as u64, "templates");
    let summary = seed_gallery(&store, &plan, &|done| bar.set_position(done as u64));
    bar.finish_and_clear();
    let summary = summary.context("bench seed")?;
    eprintln!(
        "seeded {} templates ({} subjects) of {} in {:.1} s ({:.0} templates/s; subjects {:.1} s, templates {:.1} s)",
        summary.templates,
        summary.subjects,
        plan.model_id,
        summary.seconds,
        summary.templates_per_second,
        summary.subject_seconds,
        summary.template_seconds
    );
    println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "plan": plan, "summary": summary }))?);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeding_adds_unit_templates_across_watchlists() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let plan = SeedPlan {
            model_id: "face-reid-retail-0095".into(),
            dimension: 16,
            templates: 25,
            watchlists: 3,
            templates_per_subject: 2,
            batch: 10,
            clusters: 4,
            seed: 9,
            alert_fpir: 0.003,
        };
        let seen = std::sync::Mutex::new(Vec::new());
        let summary = seed_gallery(&store, &plan, &|n| seen.lock().unwrap().push(n)).unwrap();
        assert_eq!((summary.templates, summary.subjects), (25, 13));
        assert_eq!(seen.lock().unwrap().last(), Some(&25));
        assert_eq!(store.count_templates("face-reid-retail-0095").unwrap(), 25);
        let mut norms = Vec::new();
        store
            .for_each_template("face-reid-retail-0095", &mut |_, _, v| {
                norms.push(v.iter().map(|x| x * x).sum::<f32>().sqrt())
            })
            .unwrap();
        assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-4), "{norms:?}");
        let stats = store.stats().unwrap();
        let per_list: Vec<(String, usize)> = stats.watchlists.iter().map(|w| (w.watchlist.clone(), w.subjects)).collect();
        assert_eq!(per_list.len(), 3);
        assert_eq!(per_list.iter().map(|(_, n)| n).sum::<usize>(), 13);
        assert!(per_list.iter().all(|(_, n)| *n >= 4), "{per_list:?}");
        // A second run reuses the watchlists and adds to the store.
        let again = seed_gallery(&store, &SeedPlan { templates: 5, ..plan.clone() }, &|_| {}).unwrap();
        assert_eq!(again.watchlists.len(), 3);
        assert_eq!(store.count_templates("face-reid-retail-0095").unwrap(), 30);
        assert!(seed_gallery(&store, &SeedPlan { batch: 0, ..plan }, &|_| {}).is_err());
    }
}
