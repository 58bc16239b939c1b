//! The per-comparison impostor rates of an identification run: every pair of its photos of different identities
//! scored, the rates and fitted tail [`crate::score::impostors`] makes of them, the top-1 thresholds they give at
//! larger galleries beside the search table's, and the check of the tail against counted rates.

use std::collections::BTreeSet;

use rayon::prelude::*;
use serde::Serialize;

use super::error::EvalError;
use super::metrics::{fnir_at_threshold, fpir_calibration_table, SearchOutcome};
use super::open_set::decision_scores;
use super::protocol::PhotoSet;
use super::report::{format_rate, Report, Table};
use super::templates::{similarity, Templates};
use crate::score::impostors::{impostor_rates, tail_check, ImpostorRates, TailCheck};
use crate::score::ScoreError;

/// Photo pairs the impostor rates may score in one run: 50 million scores take 200 MB (twice, with the tail
/// check), and lfw-dev's 7 million all fit. A larger folder gets every `stride`-th pair instead.
const MAX_IMPOSTOR_PAIRS: u64 = 50_000_000;
/// Gallery sizes the impostor section gives thresholds for, besides the run's own.
const PROJECTED_GALLERY_SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];
/// FPIR targets of those thresholds: the harness's 1 % and the service's default alert target, 0.3 %.
const PROJECTED_FPIR_TARGETS: [f64; 2] = [1e-2, 3e-3];

/// Per-comparison impostor rates of a run: what they rest on, the thresholds they give at larger galleries next
/// to the search table's, and how well their tail predicts counted rates.
#[derive(Debug, Serialize)]
pub struct ImpostorSummary {
    comparisons: u64,
    tail_fit: usize,
    tail_scale: f64,
    thresholds: Vec<ThresholdAtSize>,
    tail_check: Vec<TailCheck>,
}

/// The top-1 threshold for one FPIR target at one gallery size, from both calibrations.
#[derive(Debug, Serialize)]
pub struct ThresholdAtSize {
    gallery_size: usize,
    fpir: f64,
    from_comparisons: f32,
    /// Whether that threshold lies in the fitted tail.
    extrapolated: bool,
    /// Share of the run's mated searches whose rank-1 candidate is the mate and reaches the threshold.
    mated_reaching: f64,
    /// `None`: the search table cannot resolve the target at this size.
    from_searches: Option<f32>,
}

/// What the impostor section of a run found.
pub(crate) struct Impostors {
    /// `None` when the folder has too few impostor comparisons for a tail fit.
    pub(crate) rates: Option<ImpostorRates>,
    pub(crate) summary: Option<ImpostorSummary>,
}

/// Keep every `stride`-th of the `photos·(photos−1)/2` pairs so that at most `cap` remain (1: every pair).
fn pair_stride(photos: u64, cap: u64) -> u64 {
    let pairs = photos * photos.saturating_sub(1) / 2;
    pairs.div_ceil(cap.max(1)).max(1)
}

/// The comparisons between the subjects of two photos of different identities among `photos` (every `stride`-th
/// pair of the photo-by-photo order, see [`pair_stride`]), in that order, which does not follow the scores.
/// Returns the scores and the stride.
pub(crate) fn impostor_scores(
    set: &PhotoSet,
    templates: &Templates,
    photos: &BTreeSet<usize>,
    pool: &rayon::ThreadPool,
) -> (Vec<f32>, u64) {
    let faces: Vec<(&str, &[f32])> =
        photos.iter().filter_map(|&i| Some((set.photos[i].identity.as_str(), templates.embedding(i)?))).collect();
    let n = faces.len() as u64;
    let stride = pair_stride(n, MAX_IMPOSTOR_PAIRS);
    let scores = pool.install(|| {
        faces
            .par_iter()
            .enumerate()
            .flat_map_iter(|(i, &(identity, a))| {
                // Index of the pair (i, i + 1) in the photo-by-photo order of all pairs.
                let first = i as u64 * n - i as u64 * (i as u64 + 1) / 2;
                faces[i + 1..]
                    .iter()
                    .enumerate()
                    .filter(move |&(offset, (other, _))| {
                        (first + offset as u64).is_multiple_of(stride) && *other != identity
                    })
                    .map(move |(_, (_, b))| similarity(a, b))
            })
            .collect()
    });
    (scores, stride)
}

/// Fits the per-comparison rates to `comparisons` (scored every `pair_stride`-th pair) and adds their tables to
/// the report: what the rates rest on, top-1 thresholds at larger galleries from them and from the search table,
/// and the tail check. A folder with too few comparisons gets a note instead.
pub(crate) fn impostor_section(
    report: &mut Report,
    dataset: &str,
    mut comparisons: Vec<f32>,
    pair_stride: u64,
    top1: &[SearchOutcome],
    base_size: usize,
) -> Result<Impostors, EvalError> {
    if pair_stride > 1 {
        report.notes.push(format!(
            "impostor rates: every {pair_stride}th photo pair is scored, to keep at most {MAX_IMPOSTOR_PAIRS} pairs"
        ));
    }
    // The tail check fits a tenth of the comparisons, so it needs ten times what the rates need.
    let check = tail_check(&comparisons, 10, &[1000, 300, 100, 30, 10, 3]).ok();
    let rates = match impostor_rates(&mut comparisons) {
        Ok(rates) => rates,
        Err(ScoreError::TooFewImpostorComparisons { found, needed }) => {
            report.notes.push(format!(
                "no per-comparison impostor rates: {found} comparisons between photos of different identities, a \
                 tail fit needs {needed}"
            ));
            return Ok(Impostors { rates: None, summary: None });
        }
        Err(source) => return Err(EvalError::ImpostorRates { dataset: dataset.to_owned(), source }),
    };
    drop(comparisons);
    let summary = threshold_tables(report, &rates, check, top1, base_size)?;
    Ok(Impostors { rates: Some(rates), summary: Some(summary) })
}

/// The thresholds table and the tail check's table.
fn threshold_tables(
    report: &mut Report,
    rates: &ImpostorRates,
    check: Option<Vec<TailCheck>>,
    top1: &[SearchOutcome],
    base_size: usize,
) -> Result<ImpostorSummary, EvalError> {
    let nonmated_top1 = decision_scores(top1, false);
    let searches =
        if nonmated_top1.is_empty() { None } else { Some(fpir_calibration_table(&nonmated_top1, base_size)?) };
    let mut thresholds = Vec::new();
    let mut table = Table::new(
        format!(
            "Top-1 thresholds by gallery size: per-comparison rates ({} impostor comparisons, tail scale {:.5} fitted \
             on the highest {}) against the non-mated search table ({} searches at gallery {base_size})",
            rates.comparisons(),
            rates.tail_scale(),
            rates.tail_fit(),
            nonmated_top1.len()
        ),
        ["gallery size", "FPIR target", "from comparisons", "mated searches reaching it", "from searches"],
    );
    for gallery_size in std::iter::once(base_size).chain(PROJECTED_GALLERY_SIZES) {
        for fpir in PROJECTED_FPIR_TARGETS {
            let from_comparisons = rates.threshold_for_fpir_at_gallery_size(fpir, gallery_size)?;
            let extrapolated = rates.is_extrapolated(from_comparisons);
            let from_searches =
                searches.as_ref().and_then(|s| s.threshold_for_fpir_at_gallery_size(fpir, gallery_size).ok());
            // Of this run's mated searches (gallery `base_size`), those that would alert at the threshold.
            let mated_reaching = 1.0 - fnir_at_threshold(top1, from_comparisons)?;
            table.push_row([
                gallery_size.to_string(),
                format_rate(fpir),
                format!("{from_comparisons:.4}{}", if extrapolated { " (fitted tail)" } else { "" }),
                format_rate(mated_reaching),
                from_searches.map_or_else(|| "beyond the table".to_owned(), |t| format!("{t:.4}")),
            ])?;
            thresholds.push(ThresholdAtSize {
                gallery_size,
                fpir,
                from_comparisons,
                extrapolated,
                mated_reaching,
                from_searches,
            });
        }
    }
    report.tables.push(table);
    match &check {
        Some(rows) => report.tables.push(tail_check_table(rows)?),
        None => {
            report.notes.push("no tail check: a tenth of the impostor comparisons is too few for a tail fit".into())
        }
    }
    Ok(ImpostorSummary {
        comparisons: rates.comparisons(),
        tail_fit: rates.tail_fit(),
        tail_scale: rates.tail_scale(),
        thresholds,
        tail_check: check.unwrap_or_default(),
    })
}

fn tail_check_table(rows: &[TailCheck]) -> Result<Table, EvalError> {
    let mut table = Table::new(
        "Tail check: rates fitted on every 10th comparison against the counts of all of them",
        [
            "counted comparisons",
            "score",
            "counted rate",
            "predicted rate",
            "predicted / counted",
            "from",
            "anchored at the fit threshold / counted",
        ],
    );
    for row in rows {
        table.push_row([
            row.counted.to_string(),
            format!("{:.4}", row.score),
            format_rate(row.counted_rate),
            format_rate(row.predicted_rate),
            format!("{:.2}", row.predicted_rate / row.counted_rate),
            if row.extrapolated { "fitted tail" } else { "counted" }.to_owned(),
            format!("{:.2}", row.predicted_from_fit_threshold / row.counted_rate),
        ])?;
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pair_stride_caps_the_impostor_pairs() {
        // lfw-dev: 3,769 photos, 7,100,796 pairs, all kept.
        assert_eq!(pair_stride(3769, MAX_IMPOSTOR_PAIRS), 1);
        // 100,000 photos: 4,999,950,000 pairs, every 100th kept (49,999,500).
        assert_eq!(pair_stride(100_000, MAX_IMPOSTOR_PAIRS), 100);
        // 10 photos, 45 pairs, at most 10 kept: every 5th (9 pairs).
        assert_eq!(pair_stride(10, 10), 5);
        assert_eq!(pair_stride(0, 10), 1);
        assert_eq!(pair_stride(1, 10), 1);
    }
}
