//! The decision statistics an identification run tries besides the deployed one, each measured on the same
//! searches, so that a change to what the service deploys is backed by figures.

use super::open_set::ProbeSearch;
use super::protocol::SearchResult;
use crate::score::decision::{
    cohort_stats, margin, s_norm, symmetric_margin, t_norm, z_norm, CohortStats, DecisionStatistic,
};

/// Cohort of the adaptive S-norm attempt (top scores of the probe and of the template against the gallery).
pub(crate) const ADAPTIVE_COHORT: usize = 200;

/// A decision statistic tried in the attempts table. Only [`DecisionStatistic`]s are deployable today (the service
/// and the manifest know them); the others are measured so that a change is backed by figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Attempt {
    Statistic(DecisionStatistic),
    /// [`symmetric_margin`] with the top candidate's `cohort` nearest gallery neighbours.
    SymmetricMargin {
        cohort: usize,
    },
    /// Margin divided by the probe's detector score: low-confidence detections (poor photos) get their evidence
    /// scaled up rather than being judged on the same scale as clean ones.
    QualityWeightedMargin {
        cohort: usize,
    },
    /// A statistic on centred templates (gallery mean subtracted, see [`crate::score::decision::centre`]); ranks
    /// still come from the raw similarity.
    Centred(DecisionStatistic),
    CentredSymmetricMargin {
        cohort: usize,
    },
    /// (top-1 − mean of the next `cohort`) / their standard deviation.
    RunnerUpZ {
        cohort: usize,
    },
    /// T-norm of the top-1 score against all the probe's other gallery scores.
    TNorm,
    /// Z-norm of the top-1 score against the top candidate's scores with the rest of the gallery.
    ZNorm,
    /// S-norm with both full cohorts.
    SNorm,
    /// S-norm with the top-`cohort` scores of both sides.
    AdaptiveSNorm {
        cohort: usize,
    },
}

/// What the attempts read besides a probe's raw search.
pub(crate) struct AttemptInputs<'a> {
    /// The same probes searched with centred templates, in the same order.
    pub(crate) centred: &'a [ProbeSearch],
    /// Each gallery row's similarities to the other rows, highest first (raw and centred).
    pub(crate) neighbours: &'a [Vec<f32>],
    pub(crate) centred_neighbours: &'a [Vec<f32>],
    /// Each probe's detector score, in search order.
    pub(crate) detector_scores: &'a [Option<f32>],
}

impl Attempt {
    pub(crate) fn label(&self) -> String {
        match self {
            Attempt::Statistic(s) => s.to_string(),
            Attempt::SymmetricMargin { cohort } => format!("symmetric margin({cohort})"),
            Attempt::QualityWeightedMargin { cohort } => format!("margin({cohort}) / probe detector score"),
            Attempt::Centred(s) => format!("centred {s}"),
            Attempt::CentredSymmetricMargin { cohort } => format!("centred symmetric margin({cohort})"),
            Attempt::RunnerUpZ { cohort } => format!("runner-up z({cohort})"),
            Attempt::TNorm => "T-norm (gallery cohort)".into(),
            Attempt::ZNorm => "Z-norm (gallery cohort)".into(),
            Attempt::SNorm => "S-norm (gallery cohort)".into(),
            Attempt::AdaptiveSNorm { cohort } => format!("adaptive S-norm (top-{cohort})"),
        }
    }

    /// The statistic of search `index` (whose raw result is `search`).
    pub(crate) fn decide(&self, inputs: &AttemptInputs, index: usize, search: &SearchResult) -> Option<f32> {
        let scores = search.scores();
        let top = search.candidates.first()?;
        let neighbours = |row: usize, size: usize| Some(cohort_stats(inputs.neighbours.get(row)?, size));
        match self {
            Attempt::Statistic(s) => s.decide(&scores),
            Attempt::SymmetricMargin { cohort } => {
                symmetric_margin(&scores, *cohort, neighbour_mean(inputs.neighbours.get(top.row)?, *cohort)?)
            }
            Attempt::QualityWeightedMargin { cohort } => {
                let detector = inputs.detector_scores.get(index).copied().flatten().filter(|d| *d > 0.0)?;
                Some(margin(&scores, *cohort)? / detector)
            }
            Attempt::Centred(s) => {
                let centred = inputs.centred.get(index)?.result.as_ref()?;
                s.decide(&centred.scores())
            }
            Attempt::CentredSymmetricMargin { cohort } => {
                let centred = inputs.centred.get(index)?.result.as_ref()?;
                let row = centred.candidates.first()?.row;
                symmetric_margin(
                    &centred.scores(),
                    *cohort,
                    neighbour_mean(inputs.centred_neighbours.get(row)?, *cohort)?,
                )
            }
            Attempt::RunnerUpZ { cohort } => Some(t_norm(top.score, cohort_stats(scores.get(1..)?, *cohort)?)),
            Attempt::TNorm => Some(t_norm(top.score, search.others?)),
            Attempt::ZNorm => Some(z_norm(top.score, neighbours(top.row, usize::MAX)??)),
            Attempt::SNorm => Some(s_norm(top.score, search.others?, neighbours(top.row, usize::MAX)??)),
            Attempt::AdaptiveSNorm { cohort } => {
                let probe: CohortStats = cohort_stats(scores.get(1..)?, *cohort)?;
                Some(s_norm(top.score, probe, neighbours(top.row, *cohort)??))
            }
        }
    }
}

/// Mean of the first `cohort` neighbour scores (all of them when fewer); `None` when there are none.
fn neighbour_mean(neighbours_desc: &[f32], cohort: usize) -> Option<f32> {
    let used = &neighbours_desc[..cohort.min(neighbours_desc.len())];
    (!used.is_empty()).then(|| (used.iter().map(|&s| f64::from(s)).sum::<f64>() / used.len() as f64) as f32)
}

/// Every attempt of the report, in table order.
pub(crate) fn attempts(primary: DecisionStatistic) -> Vec<Attempt> {
    let mut list = vec![Attempt::Statistic(DecisionStatistic::Top1)];
    list.extend([1, 3, 5, 10, 20, 50].map(|cohort| Attempt::Statistic(DecisionStatistic::Margin { cohort })));
    if !list.contains(&Attempt::Statistic(primary)) {
        list.push(Attempt::Statistic(primary));
    }
    list.extend([3, 5, 10].map(|cohort| Attempt::SymmetricMargin { cohort }));
    list.extend([
        Attempt::QualityWeightedMargin { cohort: 10 },
        Attempt::Centred(DecisionStatistic::Top1),
        Attempt::Centred(DecisionStatistic::Margin { cohort: 10 }),
        Attempt::CentredSymmetricMargin { cohort: 10 },
        Attempt::RunnerUpZ { cohort: 10 },
        Attempt::RunnerUpZ { cohort: 50 },
        Attempt::TNorm,
        Attempt::ZNorm,
        Attempt::SNorm,
        Attempt::AdaptiveSNorm { cohort: ADAPTIVE_COHORT },
    ]);
    list
}
