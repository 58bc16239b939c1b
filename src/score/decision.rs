//! Decision statistics for open-set (1:N) identification: the one number a search thresholds to decide whether
//! its top candidate raises an alarm, computed from the search's candidate scores.
//!
//! Every function takes candidate similarity scores **sorted in descending order** (the order a search returns
//! its candidates in), so `scores[0]` is the top-1 score and `scores[1..]` are the runner-ups. None of them
//! re-ranks candidates: ranks always come from the raw similarity, so rank-k identification rates do not depend
//! on the statistic. The FPIR calibration table a service uses must be built from the same statistic.
//!
//! - [`top1`]: the raw top-1 similarity (NIST FRTE's default).
//! - [`margin`]: top-1 minus the mean of the next `cohort` scores. A non-mated probe that merely resembles many
//!   people (a "wolf") scores high against everybody, so its top-1 score is high but its margin is not; a mated
//!   probe stands out from its own runner-ups. The runner-ups act as a per-search impostor cohort at no cost.
//! - [`symmetric_margin`]: the margin with the top candidate's own neighbourhood level subtracted as well; needs a
//!   per-template number kept with the gallery, so it is measured but not (yet) a manifest statistic.
//! - [`centre`]: subtract a model's mean template before scoring, for the "centred" variants of the statistics
//!   (the mean comes from the gallery itself, so no labelled data is needed).
//! - [`cohort_stats`], [`t_norm`], [`z_norm`], [`s_norm`]: classic cohort score normalisation (probe-side T-norm,
//!   template-side Z-norm, their symmetric average S-norm), kept so evaluations can compare them.
//!
//! Non-finite input scores propagate into a non-finite statistic rather than panicking; a calibration table maps
//! NaN to the most pessimistic FPIR.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a decision statistic could not be named.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecisionError {
    #[error("decision statistic `{name}`: unknown, expected `top1` or `margin`")]
    UnknownStatistic { name: String },
    #[error("decision statistic margin: cohort must be at least 1")]
    EmptyMarginCohort,
}

/// The statistic identification mode thresholds, as named in a manifest's `[calibration]` table
/// (`statistic = "top1"` or `statistic = "margin"` with `margin_cohort`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
// Tagged `name`: the shape search responses have always had (`{"name": "margin", "cohort": 50}`).
#[serde(tag = "name", rename_all = "snake_case")]
pub enum DecisionStatistic {
    /// The raw top-1 similarity.
    Top1,
    /// Top-1 similarity minus the mean of the next `cohort` similarities.
    Margin { cohort: usize },
}

impl DecisionStatistic {
    /// The statistic a manifest's `statistic` / `margin_cohort` pair names.
    pub fn from_manifest(statistic: &str, margin_cohort: usize) -> Result<Self, DecisionError> {
        match statistic {
            "top1" => Ok(DecisionStatistic::Top1),
            "margin" if margin_cohort == 0 => Err(DecisionError::EmptyMarginCohort),
            "margin" => Ok(DecisionStatistic::Margin { cohort: margin_cohort }),
            other => Err(DecisionError::UnknownStatistic { name: other.to_owned() }),
        }
    }

    /// The manifest's `statistic` value.
    pub fn manifest_name(&self) -> &'static str {
        match self {
            DecisionStatistic::Top1 => "top1",
            DecisionStatistic::Margin { .. } => "margin",
        }
    }

    /// The manifest's `margin_cohort` value (0 for `top1`).
    pub fn margin_cohort(&self) -> usize {
        match self {
            DecisionStatistic::Top1 => 0,
            DecisionStatistic::Margin { cohort } => *cohort,
        }
    }

    /// How many candidates a search must return for this statistic to see its whole cohort.
    pub fn candidates_needed(&self) -> usize {
        1 + self.margin_cohort()
    }

    /// The statistic of one search's candidate scores (descending); `None` when there are no candidates.
    pub fn decide(&self, scores_desc: &[f32]) -> Option<f32> {
        match self {
            DecisionStatistic::Top1 => top1(scores_desc),
            DecisionStatistic::Margin { cohort } => margin(scores_desc, *cohort),
        }
    }
}

impl fmt::Display for DecisionStatistic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecisionStatistic::Top1 => write!(f, "top1"),
            DecisionStatistic::Margin { cohort } => write!(f, "margin({cohort})"),
        }
    }
}

/// The top-1 score; `None` for an empty candidate list.
pub fn top1(scores_desc: &[f32]) -> Option<f32> {
    scores_desc.first().copied()
}

/// Top-1 score minus the mean of the next `cohort` scores; `None` for an empty candidate list.
///
/// With fewer than `cohort` runner-ups (a gallery smaller than `cohort + 1`) the mean is over those present; with
/// no runner-up at all (or `cohort == 0`) the margin is the top-1 score itself, as if the runner-up mean were 0, the
/// expected similarity of unrelated faces. Such small galleries lie far outside any calibration made on thousands
/// of identities, so the value only keeps the function total.
pub fn margin(scores_desc: &[f32], cohort: usize) -> Option<f32> {
    let (&top, rest) = scores_desc.split_first()?;
    let runner_ups = &rest[..cohort.min(rest.len())];
    if runner_ups.is_empty() {
        return Some(top);
    }
    // Sum in f64: a cohort of a few hundred f32 scores would otherwise lose the low digits the margin lives in.
    let mean = runner_ups.iter().map(|&s| f64::from(s)).sum::<f64>() / runner_ups.len() as f64;
    Some((f64::from(top) - mean) as f32)
}

/// Top-1 score minus the mean of two impostor references: the probe's next `cohort` scores (as in [`margin`]) and
/// `template_neighbour_mean`, the mean similarity of the top candidate's template to its own `cohort` nearest
/// other gallery templates (computed at enrolment). A template that sits in a crowded region of face space
/// attracts high scores from everybody; subtracting its neighbourhood level discounts that, as the probe's
/// runner-ups discount a probe that resembles everybody. `None` for an empty candidate list.
pub fn symmetric_margin(scores_desc: &[f32], cohort: usize, template_neighbour_mean: f32) -> Option<f32> {
    let (&top, rest) = scores_desc.split_first()?;
    let runner_ups = &rest[..cohort.min(rest.len())];
    let probe_mean = if runner_ups.is_empty() {
        0.0
    } else {
        runner_ups.iter().map(|&s| f64::from(s)).sum::<f64>() / runner_ups.len() as f64
    };
    Some((f64::from(top) - 0.5 * (probe_mean + f64::from(template_neighbour_mean))) as f32)
}

/// `template - mean`, scaled to unit length: removes the direction every face template shares, so cosine
/// similarity measures what distinguishes two faces rather than what all faces have in common. A template equal to
/// the mean has no direction left and becomes the zero vector (it then scores 0 against everything).
pub fn centre(template: &[f32], mean: &[f32]) -> Vec<f32> {
    let mut out: Vec<f32> = template.iter().zip(mean).map(|(x, m)| x - m).collect();
    let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm.is_finite() && norm > 0.0 {
        out.iter_mut().for_each(|v| *v /= norm);
    } else {
        out.iter_mut().for_each(|v| *v = 0.0);
    }
    out
}

/// Mean and standard deviation of a cohort of impostor scores, the reference a normalised score is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CohortStats {
    pub mean: f32,
    /// Population standard deviation; always positive.
    pub std: f32,
}

/// Mean and population standard deviation of the first `size` scores (descending order makes this the
/// "adaptive" top-`size` cohort; pass every score for a full cohort). `None` with fewer than two scores or no
/// spread, where a normalised score would be undefined.
pub fn cohort_stats(scores_desc: &[f32], size: usize) -> Option<CohortStats> {
    let cohort = &scores_desc[..size.min(scores_desc.len())];
    if cohort.len() < 2 {
        return None;
    }
    let n = cohort.len() as f64;
    let mean = cohort.iter().map(|&s| f64::from(s)).sum::<f64>() / n;
    let variance = cohort.iter().map(|&s| (f64::from(s) - mean).powi(2)).sum::<f64>() / n;
    let std = variance.sqrt();
    (std > 0.0 && std.is_finite()).then_some(CohortStats { mean: mean as f32, std: std as f32 })
}

/// Probe-side normalisation: how many cohort standard deviations `score` lies above the probe's impostor cohort.
pub fn t_norm(score: f32, probe: CohortStats) -> f32 {
    (score - probe.mean) / probe.std
}

/// Template-side normalisation: `score` in units of the enrolled template's own impostor cohort.
pub fn z_norm(score: f32, template: CohortStats) -> f32 {
    (score - template.mean) / template.std
}

/// Symmetric normalisation: the mean of [`t_norm`] and [`z_norm`].
pub fn s_norm(score: f32, probe: CohortStats, template: CohortStats) -> f32 {
    0.5 * (t_norm(score, probe) + z_norm(score, template))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top1_is_the_first_score() {
        assert_eq!(top1(&[0.7, 0.2, 0.1]), Some(0.7));
        assert_eq!(top1(&[]), None);
    }

    #[test]
    fn margin_subtracts_the_runner_up_mean() {
        let scores = [0.9, 0.5, 0.3, 0.1, -0.2];
        assert!((margin(&scores, 2).unwrap() - (0.9 - 0.4)).abs() < 1e-6);
        assert!((margin(&scores, 1).unwrap() - 0.4).abs() < 1e-6);
        // A cohort larger than the runner-ups averages those present.
        assert!((margin(&scores, 10).unwrap() - (0.9 - 0.175)).abs() < 1e-6);
        assert_eq!(margin(&[0.6], 10), Some(0.6));
        assert_eq!(margin(&scores, 0), Some(0.9));
        assert_eq!(margin(&[], 10), None);
    }

    #[test]
    fn margin_separates_a_lookalike_from_a_standout() {
        // Same top-1 score: a probe that resembles everybody has a smaller margin than one that stands out.
        let lookalike = [0.62, 0.60, 0.59, 0.58];
        let standout = [0.62, 0.20, 0.15, 0.10];
        assert!(margin(&standout, 3).unwrap() > margin(&lookalike, 3).unwrap());
        assert_eq!(top1(&standout), top1(&lookalike));
    }

    #[test]
    fn symmetric_margin_discounts_a_crowded_template() {
        let scores = [0.8, 0.4, 0.2];
        assert!((symmetric_margin(&scores, 2, 0.3).unwrap() - (0.8 - 0.5 * (0.3 + 0.3))).abs() < 1e-6);
        // The same search against a template with close neighbours is less convincing.
        assert!(symmetric_margin(&scores, 2, 0.6).unwrap() < symmetric_margin(&scores, 2, 0.1).unwrap());
        assert_eq!(symmetric_margin(&[], 2, 0.3), None);
        assert!((symmetric_margin(&[0.8], 2, 0.4).unwrap() - 0.6).abs() < 1e-6);
    }

    #[test]
    fn statistics_round_trip_through_manifest_names() {
        let margin10 = DecisionStatistic::from_manifest("margin", 10).unwrap();
        assert_eq!(margin10, DecisionStatistic::Margin { cohort: 10 });
        assert_eq!((margin10.manifest_name(), margin10.margin_cohort()), ("margin", 10));
        assert_eq!(margin10.candidates_needed(), 11);
        assert_eq!(margin10.to_string(), "margin(10)");
        assert_eq!(DecisionStatistic::from_manifest("top1", 0).unwrap(), DecisionStatistic::Top1);
        assert_eq!(DecisionStatistic::from_manifest("margin", 0), Err(DecisionError::EmptyMarginCohort));
        assert!(matches!(DecisionStatistic::from_manifest("snorm", 3), Err(DecisionError::UnknownStatistic { .. })));
        let scores = [0.8, 0.4, 0.2];
        assert_eq!(DecisionStatistic::Top1.decide(&scores), top1(&scores));
        assert_eq!(DecisionStatistic::Margin { cohort: 2 }.decide(&scores), margin(&scores, 2));
    }

    #[test]
    fn cohort_stats_use_the_top_of_the_cohort() {
        let stats = cohort_stats(&[0.5, 0.3, 0.1, -0.5], 2).unwrap();
        assert!((stats.mean - 0.4).abs() < 1e-6);
        assert!((stats.std - 0.1).abs() < 1e-6);
        assert_eq!(cohort_stats(&[0.5], 10), None);
        assert_eq!(cohort_stats(&[0.5, 0.5, 0.5], 10), None);
    }

    #[test]
    fn normalisations_measure_in_cohort_deviations() {
        let probe = CohortStats { mean: 0.2, std: 0.1 };
        let template = CohortStats { mean: 0.1, std: 0.2 };
        assert!((t_norm(0.5, probe) - 3.0).abs() < 1e-5);
        assert!((z_norm(0.5, template) - 2.0).abs() < 1e-5);
        assert!((s_norm(0.5, probe, template) - 2.5).abs() < 1e-5);
    }

    #[test]
    fn centring_keeps_unit_length_and_zeroes_the_mean_itself() {
        let centred = centre(&[0.6, 0.8], &[0.6, 0.0]);
        assert!((centred[0]).abs() < 1e-6 && (centred[1] - 1.0).abs() < 1e-6);
        assert_eq!(centre(&[0.6, 0.8], &[0.6, 0.8]), vec![0.0, 0.0]);
    }

    #[test]
    fn non_finite_scores_do_not_panic() {
        assert!(margin(&[f32::NAN, 0.1], 1).unwrap().is_nan());
        assert!(cohort_stats(&[f32::NAN, 0.1], 2).is_none());
    }
}
