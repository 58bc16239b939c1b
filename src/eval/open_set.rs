//! The searches of an open-set identification run: the base gallery enrolled from the protocol, every probe
//! searched against it (raw and centred), and the outcomes each decision statistic gives those searches.

use std::collections::HashMap;

use rayon::prelude::*;

use super::attempts::{attempts, Attempt, AttemptInputs, ADAPTIVE_COHORT};
use super::error::OpenSetError;
use super::metrics::{fnir_at_fpir, IdentOperatingPoint, Measurement, MetricError, SearchOutcome};
use super::protocol::{
    search_exact, template_neighbour_scores, OpenSetProtocol, PhotoSet, SearchResult, TemplateMatrix,
};
use super::templates::Templates;
use crate::score::decision::DecisionStatistic;

/// Target FPIRs of the identification report.
pub(crate) const IDENTIFY_FPIR_TARGETS: [f64; 2] = [1e-2, 3e-3];
/// The CMC's length, and the fewest candidates every search keeps.
pub(crate) const CMC_MAX_RANK: usize = 50;
/// Decision score of a search that cannot alarm: no face in the probe, or a statistic undefined for it. The
/// lowest finite f32, so the metrics (which refuse non-finite scores) accept it and no threshold in use reaches it.
pub(crate) const NO_DECISION: f32 = f32::MIN;

/// The gallery of one run: templates in rows, and the row each enrolled identity's template sits in.
pub(crate) struct Gallery {
    pub(crate) templates: TemplateMatrix,
    pub(crate) mate_rows: HashMap<String, usize>,
}

/// One probe's search: `None` result when the probe had no face.
pub(crate) struct ProbeSearch {
    pub(crate) mated: bool,
    pub(crate) result: Option<SearchResult>,
}

/// Searches every probe (`(photo, mated)`) against `gallery`, keeping `keep` candidates each.
pub(crate) fn search_probes(
    gallery: &Gallery,
    set: &PhotoSet,
    templates: &Templates,
    probes: &[(usize, bool)],
    keep: usize,
    pool: &rayon::ThreadPool,
) -> Vec<ProbeSearch> {
    pool.install(|| {
        probes
            .par_iter()
            .map(|&(photo, mated)| {
                let mate = if mated { gallery.mate_rows.get(&set.photos[photo].identity).copied() } else { None };
                let result =
                    templates.embedding(photo).map(|probe| search_exact(&gallery.templates, probe, keep, mate));
                ProbeSearch { mated, result }
            })
            .collect()
    })
}

/// Search outcomes for the metrics, with the decision score `decide(index, result)` gives each search that
/// reached the gallery.
pub(crate) fn outcomes(
    searches: &[ProbeSearch],
    decide: impl Fn(usize, &SearchResult) -> Option<f32>,
) -> Vec<SearchOutcome> {
    searches
        .iter()
        .enumerate()
        .map(|(index, search)| {
            let mate_rank = search.result.as_ref().and_then(|r| r.mate_rank);
            let decision = search.result.as_ref().and_then(|r| decide(index, r)).filter(|s| s.is_finite());
            SearchOutcome {
                mated: search.mated,
                mate_rank: if search.mated { mate_rank } else { None },
                decision_score: decision.unwrap_or(NO_DECISION),
                top_is_mate: search.mated && mate_rank == Some(1),
            }
        })
        .collect()
}

/// Outcomes of `searches` under `statistic`.
pub(crate) fn outcomes_of(searches: &[ProbeSearch], statistic: DecisionStatistic) -> Vec<SearchOutcome> {
    outcomes(searches, |_, r| statistic.decide(&r.scores()))
}

/// Decision scores of searches that reached the gallery (probe had a face), by mated-ness.
pub(crate) fn decision_scores(outcomes: &[SearchOutcome], mated: bool) -> Vec<f32> {
    outcomes.iter().filter(|o| o.mated == mated && o.decision_score != NO_DECISION).map(|o| o.decision_score).collect()
}

/// FNIR at each of the report's FPIR targets.
pub(crate) fn fnir_points(outcomes: &[SearchOutcome]) -> Result<Vec<Measurement<IdentOperatingPoint>>, MetricError> {
    IDENTIFY_FPIR_TARGETS.iter().map(|&t| fnir_at_fpir(outcomes, t)).collect()
}

pub(crate) fn measured_fnir(point: Option<&Measurement<IdentOperatingPoint>>) -> Option<f64> {
    point.and_then(|p| p.measured()).map(|p| p.fnir)
}

/// The base-gallery part of an identification run: gallery, searches, and every attempt's FNIR at FPIR.
pub(crate) struct BaseRun {
    pub(crate) gallery: Gallery,
    pub(crate) failures_to_enrol: usize,
    /// (photo, mated) of every search, mated first.
    pub(crate) probes: Vec<(usize, bool)>,
    pub(crate) fta_mated: usize,
    pub(crate) fta_nonmated: usize,
    pub(crate) searches: Vec<ProbeSearch>,
    pub(crate) primary: Vec<SearchOutcome>,
    pub(crate) top1: Vec<SearchOutcome>,
    pub(crate) attempts: Vec<(Attempt, Vec<Measurement<IdentOperatingPoint>>)>,
}

/// Enrols the protocol's gallery, searches its probes, and measures every attempt; `statistic` is the primary one.
pub(crate) fn base_run(
    set: &PhotoSet,
    templates: &Templates,
    protocol: &OpenSetProtocol,
    statistic: DecisionStatistic,
    dimension: usize,
    pool: &rayon::ThreadPool,
) -> Result<BaseRun, OpenSetError> {
    let mut gallery = Gallery { templates: TemplateMatrix::new(dimension), mate_rows: HashMap::new() };
    let mut failures_to_enrol = 0;
    let roles = protocol.enrolments.iter().map(|&p| (p, true)).chain(protocol.distractors.iter().map(|&p| (p, false)));
    for (photo, enrolled) in roles {
        match templates.embedding(photo) {
            Some(template) => {
                if enrolled {
                    gallery.mate_rows.insert(set.photos[photo].identity.clone(), gallery.templates.len());
                }
                gallery.templates.push(template)?;
            }
            None => failures_to_enrol += 1,
        }
    }
    let Some(gallery_mean) = gallery.templates.mean() else {
        return Err(OpenSetError::EmptyGallery);
    };
    let probes: Vec<(usize, bool)> = protocol
        .mated_probes
        .iter()
        .map(|&p| (p, true))
        .chain(protocol.nonmated_probes.iter().map(|&p| (p, false)))
        .collect();
    let fta_mated = protocol.mated_probes.iter().filter(|&&p| templates.embedding(p).is_none()).count();
    let fta_nonmated = protocol.nonmated_probes.iter().filter(|&&p| templates.embedding(p).is_none()).count();

    let keep = (ADAPTIVE_COHORT + 1).max(statistic.candidates_needed()).max(CMC_MAX_RANK);
    let searches = search_probes(&gallery, set, templates, &probes, keep, pool);
    // Centring uses the gallery's own mean: known at enrolment, no labels, nothing from the probes.
    let centred_gallery =
        Gallery { templates: gallery.templates.centred(&gallery_mean), mate_rows: gallery.mate_rows.clone() };
    let centred_templates = templates.centred(&gallery_mean);
    let centred_searches = search_probes(&centred_gallery, set, &centred_templates, &probes, keep, pool);
    let (neighbours, centred_neighbours) = pool.install(|| {
        rayon::join(
            || template_neighbour_scores(&gallery.templates, usize::MAX),
            || template_neighbour_scores(&centred_gallery.templates, ADAPTIVE_COHORT),
        )
    });
    let detector_scores: Vec<Option<f32>> = probes.iter().map(|&(photo, _)| templates.detector_score(photo)).collect();
    let inputs = AttemptInputs {
        centred: &centred_searches,
        neighbours: &neighbours,
        centred_neighbours: &centred_neighbours,
        detector_scores: &detector_scores,
    };
    let primary = outcomes_of(&searches, statistic);
    let top1 = outcomes_of(&searches, DecisionStatistic::Top1);
    let attempts = attempts(statistic)
        .into_iter()
        .map(|attempt| Ok((attempt, fnir_points(&outcomes(&searches, |i, r| attempt.decide(&inputs, i, r)))?)))
        .collect::<Result<Vec<_>, OpenSetError>>()?;
    Ok(BaseRun { gallery, failures_to_enrol, probes, fta_mated, fta_nonmated, searches, primary, top1, attempts })
}
