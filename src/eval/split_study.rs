//! The split study of decision statistics: every attempt measured on both halves of several seeded tuning/test
//! identity splits, and the statistic with the lowest FNIR at FPIR 1e-2 on each tuning half reported on the test
//! half of the same split, which it never saw.

use std::collections::BTreeSet;

use serde::Serialize;

use super::attempts::{attempts, Attempt};
use super::error::EvalError;
use super::identify::{chosen_statistic, IdentifyOptions};
use super::metrics::rank_rates;
use super::open_set::{base_run, measured_fnir};
use super::protocol::{open_set_protocol, split_identities, PhotoSet};
use super::report::{format_rate, ModelFact, Report, Table};
use super::run::Published;
use super::templates::{photo_templates, AnalysisProgress, ModelSetup, Templates};
use crate::config::Config;

/// One attempt's FNIR at FPIR 1e-2 on the tuning and test halves of each split (`None`: not measurable).
#[derive(Debug, Serialize)]
pub struct AttemptAcrossSplits {
    statistic: String,
    deployable: bool,
    tuning: Vec<Option<f64>>,
    test: Vec<Option<f64>>,
}

/// What was picked on one tuning half and how it did on the test half.
#[derive(Debug, Serialize)]
pub struct SplitPick {
    split_seed: u64,
    top1_tuning: Option<f64>,
    top1_test: Option<f64>,
    rank1_tuning: f64,
    rank1_test: f64,
    deployable: String,
    deployable_tuning: Option<f64>,
    deployable_test: Option<f64>,
    any: String,
    any_tuning: Option<f64>,
    any_test: Option<f64>,
}

/// The split study's numbers, machine-readable.
#[derive(Debug, Serialize)]
pub struct SplitStudySummary {
    dataset: String,
    recognizer: ModelFact,
    detector: ModelFact,
    split_seeds: Vec<u64>,
    attempts: Vec<AttemptAcrossSplits>,
    picks: Vec<SplitPick>,
}

/// What a study over every photo of a folder works on: the photos, the model set-up, the thread pool and every
/// photo's template (from the cache where it has them).
pub(crate) struct FolderTemplates {
    pub(crate) set: PhotoSet,
    pub(crate) setup: ModelSetup,
    pub(crate) pool: rayon::ThreadPool,
    pub(crate) templates: Templates,
}

/// Loads the folder of `options` and the template of every photo in it.
pub(crate) fn folder_templates(
    config: &Config,
    options: &IdentifyOptions,
    progress: &dyn AnalysisProgress,
) -> Result<FolderTemplates, EvalError> {
    let set = PhotoSet::load(&options.dir)?;
    let setup = ModelSetup::load(config)?;
    let pool = options.run.thread_pool()?;
    let everything: BTreeSet<usize> = (0..set.photos.len()).collect();
    let templates = photo_templates(config, &setup, &set, &everything, &options.run.cache, &pool, progress)?;
    Ok(FolderTemplates { set, setup, pool, templates })
}

/// The split seeds of a study of `splits` splits, `first` onwards; a study needs at least one.
pub(crate) fn split_seeds(first: u64, splits: usize) -> Result<Vec<u64>, EvalError> {
    if splits == 0 {
        return Err(EvalError::NoSplits);
    }
    Ok((0..splits as u64).map(|i| first.wrapping_add(i)).collect())
}

fn mean_of(values: &[Option<f64>]) -> Option<f64> {
    let measured: Vec<f64> = values.iter().flatten().copied().collect();
    (measured.len() == values.len() && !values.is_empty()).then(|| measured.iter().sum::<f64>() / measured.len() as f64)
}

fn rate_cell(value: Option<f64>) -> String {
    value.map_or_else(|| "not measurable".into(), format_rate)
}

/// Lowest FNIR among the candidates (the first on ties, so simpler statistics win them); `None` when none is
/// measurable.
fn pick(candidates: &[(String, Option<f64>)]) -> Option<&(String, Option<f64>)> {
    candidates
        .iter()
        .filter(|(_, fnir)| fnir.is_some())
        .min_by(|a, b| a.1.unwrap_or(f64::INFINITY).total_cmp(&b.1.unwrap_or(f64::INFINITY)))
}

/// Runs the study over `splits` splits (split seeds `options.split_seed` onwards) and writes its report and
/// summary; of `options`, the split part, distractors and calibration output play no part.
pub fn split_study(
    config: &Config,
    options: &IdentifyOptions,
    splits: usize,
    progress: &dyn AnalysisProgress,
) -> Result<Published<SplitStudySummary>, EvalError> {
    let statistic = chosen_statistic(config, options)?;
    let seeds = split_seeds(options.split_seed, splits)?;
    let FolderTemplates { set, setup, pool, templates } = folder_templates(config, options, progress)?;
    let dataset = set.name();
    let run = &options.run;
    let mut across: Vec<AttemptAcrossSplits> = attempts(statistic)
        .iter()
        .map(|a| AttemptAcrossSplits {
            statistic: a.label(),
            deployable: matches!(a, Attempt::Statistic(_)),
            tuning: Vec::new(),
            test: Vec::new(),
        })
        .collect();
    let mut picks = Vec::new();
    for &seed in &seeds {
        let split = split_identities(&set, seed);
        let mut rank1 = [0.0; 2];
        for (part, ids) in [&split.tuning, &split.test].into_iter().enumerate() {
            let protocol = open_set_protocol(&set, |id| ids.contains(id));
            let base = base_run(&set, &templates, &protocol, statistic, setup.dimension, &pool)
                .map_err(|source| EvalError::OpenSet { run: format!("{dataset}, split seed {seed}"), source })?;
            rank1[part] = rank_rates(&base.top1, &[1])?.first().map_or(0.0, |r| r.1);
            for (slot, (_, points)) in across.iter_mut().zip(&base.attempts) {
                let fnir = measured_fnir(points.first());
                if part == 0 {
                    slot.tuning.push(fnir)
                } else {
                    slot.test.push(fnir)
                }
            }
        }
        let latest = |a: &AttemptAcrossSplits| (a.statistic.clone(), a.tuning.last().copied().flatten());
        let deployable: Vec<_> = across.iter().filter(|a| a.deployable).map(latest).collect();
        let any: Vec<_> = across.iter().map(latest).collect();
        let test_of =
            |label: &str| across.iter().find(|a| a.statistic == label).and_then(|a| a.test.last().copied().flatten());
        let (deployable_pick, any_pick) = (pick(&deployable).cloned(), pick(&any).cloned());
        picks.push(SplitPick {
            split_seed: seed,
            top1_tuning: across[0].tuning.last().copied().flatten(),
            top1_test: across[0].test.last().copied().flatten(),
            rank1_tuning: rank1[0],
            rank1_test: rank1[1],
            deployable_test: deployable_pick.as_ref().and_then(|(l, _)| test_of(l)),
            deployable: deployable_pick.as_ref().map_or_else(|| "-".into(), |(l, _)| l.clone()),
            deployable_tuning: deployable_pick.and_then(|(_, f)| f),
            any_test: any_pick.as_ref().and_then(|(l, _)| test_of(l)),
            any: any_pick.as_ref().map_or_else(|| "-".into(), |(l, _)| l.clone()),
            any_tuning: any_pick.and_then(|(_, f)| f),
        });
    }

    let stem = format!("identify-{dataset}-splits-{}", setup.recognizer.id);
    let mut report = Report::new(format!(
        "decision statistics over {splits} tuning/test identity splits, {dataset}, {}",
        setup.recognizer.id
    ));
    report.seeds = seeds.clone();
    report.models = vec![setup.recognizer.clone(), setup.detector.clone()];
    report.tables.push(attempts_table(&across)?);
    report.tables.push(picks_table(&picks)?);
    report.notes.extend([
        "each split halves the identities (stratified: identities with several photos and single-photo identities \
         are halved separately); each half runs the full open-set protocol on its own identities"
            .to_owned(),
        "deployable statistics are the ones a manifest's [calibration] can name (top1, margin); a pick is the \
         lowest tuning FNIR, ties going to the simpler statistic listed first"
            .to_owned(),
        "FNIR at FPIR 1e-2 on a half rests on half the set's non-mated searches (about 320 on lfw-dev, where the \
         threshold is then the 4th-highest non-mated decision score), so single-split figures move by several \
         points from split to split; read the means"
            .to_owned(),
    ]);
    run.create_out_folder()?;
    let summary = SplitStudySummary {
        dataset,
        recognizer: setup.recognizer,
        detector: setup.detector,
        split_seeds: seeds,
        attempts: across,
        picks,
    };
    run.publish(&stem, report, summary)
}

/// Every attempt's FNIR over the splits, against top1 (the first attempt).
fn attempts_table(across: &[AttemptAcrossSplits]) -> Result<Table, EvalError> {
    let top1_test_mean = mean_of(&across[0].test);
    let mut table = Table::new(
        "FNIR at FPIR 1e-2 over the splits (mean of the halves; ranks and rank-1 are the same for every statistic)",
        [
            "statistic",
            "deployable",
            "tuning mean",
            "test mean",
            "test min",
            "test max",
            "test vs top1",
            "test wins vs top1",
        ],
    );
    for attempt in across {
        let test: Vec<f64> = attempt.test.iter().flatten().copied().collect();
        let wins = attempt
            .test
            .iter()
            .zip(&across[0].test)
            .filter(|(a, t)| matches!((a, t), (Some(a), Some(t)) if a < t))
            .count();
        let change = match (mean_of(&attempt.test), top1_test_mean) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:+.1} %", 100.0 * (a - b) / b),
            _ => "-".into(),
        };
        table.push_row([
            attempt.statistic.clone(),
            if attempt.deployable { "yes".into() } else { "no".into() },
            rate_cell(mean_of(&attempt.tuning)),
            rate_cell(mean_of(&attempt.test)),
            rate_cell(test.iter().copied().min_by(f64::total_cmp)),
            rate_cell(test.iter().copied().max_by(f64::total_cmp)),
            change,
            format!("{wins}/{}", attempt.test.len()),
        ])?;
    }
    Ok(table)
}

/// Each split's picks and how they did on its test half, with the means over the splits.
fn picks_table(picks: &[SplitPick]) -> Result<Table, EvalError> {
    let mut table = Table::new(
        "Picked on the tuning half (lowest FNIR at FPIR 1e-2), reported on the test half",
        [
            "split seed",
            "rank-1 tuning / test",
            "top1 tuning / test",
            "deployable pick",
            "its tuning / test",
            "any pick",
            "its tuning / test",
        ],
    );
    for p in picks {
        table.push_row([
            p.split_seed.to_string(),
            format!("{} / {}", format_rate(p.rank1_tuning), format_rate(p.rank1_test)),
            format!("{} / {}", rate_cell(p.top1_tuning), rate_cell(p.top1_test)),
            p.deployable.clone(),
            format!("{} / {}", rate_cell(p.deployable_tuning), rate_cell(p.deployable_test)),
            p.any.clone(),
            format!("{} / {}", rate_cell(p.any_tuning), rate_cell(p.any_test)),
        ])?;
    }
    let column_mean = |f: &dyn Fn(&SplitPick) -> Option<f64>| mean_of(&picks.iter().map(f).collect::<Vec<_>>());
    let relative = |picked: Option<f64>| match (picked, column_mean(&|p| p.top1_test)) {
        (Some(a), Some(b)) if b > 0.0 => format!(" ({:+.1} % vs top1)", 100.0 * (a - b) / b),
        _ => String::new(),
    };
    let deployable_test = column_mean(&|p| p.deployable_test);
    let any_test = column_mean(&|p| p.any_test);
    table.push_row([
        "mean".to_owned(),
        format!(
            "{} / {}",
            format_rate(picks.iter().map(|p| p.rank1_tuning).sum::<f64>() / picks.len() as f64),
            format_rate(picks.iter().map(|p| p.rank1_test).sum::<f64>() / picks.len() as f64)
        ),
        format!("{} / {}", rate_cell(column_mean(&|p| p.top1_tuning)), rate_cell(column_mean(&|p| p.top1_test))),
        "-".into(),
        format!(
            "{} / {}{}",
            rate_cell(column_mean(&|p| p.deployable_tuning)),
            rate_cell(deployable_test),
            relative(deployable_test)
        ),
        "-".into(),
        format!("{} / {}{}", rate_cell(column_mean(&|p| p.any_tuning)), rate_cell(any_test), relative(any_test)),
    ])?;
    Ok(table)
}
