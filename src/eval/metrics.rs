//! Biometric accuracy and latency metrics (ISO/IEC 19795-1, NIST FRTE vocabulary): verification ROC,
//! TAR@FAR, AUC, LFW-style k-fold accuracy, open-set identification CMC / FNIR@FPIR / DET, percentiles,
//! latency summaries, and the builder of the FPIR calibration table a model manifest ships (the table itself, which
//! the service reads to turn a score into a false-alarm rate, belongs to [`crate::score`]).
//!
//! Conventions shared by every function here:
//! - scores are similarities: a higher score means "more likely the same person";
//! - a comparison or search is *accepted* at threshold `t` when `score >= t` (ties with the threshold accept);
//! - `-0.0` is treated as `0.0`, so that sorting and the `>=` decision agree;
//! - non-finite scores are rejected with [`MetricError`] rather than silently sorted somewhere;
//! - rates are `f64` fractions in `[0, 1]`, computed from integer counts so that equal counts give equal rates.

use std::collections::BTreeSet;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::score::fpir::{canonical, check_finite, check_rate};
use crate::score::{CalibrationTable, ScoreError};

/// Why a metric could not be computed from the given input.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum MetricError {
    /// A bad score or rate, or a table the scoring layer refuses.
    #[error(transparent)]
    Score(#[from] ScoreError),
    #[error("{metric}: input is empty")]
    EmptyInput { metric: &'static str },
    #[error("{metric}: input has no {class}")]
    EmptyClass {
        metric: &'static str,
        class: &'static str,
    },
    #[error("percentile must lie in [0, 100], got {value}")]
    InvalidPercentile { value: f64 },
    #[error("rank must be at least 1, got {rank}")]
    InvalidRank { rank: usize },
    #[error("threshold table: threshold {index} is NaN")]
    NanThreshold { index: usize },
    #[error("k-fold accuracy: {folds} fold ids for {pairs} pairs")]
    FoldCountMismatch { folds: usize, pairs: usize },
    #[error("k-fold accuracy: needs at least 2 folds, got {found}")]
    TooFewFolds { found: usize },
    #[error("fold assignment: cannot split {pairs} pairs into {folds} non-empty folds")]
    InvalidFoldCount { folds: usize, pairs: usize },
    #[error("search outcome {index}: {reason}")]
    InconsistentOutcome { index: usize, reason: &'static str },
    #[error("latency sample {index}: {value} ms is not a finite non-negative duration")]
    InvalidLatency { index: usize, value: f64 },
}

// ---------------------------------------------------------------------------------------------
// Shared plumbing
// ---------------------------------------------------------------------------------------------

/// Smallest number of trials for which an error rate of `target` can be observed at all: `ceil(1/target)`.
///
/// With fewer trials a single error already exceeds the target, so an operating point at `target` is not
/// measurable (ISO/IEC 19795-1 "rule of 1/N"). A relative tolerance of 1e-9 absorbs the binary rounding of
/// decimal targets, so `0.001` needs 1000 trials rather than 1001.
pub fn minimum_trials_for_rate(target: f64) -> usize {
    let exact = 1.0 / target;
    let nearest = exact.round();
    if (exact - nearest).abs() <= 1e-9 * exact.max(1.0) {
        nearest as usize
    } else {
        exact.ceil() as usize
    }
}

/// A rate estimate that is either measured or, when the data cannot support it, explicitly not measurable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Measurement<T> {
    Measured(T),
    NotMeasurable(Shortfall),
}

impl<T> Measurement<T> {
    /// The measured value, or `None` when the operating point is not measurable.
    pub fn measured(&self) -> Option<&T> {
        match self {
            Measurement::Measured(value) => Some(value),
            Measurement::NotMeasurable(_) => None,
        }
    }
}

/// Why an operating point is not measurable: fewer negative trials than `ceil(1/target)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Shortfall {
    /// The requested false-accept / false-positive rate.
    pub target: f64,
    /// Negative trials (impostor pairs or non-mated searches) available.
    pub available: usize,
    /// Negative trials the target needs: `ceil(1/target)`.
    pub required: usize,
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not measurable at {}: {} negative trials, needs {}",
            self.target, self.available, self.required
        )
    }
}

/// Nearest-rank percentile index (0-based) into an ascending sample of `n > 0` values.
///
/// Definition: the `p`-th percentile is the value at 1-based rank `ceil(p/100 * n)`, clamped to `[1, n]`, so
/// it is always an observed value; `p = 0` gives the minimum and `p = 100` the maximum. A relative tolerance of
/// 1e-9 absorbs binary rounding (`p = 90, n = 10` is rank 9, not 10).
fn nearest_rank_index(n: usize, percent: f64) -> usize {
    let exact = percent / 100.0 * n as f64;
    let nearest = exact.round();
    let rank = if (exact - nearest).abs() <= 1e-9 * exact.max(1.0) {
        nearest
    } else {
        exact.ceil()
    };
    (rank as usize).clamp(1, n) - 1
}

fn check_percent(percent: f64) -> Result<f64, MetricError> {
    if (0.0..=100.0).contains(&percent) {
        Ok(percent)
    } else {
        Err(MetricError::InvalidPercentile { value: percent })
    }
}

/// Population standard deviation (ddof = 0), the convention of the common LFW evaluation scripts.
fn population_std(values: &[f64], mean: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
    variance.sqrt()
}

/// One distinct threshold with the positive / negative trial counts accepted at it (`score >= threshold`).
#[derive(Debug, Clone, Copy)]
struct ThresholdStep {
    threshold: f32,
    positives_accepted: usize,
    negatives_accepted: usize,
}

/// Walks `(score, is_positive)` trials from the highest distinct score down, accumulating acceptance counts.
/// Scores must already be finite and canonical.
fn threshold_steps(mut trials: Vec<(f32, bool)>) -> Vec<ThresholdStep> {
    trials.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut steps: Vec<ThresholdStep> = Vec::new();
    let (mut positives, mut negatives) = (0usize, 0usize);
    for (score, positive) in trials {
        if positive {
            positives += 1;
        } else {
            negatives += 1;
        }
        match steps.last_mut() {
            Some(last) if last.threshold == score => {
                last.positives_accepted = positives;
                last.negatives_accepted = negatives;
            }
            _ => steps.push(ThresholdStep {
                threshold: score,
                positives_accepted: positives,
                negatives_accepted: negatives,
            }),
        }
    }
    steps
}

/// Lowest threshold among the distinct observed scores (and one step above the maximum) at which the negative
/// acceptance rate stays at or below `target`. Returns the threshold and the counts accepted there.
fn lowest_threshold_within(steps: &[ThresholdStep], negatives: usize, target: f64) -> ThresholdStep {
    let within = |step: &ThresholdStep| step.negatives_accepted as f64 / negatives as f64 <= target;
    // Steps run from the highest threshold down and the negative rate only grows, so the admissible steps
    // form a prefix: the last admissible one has the lowest threshold.
    let admissible = steps.partition_point(within);
    match admissible.checked_sub(1).and_then(|i| steps.get(i)) {
        Some(step) => *step,
        None => ThresholdStep {
            // Even the top score lets too many negatives through: the lowest threshold that works is the
            // next representable value above it, which accepts nothing.
            threshold: steps.first().map_or(f32::INFINITY, |s| s.threshold.next_up()),
            positives_accepted: 0,
            negatives_accepted: 0,
        },
    }
}

fn rate(count: usize, total: usize) -> f64 {
    count as f64 / total as f64
}

// ---------------------------------------------------------------------------------------------
// Verification (1:1)
// ---------------------------------------------------------------------------------------------

/// One 1:1 comparison: its similarity score and whether both samples show the same person (a mated or
/// genuine pair) or not (a non-mated or impostor pair).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoredPair {
    pub score: f32,
    pub mated: bool,
}

/// Counts of a validated pair set.
struct PairCounts {
    genuine: usize,
    impostor: usize,
}

fn validate_pairs(metric: &'static str, pairs: &[ScoredPair]) -> Result<PairCounts, MetricError> {
    if pairs.is_empty() {
        return Err(MetricError::EmptyInput { metric });
    }
    let mut counts = PairCounts {
        genuine: 0,
        impostor: 0,
    };
    for (index, pair) in pairs.iter().enumerate() {
        check_finite(index, pair.score)?;
        if pair.mated {
            counts.genuine += 1;
        } else {
            counts.impostor += 1;
        }
    }
    Ok(counts)
}

fn require_both_classes(metric: &'static str, counts: &PairCounts) -> Result<(), MetricError> {
    if counts.genuine == 0 {
        return Err(MetricError::EmptyClass {
            metric,
            class: "mated pairs",
        });
    }
    if counts.impostor == 0 {
        return Err(MetricError::EmptyClass {
            metric,
            class: "non-mated pairs",
        });
    }
    Ok(())
}

fn pair_steps(pairs: &[ScoredPair]) -> Vec<ThresholdStep> {
    threshold_steps(pairs.iter().map(|p| (canonical(p.score), p.mated)).collect())
}

/// One point of a verification ROC.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RocPoint {
    /// Accept when `score >= threshold`.
    pub threshold: f32,
    /// False accept rate: impostor pairs with `score >= threshold` / impostor pairs.
    pub far: f64,
    /// True accept rate: genuine pairs with `score >= threshold` / genuine pairs.
    pub tar: f64,
    /// False reject rate: `1 - tar`, from counts.
    pub frr: f64,
}

/// Verification ROC: one point per distinct observed score, ordered by decreasing threshold (so FAR and TAR
/// never decrease along the vector). Needs at least one genuine and one impostor pair.
pub fn roc(pairs: &[ScoredPair]) -> Result<Vec<RocPoint>, MetricError> {
    let counts = validate_pairs("roc", pairs)?;
    require_both_classes("roc", &counts)?;
    Ok(pair_steps(pairs)
        .into_iter()
        .map(|step| RocPoint {
            threshold: step.threshold,
            far: rate(step.negatives_accepted, counts.impostor),
            tar: rate(step.positives_accepted, counts.genuine),
            frr: rate(counts.genuine - step.positives_accepted, counts.genuine),
        })
        .collect())
}

/// Verification operating point at a target FAR.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OperatingPoint {
    pub far_target: f64,
    /// Accept when `score >= threshold`.
    pub threshold: f32,
    pub tar: f64,
    /// FAR actually observed at `threshold` (at most `far_target`).
    pub far_achieved: f64,
    /// Impostor pairs accepted at `threshold`.
    pub false_accepts: usize,
    /// Impostor pairs the FAR estimate rests on.
    pub impostor_pairs: usize,
    /// Genuine pairs the TAR estimate rests on.
    pub genuine_pairs: usize,
}

/// TAR at a target FAR.
///
/// Definition: the threshold is the lowest distinct observed score `t` with `FAR(t) <= far_target`; when even
/// the top score admits too many impostors, it is the next `f32` above the top score (TAR 0). Because FAR is a
/// step function that only changes at observed scores, this threshold maximises TAR under the FAR constraint.
/// The point is [`Measurement::NotMeasurable`] when there are fewer than `ceil(1/far_target)` impostor pairs.
pub fn tar_at_far(pairs: &[ScoredPair], far_target: f64) -> Result<Measurement<OperatingPoint>, MetricError> {
    let far_target = check_rate("tar@far", far_target)?;
    let counts = validate_pairs("tar@far", pairs)?;
    if counts.genuine == 0 {
        return Err(MetricError::EmptyClass {
            metric: "tar@far",
            class: "mated pairs",
        });
    }
    let required = minimum_trials_for_rate(far_target);
    if counts.impostor < required {
        return Ok(Measurement::NotMeasurable(Shortfall {
            target: far_target,
            available: counts.impostor,
            required,
        }));
    }
    let step = lowest_threshold_within(&pair_steps(pairs), counts.impostor, far_target);
    Ok(Measurement::Measured(OperatingPoint {
        far_target,
        threshold: step.threshold,
        tar: rate(step.positives_accepted, counts.genuine),
        far_achieved: rate(step.negatives_accepted, counts.impostor),
        false_accepts: step.negatives_accepted,
        impostor_pairs: counts.impostor,
        genuine_pairs: counts.genuine,
    }))
}

/// Area under the ROC, computed exactly as the Mann–Whitney statistic:
/// `P(genuine score > impostor score) + ½ P(genuine score = impostor score)` over all genuine × impostor
/// combinations.
pub fn auc(pairs: &[ScoredPair]) -> Result<f64, MetricError> {
    let counts = validate_pairs("auc", pairs)?;
    require_both_classes("auc", &counts)?;
    // Twice the number of wins (ties count one half) keeps the sum an exact integer.
    let mut doubled_wins: u128 = 0;
    let (mut genuine_seen, mut impostor_seen) = (0usize, 0usize);
    for step in pair_steps(pairs) {
        let genuine_here = step.positives_accepted - genuine_seen;
        let impostor_here = step.negatives_accepted - impostor_seen;
        let impostor_below = counts.impostor - step.negatives_accepted;
        doubled_wins += 2 * genuine_here as u128 * impostor_below as u128;
        doubled_wins += genuine_here as u128 * impostor_here as u128;
        genuine_seen = step.positives_accepted;
        impostor_seen = step.negatives_accepted;
    }
    Ok(doubled_wins as f64 / (2.0 * counts.genuine as f64 * counts.impostor as f64))
}

/// Accuracy of one held-out fold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FoldAccuracy {
    /// The fold id as given in the fold assignment.
    pub fold: usize,
    /// Threshold chosen on the other folds (accept when `score >= threshold`).
    pub threshold: f64,
    /// Fraction of the held-out pairs classified correctly at `threshold`.
    pub accuracy: f64,
    /// Held-out pairs in this fold.
    pub pairs: usize,
}

/// LFW-protocol verification accuracy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KFoldAccuracy {
    /// Mean of the per-fold accuracies (each fold weighs the same, as in the LFW protocol).
    pub mean: f64,
    /// Population standard deviation (ddof = 0) of the per-fold accuracies.
    pub std: f64,
    /// One entry per distinct fold id, in ascending id order.
    pub per_fold: Vec<FoldAccuracy>,
}

/// Threshold maximising training accuracy.
///
/// Candidate cuts lie between consecutive distinct training scores (at their midpoint, which keeps the widest
/// margin to both), plus "accept everything" (the lowest score) and "reject everything" (just above the top
/// score). Among equally accurate cuts the lowest threshold wins.
fn best_training_threshold(training: &[(f32, bool)]) -> f64 {
    let negatives = training.iter().filter(|(_, mated)| !mated).count();
    let steps = threshold_steps(training.to_vec());
    let Some(top) = steps.first() else {
        return f64::INFINITY;
    };
    // Reject everything: only the impostors are right.
    let mut best = (negatives, f64::from(top.threshold.next_up()));
    for (i, step) in steps.iter().enumerate() {
        let correct = step.positives_accepted + (negatives - step.negatives_accepted);
        let threshold = match steps.get(i + 1) {
            Some(below) => (f64::from(step.threshold) + f64::from(below.threshold)) / 2.0,
            None => f64::from(step.threshold),
        };
        // Steps descend, so `>=` leaves the lowest of equally good thresholds in `best`.
        if correct >= best.0 {
            best = (correct, threshold);
        }
    }
    best.1
}

/// LFW-protocol k-fold verification accuracy.
///
/// `folds[i]` is the fold id of `pairs[i]` (any ids; each distinct id is one fold). For every fold, the
/// threshold with the best accuracy on the *other* folds (see the cut rule below) is applied to the held-out
/// fold, and accuracy there is `(genuine with score >= t + impostors with score < t) / held-out pairs`.
/// Cut rule: cuts sit halfway between consecutive distinct training scores, plus accept-all and reject-all;
/// ties go to the lowest threshold.
pub fn kfold_accuracy(pairs: &[ScoredPair], folds: &[usize]) -> Result<KFoldAccuracy, MetricError> {
    validate_pairs("k-fold accuracy", pairs)?;
    if folds.len() != pairs.len() {
        return Err(MetricError::FoldCountMismatch {
            folds: folds.len(),
            pairs: pairs.len(),
        });
    }
    let fold_ids: BTreeSet<usize> = folds.iter().copied().collect();
    if fold_ids.len() < 2 {
        return Err(MetricError::TooFewFolds {
            found: fold_ids.len(),
        });
    }
    let mut per_fold = Vec::with_capacity(fold_ids.len());
    for &fold in &fold_ids {
        let (held_out, training): (Vec<_>, Vec<_>) = pairs
            .iter()
            .zip(folds)
            .map(|(pair, &id)| (id, (canonical(pair.score), pair.mated)))
            .partition(|(id, _)| *id == fold);
        let training: Vec<(f32, bool)> = training.into_iter().map(|(_, trial)| trial).collect();
        let threshold = best_training_threshold(&training);
        let correct = held_out
            .iter()
            .filter(|(_, (score, mated))| (f64::from(*score) >= threshold) == *mated)
            .count();
        per_fold.push(FoldAccuracy {
            fold,
            threshold,
            accuracy: rate(correct, held_out.len()),
            pairs: held_out.len(),
        });
    }
    let accuracies: Vec<f64> = per_fold.iter().map(|f| f.accuracy).collect();
    let mean = accuracies.iter().sum::<f64>() / accuracies.len() as f64;
    Ok(KFoldAccuracy {
        mean,
        std: population_std(&accuracies, mean),
        per_fold,
    })
}

/// Deterministic balanced fold assignment for [`kfold_accuracy`]: fold ids `0..folds`, sizes differing by at
/// most one, shuffled with ChaCha8 seeded by `seed` (own Fisher–Yates, so the split does not change when the
/// `rand` crate changes its shuffle).
pub fn assign_folds(pairs: usize, folds: usize, seed: u64) -> Result<Vec<usize>, MetricError> {
    if folds < 2 || folds > pairs {
        return Err(MetricError::InvalidFoldCount { folds, pairs });
    }
    let mut assignment: Vec<usize> = (0..pairs).map(|i| i % folds).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in (1..assignment.len()).rev() {
        let j = uniform_below(&mut rng, i as u64 + 1) as usize;
        assignment.swap(i, j);
    }
    Ok(assignment)
}

/// Unbiased integer in `[0, bound)` by rejection sampling.
fn uniform_below(rng: &mut ChaCha8Rng, bound: u64) -> u64 {
    let zone = u64::MAX - (u64::MAX % bound);
    loop {
        let draw = rng.next_u64();
        if draw < zone {
            return draw % bound;
        }
    }
}

/// Error rates at one fixed threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThresholdRow {
    pub threshold: f32,
    /// Impostor pairs with `score >= threshold` / impostor pairs.
    pub far: f64,
    /// Genuine pairs with `score < threshold` / genuine pairs.
    pub frr: f64,
    /// `(genuine accepted + impostors rejected) / all pairs`.
    pub accuracy: f64,
}

/// FAR, FRR and accuracy at each given threshold (in the given order). Infinite thresholds are allowed
/// (accept all / reject all); NaN is not.
pub fn threshold_table(pairs: &[ScoredPair], thresholds: &[f32]) -> Result<Vec<ThresholdRow>, MetricError> {
    let counts = validate_pairs("threshold table", pairs)?;
    require_both_classes("threshold table", &counts)?;
    let mut genuine: Vec<f32> = pairs
        .iter()
        .filter(|p| p.mated)
        .map(|p| canonical(p.score))
        .collect();
    let mut impostor: Vec<f32> = pairs
        .iter()
        .filter(|p| !p.mated)
        .map(|p| canonical(p.score))
        .collect();
    genuine.sort_by(f32::total_cmp);
    impostor.sort_by(f32::total_cmp);
    let accepted = |sorted: &[f32], t: f32| sorted.len() - sorted.partition_point(|&s| s < t);
    thresholds
        .iter()
        .enumerate()
        .map(|(index, &threshold)| {
            if threshold.is_nan() {
                return Err(MetricError::NanThreshold { index });
            }
            let threshold = canonical(threshold);
            let genuine_accepted = accepted(&genuine, threshold);
            let impostor_accepted = accepted(&impostor, threshold);
            Ok(ThresholdRow {
                threshold,
                far: rate(impostor_accepted, counts.impostor),
                frr: rate(counts.genuine - genuine_accepted, counts.genuine),
                accuracy: rate(
                    genuine_accepted + counts.impostor - impostor_accepted,
                    counts.genuine + counts.impostor,
                ),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Open-set identification (1:N)
// ---------------------------------------------------------------------------------------------

/// The result of one 1:N search against the gallery.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SearchOutcome {
    /// Whether the searched person is enrolled in the gallery (a mated search).
    pub mated: bool,
    /// 1-based rank of the mate in the candidate list; `None` when the mate is absent (always `None` for
    /// non-mated searches).
    pub mate_rank: Option<usize>,
    /// The statistic identification mode thresholds (raw top-1 score or another statistic); higher means a
    /// stronger claim that the top candidate is the searched person.
    pub decision_score: f32,
    /// Whether the rank-1 candidate is the mate; must equal `mate_rank == Some(1)`.
    pub top_is_mate: bool,
}

struct SearchCounts {
    mated: usize,
    nonmated: usize,
}

fn validate_outcomes(metric: &'static str, outcomes: &[SearchOutcome]) -> Result<SearchCounts, MetricError> {
    if outcomes.is_empty() {
        return Err(MetricError::EmptyInput { metric });
    }
    let mut counts = SearchCounts {
        mated: 0,
        nonmated: 0,
    };
    for (index, outcome) in outcomes.iter().enumerate() {
        check_finite(index, outcome.decision_score)?;
        if outcome.mate_rank == Some(0) {
            return Err(MetricError::InconsistentOutcome {
                index,
                reason: "mate rank is 1-based, got 0",
            });
        }
        if outcome.mated {
            counts.mated += 1;
            if outcome.top_is_mate != (outcome.mate_rank == Some(1)) {
                return Err(MetricError::InconsistentOutcome {
                    index,
                    reason: "top_is_mate disagrees with mate_rank",
                });
            }
        } else {
            counts.nonmated += 1;
            if outcome.mate_rank.is_some() || outcome.top_is_mate {
                return Err(MetricError::InconsistentOutcome {
                    index,
                    reason: "non-mated search reports a mate",
                });
            }
        }
    }
    Ok(counts)
}

fn require_mated(metric: &'static str, counts: &SearchCounts) -> Result<(), MetricError> {
    if counts.mated == 0 {
        return Err(MetricError::EmptyClass {
            metric,
            class: "mated searches",
        });
    }
    Ok(())
}

/// Identification rate at each rank `r` (CMC): mated searches whose mate is at rank `<= r` / mated searches.
/// Non-mated searches are ignored. Ranks are 1-based; the result keeps the order of `ranks`.
pub fn rank_rates(outcomes: &[SearchOutcome], ranks: &[usize]) -> Result<Vec<(usize, f64)>, MetricError> {
    let counts = validate_outcomes("rank rates", outcomes)?;
    require_mated("rank rates", &counts)?;
    ranks
        .iter()
        .map(|&rank| {
            if rank == 0 {
                return Err(MetricError::InvalidRank { rank });
            }
            let hits = outcomes
                .iter()
                .filter(|o| o.mated && o.mate_rank.is_some_and(|r| r <= rank))
                .count();
            Ok((rank, rate(hits, counts.mated)))
        })
        .collect()
}

/// Cumulative match characteristic for ranks `1..=max_rank` (see [`rank_rates`]).
pub fn cmc_curve(outcomes: &[SearchOutcome], max_rank: usize) -> Result<Vec<(usize, f64)>, MetricError> {
    let counts = validate_outcomes("cmc", outcomes)?;
    require_mated("cmc", &counts)?;
    if max_rank == 0 {
        return Err(MetricError::InvalidRank { rank: max_rank });
    }
    let mut at_rank = vec![0usize; max_rank + 1];
    for rank in outcomes.iter().filter(|o| o.mated).filter_map(|o| o.mate_rank) {
        if let Some(slot) = at_rank.get_mut(rank) {
            *slot += 1;
        }
    }
    let mut cumulative = 0;
    Ok((1..=max_rank)
        .map(|rank| {
            cumulative += at_rank[rank];
            (rank, rate(cumulative, counts.mated))
        })
        .collect())
}

/// Trials for identification thresholds: non-mated searches are the negatives (false positives when they
/// alarm) and mated searches with the mate at rank 1 are the positives (hits when they alarm).
fn identification_steps(outcomes: &[SearchOutcome]) -> Vec<ThresholdStep> {
    // A mated search whose mate is not at rank 1 is a miss at every threshold: it counts in the FNIR
    // denominator only, and must not enter the trials where it would look like a negative.
    let trials: Vec<(f32, bool)> = outcomes
        .iter()
        .filter(|o| !o.mated || o.top_is_mate)
        .map(|o| (canonical(o.decision_score), o.mated))
        .collect();
    threshold_steps(trials)
}

/// One point of an identification DET curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DetPoint {
    /// A search raises an alarm when `decision_score >= threshold`.
    pub threshold: f32,
    /// False positive identification rate: non-mated searches with `decision_score >= threshold` / non-mated
    /// searches.
    pub fpir: f64,
    /// False negative identification rate: mated searches *without* (mate at rank 1 and
    /// `decision_score >= threshold`) / mated searches.
    pub fnir: f64,
}

/// Open-set identification DET: one point per distinct decision score of a non-mated search or of a mated
/// search with its mate at rank 1 (other scores cannot change either rate), ordered by decreasing threshold
/// (FPIR grows, FNIR shrinks along the vector). Needs mated and non-mated searches.
pub fn det_curve(outcomes: &[SearchOutcome]) -> Result<Vec<DetPoint>, MetricError> {
    let counts = validate_outcomes("det", outcomes)?;
    require_mated("det", &counts)?;
    if counts.nonmated == 0 {
        return Err(MetricError::EmptyClass {
            metric: "det",
            class: "non-mated searches",
        });
    }
    Ok(identification_steps(outcomes)
        .into_iter()
        .map(|step| DetPoint {
            threshold: step.threshold,
            fpir: rate(step.negatives_accepted, counts.nonmated),
            fnir: rate(counts.mated - step.positives_accepted, counts.mated),
        })
        .collect())
}

/// Identification operating point at a target FPIR.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IdentOperatingPoint {
    pub fpir_target: f64,
    /// Alarm when `decision_score >= threshold`.
    pub threshold: f32,
    pub fnir: f64,
    /// FPIR actually observed at `threshold` (at most `fpir_target`).
    pub fpir_achieved: f64,
    /// Non-mated searches that raise an alarm at `threshold`.
    pub false_positives: usize,
    /// Non-mated searches the FPIR estimate rests on.
    pub nonmated_searches: usize,
    /// Mated searches the FNIR estimate rests on.
    pub mated_searches: usize,
}

/// FNIR at a target FPIR.
///
/// Definition: the threshold is the lowest distinct observed decision score `t` with `FPIR(t) <= fpir_target`
/// (next `f32` above the top score if none qualifies); FNIR is reported there. The point is
/// [`Measurement::NotMeasurable`] when there are fewer than `ceil(1/fpir_target)` non-mated searches.
pub fn fnir_at_fpir(
    outcomes: &[SearchOutcome],
    fpir_target: f64,
) -> Result<Measurement<IdentOperatingPoint>, MetricError> {
    let fpir_target = check_rate("fnir@fpir", fpir_target)?;
    let counts = validate_outcomes("fnir@fpir", outcomes)?;
    require_mated("fnir@fpir", &counts)?;
    let required = minimum_trials_for_rate(fpir_target);
    if counts.nonmated < required {
        return Ok(Measurement::NotMeasurable(Shortfall {
            target: fpir_target,
            available: counts.nonmated,
            required,
        }));
    }
    let step = lowest_threshold_within(&identification_steps(outcomes), counts.nonmated, fpir_target);
    Ok(Measurement::Measured(IdentOperatingPoint {
        fpir_target,
        threshold: step.threshold,
        fnir: rate(counts.mated - step.positives_accepted, counts.mated),
        fpir_achieved: rate(step.negatives_accepted, counts.nonmated),
        false_positives: step.negatives_accepted,
        nonmated_searches: counts.nonmated,
        mated_searches: counts.mated,
    }))
}

/// FNIR at a fixed decision threshold: mated searches whose rank-1 candidate is not the mate or whose decision score
/// is below `threshold` / mated searches (non-mated searches are ignored). `1 - FNIR` is the share of listed people
/// identification mode alerts for at that threshold.
pub fn fnir_at_threshold(outcomes: &[SearchOutcome], threshold: f32) -> Result<f64, MetricError> {
    let counts = validate_outcomes("fnir at threshold", outcomes)?;
    require_mated("fnir at threshold", &counts)?;
    let found = outcomes
        .iter()
        .filter(|o| o.mated && o.top_is_mate && o.decision_score >= threshold)
        .count();
    Ok(rate(counts.mated - found, counts.mated))
}

/// The percentiles reports show by default.
pub const STANDARD_PERCENTILES: [f64; 7] = [1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0];

/// Nearest-rank percentiles of a score sample: for each `p` in `percents` (0–100), the value at 1-based rank
/// `ceil(p/100 * n)` of the ascending sample (clamped to `[1, n]`), so every percentile is an observed score.
pub fn score_percentiles(scores: &[f32], percents: &[f64]) -> Result<Vec<(f64, f32)>, MetricError> {
    if scores.is_empty() {
        return Err(MetricError::EmptyInput {
            metric: "score percentiles",
        });
    }
    let mut sorted = scores
        .iter()
        .enumerate()
        .map(|(index, &score)| check_finite(index, score))
        .collect::<Result<Vec<f32>, _>>()?;
    sorted.sort_by(f32::total_cmp);
    percents
        .iter()
        .map(|&p| Ok((p, sorted[nearest_rank_index(sorted.len(), check_percent(p)?)])))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Latency
// ---------------------------------------------------------------------------------------------

/// Summary of request latencies in milliseconds; percentiles use the nearest-rank definition (rank
/// `ceil(p/100 * n)` of the ascending sample), so each is an observed latency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: usize,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Summarises latencies (milliseconds, finite, non-negative).
pub fn latency_summary(latencies_ms: &[f64]) -> Result<LatencySummary, MetricError> {
    if latencies_ms.is_empty() {
        return Err(MetricError::EmptyInput {
            metric: "latency summary",
        });
    }
    if let Some((index, &value)) = latencies_ms
        .iter()
        .enumerate()
        .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
    {
        return Err(MetricError::InvalidLatency { index, value });
    }
    let mut sorted = latencies_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let at = |p: f64| sorted[nearest_rank_index(n, p)];
    Ok(LatencySummary {
        count: n,
        mean: sorted.iter().sum::<f64>() / n as f64,
        p50: at(50.0),
        p90: at(90.0),
        p99: at(99.0),
        max: sorted[n - 1],
    })
}

// ---------------------------------------------------------------------------------------------
// FPIR calibration tables for model manifests
// ---------------------------------------------------------------------------------------------

/// Table points with at most this many non-mated searches at or above them are all kept: the low-FPIR tail is
/// where operators set thresholds, so it stays exact.
const EXACT_TAIL_SEARCHES: usize = 100;
/// Beyond the tail, a point is kept once its exceedance count grew by this factor over the last kept point,
/// bounding a table built from a million searches to a few hundred entries.
const THINNING_GROWTH: f64 = 1.05;

/// Builds the FPIR calibration table from the decision scores of non-mated searches.
///
/// Every distinct score is a candidate point with FPIR = (searches with score `>=` it) / searches. Points with
/// at most 100 searches at or above them are all kept; above that a point is kept once its count grew 5 % over
/// the last kept one, and the lowest score is always kept.
pub fn fpir_calibration_table(
    nonmated_decision_scores: &[f32],
    gallery_size: usize,
) -> Result<CalibrationTable, MetricError> {
    if gallery_size == 0 {
        return Err(ScoreError::InvalidGallerySize.into());
    }
    if nonmated_decision_scores.is_empty() {
        return Err(MetricError::EmptyInput {
            metric: "fpir calibration",
        });
    }
    let trials = nonmated_decision_scores
        .iter()
        .enumerate()
        .map(|(index, &score)| check_finite(index, score).map(|s| (s, false)))
        .collect::<Result<Vec<_>, _>>()?;
    let searches = trials.len();
    let steps = threshold_steps(trials);
    let mut kept: Vec<ThresholdStep> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let is_lowest = i + 1 == steps.len();
        let grown = kept.last().is_none_or(|last| {
            step.negatives_accepted as f64 >= last.negatives_accepted as f64 * THINNING_GROWTH
        });
        if step.negatives_accepted <= EXACT_TAIL_SEARCHES || grown || is_lowest {
            kept.push(*step);
        }
    }
    kept.reverse();
    let scores = kept.iter().map(|s| s.threshold).collect();
    let fpir = kept.iter().map(|s| rate(s.negatives_accepted, searches)).collect();
    Ok(CalibrationTable::from_parts(gallery_size, searches, scores, fpir)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(score: f32, mated: bool) -> ScoredPair {
        ScoredPair { score, mated }
    }

    /// Genuine 0.9 0.8 0.7 0.6 0.4; impostor 0.7 0.5 0.4 0.3 0.1 (ties at 0.7 and 0.4).
    /// Accepted counts (genuine G, impostor I) at each distinct threshold, highest first:
    /// 0.9: G1 I0 | 0.8: G2 I0 | 0.7: G3 I1 | 0.6: G4 I1 | 0.5: G4 I2 | 0.4: G5 I3 | 0.3: G5 I4 | 0.1: G5 I5
    fn verification_set() -> Vec<ScoredPair> {
        vec![
            pair(0.9, true),
            pair(0.7, false),
            pair(0.8, true),
            pair(0.5, false),
            pair(0.7, true),
            pair(0.4, false),
            pair(0.6, true),
            pair(0.3, false),
            pair(0.4, true),
            pair(0.1, false),
        ]
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn roc_has_one_point_per_distinct_score_with_tie_counts() {
        let points = roc(&verification_set()).expect("valid pairs");
        let expected: [(f32, f64, f64); 8] = [
            (0.9, 0.0, 0.2),
            (0.8, 0.0, 0.4),
            (0.7, 0.2, 0.6),
            (0.6, 0.2, 0.8),
            (0.5, 0.4, 0.8),
            (0.4, 0.6, 1.0),
            (0.3, 0.8, 1.0),
            (0.1, 1.0, 1.0),
        ];
        assert_eq!(points.len(), expected.len());
        for (point, (threshold, far, tar)) in points.iter().zip(expected) {
            assert_eq!(point.threshold, threshold);
            assert!(close(point.far, far), "far at {threshold}: {}", point.far);
            assert!(close(point.tar, tar), "tar at {threshold}: {}", point.tar);
            assert!(close(point.frr, 1.0 - tar));
        }
    }

    #[test]
    fn tar_at_far_takes_lowest_admissible_threshold() {
        let pairs = verification_set();
        // FAR <= 0.2 allows 1 of 5 impostors: 0.6 (I1) is the lowest such threshold, TAR there 4/5.
        let Measurement::Measured(point) = tar_at_far(&pairs, 0.2).expect("valid") else {
            panic!("5 impostors measure FAR 0.2");
        };
        assert_eq!(point.threshold, 0.6);
        assert!(close(point.tar, 0.8));
        assert!(close(point.far_achieved, 0.2));
        assert_eq!(
            (point.false_accepts, point.impostor_pairs, point.genuine_pairs),
            (1, 5, 5)
        );
        // FAR <= 0.4 allows 2: lowest threshold 0.5, TAR still 4/5.
        let point = tar_at_far(&pairs, 0.4)
            .expect("valid")
            .measured()
            .copied()
            .expect("measurable");
        assert_eq!(point.threshold, 0.5);
        assert!(close(point.tar, 0.8));
        // FAR <= 0.25 needs 4 impostors and allows floor(1.25) = 1: back at 0.6.
        let point = tar_at_far(&pairs, 0.25)
            .expect("valid")
            .measured()
            .copied()
            .expect("measurable");
        assert_eq!(point.threshold, 0.6);
        // FAR <= 1 accepts everything at the lowest score.
        let point = tar_at_far(&pairs, 1.0)
            .expect("valid")
            .measured()
            .copied()
            .expect("measurable");
        assert_eq!((point.threshold, point.tar, point.far_achieved), (0.1, 1.0, 1.0));
    }

    #[test]
    fn tar_at_far_is_not_measurable_below_one_over_n() {
        // FAR 0.1 needs 10 impostor pairs; the set has 5.
        assert_eq!(
            tar_at_far(&verification_set(), 0.1).expect("valid"),
            Measurement::NotMeasurable(Shortfall {
                target: 0.1,
                available: 5,
                required: 10
            })
        );
        assert_eq!(minimum_trials_for_rate(0.001), 1000);
        assert_eq!(minimum_trials_for_rate(0.3), 4);
    }

    #[test]
    fn tar_at_far_steps_above_tied_top_impostors() {
        // Two impostors tie at the top score 0.9; FAR <= 0.2 allows one, so no observed score works and the
        // threshold is the next f32 above 0.9, accepting nothing.
        let pairs = [
            pair(0.9, false),
            pair(0.9, false),
            pair(0.2, false),
            pair(0.1, false),
            pair(0.0, false),
            pair(0.8, true),
            pair(0.5, true),
        ];
        let point = tar_at_far(&pairs, 0.2)
            .expect("valid")
            .measured()
            .copied()
            .expect("measurable");
        assert_eq!(point.threshold, 0.9f32.next_up());
        assert_eq!(
            (point.tar, point.far_achieved, point.false_accepts),
            (0.0, 0.0, 0)
        );
    }

    #[test]
    fn auc_counts_ties_as_half() {
        // Impostors below each genuine score (+½ per tie): 0.9→5, 0.8→5, 0.7→4+½, 0.6→4, 0.4→2+½ = 21 of 25.
        let value = auc(&verification_set()).expect("valid");
        assert!(close(value, 21.0 / 25.0), "auc {value}");
        // All scores equal: every combination is a tie.
        let flat = [pair(0.5, true), pair(0.5, false), pair(0.5, true)];
        assert!(close(auc(&flat).expect("valid"), 0.5));
    }

    #[test]
    fn metrics_reject_bad_input() {
        assert!(matches!(
            roc(&[pair(f32::NAN, true), pair(0.1, false)]),
            Err(MetricError::Score(ScoreError::NonFiniteScore { index: 0, .. }))
        ));
        assert!(matches!(
            auc(&[pair(0.3, true)]),
            Err(MetricError::EmptyClass { .. })
        ));
        assert!(matches!(roc(&[]), Err(MetricError::EmptyInput { .. })));
        assert!(matches!(
            tar_at_far(&verification_set(), 0.0),
            Err(MetricError::Score(ScoreError::InvalidRate { .. }))
        ));
        assert!(matches!(
            tar_at_far(&verification_set(), 1.5),
            Err(MetricError::Score(ScoreError::InvalidRate { .. }))
        ));
    }

    #[test]
    fn negative_zero_scores_tie_with_zero() {
        let points = roc(&[pair(-0.0, true), pair(0.0, false)]).expect("valid");
        assert_eq!(points.len(), 1);
        assert!(close(
            auc(&[pair(-0.0, true), pair(0.0, false)]).expect("valid"),
            0.5
        ));
    }

    #[test]
    fn threshold_table_counts_accepts_at_or_above() {
        let rows = threshold_table(&verification_set(), &[0.65, 0.4, 0.95, f32::INFINITY]).expect("valid");
        // 0.65: G accepted 3, I accepted 1 → FAR .2, FRR .4, accuracy (3 + 4)/10.
        // 0.4 (ties accept): G5 I3 → FAR .6, FRR 0, accuracy (5 + 2)/10.
        // 0.95 and +inf: nothing accepted → FAR 0, FRR 1, accuracy 5/10.
        let expected = [(0.2, 0.4, 0.7), (0.6, 0.0, 0.7), (0.0, 1.0, 0.5), (0.0, 1.0, 0.5)];
        for (row, (far, frr, accuracy)) in rows.iter().zip(expected) {
            assert!(
                close(row.far, far) && close(row.frr, frr) && close(row.accuracy, accuracy),
                "{row:?}"
            );
        }
        assert!(matches!(
            threshold_table(&verification_set(), &[0.5, f32::NAN]),
            Err(MetricError::NanThreshold { index: 1 })
        ));
    }

    /// Scores are multiples of 1/32 so midpoints are exact. Fold 3: G 29 19, I 10 16; fold 5: G 26 18,
    /// I 6 21; fold 7: G 22 13, I 14 3 (in 32nds).
    fn kfold_set() -> (Vec<ScoredPair>, Vec<usize>) {
        let rows: [(usize, f32, bool); 12] = [
            (3, 29.0, true),
            (3, 19.0, true),
            (3, 10.0, false),
            (3, 16.0, false),
            (5, 26.0, true),
            (5, 18.0, true),
            (5, 6.0, false),
            (5, 21.0, false),
            (7, 22.0, true),
            (7, 13.0, true),
            (7, 14.0, false),
            (7, 3.0, false),
        ];
        let pairs = rows
            .iter()
            .map(|&(_, units, mated)| pair(units / 32.0, mated))
            .collect();
        let folds = rows.iter().map(|&(fold, _, _)| fold).collect();
        (pairs, folds)
    }

    #[test]
    fn kfold_accuracy_follows_lfw_protocol() {
        // Held out 3: training correct counts (G accepted + I rejected) peak at 6 for cuts at 22, 18 and 13;
        //   the lowest (13) wins, cut halfway to 6 → t = 9.5. Held out: G29 ✓ G19 ✓ I10 ✗ I16 ✗ → 0.5.
        // Held out 5: peak 7 only at 19, cut halfway to 16 → t = 17.5. G26 ✓ G18 ✓ I6 ✓ I21 ✗ → 0.75.
        // Held out 7: peak 7 only at 18, cut halfway to 16 → t = 17. G22 ✓ G13 ✗ I14 ✓ I3 ✓ → 0.75.
        let (pairs, folds) = kfold_set();
        let result = kfold_accuracy(&pairs, &folds).expect("valid folds");
        let expected = [(3, 9.5, 0.5), (5, 17.5, 0.75), (7, 17.0, 0.75)];
        assert_eq!(result.per_fold.len(), 3);
        for (fold, (id, units, accuracy)) in result.per_fold.iter().zip(expected) {
            assert_eq!(fold.fold, id);
            assert_eq!(fold.threshold, units / 32.0);
            assert!(close(fold.accuracy, accuracy), "fold {id}: {}", fold.accuracy);
            assert_eq!(fold.pairs, 4);
        }
        // Mean 2/3; deviations -1/6, 1/12, 1/12 → variance (1/36 + 2/144)/3 = 1/72.
        assert!(close(result.mean, 2.0 / 3.0));
        assert!(close(result.std, (1.0f64 / 72.0).sqrt()));
    }

    #[test]
    fn kfold_accuracy_rejects_bad_fold_assignments() {
        let (pairs, folds) = kfold_set();
        assert!(matches!(
            kfold_accuracy(&pairs, &folds[..5]),
            Err(MetricError::FoldCountMismatch { folds: 5, pairs: 12 })
        ));
        assert!(matches!(
            kfold_accuracy(&pairs, &[1; 12]),
            Err(MetricError::TooFewFolds { found: 1 })
        ));
    }

    #[test]
    fn assign_folds_is_balanced_and_seeded() {
        let folds = assign_folds(103, 10, 7).expect("valid");
        let mut sizes = [0usize; 10];
        for &f in &folds {
            sizes[f] += 1;
        }
        assert_eq!(sizes.iter().sum::<usize>(), 103);
        assert!(sizes.iter().all(|&s| s == 10 || s == 11), "{sizes:?}");
        assert_eq!(folds, assign_folds(103, 10, 7).expect("valid"));
        assert_ne!(folds, assign_folds(103, 10, 8).expect("valid"));
        assert_ne!(
            folds,
            (0..103).map(|i| i % 10).collect::<Vec<_>>(),
            "assignment is shuffled"
        );
        assert!(assign_folds(5, 1, 0).is_err());
        assert!(assign_folds(5, 6, 0).is_err());
    }

    fn search(mated: bool, mate_rank: Option<usize>, decision_score: f32) -> SearchOutcome {
        SearchOutcome {
            mated,
            mate_rank,
            decision_score,
            top_is_mate: mate_rank == Some(1),
        }
    }

    /// Mated: rank1@0.9, rank1@0.6, rank2@0.8, rank1@0.5, absent@0.3, rank5@0.4.
    /// Non-mated: 0.7, 0.6 (ties the mated 0.6), 0.35, 0.2.
    fn identification_set() -> Vec<SearchOutcome> {
        vec![
            search(true, Some(1), 0.9),
            search(false, None, 0.7),
            search(true, Some(1), 0.6),
            search(true, Some(2), 0.8),
            search(false, None, 0.6),
            search(true, Some(1), 0.5),
            search(true, None, 0.3),
            search(false, None, 0.35),
            search(true, Some(5), 0.4),
            search(false, None, 0.2),
        ]
    }

    #[test]
    fn fnir_at_a_fixed_threshold_needs_the_mate_on_top_and_the_score() {
        // Mated rank-1 searches score 0.9, 0.6, 0.5; the rank-2 one (0.8) never counts; six mated in all.
        let set = identification_set();
        assert!(close(fnir_at_threshold(&set, 0.6).unwrap(), 4.0 / 6.0));
        assert!(close(fnir_at_threshold(&set, 0.6f32.next_up()).unwrap(), 5.0 / 6.0), "one step above 0.6");
        assert!(close(fnir_at_threshold(&set, 0.5).unwrap(), 3.0 / 6.0));
        assert!(close(fnir_at_threshold(&set, 0.95).unwrap(), 1.0));
        assert!(fnir_at_threshold(&set[1..2], 0.5).is_err(), "no mated search");
    }

    #[test]
    fn rank_rates_and_cmc_count_mated_searches_only() {
        // Six mated searches: rank <= 1: 3, <= 2: 4, <= 5: 5, <= 10: 5 (one mate absent).
        let rates = rank_rates(&identification_set(), &[1, 2, 5, 10]).expect("valid");
        let expected = [(1, 3.0 / 6.0), (2, 4.0 / 6.0), (5, 5.0 / 6.0), (10, 5.0 / 6.0)];
        for ((rank, value), (want_rank, want)) in rates.iter().zip(expected) {
            assert_eq!(*rank, want_rank);
            assert!(close(*value, want), "rank {rank}: {value}");
        }
        let cmc = cmc_curve(&identification_set(), 5).expect("valid");
        let expected = [3.0, 4.0, 4.0, 4.0, 5.0].map(|hits| hits / 6.0);
        assert_eq!(
            cmc.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        for ((_, value), want) in cmc.iter().zip(expected) {
            assert!(close(*value, want));
        }
        assert!(matches!(
            rank_rates(&identification_set(), &[0]),
            Err(MetricError::InvalidRank { rank: 0 })
        ));
    }

    #[test]
    fn det_curve_counts_only_rank_one_hits() {
        // Thresholds come from non-mated scores and rank-1 mated scores (0.9, 0.6, 0.5); the rank-2 search at
        // 0.8 is a miss at every threshold. (hits, false positives) per threshold:
        // 0.9: 1,0 | 0.7: 1,1 | 0.6: 2,2 | 0.5: 3,2 | 0.35: 3,3 | 0.2: 3,4
        let det = det_curve(&identification_set()).expect("valid");
        let expected: [(f32, f64, f64); 6] = [
            (0.9, 0.0, 5.0 / 6.0),
            (0.7, 0.25, 5.0 / 6.0),
            (0.6, 0.5, 4.0 / 6.0),
            (0.5, 0.5, 3.0 / 6.0),
            (0.35, 0.75, 3.0 / 6.0),
            (0.2, 1.0, 3.0 / 6.0),
        ];
        assert_eq!(det.len(), expected.len());
        for (point, (threshold, fpir, fnir)) in det.iter().zip(expected) {
            assert_eq!(point.threshold, threshold);
            assert!(close(point.fpir, fpir) && close(point.fnir, fnir), "{point:?}");
        }
    }

    #[test]
    fn fnir_at_fpir_takes_lowest_admissible_threshold() {
        let outcomes = identification_set();
        // FPIR <= 0.25 allows 1 of 4 non-mated searches: lowest threshold 0.7, FNIR 5/6.
        let point = fnir_at_fpir(&outcomes, 0.25)
            .expect("valid")
            .measured()
            .copied()
            .expect("measurable");
        assert_eq!(point.threshold, 0.7);
        assert!(close(point.fnir, 5.0 / 6.0) && close(point.fpir_achieved, 0.25));
        assert_eq!(
            (
                point.false_positives,
                point.nonmated_searches,
                point.mated_searches
            ),
            (1, 4, 6)
        );
        // FPIR <= 0.5 allows 2: 0.5 (not 0.6), FNIR 3/6.
        let point = fnir_at_fpir(&outcomes, 0.5)
            .expect("valid")
            .measured()
            .copied()
            .expect("measurable");
        assert_eq!(point.threshold, 0.5);
        assert!(close(point.fnir, 0.5));
        // FPIR <= 1: the floor of FNIR is 1 - rank-1 rate.
        let point = fnir_at_fpir(&outcomes, 1.0)
            .expect("valid")
            .measured()
            .copied()
            .expect("measurable");
        assert_eq!(point.threshold, 0.2);
        assert!(close(point.fnir, 0.5));
        // FPIR 0.1 needs 10 non-mated searches; there are 4.
        assert_eq!(
            fnir_at_fpir(&outcomes, 0.1).expect("valid"),
            Measurement::NotMeasurable(Shortfall {
                target: 0.1,
                available: 4,
                required: 10
            })
        );
    }

    #[test]
    fn inconsistent_search_outcomes_are_rejected() {
        let mut outcomes = identification_set();
        outcomes[0].top_is_mate = false;
        assert!(matches!(
            det_curve(&outcomes),
            Err(MetricError::InconsistentOutcome { index: 0, .. })
        ));
        let mut outcomes = identification_set();
        outcomes[1].mate_rank = Some(3);
        assert!(matches!(
            det_curve(&outcomes),
            Err(MetricError::InconsistentOutcome { index: 1, .. })
        ));
        let mut outcomes = identification_set();
        outcomes[3].mate_rank = Some(0);
        assert!(matches!(
            cmc_curve(&outcomes, 3),
            Err(MetricError::InconsistentOutcome { index: 3, .. })
        ));
        let mut outcomes = identification_set();
        outcomes[2].decision_score = f32::INFINITY;
        assert!(matches!(
            fnir_at_fpir(&outcomes, 0.5),
            Err(MetricError::Score(ScoreError::NonFiniteScore { index: 2, .. }))
        ));
        let nonmated_only = [search(false, None, 0.3)];
        assert!(matches!(
            det_curve(&nonmated_only),
            Err(MetricError::EmptyClass { .. })
        ));
    }

    #[test]
    fn score_percentiles_use_nearest_rank() {
        let scores = [5.0, 1.0, 4.0, 2.0, 3.0, 9.0, 7.0, 8.0, 6.0, 10.0];
        // n = 10, rank = ceil(p/10): p0→1 (clamped), p1→1, p5→1, p25→3, p30→3, p50→5, p70→7, p75→8,
        // p90→9, p95→10, p99→10, p100→10; sorted values equal their rank.
        let percents = [
            0.0, 1.0, 5.0, 25.0, 30.0, 50.0, 70.0, 75.0, 90.0, 95.0, 99.0, 100.0,
        ];
        let ranks = [1.0, 1.0, 1.0, 3.0, 3.0, 5.0, 7.0, 8.0, 9.0, 10.0, 10.0, 10.0];
        let values = score_percentiles(&scores, &percents).expect("valid");
        for ((p, value), rank) in values.iter().zip(ranks) {
            assert_eq!(*value, rank, "p{p}");
        }
        // n = 100: 7/100·100 evaluates to 7.000000000000001 in binary; the rank must still be 7, not 8.
        let hundred: Vec<f32> = (1..=100).map(|v| v as f32).collect();
        let values = score_percentiles(&hundred, &[7.0, 29.0, 55.0]).expect("valid");
        assert_eq!(
            values.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
            vec![7.0, 29.0, 55.0]
        );
        assert!(matches!(
            score_percentiles(&scores, &[101.0]),
            Err(MetricError::InvalidPercentile { .. })
        ));
        assert!(matches!(
            score_percentiles(&[], &[50.0]),
            Err(MetricError::EmptyInput { .. })
        ));
    }

    #[test]
    fn latency_summary_uses_nearest_rank() {
        // Sorted: 3 4 5 6 7 8 9 10 11 12 100 (n = 11, sum 175).
        // p50 → rank ceil(5.5) = 6 → 8; p90 → ceil(9.9) = 10 → 12; p99 → ceil(10.89) = 11 → 100.
        let summary =
            latency_summary(&[12.0, 3.0, 7.0, 5.0, 100.0, 9.0, 4.0, 6.0, 8.0, 10.0, 11.0]).expect("valid");
        assert_eq!(summary.count, 11);
        assert!(close(summary.mean, 175.0 / 11.0));
        assert_eq!(
            (summary.p50, summary.p90, summary.p99, summary.max),
            (8.0, 12.0, 100.0, 100.0)
        );
        assert!(matches!(
            latency_summary(&[]),
            Err(MetricError::EmptyInput { .. })
        ));
        assert!(matches!(
            latency_summary(&[1.0, -2.0]),
            Err(MetricError::InvalidLatency { index: 1, .. })
        ));
        assert!(matches!(
            latency_summary(&[f64::NAN]),
            Err(MetricError::InvalidLatency { index: 0, .. })
        ));
    }

    /// Non-mated scores 0.1 0.2 0.2 0.3 0.5 0.5 0.5 0.9 (n = 8): searches at or above each distinct score
    /// 0.1→8, 0.2→7, 0.3→5, 0.5→4, 0.9→1, so FPIR 1, .875, .625, .5, .125.
    fn calibration() -> CalibrationTable {
        fpir_calibration_table(&[0.5, 0.1, 0.2, 0.9, 0.3, 0.5, 0.2, 0.5], 100).expect("valid scores")
    }

    #[test]
    fn calibration_table_counts_searches_at_or_above_each_score() {
        let table = calibration();
        assert_eq!(table.scores(), &[0.1, 0.2, 0.3, 0.5, 0.9]);
        assert_eq!(table.fpir(), &[1.0, 0.875, 0.625, 0.5, 0.125]);
        assert_eq!((table.gallery_size(), table.searches()), (100, 8));
        let rebuilt = CalibrationTable::from_parts(100, 8, table.scores().to_vec(), table.fpir().to_vec());
        assert_eq!(rebuilt.expect("valid parts"), table);
        assert!(matches!(fpir_calibration_table(&[], 10), Err(MetricError::EmptyInput { .. })));
        assert!(matches!(
            fpir_calibration_table(&[0.1], 0),
            Err(MetricError::Score(ScoreError::InvalidGallerySize))
        ));
        assert!(matches!(
            fpir_calibration_table(&[0.1, f32::NAN], 10),
            Err(MetricError::Score(ScoreError::NonFiniteScore { index: 1, .. }))
        ));
    }

    #[test]
    fn calibration_table_thins_the_bulk_and_keeps_the_tail() {
        let n = 10_000;
        let scores: Vec<f32> = (0..n).map(|i| i as f32 / n as f32).collect();
        let table = fpir_calibration_table(&scores, 1000).expect("valid");
        assert!(table.scores().len() < 300, "{} points", table.scores().len());
        assert_eq!(table.fpir()[0], 1.0);
        // The top 100 scores are all present with exact fractions.
        let tail = &table.scores()[table.scores().len() - 100..];
        assert_eq!(tail, &scores[n - 100..]);
        for (i, &score) in scores.iter().enumerate() {
            let empirical = (n - i) as f64 / n as f64;
            let estimate = table.fpir_at(score);
            assert!(
                (estimate / empirical - 1.0).abs() <= 0.05,
                "score {score}: {estimate} vs {empirical}"
            );
        }
        for target in [0.9, 0.31, 0.05, 0.0123, 0.005, 0.001] {
            let threshold = table.threshold_for_fpir(target).expect("in range");
            assert!(table.fpir_at(threshold) <= target);
            assert!(
                table.fpir_at(threshold.next_down()) > target,
                "lowest for {target}"
            );
        }
    }

    /// Deterministic pseudo-random pairs with coarse scores so that ties are frequent.
    fn random_pairs(seed: u64, n: usize) -> Vec<ScoredPair> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let mated = rng.next_u64() % 3 == 0;
                let base = (rng.next_u64() % 40) as f32 / 40.0;
                pair(if mated { base + 0.3 } else { base }, mated)
            })
            .collect()
    }

    #[test]
    fn verification_metrics_agree_with_brute_force_definitions() {
        for seed in 0..20 {
            let pairs = random_pairs(seed, 300);
            let genuine: Vec<f32> = pairs.iter().filter(|p| p.mated).map(|p| p.score).collect();
            let impostor: Vec<f32> = pairs.iter().filter(|p| !p.mated).map(|p| p.score).collect();
            let mut wins = 0.0;
            for g in &genuine {
                for i in &impostor {
                    wins += if g > i {
                        1.0
                    } else if g == i {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
            let expected_auc = wins / (genuine.len() * impostor.len()) as f64;
            assert!(close(auc(&pairs).expect("valid"), expected_auc));
            for target in [0.01, 0.05, 0.1, 0.5] {
                let point = tar_at_far(&pairs, target)
                    .expect("valid")
                    .measured()
                    .copied()
                    .expect("measurable");
                // Brute force over every observed score: lowest threshold with FAR <= target.
                let mut best: Option<(f32, f64)> = None;
                for candidate in pairs.iter().map(|p| p.score) {
                    let far =
                        impostor.iter().filter(|&&s| s >= candidate).count() as f64 / impostor.len() as f64;
                    let tar =
                        genuine.iter().filter(|&&s| s >= candidate).count() as f64 / genuine.len() as f64;
                    if far <= target && best.is_none_or(|(t, _)| candidate < t) {
                        best = Some((candidate, tar));
                    }
                }
                let (threshold, tar) = best.expect("some threshold qualifies");
                assert_eq!(point.threshold, threshold, "seed {seed} far {target}");
                assert!(close(point.tar, tar));
            }
        }
    }
}
