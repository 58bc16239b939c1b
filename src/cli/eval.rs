//! `facematch eval verify | identify`: the arguments of the accuracy harness ([`crate::eval`]), its progress bar,
//! and the printed report.
//!
//! Both commands run the face pipeline once per photo (its subject: the most central of its large faces), cache the
//! subject's template per (models, photo sha256) under `--cache`, apply a fixed protocol from
//! [`crate::eval::protocol`], and write a report (terminal, JSON, Markdown, HTML, figures) plus a
//! `<stem>.summary.json` with the headline numbers in machine-readable form. A photo in which no face is found is a
//! failure to acquire (FTA): in verification its pairs score −1 (the lowest cosine, so they are never accepted); in
//! identification a mated search without a face is a miss and a non-mated one never alarms.

use std::path::PathBuf;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;

use crate::config::Config;
use crate::eval::{
    calibration_holdout, identify, multi_photo_study, split_study, verify, AnalysisProgress, IdentifyOptions,
    Published, RunOptions, SplitPart, StatisticName, VerifyOptions,
};

#[derive(Debug, clap::Subcommand)]
pub enum EvalCommand {
    /// 1:1 verification on a folder of `<identity>/<photo>`: 10-fold accuracy, TAR at FAR, AUC, DET.
    Verify(VerifyArgs),
    /// Open-set 1:N identification on a folder of `<identity>/<photo>`: rank-k, FNIR at FPIR, CMC, DET,
    /// decision statistics and the effect of gallery size.
    Identify(IdentifyArgs),
}

/// Options shared by both commands.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Folder for the report files and figures.
    #[arg(long, default_value = "reports/eval")]
    pub out: PathBuf,
    /// Folder for cached templates (one file per model set-up, keyed by photo sha256).
    #[arg(long, default_value = "reports/cache")]
    pub cache: PathBuf,
    /// Photos analysed (and searches run) in parallel.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Folder of `<identity>/<photo>`.
    pub dir: PathBuf,
    /// Pair list: LFW `pairs.txt` (3- and 4-field lines) or `file_x,file_y,same` CSV. Default: every mated pair
    /// plus `--nonmated` seeded non-mated pairs.
    #[arg(long)]
    pub pairs: Option<PathBuf>,
    /// Seed of the non-mated pair sample and of the cross-validation folds.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Non-mated pairs to sample when no pair list is given (1e-4 FAR needs at least 10,000).
    #[arg(long, default_value_t = 100_000)]
    pub nonmated: usize,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, clap::Args)]
pub struct IdentifyArgs {
    /// Folder of `<identity>/<photo>`.
    pub dir: PathBuf,
    /// Seed of the synthetic distractors.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Synthetic distractors to add, as comma-separated multiples of the base gallery size (0: none).
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    pub distractors: Vec<usize>,
    /// Decision statistic the FNIR/FPIR figures, DET and calibration table are for (default: the one the
    /// recognizer manifest's `[calibration]` names, so figures describe what the service deploys; top1 without one).
    #[arg(long, value_enum)]
    pub statistic: Option<StatisticName>,
    /// Runner-up scores averaged by the margin statistic (default: the manifest's `margin_cohort`, else 10).
    #[arg(long)]
    pub margin_cohort: Option<usize>,
    /// Identities to use: all, or one half of a seeded stratified split (tune on `tuning`, report on `test`).
    #[arg(long, value_enum, default_value = "all")]
    pub split: SplitPart,
    /// Seed of the tuning/test identity split.
    #[arg(long, default_value_t = 1)]
    pub split_seed: u64,
    /// Instead of one run: this many tuning/test splits (split seeds `--split-seed` onwards), every attempt measured
    /// on both halves of each, and the statistic picked on each tuning half reported on its test half.
    #[arg(long)]
    pub split_study: Option<usize>,
    /// Instead of one run: for this many tuning/test splits (the split study's seeds, from `--split-seed`), a top1
    /// calibration made from the tuning half's identities alone, the service's alert thresholds for FPIR 1 %, 0.3 %
    /// and 0.1 % at the test half's gallery size, and the FPIR measured on the test half's non-mated searches.
    #[arg(long, conflicts_with = "split_study")]
    pub calibration_holdout: Option<usize>,
    /// Instead of one run: people with at least 3 photos enrolled with one and with two photos (ordered by `--seed`),
    /// searched with their other photos and by everyone else's; subjects scored by their best template, the mean of
    /// their template scores, and their mean template; the shipped calibration checked with the gallery counted in
    /// templates and in subjects.
    #[arg(long, conflicts_with_all = ["split_study", "calibration_holdout"])]
    pub multi_photo_study: bool,
    /// Write the FPIR calibration table of the decision statistic here, as a manifest `[calibration]` table.
    #[arg(long)]
    pub calibration_out: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
}

impl RunArgs {
    fn options(&self) -> RunOptions {
        RunOptions { out: self.out.clone(), cache: self.cache.clone(), threads: self.threads }
    }
}

pub fn run(config: &Config, command: &EvalCommand) -> anyhow::Result<ExitCode> {
    let progress = ProgressLine::default();
    match command {
        EvalCommand::Verify(args) => {
            let options = VerifyOptions {
                dir: args.dir.clone(),
                pairs: args.pairs.clone(),
                seed: args.seed,
                nonmated: args.nonmated,
                run: args.run.options(),
            };
            print_run(&verify(config, &options, &progress)?);
        }
        EvalCommand::Identify(args) => {
            let options = IdentifyOptions {
                dir: args.dir.clone(),
                seed: args.seed,
                distractors: args.distractors.clone(),
                statistic: args.statistic,
                margin_cohort: args.margin_cohort,
                split: args.split,
                split_seed: args.split_seed,
                calibration_out: args.calibration_out.clone(),
                run: args.run.options(),
            };
            if args.multi_photo_study {
                print_run(&multi_photo_study(config, &options, &progress)?);
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(splits) = args.calibration_holdout {
                anyhow::ensure!(splits > 0, "eval identify: --calibration-holdout needs at least one split");
                print_run(&calibration_holdout(config, &options, splits, &progress)?);
                return Ok(ExitCode::SUCCESS);
            }
            match args.split_study {
                Some(splits) => {
                    anyhow::ensure!(splits > 0, "eval identify: --split-study needs at least one split");
                    let study = split_study(config, &options, splits, &progress)?;
                    print!("{}", study.report.render_terminal());
                    println!("\nreport: {}; summary: {}", study.files.json.display(), study.summary_path.display());
                }
                None => print_run(&identify(config, &options, &progress)?),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the report and says where everything went.
fn print_run<S>(run: &Published<S>) {
    print!("{}", run.report.render_terminal());
    println!(
        "\nreport: {} ({}, {}); summary: {}",
        run.files.json.display(),
        run.files.markdown.display(),
        run.files.html.display(),
        run.summary_path.display()
    );
}

/// A progress bar on stderr while photos missing from the template cache are analysed.
#[derive(Default)]
struct ProgressLine(Mutex<Option<ProgressBar>>);

impl AnalysisProgress for ProgressLine {
    fn started(&self, recognizer: &str, photos: usize) {
        let bar = ProgressBar::new(photos as u64);
        bar.set_style(
            ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} [{elapsed_precise}, ETA {eta_precise}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(format!("{recognizer}: analysing {photos} photos"));
        *self.0.lock() = Some(bar);
    }

    fn analysed(&self) {
        if let Some(bar) = &*self.0.lock() {
            bar.inc(1);
        }
    }

    fn finished(&self) {
        if let Some(bar) = self.0.lock().take() {
            bar.finish_and_clear();
        }
    }
}
